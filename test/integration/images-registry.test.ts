/**
 * Container disks from a real registry (Debian's docker-registry on 127.0.0.1): a busybox image and a
 * multi-layer image with whiteouts, an opaque dir, links, devices, setuid, a file capability and xattrs,
 * checked file by file in the built ext4 with debugfs (no mount). Error cases leave nothing behind.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, existsSync, readFileSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService, ImageError, type ImageService } from '../../server/images/index.ts';
import { TestRegistry, buildImage, buildIndex, busyboxLayer, registryUnavailable, freePort } from '../helpers/images-oci.ts';
import { multiLayers, CAP, LONG, HOST_ESCAPE } from '../helpers/images-fixtures.ts';
import { stat, ls, exists, cat, xattrs, readlink, fsck } from '../helpers/images-disk.ts';

const skip = registryUnavailable() || (spawnSync('debugfs', ['-V']).error ? 'debugfs missing' : false) || (spawnSync('zstd', ['-V']).error ? 'zstd missing' : false);

let reg: TestRegistry;
let dataDir: string;
let store: Store;
let svc: ImageService;
const log = pino({ level: 'silent' });

before(async () => {
  if (skip) return;
  reg = new TestRegistry();
  await reg.start();
  dataDir = mkdtempSync(join(tmpdir(), 'ibi-data-'));
  store = Store.open(dataDir);
  svc = createImageService({ store, log, registry: new Registry(), dataDir });
  await reg.push('ib/busybox', '1', buildImage({ layers: [busyboxLayer()], config: { Entrypoint: ['/bin/sh'], Cmd: ['-c', 'echo hi'], Env: ['PATH=/bin'], WorkingDir: '/root', User: '0:0' } }));
  await reg.push('ib/multi', 'zstd', buildImage({ layers: multiLayers(), compression: 'zstd' }));
  await reg.push('ib/multi', 'gzip', buildImage({ layers: multiLayers(), compression: 'gzip' }));
  await reg.push('ib/multi', 'plain', buildImage({ layers: multiLayers(), compression: 'none' }));
});

after(async () => {
  if (skip) return;
  store?.close();
  await reg?.destroy();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Nothing but finished disks (and no temp dirs) in the images directory. */
function leftovers(): string[] {
  return readdirSync(svc.imagesDir).filter((f) => !/^[a-z0-9]+\.ext4(\.zst)?$/.test(f) || !store.images.get(f.split('.')[0]) || store.images.get(f.split('.')[0])!.state !== 'ready');
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('busybox from the registry: disk, digests, config, and the same digest reused', { skip }, async () => {
  const stages = new Set<string>();
  const img = await svc.build({ type: 'registry', ref: `${reg.host}/ib/busybox:1`, insecure: true }, {}, (p) => stages.add(p.stage));
  assert.equal(img.state, 'ready');
  assert.deepEqual([...stages], ['resolving', 'pulling', 'filesystem', 'compressing', 'done']);
  assert.equal(img.name, 'busybox:1');
  assert.deepEqual(img.config, { entrypoint: ['/bin/sh'], cmd: ['-c', 'echo hi'], env: ['PATH=/bin'], workingDir: '/root', user: '0:0' });
  assert.match(img.digest!, /^sha256:[0-9a-f]{64}$/);
  const raw = svc.filePath(img.id, 'raw');
  const zst = svc.filePath(img.id, 'zst');
  const rawBytes = readFileSync(raw);
  assert.equal(img.rawSize, rawBytes.length);
  assert.equal(img.rawSha256, sha(rawBytes));
  assert.equal(img.compressedSha256, sha(readFileSync(zst)));
  assert.equal(img.compressedSize, statSync(zst).size);
  const unz = spawnSync('zstd', ['-dc', zst], { maxBuffer: 1 << 30 }).stdout;
  assert.equal(sha(unz), img.rawSha256, 'the .zst decompresses to the raw disk');
  // ext4, 4 KiB blocks
  const sb = spawnSync('dumpe2fs', ['-h', raw], { encoding: 'utf8' }).stdout;
  assert.match(sb, /Block size:\s+4096/);
  assert.ok(fsck(raw).ok, fsck(raw).output);
  const bb = stat(raw, '/bin/busybox');
  assert.equal(bb.links, 5, 'busybox and its 4 hardlinked applets share one inode');
  assert.equal(bb.size, statSync('/bin/busybox').size);
  assert.ok(cat(raw, '/bin/sh').equals(readFileSync('/bin/busybox')));
  assert.equal(stat(raw, '/tmp').mode, 0o1777);
  assert.equal(stat(raw, '/root').mode, 0o700);
  // same digest again: reused, no rebuild
  const t = statSync(raw).mtimeMs;
  const again = await svc.build({ type: 'registry', ref: `${reg.host}/ib/busybox:1`, insecure: true });
  assert.equal(again.id, img.id);
  assert.equal(statSync(raw).mtimeMs, t);
  assert.deepEqual(leftovers(), []);
});

for (const comp of ['zstd', 'gzip', 'gzip-zlib', 'gzip-subprocess', 'plain']) {
  test(`multi-layer image (${comp} layers): whiteouts, opaque dir, links, devices, setuid, caps, xattrs`, { skip }, async () => {
    // gzip and zstd: in-process (the native addon) when built, else igzip / zstd processes; gzip-zlib: the same
    // image through Node's zlib; gzip-subprocess: through igzip and a zstd process for the .zst (separate builds: forced sizes)
    if (comp === 'gzip-zlib') process.env.IRONBOOT_IGZIP = '0';
    if (comp === 'gzip-subprocess') process.env.IRONBOOT_IMAGE_CODEC = 'subprocess';
    const size = comp === 'gzip-zlib' ? { size: '40M' } : comp === 'gzip-subprocess' ? { size: '44M' } : {};
    const img = await svc.build({ type: 'registry', ref: `${reg.host}/ib/multi:${comp.startsWith('gzip') ? 'gzip' : comp}`, insecure: true }, size)
      .finally(() => { delete process.env.IRONBOOT_IGZIP; delete process.env.IRONBOOT_IMAGE_CODEC; });
    const d = svc.filePath(img.id, 'raw');
    const zst = svc.filePath(img.id, 'zst');
    assert.equal(sha(spawnSync('zstd', ['-dc', zst], { maxBuffer: 1 << 30 }).stdout), img.rawSha256, 'the .zst decompresses to the raw disk');
    assert.equal(spawnSync('zstd', ['-tq', zst]).status, 0, 'zstd -t passes');
    const fk = fsck(d);
    assert.ok(fk.ok, fk.output);
    // whiteouts
    assert.ok(!exists(d, '/etc/deleteme'), '.wh.deleteme removed the file');
    assert.equal(cat(d, '/etc/keep').toString(), 'kept\n');
    assert.deepEqual(ls(d, '/opt/app').sort(), ['new'], 'opaque dir hides the lower layer');
    assert.equal(cat(d, '/etc/overwritten').toString(), 'new\n');
    assert.equal(stat(d, '/etc/overwritten').mode, 0o600);
    assert.equal(stat(d, '/var/cache').type, 'symlink', 'dir replaced by a symlink');
    assert.equal(readlink(d, '/var/cache'), '../tmp');
    // links
    const tool = stat(d, '/bin/tool');
    assert.equal(tool.links, 2);
    assert.equal(cat(d, '/usr/bin/tool-link').toString(), 'tool v1\n');
    assert.equal(stat(d, '/usr/bin/sh').type, 'symlink');
    assert.equal(readlink(d, '/usr/bin/sh'), '/bin/busybox');
    // symlinked parents resolve inside the image
    assert.equal(cat(d, '/usr/lib/libx.so').toString(), 'elf');
    assert.ok(exists(d, `/tmp/${HOST_ESCAPE}`), 'a path through an absolute symlink lands inside the image');
    assert.ok(!existsSync(`/tmp/${HOST_ESCAPE}`), 'and not on the host');
    assert.ok(!exists(d, '/outside'));
    // devices and fifos
    const nul = stat(d, '/dev/null');
    assert.equal(nul.type, 'character');
    assert.deepEqual([nul.devMajor, nul.devMinor, nul.mode, nul.uid], [1, 3, 0o666, 0]);
    const sda = stat(d, '/dev/sda');
    assert.equal(sda.type, 'block');
    assert.deepEqual([sda.devMajor, sda.devMinor, sda.mode, sda.gid], [8, 0, 0o660, 6]);
    assert.equal(stat(d, '/run/fifo').type, 'FIFO');
    assert.equal(stat(d, '/run/fifo').mode, 0o600);
    // setuid / setgid, ownership, modes
    assert.equal(stat(d, '/usr/bin/su').mode, 0o4755);
    const wall = stat(d, '/usr/bin/wall');
    assert.deepEqual([wall.mode, wall.gid], [0o2755, 5]);
    const home = stat(d, '/home/user');
    assert.deepEqual([home.uid, home.gid, home.mode], [1000, 1000, 0o700]);
    const secret = stat(d, '/home/user/secret');
    assert.deepEqual([secret.uid, secret.gid, secret.mode], [1000, 1000, 0]);
    assert.equal(stat(d, '/tmp').mode, 0o1777);
    // xattrs, byte for byte
    assert.deepEqual(xattrs(d, '/usr/bin/ping').get('security.capability'), CAP);
    const lx = xattrs(d, '/etc/labelled');
    assert.deepEqual(lx.get('user.comment'), Buffer.from('hello "world"\\'));
    assert.deepEqual(lx.get('user.bin'), Buffer.from([0, 1, 2, 255]));
    assert.deepEqual(lx.get('trusted.t'), Buffer.from('tv'));
    assert.equal(xattrs(d, '/home/user').get('user.dir')?.toString(), 'd');
    assert.ok(exists(d, '/etc/acl'));
    assert.match(spawnSync('debugfs', ['-R', 'ea_list /etc/acl', d], { encoding: 'utf8' }).stdout, /system\.posix_acl_access/);
    // long names, odd names
    assert.equal(cat(d, `/${LONG}`).toString(), 'long');
    assert.equal(cat(d, '/name with spaces "and quotes"').toString(), 'q');
    assert.deepEqual(leftovers(), []);
  });
}

test('multi-arch index: linux/amd64 by default, --platform picks another', { skip }, async () => {
  const amd = buildImage({ layers: [[{ path: 'arch', content: 'amd64' }]] });
  const arm = buildImage({ layers: [[{ path: 'arch', content: 'arm64' }]], architecture: 'arm64' });
  for (const i of [amd, arm]) {
    for (const b of [i.config, ...i.layers, i.manifest]) await reg.pushBlob('ib/multiarch', b);
    await reg.pushManifest('ib/multiarch', i.manifest.digest, i.manifest);
  }
  await reg.pushManifest('ib/multiarch', 'latest', buildIndex([{ image: arm, os: 'linux', architecture: 'arm64', variant: 'v8' }, { image: amd, os: 'linux', architecture: 'amd64' }]));
  const a = await svc.build({ type: 'registry', ref: `${reg.host}/ib/multiarch`, insecure: true });
  assert.equal(cat(svc.filePath(a.id, 'raw'), '/arch').toString(), 'amd64');
  assert.equal(a.digest, amd.manifest.digest);
  const b = await svc.build({ type: 'registry', ref: `${reg.host}/ib/multiarch:latest`, insecure: true, platform: 'linux/arm64' });
  assert.equal(cat(svc.filePath(b.id, 'raw'), '/arch').toString(), 'arm64');
  await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/ib/multiarch`, insecure: true, platform: 'linux/s390x' }), /no image for platform linux\/s390x.*linux\/arm64\/v8, linux\/amd64/);
  // by digest too
  const c = await svc.build({ type: 'registry', ref: `${reg.host}/ib/multiarch@${amd.manifest.digest}`, insecure: true });
  assert.equal(c.id, a.id);
});

async function failsCleanly(ref: string, re: RegExp): Promise<void> {
  const before = store.images.list().length;
  await assert.rejects(svc.build({ type: 'registry', ref, insecure: true }), (err: Error) => {
    assert.ok(err instanceof ImageError, `an ImageError, not ${err.name}: ${err.message}`);
    assert.match(err.message, re);
    return true;
  });
  assert.deepEqual(leftovers(), [], 'no partial file or temp dir');
  const rows = store.images.list();
  assert.ok(rows.every((r) => r.state === 'ready' || r.state === 'failed'), 'no row left building');
  assert.ok(rows.length <= before + 1);
}

test('bad reference, unknown tag, unknown repository: clear errors, nothing stored', { skip }, async () => {
  const n = store.images.list().length;
  await failsCleanly(`${reg.host}/ib/BusyBox:1`, /bad image reference .*lowercase/);
  await failsCleanly(`${reg.host}/ib/busybox:bad tag`, /bad image reference/);
  await failsCleanly(`${reg.host}/ib/busybox@sha256:1234`, /digest must be sha256/);
  await failsCleanly(`${reg.host}/ib/busybox:nope`, /tag "nope" not found.*MANIFEST_UNKNOWN/);
  await failsCleanly(`${reg.host}/ib/nothere:1`, /not found|denied/);
  assert.equal(store.images.list().length, n, 'resolution failures create no row at all');
});

test('a blob whose content does not match its digest fails the build and leaves nothing', { skip }, async () => {
  const img = buildImage({ layers: [[{ path: 'a', content: 'A'.repeat(5000) }], [{ path: 'b', content: 'B'.repeat(5000) }]] });
  await reg.push('ib/corrupt', '1', img);
  const p = reg.blobPath(img.layers[1].digest);
  const bytes = readFileSync(p);
  bytes[bytes.length - 10] ^= 0xff; // same size, different content (gzip trailer CRC/size region)
  writeFileSync(p, bytes);
  await failsCleanly(`${reg.host}/ib/corrupt:1`, /does not match its digest|gzip data is corrupt/);
  const row = store.images.list().find((r) => r.source?.includes('ib/corrupt'));
  assert.equal(row?.state, 'failed');
  assert.match(row!.error!, /layer 2\/2/);
  assert.ok(!existsSync(svc.filePath(row!.id, 'raw')) && !existsSync(svc.filePath(row!.id, 'zst')));
  // an uncompressed layer tampered with: only the digest check can catch it
  const plain = buildImage({ layers: [[{ path: 'a', content: 'A'.repeat(5000) }]], compression: 'none' });
  await reg.push('ib/corrupt', 'plain', plain);
  const pp = reg.blobPath(plain.layers[0].digest);
  const pb = readFileSync(pp);
  pb[600] = 0x42;
  writeFileSync(pp, pb);
  await failsCleanly(`${reg.host}/ib/corrupt:plain`, /content does not match its digest sha256:/);
});

test('a truncated blob fails the build and leaves nothing', { skip }, async () => {
  const img = buildImage({ layers: [[{ path: 'big', content: createHash('sha512').update('x').digest().toString('hex').repeat(2000) }]], compression: 'none' });
  await reg.push('ib/trunc', '1', img);
  const p = reg.blobPath(img.layers[0].digest);
  truncateSync(p, Math.floor(statSync(p).size / 2));
  await failsCleanly(`${reg.host}/ib/trunc:1`, /truncated/);
});

test('a registry that is down: connection refused, nothing stored', { skip }, async () => {
  const port = await freePort();
  const n = store.images.list().length;
  await failsCleanly(`127.0.0.1:${port}/ib/busybox:1`, new RegExp(`cannot reach registry 127\\.0\\.0\\.1:${port} \\(plain HTTP\\): connection refused`));
  assert.equal(store.images.list().length, n);
});

test('HTTPS against a plain-HTTP registry hints at --insecure', { skip }, async () => {
  await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/ib/busybox:1` }), /cannot reach registry .*(--insecure|TLS|SSL|EPROTO)/i);
});
