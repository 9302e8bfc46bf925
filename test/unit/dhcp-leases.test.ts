import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../server/store/index.ts';
import { DhcpLeases, guessPoolPrefix, type LeasePolicy, type Link } from '../../server/dhcp/leases.ts';

const direct: Link = { interfaceAddresses: [{ address: '10.81.0.1', prefix: 24 }], relay: null };
const policy = (over: Partial<LeasePolicy> = {}): LeasePolicy => ({
  mode: 'full', pool: { start: '10.81.0.100', end: '10.81.0.103' }, poolPrefix: 24, poolUnknown: true,
  leaseSeconds: 600, router: '10.81.0.1', dns: ['10.81.0.53'], ...over,
});

function withStore(fn: (dir: string, store: Store) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'ibd-leases-'));
  const store = Store.open(dir);
  try { fn(dir, store); } finally { store.close(); rmSync(dir, { recursive: true, force: true }); }
}

test('reservation mode: reserved address on the link, nothing for others', () => withStore((_dir, store) => {
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

test('full mode: pool skips reserved addresses, holds offers, persists binds across a restart', () => withStore((dir, store) => {
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

  const store2 = Store.open(dir);
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

test('full mode: unknown MACs only with dhcp-pool-unknown; pool only on its link or relay subnet', () => withStore((_dir, store) => {
  const l = new DhcpLeases(store, policy({ poolUnknown: false }));
  assert.match(l.resolve('52:54:00:81:00:21', null, direct).why, /dhcp-pool-unknown/);
  const m = store.machines.create({ mac: '52:54:00:81:00:22' });
  assert.equal(l.resolve(m.mac, m, direct).binding?.address, '10.81.0.100');
  assert.equal(l.resolve(m.mac, m, { interfaceAddresses: [], relay: '10.81.0.250' }).binding?.address, '10.81.0.100');
  assert.match(l.resolve(m.mac, m, { interfaceAddresses: [], relay: '10.81.44.1' }).why, /not on this link/);
}));

test('full mode: a client asking for a free pool address (init-reboot after data loss) gets it', () => withStore((_dir, store) => {
  const l = new DhcpLeases(store, policy());
  assert.equal(l.resolve('52:54:00:81:00:31', null, direct, '10.81.0.103').binding?.address, '10.81.0.103');
  assert.equal(l.resolve('52:54:00:81:00:31', null, direct, '10.81.0.200').binding?.address, '10.81.0.100', 'outside the pool: next free');
}));

test('guessPoolPrefix', () => {
  assert.equal(guessPoolPrefix('10.81.2.100', '10.81.2.199'), 24);
  assert.equal(guessPoolPrefix('10.81.2.0', '10.81.3.255'), 23);
});
