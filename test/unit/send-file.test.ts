/** sendFile's zero-copy path (the native sendfile(2) thread): a client already gone, a client that stops reading, bytes exact, TLS excluded. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync, mkdtempSync, rmSync, truncateSync, openSync, closeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { sendFile, SENDFILE_MIN } from '../../server/http/send-file.ts';
import { sendfileAvailable, sendfileToSocket, sendfileUnavailableReason, socketFd } from '../../server/http/sendfile-helper.ts';

const noHelper = sendfileAvailable() ? false : `zero-copy bodies are off: ${sendfileUnavailableReason()}`;
const openFds = () => readdirSync('/proc/self/fd').length;

test('sendfileToSocket resolves false (never rejects) for a socket that is already gone', { skip: noHelper }, async () => {
  const s = new net.Socket();
  s.destroy();
  assert.equal((await sendfileToSocket(0, 0, 10, s)).ok, false);
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

/** A TCP pair on loopback: the server side's socket and the client's. */
async function pair(t: { after(f: () => void): void }): Promise<{ server: net.Socket; client: net.Socket }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.after(() => srv.close());
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect((srv.address() as AddressInfo).port, '127.0.0.1');
  const server = await accepted;
  server.on('error', () => {}); client.on('error', () => {}); // a reset is what some tests make
  t.after(() => { server.destroy(); client.destroy(); });
  return { server, client };
}

test('the native sender: a range of a file arrives byte for byte, and the file descriptor is its own', { skip: noHelper }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-sendfile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const data = randomBytes(24 << 20);
  writeFileSync(join(dir, 'f'), data);
  const { server, client } = await pair(t);
  const got: Buffer[] = [];
  client.on('data', (c: Buffer) => got.push(c));
  const fd = openSync(join(dir, 'f'), 'r');
  const sending = sendfileToSocket(fd, 1000, data.length - 2000, server);
  closeSync(fd); // the sender holds its own duplicate
  const r = await sending;
  assert.deepEqual(r, { ok: true, sent: data.length - 2000, error: null });
  server.end();
  await new Promise((res) => client.once('end', res));
  const body = Buffer.concat(got);
  assert.equal(body.length, data.length - 2000);
  assert.equal(createHash('sha256').update(body).digest('hex'), createHash('sha256').update(data.subarray(1000, data.length - 1000)).digest('hex'));
});

test('the native sender: a client that stops reading is ended as stalled, and nothing is left open', { skip: noHelper }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-sendfile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'big'), '');
  truncateSync(join(dir, 'big'), 256 << 20); // far more than both socket buffers hold
  const { server, client } = await pair(t);
  const before = openFds(); // the pair's two sockets included
  client.pause(); // reads nothing
  const fd = openSync(join(dir, 'big'), 'r');
  const r = await sendfileToSocket(fd, 0, 256 << 20, server, 400);
  closeSync(fd);
  assert.equal(r.ok, false);
  assert.match(r.error ?? '', /stalled: the client read nothing/);
  assert.ok(r.sent > 0 && r.sent < 256 << 20, `${r.sent} bytes went out before the socket filled`);
  server.destroy(); client.destroy();
  await new Promise((res) => setTimeout(res, 50));
  assert.ok(openFds() <= before, `file descriptors closed (${before} → ${openFds()})`);
});

test('the native sender: a client that goes away mid-body ends it with the reason, at once', { skip: noHelper }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-sendfile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'big'), '');
  truncateSync(join(dir, 'big'), 256 << 20);
  const { server, client } = await pair(t);
  client.pause();
  const fd = openSync(join(dir, 'big'), 'r');
  const sending = sendfileToSocket(fd, 0, 256 << 20, server, 60_000);
  closeSync(fd);
  setTimeout(() => client.destroy(), 100);
  const r = await sending;
  assert.equal(r.ok, false);
  assert.match(r.error ?? '', /sendfile: (Connection reset|Broken pipe)|cancelled/);
});

test('TLS sockets never take the zero-copy path (the kernel would send plaintext)', () => {
  const plain = new net.Socket();
  const secure = new tls.TLSSocket(new net.Socket());
  assert.equal(socketFd(secure), null);
  assert.equal(socketFd(plain), null, 'no handle yet');
  plain.destroy(); secure.destroy();
});
