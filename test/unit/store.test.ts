import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openDb, loadMigrations, migrate, schemaVersion, SchemaTooNewError, MIGRATIONS_DIR } from '../../server/store/db.ts';
import { Store } from '../../server/store/index.ts';
import { DuplicateError } from '../../server/store/machines.ts';
import { tempDir, readyImage } from '../helpers/daemon.ts';

test('a fresh database gets every migration, in WAL mode, recorded in schema_migrations', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const db = openDb(dir.path);
  const all = loadMigrations();
  assert.ok(all.length >= 1);
  assert.equal(schemaVersion(db), all[all.length - 1].version);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as { version: number; name: string }[];
  assert.deepEqual(rows.map((r) => r.version), all.map((m) => m.version));
  for (const table of ['machines', 'images', 'workflows', 'events']) {
    assert.ok(db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?").get(table), `table ${table}`);
  }
  db.close();
});

test('re-running migrations on an up-to-date database applies nothing and keeps the data', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s1 = Store.open(dir.path);
  s1.machines.create({ mac: '52:54:00:00:00:01', hostname: 'a' });
  s1.close();
  const db = openDb(dir.path);
  assert.deepEqual(migrate(db).applied, []);
  assert.equal((db.prepare('SELECT COUNT(*) AS n FROM machines').get() as { n: number }).n, 1);
  db.close();
});

test('migrations are applied in order, each in its own transaction: a failing one leaves the earlier ones', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const mdir = join(dir.path, 'migrations');
  mkdirSync(mdir);
  writeFileSync(join(mdir, '001_a.sql'), 'CREATE TABLE a (x INTEGER);');
  writeFileSync(join(mdir, '002_b.sql'), 'CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);');
  const db = new Database(join(dir.path, 'x.db'));
  assert.throws(() => migrate(db, loadMigrations(mdir)), /no such table: nope/);
  assert.equal(schemaVersion(db), 1);
  assert.ok(db.prepare("SELECT 1 FROM sqlite_master WHERE name='a'").get());
  assert.equal(db.prepare("SELECT 1 FROM sqlite_master WHERE name='b'").get(), undefined, '002 rolled back as a whole');
  db.close();
});

test('a gap in migration numbers is refused', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  writeFileSync(join(dir.path, '001_a.sql'), 'SELECT 1;');
  writeFileSync(join(dir.path, '003_c.sql'), 'SELECT 1;');
  assert.throws(() => loadMigrations(dir.path), /expected version 2/);
});

test('a database written by a newer ironboot is refused with a clear message, and left untouched', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const db = openDb(dir.path);
  const latest = schemaVersion(db);
  db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(latest + 5, 'future', new Date().toISOString());
  db.close();
  assert.throws(() => openDb(dir.path), (err: unknown) => {
    assert.ok(err instanceof SchemaTooNewError);
    assert.match((err as Error).message, new RegExp(`schema version ${latest + 5}.*only knows up to ${latest}.*newer ironboot`));
    return true;
  });
  const again = new Database(join(dir.path, 'ironboot.db'));
  assert.equal(schemaVersion(again), latest + 5);
  again.close();
});

test('the shipped migrations are numbered without gaps', () => {
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
  files.forEach((f, i) => assert.equal(Number(f.slice(0, 3)), i + 1, f));
});

test('machines: unique MAC and reserved address, labels filter, update keeps unspecified fields', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s = Store.open(dir.path); t.after(() => s.close());
  const m = s.machines.create({ mac: '52:54:00:00:00:01', hostname: 'n1', ipv4: { address: '10.0.0.5', prefix: 24, dns: ['10.0.0.1'] }, labels: { rack: 'r1' } });
  assert.equal(m.allowPxe, true);
  assert.throws(() => s.machines.create({ mac: '52:54:00:00:00:01' }), DuplicateError);
  assert.throws(() => s.machines.create({ mac: '52:54:00:00:00:02', ipv4: { address: '10.0.0.5', prefix: 24, dns: [] } }), (e: unknown) => (e as DuplicateError).field === 'ipv4.address');
  s.machines.create({ mac: '52:54:00:00:00:03', labels: { rack: 'r2' } });
  assert.deepEqual(s.machines.list({ labels: { rack: 'r1' } }).map((x) => x.mac), ['52:54:00:00:00:01']);
  const u = s.machines.update('52:54:00:00:00:01', { allowPxe: false })!;
  assert.equal(u.allowPxe, false);
  assert.equal(u.hostname, 'n1');
  assert.deepEqual(u.ipv4, { address: '10.0.0.5', prefix: 24, dns: ['10.0.0.1'] });
});

test('workflows: at most one active per machine, enforced by the database itself', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s = Store.open(dir.path); t.after(() => s.close());
  const m = s.machines.create({ mac: '52:54:00:00:00:01' });
  const img = s.images.insert(readyImage());
  const base = { machineId: m.id, imageId: img.id, target: '/dev/sda', after: 'wait' as const, token: 't' };
  s.workflows.insert({ ...base, id: 'w1' });
  assert.throws(() => s.workflows.insert({ ...base, id: 'w2' }), /UNIQUE constraint failed/);
  s.workflows.setState('w1', 'succeeded', { final: true });
  s.workflows.insert({ ...base, id: 'w3' });
  assert.equal(s.workflows.activeForMachine(m.id)!.id, 'w3');
});

test('events are numbered per workflow in order', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s = Store.open(dir.path); t.after(() => s.close());
  const m = s.machines.create({ mac: '52:54:00:00:00:01' });
  const img = s.images.insert(readyImage());
  s.workflows.insert({ id: 'w1', machineId: m.id, imageId: img.id, target: 'ram', after: 'wait', token: 't' });
  s.events.append({ workflowId: 'w1', kind: 'state', state: 'pending' });
  s.events.append({ workflowId: 'w1', kind: 'progress', bytesDone: 5, bytesTotal: 10 });
  s.events.append({ workflowId: 'w1', kind: 'log', payload: { lines: [{ stream: 'stdout', line: 'hi' }] } });
  const evs = s.events.list('w1');
  assert.deepEqual(evs.map((e) => e.seq), [1, 2, 3]);
  assert.deepEqual(evs[2].payload, { lines: [{ stream: 'stdout', line: 'hi' }] });
  assert.deepEqual(s.events.list('w1', { afterSeq: 2 }).map((e) => e.seq), [3]);
});

