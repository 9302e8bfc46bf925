/**
 * Full mode with real udhcpc clients: a pool lease is given, renewed, released; a DECLINEd address (someone on
 * the link already uses it) is quarantined; leases survive a restart of the daemon.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, startUdhcpc, setMac, tempDir, waitFor, metricValue, type RunningServer } from '../helpers/dhcp-lab.ts';

const skip = netnsUnavailable('busybox');

const REGISTERED = '52:54:00:81:15:01';
const UNKNOWN_B = '52:54:00:81:15:0b';
const UNKNOWN_C = '52:54:00:81:15:0c';
const UNKNOWN_D = '52:54:00:81:15:0d';

let lab: Lab;
let srv: Namespace, cli: Namespace, sq: Namespace;
let server: RunningServer;
let dataDir: string;
const serveArgs = ['--dhcp-interface', 'ibdbr', '--dhcp-mode', 'full', '--dhcp-pool', '10.81.21.100-10.81.21.110', '--dhcp-pool-unknown',
  '--dhcp-router', '10.81.21.1', '--dhcp-dns', '10.81.21.53', '--dhcp-lease-time', '120', '--log-level', 'debug'];

function leaseRows(): { address: string; mac: string | null; state: string; expires_at: number }[] {
  const db = new Database(join(dataDir, 'ironboot.db'), { readonly: true, fileMustExist: true });
  try { return db.prepare('SELECT address, mac, state, expires_at FROM dhcp_leases ORDER BY address').all() as never; } finally { db.close(); }
}

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibd');
  srv = lab.ns('srv'); cli = lab.ns('cli'); sq = lab.ns('sq');
  lab.veth(srv, null, cli, null, ['ibds1', 'ibdc1']);
  lab.veth(srv, null, sq, '10.81.21.101/24', ['ibds2', 'ibdq1']); // a squatter already using 10.81.21.101
  srv.ip('link', 'add', 'ibdbr', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  srv.ip('link', 'set', 'ibds1', 'master', 'ibdbr');
  srv.ip('link', 'set', 'ibds2', 'master', 'ibdbr');
  srv.ip('addr', 'add', '10.81.21.1/24', 'dev', 'ibdbr');
  srv.ip('link', 'set', 'ibdbr', 'up');
  dataDir = tempDir('full');
  server = await startDhcpRunner(srv, { dataDir, machines: [{ mac: REGISTERED, hostname: 'pooled' }], args: serveArgs });
});

after(async () => {
  if (server) await server.stop();
  if (lab) await lab.destroy();
});

test('full mode: lease from the pool, renew, release — persisted at each step', { skip }, async () => {
  setMac(cli, 'ibdc1', REGISTERED);
  const c = startUdhcpc(cli, 'ibdc1', [], { configure: true });
  try {
    const bound = await waitFor(() => c.events().find((e) => e.EVENT === 'bound'), 'bound', 15000);
    assert.equal(bound.ip, '10.81.21.100');
    assert.equal(bound.router, '10.81.21.1');
    assert.equal(bound.dns, '10.81.21.53');
    assert.equal(bound.lease, '120');
    assert.equal(bound.hostname, 'pooled');
    const row1 = leaseRows().find((r) => r.address === '10.81.21.100');
    assert.equal(row1?.mac, REGISTERED);
    assert.equal(row1?.state, 'bound');

    await new Promise((r) => setTimeout(r, 50));
    c.proc.kill('SIGUSR1'); // renew (unicast REQUEST with ciaddr)
    const renew = await waitFor(() => c.events().find((e) => e.EVENT === 'renew'), 'renew', 15000);
    assert.equal(renew.ip, '10.81.21.100');
    const row2 = leaseRows().find((r) => r.address === '10.81.21.100')!;
    assert.ok(row2.expires_at > row1!.expires_at, 'renewal extended the persisted lease');
    assert.match(server.stderr(), /ACK 10\.81\.21\.100 \(renew\/rebind, pool\)/);

    c.proc.kill('SIGUSR2'); // release
    await waitFor(() => leaseRows().find((r) => r.address === '10.81.21.100' && r.state === 'released'), 'released row', 10000);
    assert.ok(metricValue(await server.metrics(), 'ironboot_dhcp_requests_total', { type: 'release', outcome: 'release' }) >= 1);
  } finally {
    c.proc.kill('SIGTERM');
  }
});

test('full mode: an address found in use (client DECLINE after ARP) is quarantined and another given', { skip }, async () => {
  setMac(cli, 'ibdc1', UNKNOWN_C);
  cli.ip('addr', 'flush', 'dev', 'ibdc1');
  const r = await runUdhcpc(cli, 'ibdc1', ['-a'], { tries: 5, timeoutMs: 30000 });
  assert.ok(r.bound, r.log);
  assert.notEqual(r.bound.ip, '10.81.21.101');
  const declined = leaseRows().find((x) => x.address === '10.81.21.101');
  assert.equal(declined?.state, 'declined', `rows: ${JSON.stringify(leaseRows())}\n${r.log}`);
  assert.ok(metricValue(await server.metrics(), 'ironboot_dhcp_requests_total', { type: 'decline', outcome: 'decline' }) >= 1);
});

test('full mode: leases survive a daemon restart', { skip }, async () => {
  setMac(cli, 'ibdc1', UNKNOWN_B);
  cli.ip('addr', 'flush', 'dev', 'ibdc1');
  const first = await runUdhcpc(cli, 'ibdc1');
  assert.ok(first.bound, first.log);
  const addrB = first.bound.ip;

  await server.stop();
  server = await startDhcpRunner(srv, { dataDir, args: serveArgs });

  setMac(cli, 'ibdc1', UNKNOWN_D);
  const other = await runUdhcpc(cli, 'ibdc1');
  assert.ok(other.bound, other.log);
  assert.notEqual(other.bound.ip, addrB, 'a lease from before the restart is not given to someone else');
  assert.notEqual(other.bound.ip, '10.81.21.101', 'quarantine survives the restart too');

  setMac(cli, 'ibdc1', UNKNOWN_B);
  const again = await runUdhcpc(cli, 'ibdc1');
  assert.equal(again.bound?.ip, addrB, 'same client, same address after the restart');
});
