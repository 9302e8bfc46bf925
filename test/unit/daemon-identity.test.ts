import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { daemonIdentity } from '../../server/data-dir.ts';

test('a daemon identity is made once per data directory, kept across restarts, and differs between two data directories on one host', (t) => {
  const a = mkdtempSync(join(tmpdir(), 'ib-id-a-'));
  const b = mkdtempSync(join(tmpdir(), 'ib-id-b-'));
  t.after(() => { rmSync(a, { recursive: true, force: true }); rmSync(b, { recursive: true, force: true }); });
  const first = daemonIdentity(a);
  assert.match(first, /^[\w.-]+-[0-9a-f]{8}$/);
  assert.ok(first.startsWith(hostname().replace(/[^\w.-]/g, '_')), first);
  assert.equal(daemonIdentity(a), first, 'the same directory keeps its identity (a restart)');
  assert.equal(readFileSync(join(a, 'daemon-id'), 'utf8').trim(), first);
  assert.notEqual(daemonIdentity(b), first, 'two daemons on one host are told apart');
});
