/**
 * Relayed DHCP against `ironboot serve`: option 82 (relay agent information, RFC 3046) and the relay allowlist
 * (--dhcp-relay), with isc-dhcp-relay's dhcrelay inserting option 82 (-a) for a real udhcpc client, and a crafted
 * relay that shows what a relay gets back: the option echoed byte for byte, last; a malformed one and a relay
 * outside the allowlist answered with nothing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, runUdhcpc, setMac, tempDir, type RunningServer } from '../helpers/dhcp-lab.ts';
import { parseDhcpPacket, Opt } from '../../server/dhcp/packet.ts';
import { encodeRelayAgentInfo } from '../../server/dhcp/relay-agent.ts';

const run = promisify(execFile);
const skip = netnsUnavailable('busybox', 'dhcrelay');
const REMOTE = '52:54:00:81:16:10';
const CRAFTED = '52:54:00:81:16:11';
const OUTSIDE = '52:54:00:81:17:10';

let lab: Lab;
let srv: Namespace, rly: Namespace, far: Namespace;
let farIf = '';
let server: RunningServer;

before(async () => {
  if (skip) return;
  lab = await Lab.create('ibr');
  srv = lab.ns('srv'); rly = lab.ns('rly'); far = lab.ns('far');
  lab.veth(srv, '10.81.21.1/24', rly, '10.81.21.2/24', ['ibrs1', 'ibrr1']);
  [, farIf] = lab.veth(rly, '10.81.22.1/24', far, null, ['ibrr2', 'ibrf1']);
  rly.ip('addr', 'add', '10.81.23.1/24', 'dev', 'lo'); // a second relay subnet, not in the allowlist
  rly.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  srv.ip('route', 'add', '10.81.22.0/23', 'via', '10.81.21.2', 'dev', 'ibrs1');
  server = await startDhcpRunner(srv, {
    dataDir: tempDir('relay'),
    machines: [
      { mac: REMOTE, hostname: 'remote', ipv4: { address: '10.81.22.10', prefix: 24, gateway: '10.81.22.1', dns: [] } },
      { mac: CRAFTED, hostname: 'crafted', ipv4: { address: '10.81.22.11', prefix: 24, dns: [] } },
      { mac: OUTSIDE, hostname: 'outside', ipv4: { address: '10.81.23.10', prefix: 24, dns: [] } },
    ],
    args: ['--dhcp-interface', 'ibrs1', '--dhcp-relay', '10.81.22.0/24', '--public-url', 'http://10.81.21.1:8080', '--log-level', 'debug'],
  });
});

after(async () => {
  if (server) await server.stop();
  if (lab) await lab.destroy();
});

async function relayed(giaddr: string, mac: string, agent: Buffer | null): Promise<Buffer | null> {
  const r = await run('ip', ['netns', 'exec', rly.name, process.execPath, '--import', 'tsx', 'test/helpers/dhcp-relay-sender.ts',
    '10.81.21.1', giaddr, mac, agent ? agent.toString('hex') : '-'], { timeout: 30000 });
  const { reply } = JSON.parse(r.stdout) as { reply: string | null };
  return reply === null ? null : Buffer.from(reply, 'hex');
}

/** Option codes of an encoded packet, in wire order (main area). */
function optionOrder(b: Buffer): number[] {
  const codes: number[] = [];
  for (let i = 240; i < b.length && b[i] !== 255;) {
    if (b[i] === 0) { i++; continue; }
    codes.push(b[i]);
    i += 2 + b[i + 1];
  }
  return codes;
}

test('dhcrelay -a (option 82 inserted by the relay): the far client gets its reservation; the server read the circuit id', { skip }, async () => {
  setMac(far, farIf, REMOTE);
  const dr = rly.spawn('dhcrelay', ['-4', '-d', '-a', '-iu', 'ibrr1', '-id', 'ibrr2', '10.81.21.1']);
  let drLog = '';
  dr.stderr!.on('data', (d) => { drLog += d; });
  dr.stdout!.on('data', (d) => { drLog += d; });
  await new Promise((r) => setTimeout(r, 500));
  try {
    const r = await runUdhcpc(far, farIf, []);
    assert.ok(r.bound, `no lease through the relay: ${r.log}\n${drLog}`);
    assert.equal(r.bound.ip, '10.81.22.10');
    // dhcrelay's circuit id is the interface the request came in on
    assert.match(server.stderr(), /"relay":"10\.81\.22\.1","agentInfo":\{"circuitId":"ibrr2"/);
  } finally {
    dr.kill('SIGTERM');
    await new Promise((r) => dr.once('exit', r));
  }
});

test('option 82 is echoed in the reply byte for byte, as the last option (RFC 3046 2.2); a malformed one gets no answer', { skip }, async () => {
  const agent = encodeRelayAgentInfo([{ code: 1, data: Buffer.from('Gi0/7') }, { code: 2, data: Buffer.from([0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]) }, { code: 9, data: Buffer.from([0, 0, 0x0d, 0xe9, 1, 0xaa]) }]);
  const reply = await relayed('10.81.22.1', CRAFTED, agent);
  assert.ok(reply, 'no OFFER through the crafted relay');
  const p = parseDhcpPacket(reply);
  assert.equal(p.yiaddr, '10.81.22.11');
  assert.deepEqual(p.options.get(Opt.RELAY_AGENT), agent);
  assert.equal(optionOrder(reply).at(-1), 82);
  // without option 82 the reply carries none
  const plain = await relayed('10.81.22.1', CRAFTED, null);
  assert.equal(parseDhcpPacket(plain!).options.has(Opt.RELAY_AGENT), false);
  // a sub-option that runs past the option's end
  assert.equal(await relayed('10.81.22.1', CRAFTED, Buffer.from([1, 9, 0x41, 0x42])), null);
  assert.match(server.stderr(), /malformed relay agent information: option 82: sub-option 1 claims 9 bytes, 2 left/);
});

test('--dhcp-relay: a relay outside the allowlist gets no answer, and the refusal is logged', { skip }, async () => {
  assert.equal(await relayed('10.81.23.1', OUTSIDE, null), null);
  assert.match(server.stderr(), /relay 10\.81\.23\.1 is not an allowed relay \(--dhcp-relay\)/);
});
