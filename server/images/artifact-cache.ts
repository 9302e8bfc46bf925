/**
 * Each daemon's local copy of the S3 artifact store (DATA_DIR/images): a file missing here is fetched from the store
 * into a temp dir, hashed while it is written, compared with the sha256 that the image row records, and only then
 * renamed into place, so the serving fast path (sendfile from the local file) only ever sees verified bytes.
 * Concurrent requests for the same file wait for one fetch (single flight). A copy whose hash differs is deleted,
 * logged and refused; it is never served.
 *
 * A raw disk (<id>.ext4, <id>.disk) is not kept in the store: it is the zstd form decompressed here (sparse, so the
 * zeros take no space), then checked against its own sha256.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { ArtifactStore, ArtifactStoreError } from './artifact-store.ts';
import { ImageError } from './errors.ts';

/** A file the cache can produce, and what its bytes must hash to. */
export interface ArtifactRef {
  /** File name in the images directory and in the store, e.g. 0123abcd.ext4.zst. */
  name: string;
  sha256: string;
  size?: number | null;
}

/** A fetched copy that is not the artifact, or a store that could not give it; `status` is the HTTP answer to a machine. */
export class ArtifactFetchError extends ImageError {
  constructor(message: string, readonly reason: 'mismatch' | 'missing' | 'unreachable' | 'no-space' | 'failed') {
    super(message, 'image');
    this.name = 'ArtifactFetchError';
  }
  get status(): number { return this.reason === 'unreachable' || this.reason === 'no-space' ? 503 : this.reason === 'missing' ? 404 : 502; }
}

export interface ArtifactCache {
  readonly dir: string;
  /** The local path of `ref`, fetched from the store and verified first when it is not here. */
  ensure(ref: ArtifactRef): Promise<string>;
  /** The local path of the raw form `raw`, decompressed from `zst` (itself ensured) when it is not here. */
  ensureRaw(raw: ArtifactRef, zst: ArtifactRef): Promise<string>;
}

const sha256File = async (path: string): Promise<{ sha256: string; size: number }> => {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of createReadStream(path, { highWaterMark: 4 << 20 }) as AsyncIterable<Buffer>) { h.update(c); size += c.length; }
  return { sha256: h.digest('hex'), size };
};

let tmpN = 0;

export function createArtifactCache(deps: {
  dir: string; store: ArtifactStore; log: Logger;
  /** Throws when writing about `need` bytes here would eat into the data disk's reserve (limits.ts checkFreeSpace). */
  checkSpace?: (need: number) => void;
  /** Counts fetches from the store by result (ok, mismatch, missing, unreachable, no-space, failed). */
  onFetch?: (result: string) => void;
}): ArtifactCache {
  const { dir, store } = deps;
  const log = deps.log.child({ svc: 'image-cache' });
  const space = (need: number | null | undefined, what: string) => {
    try { deps.checkSpace?.(need ?? 0); } catch (err) {
      log.error({ artifact: what, err: (err as Error).message }, 'image artifact not fetched: the data disk is full');
      throw new ArtifactFetchError(`cannot cache ${what} here: ${(err as Error).message}`, 'no-space');
    }
  };
  const inflight = new Map<string, Promise<string>>();
  /** A temp dir named as the image builder's (.tmp-<id>-<pid>-<n>), so recover() removes what a crash left. */
  const tempDir = (name: string) => {
    const t = join(dir, `.tmp-${name.replace(/[^a-z0-9]/g, '')}-${process.pid}-${++tmpN}`);
    mkdirSync(t, { recursive: true });
    return t;
  };
  const once = (name: string, work: () => Promise<string>): Promise<string> => {
    const path = join(dir, name);
    if (existsSync(path)) return Promise.resolve(path);
    let p = inflight.get(name);
    if (!p) {
      p = work().finally(() => inflight.delete(name));
      inflight.set(name, p);
    }
    return p;
  };
  const refuse = (ref: ArtifactRef, got: { sha256: string; size: number }, from: string): never => {
    log.error({ artifact: ref.name, from, expected: ref.sha256, got: got.sha256, size: got.size, expectedSize: ref.size ?? null },
      'image artifact refused: its sha256 does not match the image row; the copy was deleted and is not served');
    throw new ArtifactFetchError(`${from} does not match the image's sha256 (expected ${ref.sha256}, got ${got.sha256}, ${got.size} bytes): refused, not served; rebuild or re-upload the image`, 'mismatch');
  };

  async function fetch(ref: ArtifactRef): Promise<string> {
    try {
      const path = await download(ref);
      deps.onFetch?.('ok');
      return path;
    } catch (err) {
      deps.onFetch?.(err instanceof ArtifactFetchError ? err.reason : 'failed');
      throw err;
    }
  }

  async function download(ref: ArtifactRef): Promise<string> {
    space(ref.size, ref.name);
    const t0 = performance.now();
    const tmp = tempDir(ref.name);
    try {
      let opened;
      try {
        opened = await store.open(ref.name);
      } catch (err) {
        const e = err as ArtifactStoreError;
        const reason = e.code === 'not-found' ? 'missing' : e.code === 'unreachable' ? 'unreachable' : 'failed';
        log.error({ artifact: ref.name, err: e.message }, 'image artifact not fetched from the store');
        throw new ArtifactFetchError(e.code === 'not-found' ? `${store.describe(ref.name)} is missing from the store (the image row says it is ready)` : e.message, reason);
      }
      const file = join(tmp, ref.name);
      const h = createHash('sha256');
      let size = 0;
      await pipeline(opened.body, async function* (src) {
        for await (const c of src as AsyncIterable<Buffer>) { h.update(c); size += c.length; yield c; }
      }, createWriteStream(file));
      const got = { sha256: h.digest('hex'), size };
      if (got.sha256 !== ref.sha256) refuse(ref, got, store.describe(ref.name));
      renameSync(file, join(dir, ref.name));
      log.info({ artifact: ref.name, from: store.describe(ref.name), bytes: size, seconds: Math.round(performance.now() - t0) / 1000 }, 'image artifact fetched from the store and verified');
      return join(dir, ref.name);
    } catch (err) {
      if (err instanceof ArtifactFetchError) throw err;
      log.error({ artifact: ref.name, err: (err as Error).message }, 'image artifact fetch failed');
      throw new ArtifactFetchError(`fetching ${store.describe(ref.name)} failed: ${(err as Error).message}`, 'failed');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  async function decompress(raw: ArtifactRef, zst: ArtifactRef): Promise<string> {
    const zstPath = await cache.ensure(zst);
    space(zst.size, raw.name); // the raw disk is sparse: about the size of its data, which the zstd form bounds
    const tmp = tempDir(raw.name);
    try {
      const file = join(tmp, raw.name);
      await new Promise<void>((resolve, reject) => {
        // --sparse: the zero blocks of the disk stay holes, as when it was built
        const z = spawn('zstd', ['-d', '-q', '-f', '--sparse', '-o', file, zstPath], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        z.stderr.on('data', (d: Buffer) => { err += d.toString(); });
        z.on('error', (e) => reject(new ArtifactFetchError(`cannot run zstd to decompress ${zst.name}: ${e.message}`, 'failed')));
        z.on('close', (code) => (code === 0 ? resolve() : reject(new ArtifactFetchError(`zstd -d ${zst.name} failed (exit ${code}): ${err.trim()}`, 'failed'))));
      });
      const got = await sha256File(file);
      if (got.sha256 !== raw.sha256) refuse(raw, got, `${raw.name} decompressed from ${zst.name}`);
      renameSync(file, join(dir, raw.name));
      log.info({ artifact: raw.name, bytes: got.size }, 'raw image artifact decompressed from the cached zstd form and verified');
      return join(dir, raw.name);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  const cache: ArtifactCache = {
    dir,
    ensure: (ref) => once(ref.name, () => fetch(ref)),
    ensureRaw: (raw, zst) => once(raw.name, () => decompress(raw, zst)),
  };
  return cache;
}

