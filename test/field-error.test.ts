// Every error that names a field is a FieldError (src/vmm/field-error.ts):
// what crosses from an executor (serializeError) and what the toolstack
// hands the API (VmCreateError.from) keep its field and file, whichever
// class it is.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CfgError } from '../src/cli/cfg.js';
import { BridgeError } from '../src/toolstack/network.js';
import { PathRefusedError } from '../src/toolstack/path-policy.js';
import { resolveImage } from '../src/toolstack/images.js';
import { VmCreateError } from '../src/toolstack/vm.js';
import { DeviceConfigError } from '../src/vmm/device-page.js';
import { ImageError } from '../src/vmm/elf.js';
import { FieldError } from '../src/vmm/field-error.js';
import { serializeError } from '../src/vmm/protocol.js';
import { NotRegularFileError } from '../src/vmm/regular-file.js';
import { SnapshotError } from '../src/vmm/snapshot.js';
import { BlockConfigError } from '../src/vmm/virtio/blk.js';
import { VmStateError } from '../src/vmm/vm-schema.js';

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  assert.fail('nothing was thrown');
}

/** Each class, its field and file, and its message (as it was before the base class). */
const cases: [FieldError, string, string | undefined, string][] = [
  [new DeviceConfigError('devices.1.mac', 'is not a MAC'), 'devices.1.mac', undefined, 'devices.1.mac: is not a MAC'],
  [new VmStateError('header.vm.name', 'missing'), 'header.vm.name', undefined, 'header.vm.name: missing'],
  [new SnapshotError('/s.snap', 'section memory', 'truncated'), 'section memory', '/s.snap', '/s.snap: section memory: truncated'],
  [new ImageError('/g.elf', 'e_machine', 'not x86-64'), 'e_machine', '/g.elf', '/g.elf: e_machine: not x86-64'],
  [new BlockConfigError('devices.0.path', '/d.img', 'is not a regular file'), 'devices.0.path', '/d.img', 'devices.0.path: /d.img: is not a regular file'],
  [new NotRegularFileError('/f', 'a FIFO'), 'file', '/f', '/f is a FIFO, not a regular file'],
  [new CfgError('vm.cfg', 3, 'memory', 'not a number'), 'memory', 'vm.cfg', 'vm.cfg:3: memory: not a number'],
  [new PathRefusedError('image', '/etc/x is outside the allowed paths'), 'image', undefined, '/etc/x is outside the allowed paths'],
  [new BridgeError('"eth0" is not a bridge', 'devices.2.bridge'), 'devices.2.bridge', undefined, '"eth0" is not a bridge'],
  [thrown(() => resolveImage('no-such-image-here')) as FieldError, 'image', undefined, 'image "no-such-image-here" is neither'],
];

void describe('FieldError', () => {
  void it('every error class that names a field is one, with its field, file and message', () => {
    for (const [err, field, file, message] of cases) {
      assert.ok(err instanceof FieldError, `${err.name} is no FieldError`);
      assert.deepEqual([err.field, err.file], [field, file], err.name);
      assert.ok(err.message.startsWith(message), `${err.name}: ${err.message}`);
    }
  });

  void it('keeps its field and file across the executor boundary and into the toolstack\'s VmCreateError', () => {
    for (const [err, field, file] of cases) {
      const s = serializeError(err);
      assert.deepEqual([s.name, s.field, s.file, s.message], [err.name, field, file, err.message]);
      const c = VmCreateError.from(err);
      assert.deepEqual([c.kind, c.field, c.file, c.message], [err.name, field, file, err.message]);
    }
    // Another error names no field; the fallback names it.
    assert.deepEqual(serializeError(new RangeError('x')), { name: 'RangeError', message: 'x' });
    const c = VmCreateError.from(new Error('bad'), { field: 'file', file: '/s.snap' });
    assert.deepEqual([c.kind, c.field, c.file], ['Error', 'file', '/s.snap']);
    assert.deepEqual([VmCreateError.from(new SnapshotError('/a', 'x', 'y'), { file: '/label' }).file], ['/label']);
  });

  void it('reason is the message without the words that name the field', () => {
    assert.equal(new SnapshotError('/s', 'header.vm', 'missing').reason, 'missing');
    assert.equal(new DeviceConfigError('devices.0', 'duplicate id').reason, 'duplicate id');
  });
});
