/**
 * Applies image layers, in order and in one streaming pass each, honouring whiteouts as the OCI image-spec says:
 * a whiteout hides only what the LOWER layers put there, never an entry of its own layer, whatever order the tar
 * holds them in (`.wh.NAME` deletes lower NAME and everything under it that this layer did not add;
 * `.wh..wh..opq` hides the lower layers' contents of its directory). "Added by this layer" is the set of paths
 * the layer created and their ancestors, as umoci's upperPaths (the reference the tests compare against).
 * A hard link of a layer to a path that the same layer whites out still reaches the lower file (order-independent;
 * umoci and containerd fail such a layer when the whiteout comes first).
 *
 * Nothing is written to a directory tree: `entries` holds the truth for every path (type, ownership, modes incl.
 * setuid, devices, fifos, xattrs, hard links as one shared object), and a regular file's bytes go, as they arrive,
 * to a ContentSink (the disk writer puts them in the ext4 data area and records where in EntryMeta.block).
 * Paths are resolved like a chroot would: a symlink in a layer never leads outside the image root.
 */
import { posix } from 'node:path';
import { TarParser, type TarEntry, type TarEntryType } from './tar.ts';
import { ImageError } from './errors.ts';
import { DEFAULT_LIMITS, LIMIT_SETTINGS, type ImageLimits } from './limits.ts';

export interface EntryMeta {
  type: TarEntryType; // 'hardlink' never: links share their target's EntryMeta object
  mode: number; // permission bits incl. setuid/setgid/sticky
  uid: number;
  gid: number;
  mtime: number;
  /** Regular files: content bytes. */
  size?: number;
  /** Regular files with content: the first of its ceil(size / 4096) consecutive blocks, set by the sink. */
  block?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer>;
}

/**
 * Where regular file contents go while the layers stream: begin(meta) (meta.size bytes follow), data() for each
 * piece in order, end(). data() and end() may return a promise to slow the stream down (backpressure).
 */
export interface ContentSink {
  begin(meta: EntryMeta): void;
  data(chunk: Buffer): Promise<void> | void;
  end(): Promise<void> | void;
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
  /** Paths this layer created, and their ancestors (never hidden by this layer's whiteouts). */
  private touched = new Set<string>();
  /** Entries this layer's whiteouts removed (path → meta), so this layer's hard links can still reach them. */
  private whitedOut = new Map<string, EntryMeta>();
  readonly stats: FlattenStats = { layers: 0, entries: 0, bytesTar: 0, whiteouts: 0, skipped: [] };

  /** sink: where file contents go (none: they are dropped, only the metadata is kept). */
  constructor(private readonly sink: ContentSink | null = null, private readonly limits: ImageLimits = DEFAULT_LIMITS) {
    this.entries.set('', { type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    this.children.set('', new Set());
  }

  /** Applies one layer's tar stream. */
  async applyLayer(tar: AsyncIterable<Buffer>): Promise<void> {
    this.touched = new Set();
    this.whitedOut = new Map();
    this.stats.layers++;
    const parser = new TarParser(this.limits.maxPaxBytes);
    const sink = this.sink;
    let open = false; // a file's content is going to the sink
    for await (const chunk of tar) {
      this.stats.bytesTar += chunk.length;
      for (const ev of parser.push(chunk)) {
        if (ev.kind === 'entry') {
          const meta = this.applyEntry(ev.entry);
          if (meta && sink) { sink.begin(meta); open = true; }
        } else if (ev.kind === 'data') {
          if (open) { const w = sink!.data(ev.data); if (w) await w; }
        } else if (open) {
          open = false;
          const w = sink!.end();
          if (w) await w;
        }
      }
    }
    parser.end();
  }

  /** Creates one entry; returns the new regular file whose content follows (null for everything else). */
  private applyEntry(e: TarEntry): EntryMeta | null {
    const lim = this.limits;
    if (++this.stats.entries > lim.maxEntries) throw new ImageError(`the image has more than ${lim.maxEntries} tar entries (the limit, ${LIMIT_SETTINGS.maxEntries})`);
    const clean = cleanPath(e.path);
    if (clean === null) { this.skip(`${e.path}: path leaves the image root`); return null; }
    const shown = () => JSON.stringify(e.path.length > 80 ? `${e.path.slice(0, 80)}…` : e.path);
    if (Buffer.byteLength(clean) > lim.maxPathBytes) throw new ImageError(`${shown()}: a path of ${Buffer.byteLength(clean)} bytes, more than the limit of ${lim.maxPathBytes} (${LIMIT_SETTINGS.maxPathBytes})`);
    let depth = 1;
    for (let i = clean.indexOf('/'), prev = 0; ; i = clean.indexOf('/', i + 1)) {
      const end = i < 0 ? clean.length : i;
      if (end - prev > 255 && Buffer.byteLength(clean.slice(prev, end)) > 255) throw new ImageError(`${shown()}: a file name longer than 255 bytes (ext4's limit)`);
      if (i < 0) break;
      depth++;
      prev = i + 1;
    }
    if (depth > lim.maxPathDepth) throw new ImageError(`${shown()}: a path ${depth} directories deep, more than the limit of ${lim.maxPathDepth} (${LIMIT_SETTINGS.maxPathDepth})`);
    if (e.xattrs.size) {
      let xb = 0;
      for (const [k, v] of e.xattrs) xb += Buffer.byteLength(k) + v.length;
      if (xb > lim.maxXattrBytes) throw new ImageError(`${shown()}: ${xb} bytes of extended attributes, more than the limit of ${lim.maxXattrBytes} (${LIMIT_SETTINGS.maxXattrBytes})`);
    }
    const base = baseOf(clean);
    if (base.startsWith(WH)) {
      this.stats.whiteouts++;
      const dir = this.resolveDir(parentOf(clean), false);
      if (dir === null) return null;
      if (base === OPAQUE) { this.prune(dir); return null; }
      const name = base.slice(WH.length);
      if (!name || name === '.' || name === '..') { this.skip(`${e.path}: whiteout without a name`); return null; }
      this.whiteout(join(dir, name));
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
    const meta: EntryMeta = { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, ...(e.xattrs.size ? { xattrs: e.xattrs } : {}) };
    switch (e.type) {
      case 'dir':
        this.children.set(p, new Set());
        break;
      case 'file':
        meta.size = e.size;
        this.add(p, meta);
        return meta;
      case 'symlink':
        meta.linkname = e.linkname;
        break;
      case 'hardlink': {
        const target = cleanPath(e.linkname);
        const tdir = target === null ? null : this.resolveDir(parentOf(target), false);
        const tpath = tdir === null || target === null ? null : join(tdir, baseOf(target));
        const tmeta = (tpath === null ? undefined : this.entries.get(tpath) ?? this.whitedOut.get(tpath))
          ?? (target === null ? undefined : this.whitedOut.get(target));
        if (!tmeta || tmeta.type === 'dir' || tpath === p) { this.skip(`${e.path}: hard link to missing "${e.linkname}"`); return null; }
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
    if (e.xattrs.size) m.xattrs = e.xattrs; else delete m.xattrs;
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
        this.children.set(next, new Set());
        this.add(next, { type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 }); // a parent the layer leaves out: no clock, so rebuilds give the same disk
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

  /**
   * Removes a path and everything under it (a file's content stays where it went: dead, free space).
   * record: keep what went in this layer's whitedOut map (for the layer's hard links).
   */
  private remove(p: string, record = false): void {
    const m = this.entries.get(p);
    if (!m || p === '') return;
    if (m.type === 'dir') this.forgetSubtree(p, record);
    if (record) this.whitedOut.set(p, m);
    this.entries.delete(p);
    this.children.get(parentOf(p))?.delete(baseOf(p));
  }

  private forgetSubtree(p: string, record: boolean): void {
    const kids = this.children.get(p);
    if (kids) for (const k of kids) {
      const c = join(p, k);
      const m = this.entries.get(c);
      if (m?.type === 'dir') this.forgetSubtree(c, record);
      if (record && m) this.whitedOut.set(c, m);
      this.entries.delete(c);
    }
    this.children.delete(p);
  }

  /** `.wh.NAME`: removes the lower layers' p and what is under it, keeping what this layer added there. */
  private whiteout(p: string): void {
    const m = this.entries.get(p);
    if (!m) return;
    if (!this.touched.has(p)) this.remove(p, true);
    else if (m.type === 'dir') this.prune(p);
  }

  /** Opaque directory: removes what lower layers put under dir, keeping what this layer added. */
  private prune(dir: string): void {
    const kids = this.children.get(dir);
    if (!kids) return;
    for (const k of [...kids]) {
      const c = join(dir, k);
      if (!this.touched.has(c)) this.remove(c, true);
      else if (this.entries.get(c)?.type === 'dir') this.prune(c);
    }
  }

  /** The stats, once every layer is applied. */
  finish(): FlattenStats {
    return this.stats;
  }
}
