// Tinyx's image builder, each part against a tool that does the same job:
// .deb unpacking against dpkg-deb, the ELF dependencies against readelf, the
// initramfs against BusyBox's cpio and xz; then the root file systems of the
// recipes from real Debian packages. (Booting them needs the kernel, whose
// first build takes long here: test/slow/tinyx-boot.test.ts.)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, lstatSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cpioNewc, initramfs } from '../src/tinyx/cpio.js';
import { DebError, unpackDeb } from '../src/tinyx/deb.js';
import { elfDeps } from '../src/tinyx/elf-deps.js';
import { buildTinyx, TinyxError } from '../src/tinyx/image.js';
import { soPackage } from '../src/tinyx/packages.js';
import { tempDir } from './helpers.js';
import { prefetch } from './tinyx-helpers.js';

const tmp = tempDir('tinyx');
after(() => tmp.cleanup());
const cache = join(tmp.dir, 'cache');

// Tests run in a network namespace of their own; apt reaches Debian's
// mirror from the one we came from. These are the packages the recipes
// below need (a missing one fails with its name: add it here).
const PACKAGES = ['busybox-static', 'nginx', 'libc6', 'libcrypt1', 'libpcre2-8-0', 'libssl3', 'zlib1g', 'iproute2', 'nginx-common'];

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Every file, symlink and directory under dir: path -> content hash, link target or "dir". */
function tree(dir: string, rel = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(join(dir, rel))) {
    const p = rel ? `${rel}/${name}` : name;
    if (p === '.tinyx-files.json') continue;
    const st = lstatSync(join(dir, p));
    if (st.isSymbolicLink()) out.set(p, `-> ${readlinkSync(join(dir, p))}`);
    else if (st.isDirectory()) {
      out.set(p, 'dir');
      for (const [k, v] of tree(dir, p)) out.set(k, v);
    } else out.set(p, `${(st.mode & 0o777).toString(8)} ${sha(readFileSync(join(dir, p)))}`);
  }
  return out;
}

/** A .deb made here: ar around a data.tar.gz with the given tar bytes. */
function makeDeb(file: string, dataTar: Buffer): void {
  const member = (name: string, data: Buffer): Buffer => {
    const h = `${name.padEnd(16)}${'0'.padEnd(12)}${'0'.padEnd(6)}${'0'.padEnd(6)}${'100644'.padEnd(8)}${String(data.length).padEnd(10)}\`\n`;
    return Buffer.concat([Buffer.from(h, 'latin1'), data, data.length & 1 ? Buffer.from('\n') : Buffer.alloc(0)]);
  };
  const gz = execFileSync('gzip', ['-c'], { input: dataTar });
  writeFileSync(file, Buffer.concat([Buffer.from('!<arch>\n'), member('debian-binary', Buffer.from('2.0\n')), member('data.tar.gz', gz)]));
}

void describe('tinyx: the image builder', () => {
  before(() => prefetch(cache, PACKAGES));

  void it('unpacks a .deb exactly as dpkg-deb does (files, modes, symlinks)', async () => {
    const deb = join(cache, 'debs', readdirSync(join(cache, 'debs')).find((f) => f.startsWith('libssl3_'))!);
    const ours = join(tmp.dir, 'ours');
    const theirs = join(tmp.dir, 'theirs');
    const listed = await unpackDeb(deb, ours);
    execFileSync('dpkg-deb', ['-x', deb, theirs]);
    assert.deepEqual(tree(ours), tree(theirs));
    assert.equal(listed.get('usr/lib/x86_64-linux-gnu/libssl.so.3'), 'file');
  });

  void it('refuses a .deb whose entries leave its root, and a file that is no .deb, saying which', async () => {
    const dir = join(tmp.dir, 'evil');
    mkdirSync(join(dir, 'src'), { recursive: true });
    writeFileSync(join(dir, 'src', 'x'), 'x');
    const tar = execFileSync('tar', ['-c', '-C', join(dir, 'src'), '--transform', 's,^x$,../../escaped,', 'x']);
    makeDeb(join(dir, 'evil.deb'), tar);
    await assert.rejects(unpackDeb(join(dir, 'evil.deb'), join(dir, 'out')), (e: Error) => e instanceof DebError && /"\.\.\/\.\.\/escaped" leaves the package's root/.test(e.message));
    const link = execFileSync('sh', ['-c', `cd ${join(dir, 'src')} && ln -s /etc up && tar -c up`]);
    makeDeb(join(dir, 'link.deb'), Buffer.concat([link.subarray(0, link.length - 1024), execFileSync('tar', ['-c', '-C', join(dir, 'src'), '--transform', 's,^x$,up/owned,', 'x'])]));
    await assert.rejects(unpackDeb(join(dir, 'link.deb'), join(dir, 'out2')), /goes through a symlink out of the package's root/);
    writeFileSync(join(dir, 'plain.deb'), 'hello');
    await assert.rejects(unpackDeb(join(dir, 'plain.deb'), join(dir, 'out3')), /plain\.deb: not an ar archive/);
  });

  void it("reads a program's interpreter and DT_NEEDED as readelf does", () => {
    for (const prog of ['/usr/bin/curl', '/usr/bin/ssh', process.execPath]) {
      const d = elfDeps(prog);
      assert.ok(d, prog);
      const dyn = execFileSync('readelf', ['-d', '-l', '-W', prog], { encoding: 'utf8' });
      assert.deepEqual(d.needed, [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]), prog);
      assert.equal(d.interp, /Requesting program interpreter: ([^\]]+)\]/.exec(dyn)?.[1] ?? null);
    }
    assert.equal(elfDeps('/bin/busybox')?.needed.length, 0, 'a static program needs nothing');
    assert.equal(elfDeps(join(process.cwd(), 'package.json')), null, 'not an ELF');
    assert.equal(soPackage('libpcre2-8.so.0'), 'libpcre2-8-0');
    assert.equal(soPackage('libssl.so.3'), 'libssl3');
  });

  void it('writes a newc initramfs that BusyBox cpio lists and unpacks, xz-compressed with the CRC32 the kernel checks', () => {
    const entries = [
      { path: 'bin', kind: 'dir' as const, mode: 0o755 },
      { path: 'bin/hello', kind: 'file' as const, mode: 0o755, data: 'odd length\n' },
      { path: 'bin/sh', kind: 'symlink' as const, mode: 0o777, data: 'busybox' },
      { path: 'dev', kind: 'dir' as const, mode: 0o755 },
      { path: 'dev/console', kind: 'chardev' as const, mode: 0o600, rdev: [5, 1] as [number, number] },
    ];
    const list = execFileSync('busybox', ['cpio', '-t', '-v'], { input: cpioNewc(entries), encoding: 'utf8' });
    assert.match(list, /^-rwxr-xr-x .* 11 .* bin\/hello$/m);
    assert.match(list, /^lrwxrwxrwx .* bin\/sh -> busybox$/m);
    assert.match(list, /^crw------- .* dev\/console$/m);
    // BusyBox does not list device numbers: the newc fields c_rdevmajor and c_rdevminor (10th, 11th) of that entry
    const raw = cpioNewc(entries).toString('latin1');
    const at = raw.indexOf('dev/console\0') - 110;
    assert.deepEqual([raw.slice(at + 6 + 9 * 8, at + 6 + 10 * 8), raw.slice(at + 6 + 10 * 8, at + 6 + 11 * 8)], ['00000005', '00000001']);
    const xz = initramfs(entries);
    writeFileSync(join(tmp.dir, 'i.xz'), xz);
    const info = execFileSync('xz', ['--robot', '--list', join(tmp.dir, 'i.xz')], { encoding: 'utf8' });
    assert.match(info, /\tCRC32\t/);
    const out = join(tmp.dir, 'unpacked');
    mkdirSync(out);
    execFileSync('sh', ['-c', `xz -dc | busybox cpio -i -d 2>/dev/null`], { input: xz, cwd: out });
    assert.equal(readFileSync(join(out, 'bin', 'hello'), 'utf8'), 'odd length\n');
    assert.equal(readlinkSync(join(out, 'bin', 'sh')), 'busybox');
    assert.throws(() => cpioNewc([{ path: '../x', kind: 'file', mode: 0o644, data: '' }]), /"\.\.\/x": not a relative path/);
  });

  void it("nginx's root file system from Debian packages: its libraries, BusyBox, an init that runs it", async () => {
    const out = join(tmp.dir, 'nginx');
    const r = await buildTinyx('nginx', { out, cache, noKernel: true, xzLevel: 0 });
    assert.deepEqual(Object.keys(r.libraries).sort(),
      ['ld-linux-x86-64.so.2', 'libc.so.6', 'libcrypt.so.1', 'libcrypto.so.3', 'libpcre2-8.so.0', 'libssl.so.3', 'libz.so.1']);
    const list = execFileSync('sh', ['-c', `xz -dc ${r.initramfs} | busybox cpio -t`], { encoding: 'utf8' }).split('\n');
    for (const f of ['init', 'bin/busybox', 'bin/sh', 'usr/sbin/nginx', 'lib64/ld-linux-x86-64.so.2', 'lib/x86_64-linux-gnu/libc.so.6',
      'usr/lib/x86_64-linux-gnu/libssl.so.3', 'etc/nginx/tinyx.conf', 'www/index.html', 'dev/console', 'etc/passwd']) {
      assert.ok(list.includes(f), `${f} is in the initramfs`);
    }
    assert.ok(!list.some((f) => f.startsWith('usr/share/doc')), 'no documentation');
    const cfg = readFileSync(r.cfg, 'utf8');
    assert.match(cfg, /^ramdisk = ".*initramfs\.cpio\.xz"$/m);
    assert.match(cfg, /^cmdline = "console=ttyS0 .*ip=10\.0\.2\.15::10\.0\.2\.2:255\.255\.255\.0::eth0:off"$/m);
    // the binaries in the image run: the same closure on this host's loader
    const root = join(tmp.dir, 'nginx-root');
    mkdirSync(root);
    execFileSync('sh', ['-c', `xz -dc ${r.initramfs} | busybox cpio -i -d 2>/dev/null`], { cwd: root });
    assert.match(execFileSync('sh', ['-c', `${join(root, 'lib64', 'ld-linux-x86-64.so.2')} --library-path ${root}/lib/x86_64-linux-gnu:${root}/usr/lib/x86_64-linux-gnu ${join(root, 'usr', 'sbin', 'nginx')} -v 2>&1`], { encoding: 'utf8' }), /^nginx version: nginx\/1\./);
  });

  void it('busybox-httpd, and a program given as a path (its libraries from this host); bad apps say what is wrong', async () => {
    const bb = await buildTinyx('busybox-httpd', { out: join(tmp.dir, 'bb'), cache, noKernel: true, xzLevel: 0 });
    assert.deepEqual(bb.libraries, {});
    assert.ok(bb.initramfsBytes < 1.2 * 1024 * 1024, `busybox-httpd initramfs is ${bb.initramfsBytes} bytes`);
    const nc = await buildTinyx('/usr/bin/nc.openbsd', { out: join(tmp.dir, 'nc'), cache, noKernel: true, xzLevel: 0 });
    assert.deepEqual(Object.keys(nc.libraries).sort(), execFileSync('sh', ['-c', "ldd /usr/bin/nc.openbsd | awk '{print $1}' | sed 's,.*/,,' | grep -v linux-vdso"], { encoding: 'utf8' }).split('\n').filter(Boolean).sort());
    await assert.rejects(buildTinyx('/nonexistent/prog', { out: join(tmp.dir, 'x'), cache, noKernel: true, xzLevel: 0 }), (e: Error) => e instanceof TinyxError && /no such file/.test(e.message));
    await assert.rejects(buildTinyx('./package.json', { out: join(tmp.dir, 'x'), cache, noKernel: true, xzLevel: 0 }), /not an ELF program/);
    await assert.rejects(buildTinyx('Not_A_Package', { out: join(tmp.dir, 'x'), cache, noKernel: true, xzLevel: 0 }), /"Not_A_Package" is not a Debian package name/);
  });
});
