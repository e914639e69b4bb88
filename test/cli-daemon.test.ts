// The xl-style commands (create, list, console, pause, unpause, shutdown,
// destroy, top) as a user runs them: the built CLI (dist/cli/main.js)
// against a real daemon on a real socket, and what a malformed config file
// gets: exit 1 and one line naming the file, the line and the field.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lightvm, ok, outLines, startTestDaemon, until, type TestDaemon, type VmView } from './daemon-helpers.js';
import { guestImage, sleep, tempDir } from './helpers.js';

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

void describe('the CLI against a real daemon', () => {
  let d: TestDaemon;
  const { dir, cleanup } = tempDir('clid');
  /** Runs the CLI with --socket of this file's daemon. */
  const cli = (...args: string[]): ReturnType<typeof lightvm> => lightvm([...args, '--socket', d.socket]);
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const vms = async (): Promise<VmView[]> => (await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms')).vms;
  const consoleLines = async (name: string): Promise<number> => {
    const r = await cli('console', name);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean).length;
  };

  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:2'], prefix: 'cli' });
  });
  after(async () => {
    await d.stop();
    cleanup();
  });

  void it('create from an xl cfg (comments, semicolons, a vif list over two lines): the VM sees its name and devices', async () => {
    const cfg = file('web.cfg', [
      '# a web server',
      'name = "web1";',
      "kernel = 'noxs-dump'   # prints its device page",
      'memory = 8',
      'vif = [ \'mac=00:16:3E:00:00:01,ip=10.0.0.2/24,gateway=10.0.0.1\',',
      '        "mac=00:16:3e:00:00:02,mtu=9000" ]',
      '',
    ].join('\n'));
    const r = await cli('create', cfg);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const m = /^created web1 \(id (\d+)\) on executor (\d+)\n$/.exec(r.stdout);
    assert.ok(m, r.stdout);
    const vm = (await vms()).find((v) => v.name === 'web1');
    assert.ok(vm, 'web1 is not listed');
    assert.equal(vm.id, Number(m[1]));
    assert.equal(vm.executor, Number(m[2]));
    assert.equal(vm.memory_mib, 8);
    await until('web1 to end', async () => (await vms()).find((v) => v.name === 'web1')?.state === 'exited');
    const c = await cli('console', 'web1');
    assert.equal(c.code, 0, c.stderr);
    // dev 0 has no mtu in the file: whatever default the device page gets.
    assert.match(c.stdout, new RegExp([
      `^vm ${vm.id} web1`,
      'dev 0 type 2 mac 00:16:3e:00:00:01 mtu \\d+',
      'dev 1 type 2 mac 00:16:3e:00:00:02 mtu 9000',
      'generation 2',
      '$',
    ].join('\n')));
  });

  void it('create from a JSON cfg, --json: the VM as JSON, running', async () => {
    const cfg = file('ctr.json', JSON.stringify({ name: 'ctr', kernel: 'counter', memory: 4 }));
    const r = await cli('create', cfg, '--json');
    assert.equal(r.code, 0, r.stderr);
    const vm = JSON.parse(r.stdout) as VmView;
    assert.equal(vm.name, 'ctr');
    assert.equal(vm.state, 'running');
    assert.equal(vm.memory_mib, 4);
    assert.ok(vm.image.endsWith('/counter.elf'), vm.image);
    assert.equal(vm.warm, true, 'a 4 MiB VM with a pool of 4 MiB shells starts from one');
  });

  void it('a relative kernel path is taken relative to the cfg file, not the working directory', async () => {
    mkdirSync(join(dir, 'img'));
    copyFileSync(guestImage('hello'), join(dir, 'img', 'greeter.elf'));
    const cfg = file('rel.cfg', 'name = "rel"\nkernel = "img/greeter.elf"\n');
    const r = await cli('create', cfg, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as VmView).image, join(dir, 'img', 'greeter.elf'));
    await until('rel to end', async () => (await vms()).find((v) => v.name === 'rel')?.state === 'exited');
    assert.equal((await cli('console', 'rel')).stdout, 'Hello from LightVM!\n');
  });

  void it('list: a table with every VM, its state and executor; --json the same as the API', async () => {
    const r = await cli('list');
    assert.equal(r.code, 0, r.stderr);
    const lines = outLines(r.stdout);
    assert.match(lines[0]!, /^ID +NAME +STATE +MEM\(MiB\) +EXEC +IMAGE$/);
    const row = (name: string): string[] | undefined => lines.slice(1).map((l) => l.split(/ {2,}/)).find((c) => c[1] === name);
    const api = await vms();
    for (const vm of api) {
      const cells = row(vm.name);
      assert.ok(cells, `${vm.name} not in\n${r.stdout}`);
      assert.equal(cells[0], String(vm.id));
      assert.equal(cells[3], String(vm.memory_mib));
      assert.equal(cells[4], String(vm.executor));
      assert.equal(cells[5], vm.image);
    }
    assert.equal(row('ctr')![2], 'running');
    assert.equal(row('web1')![2], 'exited 0');
    assert.equal(lines.length, 1 + api.length);
    const j = await cli('list', '--json');
    assert.equal(j.code, 0);
    assert.deepEqual((JSON.parse(j.stdout) as VmView[]).map((v) => v.name).sort(), api.map((v) => v.name).sort());
  });

  void it('console -f follows a counter until it ends after K lines, then exits 0', async () => {
    // Querystrings are coerced (only bodies are strict): ?follow=true is the
    // boolean true, so `console -f` follows instead of "follow: must be boolean".
    const cfg = file('k40.json', JSON.stringify({ name: 'k40', kernel: 'counter', cmdline: '40' }));
    const c = await cli('create', cfg);
    assert.equal(c.code, 0, c.stderr);
    const r = await cli('console', '-f', 'k40');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, Array.from({ length: 40 }, (_, i) => `count ${i}\n`).join(''));
  });

  void it('pause stops the counter\'s output, unpause resumes it; pausing twice is one clear error', async () => {
    let r = await cli('pause', 'ctr');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ctr: paused\n');
    const n0 = await consoleLines('ctr');
    await sleep(300);
    assert.equal(await consoleLines('ctr'), n0, 'a paused counter kept printing');
    assert.equal((await vms()).find((v) => v.name === 'ctr')?.state, 'paused');

    r = await cli('pause', 'ctr');
    assert.equal(r.code, 1);
    assert.deepEqual(outLines(r.stderr), ['lightvm: VM ctr is paused, not running']);

    r = await cli('unpause', 'ctr');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ctr: running\n');
    await sleep(300);
    assert.ok(await consoleLines('ctr') > n0 + 5, 'the counter did not resume');

    r = await cli('unpause', 'ctr');
    assert.equal(r.code, 1);
    assert.deepEqual(outLines(r.stderr), ['lightvm: VM ctr is running, not paused']);
  });

  void it('top -b -n 1: one frame with the VMs, their CPU and memory, and the executors', async () => {
    const r = await cli('top', '-b', '-n', '1');
    assert.equal(r.code, 0, r.stderr);
    const lines = outLines(r.stdout);
    const host = await d.host();
    assert.match(lines[0]!, new RegExp(`^lightvm top - \\d\\d:\\d\\d:\\d\\d  up \\d+s  \\d+ VMs  ${host.executors.length} executors  daemon [\\d.]+ MiB$`));
    assert.match(lines[1]!, /^pools: 4MiB \d+\/2$/);
    const header = lines.findIndex((l) => /^ID +NAME +STATE +CPU% +CPU\(ms\) +EXITS +MEM\(KiB\) +MAXMEM\(MiB\) +EXEC$/.test(l));
    assert.ok(header > 0, r.stdout);
    const ctr = lines.find((l) => /^\d+ +ctr +running /.test(l));
    assert.ok(ctr, `no running ctr row in\n${r.stdout}`);
    const cells = ctr.split(/ +/);
    assert.ok(Number(cells[4]) > 0, `CPU(ms) of a running counter: ${cells[4]}`);
    assert.ok(Number(cells[5]) > 0, `exits of a running counter: ${cells[5]}`);
    assert.ok(Number(cells[6]) > 0, `resident KiB of a running counter: ${cells[6]}`);
    const exHeader = lines.findIndex((l) => /^EXECUTOR +PID +VMS +SHELLS$/.test(l));
    assert.ok(exHeader > header, r.stdout);
    for (const ex of host.executors) {
      assert.ok(lines.slice(exHeader + 1).some((l) => l.split(/ +/)[0] === String(ex.id) && l.split(/ +/)[1] === String(ex.pid)),
        `executor ${ex.id} missing in\n${r.stdout}`);
    }
  });

  void it('shutdown: the counter hears it at its next POLL and exits 0', async () => {
    const r = await cli('shutdown', 'ctr');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ctr: exited 0\n');
    const vm = (await vms()).find((v) => v.name === 'ctr');
    assert.deepEqual(vm?.exit, { kind: 'halt', status: 0 });
  });

  void it('destroy: a spinning VM is gone from the list; an unknown VM is one clear error', async () => {
    const cfg = file('spin.cfg', 'name = "spin1"\nkernel = "spin"\nmemory = 2\n');
    let r = await cli('create', cfg);
    assert.equal(r.code, 0, r.stderr);
    r = await cli('destroy', 'spin1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'spin1: destroyed\n');
    assert.ok(!(await vms()).some((v) => v.name === 'spin1'), 'a destroyed VM is still listed');
    r = await cli('destroy', 'spin1');
    assert.equal(r.code, 1);
    assert.deepEqual(outLines(r.stderr), ['lightvm: no VM with id or name "spin1"']);
    // By id too.
    const again = await cli('create', cfg, '--json');
    const id = (JSON.parse(again.stdout) as VmView).id;
    r = await cli('destroy', String(id));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'spin1: destroyed\n');
  });

  void it('create with a name in use: exit 1, one line naming the field', async () => {
    const cfg = file('dup.cfg', 'name = "dupe"\nkernel = "sleeper"\ncmdline = "60000"\n');
    assert.equal((await cli('create', cfg)).code, 0);
    const r = await cli('create', cfg);
    assert.equal(r.code, 1);
    assert.deepEqual(outLines(r.stderr), ['lightvm: name: a VM named "dupe" already exists']);
    assert.equal((await cli('destroy', 'dupe')).code, 0);
  });

  void describe('malformed cfg files: exit 1, nothing created, one line naming the file, the line and the field', () => {
    const cases: [string, string, (f: string) => RegExp][] = [
      ['unknown-key.cfg', 'name = "a"\nkernel = "hello"\nbogus = 1\n', (f) => new RegExp(`^${f}:3: bogus: unknown key \\(known: name, kernel, ramdisk, memory, cmdline, extra, vif, disk\\)$`)],
      ['bad-type.cfg', 'kernel = "hello"\nmemory = "four"\n', (f) => new RegExp(`^${f}:2: memory: expected a number$`)],
      ['list-type.cfg', 'kernel = "hello"\nname = [ "a" ]\n', (f) => new RegExp(`^${f}:2: name: expected a string$`)],
      ['bare-word.cfg', 'name = "a"\nkernel = hello\n', (f) => new RegExp(`^${f}:2: kernel: "hello" is not a number, a quoted string or a list of quoted strings$`)],
      ['no-kernel.cfg', 'name = "a"\nmemory = 4\n', (f) => new RegExp(`^${f}: kernel: missing`)],
      ['duplicate.cfg', 'name = "a"\nkernel = "hello"\nname = "b"\n', (f) => new RegExp(`^${f}:3: name: set twice \\(first on line 1\\)$`)],
      ['bad-mac.cfg', 'kernel = "hello"\n\nvif = [ \'mac=00:16:3e:zz:00:01\' ]\n', (f) => new RegExp(`^${f}:3: vif\\[0\\]\\.mac: "00:16:3e:zz:00:01" is not a MAC address$`)],
      ['bad-vif-key.cfg', 'kernel = "hello"\nvif = [ \'mac=00:16:3e:00:00:01\', \'color=red\' ]\n', (f) => new RegExp(`^${f}:2: vif\\[1\\]: unknown vif key "color"`)],
      ['bad-ip.cfg', 'kernel = "hello"\nvif = [ \'ip=10.0.0/24\' ]\n', (f) => new RegExp(`^${f}:2: vif\\[0\\]\\.ip: "10.0.0/24" is not an IPv4 address`)],
      ['unterminated.cfg', 'kernel = "hello"\nvif = [ \'mac=00:16:3e:00:00:01\',\n  \'mac=00:16:3e:00:00:02\'\nmemory = 4\n', (f) => new RegExp(`^${f}:2: vif: list is not closed with \\]$`)],
      ['bad-item.cfg', 'kernel = "hello"\nvif = [ \'mac=00:16:3e:00:00:01\' \'mac=00:16:3e:00:00:02\' ]\n', (f) => new RegExp(`^${f}:2: vif: cannot read list item at`)],
      ['bad-disk.cfg', 'kernel = "hello"\ndisk = [ \'/tmp/x.img,rx\' ]\n', (f) => new RegExp(`^${f}:2: disk\\[0\\]: "/tmp/x.img,rx" is not "path,rw" or "path,ro"$`)],
      ['no-disk-file.cfg', 'kernel = "hello"\ndisk = [ \'nosuch.img,ro\' ]\n', (f) => new RegExp(`^devices\\.0\\.path: ${f.replace(/[^/]*$/, '')}nosuch\\.img: ENOENT`)],
      ['syntax.cfg', 'kernel = "hello"\nmemory 4\n', (f) => new RegExp(`^${f}:2: syntax: expected key = value, got "memory 4"$`)],
      ['bad.json', '{ "kernel": "hello", }', (f) => new RegExp(`^${f}: json: `)],
      ['unknown-key.json', '{ "kernel": "hello", "bogus": 1 }', (f) => new RegExp(`^${f}: bogus: unknown key`)],
      ['bad-type.json', '{ "kernel": "hello", "memory": "4" }', (f) => new RegExp(`^${f}: memory: expected a whole number of MiB$`)],
      ['no-image.json', '{ "name": "x" }', (f) => new RegExp(`^${f}: image: missing or not a string$`)],
      ['array.json', '[ "hello" ]', (f) => new RegExp(`^${f}: json: expected an object$`)],
      ['bad-vif.json', '{ "kernel": "hello", "vif": [ "mac=zz" ] }', (f) => new RegExp(`^${f}: vif\\[0\\]\\.mac: "zz" is not a MAC address$`)],
    ];
    for (const [name, text, expected] of cases) {
      void it(name, async () => {
        const f = file(name, text);
        const before = (await vms()).length;
        const r = await cli('create', f);
        assert.equal(r.code, 1, `exit code; stdout ${r.stdout}`);
        assert.equal(r.stdout, '');
        const err = outLines(r.stderr);
        assert.equal(err.length, 1, r.stderr);
        assert.ok(err[0]!.startsWith('lightvm: '), err[0]);
        assert.match(err[0]!.slice('lightvm: '.length), expected(escape(f)));
        assert.equal((await vms()).length, before, 'a VM was created from a malformed file');
      });
    }

    void it('a cfg file that does not exist', async () => {
      const f = join(dir, 'nosuch.cfg');
      const r = await cli('create', f);
      assert.equal(r.code, 1);
      assert.deepEqual(outLines(r.stderr), [`lightvm: ${f}: no such file`]);
    });

    void it('values the daemon refuses (memory out of range, an unknown image): one line naming the field', async () => {
      const before = (await vms()).length;
      let r = await cli('create', file('mem.cfg', 'kernel = "hello"\nmemory = 1\n'));
      assert.equal(r.code, 1);
      assert.deepEqual(outLines(r.stderr), ['lightvm: memory: must be >= 2']);
      r = await cli('create', file('img.cfg', 'kernel = "nosuch"\n'));
      assert.equal(r.code, 1);
      const err = outLines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0]!, /^lightvm: image "nosuch" is neither a file nor a built-in image/);
      assert.equal((await vms()).length, before);
    });
  });
});
