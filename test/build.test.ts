// lightvm build: a user's C program against the SDK that guest/Makefile
// writes, with our images' flags; the compiler speaks for itself on errors.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { buildCommand, BuildError, buildUnikernel, loadSdk, SDK_DIR } from '../src/sdk/build.js';
import { CLI } from './daemon-helpers.js';
import { ROOT, tempDir } from './helpers.js';

const exec = promisify(execFile);
const tmp = tempDir('build');
after(() => tmp.cleanup());

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [CLI, ...args], { cwd: tmp.dir });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

void describe('lightvm build', () => {
  void it('compiles with the flags guest/Makefile gives our images (one definition: the SDK records them)', () => {
    const makefile = readFileSync(join(ROOT, 'guest', 'Makefile'), 'utf8');
    const sdk = loadSdk();
    for (const flag of ['-ffreestanding', '-mno-red-zone', '-mgeneral-regs-only', '-fno-pie']) {
      assert.ok(makefile.includes(flag) && sdk.cflags.includes(flag), flag);
    }
    assert.ok(sdk.ldflags.includes('-Wl,--gc-sections'));
    const cmd = buildCommand(sdk, { sources: [join(ROOT, 'examples', 'hello.c')], output: join(tmp.dir, 'x.elf') });
    assert.ok(cmd.includes(`-Wl,-T,${join(SDK_DIR, 'lib', 'guest.ld')}`));
    assert.ok(!cmd.includes(sdk.libip), 'no TCP/IP stack without --net');
    assert.ok(buildCommand(sdk, { sources: [join(ROOT, 'examples', 'upcase.c')], net: true }).includes(sdk.libip));
  });

  void it('builds the examples into images our loader takes; upcase links only with --net', async () => {
    const hello = await buildUnikernel({ sources: [join(ROOT, 'examples', 'hello.c')], output: join(tmp.dir, 'hello.elf') });
    assert.equal(hello.entry, 0x100100);
    assert.ok(hello.bytes > 1000 && hello.bytes < 64 * 1024, `${hello.bytes} bytes`);
    let said = '';
    await assert.rejects(buildUnikernel({ sources: [join(ROOT, 'examples', 'upcase.c')], output: join(tmp.dir, 'u.elf'), diagnostics: (b) => (said += b.toString()) }),
      (err: Error) => err instanceof BuildError && /failed with status 1 \(the TCP\/IP stack of net\.h is linked with --net\)/.test(err.message));
    assert.match(said, /undefined reference to `net_init'/);
    const up = await buildUnikernel({ sources: [join(ROOT, 'examples', 'upcase.c')], output: join(tmp.dir, 'u.elf'), net: true });
    assert.ok(up.bytes > hello.bytes);
  });

  void it('bad input: what and where, and the compiler\'s own message as it wrote it', async () => {
    writeFileSync(join(tmp.dir, 'bad.c'), 'int main(void)\n{\n    return undeclared;\n}\n');
    const bad = await cli(['build', 'bad.c', '-o', 'bad.elf']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^bad\.c:3:12: error: .undeclared. undeclared/m);
    assert.match(bad.stderr, /^lightvm: gcc failed with status 1$/m);
    const none = await cli(['build', 'missing.c']);
    assert.deepEqual([none.code, none.stderr], [1, 'lightvm: missing.c: no such file\n']);
    const kind = await cli(['build', 'notes.txt']);
    assert.match(kind.stderr, /^lightvm: notes\.txt: not a C source, assembly, object or archive/);
    const self = await cli(['build', 'bad.c', '-o', 'bad.c']);
    assert.match(self.stderr, /^lightvm: bad\.c: the output would overwrite a source$/m);
    await assert.rejects(buildUnikernel({ sources: ['bad.c'] }, join(tmp.dir, 'no-sdk')), /the libOS SDK is incomplete at .*no-sdk \(missing cflags/);
    await assert.rejects(buildUnikernel({ sources: [join(ROOT, 'examples', 'hello.c')], output: join(tmp.dir, 'n.elf'), cc: 'no-such-gcc' }),
      /no-such-gcc not found: lightvm build needs gcc and binutils/);
  });
});
