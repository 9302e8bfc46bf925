/**
 * The initramfs archive: a newc ("070701") cpio writer and reader (pure). Reproducible by construction:
 * entries sorted by path (so every parent precedes its children), inode numbers assigned in that order,
 * uid/gid 0, one fixed mtime, no device numbers except for device nodes.
 */

export type CpioEntry =
  | { path: string; type: 'dir'; mode: number }
  | { path: string; type: 'file'; mode: number; data: Buffer }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'char' | 'block'; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

const hex8 = (n: number): string => {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
};
const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function header(f: { ino: number; mode: number; nlink: number; mtime: number; size: number; rmaj: number; rmin: number; name: string }): Buffer {
  const name = Buffer.from(`${f.name}\0`, 'utf8');
  const h = '070701' + [f.ino, f.mode, 0, 0, f.nlink, f.mtime, f.size, 0, 0, f.rmaj, f.rmin, name.length, 0].map(hex8).join('');
  return Buffer.concat([Buffer.from(h, 'latin1'), name, Buffer.alloc(pad4(110 + name.length))]);
}

/** Normalises a path: no leading "/" or "./", no empty or "." components, never "..". */
export function cpioPath(p: string): string {
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..')) throw new Error(`cpio path must not contain "..": ${p}`);
  if (!parts.length) throw new Error(`empty cpio path: "${p}"`);
  return parts.join('/');
}

/** Sorted, de-duplicated (the last entry for a path wins), with every missing parent directory added. */
export function normaliseEntries(entries: CpioEntry[]): CpioEntry[] {
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) byPath.set(cpioPath(e.path), { ...e, path: cpioPath(e.path) } as CpioEntry);
  for (const p of [...byPath.keys()]) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!byPath.has(dir)) byPath.set(dir, { path: dir, type: 'dir', mode: 0o755 });
    }
  }
  const sorted = [...byPath.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return sorted.map((p) => byPath.get(p)!);
}

/** The archive as a sequence of buffers (a 90 MB node binary is passed through, not copied). */
export function* cpioChunks(entries: CpioEntry[], opts: { mtime?: number } = {}): Generator<Buffer> {
  const mtime = opts.mtime ?? 0;
  let ino = 1;
  for (const e of normaliseEntries(entries)) {
    const base = { ino: ino++, mtime, name: e.path, rmaj: 0, rmin: 0 };
    switch (e.type) {
      case 'dir':
        yield header({ ...base, mode: S_IFDIR | (e.mode & 0o7777), nlink: 2, size: 0 });
        break;
      case 'file':
        yield header({ ...base, mode: S_IFREG | (e.mode & 0o7777), nlink: 1, size: e.data.length });
        yield e.data;
        if (pad4(e.data.length)) yield Buffer.alloc(pad4(e.data.length));
        break;
      case 'symlink': {
        const t = Buffer.from(e.target, 'utf8');
        yield header({ ...base, mode: S_IFLNK | 0o777, nlink: 1, size: t.length });
        yield Buffer.concat([t, Buffer.alloc(pad4(t.length))]);
        break;
      }
      case 'char':
      case 'block':
        yield header({ ...base, mode: (e.type === 'char' ? S_IFCHR : S_IFBLK) | (e.mode & 0o7777), nlink: 1, size: 0, rmaj: e.major, rmin: e.minor });
        break;
    }
  }
  yield header({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, rmaj: 0, rmin: 0, name: 'TRAILER!!!' });
}

export function writeCpio(entries: CpioEntry[], opts: { mtime?: number } = {}): Buffer {
  return Buffer.concat([...cpioChunks(entries, opts)]);
}

export interface CpioRecord { name: string; mode: number; ino: number; uid: number; gid: number; nlink: number; mtime: number; size: number; rdev: [number, number]; data: Buffer }

/** Reads a newc archive back (for tests and the report). */
export function readCpio(buf: Buffer): CpioRecord[] {
  const out: CpioRecord[] = [];
  let off = 0;
  for (;;) {
    if (buf.toString('latin1', off, off + 6) !== '070701') throw new Error(`bad cpio magic at offset ${off}`);
    const f = (i: number) => parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const namesize = f(11);
    const size = f(6);
    const name = buf.toString('utf8', off + 110, off + 110 + namesize - 1);
    let p = off + 110 + namesize;
    p += pad4(p);
    if (name === 'TRAILER!!!') break;
    out.push({ name, ino: f(0), mode: f(1), uid: f(2), gid: f(3), nlink: f(4), mtime: f(5), size, rdev: [f(9), f(10)], data: buf.subarray(p, p + size) });
    p += size;
    p += pad4(p);
    off = p;
  }
  return out;
}
