/**
 * The ext4 image, made while the layers stream: DiskBuilder is the flattener's content sink (file bytes go straight
 * to the data area of the raw file and into zstd), and at the end it sizes the disk (planDisk), plans the metadata
 * (ext4/plan.ts) and finishes the stream (ext4/write.ts). Nothing is mounted and no privilege is needed. Always
 * 4 KiB blocks and an explicit inode count.
 */
import { ImageError } from './errors.ts';
import type { ContentSink, EntryMeta } from './flatten.ts';
import { BLOCK, INODE_SIZE, planExt4, gdtBlocksFor, Ext4ContentError, Ext4FullError, type Ext4Layout } from './ext4/plan.ts';
import { ImageStream, ZstdError, type DiskDigests, type WriteProgress } from './ext4/write.ts';

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

export class DiskFullError extends ImageError {}

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

export interface DiskResult extends DiskDigests {
  /** The ext4 layout written (its size may exceed the plan's when the automatic size had to grow). */
  layout: Ext4Layout;
  plan: DiskPlan;
}

export interface DiskOptions extends WriteProgress {
  /** Derives the UUID and the directory hash seed (the image digest). */
  seed: string;
  label?: string;
  /** A forced size in bytes: the build fails (DiskFullError) as soon as the content is known not to fit. */
  sizeBytes?: number;
  /** Free space as a fraction of the content when sized automatically (default 0.25). */
  headroom?: number;
  /** Tests only: small groups and extents. */
  blocksPerGroup?: number;
  maxExtent?: number;
}

/** Blocks before the data area when the size is automatic: block 0 and up to 15 descriptor blocks (1920 groups, 240 GiB). */
const HEAD_BLOCKS = 16;

/**
 * Builds the disk (raw at rawPath, zstd at zstPath) while the layers stream: give it to the Flattener as its
 * sink, then call finish(entries). On failure call abort() (the caller removes the files).
 */
export class DiskBuilder implements ContentSink {
  private readonly stream: ImageStream;
  readonly headBlocks: number;
  /** Blocks of the data area so far (live and dead file contents). */
  private dataBlocks = 0;
  private readonly forcedBlocks: number | null;

  constructor(rawPath: string, zstPath: string, private readonly opts: DiskOptions) {
    const bpg = opts.blocksPerGroup;
    this.forcedBlocks = opts.sizeBytes !== undefined ? Math.floor(opts.sizeBytes / BLOCK) : null;
    this.headBlocks = opts.sizeBytes !== undefined ? Math.max(HEAD_BLOCKS, 1 + gdtBlocksFor(opts.sizeBytes, bpg)) : HEAD_BLOCKS;
    this.stream = new ImageStream(rawPath, zstPath, this.headBlocks, opts);
  }

  begin(meta: EntryMeta): void {
    const nb = Math.ceil((meta.size ?? 0) / BLOCK);
    if (nb === 0) return;
    const at = this.headBlocks + this.dataBlocks;
    if (this.stream.position !== at * BLOCK) throw new Error(`disk writer: the data area is at byte ${this.stream.position}, expected ${at * BLOCK}`);
    if (this.forcedBlocks !== null && at + nb > this.forcedBlocks) {
      throw new DiskFullError(`the image content (more than ${Math.floor(((this.dataBlocks + nb) * BLOCK) / MiB)} MiB of files) does not fit in ${Math.floor(this.opts.sizeBytes! / MiB)} MiB: give a larger --size`, 'size');
    }
    meta.block = at;
    this.dataBlocks += nb;
  }

  data(chunk: Buffer): Promise<void> | undefined {
    return this.stream.emit(chunk);
  }

  end(): Promise<void> | undefined {
    return this.stream.pad();
  }

  /** Sizes and plans the filesystem around the data area, then writes the rest; the digests of both files. */
  async finish(entries: Map<string, EntryMeta>): Promise<DiskResult> {
    try {
      return await this.finishing(entries);
    } catch (err) {
      await this.stream.abort();
      throw err;
    }
  }

  private async finishing(entries: Map<string, EntryMeta>): Promise<DiskResult> {
    const { opts } = this;
    const forced = opts.sizeBytes !== undefined;
    const plan = planDisk(entries, { sizeBytes: opts.sizeBytes, headroom: opts.headroom });
    let size = plan.sizeBytes;
    if (!forced) {
      // the data area also holds dead bytes (files later layers removed): free space, but the tail comes after them
      const live = new Set<EntryMeta>();
      let liveBlocks = 0;
      for (const m of entries.values()) if (m.type === 'file' && !live.has(m)) { live.add(m); liveBlocks += Math.ceil((m.size ?? 0) / BLOCK); }
      if (this.dataBlocks > liveBlocks) size = roundUp(size + (this.dataBlocks - liveBlocks) * BLOCK, MiB);
    }
    let layout: Ext4Layout;
    for (let attempt = 0; ; attempt++) {
      try {
        layout = planExt4(entries, { sizeBytes: size, inodes: plan.inodes, seed: opts.seed, label: opts.label, journalBlocks,
          blocksPerGroup: opts.blocksPerGroup, maxExtent: opts.maxExtent, headBlocks: this.headBlocks, dataEnd: this.headBlocks + this.dataBlocks });
        break;
      } catch (err) {
        if (err instanceof Ext4ContentError) throw new ImageError(`the image cannot be stored in ext4: ${err.message}`);
        if (!(err instanceof Ext4FullError)) throw err;
        if (forced) {
          throw new DiskFullError(`the image content (${Math.ceil(plan.contentBytes / MiB)} MiB, ${plan.entries} entries) does not fit in ${Math.floor(plan.sizeBytes / MiB)} MiB: give a larger --size`, 'size');
        }
        if (attempt >= 4) throw new ImageError(`cannot size the disk for this image (${err.message})`);
        size = roundUp(size * 1.25 + 16 * MiB, MiB);
      }
    }
    try {
      return { ...(await this.stream.finish(layout)), layout, plan };
    } catch (err) {
      if (err instanceof ZstdError) throw Object.assign(new ImageError(err.message), err.code ? { code: err.code } : {});
      throw err;
    }
  }

  /** Stops zstd and closes the files (after a failure anywhere in the build). */
  async abort(): Promise<void> {
    await this.stream.abort();
  }
}
