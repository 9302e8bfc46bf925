import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../server/store/index.ts';
import { describeStores, type StoreBackend } from '../helpers/stores.ts';
import { DhcpLeases, guessPoolPrefix, type LeasePolicy, type Link } from '../../server/dhcp/leases.ts';

const direct: Link = { interfaceAddresses: [{ address: '10.81.0.1', prefix: 24 }], relay: null };
const policy = (over: Partial<LeasePolicy> = {}): LeasePolicy => ({
  mode: 'full', pool: { start: '10.81.0.100', end: '10.81.0.103' }, poolPrefix: 24, poolUnknown: true,
  leaseSeconds: 600, router: '10.81.0.1', dns: ['10.81.0.53'], ...over,
});

test('guessPoolPrefix', () => {
  assert.equal(guessPoolPrefix('10.81.2.100', '10.81.2.199'), 24);
  assert.equal(guessPoolPrefix('10.81.2.0', '10.81.3.255'), 23);
});

describeStores('dhcp leases', (backend: StoreBackend) => {
/** fn gets the store and a way to open the same database again (a restart). */
function withStore(fn: (reopen: () => Store, store: Store) => void): void {
  const h = backend.open();
  try { fn(h.reopen, h.store); } finally { h.remove(); }
}

test('reservation mode: reserved address on the link, nothing for others', () => withStore((_reopen, store) => {
  const m = store.machines.create({ mac: '52:54:00:81:00:01', hostname: 'a', ipv4: { address: '10.81.0.11', prefix: 24, dns: [] } });
  const bare = store.machines.create({ mac: '52:54:00:81:00:02' });
  const l = new DhcpLeases(store, policy({ mode: 'reservation' }));
  assert.equal(l.resolve(m.mac, m, direct).binding?.address, '10.81.0.11');
  assert.equal(l.resolve(m.mac, m, direct).binding?.hostname, 'a');
  assert.match(l.resolve(bare.mac, bare, direct).why, /no IPv4 reservation/);
  assert.match(l.resolve('52:54:00:81:00:03', null, direct).why, /unknown MAC/);
  // another link (interface on 10.81.7.0/24, or a relay in 10.81.9.0/24): not this reservation
  assert.equal(l.resolve(m.mac, m, { interfaceAddresses: [{ address: '10.81.7.1', prefix: 24 }], relay: null }).binding, null);
  assert.equal(l.resolve(m.mac, m, { interfaceAddresses: direct.interfaceAddresses, relay: '10.81.9.1' }).binding, null);
  assert.equal(l.resolve(m.mac, m, { interfaceAddresses: [], relay: '10.81.0.254' }).binding?.address, '10.81.0.11');
}));

test('full mode: pool skips reserved addresses, holds offers, persists binds across a restart', () => withStore((reopen, store) => {
  store.machines.create({ mac: '52:54:00:81:00:09', ipv4: { address: '10.81.0.101', prefix: 24, dns: [] } });
  let now = 1_000_000;
  const l = new DhcpLeases(store, policy(), () => now);
  const a = l.resolve('52:54:00:81:00:0a', null, direct).binding!;
  assert.equal(a.address, '10.81.0.100');
  assert.equal(a.source, 'pool');
  l.apply('52:54:00:81:00:0a', { kind: 'offer', address: a.address });
  const b = l.resolve('52:54:00:81:00:0b', null, direct).binding!;
  assert.equal(b.address, '10.81.0.102', 'skips the offered .100 and the reserved .101');
  l.apply('52:54:00:81:00:0a', { kind: 'bind', address: a.address, leaseSeconds: 600 });
  assert.equal(l.list().length, 1);
  assert.equal(l.list()[0].state, 'bound');
  store.close();

  const store2 = reopen();
  try {
    const l2 = new DhcpLeases(store2, policy(), () => now);
    assert.equal(l2.resolve('52:54:00:81:00:0a', null, direct).binding?.address, '10.81.0.100', 'same address after restart');
    assert.notEqual(l2.resolve('52:54:00:81:00:0c', null, direct).binding?.address, '10.81.0.100', 'bound address not given to others');
    // release: the address becomes free for others (after never-used ones)
    l2.apply('52:54:00:81:00:0a', { kind: 'release', address: '10.81.0.100' });
    assert.equal(l2.list()[0].state, 'released');
    // decline: quarantined, not handed out until the quarantine ends
    l2.apply('52:54:00:81:00:0c', { kind: 'decline', address: '10.81.0.102' });
    for (const mac of ['52:54:00:81:00:0d', '52:54:00:81:00:0e']) {
      const r = l2.resolve(mac, null, direct).binding;
      assert.notEqual(r?.address, '10.81.0.102');
      if (r) l2.apply(mac, { kind: 'bind', address: r.address, leaseSeconds: 600 });
    }
    assert.equal(l2.resolve('52:54:00:81:00:0f', null, direct).binding, null, 'pool exhausted: .100/.103 bound, .101 reserved, .102 quarantined');
    now += 700_000; // leases and quarantine run out
    assert.ok(l2.resolve('52:54:00:81:00:0f', null, direct).binding);
  } finally { store2.close(); }
}));

test('full mode: unknown MACs only with dhcp-pool-unknown; pool only on its link or relay subnet', () => withStore((_reopen, store) => {
  const l = new DhcpLeases(store, policy({ poolUnknown: false }));
  assert.match(l.resolve('52:54:00:81:00:21', null, direct).why, /dhcp-pool-unknown/);
  const m = store.machines.create({ mac: '52:54:00:81:00:22' });
  assert.equal(l.resolve(m.mac, m, direct).binding?.address, '10.81.0.100');
  assert.equal(l.resolve(m.mac, m, { interfaceAddresses: [], relay: '10.81.0.250' }).binding?.address, '10.81.0.100');
  assert.match(l.resolve(m.mac, m, { interfaceAddresses: [], relay: '10.81.44.1' }).why, /not on this link/);
}));

test('full mode: a client asking for a free pool address (init-reboot after data loss) gets it', () => withStore((_reopen, store) => {
  const l = new DhcpLeases(store, policy());
  assert.equal(l.resolve('52:54:00:81:00:31', null, direct, '10.81.0.103').binding?.address, '10.81.0.103');
  assert.equal(l.resolve('52:54:00:81:00:31', null, direct, '10.81.0.200').binding?.address, '10.81.0.100', 'outside the pool: next free');
}));

const macN = (i: number) => `52:54:00:82:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;

test('full mode: DECLINE is rate-limited per MAC (3 per quarantine period); others still decline', () => withStore((_reopen, store) => {
  let now = 5_000_000;
  const l = new DhcpLeases(store, policy({ pool: { start: '10.81.0.100', end: '10.81.0.120' } }), () => now);
  const mac = '52:54:00:81:00:41';
  const declineNext = (m: string) => {
    const b = l.resolve(m, null, direct).binding!;
    l.apply(m, { kind: 'bind', address: b.address, leaseSeconds: 600 });
    l.apply(m, { kind: 'decline', address: b.address });
    return b.address;
  };
  for (let i = 0; i < 3; i++) declineNext(mac);
  assert.throws(() => declineNext(mac), (e: Error) => e.name === 'DeclineRefused' && /declined 3 addresses within 600 s already \(limit 3\): 10\.81\.0\.103 is not quarantined/.test(e.message));
  l.flush();
  assert.equal(l.list().filter((x) => x.state === 'declined').length, 3, 'the fourth address stays bound, not quarantined');
  declineNext('52:54:00:81:00:42'); // another MAC is not limited by the first one's declines
  now += 600_001; // the quarantine period passed: the MAC may decline again
  declineNext(mac);
}));

test('full mode: a full pool is not scanned again for every request, until an address can be free', () => withStore((_reopen, store) => {
  let now = 6_000_000;
  const size = 1000;
  const l = new DhcpLeases(store, policy({ pool: { start: '10.81.0.1', end: '10.81.3.232' }, poolPrefix: 22 }), () => now);
  const link: Link = { interfaceAddresses: [{ address: '10.81.3.254', prefix: 22 }], relay: null };
  for (let i = 0; i < size; i++) {
    const b = l.resolve(macN(i), null, link).binding!;
    l.apply(macN(i), { kind: 'bind', address: b.address, leaseSeconds: 600 });
  }
  l.flush();
  assert.equal(l.resolve(macN(5000), null, link).why, 'pool exhausted');
  const afterFirst = l.scanned;
  assert.ok(afterFirst >= 2 * size, `the fill and the first request to the full pool scanned ${afterFirst}`);
  for (let i = 0; i < 200; i++) assert.equal(l.resolve(macN(5001 + i), null, link).why, 'pool exhausted');
  assert.equal(l.scanned, afterFirst, `200 requests to a full pool scanned ${l.scanned - afterFirst} addresses`);
  // an address given back: found again (one scan)
  const given = l.list().find((x) => x.mac === macN(7))!.address;
  l.apply(macN(7), { kind: 'release', address: given });
  l.flush();
  assert.equal(l.resolve(macN(6000), null, link).binding?.address, given);
  // a lease running out: found without anything given back
  const l2 = new DhcpLeases(store, policy({ pool: { start: '10.81.0.1', end: '10.81.3.232' }, poolPrefix: 22 }), () => now);
  assert.equal(l2.resolve(macN(6001), null, link).binding?.address, given);
  l2.apply(macN(6001), { kind: 'bind', address: l2.resolve(macN(6001), null, link).binding!.address, leaseSeconds: 600 });
  assert.equal(l2.resolve(macN(6002), null, link).why, 'pool exhausted');
  now += 600_001;
  assert.ok(l2.resolve(macN(6002), null, link).binding, 'leases ran out: the pool has room again');
}));

test('full mode: per-MAC state of MACs that came and went is pruned', () => withStore((_reopen, store) => {
  let now = 7_000_000;
  const l = new DhcpLeases(store, policy({ pool: { start: '10.81.0.100', end: '10.81.0.103' }, offerHoldMs: 30_000 }), () => now);
  // 500 MACs each get an OFFER and never come back (e.g. a flood with random MACs)
  for (let i = 0; i < 500; i++) {
    const b = l.resolve(macN(i), null, direct).binding;
    if (b) l.apply(macN(i), { kind: 'offer', address: b.address });
    now += 100;
  }
  assert.ok(l.stateSizes.byMac > 4, `byMac ${l.stateSizes.byMac}`);
  now += 60_000; // offers expired, a minute since the last prune
  l.resolve(macN(9999), null, direct);
  assert.deepEqual(l.stateSizes, { entries: 0, byMac: 0, declines: 0 });
}));

test("full mode (registered machines only): a deleted machine's pool lease goes back to the pool", () => withStore((_reopen, store) => {
  let now = 8_000_000;
  const l = new DhcpLeases(store, policy({ poolUnknown: false, pool: { start: '10.81.0.100', end: '10.81.0.100' } }), () => now);
  const a = store.machines.create({ mac: '52:54:00:81:00:51' });
  const b = store.machines.create({ mac: '52:54:00:81:00:52' });
  const lease = l.resolve(a.mac, a, direct).binding!;
  l.apply(a.mac, { kind: 'bind', address: lease.address, leaseSeconds: 3600 });
  l.flush();
  assert.equal(l.resolve(b.mac, b, direct).why, 'pool exhausted');
  store.machines.delete(a.id);
  now += 1000;
  assert.equal(l.resolve(b.mac, b, direct).binding?.address, '10.81.0.100');
  assert.deepEqual(l.list().map((x) => [x.address, x.mac, x.state]), [['10.81.0.100', a.mac, 'released']]);
}));
});
