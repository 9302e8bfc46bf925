import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describeStores, type StoreBackend } from '../helpers/stores.ts';
import { DhcpLeases } from '../../server/dhcp/leases.ts';
import { createRequestHandler, type RequestMeta } from '../../server/dhcp/handle.ts';
import { parseDhcpPacket, messageType, MessageType as T } from '../../server/dhcp/packet.ts';
import { buildRequest, qemuBiosIpxeDiscover } from '../helpers/dhcp-packets.ts';

const meta: RequestMeta = { iface: { name: 'ibd0', addresses: [{ address: '10.81.60.1', prefix: 24 }] }, port: 'dhcp', from: { address: '0.0.0.0', port: 68 } };

describeStores('dhcp request handling', (backend: StoreBackend) => {
function setup(t: { after: (fn: () => void) => void }, mode: 'reservation' | 'full' = 'reservation') {
  const h = backend.open();
  const store = h.store;
  t.after(h.remove);
  store.machines.create({ mac: '52:54:00:81:3c:01', ipv4: { address: '10.81.60.10', prefix: 24, dns: [] } });
  store.machines.create({ mac: '52:54:00:81:3d:01', ipv4: { address: '10.81.61.10', prefix: 24, gateway: '10.81.61.1', dns: [] } });
  const registry = new Registry();
  const leases = new DhcpLeases(store, { mode, pool: mode === 'full' ? { start: '10.81.60.100', end: '10.81.60.120' } : null, poolPrefix: 24, poolUnknown: true, leaseSeconds: 60, router: null, dns: [] });
  const handle = createRequestHandler({ store, leases, log: pino({ level: 'silent' }), registry, mode, serverPort: 67, publicUrlFor: (a) => `http://${a}:8080` });
  return { store, registry, handle, leases };
}

test('iPXE ROM DISCOVER → OFFER broadcast to 255.255.255.255:68 with the iPXE script URL', (t) => {
  const { handle } = setup(t);
  const out = handle(qemuBiosIpxeDiscover('525400813c01'), meta);
  assert.ok(out);
  assert.deepEqual({ address: out.address, port: out.port, broadcast: out.broadcast }, { address: '255.255.255.255', port: 68, broadcast: true });
  const p = parseDhcpPacket(out.data);
  assert.equal(messageType(p), T.OFFER);
  assert.equal(p.yiaddr, '10.81.60.10');
  assert.equal(p.file, 'http://10.81.60.1:8080/boot/52:54:00:81:3c:01.ipxe');
  assert.equal(p.xid, 0x7c1f2e01);
});

test('relayed request → reply to giaddr:67; the reservation is chosen by the relay subnet', (t) => {
  const { handle } = setup(t);
  const out = handle(buildRequest({ mac: '52:54:00:81:3d:01', type: T.DISCOVER, giaddr: '10.81.61.1' }), meta);
  assert.ok(out);
  assert.deepEqual({ address: out.address, port: out.port }, { address: '10.81.61.1', port: 67 });
  assert.equal(parseDhcpPacket(out.data).yiaddr, '10.81.61.10');
  assert.equal(handle(buildRequest({ mac: '52:54:00:81:3c:01', type: T.DISCOVER, giaddr: '10.81.61.1' }), meta), null, 'reservation on another subnet');
  assert.equal(handle(buildRequest({ mac: '52:54:00:81:3d:01', type: T.DISCOVER }), meta), null, 'not on the direct link');
});

test('RENEW → unicast ACK to ciaddr:68; NAK → broadcast', (t) => {
  const { handle } = setup(t);
  const ack = handle(buildRequest({ mac: '52:54:00:81:3c:01', type: T.REQUEST, ciaddr: '10.81.60.10' }), meta)!;
  assert.deepEqual({ address: ack.address, port: ack.port }, { address: '10.81.60.10', port: 68 });
  assert.equal(messageType(parseDhcpPacket(ack.data)), T.ACK);
  const nak = handle(buildRequest({ mac: '52:54:00:81:3c:01', type: T.REQUEST, ciaddr: '10.81.60.99' }), meta)!;
  assert.equal(messageType(parseDhcpPacket(nak.data)), T.NAK);
  assert.equal(nak.address, '255.255.255.255');
});

test('garbage is counted by reason and dropped; requests counted by type and outcome', async (t) => {
  const { handle, registry } = setup(t);
  assert.equal(handle(Buffer.from('hello'), meta), null);
  assert.equal(handle(qemuBiosIpxeDiscover().subarray(0, 250), meta), null);
  handle(buildRequest({ mac: '52:54:00:81:3c:99', type: T.DISCOVER }), meta);
  const text = await registry.metrics();
  assert.match(text, /ironboot_dhcp_malformed_total\{reason="too-short"\} 1/);
  assert.match(text, /ironboot_dhcp_malformed_total\{reason="option-truncated"\} 1/);
  assert.match(text, /ironboot_dhcp_requests_total\{type="discover",outcome="ignore"\} 1/);
});

test('full mode: the ACK\'s lease is written on flush (group commit), RELEASE too', (t) => {
  const { handle, leases } = setup(t, 'full');
  const offer = parseDhcpPacket(handle(buildRequest({ mac: '52:54:00:81:3e:01', type: T.DISCOVER }), meta)!.data);
  assert.equal(offer.yiaddr, '10.81.60.100');
  handle(buildRequest({ mac: '52:54:00:81:3e:01', type: T.REQUEST, serverId: '10.81.60.1', requested: '10.81.60.100' }), meta);
  assert.equal(leases.dirty, true);
  leases.flush();
  assert.deepEqual(leases.repo.list().map((l) => [l.address, l.mac, l.state]), [['10.81.60.100', '52:54:00:81:3e:01', 'bound']]);
  handle(buildRequest({ mac: '52:54:00:81:3e:01', type: T.RELEASE, serverId: '10.81.60.1', ciaddr: '10.81.60.100' }), meta);
  leases.flush();
  assert.equal(leases.repo.list()[0].state, 'released');
});

test('a machine added through the store is answered on the next packet (no stale cache)', (t) => {
  const { handle, store } = setup(t);
  const req = buildRequest({ mac: '52:54:00:81:3c:02', type: T.DISCOVER });
  assert.equal(handle(req, meta), null);
  store.machines.create({ mac: '52:54:00:81:3c:02', ipv4: { address: '10.81.60.11', prefix: 24, dns: [] } });
  assert.equal(parseDhcpPacket(handle(req, meta)!.data).yiaddr, '10.81.60.11');
  store.machines.update('52:54:00:81:3c:02', { ipv4: { address: '10.81.60.12', prefix: 24, dns: [] } });
  assert.equal(parseDhcpPacket(handle(req, meta)!.data).yiaddr, '10.81.60.12');
});
});
