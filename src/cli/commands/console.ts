// lightvm console: attach this terminal to a VM's console, as xl console
// does: what the VM writes streams to stdout (the console stream of the
// API), what is typed goes to its virtio-console (POST .../console/input).
// On a terminal, stdin is in raw mode (keys go to the guest as they are
// typed, Ctrl-C included) and Ctrl-] detaches; the terminal's mode is put
// back however the command ends.
import type { ApiError, Client } from '../client.js';

/** The byte that detaches: Ctrl-], as telnet and xl console have it. */
export const DETACH = 0x1d;
/** Bytes one input request carries at most (the API's bound). */
export const INPUT_PIECE = 16 * 1024;
/** Longest a piece of input is retried while the guest leaves its input unread (503). */
const FULL_RETRY_MS = 10_000;
const FULL_WAIT_MS = 20;

/** What of a chunk of stdin goes to the guest, and whether the detach key came (what follows it is not sent). */
export function splitAtDetach(chunk: Uint8Array): { send: Uint8Array; detach: boolean } {
  const at = chunk.indexOf(DETACH);
  return at < 0 ? { send: chunk, detach: false } : { send: chunk.subarray(0, at), detach: true };
}

/** data in pieces of at most max bytes, in order. */
export function pieces(data: Uint8Array, max = INPUT_PIECE): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += max) out.push(data.subarray(at, at + max));
  return out;
}

export interface AttachIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

/**
 * Attaches until the VM ends or the user detaches; 'detached' or 'ended'.
 * A VM that does not exist fails before the terminal is touched.
 */
export async function attach(c: Client, vm: string, io: AttachIo): Promise<'detached' | 'ended'> {
  const path = `/v1/vms/${encodeURIComponent(vm)}`;
  const { vm: view } = await c.request<{ vm: { name: string; state: string } }>('GET', path);
  const tty = io.stdin.isTTY === true;
  const stop = new AbortController();
  let detached = false;
  let ended = false;
  let inputOff = false;
  let sending = Promise.resolve();
  const note = (s: string): void => {
    // On a terminal the line discipline adds the CR (libuv's raw mode keeps ONLCR).
    io.stderr.write(tty ? `\n[lightvm: ${s}]\n` : `lightvm: ${s}\n`);
  };
  const send = async (piece: Uint8Array): Promise<void> => {
    for (const until = Date.now() + FULL_RETRY_MS; !inputOff && !ended;) {
      try {
        await c.request('POST', `${path}/console/input`, { base64: Buffer.from(piece).toString('base64') });
        return;
      } catch (err) {
        const e = err as ApiError;
        if (e.status === 503 && Date.now() < until) {
          await new Promise((r) => setTimeout(r, FULL_WAIT_MS));
          continue;
        }
        // No virtio-console, or it ended: the input goes nowhere; say so once.
        if (e.status !== 409 || e.field !== 'state') note(`${e.message}; input is not sent`);
        inputOff = true;
      }
    }
  };
  const onData = (chunk: Buffer): void => {
    if (detached) return;
    const { send: bytes, detach } = splitAtDetach(chunk);
    for (const p of pieces(bytes)) sending = sending.then(() => send(p));
    if (detach) {
      detached = true;
      // What was typed before the key is sent first.
      void sending.then(() => stop.abort());
    }
  };
  const onSignal = (): void => stop.abort();
  if (tty) io.stdin.setRawMode(true);
  try {
    if (tty) note(`attached to ${view.name}; Ctrl-] detaches`);
    io.stdin.on('data', onData);
    io.stdin.resume();
    process.once('SIGTERM', onSignal);
    process.once('SIGHUP', onSignal);
    await c.stream(`${path}/console?follow=true`, (b) => io.stdout.write(b), stop.signal);
  } finally {
    ended = true;
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    io.stdin.off('data', onData);
    io.stdin.pause();
    if (tty) io.stdin.setRawMode(false);
  }
  if (tty || detached) note(detached ? `detached from ${view.name}` : `${view.name} has ended`);
  return detached ? 'detached' : 'ended';
}
