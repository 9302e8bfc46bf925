import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { loadMigrations, migrate, openDb, openPostgres, schemaVersion, SchemaTooNewError, MIGRATIONS_DIR, PG_MIGRATIONS_DIR } from '../../server/store/db.ts';
import { Store } from '../../server/store/index.ts';
import { tempDir, ROOT } from '../helpers/daemon.ts';
import { createTestDatabase, storeBackends, testPostgres } from '../helpers/stores.ts';

storeBackends(); // starts this file's PostgreSQL

/** Tables PostgreSQL has and SQLite does not: what SQLite's PRAGMA data_version gives it (migrations/postgres/001). */
const PG_ONLY_TABLES = ['change_counters'];

test('both dialects ship the same migrations: versions and names', () => {
  const sqlite = loadMigrations(MIGRATIONS_DIR).map((m) => `${m.version}_${m.name}`);
  const pg = loadMigrations(PG_MIGRATIONS_DIR).map((m) => `${m.version}_${m.name}`);
  assert.ok(sqlite.length >= 8);
  assert.deepEqual(pg, sqlite);
});

test('migrated, both dialects have the same tables with the same columns', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const sdb = openDb(dir.path);
  t.after(() => sdb.close());
  const sqliteTables = (sdb.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[]);
  const sqlite = Object.fromEntries(sqliteTables.map((name) => [name,
    (sdb.prepare(`SELECT name FROM pragma_table_xinfo('${name}')`).pluck().all() as string[]).sort()]));

  const pdb = openPostgres(createTestDatabase());
  t.after(() => pdb.close());
  const rows = pdb.prepare(`SELECT table_name AS t, column_name AS c FROM information_schema.columns
    WHERE table_schema = 'public' ORDER BY table_name, column_name`).all() as { t: string; c: string }[];
  const pg: Record<string, string[]> = {};
  for (const r of rows) if (!PG_ONLY_TABLES.includes(r.t)) (pg[r.t] ??= []).push(r.c);
  for (const k of Object.keys(pg)) pg[k].sort();
  assert.deepEqual(pg, sqlite);
  assert.ok(Object.keys(sqlite).includes('machines') && sqlite.workflows.includes('active'));
});

test('postgres: a fresh database gets every migration, recorded in schema_migrations; again, nothing', (t) => {
  const url = createTestDatabase();
  const db = openPostgres(url);
  t.after(() => db.close());
  const all = loadMigrations(PG_MIGRATIONS_DIR);
  assert.equal(schemaVersion(db), all[all.length - 1].version);
  assert.deepEqual(db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all(), all.map((m) => ({ version: m.version, name: m.name })));
  assert.deepEqual(migrate(db).applied, []);
  const s = Store.open('/nonexistent', { url }); // the data directory is not used with --store
  s.machines.create({ mac: '52:54:00:00:00:01' });
  s.close();
  assert.deepEqual(migrate(db).applied, []);
  assert.equal((db.prepare('SELECT COUNT(*) AS n FROM machines').get() as { n: number }).n, 1, 'data kept; COUNT(*) is a number');
});

test('postgres: a failing migration is rolled back as a whole and leaves the earlier ones', (t) => {
  const db = openPostgres(createTestDatabase(), { migrations: [] });
  t.after(() => db.close());
  const ms = [
    { version: 1, name: 'a', sql: 'CREATE TABLE a (x INTEGER);' },
    { version: 2, name: 'b', sql: 'CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);' },
  ];
  assert.throws(() => migrate(db, ms), (e: unknown) => (e as { code?: string }).code === '42P01' && /relation "nope" does not exist/.test((e as Error).message));
  assert.equal(schemaVersion(db), 1);
  assert.equal(db.prepare("SELECT to_regclass('public.a') IS NOT NULL AS x").pluck().get(), true);
  assert.equal(db.prepare("SELECT to_regclass('public.b') IS NOT NULL AS x").pluck().get(), false, '002 rolled back as a whole');
});

test('postgres: a database written by a newer ironboot is refused, naming --store', (t) => {
  const url = createTestDatabase();
  const db = openPostgres(url);
  t.after(() => db.close());
  const latest = schemaVersion(db);
  db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(latest + 5, 'future', new Date().toISOString());
  assert.throws(() => Store.open('/nonexistent', { url }), (err: unknown) => {
    assert.ok(err instanceof SchemaTooNewError);
    assert.match((err as Error).message, new RegExp(`schema version ${latest + 5}.*only knows up to ${latest}.*--store`));
    return true;
  });
  assert.equal(schemaVersion(db), latest + 5);
});

test('postgres: daemons migrating one database at once apply each migration once (advisory lock)', async (t) => {
  const url = createTestDatabase();
  const child = () => new Promise<number[]>((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/store-migrate-child.ts'), url], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`migrating child exited ${code}: ${err}`)));
  });
  const results = await Promise.all([child(), child(), child()]);
  const all = loadMigrations(PG_MIGRATIONS_DIR).map((m) => m.version);
  assert.deepEqual(results.flat().sort((a, b) => a - b), all, `each migration applied by exactly one of them: ${JSON.stringify(results)}`);
  const rows = testPostgres().psql('SELECT version FROM schema_migrations ORDER BY version', url.split('/').pop()!.split('?')[0]);
  assert.deepEqual(rows.trim().split('\n').map(Number), all);
});

test('sqlite: Store.open without --store still opens the data directory\'s SQLite file', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s = Store.open(dir.path);
  t.after(() => s.close());
  assert.equal(s.dialect, 'sqlite');
  assert.ok(s.sqlite);
  const raw = new Database(join(dir.path, 'ironboot.db'));
  t.after(() => raw.close());
  assert.equal(schemaVersion(raw), loadMigrations().length);
});
