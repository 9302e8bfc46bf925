/**
 * Two daemons in full mode on one link and one store (the same SQLite file, WAL; or one PostgreSQL database), real
 * udhcpc clients: each client
 * gets OFFERs from both daemons and takes one; however the answers mix, no address is bound to two clients, and the
 * store says who holds what. Without the shared claims the daemons' pools drift apart (each unoffers what the
 * other's client took) and one ACKs an address the other gave away.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, setMac, tempDir, metricValue, type RunningServer } from '../helpers/dhcp-lab.ts';
import { fleetBackends, freshStore, isUrl, openStore } from '../helpers/fleet-store.ts';

const skip = netnsUnavailable('busybox');
const CLIENTS = 16;
const WAVE = 4;
const serveArgs = (iface: string) => ['--dhcp-interface', iface, '--dhcp-mode', 'full', '--dhcp-pool', '10.92.0.100-10.92.0.117', '--dhcp-pool-unknown',
  '--dhcp-lease-time', '600', '--log-level', 'debug'];

const BACKENDS = fleetBackends();

for (const backend of BACKENDS) describe(backend, () => {
let lab: Lab;
const clients: Namespace[] = [];
let servers: RunningServer[] = [];
let spec: string;
const cleanups: (() => unknown)[] = [];

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibf');
  const sw = lab.ns('sw');
  sw.ip('link', 'add', 'ibfbr', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  sw.ip('link', 'set', 'ibfbr', 'up');
  const srv = [lab.ns('s1'), lab.ns('s2')];
  srv.forEach((ns, i) => {
    lab.veth(sw, null, ns, `10.92.0.${i + 1}/24`, [`ibfp${i}`, `ibfs${i}`]);
    sw.ip('link', 'set', `ibfp${i}`, 'master', 'ibfbr');
  });
  for (let i = 0; i < CLIENTS; i++) {
    const ns = lab.ns(`c${i}`);
    lab.veth(sw, null, ns, null, [`ibfq${i}`, `ibfc${i}`]);
    sw.ip('link', 'set', `ibfq${i}`, 'master', 'ibfbr');
    setMac(ns, `ibfc${i}`, `52:54:00:92:00:${(i + 1).toString(16).padStart(2, '0')}`);
    clients.push(ns);
  }
  spec = freshStore({ after: (fn) => cleanups.push(fn) }, backend); // migrated once, before two daemons open it
  const dataDir = isUrl(spec) ? tempDir('fleet') : spec;
  const store = isUrl(spec) ? ['--store', spec] : [];
  servers = await Promise.all(srv.map((ns, i) => startDhcpRunner(ns, { dataDir, args: [...serveArgs(`ibfs${i}`), ...store] })));
});

after(async () => {
  for (const s of servers) await s.stop();
  if (lab) await lab.destroy();
  for (const c of cleanups) await c();
});

test(`${backend}: two daemons, one link, one store: every client bound, no address twice, the store agrees`, { skip }, async () => {
  // waves of clients at once, so requests of different clients interleave at both daemons
  const results = [];
  for (let w = 0; w < CLIENTS; w += WAVE) {
    const wave = clients.slice(w, w + WAVE);
    results.push(...await Promise.all(wave.map((ns) => runUdhcpc(ns, `ibfc${clients.indexOf(ns)}`, [], { tries: 6, timeoutMs: 40000 }))));
  }
  const byIp = new Map<string, number>();
  results.forEach((r, i) => {
    assert.ok(r.bound, `client ${i} got no lease:\n${r.log}`);
    const prev = byIp.get(r.bound.ip);
    assert.equal(prev, undefined, `${r.bound.ip} bound to client ${prev} and client ${i}`);
    byIp.set(r.bound.ip, i);
  });
  const store = openStore(spec);
  try {
    const rows = store.leases.list().filter((l) => l.state === 'bound');
    for (const [ip, i] of byIp) {
      const row = rows.find((l) => l.address === ip);
      assert.equal(row?.mac, `52:54:00:92:00:${(i + 1).toString(16).padStart(2, '0')}`, `row of ${ip}: ${JSON.stringify(row)}`);
    }
  } finally { store.close(); }
  const acks = await Promise.all(servers.map(async (s) => metricValue(await s.metrics(), 'ironboot_dhcp_requests_total', { type: 'request', outcome: 'ack' })));
  const lost = await Promise.all(servers.map(async (s) => metricValue(await s.metrics(), 'ironboot_dhcp_lease_claims_lost_total')));
  console.log(`# ACKs per daemon: ${acks.join(', ')}; lost claims: ${lost.join(', ')}`);
});
});
