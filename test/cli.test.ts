// The `lightvm run` command, as a user runs it (the built dist/cli/main.js),
// and what happens when /dev/kvm cannot be used.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KvmUnavailableError } from '../src/index.js';
import { Kvm } from '../src/kvm/kvm.js';
import { guestBytes, openFds, ROOT, tempDir } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli', 'main.js');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function lightvm(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** stderr as lines, without the final newline. */
const lines = (s: string): string[] => s.replace(/\n$/, '').split('\n').filter((l, i, all) => l !== '' || all.length > 1);

void describe('lightvm run', () => {
  const { dir, cleanup } = tempDir('cli');
  before(() => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run npm run build first`);
  });
  after(cleanup);

  void it('run hello with 2.5 GiB of address space: no room for the 4 GiB memory arena, and each VM maps its own', async () => {
    const r = await new Promise<Result>((resolve) => {
      execFile('sh', ['-c', `ulimit -v 2600000 && exec "$0" "$@"`, process.execPath, CLI, 'run', 'hello'], { timeout: 20_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
      });
    });
    assert.equal(r.stdout, 'Hello from LightVM!\n', r.stderr);
    assert.equal(r.code, 0);
  });

  void it('run hello: the greeting on stdout, nothing on stderr, exit 0', async () => {
    const r = await lightvm('run', 'hello');
    assert.equal(r.stdout, 'Hello from LightVM!\n');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
  });

  void it('run exit-status --cmdline N: exits with N (mod 256)', async () => {
    assert.equal((await lightvm('run', 'exit-status', '--cmdline', '7')).code, 7);
    assert.equal((await lightvm('run', 'exit-status', '-c', '300')).code, 300 & 0xff);
    // A status other than 0 is never success: its low byte, or 1 where that is 0.
    assert.equal((await lightvm('run', 'exit-status', '-c', '256')).code, 1);
    assert.equal((await lightvm('run', 'exit-status', '-c', '9223372036854775807')).code, 255);
    assert.equal((await lightvm('run', 'exit-status', '-c', '-9223372036854775807')).code, 1);
  });

  void it('run triple-fault: exit 125 and one line saying why', async () => {
    const r = await lightvm('run', 'triple-fault');
    assert.equal(r.code, 125);
    assert.equal(r.stdout, '');
    const err = lines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0]!, /^lightvm: VM \S+ crashed: triple fault/);
  });

  void it('run nosuch: exit 1 and one line naming the image', async () => {
    const r = await lightvm('run', 'nosuch');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    const err = lines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0]!, /^lightvm: .*"nosuch"/);
  });

  void it('run of a malformed file: exit 1 and one line naming the file and the field', async () => {
    const bad = guestBytes('hello');
    bad[18] = 40; // e_machine: EM_ARM
    const file = join(dir, 'arm.elf');
    writeFileSync(file, bad);
    const r = await lightvm('run', file);
    assert.equal(r.code, 1);
    const err = lines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.ok(err[0]!.startsWith('lightvm: '), err[0]);
    assert.ok(err[0]!.includes(file), err[0]);
    assert.match(err[0]!, /e_machine/);
  });

  void it('run hello --json: one JSON object with the exit and the console', async () => {
    const r = await lightvm('run', 'hello', '--json');
    assert.equal(r.code, 0);
    const out = JSON.parse(r.stdout) as {
      image: string; exit: { kind: string; status: number }; console: string; timings: Record<string, number | null>; exits: number;
    };
    assert.deepEqual(out.exit, { kind: 'halt', status: 0 });
    assert.equal(out.console, 'Hello from LightVM!\n');
    assert.ok(out.image.endsWith('hello.elf'), out.image);
    assert.equal(out.exits, 2);
    for (const [k, v] of Object.entries(out.timings)) assert.ok(typeof v === 'number' && v >= 0, `${k} = ${v}`);
    assert.equal(r.stdout.trimEnd().split('\n').length, 1, 'exactly one line');
  });

  void it('run hello --timing: the phases on stderr, the greeting on stdout', async () => {
    const r = await lightvm('run', 'hello', '--timing');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'Hello from LightVM!\n');
    for (const phase of ['host_start_ms', 'create_ms', 'load_ms', 'boot_ms', 'run_ms', 'destroy_ms', 'total_ms', 'vm_exits']) {
      assert.match(r.stderr, new RegExp(`^${phase} +[\\d.]+$`, 'm'), `no ${phase} in ${r.stderr}`);
    }
  });

  void it('run noop --count-instructions: the boot instruction count on stderr', async () => {
    const r = await lightvm('run', 'noop', '--count-instructions');
    assert.equal(r.code, 0);
    const m = /^boot_instructions +(\d+)$/m.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.ok(Number(m[1]) > 0 && Number(m[1]) < 200, m[1]);
  });

  void it('run hello --memory 1: exit 1 and one line naming --memory', async () => {
    for (const memory of ['1', 'abc', '3073']) {
      const r = await lightvm('run', 'hello', '--memory', memory);
      assert.equal(r.code, 1, `--memory ${memory}`);
      assert.equal(r.stdout, '');
      const err = lines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0]!, /^lightvm: .*--memory/);
    }
  });

  void it('SIGTERM while a VM spins: the VM is destroyed, exit 125', async () => {
    const child = spawn(process.execPath, [CLI, 'run', 'spin'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`lightvm run spin did not end after SIGTERM; stdout ${JSON.stringify(stdout)}`));
      }, 10_000);
      child.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        if (stdout === 'spinning\n') child.kill('SIGTERM');
      });
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 125);
    assert.match(stderr, /^lightvm: VM \S+ destroyed$/m);
  });
});

void describe('when /dev/kvm cannot be used', () => {
  void it('a missing device: KvmUnavailableError saying it does not exist and how to fix it', () => {
    assert.throws(() => Kvm.open('/nonexistent/kvm'), (err: unknown) => {
      assert.ok(err instanceof KvmUnavailableError, String(err));
      assert.match(err.message, /\/nonexistent\/kvm does not exist/);
      assert.match(err.message, /modprobe kvm_intel or kvm_amd/);
      assert.match(err.fix, /modprobe/);
      return true;
    });
  });

  void it('a device that is not KVM: refused, and its descriptor closed', () => {
    const fds = openFds();
    assert.throws(() => Kvm.open('/dev/null'));
    assert.deepEqual(openFds(), fds);
  });

  void it('the real device opens and speaks API 12 with what LightVM needs', () => {
    const kvm = Kvm.open();
    try {
      assert.ok(kvm.vcpuMmapSize >= 4096);
      assert.ok(kvm.supportedCpuid().length > 0);
    } finally {
      kvm.close();
    }
  });
});
