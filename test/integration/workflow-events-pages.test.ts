/** GET /api/v1/workflows/{id} pages its events; the CLI (a real child process) follows the pages. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';
import { CLI, inProcessApp, readyImage } from '../helpers/daemon.ts';

const run = promisify(execFile);

async function withEvents(t: { after(fn: () => unknown): void }, n: number) {
  const ctx = await inProcessApp();
  t.after(() => ctx.close());
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'img1', target: 'ram' });
  ctx.store.tx(() => { for (let i = 0; i < n; i++) ctx.store.events.append({ workflowId: wf.id, kind: 'info', message: `e${i}` }); });
  return { ctx, wf };
}

test('workflow events come in pages with eventsNext; bad page arguments are 400 with the field', async (t) => {
  const { ctx, wf } = await withEvents(t, 2500);
  const get = (q = '') => ctx.app.inject({ method: 'GET', url: `/api/v1/workflows/${wf.id}${q}`, headers: ctx.auth });
  const first = (await get()).json();
  assert.equal(first.events.length, 1000, 'default page size');
  assert.equal(first.events[0].seq, 1);
  assert.equal(first.eventsNext, 1000);
  const seqs: number[] = first.events.map((e: { seq: number }) => e.seq);
  for (let next = first.eventsNext; next !== null;) {
    const p = (await get(`?eventsAfter=${next}&eventsLimit=700`)).json();
    seqs.push(...p.events.map((e: { seq: number }) => e.seq));
    next = p.eventsNext;
  }
  assert.deepEqual(seqs, [...Array(2501).keys()].map((i) => i + 1), 'every event once, in order');
  const last = (await get('?eventsAfter=2400')).json();
  assert.equal(last.events.length, 101);
  assert.equal(last.eventsNext, null);
  for (const [q, field] of [['?eventsLimit=0', 'eventsLimit'], ['?eventsLimit=20000', 'eventsLimit'], ['?eventsAfter=-1', 'eventsAfter']]) {
    const r = await get(q);
    assert.equal(r.statusCode, 400, q);
    assert.match(JSON.stringify(r.json()), new RegExp(field), q);
  }
});

test('ironboot workflows show follows the pages and prints every event', async (t) => {
  const { ctx, wf } = await withEvents(t, 1500);
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(ctx.app.server.address() as AddressInfo).port}`;
  const env = { ...process.env, IRONBOOT_SERVER: url, IRONBOOT_TOKEN: ctx.adminToken };
  const r = await run(process.execPath, [CLI, 'workflows', 'show', wf.id, '--json'], { env, maxBuffer: 1 << 26 });
  const w = JSON.parse(r.stdout);
  assert.equal(w.events.length, 1501);
  assert.equal(w.events[1500].message, 'e1499');
  assert.equal(w.eventsNext, undefined, 'the CLI hands back one whole workflow');
});
