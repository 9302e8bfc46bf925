import type { MessagePort } from 'node:worker_threads';

/**
 * Messages between PgSyncDatabase (the calling thread) and its connection's worker thread (worker.mjs). The caller
 * posts one request at a time on a MessagePort and blocks on `flag` (Atomics.wait); the worker posts the answer on
 * the same port, then bumps flag[0] and notifies, and the caller takes the answer with receiveMessageOnPort.
 */
export type TxControl = 'commit' | 'rollback';

export type PgRequest =
  | { id: number; op: 'connect' }
  /** begin: run BEGIN first (a transaction's BEGIN rides on its first statement: one round trip less per transaction). */
  | { id: number; op: 'query'; text: string; values: unknown[]; rows: 'none' | 'objects' | 'first-column'; tx?: TxControl; begin?: true }
  | { id: number; op: 'exec'; text: string; begin?: true }
  | { id: number; op: 'close' }
  /** Handled at once, not after the request in flight: drop the connection (the caller gave up waiting). */
  | { id: number; op: 'reset' };

export interface PgErrorInfo { name: string; message: string; code?: string; detail?: string; constraint?: string }

export type PgResponse =
  | { id: number; ok: true; rows: unknown[]; changes: number }
  | { id: number; ok: false; error: PgErrorInfo };

export interface PgWorkerData {
  url: string;
  port: MessagePort;
  flag: SharedArrayBuffer;
  connectTimeoutMs: number;
}
