/**
 * The ext4 image: sized from the content (planDisk), then planned and written by our own writer (ext4/) together
 * with its zstd form. Nothing is mounted and no privilege is needed. Always 4 KiB blocks and an explicit inode count.
 */
import { ImageError } from './errors.ts';
import type { EntryMeta } from './flatten.ts';
import { BLOCK, INODE_SIZE, planExt4, Ext4ContentError, Ext4FullError, type Ext4Layout } from './ext4/plan.ts';
import { writeExt4, ZstdError, type DiskDigests, type WriteProgress } from './ext4/write.ts';

export { BLOCK, INODE_SIZE, type DiskDigests };
const MiB = 1 << 20;

export interface DiskPlan { sizeBytes: number; inodes: number; contentBytes: number; entries: number }

export interface SizeOptions {
  /** Force the image size in bytes (the build fails if the content does not fit). */
  sizeBytes?: number;
  /** Free space to leave, as a fraction of the content (default 0.25) … */
  headroom?: number;
  /** … but at least this many bytes (default 32 MiB). */
  minFreeBytes?: number;
}

/** "2G", "512M", "300MiB", "1000000" → bytes. Pure. */
export function parseSize(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw new ImageError(`bad size "${s}": expected a number of bytes or e.g. 512M, 2G`, 'size');
  const mult = { '': 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

/** mke2fs's default journal size (blocks) for a filesystem of `blocks` 4 KiB blocks. */
export function journalBlocks(blocks: number): number {
  if (blocks < 2048) return 0;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  return 262144;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** How big the image must be and how many inodes it needs, from the flattened entries. Pure. */
export function planDisk(entries: Map<string, EntryMeta>, opts: SizeOptions = {}): DiskPlan {
  const seen = new Set<EntryMeta>();
  const dirBytes = new Map<string, number>();
  let blocks = 0;
  for (const [p, m] of entries) {
    const parent = p === '' ? null : p.slice(0, Math.max(0, p.lastIndexOf('/')));
    if (parent !== null) dirBytes.set(parent, (dirBytes.get(parent) ?? 24) + 8 + roundUp(Buffer.byteLength(p) - parent.length, 4));
    if (seen.has(m)) continue;
    seen.add(m);
    if (m.type === 'file') blocks += Math.ceil((m.size ?? 0) / BLOCK) + ((m.size ?? 0) > 512 * MiB ? 1 : 0);
    else if (m.type === 'symlink' && Buffer.byteLength(m.linkname ?? '') >= 60) blocks += 1;
    let xattrBytes = 0;
    if (m.xattrs) for (const [k, v] of m.xattrs) xattrBytes += 16 + roundUp(k.length, 4) + roundUp(v.length, 4);
    if (xattrBytes > 96) blocks += 1;
  }
  for (const b of dirBytes.values()) blocks += Math.ceil(b / BLOCK);
  blocks += 4 + 1; // lost+found, root
  const nEntries = seen.size + 16;
  const contentBytes = blocks * BLOCK;
  const inodes = roundUp(Math.ceil(nEntries * 1.25) + 1024, 64);
  let size: number;
  if (opts.sizeBytes !== undefined) {
    size = roundUp(opts.sizeBytes, BLOCK);
  } else {
    const free = Math.max(contentBytes * (opts.headroom ?? 0.25), opts.minFreeBytes ?? 32 * MiB);
    // metadata: inode tables, bitmaps and group descriptors (~1.5%), reserved GDT blocks, then the journal
    const base = contentBytes + free + inodes * INODE_SIZE;
    const withMeta = base * 1.015 + 8 * MiB;
    const j1 = journalBlocks(withMeta / BLOCK) * BLOCK;
    size = roundUp(withMeta + journalBlocks((withMeta + j1) / BLOCK) * BLOCK, MiB);
  }
  return { sizeBytes: size, inodes: Math.max(inodes, Math.min(Math.floor(size / (64 * 1024)), 1 << 22)), contentBytes, entries: seen.size };
}

export class DiskFullError extends ImageError {}

export interface DiskResult extends DiskDigests {
  /** The ext4 layout written (its size may exceed the plan's when the automatic size had to grow). */
  layout: Ext4Layout;
}

/**
 * Plans the ext4 image for `entries` and writes it (raw at rawPath, zstd at zstPath) in one pass: our own writer
 * (ext4/), so no mke2fs/debugfs and no root or mount. File contents come from memory (EntryMeta.data) or `tree`. A forced size the
 * content does not fit is a DiskFullError; an automatic size that turns out too small is grown.
 */
export async function makeDisk(entries: Map<string, EntryMeta>, tree: string, rawPath: string, zstPath: string, plan: DiskPlan,
  opts: { seed: string; label?: string; forcedSize?: boolean } & WriteProgress): Promise<DiskResult> {
  let size = plan.sizeBytes;
  let layout: Ext4Layout;
  for (let attempt = 0; ; attempt++) {
    try {
      layout = planExt4(entries, { sizeBytes: size, inodes: plan.inodes, seed: opts.seed, label: opts.label, journalBlocks });
      break;
    } catch (err) {
      if (err instanceof Ext4ContentError) throw new ImageError(`the image cannot be stored in ext4: ${err.message}`);
      if (!(err instanceof Ext4FullError)) throw err;
      if (opts.forcedSize) {
        throw new DiskFullError(`the image content (${Math.ceil(plan.contentBytes / MiB)} MiB, ${plan.entries} entries) does not fit in ${Math.floor(plan.sizeBytes / MiB)} MiB: give a larger --size`, 'size');
      }
      if (attempt >= 4) throw new ImageError(`cannot size the disk for this image (${err.message})`);
      size = roundUp(size * 1.25 + 16 * MiB, MiB);
    }
  }
  try {
    return { ...(await writeExt4(layout, tree, rawPath, zstPath, opts)), layout };
  } catch (err) {
    if (err instanceof ZstdError) throw Object.assign(new ImageError(err.message), err.code ? { code: err.code } : {});
    throw err;
  }
}
