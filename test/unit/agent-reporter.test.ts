/**
 * The agent's reporter against real HTTP servers: the ironboot app itself (its 4 MiB body limit on
 * /agent/v1/events) on loopback, and a plain node server with a small body limit that answers 413.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EventReporter, postJson, fitEvent, type PostJson } from '../../init/agent/reporter.ts';
import type { AgentEvent } from '../../server/agent/api.ts';
import { agentSession, inProcessApp, readyImage } from '../helpers/daemon.ts';

type Ctx = Awaited<ReturnType<typeof inProcessApp>>;

function quietConsole() {
  const said: string[] = [];
  return { said, console: { say: (m: string) => said.push(m), warn: (m: string) => said.push(`WARN ${m}`) } };
}

/** The real app on 127.0.0.1 with a workflow in `running`, as the agent sees it after its entrypoint started. */
async function runningWorkflow(t: { after(fn: () => unknown): void }) {
  const ctx = await inProcessApp();
  t.after(() => ctx.close());
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(ctx.app.server.address() as AddressInfo).port}`;
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'img1', target: 'ram' });
  for (const s of ['booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running'] as const) ctx.workflows.transition(wf.id, s);
  return { ctx, url, wf };
}

const logLines = (ctx: Ctx, id: string) => ctx.store.events.list(id).filter((e) => e.kind === 'log')
  .flatMap((e) => (e.payload.lines as { line: string }[]).map((l) => l.line));

test('a backlog bigger than the server body limit is delivered in batches below it, and the final state lands', async (t) => {
  const { ctx, url, wf } = await runningWorkflow(t);
  const c = quietConsole();
  const bodies: number[] = [];
  const post: PostJson = (u, tok, body, ms) => { bodies.push(Buffer.byteLength(JSON.stringify(body))); return postJson(u, tok, body, ms); };
  const rep = new EventReporter({ server: url, workflowId: wf.id, token: agentSession(ctx.store, wf.id), console: c.console, post, batchDelayMs: 10_000 });
  const line = 'x'.repeat(10_000);
  // 600 events of ~10 KB: ~6 MB queued at once (what piles up while the server was unreachable)
  for (let i = 0; i < 600; i++) rep.send({ log: [{ stream: 'stdout', line: `${i} ${line}` }] });
  assert.equal(await rep.final({ state: 'succeeded', exitCode: 0 }), true);
  assert.equal(ctx.store.workflows.get(wf.id)!.state, 'succeeded');
  const lines = logLines(ctx, wf.id);
  assert.equal(lines.length, 600);
  assert.deepEqual(lines.map((l) => Number(l.split(' ')[0])), [...Array(600).keys()], 'every line once, in order');
  assert.ok(bodies.every((b) => b < 4 << 20), `every request below the 4 MiB limit (${Math.max(...bodies)})`);
  assert.ok(bodies.length >= 2);
  assert.ok(!c.said.some((m) => m.includes('refused')), c.said.join('\n'));
});

test('the final event goes alone, after everything queued before it', async (t) => {
  const { ctx, url, wf } = await runningWorkflow(t);
  const batches: AgentEvent[][] = [];
  const post: PostJson = (u, tok, body, ms) => { batches.push((body as { events: AgentEvent[] }).events); return postJson(u, tok, body, ms); };
  const rep = new EventReporter({ server: url, workflowId: wf.id, token: agentSession(ctx.store, wf.id), console: quietConsole().console, post, batchDelayMs: 10_000 });
  rep.send({ log: [{ stream: 'stdout', line: 'a' }] });
  rep.send({ message: 'b' });
  assert.equal(await rep.final({ state: 'succeeded', exitCode: 0 }), true);
  assert.equal(batches.length, 2);
  assert.deepEqual(batches[1].map((e) => e.state), ['succeeded']);
  assert.ok(batches.flat().every((e) => typeof e.id === 'string' && e.id.length > 0), 'every event has an id');
  assert.equal(new Set(batches.flat().map((e) => e.id)).size, 3);
});

test('a batch retried after its reply was lost is not written twice (event ids)', async (t) => {
  const { ctx, url, wf } = await runningWorkflow(t);
  let lost = 0;
  const replies: { status: number; duplicates?: number }[] = [];
  // the request reaches the real server and is committed; the agent never sees the answer
  const post: PostJson = async (u, tok, body, ms) => {
    const r = await postJson(u, tok, body, ms);
    replies.push({ status: r.status, duplicates: JSON.parse(r.body).duplicates });
    if (lost++ < 2) throw new Error('connection reset (reply lost)');
    return r;
  };
  const rep = new EventReporter({ server: url, workflowId: wf.id, token: agentSession(ctx.store, wf.id), console: quietConsole().console, post, batchDelayMs: 10_000, maxBackoffMs: 5 });
  rep.send({ log: [{ stream: 'stdout', line: 'once' }] });
  rep.send({ message: 'info once' });
  assert.equal(await rep.final({ state: 'succeeded', exitCode: 0 }), true);
  assert.ok(lost >= 3);
  assert.ok(replies.every((r) => r.status === 200), JSON.stringify(replies));
  assert.ok(replies[1].duplicates! > 0, 'the retry was recognised as already written');
  assert.deepEqual(logLines(ctx, wf.id), ['once']);
  assert.equal(ctx.store.events.list(wf.id).filter((e) => e.message === 'info once').length, 1);
  assert.equal(ctx.store.events.list(wf.id).filter((e) => e.state === 'succeeded').length, 1);
});

test('a refused final report is not "delivered": final() resolves false and says why', async (t) => {
  const { ctx, url, wf } = await runningWorkflow(t);
  const c = quietConsole();
  const rep = new EventReporter({ server: url, workflowId: wf.id, token: agentSession(ctx.store, wf.id), console: c.console, batchDelayMs: 10_000 });
  ctx.workflows.cancel(wf.id); // the operator cancelled while the entrypoint ran
  assert.equal(await rep.final({ state: 'succeeded', exitCode: 0 }), false);
  assert.match(rep.finalRefusal ?? '', /HTTP 409.*cancelled/);
  assert.ok(c.said.some((m) => /WARN server refused the final report \(succeeded\)/.test(m)), c.said.join('\n'));
  assert.equal(ctx.store.workflows.get(wf.id)!.state, 'cancelled');
  assert.equal(rep.pending, 0);
});

/** A plain HTTP server that takes at most `limit` bytes of body (413 above it) and records the events by id. */
async function limitedServer(limit: number) {
  const got = new Map<string, AgentEvent>();
  const statuses: number[] = [];
  const srv = http.createServer((req, res) => {
    const len = Number(req.headers['content-length'] ?? 0);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (len > limit) { statuses.push(413); res.writeHead(413, { 'content-type': 'application/json' }).end('{"error":"Payload Too Large"}'); return; }
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { events: AgentEvent[] };
      for (const e of body.events) got.set(e.id!, e);
      statuses.push(200);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: body.events.length, state: 'running' }));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, got, statuses, close: () => new Promise((r) => srv.close(r)) };
}

test('on 413 a batch is split (and a single oversized event cut) instead of dropped', async (t) => {
  const srv = await limitedServer(64 << 10);
  t.after(() => srv.close());
  const c = quietConsole();
  // the agent believes in 512 KiB batches; this server takes 64 KiB
  const rep = new EventReporter({ server: srv.url, workflowId: 'wf', token: 't', console: c.console, batchDelayMs: 10_000 });
  for (let i = 0; i < 100; i++) rep.send({ log: [{ stream: 'stdout', line: `${i} ${'y'.repeat(2000)}` }] });
  rep.send({ message: 'm'.repeat(300_000) }); // one event above the server's limit
  assert.equal(await rep.final({ state: 'succeeded', exitCode: 0 }), true);
  assert.ok(srv.statuses.includes(413), 'the server did refuse big batches');
  const events = [...srv.got.values()];
  const lines = events.flatMap((e) => e.log ?? []).map((l) => Number(l.line.split(' ')[0]));
  assert.deepEqual(lines.sort((a, b) => a - b), [...Array(100).keys()], 'every log line arrived');
  const cut = events.find((e) => e.message?.startsWith('mmm'));
  assert.ok(cut && /bytes cut\]$/.test(cut.message!), 'the oversized message arrived, cut with a marker');
  assert.equal(events.filter((e) => e.state === 'succeeded').length, 1);
});

test('fitEvent spreads log lines over events below the size and cuts a line too long on its own', () => {
  const e: AgentEvent = { log: [...Array(50).keys()].map((i) => ({ stream: 'stdout' as const, line: `${i}`.padEnd(1000, '.') })) };
  const parts = fitEvent(e, 8000);
  assert.ok(parts.length > 5);
  assert.ok(parts.every((p) => JSON.stringify(p).length <= 8000));
  assert.deepEqual(parts.flatMap((p) => p.log!).map((l) => l.line), e.log!.map((l) => l.line));
  const long = fitEvent({ log: [{ stream: 'stderr', line: 'z'.repeat(100_000) }] }, 8000);
  assert.equal(long.length, 1);
  assert.match(long[0].log![0].line, /… \[\d+ bytes cut\]$/);
  assert.deepEqual(fitEvent({ state: 'running' }, 8000), [{ state: 'running' }]);
});
