/**
 * Runs ironboot's TFTP server as its own process (for tests inside network namespaces and the benchmark).
 *
 *   node --import tsx test/helpers/tftp-server-runner.ts '{"host":"10.82.0.1","port":69,"roots":["/srv/x"]}'
 *
 * The argument is JSON: host, port, roots (directories in lookup order), optional maxTransfers,
 * maxTransfersPerClient, defaultTimeoutMs, maxRetries, maxWindowsize, transferLoop ('auto' | 'js'), logLevel,
 * virtual ({name: text}).
 * Prints one line `{"address":…,"port":…}` on stdout when listening; pino logs go to stderr.
 * Stops on SIGTERM/SIGINT.
 */
import pino from 'pino';
import { Registry } from 'prom-client';
import { createTftpServer } from '../../server/tftp/server.ts';

const args = JSON.parse(process.argv[2] ?? '{}') as {
  host?: string; port?: number; roots?: string[]; maxTransfers?: number; maxTransfersPerClient?: number;
  defaultTimeoutMs?: number; maxRetries?: number; maxWindowsize?: number; logLevel?: string; virtual?: Record<string, string>;
  transferLoop?: 'auto' | 'js';
};
const log = pino({ level: args.logLevel ?? 'info' }, pino.destination(2));
const virtual = args.virtual ?? {};
const server = await createTftpServer({
  log,
  registry: new Registry(),
  host: args.host ?? '127.0.0.1',
  port: args.port ?? 0,
  roots: (args.roots ?? []).map((dir) => ({ dir })),
  maxTransfers: args.maxTransfers,
  maxTransfersPerClient: args.maxTransfersPerClient,
  defaultTimeoutMs: args.defaultTimeoutMs,
  maxRetries: args.maxRetries,
  maxWindowsize: args.maxWindowsize,
  transferLoop: args.transferLoop,
  virtualFiles: {
    lookup: ({ name, mac }) => (name in virtual ? { data: Buffer.from(virtual[name].replaceAll('${mac}', mac ?? 'none')) } : null),
  },
});
process.stdout.write(JSON.stringify(server.address()) + '\n');
const stop = () => { void server.close().then(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
