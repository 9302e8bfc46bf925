/**
 * The herd simulator's own parts that decide what the bench reports: its HTTP/1.1 client (test/helpers/herd/http.ts)
 * against node:http on loopback, and the histogram arithmetic of its event-loop figures (stats.ts), with the
 * daemon's ironboot_event_loop_delay_seconds (server/metrics.ts) that feeds it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import { HttpConnection, HttpPool } from '../helpers/herd/http.ts';
import { quantileBetween } from '../helpers/herd/stats.ts';
import { watchEventLoopDelay } from '../../server/metrics.ts';

const body = randomBytes(3 << 20);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function server(): Promise<{ url: string; sockets: () => number; close: () => Promise<void> }> {
  let sockets = 0;
  const srv = http.createServer((req, res) => {
    if (req.url === '/chunked') { res.write(body.subarray(0, 1000)); res.end(body.subarray(1000, 70_000)); return; }
    if (req.url === '/close') { res.writeHead(200, { connection: 'close', 'content-length': 5 }); res.end('hello'); return; }
    if (req.url === '/auth') { res.end(String(req.headers.authorization) + '|' + String(req.headers.range)); return; }
    if (req.url === '/flip') { const b = Buffer.from(body.subarray(0, 1 << 20)); b[b.length - 7] ^= 1; res.writeHead(200, { 'content-length': b.length }); res.end(b); return; }
    if (req.url === '/mib') { res.writeHead(200, { 'content-length': 1 << 20 }); res.end(body.subarray(0, 1 << 20)); return; }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  srv.on('connection', () => { sockets++; });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, sockets: () => sockets, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }) };
}

test('HttpConnection: Content-Length bodies on one keep-alive connection, counted and hashed, kept only when asked', async (t) => {
  const s = await server();
  t.after(() => s.close());
  const c = new HttpConnection('127.0.0.1');
  t.after(() => c.destroy());
  const a = await c.get(`${s.url}/big`, { hash: true });
  assert.equal(a.status, 200);
  assert.equal(a.bytes, body.length);
  assert.equal(a.sha256, sha(body));
  assert.equal(a.body, null);
  const b = await c.get(`${s.url}/big`, { keep: true });
  assert.ok(b.body!.equals(body));
  assert.equal(s.sockets(), 1, 'both requests on one connection');
});

test('HttpConnection: chunked bodies, Connection: close, request headers', async (t) => {
  const s = await server();
  t.after(() => s.close());
  const c = new HttpConnection('127.0.0.1');
  t.after(() => c.destroy());
  const ch = await c.get(`${s.url}/chunked`, { keep: true, hash: true });
  assert.equal(ch.headers['transfer-encoding'], 'chunked');
  assert.ok(ch.body!.equals(body.subarray(0, 70_000)));
  assert.equal(ch.sha256, sha(body.subarray(0, 70_000)));
  const cl = await c.get(`${s.url}/close`, { keep: true });
  assert.equal(cl.body!.toString(), 'hello');
  // the server closed that one: the next request opens a new connection and is not failed by the old one's close
  const h = await c.get(`${s.url}/auth`, { keep: true, token: 'tok', headers: { range: 'bytes=0-9' } });
  assert.equal(h.body!.toString(), 'Bearer tok|bytes=0-9');
  assert.equal(s.sockets(), 2);
});

test('HttpConnection expect: the expected buffer itself when every byte matches, a copy of what came when one differs', async (t) => {
  const s = await server();
  t.after(() => s.close());
  const c = new HttpConnection('127.0.0.1');
  t.after(() => c.destroy());
  const want = Buffer.from(body.subarray(0, 1 << 20));
  const same = await c.get(`${s.url}/mib`, { keep: true, expect: want });
  assert.equal(same.body, want, 'the very buffer, no copy');
  const flipped = await c.get(`${s.url}/flip`, { keep: true, expect: want });
  assert.notEqual(flipped.body, want);
  assert.equal(flipped.body!.length, want.length);
  assert.equal(flipped.body![want.length - 7], want[want.length - 7] ^ 1, 'the bytes that came, not the expected ones');
  assert.ok(flipped.body!.subarray(0, want.length - 7).equals(want.subarray(0, want.length - 7)));
  await assert.rejects(c.get(`${s.url}/big`, { keep: true, maxBytes: 1000 }), /more than 1000 bytes/);
});

test('HttpPool: at most maxPerHost connections to a host, a whole-request deadline', async (t) => {
  const s = await server();
  t.after(() => s.close());
  const p = new HttpPool('127.0.0.1', 2);
  t.after(() => p.destroy());
  const rs = await Promise.all(Array.from({ length: 6 }, () => p.get(`${s.url}/mib`, { keep: true })));
  for (const r of rs) assert.equal(r.bytes, 1 << 20);
  assert.equal(s.sockets(), 2);
  const slow = http.createServer(() => { /* never answers */ });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  t.after(() => { slow.closeAllConnections(); slow.close(); });
  await assert.rejects(p.get(`http://127.0.0.1:${(slow.address() as { port: number }).port}/x`, { deadlineMs: 200 }), /not done within 200 ms/);
});

test('quantileBetween: the quantile of what a histogram gained between two scrapes', () => {
  const scrape = (counts: number[]) => ['0.01', '0.05', '0.1', '+Inf'].map((le, i) => `d_bucket{le="${le}"} ${counts[i]}`).join('\n');
  // before: 100 observations all ≤ 10 ms; after: 100 more, 90 ≤ 10 ms, 5 in (10, 50], 5 in (50, 100]
  const before = scrape([100, 100, 100, 100]);
  const after = scrape([190, 195, 200, 200]);
  assert.equal(quantileBetween(before, after, 'd', 0.5), 0.01 * (50 / 90));
  assert.ok(Math.abs(quantileBetween(before, after, 'd', 0.99)! - (0.05 + 0.05 * (4 / 5))) < 1e-12);
  assert.equal(quantileBetween(after, after, 'd', 0.99), null, 'nothing observed in between');
});

test('ironboot_event_loop_delay_seconds counts a blocked main thread in its upper buckets', async () => {
  const reg = new Registry();
  const stop = watchEventLoopDelay(reg);
  try {
    await new Promise((r) => setTimeout(r, 100));
    const before = await reg.metrics();
    const until = Date.now() + 120;
    while (Date.now() < until) { /* the main thread busy for 120 ms */ }
    await new Promise((r) => setTimeout(r, 50));
    const after = await reg.metrics();
    const max = quantileBetween(before, after, 'ironboot_event_loop_delay_seconds', 1)!;
    assert.ok(max >= 0.1, `the 120 ms block shows as a delay of at least 100 ms, got ${max}`);
  } finally { stop(); }
});
