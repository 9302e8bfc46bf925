/**
 * PostgreSQL behind the store's synchronous contract (server/store/sql.ts). A worker thread (worker.mjs) owns the
 * `pg` connection; the calling thread posts {sql, params} on a MessagePort, blocks on Atomics.wait until the worker
 * bumps a flag in a SharedArrayBuffer, and takes the answer with receiveMessageOnPort.
 *
 * The trade-off, chosen over an async store: each call is a round trip (~0.1–0.3 ms on a local socket, see
 * test/bench/store.ts), during which the calling thread's event loop waits, as it waits for SQLite's fsync. In
 * return the repositories stay one set of code, a transaction is as atomic as with better-sqlite3 (nothing else on
 * this thread runs inside it), and no call site changes. The DHCP thread opens its own PgSyncDatabase, so its
 * waits never hold up the main thread's, and the other way round.
 *
 * Differences the repositories respect: a failed statement inside a transaction aborts the whole transaction
 * (PostgreSQL), where SQLite would let it go on; the repositories never continue a transaction after an error.
 * A PostgreSQL that does not answer within `timeoutMs` makes the call throw PgTimeoutError (the worker drops that
 * connection; the next call connects again). Errors keep PostgreSQL's SQLSTATE in `code` (23505: unique violation).
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { ArgumentTypes, SqlDatabase, SqlRunResult, SqlStatement } from '../sql.ts';
import { bindValues, translatePlaceholders, type TranslatedSql } from './placeholders.ts';
import type { PgErrorInfo, PgRequest, PgResponse, PgWorkerData, TxControl } from './protocol.ts';

const WORKER = new URL('./worker.mjs', import.meta.url);

/** An error PostgreSQL (or the connection to it) returned, on the calling thread. */
export class PgError extends Error {
  code?: string;
  detail?: string;
  constraint?: string;
  constructor(info: PgErrorInfo) {
    super(info.message);
    this.name = info.name === 'error' || info.name === 'DatabaseError' ? 'PgError' : info.name;
    if (info.code) this.code = info.code;
    if (info.detail) this.detail = info.detail;
    if (info.constraint) this.constraint = info.constraint;
  }
}

export class PgTimeoutError extends Error {
  constructor(name: string, ms: number, what: string) {
    super(`PostgreSQL ${name} did not answer within ${Math.round(ms / 1000)} s (${what}); the connection is dropped and the next call connects again`);
    this.name = 'PgTimeoutError';
  }
}

/** The URL as logs may show it: the password replaced. */
export function redactUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}

export function isPostgresUrl(s: string): boolean {
  return /^postgres(?:ql)?:\/\//.test(s);
}

export interface PgSyncOptions {
  /** How long one call may wait for PostgreSQL (default 30 s). */
  timeoutMs?: number;
  /** How long opening a connection may take (default 10 s). */
  connectTimeoutMs?: number;
}

class PgStatement implements SqlStatement {
  private plucked = false;
  constructor(private readonly db: PgSyncDatabase, private readonly sql: string, private readonly t: TranslatedSql) {}

  run(...params: unknown[]): SqlRunResult {
    return { changes: this.db.query(this.sql, this.t, params, 'none').changes };
  }

  get(...params: unknown[]): unknown {
    return this.db.query(this.sql, this.t, params, this.plucked ? 'first-column' : 'objects').rows[0];
  }

  all(...params: unknown[]): unknown[] {
    return this.db.query(this.sql, this.t, params, this.plucked ? 'first-column' : 'objects').rows;
  }

  pluck(toggle = true): this {
    this.plucked = toggle;
    return this;
  }
}

/** Buffers cross the thread boundary as Uint8Arrays; rows give them back as Buffers (BYTEA), as SQLite's BLOBs are. */
function restoreBuffers(rows: unknown[]): unknown[] {
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (row instanceof Uint8Array) { rows[i] = Buffer.from(row.buffer, row.byteOffset, row.byteLength); continue; }
    if (row === null || typeof row !== 'object') continue;
    for (const k in row as Record<string, unknown>) {
      const v = (row as Record<string, unknown>)[k];
      if (v instanceof Uint8Array && !Buffer.isBuffer(v)) (row as Record<string, unknown>)[k] = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
  }
  return rows;
}

export class PgSyncDatabase implements SqlDatabase {
  readonly dialect = 'postgres' as const;
  readonly name: string;
  private worker!: Worker;
  private port!: MessagePort;
  private flag!: Int32Array;
  /** Set (between calls, by the thread's exit event) when the connection's thread is gone. */
  private workerGone: string | null = null;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly translated = new Map<string, TranslatedSql>();
  private nextId = 1;
  private depth = 0;
  /** The outermost transaction has begun here but not yet on the server: its BEGIN goes with the next statement. */
  private beginPending = false;
  private closed = false;

  /** Connects before it returns; throws PgError when PostgreSQL cannot be reached. */
  constructor(readonly url: string, opts: PgSyncOptions = {}) {
    this.name = redactUrl(url);
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    try {
      this.startWorker();
    } catch (err) {
      this.closed = true;
      void this.worker.terminate();
      throw err;
    }
  }

  /** A thread for the connection, connected. Again after a thread died (it should not: its errors are answers). */
  private startWorker(): void {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const flag = new SharedArrayBuffer(4);
    this.flag = new Int32Array(flag);
    const data: PgWorkerData = { url: this.url, port: port2, flag, connectTimeoutMs: this.connectTimeoutMs };
    const worker = new Worker(WORKER, { workerData: data, transferList: [port2] });
    this.worker = worker;
    this.workerGone = null;
    worker.unref();
    worker.on('error', () => {}); // reported through 'exit'
    worker.once('exit', (code) => { if (this.worker === worker && !this.closed) this.workerGone = `its thread exited with ${code}`; });
    // the first answer also waits for the thread to start: allow for a slow machine
    this.call({ id: this.nextId++, op: 'connect' }, 'connect', Math.max(this.timeoutMs, 60_000));
  }

  get open(): boolean { return !this.closed; }

  prepare(sql: string): SqlStatement {
    let t = this.translated.get(sql);
    if (!t) { t = translatePlaceholders(sql); this.translated.set(sql, t); }
    return new PgStatement(this, sql, t);
  }

  exec(sql: string): this {
    this.call({ id: this.nextId++, op: 'exec', text: sql }, sql);
    return this;
  }

  /** better-sqlite3's semantics: outermost call BEGIN/COMMIT, nested calls SAVEPOINT/RELEASE; a throw undoes its level. */
  transaction<F extends (...params: any[]) => unknown>(fn: F): (...params: ArgumentTypes<F>) => ReturnType<F> {
    return (...args: ArgumentTypes<F>): ReturnType<F> => {
      const level = this.depth;
      const sp = `ironboot_sp${level}`;
      if (level === 0) this.beginPending = true; else this.control(`SAVEPOINT ${sp}`);
      this.depth++;
      let result: ReturnType<F>;
      try {
        result = fn(...args) as ReturnType<F>;
      } catch (err) {
        this.depth = level;
        try {
          if (level === 0 && this.beginPending) this.beginPending = false; // nothing reached the server
          else if (level === 0) this.control('ROLLBACK', 'rollback');
          else { this.control(`ROLLBACK TO SAVEPOINT ${sp}`); this.control(`RELEASE SAVEPOINT ${sp}`); }
        } catch { /* the connection is gone or the transaction aborted: the outer level's ROLLBACK ends it */ }
        throw err;
      }
      this.depth = level;
      if (level === 0 && this.beginPending) this.beginPending = false; // a transaction without statements
      else if (level === 0) this.control('COMMIT', 'commit');
      else this.control(`RELEASE SAVEPOINT ${sp}`);
      return result;
    };
  }

  close(): void {
    if (this.closed) return;
    try {
      this.call({ id: this.nextId++, op: 'close' }, 'close', 5000);
    } catch { /* closing anyway */ }
    this.closed = true;
    this.port.close();
    void this.worker.terminate();
  }

  /** @internal PgStatement's way in. */
  query(sql: string, t: TranslatedSql, params: unknown[], rows: 'none' | 'objects' | 'first-column'): { rows: unknown[]; changes: number } {
    const values = bindValues(t, params, sql);
    const res = this.call({ id: this.nextId++, op: 'query', text: t.text, values, rows }, sql);
    if (rows !== 'none') restoreBuffers(res.rows);
    return res;
  }

  private control(sql: string, tx?: TxControl): void {
    this.call({ id: this.nextId++, op: 'query', text: sql, values: [], rows: 'none', tx }, sql);
  }

  private call(req: PgRequest, what: string, timeoutMs = this.timeoutMs): { rows: unknown[]; changes: number } {
    if (this.closed) throw new Error(`the store ${this.name} is closed`);
    if (this.workerGone) {
      const why = this.workerGone;
      this.port.close();
      this.startWorker();
      if (this.depth > 0 && !this.beginPending) {
        this.depth = 0;
        throw new PgError({ name: 'PgConnectionLostError', code: '08006', message: `the connection to PostgreSQL ${this.name} was lost during this transaction (${why}); the transaction was rolled back` });
      }
    }
    if (this.beginPending && (req.op === 'query' || req.op === 'exec')) { req.begin = true; this.beginPending = false; }
    this.port.postMessage(req);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.flag, 0);
      for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
        const res = m.message as PgResponse;
        if (res.id !== req.id) continue; // the late answer of a call that timed out
        if (!res.ok) throw new PgError(res.error);
        return res;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.port.postMessage({ id: this.nextId++, op: 'reset' } satisfies PgRequest);
        throw new PgTimeoutError(this.name, timeoutMs, what.length > 200 ? what.slice(0, 200) + '…' : what);
      }
      Atomics.wait(this.flag, 0, seen, left);
    }
  }
}
