/**
 * The live event stream on a real listening app: tickets instead of the admin token in the URL, credentials
 * redacted from the request log, a cap on clients, and a client that stops reading dropped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { inProcessApp, readyImage } from '../helpers/daemon.ts';
import { StreamTickets } from '../../server/http/stream-tickets.ts';
import { redactUrl } from '../../server/http/redact.ts';
import type { AppDeps } from '../../server/http/app.ts';

async function listening(t: { after(fn: () => unknown): void }, extra: Partial<AppDeps> = {}) {
  const ctx = await inProcessApp({ extra });
  t.after(() => ctx.close());
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(ctx.app.server.address() as AddressInfo).port}`;
  return { ctx, url };
}

/** Opens a stream and resolves with its status once the headers are in; the caller aborts it. */
async function openStream(url: string, headers: Record<string, string> = {}) {
  const ac = new AbortController();
  const res = await fetch(url, { headers, signal: ac.signal });
  return { status: res.status, close: () => ac.abort(), res };
}

test('redactUrl hides credential values and keeps the rest', () => {
  assert.equal(redactUrl('/api/v1/events/stream?token=abc&workflow=w1'), '/api/v1/events/stream?token=[redacted]&workflow=w1');
  assert.equal(redactUrl('/x?ticket=t&access_key=k&a=1'), '/x?ticket=[redacted]&access_key=[redacted]&a=1');
  assert.equal(redactUrl('/healthz'), '/healthz');
});

test('the admin token in ?token= never reaches the request log', async (t) => {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(c, _e, cb) { lines.push(String(c)); cb(); } }));
  const { ctx, url } = await listening(t, { log });
  const s = await openStream(`${url}/api/v1/events/stream?token=${ctx.adminToken}&workflow=`);
  assert.equal(s.status, 200);
  s.close();
  await ctx.app.inject({ method: 'GET', url: `/api/v1/machines?token=${ctx.adminToken}` });
  await new Promise((r) => setTimeout(r, 50));
  const all = lines.join('');
  assert.match(all, /events\/stream\?token=\[redacted\]/, 'the request is logged, redacted');
  assert.ok(!all.includes(ctx.adminToken), 'the token is nowhere in the log');
});

test('a short-lived ticket opens the stream; it expires and opens nothing else', async (t) => {
  let now = 1_000_000;
  const tickets = new StreamTickets(60_000, () => now);
  const { ctx, url } = await listening(t, { streamTickets: tickets });
  const noAuth = await ctx.app.inject({ method: 'POST', url: '/api/v1/events/ticket' });
  assert.equal(noAuth.statusCode, 401);
  const r = await ctx.app.inject({ method: 'POST', url: '/api/v1/events/ticket', headers: ctx.auth });
  assert.equal(r.statusCode, 200);
  const { ticket, expiresAt } = r.json();
  assert.equal(expiresAt, new Date(now + 60_000).toISOString());
  const ok = await openStream(`${url}/api/v1/events/stream?ticket=${ticket}`);
  assert.equal(ok.status, 200);
  ok.close();
  assert.equal((await openStream(`${url}/api/v1/events/stream?ticket=wrong`)).status, 401);
  assert.equal((await ctx.app.inject({ method: 'GET', url: `/api/v1/machines?ticket=${ticket}` })).statusCode, 401, 'a ticket is for the stream only');
  now += 60_001;
  assert.equal((await openStream(`${url}/api/v1/events/stream?ticket=${ticket}`)).status, 401, 'expired');
});

test('the stream takes at most sseMaxClients clients (503 beyond), and frees a slot when one leaves', async (t) => {
  const { ctx, url } = await listening(t, { sseMaxClients: 2 });
  const a = await openStream(`${url}/api/v1/events/stream`, ctx.auth);
  const b = await openStream(`${url}/api/v1/events/stream`, ctx.auth);
  assert.deepEqual([a.status, b.status], [200, 200]);
  const c = await openStream(`${url}/api/v1/events/stream`, ctx.auth);
  assert.equal(c.status, 503);
  assert.equal(c.res.headers.get('retry-after'), '10');
  assert.match(((await c.res.json()) as { message: string }).message, /sseMaxClients/);
  a.close();
  await new Promise((r) => setTimeout(r, 100));
  const d = await openStream(`${url}/api/v1/events/stream`, ctx.auth);
  assert.equal(d.status, 200);
  b.close(); d.close();
});

test('a client that stops reading is dropped; one that reads stays', async (t) => {
  const { ctx, url } = await listening(t);
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'img1', target: 'ram' });
  const base = ctx.workflows.events.listenerCount('event');
  const reader = await openStream(`${url}/api/v1/events/stream`, ctx.auth);
  let got = 0;
  void (async () => { try { for await (const c of reader.res.body!) got += c.length; } catch { /* aborted */ } })();
  // the stalled client: sends its request, then never reads
  const port = Number(new URL(url).port);
  const stalled = net.connect(port, '127.0.0.1');
  let stalledClosed = false;
  stalled.on('close', () => { stalledClosed = true; });
  stalled.on('error', () => {});
  stalled.write(`GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ctx.adminToken}\r\n\r\n`);
  stalled.pause();
  while (ctx.workflows.events.listenerCount('event') < base + 2) await new Promise((r) => setTimeout(r, 10));
  const chunk = 'z'.repeat(256 << 10);
  for (let i = 0; i < 160 && ctx.workflows.events.listenerCount('event') > base + 1; i++) {
    ctx.workflows.record({ workflowId: wf.id, kind: 'info', message: chunk });
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(ctx.workflows.events.listenerCount('event'), base + 1, 'the stalled client was dropped, the reader is still there');
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(got > 1 << 20, `the reading client got the events (${got} bytes)`);
  stalled.resume();
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(stalledClosed, 'the server closed the stalled connection');
  reader.close();
});
