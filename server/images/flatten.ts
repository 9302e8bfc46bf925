/**
 * Applies image layers, in order and in one streaming pass each, onto a directory tree, honouring whiteouts
 * (`.wh.NAME` deletes NAME, `.wh..wh..opq` hides the lower layers' contents of its directory).
 *
 * The tree holds what an unprivileged process can write: names, contents, symlinks, hardlinks and times.
 * `entries` holds the truth for every path (type, ownership, modes incl. setuid, devices, fifos, xattrs, hard
 * links as one shared object): the ext4 writer (ext4/) takes all metadata from it and only the file contents
 * from the tree, so the build needs no root and no mount.
 * Paths are resolved inside the tree like a chroot would: a symlink in a layer never leads outside it.
 */
import { closeSync, fchmodSync, futimesSync, linkSync, lutimesSync, mkdirSync, openSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeSync, chmodSync } from 'node:fs';
import { posix } from 'node:path';
import { ImageError } from './errors.ts';
import { TarParser, type TarEntry, type TarEntryType } from './tar.ts';

export interface EntryMeta {
  type: TarEntryType; // 'hardlink' never: links share their target's EntryMeta object
  mode: number; // permission bits incl. setuid/setgid/sticky
  uid: number;
  gid: number;
  mtime: number;
  /** Regular files: content bytes. */
  size?: number;
  /** Permission bits the tree copy has (differs from mode when not root). */
  hostMode: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer>;
  /** Regular files held in memory instead of the tree: the content as the tar stream's own chunks (no copy). */
  data?: Buffer[];
}

export interface FlattenStats { layers: number; entries: number; bytesTar: number; whiteouts: number; skipped: string[] }

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

const join = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);
const parentOf = (p: string) => { const i = p.lastIndexOf('/'); return i < 0 ? '' : p.slice(0, i); };
const baseOf = (p: string) => p.slice(p.lastIndexOf('/') + 1);

/** "./a//b/" → "a/b"; "" for the root; null if it climbs out ("../x"). Pure. */
export function cleanPath(p: string): string | null {
  const n = posix.normalize(p.replace(/^\/+/, '') || '.').replace(/\/+$/, '');
  if (n === '..' || n.startsWith('../')) return null;
  return n === '.' ? '' : n;
}

export class Flattener {
  /** Every live path of the merged tree ('' is the root). Hardlinked paths share one object. */
  readonly entries = new Map<string, EntryMeta>();
  private children = new Map<string, Set<string>>();
  private touched = new Set<string>();
  readonly stats: FlattenStats = { layers: 0, entries: 0, bytesTar: 0, whiteouts: 0, skipped: [] };
  private readonly root: string;
  private readonly privileged: boolean;
  /** Bits the process umask would strip from open()/mkdir() modes: only then is a chmod needed. */
  private readonly umask = process.umask();

  /** File bytes that may still be kept in memory rather than written to the tree. */
  private memoryLeft: number;

  /**
   * memoryBudget: regular files are kept in memory (as references to the tar chunks) while their total size stays
   * within it, and written to the tree beyond it (default 0: everything in the tree).
   */
  constructor(root: string, opts: { privileged?: boolean; memoryBudget?: number } = {}) {
    this.root = root.replace(/\/+$/, '');
    this.privileged = opts.privileged ?? process.geteuid?.() === 0;
    this.memoryLeft = opts.memoryBudget ?? 0;
    mkdirSync(this.root, { recursive: true });
    this.entries.set('', { type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, hostMode: 0o755 });
    this.children.set('', new Set());
    chmodSync(this.root, 0o755);
  }

  private host(p: string): string { return p ? `${this.root}/${p}` : this.root; }

  private hostModeFor(type: TarEntryType, mode: number): number {
    if (this.privileged) return mode & 0o7777;
    return type === 'dir' ? (mode & 0o777) | 0o700 : (mode & 0o777) | 0o600;
  }

  /** Applies one layer's tar stream. */
  async applyLayer(tar: AsyncIterable<Buffer>): Promise<void> {
    this.touched = new Set();
    this.stats.layers++;
    const parser = new TarParser();
    let fd: number | null = null;
    let mem: Buffer[] | null = null;
    let current: TarEntry | null = null;
    try {
      for await (const chunk of tar) {
        this.stats.bytesTar += chunk.length;
        for (const ev of parser.push(chunk)) {
          if (ev.kind === 'entry') {
            current = ev.entry;
            const target = this.applyEntry(ev.entry);
            if (Array.isArray(target)) mem = target; else fd = target;
          } else if (ev.kind === 'data') {
            if (mem !== null) mem.push(ev.data);
            else if (fd !== null) {
              let off = 0;
              while (off < ev.data.length) off += writeSync(fd, ev.data, off);
            }
          } else {
            if (fd !== null) {
              futimesSync(fd, current!.mtime, current!.mtime);
              closeSync(fd);
              fd = null;
            }
            mem = null;
            current = null;
          }
        }
      }
      parser.end();
    } finally {
      if (fd !== null) closeSync(fd);
    }
  }

  /** Creates one entry; returns where a regular file's data goes: an fd of the tree file, or the in-memory chunk list. */
  private applyEntry(e: TarEntry): number | Buffer[] | null {
    this.stats.entries++;
    const clean = cleanPath(e.path);
    if (clean === null) { this.skip(`${e.path}: path leaves the image root`); return null; }
    const base = baseOf(clean);
    if (base.startsWith(WH)) {
      this.stats.whiteouts++;
      const dir = this.resolveDir(parentOf(clean), false);
      if (dir === null) return null;
      if (base === OPAQUE) { this.touch(dir); this.prune(dir); } else this.remove(join(dir, base.slice(WH.length)));
      return null;
    }
    if (clean === '') {
      if (e.type === 'dir') this.setDirMeta('', e);
      return null;
    }
    if (clean.includes('\n')) { this.skip(`${JSON.stringify(e.path)}: newline in a file name is not supported`); return null; }
    const dir = this.resolveDir(parentOf(clean), true);
    if (dir === null) { this.skip(`${e.path}: a parent is not a directory`); return null; }
    const p = join(dir, base);
    const existing = this.entries.get(p);
    this.touch(p);
    if (existing) {
      if (existing.type === 'dir' && e.type === 'dir') { this.setDirMeta(p, e); return null; }
      this.remove(p);
    }
    const hostMode = this.hostModeFor(e.type, e.mode);
    const meta: EntryMeta = { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, hostMode, ...(e.xattrs.size ? { xattrs: e.xattrs } : {}) };
    const hp = this.host(p);
    switch (e.type) {
      case 'dir':
        mkdirSync(hp, hostMode);
        if (hostMode & (this.umask | 0o7000)) chmodSync(hp, hostMode);
        this.children.set(p, new Set());
        break;
      case 'file': {
        meta.size = e.size;
        if (this.memoryLeft > 0 && e.size <= this.memoryLeft) {
          this.memoryLeft -= e.size;
          meta.data = [];
          this.add(p, meta);
          return meta.data;
        }
        const fd = openSync(hp, 'wx', hostMode);
        if (hostMode & (this.umask | 0o7000)) fchmodSync(fd, hostMode);
        this.add(p, meta);
        return fd;
      }
      case 'symlink':
        meta.linkname = e.linkname;
        symlinkSync(e.linkname, hp);
        lutimesSync(hp, e.mtime, e.mtime);
        break;
      case 'hardlink': {
        const target = cleanPath(e.linkname);
        const tdir = target === null ? null : this.resolveDir(parentOf(target), false);
        const tpath = tdir === null || target === null ? null : join(tdir, baseOf(target));
        const tmeta = tpath === null ? undefined : this.entries.get(tpath);
        if (!tmeta || tmeta.type === 'dir' || tpath === p) { this.skip(`${e.path}: hard link to missing "${e.linkname}"`); return null; }
        if (tmeta.type === 'chardev' || tmeta.type === 'blockdev' || tmeta.type === 'fifo') {
          if (e.xattrs.size) tmeta.xattrs = e.xattrs;
          this.add(p, tmeta); // a hard link to a node that exists only in `entries`
          return null;
        }
        if (!tmeta.data) linkSync(this.host(tpath!), hp);
        if (e.xattrs.size) tmeta.xattrs = e.xattrs;
        this.add(p, tmeta);
        return null;
      }
      case 'chardev': case 'blockdev': case 'fifo':
        meta.devmajor = e.devmajor;
        meta.devminor = e.devminor;
        break;
    }
    this.add(p, meta);
    return null;
  }

  private skip(why: string): void {
    if (this.stats.skipped.length < 100) this.stats.skipped.push(why);
  }

  private add(p: string, meta: EntryMeta): void {
    this.entries.set(p, meta);
    this.children.get(parentOf(p))!.add(baseOf(p));
  }

  private setDirMeta(p: string, e: TarEntry): void {
    const m = this.entries.get(p)!;
    m.mode = e.mode; m.uid = e.uid; m.gid = e.gid; m.mtime = e.mtime;
    m.hostMode = this.hostModeFor('dir', e.mode);
    if (e.xattrs.size) m.xattrs = e.xattrs; else delete m.xattrs;
    chmodSync(this.host(p), m.hostMode);
  }

  private touch(p: string): void {
    for (let q = p; !this.touched.has(q); q = parentOf(q)) {
      this.touched.add(q);
      if (q === '') break;
    }
  }

  /**
   * The real directory a layer path's parent names, following symlinks inside the tree (absolute ones from its
   * root). create: make missing directories (0755, root). null: not a directory, or missing and !create.
   */
  private resolveDir(d: string, create: boolean): string | null {
    const fast = this.entries.get(d);
    if (fast?.type === 'dir') return d;
    let pending = d ? d.split('/') : [];
    let cur = '';
    let hops = 0;
    while (pending.length) {
      const comp = pending.shift()!;
      if (comp === '' || comp === '.') continue;
      if (comp === '..') { cur = parentOf(cur); continue; }
      const next = join(cur, comp);
      const m = this.entries.get(next);
      if (!m) {
        if (!create) return null;
        mkdirSync(this.host(next));
        chmodSync(this.host(next), 0o755);
        this.children.set(next, new Set());
        this.add(next, { type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: Date.now() / 1000, hostMode: 0o755 });
        cur = next;
      } else if (m.type === 'dir') {
        cur = next;
      } else if (m.type === 'symlink') {
        if (++hops > 40) return null;
        const t = m.linkname!;
        pending = [...t.split('/'), ...pending];
        if (t.startsWith('/')) cur = '';
      } else return null;
    }
    return cur;
  }

  /** Removes a path and everything under it, from the tree and the index. */
  private remove(p: string): void {
    const m = this.entries.get(p);
    if (!m || p === '') return;
    if (m.type === 'dir') {
      this.forgetSubtree(p);
      rmSync(this.host(p), { recursive: true, force: true });
    } else if (m.type !== 'chardev' && m.type !== 'blockdev' && m.type !== 'fifo' && !m.data) {
      unlinkSync(this.host(p));
    }
    this.entries.delete(p);
    this.children.get(parentOf(p))?.delete(baseOf(p));
  }

  private forgetSubtree(p: string): void {
    const kids = this.children.get(p);
    if (kids) for (const k of kids) {
      const c = join(p, k);
      if (this.entries.get(c)?.type === 'dir') this.forgetSubtree(c);
      this.entries.delete(c);
    }
    this.children.delete(p);
  }

  /** Opaque directory: removes what lower layers put under dir, keeping what this layer added. */
  private prune(dir: string): void {
    const kids = this.children.get(dir);
    if (!kids) return;
    for (const k of [...kids]) {
      const c = join(dir, k);
      if (!this.touched.has(c)) this.remove(c);
      else if (this.entries.get(c)?.type === 'dir') this.prune(c);
    }
  }

  /** Sets directory times (last, since adding entries changed them). */
  finish(): FlattenStats {
    for (const [p, m] of this.entries) if (m.type === 'dir') utimesSync(this.host(p), m.mtime, m.mtime);
    return this.stats;
  }
}
