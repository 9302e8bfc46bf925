/**
 * What a build accepts from an image before it calls it hostile and fails with the reason: bytes after
 * decompression (in total, and as a ratio to the compressed bytes: a gzip bomb), tar entries, one PAX/long-name
 * record, the extended attributes of one entry, path length and depth; and the free space it leaves on the
 * data disk. Each limit is a setting (IRONBOOT_IMAGE_…), read by limitsFromEnv; the defaults take any real
 * distribution image.
 */
import { statfsSync } from 'node:fs';
import { ImageError } from './errors.ts';
import { parseSize } from './disk.ts';

export interface ImageLimits {
  /** Uncompressed (tar) bytes of all layers together. */
  maxTarBytes: number;
  /** Uncompressed / compressed bytes of one layer, checked once it has given ratioFloorBytes. */
  maxRatio: number;
  ratioFloorBytes: number;
  /** Tar entries (whiteouts included) of all layers together. */
  maxEntries: number;
  /** One PAX extended header or GNU long name/link record. */
  maxPaxBytes: number;
  /** Names and values of one entry's extended attributes together. */
  maxXattrBytes: number;
  maxPathBytes: number;
  maxPathDepth: number;
  /** Free bytes the build leaves on the data disk; null: min(1 GiB, 5 % of the filesystem). */
  freeReserveBytes: number | null;
}

const GiB = 1 << 30;

export const DEFAULT_LIMITS: ImageLimits = {
  maxTarBytes: 64 * GiB, maxRatio: 250, ratioFloorBytes: 256 << 20, maxEntries: 2_000_000, maxPaxBytes: 1 << 20,
  maxXattrBytes: 64 << 10, maxPathBytes: 4096, maxPathDepth: 256, freeReserveBytes: null,
};

/** The setting each limit is read from (and named by in its error). */
export const LIMIT_SETTINGS: Record<keyof ImageLimits, string> = {
  maxTarBytes: 'IRONBOOT_IMAGE_MAX_BYTES', maxRatio: 'IRONBOOT_IMAGE_MAX_RATIO', ratioFloorBytes: 'IRONBOOT_IMAGE_RATIO_FLOOR',
  maxEntries: 'IRONBOOT_IMAGE_MAX_ENTRIES', maxPaxBytes: 'IRONBOOT_IMAGE_MAX_PAX_BYTES', maxXattrBytes: 'IRONBOOT_IMAGE_MAX_XATTR_BYTES',
  maxPathBytes: 'IRONBOOT_IMAGE_MAX_PATH_BYTES', maxPathDepth: 'IRONBOOT_IMAGE_MAX_PATH_DEPTH', freeReserveBytes: 'IRONBOOT_IMAGE_FREE_RESERVE',
};

/** The limits, each from its IRONBOOT_IMAGE_… variable (sizes as "2G", "512M" or bytes) or its default. */
export function limitsFromEnv(env: NodeJS.ProcessEnv = process.env): ImageLimits {
  const out = { ...DEFAULT_LIMITS };
  for (const [key, name] of Object.entries(LIMIT_SETTINGS) as [keyof ImageLimits, string][]) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    let n: number;
    try { n = parseSize(v); } catch { throw new ImageError(`${name}="${v}": expected a number (sizes like 512M, 2G)`); }
    if (!(n >= 0)) throw new ImageError(`${name}="${v}": must not be negative`);
    out[key] = n;
  }
  return out;
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(n < 10 << 20 ? 1 : 0)} MiB`;

/** Free bytes for an unprivileged writer, and the filesystem's size. */
export function diskSpace(dir: string): { free: number; total: number } {
  const s = statfsSync(dir);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

export function reserveFor(limits: ImageLimits, total: number): number {
  return limits.freeReserveBytes ?? Math.min(GiB, Math.floor(total * 0.05));
}

/** Fails if the data disk has less than the reserve free (plus `need` bytes the build is about to write). */
export function checkFreeSpace(dir: string, limits: ImageLimits, need = 0): void {
  const { free, total } = diskSpace(dir);
  const reserve = reserveFor(limits, total);
  if (free - need < reserve) {
    throw new ImageError(`disk full: only ${mib(free)} free in ${dir}${need ? `, the build needs about ${mib(need)}` : ''} and ${mib(reserve)} stay free (the reserve, ${LIMIT_SETTINGS.freeReserveBytes}); free space or move --data-dir`);
  }
}

/**
 * Passes a layer's tar bytes through, failing once the image's total or this layer's expansion ratio exceeds
 * its limit. total: the bytes of the earlier layers, updated; compressed(): this layer's compressed bytes so far.
 */
export async function* boundedLayer(tar: AsyncIterable<Buffer>, limits: ImageLimits, what: string, total: { bytes: number }, compressed: () => number): AsyncGenerator<Buffer> {
  let layer = 0;
  for await (const c of tar) {
    layer += c.length;
    total.bytes += c.length;
    if (total.bytes > limits.maxTarBytes) {
      throw new ImageError(`${what}: the image unpacks to more than ${mib(limits.maxTarBytes)} (the limit, ${LIMIT_SETTINGS.maxTarBytes})`);
    }
    if (layer > limits.ratioFloorBytes) {
      const ratio = layer / Math.max(1, compressed());
      if (ratio > limits.maxRatio) {
        throw new ImageError(`${what}: decompresses to ${Math.round(ratio)}× its compressed size (${mib(layer)} so far), more than the limit of ${limits.maxRatio}× (${LIMIT_SETTINGS.maxRatio}): a compression bomb?`);
      }
    }
    yield c;
  }
}
