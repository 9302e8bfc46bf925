/** The streaming tar reader: against GNU tar's own output (binary xattrs, a file capability), chunk boundaries, errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, symlinkSync, mkdirSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { TarParser, TarFormatError, type TarEntry } from '../../server/images/tar.ts';
import { makeTar } from '../helpers/images-oci.ts';

function parseAll(tar: Buffer, chunk = 1 << 20): { entries: TarEntry[]; data: Map<string, Buffer> } {
  const p = new TarParser();
  const entries: TarEntry[] = [];
  const data = new Map<string, Buffer>();
  let cur: TarEntry | null = null;
  const parts: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) {
    for (const ev of p.push(tar.subarray(i, i + chunk))) {
      if (ev.kind === 'entry') { cur = ev.entry; entries.push(ev.entry); parts.length = 0; }
      else if (ev.kind === 'data') parts.push(Buffer.from(ev.data));
      else { data.set(cur!.path, Buffer.concat(parts)); cur = null; }
    }
  }
  p.end();
  return { entries, data };
}

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');

test('GNU tar --xattrs output: security.capability and a binary user xattr arrive byte for byte', { skip: spawnSync('setcap', ['-h']).error ? 'setcap missing' : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ibi-tar-'));
  try {
    mkdirSync(join(dir, 'r'));
    writeFileSync(join(dir, 'r', 'ping'), 'ping');
    writeFileSync(join(dir, 'r', 'data'), Buffer.alloc(70000, 7));
    symlinkSync('ping', join(dir, 'r', 'link'));
    linkSync(join(dir, 'r', 'ping'), join(dir, 'r', 'hard'));
    const long = 'x'.repeat(120);
    writeFileSync(join(dir, 'r', long), 'long');
    const set = spawnSync('setcap', ['cap_net_raw+ep', join(dir, 'r', 'ping')], { encoding: 'utf8' });
    assert.equal(set.status, 0, set.stderr);
    const py = spawnSync('python3', ['-c', `import os; os.setxattr(${JSON.stringify(join(dir, 'r', 'data'))}, 'user.bin', bytes([0, 10, 61, 255, 32]))`], { encoding: 'utf8' });
    if (py.status !== 0) return; // filesystem without user xattrs: the capability part still ran above
    const tar = spawnSync('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '-C', join(dir, 'r'), '-cf', '-', '.'], { maxBuffer: 1 << 24 });
    assert.equal(tar.status, 0, String(tar.stderr));
    for (const chunk of [1 << 20, 511, 7, 1]) {
      const { entries, data } = parseAll(tar.stdout, chunk);
      const by = new Map(entries.map((e) => [e.path.replace(/^\.\//, ''), e]));
      assert.deepEqual(by.get('ping')!.xattrs.get('security.capability'), CAP, `capability (chunk ${chunk})`);
      assert.deepEqual(by.get('data')!.xattrs.get('user.bin'), Buffer.from([0, 10, 61, 255, 32]), `binary user xattr (chunk ${chunk})`);
      assert.equal(by.get('link')!.type, 'symlink');
      assert.equal(by.get('link')!.linkname, 'ping');
      assert.equal(by.get('hard')!.type, 'hardlink');
      assert.equal(by.get(long)!.type, 'file');
      assert.ok(data.get('./data')!.equals(Buffer.alloc(70000, 7)));
      assert.equal(data.get(`./${long}`)!.toString(), 'long');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('own writer round trip: devices, fifo, dirs, modes, owners, long link names', () => {
  const tar = makeTar([
    { path: 'dev/', type: 'dir', mode: 0o755 },
    { path: 'dev/sda', type: 'blockdev', devmajor: 8, devminor: 1, mode: 0o660, gid: 6 },
    { path: 'f', content: '', mode: 0o4755, uid: 1000, gid: 100 },
    { path: 'p', type: 'fifo' },
    { path: 's', type: 'symlink', linkname: 'a/'.repeat(80) + 'target' },
  ]);
  const { entries } = parseAll(tar, 100);
  assert.deepEqual(entries.map((e) => [e.path, e.type]), [['dev/', 'dir'], ['dev/sda', 'blockdev'], ['f', 'file'], ['p', 'fifo'], ['s', 'symlink']]);
  assert.deepEqual([entries[1].devmajor, entries[1].devminor, entries[1].mode, entries[1].gid], [8, 1, 0o660, 6]);
  assert.deepEqual([entries[2].mode, entries[2].uid, entries[2].gid, entries[2].size], [0o4755, 1000, 100, 0]);
  assert.equal(entries[4].linkname, 'a/'.repeat(80) + 'target');
});

test('truncated archives and corrupt headers are errors', () => {
  const tar = makeTar([{ path: 'f', content: 'x'.repeat(2000) }]);
  const p = new TarParser();
  p.push(tar.subarray(0, 1000));
  assert.throws(() => p.end(), TarFormatError);
  const bad = Buffer.from(tar);
  bad[10] ^= 1;
  assert.throws(() => new TarParser().push(bad), /checksum/);
});
