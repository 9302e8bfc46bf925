import { test } from 'node:test';
import assert from 'node:assert/strict';
import { negotiateOptions, TransferSession, type SessionAction } from '../../server/tftp/session.ts';

const limits = { maxBlksize: 1468, maxWindowsize: 64, defaultTimeoutMs: 1000 };

const sends = (actions: SessionAction[]) => actions.filter((a) => a.type === 'send-data').map((a) => a.type === 'send-data' ? [a.first, a.last] : []);

test('negotiation: blksize clamped to the path MTU and 65464, tsize answered, timeout and windowsize accepted', () => {
  const n = negotiateOptions({ blksize: '65464', tsize: '0', timeout: '3', windowsize: '16', multicast: '' }, 123456, limits);
  assert.deepEqual(n, { blksize: 1468, windowsize: 16, timeoutMs: 3000, oack: { blksize: '1468', tsize: '123456', timeout: '3', windowsize: '16' } });
  assert.equal(negotiateOptions({ blksize: '100000' }, 1, { ...limits, maxBlksize: 65504 }).blksize, 65464);
  assert.equal(negotiateOptions({ blksize: '1432' }, 1, limits).blksize, 1432);
  assert.equal(negotiateOptions({ windowsize: '1000' }, 1, limits).windowsize, 64);
});

test('negotiation: a window is at most 64 KiB (big blocks would overflow the client socket buffer)', () => {
  const big = { ...limits, maxBlksize: 65504 };
  assert.deepEqual(negotiateOptions({ blksize: '65464', windowsize: '16' }, 1, big).oack, { blksize: '65464', windowsize: '1' });
  assert.equal(negotiateOptions({ windowsize: '16', blksize: '8192' }, 1, big).windowsize, 8);
  assert.equal(negotiateOptions({ blksize: '1468', windowsize: '16' }, 1, big).windowsize, 16);
  assert.equal(negotiateOptions({ blksize: '1468', windowsize: '64' }, 1, { ...big, maxWindowBytes: 1 << 20 }).windowsize, 64);
});

test('negotiation: invalid values are left out of the OACK; nothing accepted means no OACK', () => {
  const n = negotiateOptions({ blksize: '7', timeout: '0', windowsize: 'x', tsize: '-1' }, 10, limits);
  assert.deepEqual(n, { blksize: 512, windowsize: 1, timeoutMs: 1000, oack: null });
  assert.equal(negotiateOptions({ timeout: '256' }, 10, limits).oack, null);
  assert.equal(negotiateOptions({}, 10, limits).oack, null);
});

test('lockstep transfer without options: blocks in order, the exact multiple gets an empty last block', () => {
  const s = new TransferSession({ size: 1024, blksize: 512, windowsize: 1, oack: null, maxRetries: 3 });
  assert.equal(s.totalBlocks, 3);
  assert.deepEqual(sends(s.start()), [[1, 1]]);
  assert.deepEqual(sends(s.ack(1)), [[2, 2]]);
  assert.deepEqual(sends(s.ack(2)), [[3, 3]]);
  assert.deepEqual(s.ack(3), [{ type: 'finish', outcome: 'complete', reason: 'all blocks acknowledged' }]);
  assert.deepEqual(s.ack(3), []);
});

test("no Sorcerer's Apprentice: duplicate and old ACKs never cause a send", () => {
  const s = new TransferSession({ size: 10 * 512, blksize: 512, windowsize: 1, oack: null, maxRetries: 3 });
  s.start();
  assert.deepEqual(sends(s.ack(1)), [[2, 2]]);
  assert.deepEqual(s.ack(1), []);
  assert.deepEqual(s.ack(1), []);
  assert.deepEqual(s.ack(0), []);
  assert.deepEqual(sends(s.ack(2)), [[3, 3]]);
  assert.deepEqual(s.ack(60000), []); // far behind: ignored
});

test('OACK first: ACK 0 starts the data; a non-zero ACK before it is ignored; a timeout resends the OACK', () => {
  const s = new TransferSession({ size: 5000, blksize: 1468, windowsize: 4, oack: { blksize: '1468', windowsize: '4' }, maxRetries: 3 });
  assert.deepEqual(s.start(), [{ type: 'send-oack', options: { blksize: '1468', windowsize: '4' } }]);
  assert.deepEqual(s.ack(1), []);
  assert.deepEqual(s.timeout(), [{ type: 'send-oack', options: { blksize: '1468', windowsize: '4' } }]);
  assert.deepEqual(sends(s.ack(0)), [[1, 4]]);
  assert.deepEqual(s.ack(0), []);
});

test('UEFI: tsize-only OACK then error 8 ends the transfer as aborted, without an ERROR back', () => {
  const s = new TransferSession({ size: 850528, blksize: 512, windowsize: 1, oack: { tsize: '850528' }, maxRetries: 3 });
  s.start();
  assert.deepEqual(s.peerError(8, 'User aborted the transfer'), [{ type: 'finish', outcome: 'aborted', reason: 'client sent error 8: User aborted the transfer' }]);
  assert.deepEqual(s.timeout(), []);
});

test('windowed: an ACK at the window end slides it; an ACK inside the window sends only new blocks; its repeat repairs the gap once', () => {
  const s = new TransferSession({ size: 20 * 512 + 1, blksize: 512, windowsize: 4, oack: { windowsize: '4' }, maxRetries: 3 });
  s.start();
  assert.deepEqual(sends(s.ack(0)), [[1, 4]]);
  assert.deepEqual(sends(s.ack(4)), [[5, 8]]);
  assert.deepEqual(sends(s.ack(6)), [[9, 10]]); // client got 5,6 (gap at 7): only new blocks now
  assert.deepEqual(sends(s.ack(6)), [[7, 10]]); // the client repeats: resend the tail once
  assert.deepEqual(s.ack(6), []); // and never again for the same ACK
  assert.deepEqual(s.ack(5), []);
  assert.deepEqual(sends(s.ack(10)), [[11, 14]]);
  assert.deepEqual(sends(s.ack(14)), [[15, 18]]);
  assert.deepEqual(sends(s.ack(18)), [[19, 21]]);
  assert.equal(s.ack(21)[0].type, 'finish');
});

test('timeouts resend what is outstanding, then give up with an ERROR after maxRetries', () => {
  const s = new TransferSession({ size: 100 * 512, blksize: 512, windowsize: 8, oack: null, maxRetries: 2 });
  assert.deepEqual(sends(s.start()), [[1, 8]]);
  assert.deepEqual(sends(s.ack(3)), [[9, 11]]);
  assert.deepEqual(sends(s.timeout()), [[4, 11]]);
  assert.deepEqual(sends(s.ack(11)), [[12, 19]]); // progress resets the count
  assert.deepEqual(sends(s.timeout()), [[12, 19]]);
  assert.deepEqual(sends(s.timeout()), [[12, 19]]);
  const last = s.timeout();
  assert.equal(last[0].type, 'send-error');
  assert.deepEqual(last[1], { type: 'finish', outcome: 'timeout', reason: 'no ACK for block 12 after 3 tries' });
  assert.equal(s.done, true);
});

test('a lost final ACK (every block sent, then silence) ends as unconfirmed, not as a timeout, without an ERROR', () => {
  const s = new TransferSession({ size: 20 * 512 + 5, blksize: 512, windowsize: 8, oack: null, maxRetries: 1 });
  assert.deepEqual(sends(s.start()), [[1, 8]]);
  assert.deepEqual(sends(s.ack(8)), [[9, 16]]);
  assert.deepEqual(sends(s.ack(14)), [[17, 21]]); // the last window: blocks 15..21 are out, 21 is the last
  assert.deepEqual(sends(s.timeout()), [[15, 21]]);
  const last = s.timeout();
  assert.equal(last.length, 1);
  assert.equal(last[0].type, 'finish');
  assert.equal(last[0].type === 'finish' && last[0].outcome, 'unconfirmed');
  assert.equal(s.bytesAcked, 14 * 512);
});

test('block numbers roll over to 0 past 65535 (files far over 32 MB at 512-byte blocks)', () => {
  const size = 70000 * 512 + 7;
  const s = new TransferSession({ size, blksize: 512, windowsize: 1, oack: null, maxRetries: 1 });
  let next = s.start();
  let sentCount = 0;
  const wireSeen: number[] = [];
  while (next.length && next[0].type === 'send-data') {
    const { first } = next[0];
    sentCount++;
    const wire = first & 0xffff;
    if (first >= 65534 && first <= 65538) wireSeen.push(wire);
    next = s.ack(wire);
  }
  assert.equal(next[0]?.type, 'finish');
  assert.equal(sentCount, 70001);
  assert.deepEqual(wireSeen, [65534, 65535, 0, 1, 2]);
  assert.equal(s.bytesAcked, size);
});

test('windowed rollover: ACKs map to the right absolute block across the wrap', () => {
  const s = new TransferSession({ size: 66000 * 1024, blksize: 1024, windowsize: 16, oack: null, maxRetries: 1 });
  let acts = s.start();
  while (acts.length && acts[0].type === 'send-data') acts = s.ack(acts[0].type === 'send-data' ? acts[0].last & 0xffff : 0);
  assert.equal(acts[0]?.type, 'finish');
  assert.equal(s.acked, 66001);
});

/** A simulated lossy link: the client ACKs per RFC 7440; every block must arrive, in order, with bounded sends. */
function simulate(windowsize: number, loss: number, seed: number) {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  const blocks = 300;
  const s = new TransferSession({ size: blocks * 8 - 3, blksize: 8, windowsize, oack: null, maxRetries: 50 });
  const toClient: number[] = [];
  const toServer: number[] = [];
  let expected = 1;
  let got = 0;
  let sent = 0;
  let inWindow = 0;
  const apply = (acts: SessionAction[]) => {
    for (const a of acts) if (a.type === 'send-data') for (let b = a.first; b <= a.last; b++) { sent++; if (rnd() >= loss) toClient.push(b); }
  };
  apply(s.start());
  for (let step = 0; step < 100000 && !s.done; step++) {
    if (toClient.length) {
      const b = toClient.shift()!;
      if (b === expected) {
        got++; expected++; inWindow++;
        if (inWindow >= windowsize || b === s.totalBlocks) { inWindow = 0; if (rnd() >= loss) toServer.push(b); }
      } else { inWindow = 0; if (rnd() >= loss) toServer.push(expected - 1); } // gap or duplicate: ACK the last good block
    } else if (toServer.length) {
      apply(s.ack(toServer.shift()! & 0xffff));
    } else {
      apply(s.timeout()); // nothing in flight: both sides wait; the server's timer fires
    }
  }
  return { done: s.done, got, total: s.totalBlocks, sent };
}

test('simulated 5% loss: lockstep and windowed transfers complete in order with bounded resends', () => {
  for (const w of [1, 4, 16]) {
    for (const seed of [1, 2, 3]) {
      const r = simulate(w, 0.05, seed);
      assert.equal(r.done, true, `window ${w} seed ${seed}`);
      assert.equal(r.got, r.total, `window ${w} seed ${seed}`);
      assert.ok(r.sent < r.total * 3, `window ${w}: ${r.sent} sends for ${r.total} blocks`);
    }
  }
});

test('timeout option: honoured up to 5 s, a larger one is left out of the OACK (the server keeps its own)', () => {
  assert.deepEqual(negotiateOptions({ timeout: '5' }, 10, limits), { blksize: 512, windowsize: 1, timeoutMs: 5000, oack: { timeout: '5' } });
  assert.deepEqual(negotiateOptions({ timeout: '6', tsize: '0' }, 10, limits), { blksize: 512, windowsize: 1, timeoutMs: 1000, oack: { tsize: '10' } });
  assert.equal(negotiateOptions({ timeout: '255' }, 10, limits).oack, null);
  assert.equal(negotiateOptions({ timeout: '9' }, 10, { ...limits, maxTimeoutSeconds: 10 }).timeoutMs, 9000);
});

test('a client that never answered gets 3 sends (not maxRetries + 1), then the end without an ERROR', () => {
  const s = new TransferSession({ size: 100 * 512, blksize: 512, windowsize: 1, oack: { tsize: '51200' }, maxRetries: 5 });
  assert.deepEqual(s.start(), [{ type: 'send-oack', options: { tsize: '51200' } }]);
  assert.deepEqual(s.timeout(), [{ type: 'send-oack', options: { tsize: '51200' } }]);
  assert.deepEqual(s.timeout(), [{ type: 'send-oack', options: { tsize: '51200' } }]);
  const last = s.timeout();
  assert.deepEqual(last.map((a) => a.type), ['finish']);
  assert.match(last[0].type === 'finish' ? last[0].reason : '', /never answered \(the OACK sent 3 times\)/);
  // once it answered, the full maxRetries apply
  const a = new TransferSession({ size: 100 * 512, blksize: 512, windowsize: 1, oack: null, maxRetries: 5, maxUnansweredRetries: 2 });
  a.start();
  a.ack(1);
  for (let i = 0; i < 5; i++) assert.equal(a.timeout()[0].type, 'send-data');
  assert.deepEqual(a.timeout().map((x) => x.type), ['send-error', 'finish']);
});

test('expire(): the transfer time limit ends it with an ERROR to the client', () => {
  const s = new TransferSession({ size: 100 * 512, blksize: 512, windowsize: 1, oack: null, maxRetries: 5 });
  s.start();
  s.ack(1);
  const out = s.expire(600_000);
  assert.equal(out[0].type, 'send-error');
  assert.deepEqual(out[1], { type: 'finish', outcome: 'timeout', reason: 'transfer time limit (600000 ms) reached at block 1 of 101' });
  assert.deepEqual(s.expire(1), []);
});
