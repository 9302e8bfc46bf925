/**
 * Both store backends for the repository tests: embedded SQLite in a temp directory, and PostgreSQL (a server of
 * this test file's own, test/helpers/postgres.ts, with a fresh database per store). Call storeBackends() at the top
 * level of a test file (it adds the hooks that start and stop PostgreSQL) and run the same tests for each:
 *
 *   for (const backend of storeBackends()) {
 *     describe(`machines (${backend.name})`, () => {
 *       test('…', (t) => { const { store } = backend.open(t); … });
 *     });
 *   }
 *
 * PostgreSQL is not optional: a missing server fails the PostgreSQL tests with the reason (deploy/setup.sh --test
 * installs it), it does not skip them.
 */
import { after, before, describe, type TestContext } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../server/store/index.ts';
import { startPostgres, type TestPostgres } from './postgres.ts';

export type BackendName = 'sqlite' | 'postgres';

export interface TestStore {
  store: Store;
  /** The data directory (SQLite's database lives there; with PostgreSQL it holds nothing of the store). */
  dataDir: string;
  /** The --store URL (PostgreSQL), or null (SQLite). */
  url: string | null;
  /** Another Store on the same database (a restart, or a second connection). */
  reopen(): Store;
  /** Closes every Store it opened and removes the data directory (the database goes with the server). */
  remove(): void;
}

export interface StoreBackend {
  name: BackendName;
  /** A fresh, migrated, empty store; with `t`, removed when the test ends. */
  open(t?: TestContext): TestStore;
}

let server: TestPostgres | null = null;
let serverFailed: Error | null = null;
let databases = 0;

/** The PostgreSQL server of this test file (started by storeBackends()'s before hook). */
export function testPostgres(): TestPostgres {
  if (serverFailed) throw serverFailed;
  if (!server) throw new Error('PostgreSQL is not started: call storeBackends() at the top level of the test file');
  return server;
}

/** A new empty database on this file's PostgreSQL; returns its --store URL. */
export function createTestDatabase(prefix = 't'): string {
  const pg = testPostgres();
  const name = `${prefix}_${process.pid}_${++databases}`;
  pg.psql(`CREATE DATABASE ${name}`);
  return `postgresql://ironboot@/${name}?host=${encodeURIComponent(pg.socketDir)}`;
}

function opener(url: () => string | null): (t?: TestContext) => TestStore {
  return (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'ironboot-store-'));
    const u = url();
    const opened: Store[] = [];
    const open = () => { const s = Store.open(dataDir, { url: u }); opened.push(s); return s; };
    let store: Store;
    try { store = open(); } catch (err) { rmSync(dataDir, { recursive: true, force: true }); throw err; }
    const handle: TestStore = {
      store, dataDir, url: u, reopen: open,
      remove: () => { for (const s of opened) s.close(); rmSync(dataDir, { recursive: true, force: true }); },
    };
    t?.after(handle.remove);
    return handle;
  };
}

let hooked = false;

export function storeBackends(): StoreBackend[] {
  if (!hooked) {
    hooked = true;
    before(async () => {
      try { server = await startPostgres(); } catch (err) { serverFailed = err as Error; }
    });
    after(async () => { await server?.stop(); server = null; });
  }
  return [
    { name: 'sqlite', open: opener(() => null) },
    { name: 'postgres', open: opener(() => createTestDatabase()) },
  ];
}

/** `body` once per backend, inside a describe named `${title} (${backend})`. */
export function describeStores(title: string, body: (backend: StoreBackend) => void): void {
  for (const b of storeBackends()) describe(`${title} (${b.name})`, () => body(b));
}
