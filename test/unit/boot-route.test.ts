import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { Store } from '../../server/store/index.ts';
import { describeStores, type TestStore } from '../helpers/stores.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { buildApp } from '../../server/http/app.ts';
import { bootPlugin } from '../../server/http/routes/boot.ts';
import { loadBootTemplates } from '../../server/boot/ipxe.ts';

let handle: TestStore;
let dir: string;
let store: Store;
let workflows: WorkflowService;
let app: FastifyInstance;
let registry: Registry;

describeStores('boot scripts', (backend) => {
before(async () => {
  handle = backend.open();
  dir = handle.dataDir;
  store = handle.store;
  const log = pino({ level: 'silent' });
  workflows = new WorkflowService(store, log);
  registry = new Registry();
  app = await buildApp({
    store, workflows, log, registry, adminToken: 'x'.repeat(32), artifactsDir: join(dir, 'artifacts'), version: 'test',
    plugins: [{ plugin: bootPlugin(loadBootTemplates(), 'http://10.77.0.1:8080') }],
  });
  store.images.insert({ id: 'img1', name: 'web', state: 'ready', rawSize: 1, rawSha256: 'a', compressedSize: 1, compressedSha256: 'b' });
});

after(async () => {
  await app?.close();
  handle?.remove();
});

test('unknown MAC: 200 with a script that exits, never a 404', async () => {
  const r = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:99.ipxe' });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/plain/);
  assert.ok(r.body.startsWith('#!ipxe\n'));
  assert.match(r.body, /52:54:00:00:00:99\) is not registered/);
  assert.match(r.body, /^exit 1$/m);
});

test('registered machine with a pending workflow: provision script with a fresh boot token for its reserved address only; pending → booting', async () => {
  store.machines.create({ mac: '52:54:00:00:00:01', ipv4: { address: '10.77.0.150', prefix: 24, dns: [] } });
  const wf = workflows.create({ mac: '52:54:00:00:00:01', image: 'img1', target: '/dev/vda', kernelArgs: 'quiet' });
  assert.equal(store.workflows.get(wf.id)!.state, 'pending');
  // another address asking for that MAC's script: a valid script, no token, the reason; the workflow is untouched
  const other = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:01.ipxe', remoteAddress: '10.77.0.99' });
  assert.equal(other.statusCode, 200);
  assert.ok(other.body.startsWith('#!ipxe\n'));
  assert.doesNotMatch(other.body, /ironboot\.token|^kernel /m);
  assert.match(other.body, /^echo ironboot: 10\.77\.0\.99 is not the address of 52:54:00:00:00:01 \(10\.77\.0\.150\)$/m);
  assert.equal(store.workflows.get(wf.id)!.state, 'pending');
  // iPXE's ${mac:hexhyp} notation and upper case are the same machine
  const r = await app.inject({ method: 'GET', url: '/boot/52-54-00-00-00-01.ipxe', remoteAddress: '10.77.0.150' });
  assert.equal(r.statusCode, 200);
  const m = new RegExp(`^kernel http://10\\.77\\.0\\.1:8080/artifacts/vmlinuz .*ironboot\\.workflow=${wf.id} ironboot\\.token=(\\S+) ironboot\\.mac=52:54:00:00:00:01 .*quiet \\|\\| goto failed$`, 'm').exec(r.body);
  assert.ok(m, r.body);
  const token = m[1];
  assert.ok(token.length >= 32);
  assert.equal(store.workflows.get(wf.id)!.token, '', 'the token is not stored in plain text');
  const now = store.workflows.get(wf.id)!;
  assert.equal(now.state, 'booting');
  assert.ok(now.startedAt);
  const evs = store.events.list(wf.id);
  assert.ok(evs.some((e) => e.state === 'booting' && /10\.77\.0\.150/.test(e.message ?? '')), JSON.stringify(evs));
  // a second fetch (undionly chain, reboot) keeps it booting, with a new token (IPv4-mapped notation is the same address)
  const again = await app.inject({ method: 'GET', url: '/boot/525400000001.ipxe', remoteAddress: '::ffff:10.77.0.150' });
  assert.match(again.body, /^kernel /m);
  assert.doesNotMatch(again.body, new RegExp(token));
  assert.equal(store.workflows.get(wf.id)!.state, 'booting');
  // further along: a served script never pushes the workflow back to booting (issue 16)
  workflows.transition(wf.id, 'running');
  const running = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:01.ipxe', remoteAddress: '10.77.0.150' });
  assert.match(running.body, /^kernel /m);
  assert.equal(store.workflows.get(wf.id)!.state, 'running');
  // once finished: local boot, and the state is not touched
  workflows.transition(wf.id, 'succeeded', { exitCode: 0 });
  const done = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:01.ipxe', remoteAddress: '10.77.0.150' });
  assert.match(done.body, /^sanboot --no-describe --drive 0x80/m);
  assert.match(done.body, new RegExp(`workflow ${wf.id} is succeeded`));
  assert.doesNotMatch(done.body, /^kernel /m);
  assert.equal(store.workflows.get(wf.id)!.state, 'succeeded');
});

test('--boot-script-auth ip without a reserved address refuses and says what to do; none serves any address', async () => {
  const log = pino({ level: 'silent' });
  store.machines.create({ mac: '52:54:00:00:00:05' });
  const wf = workflows.create({ mac: '52:54:00:00:00:05', image: 'web', target: 'ram' });
  const r = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:05.ipxe', remoteAddress: '10.77.0.5' });
  assert.doesNotMatch(r.body, /ironboot\.token/);
  assert.match(r.body, /has no reserved address .*--boot-script-auth none/);
  assert.equal(store.workflows.get(wf.id)!.state, 'pending');
  const open = await buildApp({
    store, workflows, log, registry: new Registry(), adminToken: 'x'.repeat(32), artifactsDir: dir, version: 'test',
    plugins: [{ plugin: bootPlugin(loadBootTemplates(), 'http://10.77.0.1:8080', undefined, { policy: { mode: 'none', dhcpLeases: false } }) }],
  });
  try {
    const any = await open.inject({ method: 'GET', url: '/boot/52:54:00:00:00:05.ipxe', remoteAddress: '10.77.0.5' });
    assert.match(any.body, /^kernel .*ironboot\.token=\S+/m);
    assert.equal(store.workflows.get(wf.id)!.state, 'booting');
  } finally {
    await open.close();
  }
  // ironboot leasing the addresses: the setting does not loosen it
  const leased = await buildApp({
    store, workflows, log, registry: new Registry(), adminToken: 'x'.repeat(32), artifactsDir: dir, version: 'test',
    plugins: [{ plugin: bootPlugin(loadBootTemplates(), 'http://10.77.0.1:8080', undefined, { policy: { mode: 'none', dhcpLeases: true } }) }],
  });
  try {
    const nolease = await leased.inject({ method: 'GET', url: '/boot/52:54:00:00:00:05.ipxe', remoteAddress: '10.77.0.5' });
    assert.doesNotMatch(nolease.body, /ironboot\.token/);
    assert.match(nolease.body, /ironboot has no lease or reservation for 52:54:00:00:00:05/);
    store.leases.put({ address: '10.77.0.123', mac: '52:54:00:00:00:05', state: 'bound', expiresAt: Date.now() + 60_000, hostname: null, updatedAt: Date.now() });
    const pool = await leased.inject({ method: 'GET', url: '/boot/52:54:00:00:00:05.ipxe', remoteAddress: '10.77.0.123' });
    assert.match(pool.body, /^kernel .*ironboot\.token=\S+/m, 'the pool lease of that MAC gets it');
  } finally {
    await leased.close();
  }
  workflows.cancel(wf.id);
});

test('registered machine without any workflow: local boot', async () => {
  store.machines.create({ mac: '52:54:00:00:00:02' });
  const r = await app.inject({ method: 'GET', url: '/boot/52:54:00:00:00:02.ipxe' });
  assert.equal(r.statusCode, 200);
  assert.match(r.body, /no workflow, booting from the local disk/);
});

test('no public URL configured: script URLs follow the Host header', async () => {
  const log = pino({ level: 'silent' });
  const a2 = await buildApp({
    store, workflows, log, registry: new Registry(), adminToken: 'x'.repeat(32), artifactsDir: dir, version: 'test',
    plugins: [{ plugin: bootPlugin(loadBootTemplates(), null) }],
  });
  try {
    store.machines.create({ mac: '52:54:00:00:00:03', ipv4: { address: '192.0.2.50', prefix: 24, dns: [] } });
    workflows.create({ mac: '52:54:00:00:00:03', image: 'web', target: 'ram' });
    const r = await a2.inject({ method: 'GET', url: '/boot/52:54:00:00:00:03.ipxe', headers: { host: '192.0.2.7:9000' }, remoteAddress: '192.0.2.50' });
    assert.match(r.body, /^kernel http:\/\/192\.0\.2\.7:9000\/artifacts\/vmlinuz .*ironboot\.server=http:\/\/192\.0\.2\.7:9000 /m);
  } finally {
    await a2.close();
  }
});

test('not a MAC: the generic entry script chaining to ${mac}; other files 404', async () => {
  const r = await app.inject({ method: 'GET', url: '/boot/boot.ipxe' });
  assert.equal(r.statusCode, 200);
  assert.match(r.body, /^chain --autofree http:\/\/10\.77\.0\.1:8080\/boot\/\$\{mac\}\.ipxe/m);
  const nf = await app.inject({ method: 'GET', url: '/boot/undionly.kpxe' });
  assert.equal(nf.statusCode, 404);
});

test('served scripts are counted by kind', async () => {
  const text = await registry.metrics();
  assert.match(text, /ironboot_boot_scripts_total\{kind="provision"\} 3/);
  assert.match(text, /ironboot_boot_scripts_total\{kind="refused"\} 2/);
  assert.match(text, /ironboot_boot_scripts_total\{kind="unknown"\} 1/);
});

test('HEAD does not serve a provisioning script (it would mint a token and move the workflow)', async () => {
  store.machines.create({ mac: '52:54:00:00:00:07', ipv4: { address: '10.77.0.7', prefix: 24, dns: [] } });
  const wf = workflows.create({ mac: '52:54:00:00:00:07', image: 'web', target: 'ram' });
  const r = await app.inject({ method: 'HEAD', url: '/boot/52:54:00:00:00:07.ipxe', remoteAddress: '10.77.0.7' });
  assert.equal(r.statusCode, 404);
  assert.equal(store.workflows.get(wf.id)!.state, 'pending');
  assert.equal((store.db.prepare('SELECT COUNT(*) AS n FROM agent_tokens WHERE workflow_id = ?').get(wf.id) as { n: number }).n, 0);
});
});
