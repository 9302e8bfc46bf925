/**
 * Container disks from local sources and through the CLI: OCI layout (dir and tar), docker save archive,
 * a build without root (setpriv to nobody), a disk that fills up (tmpfs inside `unshare -m`), and a build
 * killed half-way. Each disk is checked with debugfs, without mounting.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService } from '../../server/images/index.ts';
import { imagesBuildCommand } from '../../server/cli/images-build.ts';
import { buildImage, writeOciLayout, ociArchive, dockerArchive, busyboxLayer } from '../helpers/images-oci.ts';
import { stat, cat, xattrs, fsck, exists, ls } from '../helpers/images-disk.ts';
import { multiLayers } from '../helpers/images-fixtures.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CHILD = join(ROOT, 'test', 'helpers', 'images-build-child.ts');
const skip = spawnSync('debugfs', ['-V']).error || spawnSync('zstd', ['-V']).error ? 'debugfs or zstd missing' : false;
const isRoot = process.getuid?.() === 0;

let work: string;
before(() => { work = mkdtempSync(join(tmpdir(), 'ibi-src-')); chmodSync(work, 0o755); });
after(() => { if (work) rmSync(work, { recursive: true, force: true }); });

interface Report { error: string | null; files: string[]; rows: { id: string; state: string; error: string | null }[]; image: Record<string, any> | null; uid: number }

function runChild(dataDir: string, args: string[], wrap: string[] = []): Promise<{ report: Report; stderr: string; code: number | null }> {
  return new Promise((resolvePromise, reject) => {
    const cmd = [...wrap, process.execPath, '--import', 'tsx', CHILD, dataDir, ...args];
    const c = spawn(cmd[0], cmd.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.on('error', reject);
    c.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('@@REPORT '));
      if (!line) return reject(new Error(`child gave no report (exit ${code}):\n${out}\n${err}`));
      resolvePromise({ report: JSON.parse(line.slice(9)), stderr: err, code });
    });
  });
}

test('OCI layout directory and tar, and a docker save archive, through the CLI', { skip }, async () => {
  const image = buildImage({ layers: [busyboxLayer(), [{ path: 'etc/motd', content: 'hi\n' }, { path: 'etc/.wh.passwd', content: '' }]], config: { Cmd: ['/bin/sh'] } });
  const dir = join(work, 'layout');
  writeOciLayout(dir, image, 'v1');
  const tarPath = join(work, 'layout.tar');
  writeFileSync(tarPath, ociArchive(image, 'v1'));
  const dockerPath = join(work, 'saved.tar');
  writeFileSync(dockerPath, dockerArchive({ layers: [busyboxLayer(), [{ path: 'etc/motd', content: 'docker\n' }]], config: { Entrypoint: ['/bin/busybox'] } }, 'me/app:2'));
  const dataDir = join(work, 'data-cli');
  const outs: string[] = [];
  const out = (s: string) => { outs.push(s); };
  await imagesBuildCommand(['v1', '--oci-layout', dir, '--data-dir', dataDir, '--name', 'from-dir'], out);
  assert.match(outs.join(''), /image [0-9a-f]{16} \(from-dir\) ready/);
  // the tar of the same layout: the same content digest, so the same disk (reused)
  await imagesBuildCommand(['--oci-layout', tarPath, '--data-dir', dataDir, '--json'], out);
  const fromTar = JSON.parse(outs[outs.length - 1]);
  assert.equal(fromTar.name, 'from-dir');
  await imagesBuildCommand(['me/app:2', '--docker-archive', dockerPath, '--data-dir', dataDir, '--json'], out);
  const fromDocker = JSON.parse(outs[outs.length - 1]);
  assert.deepEqual(fromDocker.config.entrypoint, ['/bin/busybox']);
  assert.match(fromDocker.source, /^docker-archive:/);
  const store = Store.open(dataDir);
  try {
    const svc = createImageService({ store, log: pino({ level: 'silent' }), registry: new Registry(), dataDir });
    const a = svc.filePath(fromTar.id, 'raw');
    assert.equal(cat(a, '/etc/motd').toString(), 'hi\n');
    assert.ok(!exists(a, '/etc/passwd'));
    assert.equal(stat(a, '/bin/busybox').links, 5);
    const b = svc.filePath(fromDocker.id, 'raw');
    assert.equal(cat(b, '/etc/motd').toString(), 'docker\n');
    assert.ok(fsck(b).ok);
    await assert.rejects(svc.build({ type: 'oci-layout', path: dir, ref: 'nope' }), /no image tagged "nope" \(tags: v1\)/);
    await assert.rejects(svc.build({ type: 'docker-archive', path: dockerPath, ref: 'other:1' }), /no image tagged "other:1" \(tags: me\/app:2\)/);
    await assert.rejects(svc.build({ type: 'oci-layout', path: join(work, 'missing') }), /no such file/);
    await assert.rejects(svc.build({ type: 'oci-layout', path: dockerPath }), /not an OCI image layout/);
  } finally {
    store.close();
  }
  await assert.rejects(imagesBuildCommand(['x', '--oci-layout', dir, '--docker-archive', dockerPath, '--data-dir', dataDir], out), /one of --oci-layout and --docker-archive/);
});

test('a docker save layer that does not match its diff_id is refused', { skip }, async () => {
  const saved = dockerArchive({ layers: [[{ path: 'f', content: 'original content' }]] });
  const i = saved.indexOf(Buffer.from('original content'));
  saved.write('tampered', i);
  const p = join(work, 'tampered.tar');
  writeFileSync(p, saved);
  const dataDir = join(work, 'data-tampered');
  await assert.rejects(imagesBuildCommand(['--docker-archive', p, '--data-dir', dataDir], () => {}), /content does not match its digest/);
  assert.deepEqual(readdirSync(join(dataDir, 'images')), []);
});

test('built without root: ownership, modes, devices and xattrs are the same as built by root', { skip: skip || (!isRoot && 'needs root to switch to nobody') }, async () => {
  const dir = join(work, 'multi-layout');
  writeOciLayout(dir, buildImage({ layers: multiLayers() }));
  const dataDir = join(work, 'data-nobody');
  mkdirSync(dataDir);
  chownSync(dataDir, 65534, 65534);
  const { report, stderr } = await runChild(dataDir, ['--oci-layout', dir], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all']);
  assert.equal(report.error, null, stderr);
  assert.equal(report.uid, 65534);
  const d = join(dataDir, 'images', `${report.image!.id}.ext4`);
  assert.ok(fsck(d).ok);
  assert.deepEqual([stat(d, '/dev/null').type, stat(d, '/dev/null').devMajor, stat(d, '/dev/null').devMinor, stat(d, '/dev/null').mode], ['character', 1, 3, 0o666]);
  assert.deepEqual([stat(d, '/usr/bin/su').uid, stat(d, '/usr/bin/su').mode], [0, 0o4755]);
  assert.deepEqual([stat(d, '/usr/bin/wall').gid, stat(d, '/usr/bin/wall').mode], [5, 0o2755]);
  const secret = stat(d, '/home/user/secret');
  assert.deepEqual([secret.uid, secret.gid, secret.mode], [1000, 1000, 0]);
  assert.deepEqual([stat(d, '/etc').uid, stat(d, '/bin/tool').uid, stat(d, '/').uid], [0, 0, 0], 'root-owned, not nobody-owned');
  assert.equal(stat(d, '/tmp').mode, 0o1777);
  assert.equal(xattrs(d, '/usr/bin/ping').get('security.capability')?.toString('hex'), '0100000200200000000000000000000000000000');
  assert.equal(xattrs(d, '/etc/labelled').get('trusted.t')?.toString(), 'tv');
  assert.deepEqual(ls(d, '/opt/app'), ['new']);
});

test('disk full during the build (tmpfs in a private mount namespace): clear error, nothing left', { skip: skip || (!isRoot && 'needs root for unshare -m') }, async (t) => {
  const dir = join(work, 'big-layout');
  writeOciLayout(dir, buildImage({ layers: [busyboxLayer(), [{ path: 'data/blob', content: randomBytes(10 << 20) }]] }));
  // 5m: the raw disk's data area fills it while the layers stream; 16m: the raw disk and its zstd form together
  for (const size of ['5m', '16m']) {
    const dataDir = join(work, `data-full-${size}`);
    mkdirSync(dataDir);
    const wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=${size} ibi-full "${dataDir}" && exec "$0" "$@"`];
    const { report, stderr } = await runChild(dataDir, ['--oci-layout', dir], wrap);
    assert.ok(report.error, `the build must fail on a ${size} tmpfs (${stderr})`);
    t.diagnostic(`tmpfs ${size}: ${report.error}`);
    assert.match(report.error!, /disk full|no space|does not fit|out of space/i);
    assert.deepEqual(report.files, [], `nothing left in images/ on ${size}`);
    assert.ok(report.rows.every((r) => r.state !== 'ready'), JSON.stringify(report.rows));
    assert.deepEqual(readdirSync(dataDir), [], 'the tmpfs was private to the namespace');
  }
});

test('a forced --size too small for the content is a clear error', { skip }, async () => {
  const dir = join(work, 'small-layout');
  writeOciLayout(dir, buildImage({ layers: [[{ path: 'big', content: randomBytes(6 << 20) }]] }));
  const dataDir = join(work, 'data-small');
  await assert.rejects(imagesBuildCommand(['--oci-layout', dir, '--size', '5M', '--data-dir', dataDir], () => {}), /does not fit in 5 MiB: give a larger --size/);
  assert.deepEqual(readdirSync(join(dataDir, 'images')), []);
  await imagesBuildCommand(['--oci-layout', dir, '--size', '64M', '--data-dir', dataDir], () => {});
  const f = readdirSync(join(dataDir, 'images')).find((x) => x.endsWith('.ext4'))!;
  assert.equal(spawnSync('stat', ['-c', '%s', join(dataDir, 'images', f)], { encoding: 'utf8' }).stdout.trim(), String(64 << 20));
});

test('a build killed half-way leaves no file and no ready row; recover() marks it failed', { skip }, async () => {
  const dir = join(work, 'slow-layout');
  // many layers so the build is still pulling when killed
  writeOciLayout(dir, buildImage({ layers: Array.from({ length: 40 }, (_, i) => [{ path: `f${i}`, content: randomBytes(2 << 20) }]), compression: 'zstd' }));
  const dataDir = join(work, 'data-killed');
  const c = spawn(process.execPath, ['--import', 'tsx', CHILD, dataDir, '--oci-layout', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((res, rej) => {
    let err = '';
    c.stderr.on('data', (d) => {
      err += d;
      if (/pulling\s+layers [1-9]\d*\/40/.test(err)) { c.kill('SIGKILL'); res(); }
    });
    c.on('close', () => rej(new Error(`child ended before it was killed: ${err}`)));
  });
  await new Promise((r) => c.once('close', r));
  const left = readdirSync(join(dataDir, 'images'));
  assert.ok(left.every((f) => f.startsWith('.tmp-')), `only a temp dir may remain: ${left}`);
  const store = Store.open(dataDir);
  try {
    assert.ok(store.images.list().every((r) => r.state !== 'ready'));
    const svc = createImageService({ store, log: pino({ level: 'silent' }), registry: new Registry(), dataDir });
    svc.recover();
    assert.deepEqual(readdirSync(join(dataDir, 'images')), []);
    const rows = store.images.list();
    assert.equal(rows.length, 1);
    assert.equal(rows[0].state, 'failed');
    assert.match(rows[0].error!, /interrupted/);
  } finally {
    store.close();
  }
  assert.ok(!existsSync(join(dataDir, 'images', 'x')));
});
