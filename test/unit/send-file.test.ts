/** sendFile's zero-copy path when the client is already gone: no unhandled rejection, the file closed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync, mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { sendFile, SENDFILE_MIN } from '../../server/http/send-file.ts';
import { sendfileAvailable, sendfileToSocket } from '../../server/http/sendfile-helper.ts';

const noHelper = sendfileAvailable() ? false : 'the sendfile helper (python3) is not available';
const openFds = () => readdirSync('/proc/self/fd').length;

test('sendfileToSocket resolves false (never rejects) for a socket that is already gone', { skip: noHelper }, async () => {
  const s = new net.Socket();
  s.destroy();
  assert.equal(await sendfileToSocket(0, 0, 10, s), false);
});

test('a big file requested by a client that is gone before the body: no unhandled rejection, fd closed', { skip: noHelper }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-sendfile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'disk.img');
  writeFileSync(file, '');
  truncateSync(file, SENDFILE_MIN + 4096); // sparse: big enough for the zero-copy path
  const rejections: unknown[] = [];
  const onRejection = (r: unknown) => rejections.push(r);
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  const app = Fastify();
  let served = 0;
  app.get('/disk', (req, reply) => {
    req.raw.socket.destroy(); // the client hung up just before the answer
    served++;
    return sendFile(req, reply, file);
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => app.close());
  const port = (app.server.address() as AddressInfo).port;
  const before = openFds();
  for (let i = 0; i < 3; i++) {
    await new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => c.write('GET /disk HTTP/1.1\r\nHost: x\r\n\r\n'));
      c.on('close', () => resolve());
      c.on('error', () => {});
    });
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(served, 3);
  assert.deepEqual(rejections, []);
  assert.ok(openFds() <= before, `file descriptors closed (${before} → ${openFds()})`);
});
