/**
 * `ironboot serve` in-process, for tests that need to hold its main thread: `ip netns exec NS node --import tsx
 * daemon-block-runner.ts SERVE FLAGS…`. Prints READY on stdout once serving; on a stdin line `block MS` it blocks
 * the main thread for MS milliseconds (Atomics.wait: no event loop turn, no timer, no I/O callback), then prints
 * UNBLOCKED. The daemon's log goes to stderr. Exits after closing on SIGTERM.
 */
import { createInterface } from 'node:readline';
import pino from 'pino';
import { loadServeConfig } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { startDaemon } from '../../server/main.ts';

const config = loadServeConfig(process.argv.slice(2), {});
const log = createLogger(config.logLevel, { destination: pino.destination(2) as unknown as NodeJS.WritableStream });
const daemon = await startDaemon(config, log);
process.stdout.write('READY\n');
createInterface({ input: process.stdin }).on('line', (line) => {
  const m = /^block (\d+)$/.exec(line.trim());
  if (!m) return;
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(m[1]));
  process.stdout.write('UNBLOCKED\n');
});
process.on('SIGTERM', () => { void daemon.close().then(() => process.exit(0)); });
