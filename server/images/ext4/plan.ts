/**
 * The ext4 metadata, planned once the layers are read. File contents are already in place: the disk writer put
 * them, in tar arrival order, in a data area right after the head while the layers streamed (EntryMeta.block).
 * Pure: entries, where the data area ends and options in; the head (superblock + group descriptors) and the
 * tail's blocks out.
 *
 * The layout: [head: superblock, group descriptors, free up to headBlocks] [data area: file contents, and dead
 * bytes of files later layers deleted or replaced, which are free blocks] [tail: journal, block bitmaps, inode
 * bitmaps, inode tables, then every inode's directory / symlink / xattr / extent-leaf blocks] [free space].
 * 4 KiB blocks, 32768 blocks per group, 256-byte inodes (extra_isize 32). flex_bg puts every group's bitmaps and
 * inode table in the tail; sparse_super2 keeps one backup superblock, in the last group when it starts past the
 * data area (else none). Features: has_journal ext_attr dir_index sparse_super2 | filetype extent flex_bg |
 * sparse_super large_file huge_file dir_nlink extra_isize. No metadata_csum, no resize_inode, no 64bit (so at
 * most 16 TiB). Directories are linear (dir_index is only announced so the kernel indexes them when they grow).
 * Extents may cross group boundaries (nothing sits in a group's first blocks with flex_bg).
 * Reproducible: the UUID and hash seed come from `seed`, every time from the entries (no clock).
 */
import { createHash } from 'node:crypto';
import type { EntryMeta } from '../flatten.ts';

export const BLOCK = 4096;
export const INODE_SIZE = 256;
const BITS = BLOCK * 8; // bits in a bitmap block: the most blocks (or inodes) a group can have
const EXTRA_ISIZE = 32;
const FIRST_INO = 11;
const ROOT_INO = 2;
const JOURNAL_INO = 8;
const LINK_MAX = 65000;
const MAX_EXTENT = 32768;
const LEAF_MAX = (BLOCK - 12) / 12; // 340 extents in a leaf block

const S_IF: Record<string, number> = { file: 0o100000, dir: 0o040000, symlink: 0o120000, chardev: 0o020000, blockdev: 0o060000, fifo: 0o010000, socket: 0o140000 };
const FTYPE: Record<string, number> = { file: 1, dir: 2, chardev: 3, blockdev: 4, fifo: 5, socket: 6, symlink: 7 };
const EXTENTS_FL = 0x80000;

const COMPAT_DIR_INDEX = 0x20, COMPAT_EXT_ATTR = 0x8, COMPAT_HAS_JOURNAL = 0x4, COMPAT_SPARSE_SUPER2 = 0x200;
const INCOMPAT_FILETYPE = 0x2, INCOMPAT_EXTENTS = 0x40, INCOMPAT_FLEX_BG = 0x200;
const LOG_GROUPS_PER_FLEX = 4; // what mke2fs announces (16); only the kernel's allocator statistics use it
const RO_SPARSE_SUPER = 0x1, RO_LARGE_FILE = 0x2, RO_HUGE_FILE = 0x8, RO_DIR_NLINK = 0x20, RO_EXTRA_ISIZE = 0x40;

/** The plan can not hold the content (too few blocks or inodes for the given size). */
export class Ext4FullError extends Error {}
/** Something in the content ext4 cannot represent (name too long, too many links, xattrs too big). */
export class Ext4ContentError extends Error {}

/** Metadata bytes at a block (zero-padded to whole blocks). */
export interface Piece { block: number; data: Buffer }

export interface Ext4Options {
  sizeBytes: number;
  /** Inodes wanted (rounded up to whole inode-table blocks per group). */
  inodes: number;
  /** Derives the UUID and the directory hash seed (e.g. the image digest). */
  seed: string;
  label?: string;
  /** Journal size in blocks for a filesystem of n blocks (0: no journal). */
  journalBlocks: (blocks: number) => number;
  /** Blocks per group (default and most: 32768). Smaller only to exercise many groups in tests. */
  blocksPerGroup?: number;
  /** Blocks of one extent (default and most: 32768). Smaller only to exercise extent trees in tests. */
  maxExtent?: number;
  /** Blocks before the data area: block 0 (superblock) and the group descriptors, the rest free. */
  headBlocks: number;
  /** The first block past the data area (the tail starts there). File contents lie in [headBlocks, dataEnd). */
  dataEnd: number;
}

export interface Ext4Layout {
  sizeBytes: number;
  blocks: number;
  groups: number;
  inodesCount: number;
  inodesUsed: number;
  freeBlocks: number;
  freeInodes: number;
  uuid: Buffer;
  /** Blocks [0, headBlocks): the superblock at byte 1024, the group descriptors from block 1. */
  head: Buffer;
  /** The tail (and a backup superblock), sorted by block, all at or past dataEnd, not overlapping; the rest is zero. */
  pieces: Piece[];
  /** The group holding the backup superblock (0: none). */
  backupGroup: number;
}

const round4 = (n: number) => (n + 3) & ~3;
const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

interface Geometry { blocks: number; bpg: number; groups: number; ipg: number; itb: number; gdtBlocks: number }

/** Group descriptor blocks for a filesystem of `sizeBytes` (the head must hold them). */
export function gdtBlocksFor(sizeBytes: number, bpg = BITS): number {
  return ceilDiv(Math.max(1, ceilDiv(Math.floor(sizeBytes / BLOCK), bpg)) * 32, BLOCK);
}

function geometry(sizeBytes: number, inodes: number, bpg: number): Geometry {
  let blocks = Math.floor(sizeBytes / BLOCK);
  if (blocks > 0xffffffff) throw new Ext4ContentError('the image would be larger than 16 TiB (ext4 without 64bit)');
  for (;;) {
    const groups = Math.max(1, ceilDiv(blocks, bpg));
    const gdtBlocks = ceilDiv(groups * 32, BLOCK);
    const ipg = Math.min(BITS, Math.max(16, ceilDiv(ceilDiv(inodes, groups), 16) * 16));
    const itb = (ipg * INODE_SIZE) / BLOCK;
    const last = blocks - (groups - 1) * bpg;
    if (groups > 1 && last < 50) { blocks = (groups - 1) * bpg; continue; } // like mke2fs: drop a runt group
    if (blocks < 1 + gdtBlocks + 2 + itb + 8) throw new Ext4FullError(`${blocks} blocks cannot even hold the filesystem's own metadata`);
    return { blocks, bpg, groups, ipg, itb, gdtBlocks };
  }
}

/** Sequential block allocator over the tail: from dataEnd to the end, around one reserved range. */
class Allocator {
  private next: number;
  readonly bitmaps: Uint8Array[];
  constructor(private readonly geo: Geometry, start: number, private readonly maxExtent: number, private readonly skip: [number, number] | null) {
    this.next = start;
    this.bitmaps = Array.from({ length: geo.groups }, () => new Uint8Array(BLOCK));
  }
  /** n blocks as runs [start, len] (each at most maxExtent long). */
  alloc(n: number): Array<[number, number]> {
    const runs: Array<[number, number]> = [];
    while (n > 0) {
      if (this.skip && this.next >= this.skip[0] && this.next < this.skip[0] + this.skip[1]) { this.next = this.skip[0] + this.skip[1]; continue; }
      const end = this.skip && this.next < this.skip[0] ? this.skip[0] : this.geo.blocks;
      if (this.next >= end) throw new Ext4FullError('out of blocks');
      const len = Math.min(n, end - this.next, this.maxExtent);
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === this.next && last[1] + len <= this.maxExtent) last[1] += len; else runs.push([this.next, len]);
      this.mark(this.next, len);
      this.next += len;
      n -= len;
    }
    return runs;
  }
  one(): number { return this.alloc(1)[0][0]; }
  /** n consecutive blocks (metadata, not an extent): past the reserved range if they would overlap it. */
  contiguous(n: number): number {
    if (this.skip && this.next < this.skip[0] + this.skip[1] && this.next + n > this.skip[0]) this.next = this.skip[0] + this.skip[1];
    if (this.next + n > this.geo.blocks) throw new Ext4FullError('out of blocks');
    const at = this.next;
    this.mark(at, n);
    this.next += n;
    return at;
  }
  mark(start: number, len: number): void {
    for (let b = start; b < start + len; b++) {
      const g = Math.floor(b / this.geo.bpg);
      const i = b - g * this.geo.bpg;
      this.bitmaps[g][i >> 3] |= 1 << (i & 7);
    }
  }
}

interface Node {
  ino: number;
  meta: EntryMeta;
  path: string; // the first path (files: where the content is read from)
  links: number;
  children?: Array<{ name: Buffer; node: Node }>;
  parent?: Node;
}

/** The xattr (name index, name suffix) ext4 stores a name as. */
function xattrName(full: string): { index: number; name: Buffer } {
  if (full === 'system.posix_acl_access') return { index: 2, name: Buffer.alloc(0) };
  if (full === 'system.posix_acl_default') return { index: 3, name: Buffer.alloc(0) };
  for (const [p, i] of [['user.', 1], ['trusted.', 4], ['security.', 6], ['system.', 7]] as const) {
    if (full.startsWith(p)) return { index: i, name: Buffer.from(full.slice(p.length)) };
  }
  return { index: 0, name: Buffer.from(full) };
}

/** A POSIX ACL xattr (the VFS form, version 2, 8-byte entries) → ext4's on-disk form (version 1, short entries). */
export function aclToDisk(v: Buffer, what: string): Buffer {
  if (v.length < 4 || (v.length - 4) % 8 !== 0 || v.readUInt32LE(0) !== 2) throw new Ext4ContentError(`${what}: malformed POSIX ACL`);
  const out: Buffer[] = [Buffer.from([1, 0, 0, 0])];
  for (let o = 4; o < v.length; o += 8) {
    const tag = v.readUInt16LE(o);
    if (tag === 1 || tag === 4 || tag === 0x10 || tag === 0x20) out.push(v.subarray(o, o + 4));
    else if (tag === 2 || tag === 8) out.push(v.subarray(o, o + 8));
    else throw new Ext4ContentError(`${what}: bad POSIX ACL entry tag ${tag}`);
  }
  return Buffer.concat(out);
}

interface XEntry { index: number; name: Buffer; value: Buffer }

function xattrEntries(x: Map<string, Buffer>, what: string): XEntry[] {
  const list: XEntry[] = [];
  for (const [k, v] of x) {
    const { index, name } = xattrName(k);
    if (name.length > 255) throw new Ext4ContentError(`${what}: xattr name "${k}" too long`);
    list.push({ index, name, value: index === 2 || index === 3 ? aclToDisk(v, what) : v });
  }
  // the order the kernel's sorted lookup in an xattr block expects
  return list.sort((a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name));
}

/** ext4_xattr_hash_entry: over the name bytes, then the value as little-endian 32-bit words (zero-padded). */
export function xattrHash(name: Buffer, value: Buffer): number {
  let h = 0;
  for (const c of name) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  if (value.length) {
    const padded = value.length % 4 ? Buffer.concat([value, Buffer.alloc(4 - (value.length % 4))]) : value;
    for (let o = 0; o < padded.length; o += 4) h = ((h << 16) ^ (h >>> 16) ^ padded.readUInt32LE(o)) >>> 0;
  }
  return h;
}

/**
 * Lays out xattr entries in `buf` from `first` (entries, then a 4-byte zero terminator) with values packed from
 * `end` downwards; value offsets are relative to `base`. Returns the entry hashes, or null if they do not fit.
 */
function packXattrs(list: XEntry[], buf: Buffer, first: number, end: number, base: number): number[] | null {
  let entriesEnd = first + 4;
  let valuesStart = end;
  for (const e of list) { entriesEnd += 16 + round4(e.name.length); valuesStart -= round4(e.value.length); }
  if (entriesEnd > valuesStart) return null;
  const hashes: number[] = [];
  let off = first;
  let voff = end;
  for (const e of list) {
    voff -= round4(e.value.length);
    const hash = xattrHash(e.name, e.value);
    buf.writeUInt8(e.name.length, off);
    buf.writeUInt8(e.index, off + 1);
    buf.writeUInt16LE(e.value.length ? voff - base : 0, off + 2);
    buf.writeUInt32LE(0, off + 4); // e_value_inum
    buf.writeUInt32LE(e.value.length, off + 8);
    buf.writeUInt32LE(hash, off + 12);
    e.name.copy(buf, off + 16);
    e.value.copy(buf, voff);
    hashes.push(hash);
    off += 16 + round4(e.name.length);
  }
  return hashes;
}

function writeTime(b: Buffer, off: number, extraOff: number, t: number): void {
  const s = Math.floor(Number.isFinite(t) ? t : 0);
  const lo = s | 0;
  b.writeInt32LE(lo, off);
  b.writeUInt32LE(((s - lo) / 2 ** 32) & 3, extraOff); // epoch bits; no nanoseconds
}

/** i_block for the runs (logical block order): inline extents, or a depth-1 tree whose leaves are `leaves`. */
function extentRoot(runs: Array<[number, number]>, leaves: number[], leafBufs: Buffer[]): Buffer {
  const ib = Buffer.alloc(60);
  const header = (b: Buffer, off: number, entries: number, max: number, depth: number) => {
    b.writeUInt16LE(0xf30a, off); b.writeUInt16LE(entries, off + 2); b.writeUInt16LE(max, off + 4); b.writeUInt16LE(depth, off + 6);
  };
  const extent = (b: Buffer, off: number, logical: number, start: number, len: number) => {
    b.writeUInt32LE(logical, off); b.writeUInt16LE(len, off + 4);
    b.writeUInt16LE(Math.floor(start / 2 ** 32), off + 6); b.writeUInt32LE(start >>> 0, off + 8);
  };
  const logicals: number[] = [];
  let l = 0;
  for (const [, len] of runs) { logicals.push(l); l += len; }
  if (runs.length <= 4) {
    header(ib, 0, runs.length, 4, 0);
    runs.forEach(([s, len], i) => extent(ib, 12 + 12 * i, logicals[i], s, len));
    return ib;
  }
  header(ib, 0, leaves.length, 4, 1);
  leaves.forEach((leaf, j) => {
    const from = j * LEAF_MAX;
    const part = runs.slice(from, from + LEAF_MAX);
    const lb = Buffer.alloc(BLOCK);
    header(lb, 0, part.length, LEAF_MAX, 0);
    part.forEach(([s, len], i) => extent(lb, 12 + 12 * i, logicals[from + i], s, len));
    leafBufs.push(lb);
    ib.writeUInt32LE(logicals[from], 12 + 12 * j);
    ib.writeUInt32LE(leaf >>> 0, 12 + 12 * j + 4);
    ib.writeUInt16LE(Math.floor(leaf / 2 ** 32), 12 + 12 * j + 8);
  });
  return ib;
}

const sortNames = (a: { name: Buffer }, b: { name: Buffer }) => Buffer.compare(a.name, b.name);

/** Plans the image. Throws Ext4FullError when the content does not fit, Ext4ContentError when ext4 cannot hold it. */
export function planExt4(entries: Map<string, EntryMeta>, opts: Ext4Options): Ext4Layout {
  const rootMeta = entries.get('');
  if (!rootMeta || rootMeta.type !== 'dir') throw new Ext4ContentError('no root directory');

  // 1. the tree: one node per inode (hardlinks share the EntryMeta), children sorted by name
  const nodes = new Map<EntryMeta, Node>();
  const dirs = new Map<string, Node>();
  const root: Node = { ino: ROOT_INO, meta: rootMeta, path: '', links: 1, children: [] };
  nodes.set(rootMeta, root);
  dirs.set('', root);
  // parents before children (a stable sort by depth)
  const paths = [...entries.keys()].filter((p) => p !== '').sort((a, b) => depth(a) - depth(b));
  for (const p of paths) {
    const meta = entries.get(p)!;
    const slash = p.lastIndexOf('/');
    const parent = dirs.get(slash < 0 ? '' : p.slice(0, slash));
    if (!parent) throw new Ext4ContentError(`${p}: parent directory missing`);
    const name = Buffer.from(p.slice(slash + 1));
    if (name.length > 255) throw new Ext4ContentError(`${p}: file name longer than 255 bytes`);
    let node = nodes.get(meta);
    if (node && meta.type !== 'dir') {
      if (++node.links > LINK_MAX) throw new Ext4ContentError(`${p}: more than ${LINK_MAX} hard links`);
    } else {
      node = { ino: 0, meta, path: p, links: 1, ...(meta.type === 'dir' ? { children: [], parent } : {}) };
      nodes.set(meta, node);
      if (meta.type === 'dir') dirs.set(p, node);
    }
    parent.children!.push({ name, node });
  }
  // lost+found: the image's own directory if it has one, else a new one (inode 11 either way)
  let lf = root.children!.find((c) => c.name.toString() === 'lost+found')?.node;
  if (lf && lf.meta.type !== 'dir') lf = undefined;
  else if (!lf) {
    const meta: EntryMeta = { type: 'dir', mode: 0o700, uid: 0, gid: 0, mtime: rootMeta.mtime };
    lf = { ino: 0, meta, path: 'lost+found', links: 1, children: [], parent: root };
    root.children!.push({ name: Buffer.from('lost+found'), node: lf });
  }
  if (lf) lf.ino = FIRST_INO;

  // 2. inode numbers, depth first, children in name order
  const order: Node[] = [];
  let nextIno = lf ? FIRST_INO + 1 : FIRST_INO;
  const visit = (dir: Node) => {
    dir.children!.sort(sortNames);
    for (const c of dir.children!) {
      if (c.node.ino !== 0 && c.node !== lf) continue; // a further hard link
      if (c.node.ino === 0) c.node.ino = nextIno++;
      order.push(c.node);
      if (c.node.children) visit(c.node);
    }
  };
  visit(root);
  const inodesUsed = nextIno - 1;

  // 3. geometry and the fixed metadata blocks of each group
  const bpg = opts.blocksPerGroup ?? BITS;
  if (bpg % 8 || bpg < 256 || bpg > BITS) throw new Ext4ContentError(`bad blocks per group ${bpg}`);
  const geo = geometry(opts.sizeBytes, Math.max(opts.inodes, inodesUsed + 16), bpg);
  const inodesCount = geo.ipg * geo.groups;
  if (inodesUsed > inodesCount) throw new Ext4FullError(`${inodesUsed} inodes needed, ${inodesCount} available`);
  const head = opts.headBlocks;
  if (1 + geo.gdtBlocks > head) throw new Ext4ContentError(`${geo.groups} block groups need more than the ${head - 1} group descriptor blocks reserved`);
  if (opts.dataEnd < head) throw new Error('ext4 plan: the data area ends before it starts');
  if (opts.dataEnd > geo.blocks) throw new Ext4FullError(`the file contents need ${opts.dataEnd} blocks, the disk has ${geo.blocks}`);
  // one backup superblock (sparse_super2): at the start of the last group when that lies past the data area
  const lastStart = (geo.groups - 1) * bpg;
  const backupGroup = geo.groups > 1 && lastStart >= opts.dataEnd ? geo.groups - 1 : 0;
  const maxExtent = opts.maxExtent ?? MAX_EXTENT;
  if (!(maxExtent >= 1 && maxExtent <= MAX_EXTENT)) throw new Ext4ContentError(`bad extent length ${maxExtent}`);
  const alloc = new Allocator(geo, opts.dataEnd, maxExtent, backupGroup ? [lastStart, 1 + geo.gdtBlocks] : null);
  alloc.mark(0, 1 + geo.gdtBlocks);
  if (backupGroup) alloc.mark(lastStart, 1 + geo.gdtBlocks);

  const pieces: Piece[] = [];
  const itable = Buffer.alloc(inodesUsed * INODE_SIZE);
  const inodeAt = (ino: number) => itable.subarray((ino - 1) * INODE_SIZE, ino * INODE_SIZE);

  /** Writes the fields every inode has (mode, owner, size, times, links, extra_isize). */
  const fillInode = (ino: number, mode: number, meta: { uid: number; gid: number; mtime: number }, links: number, size: number) => {
    const b = inodeAt(ino);
    b.writeUInt16LE(mode, 0);
    b.writeUInt16LE(meta.uid & 0xffff, 2);
    b.writeUInt32LE(size >>> 0, 4);
    b.writeUInt32LE(Math.floor(size / 2 ** 32), 108);
    writeTime(b, 8, 140, meta.mtime); // atime
    writeTime(b, 12, 132, meta.mtime); // ctime
    writeTime(b, 16, 136, meta.mtime); // mtime
    b.writeUInt16LE(meta.gid & 0xffff, 24);
    b.writeUInt16LE(links, 26);
    b.writeUInt16LE(Math.floor(meta.uid / 65536) & 0xffff, 120);
    b.writeUInt16LE(Math.floor(meta.gid / 65536) & 0xffff, 122);
    b.writeUInt16LE(EXTRA_ISIZE, 128);
    return b;
  };
  const setBlocks = (b: Buffer, fsBlocks: number) => {
    const sectors = fsBlocks * (BLOCK / 512);
    b.writeUInt32LE(sectors >>> 0, 28);
    b.writeUInt16LE(Math.floor(sectors / 2 ** 32), 116);
  };
  /** Maps `runs` into inode b (extents flag, i_block, leaves allocated and emitted); returns the leaf count. */
  const mapRuns = (b: Buffer, runs: Array<[number, number]>, what: string): number => {
    if (runs.length > 4 * LEAF_MAX) throw new Ext4ContentError(`${what}: too fragmented (${runs.length} extents)`);
    const leaves = runs.length > 4 ? Array.from({ length: ceilDiv(runs.length, LEAF_MAX) }, () => alloc.one()) : [];
    const leafBufs: Buffer[] = [];
    extentRoot(runs, leaves, leafBufs).copy(b, 40);
    leaves.forEach((l, i) => pieces.push({ block: l, data: leafBufs[i] }));
    b.writeUInt32LE(b.readUInt32LE(32) | EXTENTS_FL, 32);
    return leaves.length;
  };
  const bufferRuns = (runs: Array<[number, number]>, data: Buffer) => {
    let off = 0;
    for (const [s, len] of runs) { pieces.push({ block: s, data: data.subarray(off, off + len * BLOCK) }); off += len * BLOCK; }
  };

  const uuid = derive(opts.seed, 'uuid');
  uuid[6] = (uuid[6] & 0x0f) | 0x40;
  uuid[8] = (uuid[8] & 0x3f) | 0x80;
  // 3b. every group's bitmaps and inode table (flex_bg), first in the tail
  const blockBitmap0 = alloc.contiguous(geo.groups);
  const inodeBitmap0 = alloc.contiguous(geo.groups);
  const inodeTable0 = alloc.contiguous(geo.groups * geo.itb);

  // 4. every inode: directories, symlinks, files, devices, their xattrs
  const dirBlock = (entriesOf: Array<{ ino: number; name: Buffer; ftype: number }>): Buffer => {
    const blocks: Buffer[] = [];
    let cur = Buffer.alloc(BLOCK);
    let off = 0;
    let lastOff = -1;
    for (const e of entriesOf) {
      const need = 8 + round4(e.name.length);
      if (off + need > BLOCK) {
        cur.writeUInt16LE(BLOCK - lastOff, lastOff + 4);
        blocks.push(cur);
        cur = Buffer.alloc(BLOCK);
        off = 0;
      }
      cur.writeUInt32LE(e.ino, off);
      cur.writeUInt16LE(need, off + 4);
      cur.writeUInt8(e.name.length, off + 6);
      cur.writeUInt8(e.ftype, off + 7);
      e.name.copy(cur, off + 8);
      lastOff = off;
      off += need;
    }
    cur.writeUInt16LE(BLOCK - lastOff, lastOff + 4);
    blocks.push(cur);
    return Buffer.concat(blocks);
  };
  const usedDirs = new Array<number>(geo.groups).fill(0);
  const all = [root, ...order];
  for (const n of all) {
    const m = n.meta;
    const what = n.path ? `/${n.path}` : '/';
    const type = m.type === 'hardlink' ? 'file' : m.type;
    const mode = S_IF[type] | (m.mode & 0o7777);
    let nblocks = 0;
    let b: Buffer;
    if (type === 'dir') {
      const kids = n.children!;
      const subdirs = kids.filter((c) => c.node.children).length;
      const links = subdirs + 2 > LINK_MAX ? 1 : subdirs + 2;
      const data = dirBlock([
        { ino: n.ino, name: Buffer.from('.'), ftype: 2 },
        { ino: (n.parent ?? n).ino, name: Buffer.from('..'), ftype: 2 },
        ...kids.map((c) => ({ ino: c.node.ino, name: c.name, ftype: FTYPE[c.node.meta.type] })),
      ]);
      // lost+found gets 4 blocks, like mke2fs, so e2fsck has room without allocating
      const padded = n === lf && data.length < 4 * BLOCK ? Buffer.concat([data, emptyDirBlocks(4 - data.length / BLOCK)]) : data;
      const nb = padded.length / BLOCK;
      b = fillInode(n.ino, mode, m, links, padded.length);
      const runs = alloc.alloc(nb);
      bufferRuns(runs, padded);
      const leaves = mapRuns(b, runs, what);
      nblocks = leaves + nb;
      usedDirs[Math.floor((n.ino - 1) / geo.ipg)]++;
    } else if (type === 'symlink') {
      const target = Buffer.from(m.linkname ?? '');
      if (target.length >= BLOCK) throw new Ext4ContentError(`${what}: symlink target longer than ${BLOCK - 1} bytes`);
      b = fillInode(n.ino, mode, m, n.links, target.length);
      if (target.length < 60) {
        target.copy(b, 40);
        nblocks = 0;
      } else {
        const runs = alloc.alloc(1);
        const data = Buffer.alloc(BLOCK);
        target.copy(data);
        bufferRuns(runs, data);
        mapRuns(b, runs, what);
        nblocks = 1;
      }
    } else if (type === 'file') {
      const size = m.size ?? 0;
      b = fillInode(n.ino, mode, m, n.links, size);
      const nb = ceilDiv(size, BLOCK);
      const runs: Array<[number, number]> = [];
      if (nb) {
        const at = m.block;
        if (at === undefined || at < head || at + nb > opts.dataEnd) throw new Error(`ext4 plan: ${what} has no content in the data area`);
        alloc.mark(at, nb);
        for (let k = 0; k < nb; k += maxExtent) runs.push([at + k, Math.min(maxExtent, nb - k)]);
      }
      const leaves = mapRuns(b, runs, what);
      nblocks = nb + leaves;
    } else {
      b = fillInode(n.ino, mode, m, n.links, 0);
      if (type === 'chardev' || type === 'blockdev') {
        const major = m.devmajor ?? 0;
        const minor = m.devminor ?? 0;
        if (major < 256 && minor < 256) b.writeUInt32LE((major << 8) | minor, 40);
        else b.writeUInt32LE(((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0, 44);
      }
    }
    // xattrs: in the inode body when they fit, else in one xattr block
    if (m.xattrs?.size) {
      const list = xattrEntries(m.xattrs, what);
      const body = 128 + EXTRA_ISIZE;
      if (packXattrs(list, b, body + 4, INODE_SIZE, body + 4)) {
        b.writeUInt32LE(0xea020000, body);
      } else {
        const blk = Buffer.alloc(BLOCK);
        const hashes = packXattrs(list, blk, 32, BLOCK, 0);
        if (!hashes) throw new Ext4ContentError(`${what}: extended attributes larger than one ${BLOCK}-byte block`);
        let h = 0;
        for (const eh of hashes) h = ((h << 16) ^ (h >>> 16) ^ eh) >>> 0;
        blk.writeUInt32LE(0xea020000, 0);
        blk.writeUInt32LE(1, 4); // refcount
        blk.writeUInt32LE(1, 8); // blocks
        blk.writeUInt32LE(h, 12);
        const at = alloc.one();
        pieces.push({ block: at, data: blk });
        b.writeUInt32LE(at >>> 0, 104);
        b.writeUInt16LE(Math.floor(at / 2 ** 32), 118);
        nblocks++;
      }
    }
    setBlocks(b, nblocks);
  }

  // 5. the journal, last: its blocks after the first are zeros up to the free space, so the end of the disk is one
  // zero run (ext4/write.ts does not pass it through zstd)
  const jblocks = opts.journalBlocks(geo.blocks);
  let journalIBlock: Buffer | null = null;
  if (jblocks > 0) {
    const runs = alloc.alloc(jblocks);
    const b = fillInode(JOURNAL_INO, 0o100600, { uid: 0, gid: 0, mtime: 0 }, 1, jblocks * BLOCK);
    const leaves = mapRuns(b, runs, 'journal');
    setBlocks(b, jblocks + leaves);
    journalIBlock = Buffer.from(b.subarray(40, 100));
    const jsb = Buffer.alloc(BLOCK);
    jsb.writeUInt32BE(0xc03b3998, 0); // JBD2 magic
    jsb.writeUInt32BE(4, 4); // superblock v2
    jsb.writeUInt32BE(BLOCK, 12);
    jsb.writeUInt32BE(jblocks, 16); // s_maxlen
    jsb.writeUInt32BE(1, 20); // s_first
    jsb.writeUInt32BE(1, 24); // s_sequence; s_start 0: clean, nothing to replay
    uuid.copy(jsb, 48);
    jsb.writeUInt32BE(1, 64); // s_nr_users
    pieces.push({ block: runs[0][0], data: jsb });
  }
  // 6. bitmaps, descriptors, superblocks, inode tables
  const gdt = Buffer.alloc(geo.gdtBlocks * BLOCK);
  let freeBlocks = 0;
  let freeInodes = 0;
  const blockBitmaps = Buffer.alloc(geo.groups * BLOCK);
  const inodeBitmaps = Buffer.alloc(geo.groups * BLOCK);
  for (let g = 0; g < geo.groups; g++) {
    const end = Math.min((g + 1) * bpg, geo.blocks);
    const bb = alloc.bitmaps[g];
    for (let i = end - g * bpg; i < BITS; i++) bb[i >> 3] |= 1 << (i & 7); // padding past the group's last block
    let usedB = 0;
    for (let i = 0; i < BLOCK; i++) usedB += popcount(bb[i]);
    const freeB = BITS - usedB;
    const ib = inodeBitmaps.subarray(g * BLOCK, (g + 1) * BLOCK);
    const firstIno = g * geo.ipg + 1;
    const usedHere = Math.max(0, Math.min(inodesUsed, firstIno + geo.ipg - 1) - firstIno + 1);
    for (let i = 0; i < usedHere; i++) ib[i >> 3] |= 1 << (i & 7);
    for (let i = geo.ipg; i < BITS; i++) ib[i >> 3] |= 1 << (i & 7);
    const freeI = geo.ipg - usedHere;
    freeBlocks += freeB;
    freeInodes += freeI;
    const d = g * 32;
    gdt.writeUInt32LE(blockBitmap0 + g, d);
    gdt.writeUInt32LE(inodeBitmap0 + g, d + 4);
    gdt.writeUInt32LE(inodeTable0 + g * geo.itb, d + 8);
    gdt.writeUInt16LE(freeB, d + 12);
    gdt.writeUInt16LE(freeI, d + 14);
    gdt.writeUInt16LE(usedDirs[g], d + 16);
    blockBitmaps.set(bb, g * BLOCK);
  }
  pieces.push({ block: blockBitmap0, data: blockBitmaps }, { block: inodeBitmap0, data: inodeBitmaps });
  // the used part of the inode tables (they are consecutive); the rest stays zero
  if (inodesUsed) pieces.push({ block: inodeTable0, data: itable });

  const sb = Buffer.alloc(1024);
  sb.writeUInt32LE(inodesCount, 0);
  sb.writeUInt32LE(geo.blocks, 4);
  sb.writeUInt32LE(freeBlocks, 12);
  sb.writeUInt32LE(freeInodes, 16);
  sb.writeUInt32LE(0, 20); // first data block
  sb.writeUInt32LE(2, 24); // log block size: 1024 << 2
  sb.writeUInt32LE(2, 28);
  sb.writeUInt32LE(bpg, 32);
  sb.writeUInt32LE(bpg, 36);
  sb.writeUInt32LE(geo.ipg, 40);
  sb.writeInt16LE(-1, 54); // max mount count: no forced checks
  sb.writeUInt16LE(0xef53, 56);
  sb.writeUInt16LE(1, 58); // clean
  sb.writeUInt16LE(1, 60); // errors: continue
  sb.writeUInt32LE(1, 76); // dynamic rev
  sb.writeUInt32LE(FIRST_INO, 84);
  sb.writeUInt16LE(INODE_SIZE, 88);
  sb.writeUInt32LE(COMPAT_EXT_ATTR | COMPAT_DIR_INDEX | COMPAT_SPARSE_SUPER2 | (jblocks ? COMPAT_HAS_JOURNAL : 0), 92);
  sb.writeUInt32LE(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG, 96);
  sb.writeUInt32LE(RO_SPARSE_SUPER | RO_LARGE_FILE | RO_HUGE_FILE | RO_DIR_NLINK | RO_EXTRA_ISIZE, 100);
  uuid.copy(sb, 104);
  Buffer.from((opts.label ?? '').slice(0, 16)).subarray(0, 16).copy(sb, 120);
  if (jblocks) sb.writeUInt32LE(JOURNAL_INO, 224);
  derive(opts.seed, 'hash seed').copy(sb, 236);
  sb.writeUInt8(1, 252); // default hash: half_md4
  if (jblocks) {
    sb.writeUInt8(1, 253); // s_jnl_backup_type: the journal inode's i_block, i_size_high, i_size below
    journalIBlock!.copy(sb, 268);
    sb.writeUInt32LE(0, 268 + 60);
    sb.writeUInt32LE((jblocks * BLOCK) >>> 0, 268 + 64);
  }
  sb.writeUInt32LE(0x000c, 256); // default mount options: user_xattr, acl
  sb.writeUInt16LE(EXTRA_ISIZE, 348); // min extra isize
  sb.writeUInt16LE(EXTRA_ISIZE, 350); // want extra isize
  sb.writeUInt32LE(0x1, 352); // signed directory hash
  sb.writeUInt8(LOG_GROUPS_PER_FLEX, 372); // s_log_groups_per_flex
  sb.writeUInt32LE(backupGroup, 0x24c); // s_backup_bgs[0] (0: none)
  sb.writeUInt32LE(0, 0x250); // s_backup_bgs[1]
  const headBuf = Buffer.alloc(head * BLOCK);
  sb.copy(headBuf, 1024);
  gdt.copy(headBuf, BLOCK);
  if (backupGroup) {
    const blk = Buffer.alloc((1 + geo.gdtBlocks) * BLOCK);
    sb.copy(blk, 0);
    blk.writeUInt16LE(backupGroup, 90); // s_block_group_nr
    gdt.copy(blk, BLOCK);
    pieces.push({ block: lastStart, data: blk });
  }

  pieces.sort((a, b) => a.block - b.block);
  return { sizeBytes: opts.sizeBytes, blocks: geo.blocks, groups: geo.groups, inodesCount, inodesUsed, freeBlocks, freeInodes, uuid, head: headBuf, pieces, backupGroup };
}

function depth(p: string): number {
  let d = 0;
  for (let i = 0; i < p.length; i++) if (p.charCodeAt(i) === 47) d++;
  return d;
}

function popcount(x: number): number {
  x -= (x >> 1) & 0x55;
  x = (x & 0x33) + ((x >> 2) & 0x33);
  return (x + (x >> 4)) & 0x0f;
}

/** Directory blocks holding nothing (one empty entry spanning each block). */
function emptyDirBlocks(n: number): Buffer {
  const b = Buffer.alloc(n * BLOCK);
  for (let i = 0; i < n; i++) b.writeUInt16LE(BLOCK, i * BLOCK + 4);
  return b;
}

function derive(seed: string, what: string): Buffer {
  return createHash('sha256').update(`ironboot ext4 ${what}\n${seed}`).digest().subarray(0, 16);
}
