import Database from 'better-sqlite3';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dialectOf, type Dialect, type SqlDatabase, type SqlStatement } from './sql.ts';
import { PgSyncDatabase, redactUrl, type PgSyncOptions } from './postgres/driver.ts';

/** The database the repositories use: SQLite (better-sqlite3) or PostgreSQL (PgSyncDatabase). */
export type Db = SqlDatabase;

/** SQLite's migrations; PostgreSQL's, with the same versions and names, are in its postgres/ directory. */
export const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'migrations');
export const PG_MIGRATIONS_DIR = join(MIGRATIONS_DIR, 'postgres');

export const migrationsDir = (dialect: Dialect): string => dialect === 'postgres' ? PG_MIGRATIONS_DIR : MIGRATIONS_DIR;

/** Key of the advisory lock that daemons sharing one PostgreSQL database take around their migrations. */
const MIGRATE_LOCK = 0x69726f6e; // 'iron'

export interface Migration { version: number; name: string; sql: string }

/** Reads `NNN_name.sql` files in version order. */
export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir)) {
    const m = /^(\d{3,})_([\w-]+)\.sql$/.exec(file);
    if (!m) continue;
    out.push({ version: Number(m[1]), name: m[2], sql: readFileSync(join(dir, file), 'utf8') });
  }
  out.sort((a, b) => a.version - b.version);
  for (let i = 0; i < out.length; i++) {
    if (out[i].version !== i + 1) throw new Error(`migrations: expected version ${i + 1}, found ${out[i].version}_${out[i].name}.sql`);
  }
  return out;
}

export class SchemaTooNewError extends Error {
  constructor(public dbVersion: number, public codeVersion: number, path: string) {
    super(`database ${path} is at schema version ${dbVersion}, but this ironboot only knows up to ${codeVersion}: ` +
      `it was written by a newer ironboot. Upgrade ironboot, or point ${/^postgres/.test(path) ? '--store' : '--data-dir'} at another database.`);
    this.name = 'SchemaTooNewError';
  }
}

/**
 * Applies pending migrations, each in its own transaction, recording them in schema_migrations. On PostgreSQL the
 * whole run holds an advisory lock, so daemons starting together on one database apply each migration once: the
 * second waits, then finds them applied.
 */
export function migrate(db: Db, migrations: Migration[] = loadMigrations(migrationsDir(dialectOf(db))), path = db.name): { applied: number[] } {
  if (dialectOf(db) !== 'postgres') return migrateLocked(db, migrations, path);
  db.prepare('SELECT pg_advisory_lock(?)').run(MIGRATE_LOCK);
  try {
    return migrateLocked(db, migrations, path);
  } finally {
    db.prepare('SELECT pg_advisory_unlock(?)').run(MIGRATE_LOCK);
  }
}

function migrateLocked(db: Db, migrations: Migration[], path: string): { applied: number[] } {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`);
  const current = (db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
  const latest = migrations.length ? migrations[migrations.length - 1].version : 0;
  if (current > latest) throw new SchemaTooNewError(current, latest, path);
  const applied: number[] = [];
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, new Date().toISOString());
    })();
    applied.push(m.version);
  }
  return { applied };
}

export function schemaVersion(db: Db): number {
  return (db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
}

/** Opens (creating if needed) the SQLite database in the data directory, WAL mode, migrated. */
export function openDb(dataDir: string, opts: { migrations?: Migration[] } = {}): Database.Database {
  mkdirSync(dataDir, { recursive: true });
  const path = join(dataDir, 'ironboot.db');
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db, opts.migrations ?? loadMigrations(), path);
    cachePreparedStatements(db);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

export class StoreConnectError extends Error {
  constructor(url: string, reason: string) {
    super(`--store ${url}: cannot open the PostgreSQL database: ${reason}`);
    this.name = 'StoreConnectError';
  }
}

/** Connects to PostgreSQL (postgres:// or postgresql:// URL; `?host=/dir` for a Unix socket) and migrates it. */
export function openPostgres(url: string, opts: { migrations?: Migration[] } & PgSyncOptions = {}): PgSyncDatabase {
  let db: PgSyncDatabase;
  try {
    db = new PgSyncDatabase(url, opts);
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new StoreConnectError(redactUrl(url), `${e.message}${e.code ? ` (${e.code})` : ''}`);
  }
  try {
    migrate(db, opts.migrations ?? loadMigrations(PG_MIGRATIONS_DIR), db.name);
    cachePreparedStatements(db);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/**
 * Repositories call db.prepare(sql) per query; compiling the same SQL again for every DHCP request and agent event
 * was the daemon's largest JS cost under a herd (test/bench/herd.ts). Statements are kept per SQL text. The store
 * uses only run/get/all (no iterate, pluck, raw or expand, which would leave a shared statement busy or changed).
 */
export function cachePreparedStatements(db: Db): void {
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, SqlStatement>();
  (db as { prepare: Db['prepare'] }).prepare = ((sql: string) => {
    let st = cache.get(sql);
    if (!st) { st = prepare(sql); cache.set(sql, st); }
    return st;
  }) as Db['prepare'];
}
