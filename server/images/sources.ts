/**
 * Where an image comes from: a registry, an OCI image layout (directory or tar) or a `docker save` tar.
 * Each is resolved to the same shape: the manifest digest, the run-time config and the layers to apply in order.
 */
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { ImageError } from './errors.ts';
import { parseManifest, parseImageConfig, pickPlatform, type Descriptor, type ImageConfig, MEDIA } from './manifest.ts';
import { parseReference, parsePlatform, formatPlatform, formatReference, type Platform, DIGEST } from './reference.ts';
import { RegistryClient } from './registry.ts';
import { parseNumeric, parsePax } from './tar.ts';

export interface ImageSource {
  type: 'registry' | 'oci-layout' | 'docker-archive';
  /** registry: the image reference; oci-layout: the tag inside the layout; docker-archive: a RepoTag (optional). */
  ref?: string;
  /** oci-layout / docker-archive: the directory or tar file. */
  path?: string;
  platform?: string;
  insecure?: boolean;
}

export interface LayerSource {
  digest: string;
  size: number;
  mediaType: string;
  /** What the digest covers: the bytes as stored (registry, OCI) or the uncompressed tar (docker save: diff_ids). */
  verify: 'stored' | 'uncompressed';
  open(): Promise<AsyncIterable<Buffer>>;
}

export interface ResolvedImage {
  /** A description of the source for the images row, e.g. "127.0.0.1:5000/app:1.0" or "oci-layout:/path:tag". */
  source: string;
  /** The digest that identifies the content: the platform manifest's (registry, OCI) or the config's (docker save). */
  digest: string;
  config: ImageConfig;
  layers: LayerSource[];
}

export const DEFAULT_PLATFORM = 'linux/amd64';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function checkConfigDigest(bytes: Buffer, digest: string): void {
  if (sha256(bytes) !== digest) throw new ImageError(`image config does not match its digest ${digest} (got ${sha256(bytes)})`);
}

function checkPlatform(config: ImageConfig, want: Platform, explicit: boolean): void {
  if (!explicit) return;
  if (config.platform.os !== want.os || config.platform.architecture !== want.architecture) {
    throw new ImageError(`the image is for ${formatPlatform(config.platform)}, not ${formatPlatform(want)}`, 'source.platform');
  }
}

export async function resolveSource(src: ImageSource): Promise<ResolvedImage> {
  const platform = parsePlatform(src.platform ?? DEFAULT_PLATFORM);
  if (src.type === 'registry') return resolveRegistry(src, platform);
  if (!src.path) throw new ImageError(`source.path is required for a ${src.type} source`, 'source.path');
  let st;
  try { st = statSync(src.path); } catch { throw new ImageError(`${src.path}: no such file or directory`, 'source.path'); }
  const files = st.isDirectory() ? dirFiles(src.path) : tarFiles(src.path);
  if (src.type === 'oci-layout') return resolveOciLayout(src, files, platform);
  if (src.type === 'docker-archive') return resolveDockerArchive(src, files, platform);
  throw new ImageError(`unknown source type "${(src as ImageSource).type}"`, 'source.type');
}

async function resolveRegistry(src: ImageSource, platform: Platform): Promise<ResolvedImage> {
  if (!src.ref) throw new ImageError('source.ref is required for a registry source', 'source.ref');
  const ref = parseReference(src.ref);
  const client = new RegistryClient(ref, { insecure: src.insecure });
  let m = await client.manifest(ref.digest ?? ref.tag!);
  let parsed = parseManifest(m.bytes, m.mediaType);
  if (parsed.kind === 'index') {
    const d = pickPlatform(parsed.manifests, platform);
    m = await client.manifest(d.digest);
    parsed = parseManifest(m.bytes, m.mediaType);
    if (parsed.kind !== 'manifest') throw new ImageError(`${src.ref}: an index inside an index is not supported`);
  }
  const configBytes = await client.blobBytes(parsed.config.digest);
  checkConfigDigest(configBytes, parsed.config.digest);
  const config = parseImageConfig(configBytes);
  checkPlatform(config, platform, !!src.platform);
  return {
    source: formatReference(ref), digest: m.digest, config,
    layers: parsed.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, verify: 'stored' as const, open: () => client.blob(l.digest) })),
  };
}

/** Files of a layout/archive: a directory or an uncompressed tar, read without unpacking. */
interface FileSet {
  has(path: string): boolean;
  read(path: string, max?: number): Buffer;
  open(path: string): AsyncIterable<Buffer>;
  size(path: string): number;
  describe: string;
}

function dirFiles(dir: string): FileSet {
  const p = (f: string) => join(dir, posix.normalize(f).replace(/^(\.\.\/)+/, ''));
  return {
    describe: dir,
    has: (f) => { try { return statSync(p(f)).isFile(); } catch { return false; } },
    size: (f) => statSync(p(f)).size,
    read: (f) => { try { return readFileSync(p(f)); } catch { throw new ImageError(`${dir}: ${f} is missing`, 'source.path'); } },
    open: (f) => createReadStream(p(f), { highWaterMark: 1 << 20 }),
  };
}

/** Indexes a tar's regular files (offset and size) by reading its headers only. */
export function indexTar(path: string): Map<string, { offset: number; size: number }> {
  const fd = openSync(path, 'r');
  const out = new Map<string, { offset: number; size: number }>();
  try {
    const total = statSync(path).size;
    const h = Buffer.alloc(512);
    let pos = 0;
    let paxPath: string | null = null;
    let longName: string | null = null;
    while (pos + 512 <= total) {
      readSync(fd, h, 0, 512, pos);
      if (h.every((b) => b === 0)) break;
      const size = parseNumeric(h, 124, 12);
      const type = String.fromCharCode(h[156]);
      const dataPos = pos + 512;
      if (type === 'x' || type === 'L') {
        const body = Buffer.alloc(size);
        readSync(fd, body, 0, size, dataPos);
        if (type === 'x') { const v = parsePax(body).get('path'); if (v) paxPath = v.toString('utf8'); }
        else longName = body.toString('utf8').replace(/\0.*$/s, '');
      } else {
        let name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
        const prefix = h.toString('ascii', 257, 263) === 'ustar\0' ? h.toString('utf8', 345, 500).replace(/\0.*$/s, '') : '';
        if (prefix) name = `${prefix}/${name}`;
        name = paxPath ?? longName ?? name;
        paxPath = longName = null;
        if (type === '0' || type === '\0' || type === '7') out.set(posix.normalize(name).replace(/^\.?\//, ''), { offset: dataPos, size });
      }
      pos = dataPos + Math.ceil(size / 512) * 512;
    }
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(`${path}: not a readable tar archive (${(err as Error).message})`, 'source.path');
  } finally {
    closeSync(fd);
  }
  if (!out.size) throw new ImageError(`${path}: not a tar archive or empty`, 'source.path');
  return out;
}

function tarFiles(path: string): FileSet {
  const index = indexTar(path);
  const get = (f: string) => {
    const e = index.get(posix.normalize(f).replace(/^\.?\//, ''));
    if (!e) throw new ImageError(`${path}: ${f} is missing from the archive`, 'source.path');
    return e;
  };
  return {
    describe: path,
    has: (f) => index.has(posix.normalize(f).replace(/^\.?\//, '')),
    size: (f) => get(f).size,
    read: (f) => {
      const e = get(f);
      const fd = openSync(path, 'r');
      try { const b = Buffer.alloc(e.size); readSync(fd, b, 0, e.size, e.offset); return b; } finally { closeSync(fd); }
    },
    open: (f) => {
      const e = get(f);
      return e.size === 0 ? (async function* () {})() : createReadStream(path, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1 << 20 });
    },
  };
}

const blobPath = (digest: string) => `blobs/${digest.replace(':', '/')}`;

function parseJson<T>(b: Buffer, what: string): T {
  try { return JSON.parse(b.toString('utf8')) as T; } catch { throw new ImageError(`${what} is not valid JSON`, 'source.path'); }
}

async function resolveOciLayout(src: ImageSource, files: FileSet, platform: Platform): Promise<ResolvedImage> {
  if (!files.has('oci-layout') || !files.has('index.json')) throw new ImageError(`${files.describe} is not an OCI image layout (no oci-layout/index.json)`, 'source.path');
  const readBlob = (d: Descriptor) => {
    if (!DIGEST.test(d.digest)) throw new ImageError(`unsupported digest ${d.digest}`);
    const b = files.read(blobPath(d.digest));
    if (sha256(b) !== d.digest) throw new ImageError(`${files.describe}: blob ${d.digest} does not match its digest`);
    return b;
  };
  const index = parseManifest(files.read('index.json'));
  if (index.kind !== 'index') throw new ImageError(`${files.describe}: index.json is not an image index`, 'source.path');
  let candidates = index.manifests;
  if (src.ref) {
    candidates = candidates.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] === src.ref);
    if (!candidates.length) {
      const tags = index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).filter(Boolean);
      throw new ImageError(`${files.describe}: no image tagged "${src.ref}" (tags: ${tags.join(', ') || 'none'})`, 'source.ref');
    }
  }
  let desc = candidates.length === 1 ? candidates[0] : candidates.some((c) => c.platform) ? pickPlatform(candidates, platform) : null;
  if (!desc) throw new ImageError(`${files.describe} holds ${candidates.length} images: name one with its tag`, 'source.ref');
  let bytes = readBlob(desc);
  let parsed = parseManifest(bytes, desc.mediaType);
  if (parsed.kind === 'index') {
    desc = pickPlatform(parsed.manifests, platform);
    bytes = readBlob(desc);
    parsed = parseManifest(bytes, desc.mediaType);
  }
  if (parsed.kind !== 'manifest') throw new ImageError(`${files.describe}: nested index not supported`);
  const config = parseImageConfig(readBlob(parsed.config));
  checkPlatform(config, platform, !!src.platform);
  return {
    source: `oci-layout:${files.describe}${src.ref ? `:${src.ref}` : ''}`, digest: desc.digest, config,
    layers: parsed.layers.map((l) => ({
      digest: l.digest, size: l.size, mediaType: l.mediaType, verify: 'stored' as const,
      open: async () => files.open(blobPath(l.digest)),
    })),
  };
}

async function resolveDockerArchive(src: ImageSource, files: FileSet, platform: Platform): Promise<ResolvedImage> {
  if (!files.has('manifest.json')) throw new ImageError(`${files.describe} is not a docker save archive (no manifest.json)`, 'source.path');
  const list = parseJson<{ Config: string; RepoTags?: string[]; Layers: string[] }[]>(files.read('manifest.json'), 'manifest.json');
  if (!Array.isArray(list) || !list.length) throw new ImageError(`${files.describe}: manifest.json lists no image`, 'source.path');
  let entry = list[0];
  if (src.ref) {
    const want = src.ref.includes(':') ? src.ref : `${src.ref}:latest`;
    const found = list.find((e) => (e.RepoTags ?? []).some((t) => t === want || t === src.ref));
    if (!found) throw new ImageError(`${files.describe}: no image tagged "${src.ref}" (tags: ${list.flatMap((e) => e.RepoTags ?? []).join(', ') || 'none'})`, 'source.ref');
    entry = found;
  } else if (list.length > 1) throw new ImageError(`${files.describe} holds ${list.length} images: name one with its tag`, 'source.ref');
  const configBytes = files.read(entry.Config);
  const config = parseImageConfig(configBytes);
  checkPlatform(config, platform, !!src.platform);
  if (config.diffIds.length !== entry.Layers.length) throw new ImageError(`${files.describe}: config lists ${config.diffIds.length} layers, manifest.json ${entry.Layers.length}`);
  return {
    source: `docker-archive:${files.describe}${src.ref ? `:${src.ref}` : ''}`, digest: sha256(configBytes), config,
    layers: entry.Layers.map((p, i) => ({
      digest: config.diffIds[i], size: files.size(p), mediaType: MEDIA.dockerManifest, verify: 'uncompressed' as const,
      open: async () => files.open(p),
    })),
  };
}

export function describeSource(src: ImageSource): string {
  if (src.type === 'registry') {
    try { return formatReference(parseReference(src.ref ?? '')); } catch { return src.ref ?? ''; }
  }
  return `${src.type}:${src.path}${src.ref ? `:${src.ref}` : ''}`;
}
