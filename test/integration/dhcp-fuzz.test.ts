/**
 * Fuzz: tens of thousands of random, truncated and mutated packets at the DHCP service, then a valid client
 * still gets its lease and the daemon is still up; the garbage is counted.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, setMac, tempDir, metricValue, type RunningServer } from '../helpers/dhcp-lab.ts';

const skip = netnsUnavailable('busybox');
const KNOWN = '52:54:00:81:29:01';
const ROOT = join(import.meta.dirname, '..', '..');

let lab: Lab;
let srv: Namespace, cli: Namespace;
let server: RunningServer;

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibd');
  srv = lab.ns('srv'); cli = lab.ns('cli');
  lab.veth(srv, '10.81.41.1/24', cli, '10.81.41.2/24', ['ibds1', 'ibdc1']);
  setMac(cli, 'ibdc1', KNOWN);
  server = await startDhcpRunner(srv, {
    dataDir: join(tempDir('fuzz'), 'data'),
    machines: [{ mac: KNOWN, hostname: 'fuzzed', ipv4: { address: '10.81.41.10', prefix: 24, dns: [] } }],
    args: ['--dhcp-interface', 'ibds1', '--log-level', 'info'],
  });
});

after(async () => {
  if (server) await server.stop();
  if (lab) await lab.destroy();
});

test('fuzz: 30,000 garbage packets, then a valid client still gets its lease', { skip }, async () => {
  const out = JSON.parse(cli.exec(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/dhcp-fuzz-sender.ts'), '10.81.41.1', '10.81.41.255', '30000', '4242'])) as { sent: number; errors: number };
  assert.ok(out.sent > 25000, JSON.stringify(out));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(server.proc.exitCode, null, `daemon still running: ${server.stderr().slice(-2000)}`);
  const metrics = await server.metrics();
  const malformed = metricValue(metrics, 'ironboot_dhcp_malformed_total');
  const handled = metricValue(metrics, 'ironboot_dhcp_requests_total');
  assert.ok(malformed > 5000, `malformed counted: ${malformed}`);
  assert.ok(handled > 3000, `decodable ones handled: ${handled}`);
  assert.equal(metricValue(metrics, 'ironboot_dhcp_requests_total', { outcome: 'error' }), 0, 'no handler errors');
  assert.doesNotMatch(server.stderr(), /"level":(50|60)/, 'nothing logged at error level');

  cli.ip('addr', 'flush', 'dev', 'ibdc1');
  const r = await runUdhcpc(cli, 'ibdc1');
  assert.equal(r.bound?.ip, '10.81.41.10', r.log);
  assert.equal(server.proc.exitCode, null);
});
