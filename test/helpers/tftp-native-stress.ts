/**
 * Child process of test/integration/tftp-native-stress.test.ts: a TFTP server on loopback with the native transfer
 * loop, and ROUNDS rounds of CONCURRENCY clients (test/helpers/herd/tftp.ts) each reading a small file. Prints
 * "transfers N" and exits 0, or dies (a crash in the native loop kills this process, not the test runner).
 */
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import pino from 'pino';
import { createTftpServer } from '../../server/tftp/server.ts';
import { nativeTransferLoop, nativeLoopUnavailable } from '../../server/tftp/native-transfer.ts';
import { tftpFetch } from './herd/tftp.ts';

const [rounds, concurrency] = [Number(process.argv[2] ?? 30), Number(process.argv[3] ?? 400)];
if (!nativeTransferLoop()) { console.error(`native transfer loop unavailable: ${nativeLoopUnavailable()}`); process.exit(2); }
const dir = mkdtempSync(join(tmpdir(), 'ibt-tftp-stress-'));
mkdirSync(join(dir, 'root'));
writeFileSync(join(dir, 'root', 'f'), randomBytes(3000));
const server = await createTftpServer({
  log: pino({ level: 'error' }), registry: new Registry(), host: '127.0.0.1', port: 0, roots: [{ dir: join(dir, 'root') }],
  transferLoop: 'auto', maxTransfers: 10 * concurrency, maxTransfersPerClient: 10 * concurrency,
});
const port = server.address().port;
let n = 0;
try {
  for (let r = 0; r < rounds; r++) {
    await Promise.all(Array.from({ length: concurrency }, () => tftpFetch('127.0.0.1', '127.0.0.1', 'f', { port }).then((x) => {
      if (x.bytes !== 3000) throw new Error(`got ${x.bytes} bytes`);
      n++;
    })));
  }
} finally {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`transfers ${n}`);
