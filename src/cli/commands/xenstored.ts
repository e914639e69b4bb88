// `lightvm xenstored`: a XenStore on a unix socket, for the xenstore mode's
// control path and for Xen's own clients (XENSTORED_PATH=<socket> xenstore-ls).
// Runs until SIGINT or SIGTERM, then removes its socket.
import type { Command } from 'commander';

interface XenstoredCliOptions {
  socket: string;
  pidFile?: string;
  entryQuota?: number;
  watchQuota?: number;
  transactionQuota?: number;
  withParent?: boolean;
}

const WITH_PARENT = 'end when stdin closes: the process that started it (a daemon) has ended';

/** --with-parent: a store or backend a daemon started does not outlive it, however it ended. */
function endWithParent(stop: () => void): void {
  let once = false;
  const end = (): void => {
    if (once) return;
    once = true;
    stop();
  };
  process.stdin.once('end', end);
  process.stdin.once('close', end);
  process.stdin.resume();
}

export function registerXenstored(program: Command, intOption: (name: string, min: number, max: number) => (v: string) => number): void {
  program.command('xenstored')
    .description('serve a XenStore (xs_wire) on a unix socket')
    .requiredOption('--socket <path>', 'the unix socket to listen on')
    .option('--pid-file <file>', 'write the process id here once listening')
    .option('--entry-quota <n>', 'nodes a guest domain may own', intOption('--entry-quota', 1, 1_000_000))
    .option('--watch-quota <n>', 'watches per guest connection', intOption('--watch-quota', 1, 100_000))
    .option('--transaction-quota <n>', 'open transactions per guest connection', intOption('--transaction-quota', 1, 10_000))
    .option('--with-parent', WITH_PARENT)
    .action(async (opts: XenstoredCliOptions) => {
      const { fail } = await import('../output.js');
      try {
        const { writeFileSync, unlinkSync } = await import('node:fs');
        const { startXenstored } = await import('../../xenstore/server.js');
        const xs = await startXenstored({
          socket: opts.socket,
          quotas: {
            ...(opts.entryQuota ? { entriesPerDomain: opts.entryQuota } : {}),
            ...(opts.watchQuota ? { watchesPerConnection: opts.watchQuota } : {}),
            ...(opts.transactionQuota ? { transactionsPerConnection: opts.transactionQuota } : {}),
          },
        });
        if (opts.pidFile) writeFileSync(opts.pidFile, `${process.pid}\n`);
        process.stderr.write(`xenstored: serving on ${opts.socket}\n`);
        const stop = (): void => {
          void xs.close().then(() => {
            try { unlinkSync(opts.socket); } catch { /* already gone */ }
            process.exit(0);
          });
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        if (opts.withParent) endWithParent(stop);
      } catch (err) {
        fail(err);
      }
    });

  program.command('xenstore-backend')
    .description('a dom0 backend on a xenstored: answers vif and console devices\' state machine (standing in for netback and xenconsoled)')
    .requiredOption('--socket <path>', 'the xenstored socket to connect to')
    .option('--with-parent', WITH_PARENT)
    .action(async (opts: { socket: string; withParent?: boolean }) => {
      const { fail } = await import('../output.js');
      try {
        const { XsBackend } = await import('../../xenstore/backend.js');
        const be = await XsBackend.start(opts.socket);
        be.onFailure = (e) => process.stderr.write(`xenstore-backend: ${e.message}\n`);
        process.stderr.write(`xenstore-backend: watching /local/domain/0/backend on ${opts.socket}\n`);
        // The store going away ends the backend, as a SIGTERM does.
        be.closed.then(() => process.exit(be.failure ? 1 : 0), () => process.exit(1));
        const stop = (): void => { be.close(); process.exit(0); };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        if (opts.withParent) endWithParent(stop);
      } catch (err) {
        fail(err);
      }
    });
}
