/**
 * Runs on its own thread with its own connection to the daemon's database: every `intervalMs`, when the WAL file
 * has grown past `walBytes`, copies it back into the database (PRAGMA wal_checkpoint(PASSIVE): never waits for the
 * main connection's readers or writers, does what it can). The fsyncs of a checkpoint happen here, not on the
 * thread that answers DHCP. Reports each checkpoint to the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';

const { path, intervalMs, walBytes } = workerData as { path: string; intervalMs: number; walBytes: number };
const db = new Database(path);
db.pragma('busy_timeout = 1000');
db.pragma('wal_autocheckpoint = 0'); // this connection writes nothing; it only checkpoints

const walSize = (): number => { try { return statSync(`${path}-wal`).size; } catch { return 0; } };

const timer = setInterval(() => {
  const size = walSize();
  if (size < walBytes) return;
  const t = performance.now();
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    parentPort!.postMessage({ type: 'checkpoint', walBytes: size, ...r, ms: performance.now() - t });
  } catch (err) {
    parentPort!.postMessage({ type: 'error', message: (err as Error).message });
  }
}, intervalMs);

parentPort!.on('message', (m: { type: string }) => {
  if (m.type !== 'stop') return;
  clearInterval(timer);
  db.close();
  parentPort!.postMessage({ type: 'stopped' });
});
