/**
 * Workflow events across daemons on one PostgreSQL (server/workflows/fleet-events.ts): two daemons in this process,
 * each with its own store connection, WorkflowService and LISTEN connection, on the test's own PostgreSQL. What one
 * commits reaches the other once, in commit order, whole (also past NOTIFY's 8000-byte limit); a refused batch
 * reaches nobody; a daemon does not hear itself; after its LISTEN connection broke, a daemon catches up on what was
 * committed meanwhile.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { WorkflowService } from '../../server/workflows/service.ts';
import { FleetEvents } from '../../server/workflows/fleet-events.ts';
import type { WorkflowEvent } from '../../server/store/events.ts';
import { fleetBackends, freshStore, openStore } from '../helpers/fleet-store.ts';
import { readyImage } from '../helpers/daemon.ts';

fleetBackends(); // this file's PostgreSQL: started before, stopped after the tests

async function daemon(t: { after: (fn: () => unknown) => void }, url: string) {
  const store = openStore(url);
  const workflows = new WorkflowService(store, pino({ level: 'silent' }));
  const fleet = new FleetEvents({ url, store, workflows, log: pino({ level: 'silent' }), retryMs: 100 });
  await fleet.start();
  workflows.announcer = fleet;
  const local: WorkflowEvent[] = [];
  const remote: WorkflowEvent[] = [];
  workflows.events.on('event', (e: WorkflowEvent) => local.push(e));
  workflows.events.on('remote', (e: WorkflowEvent) => remote.push(e));
  t.after(async () => { await fleet.stop(); store.close(); });
  return { store, workflows, fleet, local, remote };
}

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('postgres: what one daemon commits reaches the other once, in order, whole; a refused batch reaches nobody', async (t) => {
  const url = freshStore(t, 'postgres');
  const a = await daemon(t, url);
  const b = await daemon(t, url);
  a.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  a.store.machines.create({ mac: '52:54:00:93:00:01' });
  const wf = a.workflows.create({ mac: '52:54:00:93:00:01', image: 'web', target: 'ram' });
  a.workflows.transition(wf.id, 'booting');
  const big = 'x'.repeat(20_000); // past NOTIFY's payload limit: announced by id, read by the listener
  a.workflows.record({ workflowId: wf.id, kind: 'log', message: 'big', payload: { lines: [{ line: big }] } });
  assert.throws(() => a.workflows.batch(() => {
    a.workflows.record({ workflowId: wf.id, kind: 'info', message: 'never committed' });
    throw new Error('refused');
  }), /refused/);
  a.workflows.transition(wf.id, 'agent-online');
  await until('four events at b', () => b.remote.length >= 4);
  await new Promise((r) => setTimeout(r, 300)); // nothing more comes
  assert.deepEqual(b.remote.map((e) => [e.seq, e.kind, e.state]), [[1, 'state', 'pending'], [2, 'state', 'booting'], [3, 'log', null], [4, 'state', 'agent-online']]);
  assert.deepEqual(b.remote.map((e) => e.id), a.local.map((e) => e.id), 'the same events, committed order');
  assert.equal((b.remote[2].payload.lines as { line: string }[])[0].line, big, 'the big event arrived whole');
  assert.ok(!b.remote.some((e) => e.message === 'never committed'));
  assert.equal(a.remote.length, 0, 'a does not hear itself');
  // and the other way round
  b.workflows.transition(wf.id, 'cancelled', { reason: 'by b' });
  await until('the cancel at a', () => a.remote.length === 1);
  assert.equal(a.remote[0].state, 'cancelled');
  assert.equal(b.remote.length, 4, 'b does not hear itself');
});

test('postgres: after its LISTEN connection broke, a daemon catches up on what was committed meanwhile, once each', async (t) => {
  const url = freshStore(t, 'postgres');
  const a = await daemon(t, url);
  const b = await daemon(t, url);
  a.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  a.store.machines.create({ mac: '52:54:00:93:00:02' });
  const wf = a.workflows.create({ mac: '52:54:00:93:00:02', image: 'web', target: 'ram' });
  await until('the creation at b', () => b.remote.length === 1);
  const connects = b.fleet.connects;
  await b.fleet.dropConnection();
  // committed while b listens nowhere (its reconnect is a timer of this event loop; these commits do not yield)
  a.workflows.transition(wf.id, 'booting');
  a.workflows.record({ workflowId: wf.id, kind: 'info', message: 'while b was away' });
  await until('b back and caught up', () => b.fleet.connects > connects && b.remote.length >= 3);
  a.workflows.transition(wf.id, 'agent-online'); // live again
  await until('the live one', () => b.remote.length >= 4);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(b.remote.map((e) => e.seq), [1, 2, 3, 4], 'each once, in order');
  assert.equal(b.remote[2].message, 'while b was away');
});
