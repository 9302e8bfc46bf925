/**
 * POST /agent/v1/events on the real app (fastify inject, a real Store): one transaction per batch, idempotent
 * event ids, nothing accepted once final, and the per-workflow output caps with their marker event.
 */
import { before, test } from 'node:test';
import { describeStores, type StoreBackend } from '../helpers/stores.ts';
import assert from 'node:assert/strict';
import { agentSession, bootTokenFor, inProcessApp, readyImage } from '../helpers/daemon.ts';
import type { AgentEventLimits } from '../../server/workflows/agent-events.ts';

let backend: StoreBackend;

async function running(t: { after(fn: () => unknown): void }, limits?: AgentEventLimits) {
  const h = backend.open();
  const ctx = await inProcessApp({ dataDir: h.dataDir, store: h.store, extra: limits ? { agentEventLimits: limits } : {} });
  t.after(async () => { await ctx.close(); h.remove(); });
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'img1', target: 'ram' });
  for (const s of ['booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running'] as const) ctx.workflows.transition(wf.id, s);
  const session = agentSession(ctx.store, wf.id);
  const post = (events: object[]) => ctx.app.inject({ method: 'POST', url: '/agent/v1/events', headers: { authorization: `Bearer ${session}` }, payload: { workflowId: wf.id, events } });
  const streamed: string[] = [];
  ctx.workflows.events.on('event', (e) => streamed.push(`${e.kind}:${e.state ?? ''}`));
  return { ctx, wf, post, streamed, events: () => ctx.store.events.list(wf.id) };
}

describeStores('agent event delivery', (b) => {
  before(() => { backend = b; }); // the suites run one after the other; setup() opens this one's store
test('a batch is one transaction: a refused event midway writes nothing of it, on the store or the live stream', async (t) => {
  const { post, events, streamed } = await running(t);
  const before = events().length;
  const r = await post([{ id: 'a1', log: [{ stream: 'stdout', line: 'first' }] }, { id: 'a2', message: 'info' }, { id: 'a3', state: 'streaming' }]);
  assert.equal(r.statusCode, 409, r.body);
  assert.equal(events().length, before, 'neither the log line nor the info event was written');
  assert.deepEqual(streamed, [], 'nothing went out on the live stream');
  // the same ids are not "seen": a corrected batch with them is written
  const ok = await post([{ id: 'a1', log: [{ stream: 'stdout', line: 'first' }] }, { id: 'a2', message: 'info' }]);
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(events().length, before + 2);
});

test('event ids make a retried batch idempotent', async (t) => {
  const { post, events } = await running(t);
  const batch = [{ id: 'r-1', log: [{ stream: 'stdout', line: 'x' }] }, { id: 'r-2', bytesDone: 5, bytesTotal: 10 }, { id: 'r-3', message: 'note' }];
  const first = await post(batch);
  assert.deepEqual(first.json(), { accepted: 3, state: 'running', duplicates: 0, dropped: 0 });
  const n = events().length;
  const again = await post(batch);
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().duplicates, 3);
  assert.equal(events().length, n, 'nothing written twice');
  // a final report retried after the workflow became final is acknowledged, not refused
  const fin = [{ id: 'r-4', state: 'succeeded', exitCode: 0 }];
  assert.equal((await post(fin)).json().state, 'succeeded');
  const retry = await post(fin);
  assert.equal(retry.statusCode, 200, retry.body);
  assert.equal(retry.json().duplicates, 1);
  assert.equal(events().filter((e) => e.state === 'succeeded').length, 1);
});

test('once the workflow is final every new event is refused', async (t) => {
  const { ctx, wf, post, events } = await running(t);
  ctx.workflows.cancel(wf.id);
  const n = events().length;
  for (const ev of [{ log: [{ stream: 'stdout', line: 'late' }] }, { bytesDone: 1 }, { message: 'late info' }, { state: 'succeeded', exitCode: 0 }]) {
    const r = await post([{ id: `late-${JSON.stringify(ev).length}`, ...ev }]);
    assert.equal(r.statusCode, 409, `${JSON.stringify(ev)}: ${r.body}`);
    assert.match(r.json().message, /already cancelled/);
  }
  // events after the final state within one batch are refused too, with the whole batch
  assert.equal(events().length, n);
  const r2 = await running(t);
  const mixed = await r2.post([{ id: 'f', state: 'succeeded', exitCode: 0 }, { id: 'g', log: [{ stream: 'stdout', line: 'after the end' }] }]);
  assert.equal(mixed.statusCode, 409);
  assert.equal(r2.ctx.store.workflows.get(r2.wf.id)!.state, 'running');
});

test('output is capped per workflow: a marker event, later output dropped, state changes still land', async (t) => {
  const { post, events } = await running(t, { maxEvents: 5, maxBytes: 1 << 20 });
  const lines = (i: number) => [{ stream: 'stdout', line: `line ${i}` }];
  const r = await post([...Array(8).keys()].map((i) => ({ id: `c${i}`, log: lines(i) })));
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().dropped, 3);
  const more = await post([{ id: 'c9', log: lines(9) }, { id: 'c10', bytesDone: 1 }]);
  assert.equal(more.json().dropped, 2);
  const logs = events().filter((e) => e.kind === 'log');
  assert.equal(logs.length, 5);
  const markers = events().filter((e) => e.payload.truncated === true);
  assert.equal(markers.length, 1, 'one marker');
  assert.match(markers[0].message!, /output truncated/);
  assert.equal((await post([{ id: 'end', state: 'succeeded', exitCode: 0 }])).json().state, 'succeeded');
});

test('the byte cap cuts a log event at the line that no longer fits', async (t) => {
  const { post, events } = await running(t, { maxEvents: 1000, maxBytes: 1000 });
  const big = [...Array(20).keys()].map((i) => ({ stream: 'stdout', line: `${i}`.padEnd(100, '.') }));
  const r = await post([{ id: 'b1', log: big }]);
  assert.equal(r.statusCode, 200);
  const stored = events().filter((e) => e.kind === 'log').flatMap((e) => e.payload.lines as unknown[]);
  assert.ok(stored.length > 0 && stored.length < 20, `some lines stored (${stored.length})`);
  assert.equal(events().filter((e) => e.payload.truncated === true).length, 1);
});

test('wipe, targetSerial and targetSize go from POST /api/v1/workflows to the agent\'s spec; wipe defaults to false', async (t) => {
  const ctx = await inProcessApp();
  t.after(() => ctx.close());
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  ctx.store.machines.create({ mac: '52:54:00:12:34:57' });
  const mk = (payload: object) => ctx.app.inject({ method: 'POST', url: '/api/v1/workflows', headers: ctx.auth, payload });
  const a = await mk({ machine: '52:54:00:12:34:56', image: 'img1', target: '/dev/disk/by-id/virtio-S1', wipe: true, targetSerial: 'S1', targetSize: 68719476736 });
  assert.equal(a.statusCode, 201, a.body);
  assert.deepEqual([a.json().wipe, a.json().targetSerial, a.json().targetSize], [true, 'S1', 68719476736]);
  const b = await mk({ machine: '52:54:00:12:34:57', image: 'img1', target: '/dev/vda' });
  assert.deepEqual([b.json().wipe, b.json().targetSerial, b.json().targetSize], [false, null, null]);
  assert.equal((await mk({ machine: '52:54:00:12:34:57', image: 'img1', target: '/dev/vda', targetSize: 0 })).statusCode, 400);
  const hello = async (id: string, mac: string) => {
    return (await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: { authorization: `Bearer ${bootTokenFor(ctx.store, id)}` }, payload: { workflowId: id, mac } })).json();
  };
  const sa = await hello(a.json().id, '52:54:00:12:34:56');
  assert.deepEqual([sa.wipe, sa.targetSerial, sa.targetSize], [true, 'S1', 68719476736]);
  const sb = await hello(b.json().id, '52:54:00:12:34:57');
  assert.deepEqual([sb.wipe, sb.targetSerial, sb.targetSize], [false, undefined, undefined]);
  // retry keeps them
  ctx.workflows.cancel(a.json().id);
  const r = ctx.workflows.retry(a.json().id);
  assert.deepEqual([r.wipe, r.targetSerial, r.targetSize], [true, 'S1', 68719476736]);
});
});

test('batches of several agents arriving together share group commits (SQLite), counted in /metrics', async (t) => {
  const ctx = await inProcessApp();
  t.after(() => ctx.close());
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  const agents = Array.from({ length: 12 }, (_, i) => {
    const mac = `52:54:00:12:35:${i.toString(16).padStart(2, '0')}`;
    ctx.store.machines.create({ mac });
    const wf = ctx.workflows.create({ mac, image: 'img1', target: 'ram' });
    for (const s of ['booting', 'agent-online', 'streaming'] as const) ctx.workflows.transition(wf.id, s);
    return { wf, session: agentSession(ctx.store, wf.id) };
  });
  const counters = async () => {
    const text = (await ctx.app.inject({ method: 'GET', url: '/metrics' })).body;
    const v = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { groups: v('ironboot_group_commits_total'), jobs: v('ironboot_group_commit_jobs_total') };
  };
  const before = await counters();
  const replies = await Promise.all(agents.map(({ wf, session }, i) => ctx.app.inject({
    method: 'POST', url: '/agent/v1/events', headers: { authorization: `Bearer ${session}` },
    payload: { workflowId: wf.id, events: [{ id: `e-${i}`, log: [{ stream: 'stdout', line: `agent ${i}` }] }, { id: `s-${i}`, state: 'verifying' }] },
  })));
  for (const r of replies) assert.equal(r.statusCode, 200, r.body);
  for (const { wf } of agents) assert.equal(ctx.store.workflows.get(wf.id)!.state, 'verifying');
  const after = await counters();
  assert.equal(after.jobs - before.jobs, 12, 'every batch went through the group commit');
  assert.ok(after.groups - before.groups < 12, `12 batches sent together took ${after.groups - before.groups} transactions`);
});
