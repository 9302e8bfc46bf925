/**
 * Runs the DHCP service alone, for integration tests and the benchmark (a process must run inside the
 * network namespace):
 *
 *   ip netns exec NS node --import tsx test/helpers/dhcp-server-runner.ts --machines FILE.json -- SERVE FLAGS…
 *
 * FILE.json is an array of MachineInput, inserted into the store under --data-dir unless the MAC exists
 * (so a restart on the same data dir keeps everything). Prints `READY` on stdout once listening, `METRICS`
 * followed by the Prometheus text on SIGUSR2, and exits 0 after closing on SIGTERM/SIGINT.
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { Registry } from 'prom-client';
import { loadServeConfig } from '../../server/config.ts';
import { Store } from '../../server/store/index.ts';
import type { MachineInput } from '../../server/store/machines.ts';
import { startDhcpService } from '../../server/dhcp/index.ts';

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
const own = sep < 0 ? [] : argv.slice(0, sep);
const serveArgs = sep < 0 ? argv : argv.slice(sep + 1);
const machinesFile = own[own.indexOf('--machines') + 1];

const config = loadServeConfig(serveArgs, {});
const log = pino({ level: config.logLevel }, pino.destination(2));
const store = Store.open(config.dataDir, { url: config.store });
if (own.includes('--machines') && machinesFile) {
  const text = readFileSync(machinesFile, 'utf8').trim();
  const list = (text ? JSON.parse(text) : []) as MachineInput[];
  store.tx(() => { for (const m of list) if (!store.machines.getByMac(m.mac)) store.machines.create(m); });
}
const registry = new Registry();
try {
  const svc = await startDhcpService({ store, log, registry, config, httpPort: config.httpListen.port });
  process.stdout.write('READY\n');
  process.on('SIGUSR2', async () => { process.stdout.write(`METRICS\n${await registry.metrics()}\nEND\n`); });
  const stop = async () => { await svc.close(); store.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (err) {
  process.stdout.write(`FAILED ${(err as Error).message}\n`);
  store.close();
  process.exit(3);
}
