/**
 * Two real daemons (`ironboot serve --store postgres://…`, each with its own data directory) on the test's own
 * PostgreSQL: a workflow created and changed through daemon A's API shows on daemon B's live stream, in order and
 * once each, as does what B itself changes; A's stream shows B's change. Loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { fleetBackends, freshStore, openStore } from '../helpers/fleet-store.ts';

fleetBackends(); // this file's PostgreSQL: started before, stopped after the tests
const TOKEN = 'fleet-stream-test-token-0123456789abcdef';
const auth = { authorization: `Bearer ${TOKEN}` };

interface StreamEvent { workflowId: string; seq: number; state: string | null; kind: string }

/** Reads `event: workflow` records of a live stream as they come. */
async function follow(url: string): Promise<{ events: StreamEvent[]; close(): void }> {
  const ac = new AbortController();
  const res = await fetch(`${url}/api/v1/events/stream`, { headers: auth, signal: ac.signal });
  assert.equal(res.status, 200);
  const events: StreamEvent[] = [];
  void (async () => {
    let buf = '';
    try {
      for await (const chunk of res.body! as AsyncIterable<Uint8Array>) {
        buf += Buffer.from(chunk).toString();
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const rec = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = /^data: (.*)$/m.exec(rec);
          if (/^event: workflow$/m.test(rec) && data) events.push(JSON.parse(data[1]));
        }
      }
    } catch { /* aborted */ }
  })();
  return { events, close: () => ac.abort() };
}

async function until(what: string, fn: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('two daemons on one PostgreSQL: a workflow changed through A shows on B\'s live stream, in order, once each', async (t) => {
  const url = freshStore(t, 'postgres');
  const seed = openStore(url);
  try {
    seed.images.insert(readyImage({ id: 'img1', name: 'web' }));
    seed.machines.create({ mac: '52:54:00:94:00:01' });
  } finally { seed.close(); }
  const daemons = [];
  for (const name of ['a', 'b']) {
    const dir = tempDir(`ibd-fleet-${name}-`);
    t.after(() => dir.remove());
    const d = await spawnDaemon(dir.path, ['--store', url], { IRONBOOT_TOKEN: TOKEN });
    t.after(() => d.stop());
    daemons.push(d);
  }
  const [a, b] = daemons;
  const atB = await follow(b.url);
  const atA = await follow(a.url);
  t.after(() => { atB.close(); atA.close(); });

  const post = async (d: typeof a, path: string, body?: unknown) => {
    const res = await fetch(`${d.url}/api/v1${path}`, { method: 'POST', headers: body === undefined ? auth : { ...auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await res.json() as Record<string, unknown>;
    assert.ok(res.status < 300, `${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const wf = await post(a, '/workflows', { machine: '52:54:00:94:00:01', image: 'web', target: 'ram' });
  await post(a, `/workflows/${wf.id}/cancel`);
  const retry = await post(b, `/workflows/${wf.id}/retry`); // through B: B's own event, shown once on B, and on A
  const ours = (s: { events: StreamEvent[] }) => s.events.filter((e) => e.workflowId === wf.id || e.workflowId === retry.id);
  await until('three events at B', () => ours(atB).length >= 3);
  await until('B\'s change at A', () => ours(atA).length >= 3);
  await new Promise((r) => setTimeout(r, 500)); // nothing more, no repeats
  assert.deepEqual(ours(atB).map((e) => [e.workflowId === wf.id ? 'wf' : 'retry', e.seq, e.state]), [['wf', 1, 'pending'], ['wf', 2, 'cancelled'], ['retry', 1, 'pending']]);
  assert.deepEqual(ours(atA).map((e) => [e.workflowId === wf.id ? 'wf' : 'retry', e.seq, e.state]), [['wf', 1, 'pending'], ['wf', 2, 'cancelled'], ['retry', 1, 'pending']]);
  assert.match(b.output(), /fleet events: listening for the events of other daemons/);
});
