/**
 * Plain JavaScript, not TypeScript through tsx: a thread starts in ~0.2 s instead of ~0.7 s (every Store.open on
 * PostgreSQL starts one). The messages are typed in protocol.ts.
 *
 * Owns the PostgreSQL connection of one PgSyncDatabase (driver.ts) and runs its requests in order, one at a time.
 *
 * A connection that is lost (server restart, network) is opened again by the next request. A transaction that was
 * open on it is gone with it: every statement of that transaction fails until the caller's ROLLBACK (its COMMIT
 * fails too), so no half of it is mistaken for the whole. A request is never retried here: a statement that may
 * or may not have run is the caller's to judge.
 */
/** @typedef {import('./protocol.ts').PgRequest} PgRequest */
/** @typedef {import('./protocol.ts').PgResponse} PgResponse */
/** @typedef {import('./protocol.ts').PgErrorInfo} PgErrorInfo */
import { workerData } from 'node:worker_threads';
import pg from 'pg';

/** @type {import('./protocol.ts').PgWorkerData} */
const { url, port, flag: flagBuffer, connectTimeoutMs } = workerData;
const flag = new Int32Array(flagBuffer);

// Rows look as they do from SQLite: BIGINT (int8, COUNT(*), identity ids) and NUMERIC (SUM of BIGINT) as JS
// numbers (exact up to 2^53: unix ms, byte counts, row ids); BYTEA stays a Buffer (pg's default).
const parseNumber = (/** @type {string} */ v) => Number(v);
const types = {
  getTypeParser(/** @type {number} */ oid, /** @type {any} */ format) {
    if (oid === 20 || oid === 1700) return parseNumber;
    return pg.types.getTypeParser(oid, format);
  },
};

/** @type {pg.Client | null} */
let client = null;
/** @type {Promise<pg.Client> | null} */
let connecting = null;
/** A transaction is open on the current connection (between a successful BEGIN and its COMMIT/ROLLBACK). */
let inTx = false;
/** The connection died with a transaction open: refuse its statements until the caller rolls back. */
let txLost = false;
/** SQL text → name of the server-side prepared statement (per connection: parsed once, planned by PostgreSQL). */
/** @type {Map<string, string>} */
let prepared = new Map();
let nextName = 0;

const lose = (/** @type {pg.Client} */ c) => {
  if (client !== c) return;
  client = null;
  prepared = new Map();
  if (inTx) { txLost = true; inTx = false; }
};

/** Forgets the connection and closes its socket (a query waiting on it fails at once). */
function drop(/** @type {pg.Client} */ c) {
  lose(c);
  c.removeAllListeners();
  c.on('error', () => {});
  /** @type {any} */ (c).connection.stream.destroy();
}

/** @returns {Promise<pg.Client>} */
async function connection() {
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

/** @returns {PgErrorInfo} */
function errorInfo(/** @type {any} */ err) {
  const e = err;
  /** @type {PgErrorInfo} */
  const info = { name: e?.name ?? 'Error', message: e?.message ?? String(err) };
  if (typeof e?.code === 'string') info.code = e.code;
  if (typeof e?.detail === 'string') info.detail = e.detail;
  if (typeof e?.constraint === 'string') info.constraint = e.constraint;
  return info;
}

/** @type {PgErrorInfo} */
const LOST_TX = {
  name: 'PgConnectionLostError', code: '08006',
  message: 'the connection to PostgreSQL was lost during this transaction; the transaction was rolled back',
};

/** @returns {Promise<PgResponse>} */
async function handle(/** @type {PgRequest} */ req) {
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
        if (req.begin) { await c.query('BEGIN'); inTx = true; }
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
        if (req.begin) { await c.query('BEGIN'); inTx = true; }
        /** @type {pg.QueryResult} */
        let r;
        if (req.tx) {
          r = await c.query(req.text);
          inTx = false;
        } else {
          let name = prepared.get(req.text);
          if (!name) { name = `ironboot_${nextName++}`; prepared.set(req.text, name); }
          try {
            const config = { name, text: req.text, values: req.values, ...(req.rows === 'first-column' ? { rowMode: 'array' } : {}) };
            r = await c.query(/** @type {any} */ (config));
          } catch (err) {
            // a plan PostgreSQL cached before a schema change ("cached plan must not change result type"): next time, parse anew
            if (/** @type {any} */ (err).code === '0A000') prepared.delete(req.text);
            throw err;
          }
        }
        const rows = req.rows === 'none' ? [] : req.rows === 'first-column' ? r.rows.map((row) => row[0]) : r.rows;
        return { id, ok: true, rows, changes: r.rowCount ?? 0 };
      }
      case 'reset':
        return { id, ok: true, rows: [], changes: 0 };
    }
  } catch (err) {
    // COMMIT that failed ends the transaction on the server too (it rolls back)
    if (req.op === 'query' && (req.tx === 'commit' || req.tx === 'rollback')) inTx = false;
    // no SQLSTATE (the socket closed: "Connection terminated unexpectedly") or a connection/shutdown class one:
    // this connection is done, whether or not pg has said so yet
    const code = /** @type {any} */ (err).code;
    // a socket error (EPIPE, ECONNRESET, …: written to a connection the server had just closed) is a lost
    // connection too, and is said as one
    const socketError = typeof code === 'string' && /^E[A-Z]+$/.test(code);
    if (client && (typeof code !== 'string' || socketError || /^(08|57P)/.test(code))) drop(client);
    if (socketError) {
      return { id, ok: false, error: { name: 'PgConnectionLostError', code: '08006', message: `the connection to PostgreSQL was lost (${/** @type {Error} */ (err).message}); the next call connects again` } };
    }
    return { id, ok: false, error: errorInfo(err) };
  }
}

const answer = (/** @type {PgResponse} */ res) => {
  port.postMessage(res);
  Atomics.add(flag, 0, 1);
  Atomics.notify(flag, 0);
};

let queue = Promise.resolve();
port.on('message', (/** @type {PgRequest} */ req) => {
  if (req.op === 'reset') {
    // the caller stopped waiting for the request in flight: drop its connection so that request ends now
    if (client) drop(client);
    answer({ id: req.id, ok: true, rows: [], changes: 0 });
    return;
  }
  queue = queue.then(async () => {
    const res = await handle(req);
    answer(res);
    if (req.op === 'close') { port.close(); }
  });
});
