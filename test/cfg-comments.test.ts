// cfg comments (issue 10): a # starts a comment at the start of a line or
// after a space, but never inside a quoted value: `cmdline = "a #b"` once
// lost " #b" and then the closing quote, so the file was refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCfg } from '../src/cli/cfg.js';

const cfg = (text: string): ReturnType<typeof parseCfg> => parseCfg('/cfgs/a.cfg', `kernel = "hello"\n${text}`);

void describe('cfg comments and quotes', () => {
  void it('a # inside a quoted value is kept, in strings and in list items, with either quote', () => {
    assert.equal(cfg('cmdline = "a #b"').cmdline, 'a #b');
    assert.equal(cfg("cmdline = 'x=1 # not a comment' # a comment").cmdline, 'x=1 # not a comment');
    assert.equal(cfg('name = "n#1"').name, 'n#1');
    // A quote of the other kind, and an escaped one, do not end the value.
    assert.equal(cfg(`cmdline = "it's #1 \\" #2" # done`).cmdline, `it's #1 " #2`);
    const disk = cfg('disk = [ "/d/a #1.img,ro", # first\n  "/d/b.img" ] # two').devices;
    assert.deepEqual(disk?.map((d) => d.path), ['/d/a #1.img', '/d/b.img']);
  });

  void it('a # outside quotes still starts a comment, and a # glued to a word outside quotes does not', () => {
    assert.equal(cfg('memory = 8 # MiB, "quoted" in a comment').memory, 8);
    assert.equal(cfg("# it's a comment line\nmemory = 8").memory, 8);
    assert.throws(() => cfg('memory = 8#9'), /a\.cfg:2: memory: "8#9" is not a number/);
  });
});
