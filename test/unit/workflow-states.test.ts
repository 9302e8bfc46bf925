import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canTransition, WORKFLOW_STATES, isFinal } from '../../server/workflows/states.ts';
import { WorkflowService, WorkflowError } from '../../server/workflows/service.ts';
import { readyImage, silentLog } from '../helpers/daemon.ts';
import { describeStores } from '../helpers/stores.ts';

test('transition table', () => {
  const cases: [string, string, boolean][] = [
    ['pending', 'booting', true], ['booting', 'agent-online', true], ['agent-online', 'streaming', true],
    ['streaming', 'verifying', true], ['verifying', 'mounted', true], ['mounted', 'running', true],
    ['running', 'succeeded', true], ['running', 'failed', true], ['streaming', 'failed', true],
    ['pending', 'cancelled', true], ['running', 'timed-out', true],
    ['pending', 'succeeded', false], ['verifying', 'succeeded', false], ['running', 'streaming', false],
    ['mounted', 'verifying', false],
    // a served boot script (no credentials) never pushes a workflow back (issue 16); a hello after a reboot may
    ['running', 'booting', false], ['agent-online', 'booting', false], ['streaming', 'booting', false],
    ['booting', 'booting', true], ['running', 'agent-online', true],
    ['succeeded', 'booting', false], ['failed', 'running', false], ['cancelled', 'failed', false],
  ];
  for (const [from, to, ok] of cases) assert.equal(canTransition(from as never, to as never), ok, `${from} → ${to}`);
  for (const s of WORKFLOW_STATES) if (isFinal(s)) for (const t of WORKFLOW_STATES) assert.equal(canTransition(s, t), false);
});

describeStores('workflow service over the store', (backend) => {
test('the service records one event per change, emits it, refuses illegal moves, and retries finished workflows', (t) => {
  const store = backend.open(t).store;
  store.machines.create({ mac: '52:54:00:00:00:01' });
  store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  const svc = new WorkflowService(store, silentLog());
  const seen: string[] = [];
  svc.events.on('event', (e) => seen.push(`${e.kind}:${e.state}`));
  const wf = svc.create({ mac: '52:54:00:00:00:01', image: 'web', target: '/dev/sda' });
  assert.equal(wf.state, 'pending');
  assert.equal(wf.token, '', 'no plaintext token is stored with the workflow (agent_tokens holds hashes)');
  assert.throws(() => svc.create({ mac: '52:54:00:00:00:01', image: 'web', target: '/dev/sda' }), (e: unknown) => (e as WorkflowError).status === 409);
  svc.transition(wf.id, 'booting');
  assert.throws(() => svc.transition(wf.id, 'succeeded'), (e: unknown) => (e as WorkflowError).status === 409 && /booting/.test((e as Error).message));
  assert.throws(() => svc.retry(wf.id), /still booting/);
  svc.cancel(wf.id);
  assert.equal(store.workflows.get(wf.id)!.state, 'cancelled');
  assert.ok(store.workflows.get(wf.id)!.finishedAt);
  assert.throws(() => svc.cancel(wf.id), /already cancelled/);
  const again = svc.retry(wf.id);
  assert.notEqual(again.id, wf.id);
  assert.deepEqual(seen, ['state:pending', 'state:booting', 'state:cancelled', 'state:pending']);
  assert.deepEqual(store.events.list(wf.id).map((e) => e.state), ['pending', 'booting', 'cancelled']);
});

test('expire() times out workflows that ran past their timeout', (t) => {
  const store = backend.open(t).store;
  store.machines.create({ mac: '52:54:00:00:00:01' });
  store.images.insert(readyImage({ id: 'img1' }));
  const svc = new WorkflowService(store, silentLog());
  const wf = svc.create({ mac: '52:54:00:00:00:01', image: 'img1', target: 'ram', timeoutSeconds: 60 });
  assert.equal(svc.expire(Date.now() + 3600_000), 0, 'pending workflows wait for their machine');
  svc.transition(wf.id, 'booting');
  assert.equal(svc.expire(Date.now() + 30_000), 0);
  assert.equal(svc.expire(Date.now() + 61_000), 1);
  assert.equal(store.workflows.get(wf.id)!.state, 'timed-out');
});
});
