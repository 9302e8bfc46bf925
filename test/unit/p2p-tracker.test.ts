/** The peer tracker's decisions (server/p2p/tracker.ts): spread, never self, bad peers dropped, bounds, chains. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerTracker } from '../../server/p2p/tracker.ts';

const F = 'f'.repeat(64);
const clock = () => { let t = 1000; return { now: () => t, advance: (ms: number) => { t += ms; } }; };

/** A tracker with one file of `chunks` chunks and holders h0..h(n-1) (at 10.0.0.i:7480) that have every chunk. */
function withHolders(n: number, chunks = 8, limits = {}, c = clock()) {
  const tr = new PeerTracker(limits, c.now);
  tr.track(F, chunks);
  for (let i = 0; i < n; i++) tr.report(F, `h${i}`, `10.0.0.${i}:7480`, [...Array(chunks).keys()]);
  return { tr, c };
}

test('the first agent of a file is sent to the server; the next to the first, which is fetching it', () => {
  const tr = new PeerTracker();
  tr.track(F, 4);
  const a = tr.assign(F, 'a', '10.0.0.1:7480', 0, 4);
  assert.deepEqual(a.map((d) => [d.peer, d.why]), Array(4).fill([null, 'no-holder']));
  const b = tr.assign(F, 'b', '10.0.0.2:7480', 0, 4);
  assert.deepEqual(b.map((d) => [d.peer, d.why]), Array(4).fill(['10.0.0.1:7480', 'fetching-it']));
  tr.report(F, 'a', '10.0.0.1:7480', [0, 1, 2, 3]);
  const c = tr.assign(F, 'c', '10.0.0.3:7480', 0, 1);
  assert.equal(c[0].why, 'has-it', 'a holder that has the chunk beats one still fetching it');
  assert.equal(c[0].peer, '10.0.0.1:7480');
});

test('never the asker itself, by workflow or by address', () => {
  const { tr } = withHolders(1);
  assert.deepEqual(tr.assign(F, 'h0', '10.0.0.0:7480', 0, 2).map((d) => d.peer), [null, null], 'not itself');
  // another workflow at the same address (a re-provisioned machine): still itself
  assert.deepEqual(tr.assign(F, 'x', '10.0.0.0:7480', 0, 2).map((d) => d.peer), [null, null]);
  assert.deepEqual(tr.assign(F, 'y', '10.0.0.9:7480', 0, 1).map((d) => d.peer), ['10.0.0.0:7480']);
});

test('load spreads: at most maxUploadsPerHolder askers per holder, the idle holder first, the rest to the server', () => {
  const { tr } = withHolders(2, 8, { maxUploadsPerHolder: 2 });
  const peers = ['a', 'b', 'c', 'd', 'e'].map((id) => tr.assign(F, id, null, 0, 1)[0]);
  const used = peers.map((d) => d.peer);
  assert.equal(used.filter((p) => p === '10.0.0.0:7480').length, 2);
  assert.equal(used.filter((p) => p === '10.0.0.1:7480').length, 2);
  assert.equal(used[0] !== used[1], true, 'the second asker goes to the idle holder');
  assert.deepEqual([peers[4].peer, peers[4].why], [null, 'holders-busy']);
  // an asker already served by a holder keeps it for its next chunks without taking a new slot
  assert.equal(tr.assign(F, 'a', null, 1, 1)[0].peer, used[0]);
  // a report releases the slot: the next asker gets a peer again
  tr.report(F, 'a', null, [0, 1]);
  assert.equal(tr.assign(F, 'f', null, 0, 1)[0].peer, used[0]);
});

test('an expired assignment frees its slot', () => {
  const { tr, c } = withHolders(1, 4, { maxUploadsPerHolder: 1, assignmentTtlMs: 5000 });
  assert.ok(tr.assign(F, 'a', null, 0, 1)[0].peer);
  assert.equal(tr.assign(F, 'b', null, 0, 1)[0].peer, null);
  c.advance(5001);
  assert.equal(tr.assign(F, 'b', null, 0, 1)[0].peer, '10.0.0.0:7480');
});

test('a peer reported bad is never handed out again for the file; only the peer the reporter was sent to can be reported', () => {
  const { tr } = withHolders(2, 4);
  const d = tr.assign(F, 'a', '10.0.0.50:7480', 0, 1)[0];
  assert.ok(d.peer);
  const other = d.peer === '10.0.0.0:7480' ? '10.0.0.1:7480' : '10.0.0.0:7480';
  assert.equal(tr.reportBad(F, 'a', other, 0, 'hash'), null, 'a peer it was not sent to for that chunk: ignored');
  assert.deepEqual(tr.reportBad(F, 'a', d.peer!, 0, 'hash'), { holder: d.holder, action: 'banned' });
  for (let i = 0; i < 6; i++) {
    for (const x of tr.assign(F, `z${i}`, null, 0, 4)) assert.notEqual(x.peer, d.peer, 'the bad peer is out');
  }
  // it comes back as a holder under the same address (a new hello): still banned for this file
  tr.report(F, 'again', d.peer, [0, 1, 2, 3]);
  for (const x of tr.assign(F, 'q', null, 0, 4)) assert.notEqual(x.peer, d.peer);
  // an agent that was never sent anywhere cannot ban anyone
  assert.equal(tr.reportBad(F, 'stranger', other, 0, 'hash'), null);
  assert.equal(tr.stats().banned, 1, 'only the one peer');
});

test('a holder whose workflow ended is dropped', () => {
  const { tr } = withHolders(1, 2);
  assert.equal(tr.assign(F, 'a', null, 0, 1)[0].peer, '10.0.0.0:7480');
  assert.equal(tr.drop('h0'), 1);
  assert.deepEqual(tr.assign(F, 'b', null, 0, 2).map((d) => d.why), ['no-holder', 'no-holder']);
  assert.equal(tr.stats().holders, 0);
});

test('a chunk asked for again goes only to holders that have it (no cycle through a peer still fetching it)', () => {
  const tr = new PeerTracker();
  tr.track(F, 1);
  tr.assign(F, 'a', '10.0.0.1:7480', 0, 1);                  // a: from the server
  assert.equal(tr.assign(F, 'b', '10.0.0.2:7480', 0, 1)[0].peer, '10.0.0.1:7480'); // b: from a, still fetching
  // a's server fetch failed and it asks again: b is "fetching it" from a; sending a to b would wait on itself
  const again = tr.assign(F, 'a', '10.0.0.1:7480', 0, 1)[0];
  assert.deepEqual([again.peer, again.why], [null, 'retry-no-holder']);
});

test('chains of holders still fetching a chunk stay short (maxChainDepth)', () => {
  const tr = new PeerTracker({ maxChainDepth: 2, maxUploadsPerHolder: 1 });
  tr.track(F, 1);
  const got = ['a', 'b', 'c', 'd'].map((id, i) => tr.assign(F, id, `10.0.0.${i}:7480`, 0, 1)[0]);
  assert.deepEqual(got.map((d) => d.peer), [null, '10.0.0.0:7480', '10.0.0.1:7480', null],
    'a from the server (depth 0), b from a (1), c from b (2), d not behind c: from the server');
});

test('bounds: chunks per query, chunk numbers, holders per file, files tracked', () => {
  const tr = new PeerTracker({ maxQuery: 4, maxHoldersPerFile: 2, maxFiles: 2 });
  tr.track(F, 100);
  assert.equal(tr.assign(F, 'a', '10.0.0.1:7480', 0, 50).length, 4);
  assert.equal(tr.assign(F, 'a', '10.0.0.1:7480', 98, 4).length, 2, 'never past the last chunk');
  assert.equal(tr.report(F, 'a', '10.0.0.1:7480', [-1, 100, 1.5, 3]), 1, 'only chunk numbers of the file count');
  tr.assign(F, 'b', '10.0.0.2:7480', 0, 1);
  tr.assign(F, 'c', '10.0.0.3:7480', 0, 1);
  assert.equal(tr.stats().holders, 2, 'a third holder is not tracked');
  assert.equal(tr.report(F, 'c', '10.0.0.3:7480', [0]), 0);
  tr.track('1'.repeat(64), 1);
  tr.track('2'.repeat(64), 1);
  assert.equal(tr.stats().files, 2);
  assert.equal(tr.isTracked(F), false, 'the least recently used file went first');
  assert.deepEqual(tr.assign(F, 'a', null, 0, 1).map((d) => d.why), ['not-tracked']);
});

test('an agent that serves nobody gets peers but is never handed out', () => {
  const { tr } = withHolders(1, 2);
  tr.assign(F, 'quiet', null, 0, 2);
  tr.report(F, 'quiet', null, [0, 1]);
  assert.equal(tr.stats().holders, 1);
  tr.drop('h0');
  assert.deepEqual(tr.assign(F, 'x', '10.0.0.8:7480', 0, 2).map((d) => d.peer), [null, null]);
});

test('a peer reported late or failing is suspended for a while, not banned', () => {
  const { tr, c } = withHolders(1, 4, { suspendMs: 10_000 });
  const d = tr.assign(F, 'a', null, 0, 1)[0];
  assert.equal(d.peer, '10.0.0.0:7480');
  assert.deepEqual(tr.reportBad(F, 'a', d.peer!, 0, 'slow'), { holder: 'h0', action: 'suspended' });
  assert.deepEqual(tr.assign(F, 'b', null, 0, 4).map((x) => x.peer), [null, null, null, null], 'suspended');
  c.advance(10_001);
  assert.equal(tr.assign(F, 'c', null, 0, 1)[0].peer, '10.0.0.0:7480', 'handed out again');
  assert.equal(tr.stats().banned, 0);
});
