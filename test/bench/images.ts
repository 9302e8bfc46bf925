/**
 * Container disk benchmark (run by hand, as root: node --import tsx test/bench/images.ts [build|serve|all]).
 *
 * build: a Debian bookworm minbase rootfs (debootstrap, cached in /var/tmp/ironboot-bench) packed as a one-layer
 *   OCI image, converted by ironboot (from the OCI layout, and pulled from a docker-registry on 127.0.0.1),
 *   beside the ginit article's procedure without Docker (umoci unpack, dd, mkfs.ext4, loop mount inside
 *   `unshare -m`, cp -a) and beside `mkfs.ext4 -d` on the unpacked tree.
 * serve: a 1 GiB disk served to 1 and 50 concurrent curl clients by ironboot's /images route and by nginx
 *   (sendfile on) from the same file.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, statSync, linkSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Fastify from 'fastify';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService } from '../../server/images/index.ts';
import imageFilesRoutes from '../../server/http/routes/image-files.ts';
import { TestRegistry, freePort, type Blob } from '../helpers/images-oci.ts';

const BENCH = '/var/tmp/ironboot-bench';
const ROOTFS = join(BENCH, 'rootfs');
const OCI = join(BENCH, 'oci');
const WORK = join(BENCH, 'work');
const log = pino({ level: 'warn' });

function sh(cmd: string, opts: { allowFail?: boolean } = {}): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd}: exit ${r.status}\n${r.stderr}`);
  return r.stdout;
}

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = performance.now();
  const v = await fn();
  return [(performance.now() - t) / 1000, v];
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const dropCaches = () => sh('sync');

function prepareRootfs(): void {
  if (existsSync(join(ROOTFS, 'etc', 'debian_version'))) return;
  console.log('debootstrap --variant=minbase bookworm (once, cached) …');
  mkdirSync(BENCH, { recursive: true });
  rmSync(ROOTFS + '.tmp', { recursive: true, force: true });
  sh(`debootstrap --variant=minbase bookworm ${ROOTFS}.tmp http://deb.debian.org/debian > ${BENCH}/debootstrap.log 2>&1 && mv ${ROOTFS}.tmp ${ROOTFS}`);
}

/** Packs the rootfs as a one-layer gzip OCI image (GNU tar with xattrs, gzip -6), cached. */
function prepareOci(): { manifest: Blob; config: Blob; layer: Blob } {
  const done = join(OCI, 'index.json');
  if (!existsSync(done)) {
    console.log('packing the rootfs as an OCI image (once, cached) …');
    rmSync(OCI, { recursive: true, force: true });
    mkdirSync(join(OCI, 'blobs', 'sha256'), { recursive: true });
    sh(`tar --xattrs --xattrs-include='*' --numeric-owner --sort=name -C ${ROOTFS} -cf - . | gzip -6 > ${OCI}/layer.tar.gz`);
    const diffId = sh(`gzip -dc ${OCI}/layer.tar.gz | sha256sum`).split(' ')[0];
    const layerDigest = sh(`sha256sum ${OCI}/layer.tar.gz`).split(' ')[0];
    sh(`mv ${OCI}/layer.tar.gz ${OCI}/blobs/sha256/${layerDigest}`);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/bash'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] }, rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] } }));
    writeFileSync(join(OCI, 'blobs', 'sha256', sha(config)), config);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${layerDigest}`, size: statSync(join(OCI, 'blobs', 'sha256', layerDigest)).size }] }));
    writeFileSync(join(OCI, 'blobs', 'sha256', sha(manifest)), manifest);
    writeFileSync(join(OCI, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(done, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  }
  const index = JSON.parse(readFileSync(done, 'utf8'));
  const mdigest: string = index.manifests[0].digest;
  const mbytes = readFileSync(join(OCI, 'blobs', 'sha256', mdigest.slice(7)));
  const m = JSON.parse(mbytes.toString());
  const blob = (d: string, mediaType: string): Blob => ({ digest: d, mediaType, bytes: readFileSync(join(OCI, 'blobs', 'sha256', d.slice(7))) });
  return { manifest: { digest: mdigest, mediaType: m.mediaType, bytes: mbytes }, config: blob(m.config.digest, m.config.mediaType), layer: blob(m.layers[0].digest, m.layers[0].mediaType) };
}

async function ironbootBuild(source: Parameters<ReturnType<typeof createImageService>['build']>[0], tag: string): Promise<{ seconds: number; stages: Record<string, number>; raw: number; zst: number; entries: number }> {
  const dataDir = join(WORK, `data-${tag}`);
  rmSync(dataDir, { recursive: true, force: true });
  const store = Store.open(dataDir);
  try {
    const svc = createImageService({ store, log, registry: new Registry(), dataDir });
    dropCaches();
    const [seconds, img] = await timed(() => svc.build(source));
    const p = img.progress as { seconds: Record<string, number>; entries: number };
    return { seconds, stages: p.seconds, raw: img.rawSize!, zst: img.compressedSize!, entries: p.entries };
  } finally {
    store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

function articleProcedure(sizeMiB: number): { seconds: number; unpack: number; mkfsCopy: number } {
  const bundle = join(WORK, 'bundle');
  const img = join(WORK, 'article.img');
  const mnt = join(WORK, 'mnt');
  rmSync(bundle, { recursive: true, force: true });
  rmSync(img, { force: true });
  mkdirSync(mnt, { recursive: true });
  dropCaches();
  const t0 = performance.now();
  sh(`umoci unpack --image ${OCI}:latest ${bundle} > /dev/null`);
  const t1 = performance.now();
  sh(`dd if=/dev/zero of=${img} bs=1M count=${sizeMiB} status=none && mkfs.ext4 -q -F ${img} && ` +
    `unshare -m --propagation private sh -c 'mount -o loop ${img} ${mnt} && cp -a ${bundle}/rootfs/. ${mnt}/ && umount ${mnt}'`);
  const t2 = performance.now();
  return { seconds: (t2 - t0) / 1000, unpack: (t1 - t0) / 1000, mkfsCopy: (t2 - t1) / 1000 };
}

function mke2fsFromTree(sizeMiB: number): number {
  const img = join(WORK, 'mke2fs.img');
  rmSync(img, { force: true });
  dropCaches();
  const t = performance.now();
  sh(`mkfs.ext4 -q -F -b 4096 -N 16384 -d ${join(WORK, 'bundle', 'rootfs')} ${img} ${sizeMiB}M`);
  const s = (performance.now() - t) / 1000;
  rmSync(img, { force: true });
  return s;
}

async function benchBuild(): Promise<void> {
  prepareRootfs();
  const blobs = prepareOci();
  mkdirSync(WORK, { recursive: true });
  const rootfsMiB = Number(sh(`du -sm ${ROOTFS}`).split('\t')[0]);
  const files = Number(sh(`find ${ROOTFS} | wc -l`).trim());
  console.log(`\n== build: Debian bookworm minbase, ${rootfsMiB} MiB, ${files} entries, layer ${(blobs.layer.bytes.length / 2 ** 20).toFixed(1)} MiB gzip ==`);

  const reg = new TestRegistry();
  await reg.start();
  try {
    await reg.push('bench/debian', 'bookworm', { config: blobs.config, layers: [blobs.layer], manifest: blobs.manifest, diffIds: [] });
    const runs: Record<string, number[]> = { oci: [], registry: [] };
    const rawOnly: number[] = [];
    let last: Awaited<ReturnType<typeof ironbootBuild>> | null = null;
    for (let i = 0; i < 3; i++) {
      const a = await ironbootBuild({ type: 'oci-layout', path: OCI }, 'oci');
      runs.oci.push(a.seconds);
      const b = await ironbootBuild({ type: 'registry', ref: `${reg.host}/bench/debian:bookworm`, insecure: true }, 'reg');
      runs.registry.push(b.seconds);
      rawOnly.push(b.stages.pull + b.stages.filesystem);
      last = b;
    }
    const sizeMiB = Math.ceil(last!.raw / 2 ** 20);
    const article = [articleProcedure(sizeMiB), articleProcedure(sizeMiB)];
    const mk = [mke2fsFromTree(sizeMiB), mke2fsFromTree(sizeMiB)];
    const best = (xs: number[]) => Math.min(...xs);
    const art = article.reduce((a, b) => (a.seconds < b.seconds ? a : b));
    console.log(`ironboot from OCI layout (pull+flatten+data to ext4 and zstd, metadata, sha256): best ${best(runs.oci).toFixed(2)} s  [${runs.oci.map((x) => x.toFixed(2)).join(', ')}]`);
    console.log(`ironboot from registry on 127.0.0.1:                                            best ${best(runs.registry).toFixed(2)} s  [${runs.registry.map((x) => x.toFixed(2)).join(', ')}]`);
    console.log(`  stages of the last registry build: ${JSON.stringify(Object.fromEntries(Object.entries(last!.stages).map(([k, v]) => [k, Number(v.toFixed(2))])))}`);
    console.log(`  disk ${(last!.raw / 2 ** 20).toFixed(0)} MiB raw, ${(last!.zst / 2 ** 20).toFixed(1)} MiB zstd, ${last!.entries} entries`);
    console.log(`article procedure (umoci unpack, dd, mkfs.ext4, loop mount, cp -a; no compression): best ${art.seconds.toFixed(2)} s (unpack ${art.unpack.toFixed(2)} s, dd+mkfs+copy ${art.mkfsCopy.toFixed(2)} s)`);
    console.log(`mkfs.ext4 -d on the unpacked tree (tree already there):   best ${best(mk).toFixed(2)} s`);
    console.log(`ratio article / ironboot (registry): ${(art.seconds / best(runs.registry)).toFixed(2)}×   (OCI layout: ${(art.seconds / best(runs.oci)).toFixed(2)}×; goal ≥ 3×)`);
    console.log(`ratio article / ironboot up to the raw disk like the article (registry pull+filesystem stages, zstd overlapping, no final hashing: best ${best(rawOnly).toFixed(2)} s): ${(art.seconds / best(rawOnly)).toFixed(2)}×`);
  } finally {
    await reg.destroy();
    rmSync(join(WORK, 'bundle'), { recursive: true, force: true });
    rmSync(join(WORK, 'article.img'), { force: true });
  }
}

/** n concurrent curl downloads of url; returns aggregate GB/s (1e9 bytes/s). */
/** /images/ needs a token (server/http/routes/image-files.ts); nginx ignores the header. */
const BENCH_ADMIN = 'bench-admin-token';

async function curlClients(url: string, n: number, bytes: number): Promise<number> {
  const t = performance.now();
  await Promise.all(Array.from({ length: n }, () => new Promise<void>((resolve, reject) => {
    const c = spawn('curl', ['-s', '-f', '-H', `authorization: Bearer ${BENCH_ADMIN}`, '-o', '/dev/null', '-w', '%{size_download}', url], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('close', (code) => (code === 0 && Number(out) === bytes ? resolve() : reject(new Error(`curl ${url}: exit ${code}, ${out} bytes`))));
  })));
  return (n * bytes) / ((performance.now() - t) / 1000) / 1e9;
}

async function benchServe(): Promise<void> {
  const file = join(BENCH, 'disk-1g.bin');
  if (!existsSync(file)) sh(`head -c 1G /dev/urandom > ${file}`);
  const bytes = statSync(file).size;
  const dataDir = join(WORK, 'serve-data');
  rmSync(dataDir, { recursive: true, force: true });
  const store = Store.open(dataDir);
  const svc = createImageService({ store, log, registry: new Registry(), dataDir });
  const id = 'bench1gdisk';
  linkSync(file, svc.filePath(id, 'raw'));
  linkSync(file, svc.filePath(id, 'zst'));
  store.images.insert({ id, name: 'bench', state: 'ready', rawSha256: 'x', compressedSha256: 'y', rawSize: bytes, compressedSize: bytes });
  const app = Fastify({ logger: false });
  await app.register(imageFilesRoutes, { store, log, imageService: svc, adminToken: BENCH_ADMIN } as never);
  const port = await freePort();
  await app.listen({ host: '127.0.0.1', port });
  const nport = await freePort();
  const nconf = join(WORK, 'nginx.conf');
  writeFileSync(nconf, `worker_processes 2; daemon off; pid ${WORK}/nginx.pid; error_log ${WORK}/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; server { listen 127.0.0.1:${nport}; root ${svc.imagesDir}; } }
`);
  const nginx = spawn('nginx', ['-c', nconf], { stdio: 'inherit' });
  try {
    for (let i = 0; i < 50; i++) { if (spawnSync('curl', ['-sf', '-o', '/dev/null', `http://127.0.0.1:${nport}/${id}.ext4`, '-r', '0-0']).status === 0) break; await new Promise((r) => setTimeout(r, 100)); }
    sh(`cat ${file} > /dev/null`);
    console.log(`\n== serve: ${(bytes / 2 ** 30).toFixed(2)} GiB disk, curl clients on loopback, ${readdirSync('/sys/devices/system/cpu').filter((c) => /^cpu\d+$/.test(c)).length} CPUs ==`);
    for (const n of [1, 50]) {
      const ng: number[] = [];
      const ib: number[] = [];
      const js: number[] = [];
      for (let r = 0; r < 2; r++) {
        ng.push(await curlClients(`http://127.0.0.1:${nport}/${id}.ext4`, n, bytes));
        delete process.env.IRONBOOT_SENDFILE;
        ib.push(await curlClients(`http://127.0.0.1:${port}/images/${id}.ext4`, n, bytes));
        process.env.IRONBOOT_SENDFILE = '0';
        js.push(await curlClients(`http://127.0.0.1:${port}/images/${id}.ext4`, n, bytes));
        delete process.env.IRONBOOT_SENDFILE;
      }
      const [bn, bi, bj] = [ng, ib, js].map((x) => Math.max(...x));
      const f = (x: number[]) => `[${x.map((v) => v.toFixed(2))}]`;
      console.log(`${String(n).padStart(2)} client(s): nginx ${bn.toFixed(2)} GB/s, ironboot ${bi.toFixed(2)} GB/s → ${(100 * bi / bn).toFixed(0)} % of nginx (goal ≥ 90 %); ` +
        `without the sendfile helper ${bj.toFixed(2)} GB/s → ${(100 * bj / bn).toFixed(0)} %   runs: nginx ${f(ng)} ironboot ${f(ib)} js-loop ${f(js)}`);
    }
  } finally {
    nginx.kill('SIGTERM');
    await app.close();
    store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const what = process.argv[2] ?? 'all';
if (what === 'build' || what === 'all') await benchBuild();
if (what === 'serve' || what === 'all') await benchServe();
