/**
 * Issue 14, end to end: two daemons, one fleet. Two labs (two network namespaces, each a rack: its own bridge,
 * subnet and `ironboot serve`) share one PostgreSQL store (a Unix socket: it crosses namespaces) and one S3 bucket
 * (s3rver in a third namespace, linked to each rack by a veth pair with private /30 addresses). The image is built
 * once, by daemon A; daemon B has never built it and serves it from the bucket. Machine 1 is registered and
 * provisioned through A, machine 2 through B; each VM PXE-boots from its own rack's daemon and runs the container.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabEnv, buildHttpdDisk, provision, stateEvents, labUnavailable, diskFiles, HTTPD_PAGE, BOOT_FAILED, ROOT, qemuLock } from '../helpers/lab-env.ts';
import { startPostgres, postgresUnavailable, type TestPostgres } from '../helpers/postgres.ts';
import { ip, namespaceExists, namespacePids, stopInNamespace } from '../../server/lab/netns.ts';

const BUCKET = 'ironboot-fleet';
const S3_PORT = 9000;
const S3_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const unavailable = labUnavailable() || postgresUnavailable() || false;

/** The namespace holding the S3 server, and the veth links from it to each rack. */
class Core {
  readonly ns = `ibfc${process.pid % 100000}`;
  readonly dir = mkdtempSync(join(tmpdir(), 'ironboot-fleet-s3-'));
  private s3: ChildProcess | null = null;
  private out = '';

  async start(): Promise<void> {
    if (namespaceExists(this.ns)) throw new Error(`namespace ${this.ns} exists already`);
    ip('netns', 'add', this.ns);
    ip('-n', this.ns, 'link', 'set', 'lo', 'up');
    this.s3 = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '--import', 'tsx', join(ROOT, 'test', 'helpers', 's3-server-runner.ts'),
      '0.0.0.0', String(S3_PORT), join(this.dir, 'objects'), BUCKET], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.s3.stdout!.on('data', (d) => { this.out += d; });
    this.s3.stderr!.on('data', (d) => { this.out += d; });
    for (let i = 0; !/s3 listening/.test(this.out); i++) {
      if (this.s3.exitCode !== null || i > 300) throw new Error(`the S3 server did not start: ${this.out}`);
      await sleep(100);
    }
  }

  /** veth core ⇄ rack: 10.99.<n>.1 (S3's side) and 10.99.<n>.2 (the rack's). Returns the S3 endpoint for that rack. */
  link(rack: LabEnv, n: number): string {
    const a = `ibv${process.pid % 100000}c${n}`;
    const b = `ibv${process.pid % 100000}r${n}`;
    ip('-n', this.ns, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', rack.ns);
    ip('-n', this.ns, 'addr', 'add', `10.99.${n}.1/30`, 'dev', a);
    ip('-n', this.ns, 'link', 'set', a, 'up');
    ip('-n', rack.ns, 'addr', 'add', `10.99.${n}.2/30`, 'dev', b);
    ip('-n', rack.ns, 'link', 'set', b, 'up');
    return `http://10.99.${n}.1:${S3_PORT}`;
  }

  /** Files s3rver stores for the bucket's objects (their keys, relative to the bucket). */
  objects(): string[] {
    const root = join(this.dir, 'objects', BUCKET);
    const out: string[] = [];
    const walk = (d: string, rel: string) => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name), rel ? `${rel}/${e.name}` : e.name);
        else if (e.name.endsWith('._S3rver_object')) out.push(`${rel ? `${rel}/` : ''}${e.name.replace(/\._S3rver_object$/, '')}`);
      }
    };
    walk(root, '');
    return out;
  }

  async destroy(): Promise<void> {
    if (namespaceExists(this.ns)) {
      for (const pid of namespacePids(this.ns)) await stopInNamespace(pid, this.ns, 3000);
      try { ip('netns', 'del', this.ns); } catch { /* gone */ }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

test('two daemons on one PostgreSQL and one S3 bucket: an image built once, one VM provisioned by each', { skip: unavailable, timeout: 1_200_000 }, async (t) => {
  const releaseQemu = await qemuLock(); // both labs' VMs are this test's: one lock for the two
  t.after(() => releaseQemu());
  const pg: TestPostgres = await startPostgres();
  t.after(() => pg.stop());
  const core = new Core();
  t.after(() => core.destroy());
  await core.start();

  const rack = async (n: number, octet: number): Promise<LabEnv> => {
    let endpoint = '';
    const env = await LabEnv.start({
      octet, nsPrefix: n === 1 ? 'ibfa' : 'ibfb', qemuLockHeld: true,
      beforeServe: (e) => { endpoint = core.link(e, n); },
      serveArgs: ['--store', pg.url, '--images', `s3://${BUCKET}/images`, '--s3-endpoint', `http://10.99.${n}.1:${S3_PORT}`],
      serveEnv: S3_ENV,
    });
    assert.ok(endpoint);
    return env;
  };
  const a = await rack(1, 31);
  t.after(() => a.destroy());
  const b = await rack(2, 32);
  t.after(() => b.destroy());

  // a failure shows both daemons' last words
  const tails = () => [a, b].map((e) => `--- daemon ${e.ns} (tail) ---\n${e.daemonLog().split('\n').slice(-25).join('\n')}`).join('\n');
  try {
    await fleet(a, b, core);
  } catch (err) {
    (err as Error).message += `\n${tails()}`;
    throw err;
  }
});

async function fleet(a: LabEnv, b: LabEnv, core: Core): Promise<void> {
  // built once, by A; the row is in the shared store and the artifacts in the bucket
  const image = await buildHttpdDisk(a);
  const seenByB = await b.api('GET', `/images/${image.name}`);
  assert.equal(seenByB.state, 'ready');
  assert.equal(seenByB.id, image.id);
  const keys = core.objects();
  assert.ok(keys.some((k) => k.startsWith('images/') && k.includes(image.id) && k.endsWith('.zst')), `bucket holds ${keys.join(', ')}`);
  assert.deepEqual(diskFiles(b, image.id), [], 'daemon B has no local copy before a machine asks for it');
  assert.doesNotMatch(b.daemonLog(), /image build (started|ready)|building image/i, 'daemon B built nothing');

  // one machine per rack, each registered and given its workflow through its own rack's daemon
  const m1 = await provision(a, { vm: { name: 'm1', nic: 'virtio', firmware: 'bios' }, n: 1, workflow: { image: image.name } });
  const m2 = await provision(b, { vm: { name: 'm2', nic: 'virtio', firmware: 'bios' }, n: 2, workflow: { image: image.name } });

  // the fleet's view: each daemon lists both machines and both workflows
  for (const env of [a, b]) {
    const list = await env.api('GET', '/machines');
    const macs: string[] = list.map((m: any) => m.mac);
    assert.ok(macs.includes(m1.mac) && macs.includes(m2.mac), `${env.ns} lists ${macs.join(', ')}`);
  }

  const [wf1, wf2] = await Promise.all([
    a.waitWorkflow(m1.wfId, (w) => w.state === 'running', 600_000, m1.vm),
    b.waitWorkflow(m2.wfId, (w) => w.state === 'running', 600_000, m2.vm),
  ]);
  for (const wf of [wf1, wf2]) {
    for (const s of ['booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running']) assert.ok(stateEvents(wf).includes(s), stateEvents(wf).join(' → '));
  }
  for (const [env, m] of [[a, m1], [b, m2]] as const) {
    assert.equal(m.vm.find(BOOT_FAILED), -1, m.vm.tail());
    // DHCP from its own rack's daemon: the address of its own subnet
    assert.ok(m.vm.find(new RegExp(`net0: ${m.address.replaceAll('.', '\\.')}/`)) >= 0, m.vm.tail());
    let page = { status: 0, text: '' };
    for (let i = 0; i < 20 && page.status !== 200; i++) {
      page = await env.request(`${m.address}:80`, 'GET', '/').catch((e) => ({ status: 0, text: String(e) }));
      if (page.status !== 200) await sleep(500);
    }
    assert.equal(page.text, HTTPD_PAGE);
  }

  // B streamed the disk it never built: fetched from the bucket into its cache, and it hashes as the row says
  const cached = diskFiles(b, image.id).find((f) => f.endsWith('.zst'));
  assert.ok(cached, 'daemon B cached the disk it served');
  const sha = createHash('sha256').update(readFileSync(cached)).digest('hex');
  assert.match(String(image.compressedSha256), /^[0-9a-f]{64}$/);
  assert.equal(sha, image.compressedSha256, 'the cached copy hashes as the image row says');
  // and each daemon sees the other's workflow in the shared store
  assert.equal((await b.workflow(m1.wfId)).state, 'running');
  assert.equal((await a.workflow(m2.wfId)).state, 'running');
}
