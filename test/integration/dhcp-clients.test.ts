/**
 * Real DHCP clients (busybox udhcpc, ISC dhclient) against `ironboot serve`'s DHCP service in reservation mode,
 * in network namespaces: reserved address and options, PXE boot files, unknown MAC, two interfaces, a relay.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, runDhclient, setMac, tempDir, metricValue, type RunningServer } from '../helpers/dhcp-lab.ts';

const skip = netnsUnavailable('busybox', 'dhclient', 'dhcrelay');

const KNOWN = '52:54:00:81:01:10';
const NOPXE = '52:54:00:81:01:11';
const UNKNOWN = '52:54:00:81:01:99';
const OTHER_SIDE = '52:54:00:81:02:10';
const REMOTE = '52:54:00:81:0c:10';

const machines = [
  { mac: KNOWN, hostname: 'node110', ipv4: { address: '10.81.1.10', prefix: 24, gateway: '10.81.1.1', dns: ['10.81.1.53', '10.81.1.54'], domain: 'ibd.test', leaseSeconds: 900 } },
  { mac: NOPXE, hostname: 'nopxe', allowPxe: false, ipv4: { address: '10.81.1.11', prefix: 24, dns: [] } },
  // registered, but on the interface the server must not serve
  { mac: OTHER_SIDE, hostname: 'other', ipv4: { address: '10.81.2.10', prefix: 24, dns: [] } },
  // behind the relay (10.81.12.0/24)
  { mac: REMOTE, hostname: 'remote', ipv4: { address: '10.81.12.10', prefix: 24, gateway: '10.81.12.1', dns: [] } },
];

let lab: Lab;
let srv: Namespace, cli: Namespace, cli2: Namespace, relay: Namespace, far: Namespace;
let cliIf: string, cli2If: string, farIf: string;
let server: RunningServer;

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibd');
  srv = lab.ns('srv'); cli = lab.ns('cli'); cli2 = lab.ns('cli2'); relay = lab.ns('rly'); far = lab.ns('far');
  // served link 10.81.1.0/24
  const [srvIf1, c1] = lab.veth(srv, '10.81.1.1/24', cli, null, ['ibds1', 'ibdc1']);
  // a second server interface that is NOT configured for DHCP, 10.81.2.0/24, holding the default route (the case
  // where a plain dgram socket's broadcast would leave by the wrong interface)
  const [, c2] = lab.veth(srv, '10.81.2.1/24', cli2, '10.81.2.2/24', ['ibds2', 'ibdc2']);
  srv.ip('route', 'add', 'default', 'via', '10.81.2.2', 'dev', 'ibds2');
  // relay: srv 10.81.11.1 <-> 10.81.11.2 relay 10.81.12.1 <-> far client
  lab.veth(srv, '10.81.11.1/24', relay, '10.81.11.2/24', ['ibds3', 'ibdr1']);
  const [, f] = lab.veth(relay, '10.81.12.1/24', far, null, ['ibdr2', 'ibdf1']);
  relay.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  srv.ip('route', 'add', '10.81.12.0/24', 'via', '10.81.11.2', 'dev', 'ibds3');
  cliIf = c1; cli2If = c2; farIf = f;
  void srvIf1;
  server = await startDhcpRunner(srv, {
    dataDir: tempDir('clients'), machines,
    args: ['--dhcp-interface', 'ibds1', '--dhcp-interface', 'ibds3', '--public-url', 'http://10.81.1.1:8080', '--log-level', 'debug'],
  });
});

after(async () => {
  if (server) await server.stop();
  if (lab) await lab.destroy();
});

test('busybox udhcpc gets the reserved address and its options', { skip }, async () => {
  setMac(cli, cliIf, KNOWN);
  const r = await runUdhcpc(cli, cliIf);
  assert.ok(r.bound, `no lease: ${r.log}`);
  const e = r.bound;
  assert.equal(e.ip, '10.81.1.10');
  assert.equal(e.subnet, '255.255.255.0');
  assert.equal(e.router, '10.81.1.1');
  assert.equal(e.dns, '10.81.1.53 10.81.1.54');
  assert.equal(e.domain, 'ibd.test');
  assert.equal(e.hostname, 'node110');
  assert.equal(e.lease, '900');
  assert.equal(e.serverid, '10.81.1.1');
  assert.equal(e.boot_file, undefined, 'plain udhcpc is not a PXE client: no boot file');
});

test('ISC dhclient gets the reserved address and its options', { skip }, async () => {
  setMac(cli, cliIf, KNOWN);
  const r = await runDhclient(cli, cliIf);
  assert.ok(r.bound, `no lease: ${r.log}`);
  const e = r.bound;
  assert.equal(e.new_ip_address, '10.81.1.10');
  assert.equal(e.new_subnet_mask, '255.255.255.0');
  assert.equal(e.new_routers, '10.81.1.1');
  assert.equal(e.new_domain_name_servers, '10.81.1.53 10.81.1.54');
  assert.equal(e.new_domain_name, 'ibd.test');
  assert.equal(e.new_host_name, 'node110');
  assert.equal(e.new_dhcp_lease_time, '900');
  assert.equal(e.new_dhcp_server_identifier, '10.81.1.1');
});

const pxeCases: [string, string[], string][] = [
  ['PXE BIOS (option 60 + 93 = 0)', ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '0x5d:0000'], 'undionly.kpxe'],
  ['PXE x64 UEFI (93 = 7)', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007'], 'ipxe.efi'],
  ['iPXE (77 "iPXE")', ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '0x5d:0000', '-x', '0x4d:69505845'], `http://10.81.1.1:8080/boot/${KNOWN}.ipxe`],
  ['UEFI HTTP boot (60 HTTPClient, 93 = 16)', ['-V', 'HTTPClient:Arch:00016:UNDI:003000', '-x', '0x5d:0010'], 'http://10.81.1.1:8080/ipxe/ipxe.efi'],
];
for (const [name, args, file] of pxeCases) {
  test(`udhcpc with ${name} gets boot file ${file} and next-server`, { skip }, async () => {
    setMac(cli, cliIf, KNOWN);
    const r = await runUdhcpc(cli, cliIf, args);
    assert.ok(r.bound, `no lease: ${r.log}`);
    assert.equal(r.bound.ip, '10.81.1.10');
    assert.equal(r.bound.boot_file, file);
    assert.equal(r.bound.siaddr, '10.81.1.1');
  });
}

test('allow_pxe off: a PXE client gets its address but no boot file', { skip }, async () => {
  setMac(cli, cliIf, NOPXE);
  const r = await runUdhcpc(cli, cliIf, ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '0x5d:0000']);
  assert.equal(r.bound?.ip, '10.81.1.11', r.log);
  assert.equal(r.bound?.boot_file, undefined);
});

test('reservation mode: an unknown MAC gets nothing', { skip }, async () => {
  setMac(cli, cliIf, UNKNOWN);
  const before = metricValue(await server.metrics(), 'ironboot_dhcp_requests_total', { type: 'discover', outcome: 'ignore' });
  const r = await runUdhcpc(cli, cliIf, [], { tries: 2 });
  assert.equal(r.bound, null);
  assert.notEqual(r.exitCode, 0);
  const afterText = await server.metrics();
  assert.ok(metricValue(afterText, 'ironboot_dhcp_requests_total', { type: 'discover', outcome: 'ignore' }) >= before + 2, 'DISCOVERs seen and counted as ignored');
  assert.match(server.stderr(), new RegExp(`"mac":"${UNKNOWN}".*unknown MAC`));
});

test('two interfaces: requests on the interface not configured are never answered', { skip }, async () => {
  setMac(cli2, cli2If, OTHER_SIDE);
  cli2.ip('addr', 'flush', 'dev', cli2If);
  const seenBefore = (server.stderr().match(new RegExp(OTHER_SIDE, 'g')) ?? []).length;
  const r = await runUdhcpc(cli2, cli2If, [], { tries: 2 });
  assert.equal(r.bound, null, 'no answer on ibds2');
  assert.equal((server.stderr().match(new RegExp(OTHER_SIDE, 'g')) ?? []).length, seenBefore, 'the service never even saw the request');
});

test('relay (isc-dhcp-relay dhcrelay): the far client gets its reservation on the relay subnet', { skip }, async () => {
  setMac(far, farIf, REMOTE);
  const dr = relay.spawn('dhcrelay', ['-4', '-d', '-q', '-iu', 'ibdr1', '-id', 'ibdr2', '10.81.11.1']);
  let drLog = '';
  dr.stderr!.on('data', (d) => { drLog += d; });
  dr.stdout!.on('data', (d) => { drLog += d; });
  await new Promise((r) => setTimeout(r, 500));
  try {
    const r = await runUdhcpc(far, farIf, ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '0x5d:0000']);
    assert.ok(r.bound, `no lease through the relay: ${r.log}\n${drLog}`);
    assert.equal(r.bound.ip, '10.81.12.10');
    assert.equal(r.bound.router, '10.81.12.1');
    assert.equal(r.bound.serverid, '10.81.11.1');
    assert.equal(r.bound.boot_file, 'undionly.kpxe');
    assert.match(server.stderr(), /"relay":"10\.81\.12\.1"/);
  } finally {
    dr.kill('SIGTERM');
  }
});
