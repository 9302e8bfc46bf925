/** Pure parts of the container-disk builder: references, platforms, manifests, auth, sizes, flattening. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference, parsePlatform } from '../../server/images/reference.ts';
import { parseManifest, pickPlatform, parseImageConfig } from '../../server/images/manifest.ts';
import { parseAuthenticate } from '../../server/images/registry.ts';
import { credentialsFromConfig } from '../../server/images/credentials.ts';
import { parseSize, planDisk, journalBlocks } from '../../server/images/disk.ts';
import { Flattener, cleanPath, type EntryMeta, type ContentSink } from '../../server/images/flatten.ts';
import { detectCompression } from '../../server/images/layer-stream.ts';
import { makeTar } from '../helpers/images-oci.ts';

test('image references like Docker writes them', () => {
  assert.deepEqual(parseReference('busybox'), { registry: 'registry-1.docker.io', repository: 'library/busybox', tag: 'latest', digest: null });
  assert.deepEqual(parseReference('docker.io/bitnami/redis:7.2'), { registry: 'registry-1.docker.io', repository: 'bitnami/redis', tag: '7.2', digest: null });
  assert.deepEqual(parseReference('ghcr.io/org/app/sub:v1.0-rc1'), { registry: 'ghcr.io', repository: 'org/app/sub', tag: 'v1.0-rc1', digest: null });
  assert.deepEqual(parseReference('127.0.0.1:5000/x:1'), { registry: '127.0.0.1:5000', repository: 'x', tag: '1', digest: null });
  assert.deepEqual(parseReference('localhost/x'), { registry: 'localhost', repository: 'x', tag: 'latest', digest: null });
  const d = 'sha256:' + 'a'.repeat(64);
  assert.deepEqual(parseReference(`quay.io/a/b@${d}`), { registry: 'quay.io', repository: 'a/b', tag: null, digest: d });
  assert.deepEqual(parseReference(`a/b:t@${d}`).tag, 't');
  for (const bad of ['', 'UPPER', 'a b', 'x:bad/tag', 'x@sha256:12', 'x::1', 'reg.io/', 'a//b']) assert.throws(() => parseReference(bad), /bad image reference/, bad);
});

test('platforms and picking one from an index', () => {
  assert.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.throws(() => parsePlatform('amd64'), /OS\/ARCH/);
  const idx = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [
    { digest: 'sha256:' + '1'.repeat(64), size: 1, mediaType: 'm', platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    { digest: 'sha256:' + '2'.repeat(64), size: 1, mediaType: 'm', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    { digest: 'sha256:' + '3'.repeat(64), size: 1, mediaType: 'm', platform: { os: 'linux', architecture: 'amd64' } },
    { digest: 'sha256:' + '4'.repeat(64), size: 1, mediaType: 'm', platform: { os: 'unknown', architecture: 'unknown' } },
  ] })));
  assert.equal(idx.kind, 'index');
  if (idx.kind !== 'index') return;
  assert.equal(pickPlatform(idx.manifests, parsePlatform('linux/amd64')).digest[7], '3');
  assert.equal(pickPlatform(idx.manifests, parsePlatform('linux/arm64')).digest[7], '2');
  assert.equal(pickPlatform(idx.manifests, parsePlatform('linux/arm/v7')).digest[7], '1');
  assert.throws(() => pickPlatform(idx.manifests, parsePlatform('linux/riscv64')), /no image for platform linux\/riscv64 .*linux\/arm\/v7, linux\/arm64\/v8, linux\/amd64\)/);
  assert.throws(() => parseManifest(Buffer.from('{"schemaVersion":1}')), /schema 1/);
  const cfg = parseImageConfig(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/e'], Env: ['A=1'], User: 'app' }, rootfs: { diff_ids: ['sha256:x'] } })));
  assert.deepEqual(cfg.run, { entrypoint: ['/e'], cmd: [], env: ['A=1'], workingDir: null, user: 'app' });
});

test('WWW-Authenticate challenges and Docker config.json credentials', () => {
  assert.deepEqual(parseAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'),
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/busybox:pull' } });
  assert.deepEqual(parseAuthenticate('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
  const cfg = { auths: { 'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw:with:colons').toString('base64') }, 'ghcr.io': { username: 'u', password: 'p' } } };
  assert.deepEqual(credentialsFromConfig(cfg, 'registry-1.docker.io'), { username: 'hub', password: 'pw:with:colons' });
  assert.deepEqual(credentialsFromConfig(cfg, 'ghcr.io'), { username: 'u', password: 'p' });
  assert.equal(credentialsFromConfig(cfg, 'quay.io'), null);
});

test('sizes, compression sniffing, journal sizes', () => {
  assert.equal(parseSize('512M'), 512 << 20);
  assert.equal(parseSize('2G'), 2 ** 31);
  assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
  assert.equal(parseSize('4096'), 4096);
  assert.throws(() => parseSize('lots'), /bad size/);
  assert.equal(detectCompression(Buffer.from([0x1f, 0x8b, 8])), 'gzip');
  assert.equal(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd');
  assert.equal(detectCompression(Buffer.from('bin/')), 'none');
  assert.equal(journalBlocks(1000), 0);
  assert.equal(journalBlocks(100_000), 4096);
});

test('cleanPath keeps layer paths inside the root', () => {
  assert.equal(cleanPath('./a//b/'), 'a/b');
  assert.equal(cleanPath('/etc/x'), 'etc/x');
  assert.equal(cleanPath('./'), '');
  assert.equal(cleanPath('a/../../x'), null);
  assert.equal(cleanPath('../x'), null);
  assert.equal(cleanPath('a/../b'), 'b');
});

test('disk sizing from the flattened entries', () => {
  const m = (x: Partial<EntryMeta>): EntryMeta => ({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, ...x });
  const shared = m({ uid: 1000, size: 10 << 20 });
  const entries = new Map<string, EntryMeta>([
    ['', m({ type: 'dir', mode: 0o755 })],
    ['plain', m({ size: 1 })],
    ['owned', shared], ['hardlink', shared],
    ['dev/null', m({ type: 'chardev', mode: 0o666, devmajor: 1, devminor: 3, mtime: 99 })],
  ]);
  const plan = planDisk(entries);
  assert.equal(plan.entries, 4, 'a hard link is one inode');
  assert.ok(plan.contentBytes >= (10 << 20) + 4096 && plan.contentBytes < (11 << 20), 'a hard-linked file counted once');
  assert.equal(plan.sizeBytes % (1 << 20), 0);
  assert.ok(plan.inodes >= 1024 && plan.sizeBytes >= 32 << 20);
  assert.equal(planDisk(entries, { sizeBytes: 100 << 20 }).sizeBytes, 100 << 20);
});

test('flattener: whiteouts, opaque dirs with same-layer entries, symlinked parents, overwrites', async () => {
  // a sink that keeps each file's bytes (the disk writer streams them to the data area instead)
  const contents = new Map<EntryMeta, Buffer[]>();
  let cur: Buffer[] = [];
  const sink: ContentSink = { begin: (meta) => { cur = []; contents.set(meta, cur); }, data: (c) => { cur.push(c); }, end: () => {} };
  const f = new Flattener(sink);
  const feed = async (entries: Parameters<typeof makeTar>[0]) => f.applyLayer((async function* () { yield makeTar(entries); })());
  await feed([
    { path: 'a/', type: 'dir' }, { path: 'a/x', content: '1' }, { path: 'a/sub/', type: 'dir' }, { path: 'a/sub/y', content: '2' },
    { path: 'keep/', type: 'dir' }, { path: 'keep/k', content: 'k' }, { path: 'ln', type: 'symlink', linkname: '/keep' }, { path: 'f', content: 'f', mode: 0o4755, uid: 5 },
  ]);
  await feed([
    { path: 'a/sub/', type: 'dir' }, { path: 'a/sub/new', content: 'n' }, // same layer, before the opaque marker
    { path: 'a/.wh..wh..opq', content: '' },
    { path: 'ln/through', content: 't' }, // lands in keep/
    { path: '.wh.f', content: '' }, { path: 'f', type: 'dir' }, // file replaced by a dir
  ]);
  const data = (p: string) => Buffer.concat(contents.get(f.entries.get(p)!)!).toString();
  assert.deepEqual([...f.entries.keys()].sort(), ['', 'a', 'a/sub', 'a/sub/new', 'f', 'keep', 'keep/k', 'keep/through', 'ln']);
  assert.equal(f.entries.get('ln')!.linkname, '/keep');
  assert.equal(f.entries.get('f')!.type, 'dir');
  assert.deepEqual([data('keep/through'), data('keep/k'), data('a/sub/new')], ['t', 'k', 'n']);
  assert.equal(contents.size, 6, 'every file\'s bytes went to the sink, the later removed ones too');
  assert.equal(f.stats.whiteouts, 2);
  // a parent the layer never lists is made without reading the clock (rebuilds give the same disk)
  await feed([{ path: 'implicit/deeper/file', content: 'i' }]);
  assert.equal(f.entries.get('implicit')!.mtime, 0);
  assert.equal(f.entries.get('implicit/deeper')!.type, 'dir');
  assert.equal(f.entries.get('implicit/deeper')!.mtime, 0);
});
