/**
 * WAL checkpoints happen on the checkpointer's thread, never inside a commit on the main connection: the main
 * connection's automatic checkpoint is off, and a WAL grown past the threshold is copied back by the worker's own
 * connection while the main one goes on writing. If the worker dies, the main connection checkpoints again itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb } from '../../server/store/db.ts';
import { Checkpointer, type CheckpointReport } from '../../server/store/checkpointer.ts';

const until = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), what);
};

test('the main connection never checkpoints; the worker does once the WAL passes its threshold', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-ckpt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = openDb(dir);
  t.after(() => { if (db.open) db.close(); });
  assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000, 'SQLite\'s default, before');
  const reports: CheckpointReport[] = [];
  const cp = new Checkpointer(db, { intervalMs: 50, walBytes: 256 << 10, onCheckpoint: (r) => reports.push(r) });
  t.after(() => cp.stop());
  assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0);
  db.exec('CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT)');
  const ins = db.prepare('INSERT INTO filler (body) VALUES (?)');
  // 2000 commits of ~1 KiB: past SQLite's 1000-page automatic checkpoint, which the main connection no longer runs
  for (let i = 0; i < 2000; i++) ins.run('x'.repeat(1000));
  assert.ok(statSync(join(dir, 'ironboot.db-wal')).size > 1000 * 4096, 'the WAL grew past 1000 pages: no checkpoint on this thread');
  await until(() => reports.some((r) => r.checkpointed > 0), 'the worker checkpointed the WAL');
  const r = reports.find((x) => x.checkpointed > 0)!;
  assert.ok(r.walBytes >= 256 << 10);
  assert.equal(r.busy, 0);
  // the checkpointed WAL is reused from its start: it stops growing while the main connection keeps writing
  const size = statSync(join(dir, 'ironboot.db-wal')).size;
  for (let i = 0; i < 200; i++) ins.run('y'.repeat(1000));
  assert.equal(statSync(join(dir, 'ironboot.db-wal')).size, size);
  assert.equal((db.prepare('SELECT COUNT(*) AS n FROM filler').get() as { n: number }).n, 2200);
});

test('the worker gone: the main connection checkpoints by itself again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-ckpt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = openDb(dir);
  t.after(() => { if (db.open) db.close(); });
  const cp = new Checkpointer(db, { intervalMs: 50 });
  assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0);
  await (cp as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
  await until(() => db.pragma('wal_autocheckpoint', { simple: true }) === 1000, 'automatic checkpoints back on');
});
