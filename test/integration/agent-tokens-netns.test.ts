/**
 * Agent tokens between real hosts (issue 15, issue 16): `ironboot serve` in a namespace with its DHCP in reservation
 * mode on a bridge, the machine (busybox udhcpc takes its reserved address) and a LAN neighbour in two more
 * namespaces, curl for HTTP and TFTP.
 *
 *   the neighbour asking for the machine's script (HTTP and TFTP) gets one without a token, the machine gets a token
 *   a boot token sniffed by the neighbour does not say hello from its address; the machine's hello works once,
 *   the replay is 409 and an event; the session token from the neighbour's address is refused (events, images)
 *   images: no token, a wrong one, another workflow's image → refused; the admin token works; a final workflow's
 *   session token is refused
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import pino from 'pino';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { ensureNativeAddon, runUdhcpc, setMac } from '../helpers/dhcp-lab.ts';
import { CLI, ROOT } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';
import { WorkflowService } from '../../server/workflows/service.ts';

const skip = netnsUnavailable('busybox', 'curl');

const NET = `10.86.${(process.pid % 200) + 20}`;
const SERVER = `${NET}.1`;
const MACHINE_IP = `${NET}.10`;
const NEIGHBOUR_IP = `${NET}.66`;
const MAC = '52:54:00:86:00:10';
const OTHER_MAC = '52:54:00:86:00:11';
const ADMIN = randomBytes(18).toString('base64url');

let lab: Lab;
let srv: Namespace, machine: Namespace, neighbour: Namespace;
let machineIf: string;
let dir: string;
let daemon: ChildProcess;
let daemonOut = '';
let wfId: string;
const images: Record<'mine' | 'other', { id: string; zst: Buffer }> = { mine: { id: '', zst: Buffer.alloc(0) }, other: { id: '', zst: Buffer.alloc(0) } };

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** curl inside a namespace: status, body (and the body file, for binary bodies). */
function curl(ns: Namespace, url: string, opts: { token?: string; method?: string; json?: unknown } = {}): { status: number; body: string; bytes: Buffer } {
  const out = join(dir, `body-${randomBytes(4).toString('hex')}`);
  const args = ['-s', '-o', out, '-w', '%{http_code}', '--max-time', '10'];
  if (opts.method) args.push('-X', opts.method);
  if (opts.token) args.push('-H', `authorization: Bearer ${opts.token}`);
  if (opts.json !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', JSON.stringify(opts.json));
  const code = ns.exec('curl', [...args, url]).trim();
  let bytes = Buffer.alloc(0);
  try { bytes = readFileSync(out); rmSync(out); } catch { /* no body (TFTP errors) */ }
  return { status: Number(code), body: bytes.toString('utf8'), bytes };
}

const api = (path: string) => JSON.parse(curl(srv, `http://${SERVER}:8080/api/v1${path}`, { token: ADMIN }).body);

function makeImage(store: Store, name: string): { id: string; zst: Buffer } {
  const id = `ibt${randomBytes(6).toString('hex')}`;
  const raw = randomBytes(64 << 10);
  const zst = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(1000)]); // served as is: only its bytes matter here
  writeFileSync(join(dir, 'data', 'images', `${id}.ext4`), raw);
  writeFileSync(join(dir, 'data', 'images', `${id}.ext4.zst`), zst);
  store.images.insert({
    id, name, state: 'ready', format: 'ext4', rawSize: raw.length, rawSha256: sha(raw), compressedSize: zst.length, compressedSha256: sha(zst),
    config: { entrypoint: ['/bin/true'], cmd: [], env: [], workingDir: '/', user: null },
  });
  return { id, zst };
}

before(async () => {
  if (skip) return;
  ensureNativeAddon();
  dir = mkdtempSync(join(tmpdir(), 'ib-tokens-'));
  mkdirSync(join(dir, 'data', 'images'), { recursive: true });
  const store = Store.open(join(dir, 'data'));
  try {
    store.machines.create({ mac: MAC, hostname: 'tok-node', ipv4: { address: MACHINE_IP, prefix: 24, dns: [] } });
    store.machines.create({ mac: OTHER_MAC, hostname: 'tok-other', ipv4: { address: `${NET}.11`, prefix: 24, dns: [] } });
    images.mine = makeImage(store, 'mine');
    images.other = makeImage(store, 'other');
    const svc = new WorkflowService(store, pino({ level: 'silent' }));
    wfId = svc.create({ mac: MAC, image: images.mine.id, target: 'ram' }).id;
    svc.create({ mac: OTHER_MAC, image: images.other.id, target: 'ram' });
  } finally {
    store.close();
  }

  lab = await Lab.create('ibt');
  srv = lab.ns('srv'); machine = lab.ns('m'); neighbour = lab.ns('n');
  srv.ip('link', 'add', 'ibtbr', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  srv.ip('addr', 'add', `${SERVER}/24`, 'dev', 'ibtbr');
  srv.ip('link', 'set', 'ibtbr', 'up');
  const [s1, m1] = lab.veth(srv, null, machine, null, ['ibts1', 'ibtm1']);
  const [s2] = lab.veth(srv, null, neighbour, `${NEIGHBOUR_IP}/24`, ['ibts2', 'ibtn1']);
  for (const p of [s1, s2]) srv.ip('link', 'set', p, 'master', 'ibtbr');
  machineIf = m1;
  setMac(machine, machineIf, MAC);

  daemon = srv.spawn(process.execPath, [CLI, 'serve', '--data-dir', join(dir, 'data'), '--dhcp-interface', 'ibtbr',
    '--http-listen', `${SERVER}:8080`, '--tftp-listen', `${SERVER}:69`, '--public-url', `http://${SERVER}:8080`,
    '--no-build-artifacts', '--log-level', 'info'], { cwd: ROOT, env: { ...process.env, IRONBOOT_TOKEN: ADMIN, CI: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.stdout!.on('data', (d: Buffer) => { daemonOut += d; });
  daemon.stderr!.on('data', (d: Buffer) => { daemonOut += d; });
  const end = Date.now() + 30_000;
  while (!/ironboot serving TFTP/.test(daemonOut)) {
    if (daemon.exitCode !== null || Date.now() > end) throw new Error(`ironboot serve did not start:\n${daemonOut}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // the machine takes its reserved address from ironboot's DHCP, as iPXE and the agent do
  const r = await runUdhcpc(machine, machineIf, [], { configure: true });
  assert.equal(r.bound?.ip, MACHINE_IP, r.log);
});

after(async () => {
  await lab?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const tokenIn = (script: string) => /ironboot\.token=(\S+)/.exec(script)?.[1];

let bootToken = '';
let session = '';

test('the neighbour asking for the machine\'s script (HTTP and TFTP) gets a valid script without a token; the machine gets one', { skip }, async () => {
  const stolen = curl(neighbour, `http://${SERVER}:8080/boot/${MAC}.ipxe`);
  assert.equal(stolen.status, 200);
  assert.ok(stolen.body.startsWith('#!ipxe\n'));
  assert.equal(tokenIn(stolen.body), undefined, stolen.body);
  assert.match(stolen.body, new RegExp(`echo ironboot: ${NEIGHBOUR_IP.replaceAll('.', '\\.')} is not the address of ${MAC} \\(${MACHINE_IP.replaceAll('.', '\\.')}\\)`));
  const overTftp = curl(neighbour, `tftp://${SERVER}/${MAC.replaceAll(':', '-')}/boot.ipxe`);
  assert.ok(overTftp.body.startsWith('#!ipxe\n'), overTftp.body);
  assert.equal(tokenIn(overTftp.body), undefined, overTftp.body);
  assert.equal(api(`/workflows/${wfId}`).state, 'pending', 'a refused script leaves the workflow alone');
  // curl runs synchronously: let the daemon's log lines in before looking at them
  for (let i = 0; i < 50 && !/provisioning script refused.*\n.*provisioning script refused/s.test(daemonOut); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(daemonOut, new RegExp(`"mac":"${MAC}".*"from":"${NEIGHBOUR_IP.replaceAll('.', '\\.')}","via":"http".*provisioning script refused`));
  assert.match(daemonOut, new RegExp(`"from":"${NEIGHBOUR_IP.replaceAll('.', '\\.')}","via":"tftp".*provisioning script refused`));

  const tftpOwn = curl(machine, `tftp://${SERVER}/${MAC.replaceAll(':', '-')}/boot.ipxe`);
  assert.ok(tokenIn(tftpOwn.body), tftpOwn.body);
  const own = curl(machine, `http://${SERVER}:8080/boot/${MAC}.ipxe`);
  bootToken = tokenIn(own.body)!;
  assert.ok(bootToken && bootToken !== tokenIn(tftpOwn.body), 'each served script has its own boot token');
  assert.equal(api(`/workflows/${wfId}`).state, 'booting');
});

test('hello: a sniffed boot token fails from the neighbour; the machine\'s works once; the replay is 409 and an event', { skip }, () => {
  const hello = { workflowId: wfId, mac: MAC, ip: MACHINE_IP };
  const fromNeighbour = curl(neighbour, `http://${SERVER}:8080/agent/v1/hello`, { token: bootToken, json: hello });
  assert.equal(fromNeighbour.status, 403, fromNeighbour.body);
  const h = curl(machine, `http://${SERVER}:8080/agent/v1/hello`, { token: bootToken, json: hello });
  assert.equal(h.status, 200, h.body);
  session = JSON.parse(h.body).sessionToken;
  assert.ok(session);
  const replay = curl(machine, `http://${SERVER}:8080/agent/v1/hello`, { token: bootToken, json: hello });
  assert.equal(replay.status, 409, replay.body);
  const wf = api(`/workflows/${wfId}`);
  assert.equal(wf.state, 'agent-online');
  const refusals = wf.events.filter((e: { kind: string; payload: { refused?: string } }) => e.kind === 'info' && e.payload.refused);
  assert.deepEqual(refusals.map((e: { payload: { refused: string; ip: string } }) => [e.payload.refused, e.payload.ip]),
    [['wrong-address', NEIGHBOUR_IP], ['replayed-boot-token', MACHINE_IP]]);
});

test('the session token: refused from the neighbour\'s address; images need it (or the admin token) and the workflow\'s own image', { skip }, () => {
  const events = { workflowId: wfId, events: [{ state: 'streaming' }] };
  const mine = `http://${SERVER}:8080/images/${images.mine.id}.ext4.zst`;
  assert.equal(curl(neighbour, `http://${SERVER}:8080/agent/v1/events`, { token: session, json: events }).status, 403);
  assert.equal(curl(neighbour, mine, { token: session }).status, 403);
  assert.equal(curl(machine, mine).status, 401, 'no token');
  assert.equal(curl(machine, mine, { token: 'not-a-token' }).status, 401, 'a wrong token');
  assert.equal(curl(machine, mine, { token: bootToken }).status, 401, 'the (used) boot token');
  assert.equal(curl(machine, `http://${SERVER}:8080/images/${images.other.id}.ext4.zst`, { token: session }).status, 403, 'another workflow\'s image');
  const ok = curl(machine, mine, { token: session });
  assert.equal(ok.status, 200);
  assert.equal(sha(ok.bytes), sha(images.mine.zst));
  const admin = curl(neighbour, `http://${SERVER}:8080/images/${images.other.id}.ext4.zst`, { token: ADMIN });
  assert.equal(admin.status, 200);
  assert.equal(sha(admin.bytes), sha(images.other.zst));
  assert.equal(curl(machine, `http://${SERVER}:8080/agent/v1/events`, { token: session, json: events }).status, 200);
  assert.equal(api(`/workflows/${wfId}`).state, 'streaming');
});

test('a final workflow\'s tokens are refused: events and images after the final status', { skip }, () => {
  const post = (evs: object[]) => curl(machine, `http://${SERVER}:8080/agent/v1/events`, { token: session, json: { workflowId: wfId, events: evs } });
  assert.equal(post([{ state: 'failed', message: 'test ends it' }]).status, 200);
  assert.equal(api(`/workflows/${wfId}`).state, 'failed');
  const late = post([{ message: 'after the end' }]);
  assert.equal(late.status, 409, late.body);
  assert.equal(curl(machine, `http://${SERVER}:8080/images/${images.mine.id}.ext4.zst`, { token: session }).status, 409);
  // and its machine's script is a local boot now, without a token
  assert.equal(tokenIn(curl(machine, `http://${SERVER}:8080/boot/${MAC}.ipxe`).body), undefined);
});
