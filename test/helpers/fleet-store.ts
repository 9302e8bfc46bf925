/**
 * The store a several-daemons test shares between its processes: a SQLite data directory (two processes on one
 * file, WAL) or a fresh database on the test file's own PostgreSQL (test/helpers/stores.ts starts and stops it;
 * call fleetBackends() at the top level). A spec is the directory or the postgres:// URL, as the child processes
 * and `ironboot serve --store` take it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../server/store/index.ts';
import { createTestDatabase, storeBackends, type BackendName } from './stores.ts';

export type Backend = BackendName;

export const isUrl = (spec: string): boolean => /^postgres(?:ql)?:\/\//.test(spec);

/** Opens the store a spec names (SQLite directory or PostgreSQL URL). */
export function openStore(spec: string): Store {
  return isUrl(spec) ? Store.open('', { url: spec }) : Store.open(spec);
}

/** Both backends' names; adds the hooks that start and stop this file's PostgreSQL. */
export function fleetBackends(): Backend[] {
  return storeBackends().map((b) => b.name);
}

/** A fresh store for one test, migrated here once, before several processes open it. */
export function freshStore(t: { after: (fn: () => unknown) => void }, backend: Backend): string {
  let spec: string;
  if (backend === 'postgres') {
    spec = createTestDatabase('fleet');
  } else {
    spec = mkdtempSync(join(tmpdir(), 'ibd-fleet-'));
    t.after(() => rmSync(spec, { recursive: true, force: true }));
  }
  openStore(spec).close();
  return spec;
}
