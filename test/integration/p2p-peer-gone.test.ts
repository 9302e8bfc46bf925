/**
 * A peer that is gone: the tracker still names a machine that powered off (its workflow has not ended), and on the
 * LAN its address answers nothing, not even ARP. The agent's peer fetches (init/agent/disk.ts: fetchBufferWith
 * with PEER_CONNECT_TIMEOUT_MS) give up on the connection after that long and fetch the chunk from the server;
 * without it the kernel's ARP tries decided, about 3 s per chunk (seen in test/bench/boot.ts). Two namespaces on a
 * veth: the agent's side at 10.93.0.2, the "rack" side holding 10.93.0.1, nobody at 10.93.0.99.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, netnsUnavailable } from '../helpers/netns.ts';
import { PEER_CONNECT_TIMEOUT_MS } from '../../init/agent/steps/peers.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PROBE = join(ROOT, 'test', 'helpers', 'peer-connect-probe.ts');

test('a peer that is gone: the connection is given up after the peer connect timeout, not after ARP gives up', { skip: netnsUnavailable(), timeout: 60_000 }, async (t) => {
  const lab = await Lab.create('ibpg');
  t.after(() => lab.destroy());
  const agent = lab.ns('agent');
  const rack = lab.ns('rack');
  lab.veth(agent, '10.93.0.2/24', rack, '10.93.0.1/24');
  const probe = (connect: string) => JSON.parse(agent.exec(process.execPath, ['--import', 'tsx', PROBE, 'http://10.93.0.99:7480/p2p/x/0', connect]).trim().split('\n').pop()!) as { ok: boolean; error?: string; ms: number };
  const withTimeout = probe(String(PEER_CONNECT_TIMEOUT_MS));
  assert.equal(withTimeout.ok, false);
  assert.match(withTimeout.error!, new RegExp(`no connection within ${PEER_CONNECT_TIMEOUT_MS} ms`));
  const without = probe('');
  assert.equal(without.ok, false);
  assert.match(without.error!, /EHOSTUNREACH/, 'without it, only ARP giving up ends the attempt');
  t.diagnostic(`gone peer: given up after ${withTimeout.ms} ms with the connect timeout, ${without.ms} ms without`);
});
