import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpioPath, normaliseEntries, readCpio, writeCpio, type CpioEntry } from '../../init/build/cpio.ts';
import { have } from '../helpers/netns.ts';

const ENTRIES: CpioEntry[] = [
  { path: 'bin/busybox', type: 'file', mode: 0o755, data: Buffer.from('#!fake busybox\n') },
  { path: 'init', type: 'symlink', target: 'bin/busybox' },
  { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 },
  { path: 'etc/odd', type: 'file', mode: 0o644, data: Buffer.from('abc') },        // not a multiple of 4
  { path: 'tmp', type: 'dir', mode: 0o1777 },
  { path: '/lib/deep/x.so', type: 'file', mode: 0o644, data: Buffer.alloc(0) },
];

test('newc layout: magic, sorted paths with parents first, fixed owner and mtime, 4-byte alignment', () => {
  const buf = writeCpio(ENTRIES);
  assert.equal(buf.length % 4, 0);
  const recs = readCpio(buf);
  assert.deepEqual(recs.map((r) => r.name), ['bin', 'bin/busybox', 'dev', 'dev/console', 'etc', 'etc/odd', 'init', 'lib', 'lib/deep', 'lib/deep/x.so', 'tmp']);
  assert.ok(recs.every((r) => r.uid === 0 && r.gid === 0 && r.mtime === 0));
  assert.deepEqual(recs.map((r) => r.ino), recs.map((_, i) => i + 1));
  const byName = new Map(recs.map((r) => [r.name, r]));
  assert.equal(byName.get('bin')!.mode, 0o040755);
  assert.equal(byName.get('tmp')!.mode, 0o041777);
  assert.equal(byName.get('dev/console')!.mode, 0o020600);
  assert.deepEqual(byName.get('dev/console')!.rdev, [5, 1]);
  assert.equal(byName.get('init')!.mode, 0o120777);
  assert.equal(byName.get('init')!.data.toString(), 'bin/busybox');
  assert.equal(byName.get('etc/odd')!.data.toString(), 'abc');
  assert.equal(buf.subarray(buf.length - 124).toString('latin1').includes('TRAILER!!!'), true);
});

test('same entries in any order give the same bytes', () => {
  const a = writeCpio(ENTRIES);
  const b = writeCpio([...ENTRIES].reverse());
  assert.ok(a.equals(b));
  assert.ok(!a.equals(writeCpio(ENTRIES, { mtime: 1 })));
});

test('paths are normalised and may not escape', () => {
  assert.equal(cpioPath('/./a//b/'), 'a/b');
  assert.throws(() => cpioPath('a/../b'), /\.\./);
  assert.throws(() => cpioPath('/'), /empty/);
  const n = normaliseEntries([{ path: 'a', type: 'dir', mode: 0o700 }, { path: 'a', type: 'dir', mode: 0o755 }]);
  assert.deepEqual(n, [{ path: 'a', type: 'dir', mode: 0o755 }]);
});

test('GNU cpio reads the archive back', { skip: have('cpio') ? false : 'cpio is not installed' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-cpio-'));
  try {
    const listing = execFileSync('cpio', ['-t', '--quiet'], { input: writeCpio(ENTRIES), encoding: 'utf8' }).trim().split('\n');
    assert.deepEqual(listing, ['bin', 'bin/busybox', 'dev', 'dev/console', 'etc', 'etc/odd', 'init', 'lib', 'lib/deep', 'lib/deep/x.so', 'tmp']);
    const files = writeCpio(ENTRIES.filter((e) => e.type !== 'char'));
    execFileSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames'], { input: files, cwd: dir });
    assert.equal(readFileSync(join(dir, 'bin/busybox'), 'utf8'), '#!fake busybox\n');
    assert.equal(readlinkSync(join(dir, 'init')), 'bin/busybox');
    assert.equal(lstatSync(join(dir, 'bin/busybox')).mode & 0o777, 0o755);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
