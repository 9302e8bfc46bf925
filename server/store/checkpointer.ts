/**
 * WAL checkpoints off the main thread. SQLite's automatic checkpoint runs inside whichever commit crosses 1000
 * pages, on the committing connection: the daemon's one connection, on the thread that answers DHCP and TFTP, and
 * it fsyncs the database file. Here the main connection never checkpoints (wal_autocheckpoint = 0) and a worker
 * thread with its own connection does (checkpoint-worker.ts), when the WAL has grown past `walBytes`. If the worker
 * dies, the main connection checkpoints again by itself, and the log says so.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { SqliteDatabase } from './sql.ts';

const WORKER = new URL('./checkpoint-worker.mjs', import.meta.url);

export interface CheckpointReport { walBytes: number; busy: number; log: number; checkpointed: number; ms: number }

export class Checkpointer {
  private readonly worker: Worker;
  private stopped = false;

  constructor(private readonly db: SqliteDatabase, opts: { intervalMs?: number; walBytes?: number; log?: Logger; onCheckpoint?: (r: CheckpointReport) => void } = {}) {
    db.pragma('wal_autocheckpoint = 0');
    this.worker = new Worker(WORKER, { workerData: { path: db.name, intervalMs: opts.intervalMs ?? 1000, walBytes: opts.walBytes ?? 4 << 20 } });
    this.worker.unref();
    this.worker.on('message', (m: { type: string; message?: string } & CheckpointReport) => {
      if (m.type === 'checkpoint') {
        opts.log?.debug({ walBytes: m.walBytes, frames: m.log, checkpointed: m.checkpointed, busy: m.busy, ms: Math.round(m.ms) }, 'store: WAL checkpoint (worker thread)');
        opts.onCheckpoint?.(m);
      } else if (m.type === 'error') {
        opts.log?.warn({ reason: m.message }, 'store: WAL checkpoint failed on the worker thread; it tries again');
      }
    });
    const fallBack = (why: string) => {
      if (this.stopped || !this.db.open) return;
      this.stopped = true;
      this.db.pragma('wal_autocheckpoint = 1000');
      opts.log?.warn({ reason: why }, 'store: the WAL checkpoint thread is gone; the main connection checkpoints by itself again');
    };
    this.worker.on('error', (err) => fallBack(err.message));
    this.worker.on('exit', (code) => fallBack(`exited with ${code}`));
  }

  /** Stops the worker (its connection closed); the main connection's close then checkpoints what is left. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const done = new Promise<void>((resolve) => {
      const t = setTimeout(() => { void this.worker.terminate().then(() => resolve()); }, 2000);
      this.worker.once('exit', () => { clearTimeout(t); resolve(); });
      this.worker.on('message', (m: { type: string }) => { if (m.type === 'stopped') void this.worker.terminate(); });
    });
    this.worker.postMessage({ type: 'stop' });
    await done;
  }
}
