/**
 * The DHCP service on a thread of its own (thread.ts): its own event loop, its own connection to the store, its own
 * counters. Nothing the main thread does (HTTP bodies, agent events, image builds, SQLite writes) delays a DHCP
 * reply. Log lines go to the main thread, which writes them into the daemon's one log stream; counters are read by
 * the main thread's /metrics.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../store/index.ts';
import type { ServeConfig } from '../config.ts';
import { startDhcpService } from './index.ts';
import { ipxeHttpsUrlFor } from '../public-urls.ts';
import type { ToDhcpThread, FromDhcpThread } from './thread.ts';

const { config, httpPort, ipxeHttpsPort, logLevel, bindings } = workerData as { config: ServeConfig; httpPort: number; ipxeHttpsPort: number | null; logLevel: string; bindings: Record<string, unknown> };
const post = (m: FromDhcpThread) => parentPort!.postMessage(m);
const log = pino({ level: logLevel, name: 'ironboot' }, { write: (line: string) => post({ type: 'log', line }) }).child(bindings);
const registry = new Registry();
let store: Store | null = null;
let service: { close(): Promise<void> } | null = null;

parentPort!.on('message', (m: ToDhcpThread) => {
  if (m.type === 'metrics') {
    void registry.metrics().then((text) => post({ type: 'metrics', id: m.id, text }), () => post({ type: 'metrics', id: m.id, text: '' }));
  } else if (m.type === 'close') {
    void (async () => {
      try { await service?.close(); } catch (err) { log.warn({ err }, 'dhcp: error while stopping'); }
      store?.close();
      post({ type: 'closed' });
    })();
  }
});

try {
  store = Store.open(config.dataDir, { url: config.store }); // the same backend as the main thread, its own connection
  service = await startDhcpService({ store, log, registry, config, httpPort, ipxeHttpsUrlFor: ipxeHttpsPort != null ? ipxeHttpsUrlFor(config, httpPort, ipxeHttpsPort) : null });
  post({ type: 'ready' });
} catch (err) {
  store?.close();
  post({ type: 'failed', name: (err as Error).name, message: (err as Error).message });
}
