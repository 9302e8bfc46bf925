/**
 * Owns the PostgreSQL connection of one PgSyncDatabase (driver.ts) and runs its requests in order, one at a time.
 *
 * A connection that is lost (server restart, network) is opened again by the next request. A transaction that was
 * open on it is gone with it: every statement of that transaction fails until the caller's ROLLBACK (its COMMIT
 * fails too), so no half of it is mistaken for the whole. A request is never retried here: a statement that may
 * or may not have run is the caller's to judge.
 */
import { workerData } from 'node:worker_threads';
import pg from 'pg';
import type { PgErrorInfo, PgRequest, PgResponse, PgWorkerData } from './protocol.ts';

const { url, port, flag: flagBuffer, connectTimeoutMs } = workerData as PgWorkerData;
const flag = new Int32Array(flagBuffer);

// Rows look as they do from SQLite: BIGINT (int8, COUNT(*), identity ids) and NUMERIC (SUM of BIGINT) as JS
// numbers (exact up to 2^53: unix ms, byte counts, row ids); BYTEA stays a Buffer (pg's default).
const parseNumber = (v: string) => Number(v);
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 || oid === 1700) return parseNumber;
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

let client: pg.Client | null = null;
let connecting: Promise<pg.Client> | null = null;
/** A transaction is open on the current connection (between a successful BEGIN and its COMMIT/ROLLBACK). */
let inTx = false;
/** The connection died with a transaction open: refuse its statements until the caller rolls back. */
let txLost = false;
/** SQL text → name of the server-side prepared statement (per connection: parsed once, planned by PostgreSQL). */
let prepared = new Map<string, string>();
let nextName = 0;

const lose = (c: pg.Client) => {
  if (client !== c) return;
  client = null;
  prepared = new Map();
  if (inTx) { txLost = true; inTx = false; }
};

async function connection(): Promise<pg.Client> {
  if (client) return client;
  if (connecting) return connecting;
  connecting = (async () => {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs, keepAlive: true, application_name: 'ironboot', types });
    c.on('error', () => lose(c)); // the next request reports it and connects again
    c.on('end', () => lose(c));
    try {
      await c.connect();
    } catch (err) {
      c.removeAllListeners();
      void c.end().catch(() => {});
      throw err;
    }
    client = c;
    return c;
  })();
  try { return await connecting; } finally { connecting = null; }
}

function errorInfo(err: unknown): PgErrorInfo {
  const e = err as Error & { code?: string; detail?: string; constraint?: string };
  const info: PgErrorInfo = { name: e?.name ?? 'Error', message: e?.message ?? String(err) };
  if (typeof e?.code === 'string') info.code = e.code;
  if (typeof e?.detail === 'string') info.detail = e.detail;
  if (typeof e?.constraint === 'string') info.constraint = e.constraint;
  return info;
}

const LOST_TX: PgErrorInfo = {
  name: 'PgConnectionLostError', code: '08006',
  message: 'the connection to PostgreSQL was lost during this transaction; the transaction was rolled back',
};

async function handle(req: PgRequest): Promise<PgResponse> {
  const { id } = req;
  try {
    switch (req.op) {
      case 'connect':
        await connection();
        return { id, ok: true, rows: [], changes: 0 };
      case 'close':
        if (client) { const c = client; client = null; c.removeAllListeners(); c.on('error', () => {}); await c.end(); }
        return { id, ok: true, rows: [], changes: 0 };
      case 'exec': {
        if (txLost) return { id, ok: false, error: LOST_TX };
        const c = await connection();
        await c.query(req.text);
        return { id, ok: true, rows: [], changes: 0 };
      }
      case 'query': {
        if (txLost) {
          if (req.tx === 'rollback') { txLost = false; return { id, ok: true, rows: [], changes: 0 }; }
          if (req.tx === 'commit') txLost = false;
          return { id, ok: false, error: LOST_TX };
        }
        const c = await connection();
        let r: pg.QueryResult;
        if (req.tx) {
          r = await c.query(req.text);
          inTx = req.tx === 'begin';
        } else {
          let name = prepared.get(req.text);
          if (!name) { name = `ironboot_${nextName++}`; prepared.set(req.text, name); }
          try {
            const config = { name, text: req.text, values: req.values, ...(req.rows === 'first-column' ? { rowMode: 'array' } : {}) };
            r = await c.query(config as pg.QueryConfig);
          } catch (err) {
            // a plan PostgreSQL cached before a schema change ("cached plan must not change result type"): next time, parse anew
            if ((err as { code?: string }).code === '0A000') prepared.delete(req.text);
            throw err;
          }
        }
        const rows = req.rows === 'none' ? [] : req.rows === 'first-column' ? r.rows.map((row: unknown[]) => row[0]) : r.rows;
        return { id, ok: true, rows, changes: r.rowCount ?? 0 };
      }
      case 'reset':
        return { id, ok: true, rows: [], changes: 0 };
    }
  } catch (err) {
    // COMMIT that failed ends the transaction on the server too (it rolls back)
    if (req.op === 'query' && (req.tx === 'commit' || req.tx === 'rollback')) inTx = false;
    return { id, ok: false, error: errorInfo(err) };
  }
}

const answer = (res: PgResponse) => {
  port.postMessage(res);
  Atomics.add(flag, 0, 1);
  Atomics.notify(flag, 0);
};

let queue: Promise<void> = Promise.resolve();
port.on('message', (req: PgRequest) => {
  if (req.op === 'reset') {
    // the caller stopped waiting for the request in flight: drop its connection so that request ends now
    if (client) {
      const c = client;
      lose(c);
      c.removeAllListeners();
      c.on('error', () => {});
      (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    }
    answer({ id: req.id, ok: true, rows: [], changes: 0 });
    return;
  }
  queue = queue.then(async () => {
    const res = await handle(req);
    answer(res);
    if (req.op === 'close') { port.close(); }
  });
});
