/**
 * The ext4 image: sized from the content, made by `mkfs.ext4 -d TREE` (contents, names, links, times) and
 * completed by a `debugfs -w` script (ownership, modes the tree could not hold, device nodes, fifos, xattrs).
 * Nothing is mounted and no privilege is needed. Always 4 KiB blocks and an explicit inode count.
 */
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { ImageError } from './errors.ts';
import type { EntryMeta } from './flatten.ts';

export const BLOCK = 4096;
export const INODE_SIZE = 256;
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

const TYPE_BITS: Record<string, number> = { file: 0o100000, dir: 0o040000, symlink: 0o120000, chardev: 0o020000, blockdev: 0o060000, fifo: 0o010000 };

/** A debugfs command argument, quoted ("" for a literal quote). */
export function dq(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

/** An xattr value for `ea_set`: printable ASCII as is, every other byte as \xHH. */
export function escapeValue(v: Buffer): string {
  let out = '"';
  for (const b of v) out += b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out + '"';
}

/**
 * The debugfs commands that give the image what the tree could not: owners differing from the tree's
 * (hostUid/hostGid), modes differing from the tree copy's, device nodes and fifos, and xattrs. Pure.
 */
export function metadataScript(entries: Map<string, EntryMeta>, hostUid: number, hostGid: number): string {
  const lines: string[] = [];
  const done = new Set<EntryMeta>();
  for (const [p, m] of entries) {
    const fsPath = `/${p}`;
    const special = m.type === 'chardev' || m.type === 'blockdev' || m.type === 'fifo';
    if (special) {
      const slash = p.lastIndexOf('/');
      lines.push(`cd ${dq('/' + (slash < 0 ? '' : p.slice(0, slash)))}`);
      const name = p.slice(slash + 1);
      lines.push(m.type === 'fifo' ? `mknod ${dq(name)} p` : `mknod ${dq(name)} ${m.type === 'chardev' ? 'c' : 'b'} ${m.devmajor ?? 0} ${m.devminor ?? 0}`);
      lines.push(`sif ${dq(fsPath)} mtime @${Math.floor(m.mtime)}`, `sif ${dq(fsPath)} atime @${Math.floor(m.mtime)}`, `sif ${dq(fsPath)} ctime @${Math.floor(m.mtime)}`);
    } else if (done.has(m)) continue;
    done.add(m);
    if (special || m.uid !== hostUid) lines.push(`sif ${dq(fsPath)} uid ${m.uid}`);
    if (special || m.gid !== hostGid) lines.push(`sif ${dq(fsPath)} gid ${m.gid}`);
    if (m.type !== 'symlink' && (special || (m.mode & 0o7777) !== m.hostMode)) lines.push(`sif ${dq(fsPath)} mode 0${(TYPE_BITS[m.type] | (m.mode & 0o7777)).toString(8)}`);
    if (m.xattrs) for (const [k, v] of m.xattrs) lines.push(`ea_set ${dq(fsPath)} ${dq(k)} ${escapeValue(v)}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

function run(cmd: string, args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { if (stdout.length < 1 << 20) stdout += d; });
    child.stderr!.on('data', (d) => { if (stderr.length < 1 << 20) stderr += d; });
    child.once('error', (err) => reject(new ImageError(`cannot run ${cmd}: ${err.message} (install e2fsprogs)`)));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) {
      child.stdin!.on('error', () => {});
      child.stdin!.end(input);
    }
  });
}

const isNoSpace = (s: string) => /no space left|ENOSPC|could not allocate block|Could not allocate inode|out of space/i.test(s);

export class DiskFullError extends ImageError {}

/** Creates the image file at `imagePath` from `tree` and applies the metadata script. */
export async function makeExt4(imagePath: string, tree: string, plan: DiskPlan, script: string, opts: { label?: string; forcedSize?: boolean } = {}): Promise<void> {
  const fd = openSync(imagePath, 'w');
  try {
    ftruncateSync(fd, plan.sizeBytes);
  } finally {
    closeSync(fd);
  }
  const args = ['-F', '-q', '-t', 'ext4', '-b', String(BLOCK), '-I', String(INODE_SIZE), '-N', String(plan.inodes), '-m', '0',
    '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', ...(opts.label ? ['-L', opts.label.slice(0, 16)] : []), '-d', tree, imagePath];
  const mk = await run('mke2fs', args);
  if (mk.code !== 0) {
    const msg = (mk.stderr || mk.stdout).trim().split('\n').slice(-3).join(' / ');
    if (isNoSpace(msg)) {
      throw new DiskFullError(opts.forcedSize
        ? `the image content (${Math.ceil(plan.contentBytes / MiB)} MiB, ${plan.entries} entries) does not fit in ${Math.floor(plan.sizeBytes / MiB)} MiB: give a larger --size`
        : `mke2fs ran out of space (${msg}) — the data directory's disk may be full`, 'size');
    }
    throw new ImageError(`mke2fs failed: ${msg}`);
  }
  if (!script) return;
  const dbg = await run('debugfs', ['-w', '-f', '-', imagePath], script);
  const errors = dbg.stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (dbg.code !== 0 || errors.length) {
    const msg = errors.slice(0, 3).join(' / ') || `exit ${dbg.code}`;
    if (isNoSpace(msg)) throw new DiskFullError(`the image ran out of space while setting metadata (${msg}): give a larger --size`, 'size');
    throw new ImageError(`debugfs failed to set file metadata: ${msg}`);
  }
}
