/**
 * Child process of test/integration/tftp-native-stress.test.ts: a TFTP server on loopback with the native transfer
 * loop, and ROUNDS rounds of CONCURRENCY clients (test/helpers/herd/tftp.ts) each reading a small file. Prints
 * "transfers N" and exits 0, or dies (a crash in the native loop kills this process, not the test runner).
 */
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import pino from 'pino';
import { createTftpServer } from '../../server/tftp/server.ts';
import { nativeTransferLoop, nativeLoopUnavailable } from '../../server/tftp/native-transfer.ts';
import { tftpFetch } from './herd/tftp.ts';

const [rounds, concurrency] = [Number(process.argv[2] ?? 30), Number(process.argv[3] ?? 400)];
// addresses of its own in 127/8 (all of it is loopback on Linux): on 127.0.0.1 a client port just freed by another
// test's TFTP client was taken by one of these clients, which then got that test's still-retransmitting transfer
// (tftp-protocol's 300 000-byte file) instead of its own, as TFTP's first-packet TID rule allows
const SERVER = '127.77.0.1';
const CLIENT = '127.77.0.2';
if (!nativeTransferLoop()) { console.error(`native transfer loop unavailable: ${nativeLoopUnavailable()}`); process.exit(2); }
const dir = mkdtempSync(join(tmpdir(), 'ibt-tftp-stress-'));
mkdirSync(join(dir, 'root'));
const content = randomBytes(3000);
const sha256 = createHash('sha256').update(content).digest('hex');
writeFileSync(join(dir, 'root', 'f'), content);
const server = await createTftpServer({
  log: pino({ level: 'error' }), registry: new Registry(), host: SERVER, port: 0, roots: [{ dir: join(dir, 'root') }],
  transferLoop: 'auto', maxTransfers: 10 * concurrency, maxTransfersPerClient: 10 * concurrency,
});
const port = server.address().port;
let n = 0;
try {
  for (let r = 0; r < rounds; r++) {
    await Promise.all(Array.from({ length: concurrency }, () => tftpFetch(CLIENT, SERVER, 'f', { port }).then((x) => {
      if (x.bytes !== content.length || x.sha256 !== sha256) throw new Error(`got ${x.bytes} bytes, sha256 ${x.sha256} (want ${content.length}, ${sha256})`);
      n++;
    })));
  }
} finally {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`transfers ${n}`);
