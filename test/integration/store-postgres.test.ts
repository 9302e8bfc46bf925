/**
 * `ironboot serve --store postgres://…` end to end: the real daemon (a child process) runs every repository on a
 * PostgreSQL of this test's own (Unix socket in a temp dir), the API's changes land as rows in PostgreSQL (read
 * back with psql), a second connection's rows are seen by the daemon, a restart keeps everything and applies no
 * migration again, an unreachable --store stops the start with the reason, and `ironboot images build --store`
 * records its disk there. With root: the DHCP thread opens
 * the same PostgreSQL and a machine added through the API after the start gets its reserved address (udhcpc).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { startS3Server, S3_KEY } from '../helpers/s3-server.ts';
import { Store } from '../../server/store/index.ts';
import { CLI, readyImage, spawnDaemon, tempDir, ROOT } from '../helpers/daemon.ts';
import { createTestDatabase, storeBackends, testPostgres } from '../helpers/stores.ts';
import { Lab, netnsUnavailable } from '../helpers/netns.ts';
import { runUdhcpc, setMac, ensureNativeAddon } from '../helpers/dhcp-lab.ts';
import { loadMigrations, PG_MIGRATIONS_DIR } from '../../server/store/db.ts';
import { buildImage, writeOciLayout } from '../helpers/images-oci.ts';

storeBackends(); // starts this file's PostgreSQL

const dbName = (url: string) => url.split('/').pop()!.split('?')[0];

test('ironboot serve --store postgres://…: API changes are PostgreSQL rows; a restart keeps them', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const dataDir = join(dir.path, 'data');
  const url = createTestDatabase('daemon');
  const psql = (sql: string) => testPostgres().psql(sql, dbName(url)).trim();

  let d = await spawnDaemon(dataDir, ['--store', url]);
  t.after(() => d.stop());
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(d.url + path, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, body: await r.json().catch(() => null) as any };
  };
  assert.match(d.output(), /store: PostgreSQL/);
  assert.equal(existsSync(join(dataDir, 'ironboot.db')), false, 'no SQLite file with --store');
  const health = await (await fetch(d.url + '/healthz')).json() as { schema: number };
  assert.equal(health.schema, loadMigrations(PG_MIGRATIONS_DIR).length, 'every shipped migration applied');

  const m = await api('POST', '/api/v1/machines', { mac: '52-54-00-a1-00-01', hostname: 'pg-node', ipv4: { address: '10.91.0.21', prefix: 24, dns: [] }, labels: { rack: 'r9' } });
  assert.equal(m.status, 201, JSON.stringify(m.body));
  assert.equal(psql("SELECT mac || ' ' || hostname || ' ' || ipv4_address || ' ' || labels FROM machines"), '52:54:00:a1:00:01 pg-node 10.91.0.21 {"rack":"r9"}');
  assert.equal((await api('POST', '/api/v1/machines', { mac: '52:54:00:a1:00:01' })).status, 409, 'duplicate MAC');

  // an image row written through a second connection (as a second daemon or `ironboot images build --store` would)
  const other = Store.open(dataDir, { url });
  other.images.insert(readyImage({ id: 'pgimg000001', name: 'web' }));
  other.close();
  assert.equal((await api('GET', '/api/v1/images/web')).body?.id, 'pgimg000001');

  const w = await api('POST', '/api/v1/workflows', { machine: '52:54:00:a1:00:01', image: 'web', target: '/dev/vda' });
  assert.equal(w.status, 201, JSON.stringify(w.body));
  assert.equal((await api('POST', '/api/v1/workflows', { machine: '52:54:00:a1:00:01', image: 'web', target: '/dev/vda' })).status, 409, 'one active workflow per machine');
  assert.equal((await api('POST', `/api/v1/workflows/${w.body.id}/cancel`)).body?.state, 'cancelled');
  const r = await api('POST', `/api/v1/workflows/${w.body.id}/retry`);
  assert.equal(r.body?.state, 'pending');
  assert.equal(psql(`SELECT state FROM workflows WHERE id = '${w.body.id}'`), 'cancelled');
  assert.equal(psql(`SELECT string_agg(state, ',' ORDER BY seq) FROM events WHERE workflow_id = '${w.body.id}'`), 'pending,cancelled');
  assert.equal(psql('SELECT COUNT(*) FROM workflows WHERE active = 1'), '1');
  const got = await api('GET', `/api/v1/workflows/${r.body.id}`);
  assert.equal(got.body?.events?.[0]?.state, 'pending');

  assert.equal(await d.stop(), 0);
  const applied = psql('SELECT COUNT(*) FROM schema_migrations');
  d = await spawnDaemon(dataDir, ['--store', url]);
  assert.deepEqual((await api('GET', '/api/v1/machines')).body.map((x: { mac: string }) => x.mac), ['52:54:00:a1:00:01'], 'kept across a restart');
  assert.equal(psql('SELECT COUNT(*) FROM schema_migrations'), applied, 'no migration applied twice');
  assert.equal((await api('GET', `/api/v1/workflows/${r.body.id}`)).body?.state, 'pending');
});

test('an unreachable --store stops the start, naming --store and the reason (no password in the message)', { timeout: 60_000 }, () => {
  const dir = tempDir(); 
  try {
    const url = `postgresql://ironboot:secret@/nope?host=${encodeURIComponent(join(dir.path, 'no-socket-here'))}`;
    const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', join(dir.path, 'data'), '--store', url, '--http-listen', '127.0.0.1:0',
      '--no-dhcp', '--no-tftp', '--no-build-artifacts'], { encoding: 'utf8', timeout: 50_000, env: { ...process.env, CI: '1' } });
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /--store postgresql:\/\/ironboot:\*\*\*@\/nope.*cannot open the PostgreSQL database/);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
    const bad = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', join(dir.path, 'data'), '--store', 'mysql://x/y'], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout + bad.stderr, /store: "mysql:\/\/x\/y" is not a postgres/);
  } finally { dir.remove(); }
});

test('ironboot images build --store postgres://… --images s3://…: the disk is uploaded to the bucket and recorded in PostgreSQL, ready; without --images it is refused', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s3 = await startS3Server('fleet-images');
  t.after(() => s3.stop());
  const url = createTestDatabase('cli');
  const layout = join(dir.path, 'layout');
  writeOciLayout(layout, buildImage({ layers: [[{ path: 'etc/hostname', content: 'tiny\n' }, { path: 'bin/run', content: '#!/bin/sh\necho hi\n', mode: 0o755 }]], config: { Entrypoint: ['/bin/run'] } }), 'v1');
  const build = (extra: string[]) => run(process.execPath, [CLI, 'images', 'build', '--oci-layout', layout, '--name', 'tiny', '--size', '16M', '--data-dir', join(dir.path, 'data'), '--store', url, '--json', ...extra],
    { ...process.env, CI: '1', AWS_ACCESS_KEY_ID: S3_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_KEY.secretAccessKey });

  // a shared store with the disk left in this directory would be served by no daemon: refused, nothing recorded
  const refused = await build([]);
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /--store is a PostgreSQL store shared by several daemons.*--images s3:\/\//s);
  assert.equal(testPostgres().psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", dbName(url)).trim(), '0', 'the store was not even opened');

  const r = await build(['--images', 's3://fleet-images/disks', '--s3-endpoint', s3.endpoint]);
  assert.equal(r.status, 0, r.stderr);
  const img = JSON.parse(r.stdout) as { id: string; state: string; compressedSha256: string };
  assert.equal(img.state, 'ready');
  assert.equal(testPostgres().psql(`SELECT name || ' ' || state || ' ' || entrypoint FROM images WHERE id = '${img.id}'`, dbName(url)).trim(), 'tiny ready ["/bin/run"]');
  assert.equal(existsSync(join(dir.path, 'data', 'ironboot.db')), false, 'nothing written to a SQLite file');
  const objects = await s3.list('disks/');
  const zst = objects.find((o) => o.key.includes(img.id) && o.key.endsWith('.zst'));
  assert.ok(zst, `the bucket holds ${objects.map((o) => o.key).join(', ')}`);
  assert.equal(await s3.sha256(zst.key), img.compressedSha256, 'the object is the disk the row describes');
});

/** A child process, without blocking this one's event loop (the S3 server runs in it). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 100_000 });
    let stdout = ''; let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const skip = netnsUnavailable('busybox');
let lab: Lab | null = null;
after(async () => { if (lab) await lab.destroy(); });

test('the DHCP thread opens the same PostgreSQL: a machine added through the API after the start gets its address', { skip, timeout: 120_000 }, async (t) => {
  ensureNativeAddon();
  lab = await Lab.create('ibpg');
  const srv = lab.ns('srv');
  const cli = lab.ns('cli');
  lab.veth(srv, '10.92.0.1/24', cli, null, ['vsrv', 'vcli']);
  const MAC = '52:54:00:a2:00:10';
  setMac(cli, 'vcli', MAC);
  const dir = tempDir(); t.after(dir.remove);
  const dataDir = join(dir.path, 'data');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const url = createTestDatabase('dhcp');
  const p = srv.spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--store', url, '--dhcp-interface', 'vsrv',
    '--http-listen', '10.92.0.1:18081', '--no-tftp', '--no-build-artifacts'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: '1' } });
  let out = '';
  p.stdout!.on('data', (c) => { out += c; });
  p.stderr!.on('data', (c) => { out += c; });
  t.after(() => new Promise<void>((resolve) => { if (p.exitCode !== null) return resolve(); p.once('exit', () => resolve()); p.kill('SIGTERM'); }));
  for (let i = 0; i < 300 && !/"http":"/.test(out); i++) {
    if (p.exitCode !== null) throw new Error(`the daemon exited: ${out.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(out, /dhcp/i);
  // unknown at first: no answer in reservation mode
  const before = await runUdhcpc(cli, 'vcli', [], { tries: 1 });
  assert.equal(before.bound, null);
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const add = spawnSync('ip', ['netns', 'exec', srv.name, 'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', 'http://10.92.0.1:18081/api/v1/machines',
    '-H', `authorization: Bearer ${token}`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ mac: MAC, hostname: 'pg-dhcp', ipv4: { address: '10.92.0.20', prefix: 24, dns: [] } })], { encoding: 'utf8' });
  assert.equal(add.stdout, '201', add.stderr);
  const r = await runUdhcpc(cli, 'vcli', [], { tries: 3 });
  assert.equal(r.bound?.ip, '10.92.0.20', `no lease for the machine added through the API:\n${r.log}\n${out.slice(-3000)}`);
  assert.equal(testPostgres().psql("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'ironboot' AND datname = '" + dbName(url) + "'", 'postgres').trim(), '2',
    'two connections: the main thread\'s and the DHCP thread\'s');
});
