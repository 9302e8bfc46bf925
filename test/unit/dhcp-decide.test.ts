import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, chooseBoot, classifyClient, type AddressBinding, type DecisionInput } from '../../server/dhcp/decide.ts';
import { parseDhcpPacket, decodeSubOptions, optIp, optString, optU32, MessageType as T, Opt, FLAG_BROADCAST } from '../../server/dhcp/packet.ts';
import type { Machine } from '../../server/store/machines.ts';
import { buildRequest, qemuBiosIpxeDiscover, type RequestSpec } from '../helpers/dhcp-packets.ts';

const MAC = '52:54:00:81:00:10';
const machine = (over: Partial<Machine> = {}): Machine => ({
  id: 1, mac: MAC, hostname: 'node10', ipv4: { address: '10.81.0.10', prefix: 24, gateway: '10.81.0.1', dns: ['10.81.0.53'], domain: 'lab.test' },
  arch: 'auto', efiBinary: 'ipxe.efi', allowPxe: true, labels: {}, createdAt: '', updatedAt: '', ...over,
});
const binding = (over: Partial<AddressBinding> = {}): AddressBinding => ({
  address: '10.81.0.10', prefix: 24, router: '10.81.0.1', dns: ['10.81.0.53'], domain: 'lab.test', hostname: 'node10',
  leaseSeconds: 3600, source: 'reservation', ...over,
});
const boot = { publicUrl: 'http://10.81.0.1:8080', tftpServer: '10.81.0.1' };

function input(req: Partial<RequestSpec> & { type: number }, over: Partial<DecisionInput> = {}): DecisionInput {
  return {
    mode: 'reservation', port: 'dhcp', request: parseDhcpPacket(buildRequest({ mac: MAC, ...req })), mac: MAC,
    machine: machine(), binding: binding(), bindingWhy: 'reservation', serverId: '10.81.0.1', boot, ...over,
  };
}

// ---- boot file by client kind ----------------------------------------------------------------------------
const bootTable: { name: string; req: Partial<RequestSpec>; m?: Partial<Machine>; file: string | null; vendor?: string | null; ipxe175?: boolean; opt43?: boolean }[] = [
  { name: 'PXE BIOS (arch 0)', req: { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 }, file: 'undionly.kpxe', vendor: 'PXEClient', opt43: true },
  { name: 'PXE x64 UEFI (arch 7), ipxe.efi', req: { vendorClass: 'PXEClient:Arch:00007:UNDI:003000', arch: 7 }, file: 'ipxe.efi', vendor: 'PXEClient', opt43: true },
  { name: 'PXE x64 UEFI (arch 9), snponly.efi machine', req: { vendorClass: 'PXEClient:Arch:00009:UNDI:003000', arch: 9 }, m: { efiBinary: 'snponly.efi' }, file: 'snponly.efi', vendor: 'PXEClient' },
  { name: 'PXE arm64 UEFI (arch 11)', req: { vendorClass: 'PXEClient:Arch:00011:UNDI:003000', arch: 11 }, file: 'ipxe-arm64.efi', vendor: 'PXEClient' },
  { name: 'PXE arm64 UEFI, snponly machine', req: { vendorClass: 'PXEClient:Arch:00011:UNDI:003000', arch: 11 }, m: { efiBinary: 'snponly.efi' }, file: 'snponly-arm64.efi' },
  { name: 'PXE ia32 UEFI (arch 6): nothing to boot', req: { vendorClass: 'PXEClient:Arch:00006:UNDI:003000', arch: 6 }, file: null },
  { name: 'PXE without option 93, machine arch uefi-x64', req: { vendorClass: 'PXEClient' }, m: { arch: 'uefi-x64' }, file: 'ipxe.efi' },
  { name: 'machine arch bios overrides option 93 = 7', req: { vendorClass: 'PXEClient:Arch:00007:UNDI:003000', arch: 7 }, m: { arch: 'bios' }, file: 'undionly.kpxe' },
  { name: 'UEFI HTTP boot (arch 16)', req: { vendorClass: 'HTTPClient:Arch:00016:UNDI:003000', arch: 16 }, file: 'http://10.81.0.1:8080/ipxe/ipxe.efi', vendor: 'HTTPClient' },
  { name: 'UEFI HTTP boot arm64 (arch 19)', req: { vendorClass: 'HTTPClient:Arch:00019:UNDI:003000', arch: 19 }, file: 'http://10.81.0.1:8080/ipxe/ipxe-arm64.efi', vendor: 'HTTPClient' },
  { name: 'iPXE (77 raw "iPXE")', req: { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0, userClass: 'iPXE' }, file: `http://10.81.0.1:8080/boot/${MAC}.ipxe`, ipxe175: true, vendor: null },
  { name: 'iPXE (77 RFC 3004)', req: { vendorClass: 'PXEClient:Arch:00007:UNDI:003010', arch: 7, userClass: '\x04iPXE' }, file: `http://10.81.0.1:8080/boot/${MAC}.ipxe`, ipxe175: true },
  { name: 'iPXE (option 175 only)', req: { ipxeEncap: true }, file: `http://10.81.0.1:8080/boot/${MAC}.ipxe`, ipxe175: true },
  { name: 'allow_pxe off: address, no boot file', req: { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 }, m: { allowPxe: false }, file: null },
  { name: 'allow_pxe off, iPXE: no boot file', req: { userClass: 'iPXE' }, m: { allowPxe: false }, file: null },
  { name: 'plain client (udhcpc): address only', req: { vendorClass: 'udhcp 1.35.0' }, file: null },
];
for (const row of bootTable) {
  test(`boot: ${row.name}`, () => {
    const d = decide(input({ type: T.DISCOVER, ...row.req }, { machine: machine(row.m) }));
    assert.equal(d.action, 'reply');
    if (d.action !== 'reply') return;
    assert.equal(d.type, T.OFFER);
    assert.equal(d.reply.yiaddr, '10.81.0.10', 'address given regardless of boot');
    assert.equal(d.reply.file || null, row.file, d.why);
    assert.equal(d.reply.siaddr, row.file ? '10.81.0.1' : '0.0.0.0');
    if (row.vendor !== undefined) assert.equal(optString(d.reply, Opt.VENDOR_CLASS), row.vendor);
    if (row.opt43) assert.deepEqual([...decodeSubOptions(d.reply.options.get(Opt.VENDOR_SPECIFIC)!).get(6)!], [8]);
    if (row.ipxe175) assert.deepEqual([...decodeSubOptions(d.reply.options.get(Opt.IPXE_ENCAP)!).get(176)!], [1]);
    else assert.equal(d.reply.options.has(Opt.IPXE_ENCAP), false);
    assert.match(d.why, /\w/);
  });
}

test('boot: the captured iPXE ROM DISCOVER gets the per-MAC iPXE script URL and no-pxedhcp', () => {
  const req = parseDhcpPacket(qemuBiosIpxeDiscover('525400811011'));
  const c = classifyClient(req);
  assert.deepEqual({ pxe: c.pxe, ipxe: c.ipxe, arch: c.archCode }, { pxe: true, ipxe: true, arch: 0 });
  const r = chooseBoot(c, machine({ mac: '52:54:00:81:10:11' }), boot);
  assert.equal(r.boot?.file, 'http://10.81.0.1:8080/boot/52:54:00:81:10:11.ipxe');
  assert.equal(r.boot?.ipxeNoProxyDhcp, true);
});

test('reply carries address options: mask, router, DNS, domain, hostname, lease/T1/T2, server id', () => {
  const d = decide(input({ type: T.DISCOVER }));
  assert.equal(d.action, 'reply');
  if (d.action !== 'reply') return;
  const r = d.reply;
  assert.equal(optIp(r, Opt.SUBNET_MASK), '255.255.255.0');
  assert.equal(optIp(r, Opt.ROUTER), '10.81.0.1');
  assert.equal(optIp(r, Opt.DNS), '10.81.0.53');
  assert.equal(optString(r, Opt.DOMAIN_NAME), 'lab.test');
  assert.equal(optString(r, Opt.HOSTNAME), 'node10');
  assert.equal(optU32(r, Opt.LEASE_TIME), 3600);
  assert.equal(optU32(r, Opt.RENEWAL_TIME), 1800);
  assert.equal(optU32(r, Opt.REBINDING_TIME), 3150);
  assert.equal(optIp(r, Opt.SERVER_ID), '10.81.0.1');
  assert.deepEqual(d.lease, { kind: 'offer', address: '10.81.0.10' });
});

// ---- message flow and modes ----------------------------------------------------------------------------
type Row = { name: string; req: Partial<RequestSpec> & { type: number }; over?: Partial<DecisionInput>; expect: 'ignore' | number; lease?: string };
const flow: Row[] = [
  { name: 'reservation: unknown MAC DISCOVER ignored', req: { type: T.DISCOVER }, over: { machine: null, binding: null, bindingWhy: 'unknown MAC (reservation mode)' }, expect: 'ignore' },
  { name: 'reservation: registered without reservation ignored', req: { type: T.DISCOVER }, over: { machine: machine({ ipv4: null }), binding: null }, expect: 'ignore' },
  { name: 'full: unknown MAC with a pool address → OFFER', req: { type: T.DISCOVER }, over: { mode: 'full', machine: null, binding: binding({ source: 'pool', address: '10.81.0.100' }) }, expect: T.OFFER, lease: 'offer' },
  { name: 'REQUEST selecting us with the offered address → ACK, bind', req: { type: T.REQUEST, serverId: '10.81.0.1', requested: '10.81.0.10' }, expect: T.ACK, lease: 'bind' },
  { name: 'REQUEST selecting another server → ignore', req: { type: T.REQUEST, serverId: '10.81.0.2', requested: '10.81.0.10' }, expect: 'ignore' },
  { name: 'REQUEST selecting another server, pool offer → unoffer', req: { type: T.REQUEST, serverId: '10.81.0.2', requested: '10.81.0.100' }, over: { mode: 'full', binding: binding({ source: 'pool', address: '10.81.0.100' }) }, expect: 'ignore', lease: 'unoffer' },
  { name: 'REQUEST selecting us for another address → NAK', req: { type: T.REQUEST, serverId: '10.81.0.1', requested: '10.81.0.99' }, expect: T.NAK },
  { name: 'REQUEST selecting us, no address for client → NAK', req: { type: T.REQUEST, serverId: '10.81.0.1', requested: '10.81.0.10' }, over: { binding: null }, expect: T.NAK },
  { name: 'INIT-REBOOT right address → ACK', req: { type: T.REQUEST, requested: '10.81.0.10' }, expect: T.ACK, lease: 'bind' },
  { name: 'INIT-REBOOT wrong address (moved) → NAK', req: { type: T.REQUEST, requested: '192.168.1.5' }, expect: T.NAK },
  { name: 'INIT-REBOOT unknown client → silence', req: { type: T.REQUEST, requested: '10.81.0.10' }, over: { machine: null, binding: null }, expect: 'ignore' },
  { name: 'RENEW right ciaddr → ACK', req: { type: T.REQUEST, ciaddr: '10.81.0.10' }, expect: T.ACK, lease: 'bind' },
  { name: 'RENEW wrong ciaddr → NAK', req: { type: T.REQUEST, ciaddr: '10.81.0.77' }, expect: T.NAK },
  { name: 'RELEASE of a pool lease → release', req: { type: T.RELEASE, ciaddr: '10.81.0.100', serverId: '10.81.0.1' }, over: { mode: 'full', binding: binding({ source: 'pool', address: '10.81.0.100' }) }, expect: 'ignore', lease: 'release' },
  { name: 'RELEASE of a reservation → nothing to do', req: { type: T.RELEASE, ciaddr: '10.81.0.10', serverId: '10.81.0.1' }, expect: 'ignore', lease: 'none' },
  { name: 'DECLINE of a pool address → quarantine', req: { type: T.DECLINE, requested: '10.81.0.100', serverId: '10.81.0.1' }, over: { mode: 'full', binding: binding({ source: 'pool', address: '10.81.0.100' }) }, expect: 'ignore', lease: 'decline' },
  { name: 'INFORM from a known machine → ACK without address', req: { type: T.INFORM, ciaddr: '10.81.0.10' }, expect: T.ACK, lease: 'none' },
  { name: 'INFORM from an unknown MAC → ignore', req: { type: T.INFORM, ciaddr: '10.81.0.10' }, over: { machine: null, binding: null }, expect: 'ignore' },
  { name: 'proxy: PXE DISCOVER on 67 → OFFER without address', req: { type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 }, over: { mode: 'proxy', binding: null }, expect: T.OFFER },
  { name: 'proxy: non-PXE DISCOVER ignored', req: { type: T.DISCOVER, vendorClass: 'udhcp 1.35.0' }, over: { mode: 'proxy', binding: null }, expect: 'ignore' },
  { name: 'proxy: unknown MAC ignored', req: { type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00000:UNDI:002001' }, over: { mode: 'proxy', machine: null, binding: null }, expect: 'ignore' },
  { name: 'proxy: allow_pxe off ignored', req: { type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00000:UNDI:002001' }, over: { mode: 'proxy', machine: machine({ allowPxe: false }), binding: null }, expect: 'ignore' },
  { name: 'proxy: REQUEST on 67 left to the address server', req: { type: T.REQUEST, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', serverId: '10.81.0.254', requested: '10.81.0.150' }, over: { mode: 'proxy', binding: null }, expect: 'ignore' },
  { name: 'proxy: REQUEST on 4011 → ACK with boot file', req: { type: T.REQUEST, vendorClass: 'PXEClient:Arch:00007:UNDI:003000', arch: 7, ciaddr: '10.81.0.150' }, over: { mode: 'proxy', port: 'proxy', binding: null }, expect: T.ACK },
  { name: 'BOOTP without option 53 ignored', req: { type: 0 }, expect: 'ignore' },
];
for (const row of flow) {
  test(`flow: ${row.name}`, () => {
    const i = input(row.req, row.over);
    if (row.req.type === 0) i.request.options.delete(Opt.MESSAGE_TYPE);
    const d = decide(i);
    if (row.expect === 'ignore') assert.equal(d.action, 'ignore', d.why);
    else {
      assert.equal(d.action, 'reply', d.why);
      if (d.action === 'reply') assert.equal(d.type, row.expect, d.why);
    }
    if (row.lease) assert.equal(d.lease.kind, row.lease);
    assert.ok(d.why.length > 5);
  });
}

test('proxy offers: yiaddr 0, boot file, option 60 PXEClient, option 43, option 97 echoed', () => {
  const i = input({ type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 }, { mode: 'proxy', binding: null });
  i.request.options.set(Opt.UUID_GUID, Buffer.from([0, ...Array(16).fill(7)]));
  const d = decide(i);
  assert.equal(d.action, 'reply');
  if (d.action !== 'reply') return;
  assert.equal(d.reply.yiaddr, '0.0.0.0');
  assert.equal(d.reply.file, 'undionly.kpxe');
  assert.equal(d.reply.siaddr, '10.81.0.1');
  assert.equal(optString(d.reply, Opt.VENDOR_CLASS), 'PXEClient');
  assert.ok(d.reply.options.has(Opt.VENDOR_SPECIFIC));
  assert.equal(d.reply.options.get(Opt.UUID_GUID)!.length, 17);
  assert.equal(d.reply.options.has(Opt.LEASE_TIME), false);
});

test('INFORM ACK has options but no yiaddr or lease time', () => {
  const d = decide(input({ type: T.INFORM, ciaddr: '10.81.0.10' }));
  assert.equal(d.action, 'reply');
  if (d.action !== 'reply') return;
  assert.equal(d.reply.yiaddr, '0.0.0.0');
  assert.equal(d.reply.options.has(Opt.LEASE_TIME), false);
  assert.equal(optIp(d.reply, Opt.ROUTER), '10.81.0.1');
});

test('a NAK through a relay sets the broadcast bit and keeps giaddr', () => {
  const d = decide(input({ type: T.REQUEST, requested: '192.168.1.5', giaddr: '10.81.9.1' }));
  assert.equal(d.action, 'reply');
  if (d.action !== 'reply') return;
  assert.equal(d.type, T.NAK);
  assert.equal(d.reply.giaddr, '10.81.9.1');
  assert.ok(d.reply.flags & FLAG_BROADCAST);
  assert.equal(d.reply.yiaddr, '0.0.0.0');
});

// ---- relays: allowlist and option 82 -----------------------------------------------------------------------
const withAgent = (agent: Buffer, giaddr = '10.81.0.254') => {
  const req = parseDhcpPacket(buildRequest({ mac: MAC, type: T.DISCOVER, giaddr }));
  req.options.set(Opt.RELAY_AGENT, agent);
  return req;
};

test('option 82: echoed unchanged as the last option of OFFER, ACK and NAK; a malformed one is ignored', () => {
  const agent = Buffer.from([1, 3, 0x65, 0x74, 0x30, 2, 2, 0xbe, 0xef]);
  const offer = decide({ ...input({ type: T.DISCOVER }), request: withAgent(agent) });
  assert.equal(offer.action, 'reply');
  if (offer.action !== 'reply') return;
  assert.deepEqual(offer.reply.options.get(Opt.RELAY_AGENT), agent);
  assert.equal([...offer.reply.options.keys()].at(-1), Opt.RELAY_AGENT);
  const badReq = parseDhcpPacket(buildRequest({ mac: MAC, type: T.REQUEST, serverId: '10.81.0.1', requested: '10.81.0.99', giaddr: '10.81.0.254' }));
  badReq.options.set(Opt.RELAY_AGENT, agent);
  const nakd = decide({ ...input({ type: T.REQUEST }), request: badReq });
  assert.equal(nakd.action === 'reply' && nakd.type, T.NAK);
  assert.deepEqual(nakd.action === 'reply' && nakd.reply.options.get(Opt.RELAY_AGENT), agent);
  for (const bad of [Buffer.alloc(0), Buffer.from([1]), Buffer.from([1, 0]), Buffer.from([1, 5, 1, 2])]) {
    const d = decide({ ...input({ type: T.DISCOVER }), request: withAgent(bad) });
    assert.equal(d.action, 'ignore');
    assert.match(d.why, /malformed relay agent information/);
  }
  // no option 82 in the request: none in the reply
  const plain = decide(input({ type: T.DISCOVER, giaddr: '10.81.0.254' }));
  assert.equal(plain.action === 'reply' && plain.reply.options.has(Opt.RELAY_AGENT), false);
});

test('relay allowlist: relays inside it are served, others ignored; direct clients and no list are unaffected', () => {
  const allowed = [{ address: '10.81.0.0', prefix: 24 }, { address: '10.99.0.7', prefix: 32 }];
  const via = (giaddr: string) => decide(input({ type: T.DISCOVER, giaddr }, { allowedRelays: allowed }));
  assert.equal(via('10.81.0.254').action, 'reply');
  assert.equal(via('10.99.0.7').action, 'reply');
  const refused = via('10.99.0.8');
  assert.equal(refused.action, 'ignore');
  assert.equal(refused.why, 'relay 10.99.0.8 is not an allowed relay (--dhcp-relay)');
  assert.equal(decide(input({ type: T.DISCOVER }, { allowedRelays: allowed })).action, 'reply');
  assert.equal(decide(input({ type: T.DISCOVER, giaddr: '10.99.0.8' }, { allowedRelays: null })).action, 'reply');
});

// ---- ironboot's iPXE with HTTPS and the operator's CA (ironboot artifacts ipxe) --------------------------------
const httpsBoot = { ...boot, ipxeHttpsUrl: 'https://10.81.0.1:8443' };

test('boot, verifying iPXE served: ironboot\'s iPXE (option 77 "ironboot") gets the HTTPS script URL', () => {
  const d = decide(input({ type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0, userClass: 'ironboot', ipxeEncap: true }, { boot: httpsBoot }));
  assert.equal(d.action, 'reply');
  if (d.action !== 'reply') return;
  assert.equal(d.reply.file, `https://10.81.0.1:8443/boot/${MAC}.ipxe`);
  assert.deepEqual([...decodeSubOptions(d.reply.options.get(Opt.IPXE_ENCAP)!).get(176)!], [1]);
  assert.match(d.why, /ironboot's iPXE/);
});

test('boot, verifying iPXE served: a NIC\'s iPXE ROM (with HTTPS, but not ironboot\'s) chains undionly.kpxe / ipxe.efi over TFTP', () => {
  // an iPXE that announces HTTPS (175 sub-option 0x14, as this captured DISCOVER does) but is not ironboot's: other roots
  const rom = parseDhcpPacket(qemuBiosIpxeDiscover('525400811011'));
  const c = classifyClient(rom);
  assert.deepEqual({ ipxe: c.ipxe, ipxeHttps: c.ipxeHttps, ironbootIpxe: c.ironbootIpxe }, { ipxe: true, ipxeHttps: true, ironbootIpxe: false });
  const r = chooseBoot(c, machine({ mac: '52:54:00:81:10:11' }), httpsBoot);
  assert.equal(r.boot?.file, 'undionly.kpxe');
  assert.equal(r.boot?.vendorClass, 'PXEClient');
  assert.match(r.boot?.why ?? '', /not ironboot's \(it has HTTPS, but not the operator's CA/);
  const uefi = chooseBoot(classifyClient(parseDhcpPacket(buildRequest({ mac: MAC, type: T.DISCOVER, vendorClass: 'PXEClient:Arch:00007:UNDI:003010', arch: 7, userClass: 'iPXE' }))), machine(), httpsBoot);
  assert.equal(uefi.boot?.file, 'ipxe.efi');
  // without a verifying iPXE, every iPXE keeps the plain-HTTP script as before
  assert.equal(chooseBoot(c, machine({ mac: '52:54:00:81:10:11' }), boot).boot?.file, 'http://10.81.0.1:8080/boot/52:54:00:81:10:11.ipxe');
  assert.equal(classifyClient(parseDhcpPacket(buildRequest({ mac: MAC, type: T.DISCOVER, userClass: 'iPXE' }))).ipxeHttps, false, 'no option 175: no HTTPS feature');
});
