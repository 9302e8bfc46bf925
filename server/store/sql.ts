/**
 * What the repositories need of a database: the subset of better-sqlite3 they use. better-sqlite3's Database
 * satisfies it as it is (SQLite, the default); PgSyncDatabase (postgres/driver.ts) implements it over PostgreSQL.
 *
 * The contract is synchronous on purpose: one set of repository code, a transaction that nothing interleaves with
 * (the calling thread does nothing else until it ends, as with better-sqlite3), and no rewrite of the ~300 call
 * sites that use the store. SQL written for both: `?` and `@name` placeholders, ON CONFLICT … DO UPDATE/NOTHING,
 * RETURNING instead of lastInsertRowid, integers 0/1 for booleans, no SQLite-only functions. Where a query truly
 * differs, the repository branches on `dialectOf(db)` where it is visible.
 */
import type Database from 'better-sqlite3';
import { PgSyncDatabase } from './postgres/driver.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface SqlRunResult { changes: number }

export interface SqlStatement {
  /** Runs a statement; `changes` is the number of rows it inserted, updated or deleted. */
  run(...params: unknown[]): SqlRunResult;
  /** The first row, or undefined. */
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  /** Rows become their first column's value (mutates this statement, as in better-sqlite3). */
  pluck(toggle?: boolean): this;
}

/** As better-sqlite3 declares it, so that its Database is a SqlDatabase. */
export type ArgumentTypes<F extends Function> = F extends (...args: infer A) => unknown ? A : never;

export interface SqlDatabase {
  /** SQLite: the file path; PostgreSQL: the URL without its password. */
  readonly name: string;
  readonly open: boolean;
  /** Params: positional values for `?`, or one object for `@name`. */
  prepare(sql: string): SqlStatement;
  /** Runs one or more statements without parameters (migrations). */
  exec(sql: string): unknown;
  /** fn in a transaction: all of it or none. Nested calls use savepoints, so an inner failure undoes only itself. */
  transaction<F extends (...params: any[]) => unknown>(fn: F): (...params: ArgumentTypes<F>) => ReturnType<F>;
  close(): unknown;
}

export type SqliteDatabase = Database.Database;

export function dialectOf(db: SqlDatabase): Dialect {
  return db instanceof PgSyncDatabase ? 'postgres' : 'sqlite';
}

/** The better-sqlite3 handle behind `db`, for SQLite-only work (pragmas, the WAL checkpointer), else null. */
export function sqliteOf(db: SqlDatabase): SqliteDatabase | null {
  return dialectOf(db) === 'sqlite' ? db as SqliteDatabase : null;
}

/** A UNIQUE (or PRIMARY KEY) violation: SQLite's SQLITE_CONSTRAINT_UNIQUE/PRIMARYKEY, PostgreSQL's 23505. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}
