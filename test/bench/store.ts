/**
 * Repository call latency, embedded SQLite (the reference, measured in the same run) against PostgreSQL behind the
 * synchronous driver (server/store/postgres/driver.ts: each call a round trip to the connection's worker thread and
 * on to the server over a Unix socket). A PostgreSQL of the bench's own (test/helpers/postgres.ts; note that it
 * runs with fsync=off, so commit costs are PostgreSQL's CPU and round trips, not a disk). Prints ops/s per
 * operation and the PostgreSQL/SQLite ratio; no assertions. Run by hand: `npm run bench -- store`
 * (STORE_BENCH_MS, default 2000, per operation and backend).
 *
 *   getByMac     one machine by MAC (the DHCP path without its cache)
 *   changeMarker the DHCP cache's per-packet check
 *   append       one workflow event (agent progress/log), autocommit
 *   transition   WorkflowService.transition: one transaction of read, update, event append, read
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Store } from '../../server/store/index.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { readyImage } from '../helpers/daemon.ts';

const MS = Number(process.env.STORE_BENCH_MS ?? 2000);
const MACHINES = 1000;
const mac = (i: number) => `52:54:00:b0:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;

function rate(fn: (i: number) => void): number {
  for (let i = 0; i < 200; i++) fn(i); // warm: statements prepared (and parsed server-side), caches filled
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < MS) { for (let k = 0; k < 50; k++) fn(n++); }
  return n / ((performance.now() - t0) / 1000);
}

function measure(store: Store): Record<string, number> {
  store.tx(() => { for (let i = 0; i < MACHINES; i++) store.machines.create({ mac: mac(i), ipv4: { address: `10.200.${i >> 8}.${i & 0xff}`, prefix: 16, dns: [] } }); });
  const img = store.images.insert(readyImage());
  const workflows = new WorkflowService(store, pino({ level: 'silent' }));
  const wf = workflows.create({ mac: mac(0), image: img.id, target: 'ram' });
  workflows.transition(wf.id, 'booting');
  return {
    getByMac: rate((i) => { if (!store.machines.getByMac(mac(i % MACHINES))) throw new Error('missing'); }),
    changeMarker: rate(() => { store.changeMarker(); }),
    append: rate((i) => { store.events.append({ workflowId: wf.id, kind: 'progress', bytesDone: i, bytesTotal: 1 << 30 }); }),
    transition: rate(() => { workflows.transition(wf.id, 'booting', { message: 'again' }); }), // booting → booting is allowed (a second script fetch)
  };
}

const dir = mkdtempSync(join(tmpdir(), 'ironboot-bench-store-'));
const pg = await startPostgres();
try {
  const sqlite = Store.open(dir);
  const s = measure(sqlite);
  sqlite.close();
  const pgStore = Store.open(dir, { url: await pg.createDatabase('bench') });
  const p = measure(pgStore);
  pgStore.close();
  console.log(`store: repository calls, ops/s (${MS} ms each; ${MACHINES} machines)`);
  console.log('operation       sqlite      postgres    pg/sqlite   pg µs/op');
  for (const k of Object.keys(s)) {
    console.log(`${k.padEnd(14)} ${s[k].toFixed(0).padStart(9)} ${p[k].toFixed(0).padStart(12)} ${(p[k] / s[k]).toFixed(3).padStart(11)} ${(1e6 / p[k]).toFixed(0).padStart(10)}`);
  }
} finally {
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
