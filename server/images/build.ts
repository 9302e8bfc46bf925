/**
 * One build's work, apart from the store: resolve the source, stream every layer through the flattener into the
 * disk writer, and leave `<id>.ext4` and `<id>.ext4.zst` in the build's temp dir. Runs in a worker thread
 * (build-worker.ts), so a hostile image that exhausts memory or crashes the decoder ends that thread only.
 * Everything a build takes from the image is bounded (limits.ts); the data disk's reserve is checked before the
 * first byte and every few MiB while the layers stream.
 */
import { ImageError } from './errors.ts';
import { resolveSource, type ImageSource } from './sources.ts';
import { verified, decompressed } from './layer-stream.ts';
import { Flattener } from './flatten.ts';
import { DiskBuilder, DiskFullError, type DiskDigests } from './disk.ts';
import { boundedLayer, checkFreeSpace, type ImageLimits } from './limits.ts';
import type { BuildProgress } from './index.ts';

export interface BuildJob {
  id: string;
  source: ImageSource;
  /** The digest the source resolved to when the build was recorded: a moved tag fails the build. */
  digest: string;
  sizeBytes?: number;
  headroom?: number;
  rawTmp: string;
  zstTmp: string;
  /** Where the free-space reserve is measured. */
  imagesDir: string;
  limits: ImageLimits;
  progress: BuildProgress;
}

export interface BuildResult {
  digests: DiskDigests;
  entries: number;
  inodes: number;
  seconds: Record<string, number>;
  skipped: string[];
  progress: BuildProgress;
}

/** Events a build reports while it runs: progress (stage changes forced), and each finished layer. */
export interface BuildEvents {
  progress(p: BuildProgress, force: boolean): void;
  layer(i: number, of: number, digest: string): void;
}

const CHECK_EVERY = 4 << 20;

export async function buildDisk(job: BuildJob, ev: BuildEvents): Promise<BuildResult> {
  const t0 = performance.now();
  const seconds: Record<string, number> = {};
  const { progress, limits } = job;
  const resolved = await resolveSource(job.source);
  if (resolved.digest !== job.digest) throw new ImageError(`the image changed while the build started (${job.digest} → ${resolved.digest}); build it again`);
  // the zstd form is about the size of the compressed layers; the raw disk is larger but sparse
  checkFreeSpace(job.imagesDir, limits, progress.bytesToPull);
  let disk: DiskBuilder | null = null;
  try {
    progress.bytesCompressed = 0;
    let t = performance.now();
    disk = new DiskBuilder(job.rawTmp, job.zstTmp, {
      seed: resolved.digest, label: 'ironboot', sizeBytes: job.sizeBytes, headroom: job.headroom,
      onBytes: (k) => { progress.bytesCompressed! += k; ev.progress(progress, false); },
      onEmitted: () => {
        seconds.filesystem = (performance.now() - t) / 1000;
        t = performance.now();
        progress.stage = 'compressing';
        ev.progress(progress, true);
      },
    });
    const flattener = new Flattener(disk, limits);
    const total = { bytes: 0 };
    let nextCheck = CHECK_EVERY;
    for (const [i, layer] of resolved.layers.entries()) {
      const what = `layer ${i + 1}/${resolved.layers.length} (${layer.digest.slice(0, 19)})`;
      const raw = await layer.open();
      let compressed = 0;
      const onBytes = (k: number) => { progress.bytesPulled += k; compressed += k; };
      const tarBytes = layer.verify === 'stored'
        ? decompressed(verified(raw, layer.digest, what, layer.size, onBytes), what)
        : verified(decompressed(countBytes(raw, onBytes), what), layer.digest, what);
      const bounded = boundedLayer(tarBytes, limits, what, total, () => compressed);
      const counted = countBytes(bounded, (k) => {
        progress.bytesFlattened += k;
        progress.entries = flattener.stats.entries;
        if (progress.bytesFlattened >= nextCheck) { nextCheck = progress.bytesFlattened + CHECK_EVERY; checkFreeSpace(job.imagesDir, limits); }
        ev.progress(progress, false);
      });
      await flattener.applyLayer(counted);
      progress.layersDone = i + 1;
      ev.progress(progress, true);
      ev.layer(i + 1, resolved.layers.length, layer.digest);
    }
    const stats = flattener.finish();
    seconds.pull = (performance.now() - t) / 1000;
    t = performance.now();
    progress.stage = 'filesystem';
    progress.entries = flattener.entries.size;
    ev.progress(progress, true);
    checkFreeSpace(job.imagesDir, limits);
    // the metadata planned and written after the data area, the head last; 'compressing' is zstd's tail and the hashes
    const { layout, plan, ...digests } = await disk.finish(flattener.entries);
    checkFreeSpace(job.imagesDir, limits); // what the finished disk and its zstd form left
    progress.diskBytes = digests.rawSize;
    seconds.compress = (performance.now() - t) / 1000;
    seconds.total = (performance.now() - t0) / 1000;
    return { digests, entries: plan.entries, inodes: layout.inodesUsed, seconds, skipped: stats.skipped, progress };
  } catch (err) {
    await disk?.abort().catch(() => {});
    throw err;
  }
}

async function* countBytes(src: AsyncIterable<Buffer>, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const c of src) { onBytes(c.length); yield c; }
}

/** Any failure of a build as an error an operator can act on. */
export function asImageError(err: unknown, dir: string): ImageError {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof DiskFullError) return err;
  // PostgreSQL's disk_full (53100): the database server's disk, not this daemon's
  if (code === '53100') return new ImageError(`disk full: the PostgreSQL store has no space left (${(err as Error).message}); free space on the database server`);
  if (code === 'ENOSPC' || code === 'SQLITE_FULL' || /no space left/i.test((err as Error).message ?? '')) {
    const p = (err as NodeJS.ErrnoException).path;
    const where = p && !p.startsWith(dir) ? p : dir;
    return new ImageError(`disk full: no space left in ${where} while building the image; free space or move --data-dir`);
  }
  if (err instanceof ImageError) return err;
  if (code === 'EDQUOT') return new ImageError(`disk quota exceeded in ${dir} while building the image`);
  return new ImageError(`image build failed: ${(err as Error).message}`);
}
