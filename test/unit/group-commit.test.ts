/**
 * WorkflowService.commitSoon: the writes of requests that arrive together share one transaction (a savepoint
 * each), the event loop gets its turn between groups, a failing job undoes its own writes and publishes nothing,
 * and a failed commit refuses its whole group. On PostgreSQL a job runs at once in its own transaction.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowService, WorkflowError } from '../../server/workflows/service.ts';
import type { Store } from '../../server/store/index.ts';
import type { WorkflowEvent } from '../../server/store/events.ts';
import { readyImage, silentLog } from '../helpers/daemon.ts';
import { storeBackends, type StoreBackend } from '../helpers/stores.ts';

const [sqlite, postgres] = storeBackends() as [StoreBackend, StoreBackend];

/** n machines with a pending workflow each; `other` is a second connection on the same database. */
function fleet(t: Parameters<StoreBackend['open']>[0], backend: StoreBackend, n: number, limits?: ConstructorParameters<typeof WorkflowService>[2]) {
  const h = backend.open(t);
  const store = h.store;
  const other: Store = h.reopen();
  store.images.insert(readyImage({ id: 'img', name: 'web' }));
  const svc = new WorkflowService(store, silentLog(), limits);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(svc.create({ mac: store.machines.create({ mac: `52:54:00:00:00:${(i + 1).toString(16).padStart(2, '0')}` }).mac, image: 'web', target: 'ram' }).id);
  return { store, other, svc, ids, stateSeenByOther: (id: string) => other.workflows.get(id)!.state };
}

test('jobs queued together commit as one transaction; their events are published after the commit', async (t) => {
  const { svc, ids, stateSeenByOther } = fleet(t, sqlite, 3);
  const published: string[] = [];
  svc.events.on('event', (e: WorkflowEvent) => {
    if (e.kind !== 'state' || e.state !== 'booting') return;
    // published only once the other connection can read it: after the group's COMMIT
    assert.equal(stateSeenByOther(e.workflowId), 'booting');
    published.push(e.workflowId);
  });
  const seenMidway: string[] = [];
  const results = await Promise.all(ids.map((id, i) => svc.commitSoon(() => {
    if (i > 0) seenMidway.push(stateSeenByOther(ids[0]));
    return svc.transition(id, 'booting').state;
  })));
  assert.deepEqual(results, ['booting', 'booting', 'booting']);
  assert.deepEqual(seenMidway, ['pending', 'pending'], 'the first job\'s change is not committed while the later jobs of its group run');
  assert.deepEqual(published, ids);
  for (const id of ids) assert.equal(stateSeenByOther(id), 'booting');
});

test('a group stops at maxJobs and at budgetMs; callbacks queued meanwhile run before the next group', async (t) => {
  for (const limits of [{ budgetMs: 1000, maxJobs: 1 }, { budgetMs: 0, maxJobs: 64 }]) {
    const { svc, ids, stateSeenByOther } = fleet(t, sqlite, 3, limits);
    const order: string[] = [];
    await Promise.all(ids.map((id, i) => svc.commitSoon(() => {
      if (i > 0) assert.equal(stateSeenByOther(ids[i - 1]), 'booting', `${JSON.stringify(limits)}: each job is a group of its own`);
      setImmediate(() => order.push(`immediate after job ${i}`));
      order.push(`job ${i}`);
      svc.transition(id, 'booting');
    })));
    assert.deepEqual(order.slice(0, 4), ['job 0', 'immediate after job 0', 'job 1', 'immediate after job 1'], JSON.stringify(limits));
  }
  // and without a limit in reach, the same three jobs are one group: nothing else runs between them
  const { svc, ids } = fleet(t, sqlite, 3);
  const order: string[] = [];
  await Promise.all(ids.map((id, i) => svc.commitSoon(() => {
    setImmediate(() => order.push(`immediate after job ${i}`));
    order.push(`job ${i}`);
    svc.transition(id, 'booting');
  })));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order.slice(0, 3), ['job 0', 'job 1', 'job 2']);
});

test('a job that throws undoes only its own writes, publishes nothing, and rejects only its own promise', async (t) => {
  const { svc, ids, stateSeenByOther, store } = fleet(t, sqlite, 3);
  const published: string[] = [];
  svc.events.on('event', (e: WorkflowEvent) => { if (e.kind === 'state') published.push(`${e.workflowId}:${e.state}`); });
  const [a, b, c] = await Promise.allSettled([
    svc.commitSoon(() => svc.transition(ids[0], 'booting')),
    svc.commitSoon(() => { svc.transition(ids[1], 'booting'); svc.record({ workflowId: ids[1], kind: 'info', message: 'half' }); throw new Error('refused midway'); }),
    svc.commitSoon(() => svc.transition(ids[2], 'succeeded')), // not allowed from pending: a WorkflowError
  ]);
  assert.equal(a.status, 'fulfilled');
  assert.equal(b.status, 'rejected');
  assert.match(((b as PromiseRejectedResult).reason as Error).message, /refused midway/);
  assert.equal(c.status, 'rejected');
  assert.ok((c as PromiseRejectedResult).reason instanceof WorkflowError);
  assert.deepEqual(ids.map(stateSeenByOther), ['booting', 'pending', 'pending']);
  assert.deepEqual(store.events.list(ids[1]).map((e) => e.kind), ['state'], 'only its creation event: the job\'s writes are gone');
  assert.deepEqual(published, [`${ids[0]}:booting`]);
});

test('a commit that fails refuses every job of its group and publishes nothing', async (t) => {
  const { svc, ids, stateSeenByOther, store } = fleet(t, sqlite, 2);
  const published: WorkflowEvent[] = [];
  svc.events.on('event', (e: WorkflowEvent) => published.push(e));
  const results = await Promise.allSettled([
    svc.commitSoon(() => svc.transition(ids[0], 'booting')),
    svc.commitSoon(() => {
      // a foreign key checked at COMMIT (deferred): the savepoint is released, the commit fails
      store.db.prepare('PRAGMA defer_foreign_keys = ON').run();
      store.events.append({ workflowId: 'no-such-workflow', kind: 'info', message: 'dangling' });
    }),
  ]);
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
  assert.match(((results[0] as PromiseRejectedResult).reason as Error).message, /FOREIGN KEY/);
  assert.deepEqual(ids.map(stateSeenByOther), ['pending', 'pending']);
  assert.deepEqual(published, []);
  // the queue goes on after a failed group
  assert.equal((await svc.commitSoon(() => svc.transition(ids[0], 'booting'))).state, 'booting');
});

test('a job after which SQLite has rolled the whole transaction back ends its group there: the group is refused, later jobs run in the next one', async (t) => {
  const { svc, ids, stateSeenByOther, store } = fleet(t, sqlite, 3);
  const results = await Promise.allSettled([
    svc.commitSoon(() => svc.transition(ids[0], 'booting')),
    // as SQLite does by itself on some I/O and disk-full errors
    svc.commitSoon(() => { store.db.exec('ROLLBACK'); throw new Error('disk I/O error'); }),
    svc.commitSoon(() => svc.transition(ids[2], 'booting')),
  ]);
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'fulfilled']);
  assert.deepEqual(ids.map(stateSeenByOther), ['pending', 'pending', 'booting'], 'nothing of the broken group was left written in autocommit');
});

test('on PostgreSQL a job runs at once in its own transaction', async (t) => {
  const { svc, ids, stateSeenByOther } = fleet(t, postgres, 2);
  const p = svc.commitSoon(() => svc.transition(ids[0], 'booting'));
  assert.equal(stateSeenByOther(ids[0]), 'booting', 'committed before commitSoon returned');
  assert.equal((await p).state, 'booting');
  await assert.rejects(svc.commitSoon(() => { svc.transition(ids[1], 'booting'); throw new Error('no'); }), /no/);
  assert.equal(stateSeenByOther(ids[1]), 'pending');
});
