/**
 * The store a several-daemons test shares between its processes: a SQLite data directory (two processes on one
 * file, WAL) or a database on the test's own PostgreSQL (test/helpers/postgres.ts). A spec is the directory or
 * the postgres:// URL, as the child processes take it on their command line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../server/store/index.ts';
import { startPostgres, postgresUnavailable, type TestPostgres } from './postgres.ts';

export type Backend = 'sqlite' | 'postgres';
export const BACKENDS: Backend[] = ['sqlite', 'postgres'];

export const isUrl = (spec: string): boolean => /^postgres(?:ql)?:\/\//.test(spec);

/** Opens the store a spec names (SQLite directory or PostgreSQL URL). */
export function openStore(spec: string): Store {
  return isUrl(spec) ? Store.open('', { url: spec }) : Store.open(spec);
}

/** Why a backend cannot run here, or false. */
export const backendUnavailable = (b: Backend): string | false => (b === 'postgres' ? postgresUnavailable() ?? false : false);

let pg: Promise<TestPostgres> | null = null;
let dbs = 0;

/**
 * A fresh, migrated store for one test (migrated here, once, before several processes open it). A SQLite directory
 * is removed after the test; the PostgreSQL server (one per test file) is stopped by stopPostgres().
 */
export async function freshStore(t: { after: (fn: () => unknown) => void }, backend: Backend): Promise<string> {
  let spec: string;
  if (backend === 'postgres') {
    pg ??= startPostgres();
    const server = await pg;
    // a host name before the socket's ?host=: `ironboot serve --store` checks the URL with WHATWG's parser, which
    // refuses postgresql://user@/db (libpq's form); pg takes ?host= over the name
    spec = (await server.createDatabase(`fleet_${process.pid}_${dbs++}`)).replace('@/', '@localhost/');
  } else {
    spec = mkdtempSync(join(tmpdir(), 'ibd-fleet-'));
    t.after(() => rmSync(spec, { recursive: true, force: true }));
  }
  openStore(spec).close();
  return spec;
}

/** Stops the test file's PostgreSQL (call from a top-level after()). */
export async function stopPostgres(): Promise<void> {
  if (pg) { const p = pg; pg = null; await (await p).stop(); }
}
