/**
 * Test helpers for container images: a tar writer (PAX, binary xattrs), an OCI image layout writer, a
 * `docker save`-style archive writer, and a real registry (Debian's docker-registry) on 127.0.0.1 with a push client.
 */
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export interface TarSpec {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo';
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Buffer | string>;
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', chardev: '3', blockdev: '4', dir: '5', fifo: '6' } as const;

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

function header(name: string, typeflag: string, size: number, spec: TarSpec): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'utf8');
  h.write(octal(spec.mode ?? (typeflag === '5' ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(spec.uid ?? 0, 8), 108, 'ascii');
  h.write(octal(spec.gid ?? 0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(spec.mtime ?? 1700000000, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write((spec.linkname ?? '').slice(0, 100), 157, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write(octal(spec.devmajor ?? 0, 8), 329, 'ascii');
  h.write(octal(spec.devminor ?? 0, 8), 337, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

const pad512 = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** Writes a tar archive; long paths and xattrs go in PAX headers, values byte for byte. */
export function makeTar(entries: TarSpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.content !== undefined ? 'file' : 'dir');
    const content = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    const records: Buffer[] = [];
    if (Buffer.byteLength(e.path) > 99) records.push(paxRecord('path', Buffer.from(e.path)));
    if (e.linkname && Buffer.byteLength(e.linkname) > 99) records.push(paxRecord('linkpath', Buffer.from(e.linkname)));
    for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)));
    if (records.length) {
      const body = Buffer.concat(records);
      parts.push(header('PaxHeaders/x', 'x', body.length, {} as TarSpec), body, pad512(body.length));
    }
    parts.push(header(e.path, TYPEFLAG[type], content.length, e), content, pad512(content.length));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export interface ImageSpec {
  layers: TarSpec[][];
  config?: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; WorkingDir?: string; User?: string };
  compression?: 'gzip' | 'zstd' | 'none';
  architecture?: string;
}

export interface Blob { digest: string; mediaType: string; bytes: Buffer }
export interface BuiltImage { config: Blob; layers: Blob[]; manifest: Blob; diffIds: string[] }

function zstdCompress(b: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: b, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr}`);
  return r.stdout;
}

/** Builds the blobs of one OCI image (config, layers, manifest). */
export function buildImage(spec: ImageSpec): BuiltImage {
  const comp = spec.compression ?? 'gzip';
  const diffIds: string[] = [];
  const layers: Blob[] = spec.layers.map((entries) => {
    const tar = makeTar(entries);
    diffIds.push(`sha256:${sha256(tar)}`);
    const bytes = comp === 'gzip' ? gzipSync(tar) : comp === 'zstd' ? zstdCompress(tar) : tar;
    const mediaType = `application/vnd.oci.image.layer.v1.tar${comp === 'gzip' ? '+gzip' : comp === 'zstd' ? '+zstd' : ''}`;
    return { digest: `sha256:${sha256(bytes)}`, mediaType, bytes };
  });
  const configJson = Buffer.from(JSON.stringify({
    architecture: spec.architecture ?? 'amd64', os: 'linux', config: spec.config ?? {},
    rootfs: { type: 'layers', diff_ids: diffIds }, history: [],
  }));
  const config: Blob = { digest: `sha256:${sha256(configJson)}`, mediaType: 'application/vnd.oci.image.config.v1+json', bytes: configJson };
  const manifestJson = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: config.mediaType, digest: config.digest, size: configJson.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.bytes.length })),
  }));
  return { config, layers, diffIds, manifest: { digest: `sha256:${sha256(manifestJson)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: manifestJson } };
}

/** An OCI index over several images (by platform). */
export function buildIndex(images: { image: BuiltImage; os: string; architecture: string; variant?: string }[]): Blob {
  const json = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: images.map((i) => ({
      mediaType: i.image.manifest.mediaType, digest: i.image.manifest.digest, size: i.image.manifest.bytes.length,
      platform: { os: i.os, architecture: i.architecture, ...(i.variant ? { variant: i.variant } : {}) },
    })),
  }));
  return { digest: `sha256:${sha256(json)}`, mediaType: 'application/vnd.oci.image.index.v1+json', bytes: json };
}

/** Writes an OCI image layout directory (oci-layout, index.json, blobs/sha256/…) tagged `tag`. */
export function writeOciLayout(dir: string, image: BuiltImage, tag = 'latest'): void {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  for (const b of [image.config, ...image.layers, image.manifest]) writeFileSync(join(dir, 'blobs', 'sha256', b.digest.slice(7)), b.bytes);
  writeFileSync(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: image.manifest.mediaType, digest: image.manifest.digest, size: image.manifest.bytes.length,
      annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
}

/** A tar of a directory's files (flat list of regular files and dirs), for OCI-layout-as-tar and docker-archive. */
export function tarOfFiles(files: Record<string, Buffer | string>): Buffer {
  const dirs = new Set<string>();
  for (const p of Object.keys(files)) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/') + '/');
  }
  return makeTar([...[...dirs].sort().map((d) => ({ path: d, type: 'dir' as const })),
    ...Object.entries(files).map(([path, content]) => ({ path, content: Buffer.from(content) }))]);
}

/** An OCI layout packed in a tar (as `skopeo copy … oci-archive:`). */
export function ociArchive(image: BuiltImage, tag = 'latest'): Buffer {
  const tmp = mkdtempSync(join(tmpdir(), 'ibi-oci-'));
  try {
    writeOciLayout(tmp, image, tag);
    const files: Record<string, Buffer> = {
      'oci-layout': readFileSync(join(tmp, 'oci-layout')), 'index.json': readFileSync(join(tmp, 'index.json')),
    };
    for (const b of [image.config, ...image.layers, image.manifest]) files[`blobs/sha256/${b.digest.slice(7)}`] = b.bytes;
    return tarOfFiles(files);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A `docker save` archive (legacy format: manifest.json, <id>.json, <id>/layer.tar uncompressed). */
export function dockerArchive(spec: ImageSpec, repoTag = 'test/image:latest'): Buffer {
  const image = buildImage({ ...spec, compression: 'none' });
  const files: Record<string, Buffer> = {};
  const layerPaths: string[] = [];
  image.layers.forEach((l) => {
    const id = l.digest.slice(7);
    files[`${id}/layer.tar`] = l.bytes;
    files[`${id}/VERSION`] = Buffer.from('1.0');
    layerPaths.push(`${id}/layer.tar`);
  });
  files[`${image.config.digest.slice(7)}.json`] = image.config.bytes;
  files['manifest.json'] = Buffer.from(JSON.stringify([{ Config: `${image.config.digest.slice(7)}.json`, RepoTags: [repoTag], Layers: layerPaths }]));
  return tarOfFiles(files);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export const REGISTRY_BIN = '/usr/bin/docker-registry';
export const registryUnavailable = (): string | false => (existsSync(REGISTRY_BIN) ? false : `${REGISTRY_BIN} missing (apt-get install docker-registry)`);

/** A real distribution v2 registry on 127.0.0.1:<free port> with a temporary storage dir. */
export class TestRegistry {
  private proc: ChildProcess | null = null;
  readonly dir: string;
  port = 0;
  /** Sent with every push (e.g. "Bearer …" when the registry uses token auth). */
  authorization: string | null = null;

  /** extraConfig: YAML appended to the config (e.g. an auth: section). */
  constructor(private extraConfig = '') {
    this.dir = mkdtempSync(join(tmpdir(), 'ibi-registry-'));
  }

  get host(): string { return `127.0.0.1:${this.port}`; }

  async start(): Promise<void> {
    this.port = await freePort();
    const cfg = join(this.dir, 'config.yml');
    writeFileSync(cfg, `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(this.dir, 'storage')}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${this.port}
${this.extraConfig}`);
    this.proc = spawn(REGISTRY_BIN, ['serve', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    this.proc.stderr!.on('data', (d) => { stderr += d; });
    for (let i = 0; i < 100; i++) {
      if (this.proc.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
      try {
        const r = await fetch(`http://${this.host}/v2/`);
        if (r.status === 200 || r.status === 401) return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`docker-registry did not start: ${stderr}`);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (p && p.exitCode === null) {
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await done;
    }
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Path of a stored blob's data file (to corrupt it in tests). */
  blobPath(digest: string): string {
    const hex = digest.slice(7);
    return join(this.dir, 'storage', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  async pushBlob(repo: string, blob: Blob): Promise<void> {
    const base = `http://${this.host}`;
    const auth: Record<string, string> = this.authorization ? { authorization: this.authorization } : {};
    const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
    if (start.status !== 202) throw new Error(`upload start: ${start.status} ${await start.text()}`);
    const loc = new URL(start.headers.get('location')!, base);
    loc.searchParams.set('digest', blob.digest);
    const put = await fetch(loc, { method: 'PUT', body: blob.bytes, headers: { 'content-type': 'application/octet-stream', ...auth } });
    if (put.status !== 201) throw new Error(`blob put: ${put.status} ${await put.text()}`);
  }

  async pushManifest(repo: string, ref: string, m: Blob): Promise<void> {
    const r = await fetch(`http://${this.host}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: m.bytes, headers: { 'content-type': m.mediaType, ...(this.authorization ? { authorization: this.authorization } : {}) } });
    if (r.status !== 201) throw new Error(`manifest put: ${r.status} ${await r.text()}`);
  }

  async push(repo: string, tag: string, image: BuiltImage): Promise<void> {
    for (const b of [image.config, ...image.layers]) await this.pushBlob(repo, b);
    await this.pushManifest(repo, tag, image.manifest);
  }
}

/** The static busybox from Debian's busybox-static as a one-layer image with its applet links. */
export function busyboxLayer(): TarSpec[] {
  const bin = readFileSync('/bin/busybox');
  return [
    { path: 'bin/', type: 'dir' }, { path: 'bin/busybox', content: bin, mode: 0o755 },
    ...['sh', 'ls', 'cat', 'echo'].map((a) => ({ path: `bin/${a}`, type: 'hardlink' as const, linkname: 'bin/busybox' })),
    { path: 'etc/', type: 'dir' }, { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'tmp/', type: 'dir', mode: 0o1777 }, { path: 'root/', type: 'dir', mode: 0o700 },
  ];
}

export const busyboxAvailable = (): boolean => existsSync('/bin/busybox');
