/**
 * Container disks: a container image (registry, OCI layout, docker save) → a content-addressed ext4 image and
 * its zstd form in DATA_DIR/images/, recorded in the images table.
 *
 * A build works in DATA_DIR/images/.tmp-<id>-<pid>-<n>/ and renames its two files into place at the end, then
 * marks the row ready in one transaction: a failed or interrupted build leaves no file and no ready row.
 *
 * With an S3 artifact store (--images s3://…, artifact-store.ts) the zstd form is uploaded before the row is
 * marked ready, so a ready row means every daemon can fetch it; DATA_DIR/images is then each daemon's verified
 * cache of the bucket (artifact-cache.ts), and the row is the same whichever daemon built it.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { daemonIdentity } from '../data-dir.ts';
import { join } from 'node:path';
import { SHARE_ENV, Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { Counter, Histogram } from 'prom-client';
import type { Store } from '../store/index.ts';
import type { Image } from '../store/images.ts';
import type { ImageFiles } from '../http/app.ts';
import { codecUnavailable, nativeCodec } from './codec.ts';
import { ImageError } from './errors.ts';
import { resolveSource, describeSource, type ImageSource, type ResolvedImage } from './sources.ts';
import { parseSize } from './disk.ts';
import { buildDisk, asImageError, type BuildJob, type BuildResult, type BuildEvents } from './build.ts';
import type { WorkerMessage } from './build-worker.ts';
import { checkFreeSpace, limitsFromEnv, type ImageLimits } from './limits.ts';
import { parseReference } from './reference.ts';
import type { ArtifactStore } from './artifact-store.ts';
import { createArtifactCache, ArtifactFetchError } from './artifact-cache.ts';

export { ImageError, ArtifactFetchError, type ImageSource };

export interface BuildOptions {
  name?: string;
  /** Force the disk size: bytes or "2G"-style. */
  size?: number | string;
  /** Free space as a fraction of the content when sized automatically (default 0.25). */
  headroom?: number;
}

export interface BuildProgress {
  stage: 'resolving' | 'pulling' | 'filesystem' | 'compressing' | 'uploading' | 'done' | 'failed';
  layersTotal: number;
  layersDone: number;
  bytesPulled: number;
  bytesToPull: number;
  bytesFlattened: number;
  entries: number;
  /** The raw disk size, known when the build is done. */
  diskBytes?: number;
  /** Bytes of the raw disk written and fed to zstd so far (file data while the layers stream, then the metadata). */
  bytesCompressed?: number;
  /** Bytes of the zstd form uploaded to the S3 artifact store so far. */
  bytesUploaded?: number;
  seconds?: Record<string, number>;
  pid?: number;
  /** The builder daemon (server/data-dir.ts daemonIdentity): with a store shared by several daemons, only that daemon can tell whether `pid` is alive. */
  host?: string;
}

export type ProgressFn = (p: BuildProgress) => void;

export type FileKind = 'raw' | 'zst';

export interface ImageService extends ImageFiles {
  readonly imagesDir: string;
  /** The S3 bucket that the images directory caches (--images s3://…), or null: the images directory is all there is. */
  readonly artifactStore: ArtifactStore | null;
  /**
   * The local path of a ready image's file, fetched from the artifact store and verified against the row's
   * sha256 first when this daemon has no copy; rejects with ArtifactFetchError (its `status` is the HTTP answer).
   */
  localFile(img: Image, kind: FileKind): Promise<string>;
  /** Removes the image's files here and its objects in the artifact store. */
  removeFiles(id: string): Promise<void>;
  /** Resolves the source, then builds (or reuses) the disk. Resolves with the ready row; rejects with ImageError. */
  build(source: ImageSource, opts?: BuildOptions, onProgress?: ProgressFn): Promise<Image>;
  /** Resolves the source and records a building row, then builds in the background (API). */
  start(source: ImageSource, opts?: BuildOptions, onProgress?: ProgressFn): Promise<{ image: Image; done: Promise<Image>; reused: boolean }>;
  filePath(id: string, kind: FileKind): string;
  /** At daemon start: drops temp dirs and building rows of builders that are gone. */
  recover(): void;
}

/** The disk id: derived from the content digest and what shapes the disk (format, forced size). */
export function imageId(digest: string, sizeBytes?: number): string {
  return createHash('sha256').update(`ext4\n${digest}\n${sizeBytes ?? 'auto'}`).digest('hex').slice(0, 16);
}

function defaultName(resolved: ResolvedImage, src: ImageSource): string {
  if (src.type === 'registry' && src.ref) {
    try {
      const r = parseReference(src.ref);
      return `${r.repository.split('/').pop()}${r.tag ? `:${r.tag}` : ''}${r.digest && !r.tag ? `@${r.digest.slice(7, 19)}` : ''}`;
    } catch { /* fall through */ }
  }
  return `${src.type}-${resolved.digest.slice(7, 19)}`;
}

const pidAlive = (pid: number) => {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
};

let tmpCounter = 0;
const WORKER = new URL('./build-worker.mjs', import.meta.url);

/**
 * A build thread started ahead (after a build ends), so the next build does not wait for a thread to load its
 * modules (about 0.25 s). Idle, it does not keep the process alive. One per heap limit.
 */
let spare: { worker: Worker; memoryMb: number } | null = null;

function startWorker(memoryMb: number): Worker {
  // SHARE_ENV: a thread started ahead still sees the environment (registry credentials) as it is now
  return new Worker(WORKER, { env: SHARE_ENV, resourceLimits: { maxOldGenerationSizeMb: memoryMb } });
}

function takeWorker(memoryMb: number): Worker {
  const s = spare;
  spare = null;
  if (s && s.memoryMb === memoryMb) { s.worker.removeAllListeners(); s.worker.ref(); return s.worker; }
  if (s) void s.worker.terminate();
  return startWorker(memoryMb);
}

function startSpare(memoryMb: number): void {
  if (spare) return;
  const worker = startWorker(memoryMb);
  worker.unref();
  const s = { worker, memoryMb };
  const drop = () => { if (spare === s) spare = null; };
  worker.on('error', drop).on('exit', drop);
  spare = s;
}

/** 10 minutes: progress is saved at every stage and every 0.5 s of streaming, upload included. */
const STALE_BUILD_MS = 10 * 60_000;

export function createImageService(deps: {
  store: Store; log: Logger; registry: Registry; dataDir: string; limits?: ImageLimits; artifacts?: ArtifactStore;
  /** Who builds here, recorded on a building row (default: the host name); daemons sharing a store differ in it. */
  builderId?: string;
}): ImageService {
  const { store } = deps;
  /** What a build accepts from an image (IRONBOOT_IMAGE_… settings) and the worker thread's heap limit. */
  const limits = deps.limits ?? limitsFromEnv();
  const buildMemoryMb = Number(process.env.IRONBOOT_IMAGE_BUILD_MEMORY || 4096);
  if (!Number.isInteger(buildMemoryMb) || buildMemoryMb < 64) throw new ImageError(`IRONBOOT_IMAGE_BUILD_MEMORY="${process.env.IRONBOOT_IMAGE_BUILD_MEMORY}": a heap limit in MiB, at least 64`);
  const log = deps.log.child({ svc: 'images' });
  const imagesDir = join(deps.dataDir, 'images');
  mkdirSync(imagesDir, { recursive: true });
  const artifacts = deps.artifacts ?? null;
  const inflight = new Map<string, Promise<Image>>();
  if (!nativeCodec()) log.warn(`image builds decompress and compress through igzip/zstd processes (slower): ${codecUnavailable()}`);
  const metric = <T>(name: string, make: () => T): T => (deps.registry.getSingleMetric(name) as T) ?? make();
  const builds = metric('ironboot_image_builds_total', () => new Counter({ name: 'ironboot_image_builds_total', help: 'Container disk builds by result', labelNames: ['result'], registers: [deps.registry] }));
  const fetches = metric('ironboot_image_fetches_total', () => new Counter({ name: 'ironboot_image_fetches_total', help: 'Image artifacts fetched from the S3 artifact store into this daemon\'s cache, by result (ok, mismatch, missing, unreachable, no-space, failed)', labelNames: ['result'], registers: [deps.registry] }));
  const cache = artifacts && createArtifactCache({
    dir: imagesDir, store: artifacts, log: deps.log,
    checkSpace: (need) => checkFreeSpace(imagesDir, limits, need),
    onFetch: (result) => fetches.inc({ result }),
  });
  const buildSeconds = metric('ironboot_image_build_seconds', () => new Histogram({ name: 'ironboot_image_build_seconds', help: 'Container disk build time', buckets: [1, 2, 5, 10, 30, 60, 120, 300, 900], registers: [deps.registry] }));

  const filePath = (id: string, kind: FileKind) => {
    if (!/^[a-z0-9]+$/.test(id)) throw new ImageError(`bad image id "${id}"`, 'id');
    return join(imagesDir, `${id}.ext4${kind === 'zst' ? '.zst' : ''}`);
  };

  const builderId = deps.builderId ?? daemonIdentity(deps.dataDir);
  /** A build row whose builder has not saved progress for this long is taken as abandoned. */
  const stale = (img: Image) => Date.now() - Date.parse(img.updatedAt) > STALE_BUILD_MS;
  /** The row another daemon is building, until it is ready (resolves), failed, deleted or abandoned (rejects). */
  const waitForOther = async (id: string, host: string): Promise<Image> => {
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      const cur = store.images.get(id);
      if (!cur) throw new ImageError(`image ${id} was deleted while ${host} was building it`);
      if (cur.state === 'ready') return cur;
      if (cur.state === 'failed') throw new ImageError(cur.error ?? `the build on ${host} failed`);
      if (cur.state !== 'building' || stale(cur)) throw new ImageError(`the build of image ${id} on ${host} stopped reporting progress; build it again`);
    }
  };
  const fileName = (id: string, kind: FileKind) => `${id}.ext4${kind === 'zst' ? '.zst' : ''}`;
  /** The files are here, or (S3) in the bucket: a ready row was marked ready only after its upload. */
  const filesExist = (id: string) => artifacts !== null || (existsSync(filePath(id, 'raw')) && existsSync(filePath(id, 'zst')));
  const refs = (img: Image) => {
    if (!img.compressedSha256 || !img.rawSha256) throw new ArtifactFetchError(`image ${img.id} has no sha256 recorded; rebuild it`, 'failed');
    return {
      zst: { name: fileName(img.id, 'zst'), sha256: img.compressedSha256, size: img.compressedSize },
      raw: { name: fileName(img.id, 'raw'), sha256: img.rawSha256, size: img.rawSize },
    };
  };

  async function prepare(source: ImageSource, opts: BuildOptions, onProgress?: ProgressFn) {
    const sizeBytes = opts.size !== undefined ? parseSize(opts.size) : undefined;
    if (sizeBytes !== undefined && sizeBytes < 4 << 20) throw new ImageError('size must be at least 4 MiB', 'size');
    if (opts.headroom !== undefined && !(opts.headroom >= 0 && opts.headroom <= 10)) throw new ImageError('headroom must be between 0 and 10', 'headroom');
    if (opts.name !== undefined && !/^[\w][\w.:@/+-]{0,127}$/.test(opts.name)) throw new ImageError(`bad name "${opts.name}": letters, digits and ._:@/+- (max 128)`, 'name');
    onProgress?.({ stage: 'resolving', layersTotal: 0, layersDone: 0, bytesPulled: 0, bytesToPull: 0, bytesFlattened: 0, entries: 0 });
    const resolved = await resolveSource(source);
    const id = imageId(resolved.digest, sizeBytes);
    const running = inflight.get(id);
    const existing = store.images.get(id);
    if (running && existing) return { image: existing, done: running, reused: true };
    if (existing?.state === 'ready' && filesExist(id)) return { image: existing, done: Promise.resolve(existing), reused: true };
    // another daemon of the shared store is building it (and still reporting): wait for its row, build it once
    const other = existing?.state === 'building' && artifacts ? (existing.progress as { host?: string }).host : undefined;
    if (other && other !== builderId && !stale(existing!)) {
      log.info({ image: id, builder: other }, 'image is being built by another daemon: waiting for it');
      return { image: existing!, done: waitForOther(id, other), reused: true };
    }
    let name = opts.name ?? existing?.name ?? defaultName(resolved, source);
    const holder = store.images.getByName(name);
    if (holder && holder.id !== id) {
      if (opts.name) throw new ImageError(`the name "${name}" is used by image ${holder.id} (${holder.digest ?? holder.source}); choose another --name or delete that image`, 'name');
      name = `${name}-${id.slice(0, 8)}`;
    }
    const progress: BuildProgress = { stage: 'pulling', layersTotal: resolved.layers.length, layersDone: 0, bytesPulled: 0,
      bytesToPull: resolved.layers.reduce((a, l) => a + Math.max(0, l.size), 0), bytesFlattened: 0, entries: 0, pid: process.pid, host: builderId };
    const row = {
      id, name, source: resolved.source, digest: resolved.digest, state: 'building' as const, format: 'ext4',
      config: resolved.config.run, progress: progress as unknown as Record<string, unknown>,
    };
    const image = store.tx(() => (store.images.get(id) ? store.images.replace(row) : store.images.insert(row)));
    log.info({ image: id, name, source: resolved.source, digest: resolved.digest, layers: resolved.layers.length }, 'image build started');
    const done = run(id, resolved, source, sizeBytes, opts, progress, onProgress);
    inflight.set(id, done);
    done.finally(() => inflight.delete(id)).catch(() => {});
    return { image, done, reused: false };
  }

  /** Runs the job in a worker thread (or in this thread with IRONBOOT_IMAGE_BUILD_THREAD=0). */
  function runJob(job: BuildJob, ev: BuildEvents): Promise<BuildResult> {
    if (process.env.IRONBOOT_IMAGE_BUILD_THREAD === '0') return buildDisk(job, ev);
    return new Promise((resolve, reject) => {
      const worker = takeWorker(buildMemoryMb);
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        void worker.terminate();
        startSpare(buildMemoryMb);
        fn();
      };
      worker.on('message', (m: WorkerMessage) => {
        try {
          if (m.t === 'progress') ev.progress(m.p, m.force);
          else if (m.t === 'layer') ev.layer(m.i, m.of, m.digest);
          else if (m.t === 'done') settle(() => resolve(m.result));
          else if (m.t === 'error') settle(() => reject(new ImageError(m.message, m.field)));
        } catch (err) {
          // a handler that throws here would be an uncaught exception in the daemon: the build fails instead
          settle(() => reject(new ImageError(`the build stopped: ${(err as Error).message}`)));
        }
      });
      worker.on('error', (err) => settle(() => reject((err as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY'
        ? new ImageError(`the build ran out of memory (its limit is ${buildMemoryMb} MiB, IRONBOOT_IMAGE_BUILD_MEMORY): the image is too large or hostile`)
        : new ImageError(`the build's worker thread failed: ${(err as Error).message}`))));
      worker.on('exit', (code) => settle(() => reject(new ImageError(`the build's worker thread stopped (exit ${code}) before it finished`))));
      worker.postMessage(job);
    });
  }

  async function run(id: string, resolved: ResolvedImage, source: ImageSource, sizeBytes: number | undefined, opts: BuildOptions, progress: BuildProgress, onProgress?: ProgressFn): Promise<Image> {
    const n = ++tmpCounter;
    const tmp = join(imagesDir, `.tmp-${id}-${process.pid}-${n}`);
    let lastSave = 0;
    const report = (force = false) => {
      onProgress?.(progress);
      const now = performance.now();
      if (force || now - lastSave > 500) {
        lastSave = now;
        try {
          store.images.setState(id, 'building', { progress: progress as unknown as Record<string, unknown> });
        } catch (err) {
          // progress is for the operator to watch; a store that cannot take it (a full data disk) must not end the
          // daemon, and the build itself says why it fails
          log.warn({ image: id, reason: (err as Error).message }, 'image build progress not saved');
        }
      }
    };
    try {
      mkdirSync(tmp);
      const rawTmp = join(tmp, `${id}.ext4`);
      const zstTmp = join(tmp, `${id}.ext4.zst`);
      const job: BuildJob = { id, source, digest: resolved.digest, sizeBytes, headroom: opts.headroom, rawTmp, zstTmp, imagesDir, limits, progress };
      const result = await runJob(job, {
        progress: (p, force) => { if (p !== progress) Object.assign(progress, p); report(force); },
        layer: (i, of, digest) => log.info({ image: id, layer: i, of, digest }, 'image layer applied'),
      });
      if (result.skipped.length) log.warn({ image: id, skipped: result.skipped.slice(0, 20) }, 'image entries skipped');
      const { digests, seconds } = result;
      if (result.progress !== progress) Object.assign(progress, result.progress);
      progress.seconds = seconds;
      renameSync(zstTmp, filePath(id, 'zst'));
      renameSync(rawTmp, filePath(id, 'raw'));
      if (artifacts) {
        const t = performance.now();
        await upload(artifacts, id, digests.compressedSha256, progress, report);
        seconds.upload = (performance.now() - t) / 1000;
      }
      progress.stage = 'done';
      delete progress.pid;
      delete progress.host;
      const img = store.tx(() => {
        const cur = store.images.get(id);
        if (!cur) return undefined;
        return store.images.replace({
          ...cur, state: 'ready', error: null, ...digests, config: resolved.config.run, progress: progress as unknown as Record<string, unknown>,
        });
      });
      if (!img) {
        await removeFiles(id);
        throw new ImageError(`image ${id} was deleted while it was being built`);
      }
      onProgress?.(progress);
      builds.inc({ result: 'ok' });
      buildSeconds.observe(seconds.total);
      log.info({ image: id, name: img.name, rawSize: digests.rawSize, compressedSize: digests.compressedSize, entries: result.entries, inodes: result.inodes, seconds }, 'image ready');
      return img;
    } catch (err) {
      const e = asImageError(err, imagesDir);
      if (artifacts) for (const kind of ['raw', 'zst'] as const) rmSync(filePath(id, kind), { force: true }); // a failed row has no cache
      progress.stage = 'failed';
      delete progress.pid;
      delete progress.host;
      try {
        store.images.setState(id, 'failed', { error: e.message, progress: progress as unknown as Record<string, unknown> });
      } catch (dbErr) {
        log.error({ image: id, err: dbErr }, 'could not record the failed build (recover() marks it failed at the next start)');
      }
      builds.inc({ result: 'failed' });
      log.warn({ image: id, err: e.message }, 'image build failed');
      throw e;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** The zstd form to the S3 store (multipart), progress in the row and the log; a failure fails the build. */
  async function upload(artifacts: ArtifactStore, id: string, sha256: string, progress: BuildProgress, report: (force?: boolean) => void): Promise<void> {
    const name = fileName(id, 'zst');
    progress.stage = 'uploading';
    progress.bytesUploaded = 0;
    report(true);
    let lastLog = 0;
    log.info({ image: id, to: artifacts.describe(name) }, 'image upload started');
    try {
      await artifacts.upload(name, filePath(id, 'zst'), {
        contentType: 'application/zstd', sha256,
        onProgress: (sent, total) => {
          progress.bytesUploaded = sent;
          report();
          const now = performance.now();
          if (now - lastLog > 2000 || sent === total) {
            lastLog = now;
            log.info({ image: id, to: artifacts.describe(name), sent, total }, 'image upload progress');
          }
        },
      });
    } catch (err) {
      throw new ImageError(`the build finished but its upload to the artifact store failed: ${(err as Error).message}`, 'images');
    }
    log.info({ image: id, to: artifacts.describe(name), bytes: progress.bytesUploaded }, 'image uploaded');
  }

  async function removeFiles(id: string): Promise<void> {
    for (const kind of ['raw', 'zst'] as const) {
      try { unlinkSync(filePath(id, kind)); } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, image: id }, 'could not remove image file');
      }
    }
    if (artifacts) {
      try {
        await artifacts.remove([fileName(id, 'zst')]);
        log.info({ image: id, from: artifacts.describe(fileName(id, 'zst')) }, 'image objects removed from the artifact store');
      } catch (err) {
        log.error({ image: id, err: (err as Error).message }, 'could not remove the image from the artifact store: the object stays there');
      }
    }
  }

  return {
    imagesDir,
    artifactStore: artifacts,
    filePath,
    removeFiles,
    async localFile(img, kind) {
      // without a bucket the directory's files are the ones the build wrote, as before
      if (!cache) {
        if (!existsSync(filePath(img.id, kind))) throw new ArtifactFetchError(`${filePath(img.id, kind)} is missing`, 'missing');
        return filePath(img.id, kind);
      }
      const r = refs(img);
      return kind === 'zst' ? cache.ensure(r.zst) : cache.ensureRaw(r.raw, r.zst);
    },
    start: (source, opts = {}, onProgress) => prepare(source, opts, onProgress),
    async build(source, opts = {}, onProgress) {
      const { done } = await prepare(source, opts, onProgress);
      return done;
    },
    recover() {
      // (ironboot-tree-*: the scratch trees of earlier versions, in the images dir or /dev/shm)
      for (const dir of [imagesDir, '/dev/shm']) {
        let names: string[] = [];
        try { names = readdirSync(dir); } catch { continue; }
        for (const f of names) {
          const m = /^(?:\.tmp|ironboot-tree)-[a-z0-9]+-(\d+)-\d+$/.exec(f);
          if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) rmSync(join(dir, f), { recursive: true, force: true });
        }
      }
      for (const img of store.images.list()) {
        if (img.state !== 'building') continue;
        const { pid, host } = img.progress as { pid?: number; host?: string };
        // a build of another daemon sharing the store: only that host can tell whether it still runs
        if (host && host !== builderId) continue;
        if (pid && pidAlive(Number(pid)) && Number(pid) !== process.pid) continue;
        store.images.setState(img.id, 'failed', { error: 'interrupted: the build stopped before it finished (server restart?)' });
        log.warn({ image: img.id }, 'interrupted image build marked failed');
      }
    },
  };
}

export { describeSource };
