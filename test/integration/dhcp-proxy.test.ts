/**
 * proxy mode beside dnsmasq on the same interface of the same namespace: clients get their address from
 * dnsmasq and their boot file from ironboot (proxy OFFER on 67, boot server ACK on 4011).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, setMac, tempDir, type RunningServer } from '../helpers/dhcp-lab.ts';

const skip = netnsUnavailable('busybox', 'dnsmasq');
const PXE = '52:54:00:81:1f:01';
const ROOT = join(import.meta.dirname, '..', '..');

let lab: Lab;
let srv: Namespace, cli: Namespace;
let server: RunningServer;
let dnsmasqLog = '';

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibd');
  srv = lab.ns('srv'); cli = lab.ns('cli');
  lab.veth(srv, '10.81.31.1/24', cli, null, ['ibds1', 'ibdc1']);
  setMac(cli, 'ibdc1', PXE);
  const dir = tempDir('proxy');
  const dm = srv.spawn('dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--user=root', '--group=root', '--port=0',
    '--interface=ibds1', '--bind-interfaces', '--dhcp-range=10.81.31.100,10.81.31.150,255.255.255.0,1h', '--dhcp-authoritative',
    `--dhcp-leasefile=${dir}/dnsmasq.leases`, `--pid-file=${dir}/dnsmasq.pid`, '--no-ping', '--log-dhcp', '--log-facility=-']);
  dm.stderr!.on('data', (d) => { dnsmasqLog += d; });
  await new Promise((r) => setTimeout(r, 300));
  server = await startDhcpRunner(srv, {
    dataDir: join(dir, 'data'), machines: [{ mac: PXE, hostname: 'pxe1' }],
    args: ['--dhcp-interface', 'ibds1', '--dhcp-mode', 'proxy', '--public-url', 'http://10.81.31.1:8080', '--log-level', 'debug'],
  });
});

after(async () => {
  if (server) await server.stop();
  if (lab) await lab.destroy();
});

test('proxy mode: udhcpc gets its address from dnsmasq; ironboot stays silent for a non-PXE client', { skip }, async () => {
  const r = await runUdhcpc(cli, 'ibdc1', [], { configure: true });
  assert.ok(r.bound, `${r.log}\n${dnsmasqLog}`);
  assert.match(r.bound.ip, /^10\.81\.31\.1\d\d$/);
  assert.equal(r.bound.boot_file, undefined);
  assert.match(server.stderr(), /proxy: not a PXE client/);
});

test('proxy mode: a PXE client gets dnsmasq\'s address offer and ironboot\'s boot offer, then the 4011 ACK', { skip }, async () => {
  const offers = JSON.parse(cli.exec(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/dhcp-pxe-client.ts'), 'ibdc1', PXE, 'discover'])) as
    { type: number; yiaddr: string; siaddr: string; file: string; serverId: string; vendorClass: string | null; pxeDiscoveryControl: number | null }[];
  const address = offers.find((o) => o.type === 2 && o.yiaddr !== '0.0.0.0');
  const boot = offers.find((o) => o.type === 2 && o.yiaddr === '0.0.0.0');
  assert.ok(address, `dnsmasq offered an address: ${JSON.stringify(offers)}\n${dnsmasqLog}`);
  assert.equal(address.file, '', 'dnsmasq gives no boot file here');
  assert.ok(boot, `ironboot sent a proxy offer: ${JSON.stringify(offers)}`);
  assert.equal(boot.file, 'undionly.kpxe');
  assert.equal(boot.siaddr, '10.81.31.1');
  assert.equal(boot.vendorClass, 'PXEClient');
  assert.equal(boot.pxeDiscoveryControl, 8);

  const ip = cli.ip('-4', '-o', 'addr', 'show', 'dev', 'ibdc1').match(/inet (\S+)\//)?.[1];
  assert.ok(ip, 'client has its dnsmasq address from the previous test');
  const acks = JSON.parse(cli.exec(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/dhcp-pxe-client.ts'), 'ibdc1', PXE, 'request', '10.81.31.1', ip])) as { type: number; file: string; yiaddr: string }[];
  assert.equal(acks.length, 1, JSON.stringify(acks));
  assert.equal(acks[0].type, 5);
  assert.equal(acks[0].file, 'undionly.kpxe');
  assert.equal(acks[0].yiaddr, '0.0.0.0');
});
