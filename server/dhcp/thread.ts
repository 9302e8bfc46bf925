/**
 * Starts the DHCP service on its own worker thread (thread-main.ts) and speaks for it on the main thread: its log
 * lines go into the daemon's log stream, its counters into /metrics, a start failure (DhcpStartError, e.g. no such
 * interface) is thrown here as it would be inline. A thread that dies is started again (at most 5 times a minute),
 * and the log says why.
 */
import { Worker } from 'node:worker_threads';
import pino, { type Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ServeConfig } from '../config.ts';
import { addMetricsSource } from '../metrics.ts';
import { DhcpStartError } from './server.ts';

export type ToDhcpThread = { type: 'metrics'; id: number } | { type: 'close' };
export type FromDhcpThread =
  | { type: 'log'; line: string }
  | { type: 'ready' }
  | { type: 'failed'; name: string; message: string }
  | { type: 'metrics'; id: number; text: string }
  | { type: 'closed' };

const ENTRY = new URL('./thread-entry.mjs', import.meta.url);

export async function startDhcpThread(deps: { config: ServeConfig; httpPort: number; ipxeHttpsPort?: number | null; log: Logger; registry: Registry }): Promise<{ close(): Promise<void>; thread(): Worker }> {
  const { config, httpPort, log } = deps;
  // the daemon's own stream: the thread's lines join it whole, one write each
  const stream = (log as unknown as Record<symbol, { write(s: string): void }>)[pino.symbols.streamSym];
  let worker: Worker;
  let closing = false;
  const restarts: number[] = [];
  let nextId = 0;
  const waiting = new Map<number, (text: string) => void>();

  const spawn = (): Promise<void> => new Promise((resolve, reject) => {
    let started = false;
    worker = new Worker(ENTRY, { workerData: { config, httpPort, ipxeHttpsPort: deps.ipxeHttpsPort ?? null, logLevel: log.level, bindings: log.bindings() } });
    worker.on('message', (m: FromDhcpThread) => {
      if (m.type === 'log') stream.write(m.line);
      else if (m.type === 'ready') { started = true; resolve(); }
      else if (m.type === 'failed') reject(m.name === 'DhcpStartError' ? new DhcpStartError(m.message) : Object.assign(new Error(m.message), { name: m.name }));
      else if (m.type === 'metrics') { waiting.get(m.id)?.(m.text); waiting.delete(m.id); }
    });
    worker.on('error', (err) => { if (!started) reject(err); else log.error({ err }, 'dhcp: the DHCP thread failed'); });
    worker.on('exit', (code) => {
      for (const done of waiting.values()) done('');
      waiting.clear();
      if (!started) { reject(new Error(`the DHCP thread exited with ${code} before it started`)); return; }
      if (closing) return;
      const t = Date.now();
      while (restarts.length && restarts[0] < t - 60_000) restarts.shift();
      if (restarts.length >= 5) { log.error({ code }, 'dhcp: the DHCP thread exited 5 times within a minute; DHCP stays off'); return; }
      restarts.push(t);
      log.error({ code }, 'dhcp: the DHCP thread exited; starting it again');
      setTimeout(() => { if (!closing) spawn().catch((err) => log.error({ err }, 'dhcp: the DHCP thread did not start again')); }, 1000).unref();
    });
  });

  await spawn();
  addMetricsSource(deps.registry, () => new Promise<string>((resolve) => {
    if (closing) return resolve('');
    const id = nextId++;
    const timer = setTimeout(() => { waiting.delete(id); resolve(''); }, 2000);
    waiting.set(id, (text) => { clearTimeout(timer); resolve(text); });
    worker.postMessage({ type: 'metrics', id } satisfies ToDhcpThread);
  }));
  return {
    /** The thread serving now (a new one after a restart). */
    thread: () => worker,
    close: async () => {
      closing = true;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { void worker.terminate().then(() => resolve()); }, 5000);
        worker.on('message', (m: FromDhcpThread) => { if (m.type === 'closed') { clearTimeout(t); void worker.terminate().then(() => resolve()); } });
        worker.once('exit', () => { clearTimeout(t); resolve(); });
        worker.postMessage({ type: 'close' } satisfies ToDhcpThread);
      });
    },
  };
}
