/**
 * Hostile images: each must fail its build with a clear reason, leave no file and no ready row, and leave the
 * process (the daemon that also serves DHCP) running and able to build the next image. The builds run in the
 * image service's worker thread, as in the daemon.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService, type ImageService } from '../../server/images/index.ts';
import { DEFAULT_LIMITS, limitsFromEnv } from '../../server/images/limits.ts';
import { buildImage, makeTar, writeOciLayout, type BuiltImage, type TarSpec } from '../helpers/images-oci.ts';
import { cat } from '../helpers/images-disk.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CHILD = join(ROOT, 'test', 'helpers', 'images-build-child.ts');
const skip = spawnSync('debugfs', ['-V']).error || spawnSync('zstd', ['-V']).error ? 'debugfs or zstd missing' : false;
const isRoot = process.getuid?.() === 0;

let work: string;
let n = 0;
before(() => { work = mkdtempSync(join(tmpdir(), 'ibi-hostile-')); });
after(() => rmSync(work, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function service(env: Record<string, string> = {}): { svc: ImageService; store: Store; dataDir: string; close(): void } {
  const dataDir = join(work, `data${++n}`);
  const store = Store.open(dataDir);
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const svc = createImageService({ store, log: pino({ level: 'silent' }), registry: new Registry(), dataDir });
    return { svc, store, dataDir, close: () => store.close() };
  } finally {
    for (const k of Object.keys(env)) { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; }
  }
}

function layout(image: BuiltImage): string {
  const dir = join(work, `layout${++n}`);
  writeOciLayout(dir, image);
  return dir;
}

/** One gzip layer from a tar given as bytes (buildImage makes its layers from entries). */
function imageOfTar(tar: Buffer): BuiltImage {
  const base = buildImage({ layers: [[{ path: 'x', content: 'x' }]] });
  const gz = gzipSync(tar, { level: 9 });
  const layer = { digest: `sha256:${sha(gz)}`, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', bytes: gz };
  const cfg = JSON.parse(base.config.bytes.toString());
  cfg.rootfs.diff_ids = [`sha256:${sha(tar)}`];
  const cb = Buffer.from(JSON.stringify(cfg));
  const config = { digest: `sha256:${sha(cb)}`, mediaType: base.config.mediaType, bytes: cb };
  const mb = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: config.mediaType, digest: config.digest, size: cb.length },
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: gz.length }] }));
  return { config, layers: [layer], diffIds: cfg.rootfs.diff_ids, manifest: { digest: `sha256:${sha(mb)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: mb } };
}

/** The build fails with `reason`; nothing is left in images/, the row says failed; then a good image builds. */
async function refused(s: ReturnType<typeof service>, image: BuiltImage, reason: RegExp): Promise<void> {
  const path = layout(image);
  await assert.rejects(s.svc.build({ type: 'oci-layout', path }), reason);
  assert.deepEqual(readdirSync(join(s.dataDir, 'images')), [], 'nothing left in images/');
  const rows = s.store.images.list();
  assert.ok(rows.length > 0 && rows.every((r) => r.state === 'failed' && reason.test(r.error ?? '')), JSON.stringify(rows.map((r) => [r.state, r.error])));
  const text = `fine ${++n}`;
  const ok = await s.svc.build({ type: 'oci-layout', path: layout(buildImage({ layers: [[{ path: 'fine', content: text }]] })) });
  assert.equal(cat(s.svc.filePath(ok.id, 'raw'), '/fine').toString(), text, 'the next build works in the same process');
}

test('limits: safe defaults, each an IRONBOOT_IMAGE_… setting', () => {
  assert.deepEqual(limitsFromEnv({}), DEFAULT_LIMITS);
  const l = limitsFromEnv({ IRONBOOT_IMAGE_MAX_ENTRIES: '10', IRONBOOT_IMAGE_MAX_BYTES: '2G', IRONBOOT_IMAGE_FREE_RESERVE: '512M' });
  assert.deepEqual([l.maxEntries, l.maxTarBytes, l.freeReserveBytes], [10, 2 * 2 ** 30, 512 << 20]);
  assert.throws(() => limitsFromEnv({ IRONBOOT_IMAGE_MAX_RATIO: 'lots' }), /IRONBOOT_IMAGE_MAX_RATIO="lots": expected a number/);
  assert.ok(DEFAULT_LIMITS.maxEntries >= 1_000_000 && DEFAULT_LIMITS.maxPaxBytes <= 1 << 20);
});

test('a gzip bomb layer (320 MiB of zeros in 0.3 MiB, gzip -9) fails with the default limits', { skip }, async () => {
  const tar = makeTar([{ path: 'bomb', content: Buffer.alloc(320 << 20) }]);
  const image = imageOfTar(tar);
  assert.ok(image.layers[0].bytes.length < 2 << 20, `a bomb: ${image.layers[0].bytes.length} bytes compressed`);
  const s = service();
  try {
    await refused(s, image, /layer 1\/1 \(sha256:[0-9a-f]{12}\): decompresses to \d+× its compressed size .* more than the limit of 250× \(IRONBOOT_IMAGE_MAX_RATIO\): a compression bomb/);
  } finally { s.close(); }
});

test('a layer with more entries than IRONBOOT_IMAGE_MAX_ENTRIES fails', { skip }, async () => {
  const s = service({ IRONBOOT_IMAGE_MAX_ENTRIES: '1000' });
  try {
    const entries: TarSpec[] = Array.from({ length: 1001 }, (_, i) => ({ path: `f${i}`, content: '' }));
    await refused(s, buildImage({ layers: [entries] }), /more than 1000 tar entries \(the limit, IRONBOOT_IMAGE_MAX_ENTRIES\)/);
  } finally { s.close(); }
});

test('an oversized xattr, an oversized PAX header, a path too deep and a name too long fail (default limits)', { skip }, async () => {
  const cases: [TarSpec, RegExp][] = [
    [{ path: 'big-xattr', content: 'x', xattrs: { 'user.big': randomBytes(70 << 10) } }, /"big-xattr": \d+ bytes of extended attributes, more than the limit of 65536 \(IRONBOOT_IMAGE_MAX_XATTR_BYTES\)/],
    [{ path: 'pax', content: 'x', xattrs: { 'user.a': randomBytes(600 << 10), 'user.b': randomBytes(600 << 10) } }, /a tar PAX header of \d+ bytes is larger than the limit of 1048576 bytes \(IRONBOOT_IMAGE_MAX_PAX_BYTES\)/],
    [{ path: `${Array(300).fill('d').join('/')}/f`, content: 'deep' }, /a path 301 directories deep, more than the limit of 256 \(IRONBOOT_IMAGE_MAX_PATH_DEPTH\)/],
    [{ path: `dir/${'n'.repeat(256)}`, content: 'long' }, /a file name longer than 255 bytes \(ext4's limit\)/],
  ];
  for (const [entry, reason] of cases) {
    const s = service();
    try { await refused(s, buildImage({ layers: [[{ path: 'ok', content: 'ok' }, entry]] }), reason); } finally { s.close(); }
  }
});

test('a build that exhausts its memory ends its worker thread only', { skip }, async () => {
  // 40000 files 12 directories deep with 250-byte names: paths of 3 KiB, ~500000 entries for the flattener, in a 160 MiB heap
  const long = Array(11).fill('n'.repeat(250)).join('/');
  const entries: TarSpec[] = Array.from({ length: 40000 }, (_, i) => ({ path: `${i}/${long}`, content: '' }));
  const s = service({ IRONBOOT_IMAGE_BUILD_MEMORY: '160' });
  try {
    await refused(s, imageOfTar(makeTar(entries)), /the build ran out of memory \(its limit is 160 MiB, IRONBOOT_IMAGE_BUILD_MEMORY\)/);
  } finally { s.close(); }
});

interface Report { error: string | null; files: string[]; rows: { state: string; error: string | null }[] }

function runChild(dataDir: string, args: string[], wrap: string[], env: Record<string, string>): Promise<Report> {
  return new Promise((res, rej) => {
    const cmd = [...wrap, process.execPath, '--import', 'tsx', CHILD, dataDir, ...args];
    const c = spawn(cmd[0], cmd.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.on('error', rej);
    c.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('@@REPORT '));
      if (!line) return rej(new Error(`child gave no report (exit ${code}):\n${out}\n${err}`));
      res(JSON.parse(line.slice(9)));
    });
  });
}

test('a data dir on a small tmpfs: the free-space reserve stops the build before and while it writes', { skip: skip || (!isRoot && 'needs root for unshare -m') }, async () => {
  // 16 MiB that do not compress: the raw disk and its zstd form together need 32 MiB of the 48 MiB tmpfs
  const dir = layout(buildImage({ layers: [[{ path: 'blob', content: randomBytes(16 << 20) }]] }));
  const cases: [string, RegExp][] = [
    // 48 - 16 (about the compressed size) < 40: refused before the first byte
    ['40M', /disk full: only [\d.]+ MiB free in .*, the build needs about 16 MiB and 40 MiB stay free \(the reserve, IRONBOOT_IMAGE_FREE_RESERVE\)/],
    // passes the first check, stopped while the layers stream (or at the metadata) as free space drops below 24 MiB
    ['24M', /disk full: only [\d.]+ MiB free in [^,]* and 24 MiB stay free \(the reserve, IRONBOOT_IMAGE_FREE_RESERVE\)/],
  ];
  for (const [reserve, reason] of cases) {
    const dataDir = join(work, `tmpfs-${reserve}`);
    mkdirSync(dataDir);
    const wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=48m ibi-small "${dataDir}" && exec "$0" "$@"`];
    const report = await runChild(dataDir, ['--oci-layout', dir], wrap, { IRONBOOT_IMAGE_FREE_RESERVE: reserve });
    assert.match(report.error ?? '', reason);
    assert.deepEqual(report.files, [], 'nothing left in images/');
    assert.ok(report.rows.every((r) => r.state === 'failed'), JSON.stringify(report.rows));
    assert.deepEqual(readdirSync(dataDir), [], 'the tmpfs was private to the namespace');
  }
  // the same build with room to spare works (the reserve is what stopped it)
  const dataDir = join(work, 'tmpfs-ok');
  mkdirSync(dataDir);
  const wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=48m ibi-small "${dataDir}" && exec "$0" "$@"`];
  const report = await runChild(dataDir, ['--oci-layout', dir], wrap, { IRONBOOT_IMAGE_FREE_RESERVE: '4M' });
  assert.equal(report.error, null);
  writeFileSync(join(work, 'done'), '');
});
