/**
 * A streaming tar reader (ustar, GNU long names, PAX) that keeps PAX values as raw bytes, so binary extended
 * attributes (SCHILY.xattr.security.capability, user.*, trusted.*) arrive exactly as written.
 * Pure: chunks of bytes in, events out (`TarParser.push`), no I/O.
 */

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'dir' | 'fifo';

export interface TarEntry {
  path: string;
  type: TarEntryType;
  mode: number; // permission bits incl. setuid/setgid/sticky (no file type bits)
  uid: number;
  gid: number;
  size: number; // bytes of data that follow (files only)
  mtime: number; // seconds since the epoch (may be fractional from PAX)
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from PAX SCHILY.xattr.* records: name → raw value bytes. */
  xattrs: Map<string, Buffer>;
}

export type TarEvent =
  | { kind: 'entry'; entry: TarEntry }
  | { kind: 'data'; data: Buffer }
  | { kind: 'entry-end' };

export class TarFormatError extends Error {
  constructor(message: string) { super(message); this.name = 'TarFormatError'; }
}

const BLOCK = 512;

function cstring(buf: Buffer, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && buf[end] !== 0) end++;
  return buf.toString('utf8', off, end);
}

/** Octal (space/NUL terminated) or GNU base-256 numeric field. */
export function parseNumeric(buf: Buffer, off: number, len: number): number {
  if (buf[off] & 0x80) {
    let v = buf[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + buf[off + i];
    return v;
  }
  let v = 0;
  let i = off;
  const end = off + len;
  while (i < end && buf[i] === 0x20) i++;
  for (; i < end; i++) {
    const c = buf[i];
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarFormatError(`bad octal number in tar header`);
    v = v * 8 + (c - 0x30);
  }
  return v;
}

function checksumOk(h: Buffer): boolean {
  const stored = parseNumeric(h, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  return sum === stored;
}

/** Parses PAX extended header records ("LEN key=value\n"), keeping values as bytes. */
export function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < buf.length) {
    if (buf[pos] === 0) break;
    const sp = buf.indexOf(0x20, pos);
    if (sp < 0) throw new TarFormatError('bad PAX record (no length)');
    const len = Number(buf.toString('ascii', pos, sp));
    if (!Number.isInteger(len) || len <= 0 || pos + len > buf.length) throw new TarFormatError('bad PAX record length');
    const rec = buf.subarray(sp + 1, pos + len - 1); // without trailing \n
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new TarFormatError('bad PAX record (no "=")');
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'chardev', '4': 'blockdev', '5': 'dir', '6': 'fifo',
};

type State =
  | { s: 'header' }
  | { s: 'data'; remaining: number; pad: number }
  | { s: 'meta'; type: string; size: number; pad: number; parts: Buffer[]; got: number }
  | { s: 'skip'; remaining: number }
  | { s: 'eof' };

/** Incremental tar parser. push() returns the events the new bytes complete; end() checks the archive ended cleanly. */
export class TarParser {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private state: State = { s: 'header' };
  private pax = new Map<string, Buffer>();
  private globalPax = new Map<string, Buffer>();
  private longName: string | null = null;
  private longLink: string | null = null;
  private zeroBlocks = 0;

  /** maxMetaBytes: the largest PAX header or GNU long name/link record accepted (a hostile image's huge header). */
  constructor(private readonly maxMetaBytes = 64 << 20) {}

  push(chunk: Buffer): TarEvent[] {
    const events: TarEvent[] = [];
    let buf = chunk;
    if (this.pendingLen) {
      this.pending.push(chunk);
      buf = Buffer.concat(this.pending, this.pendingLen + chunk.length);
      this.pending = [];
      this.pendingLen = 0;
    }
    let pos = 0;
    while (pos < buf.length) {
      const st = this.state;
      if (st.s === 'eof') break;
      if (st.s === 'data') {
        if (st.remaining > 0) {
          const n = Math.min(st.remaining, buf.length - pos);
          events.push({ kind: 'data', data: buf.subarray(pos, pos + n) });
          st.remaining -= n;
          pos += n;
          if (st.remaining > 0) continue;
          events.push({ kind: 'entry-end' });
          if (st.pad === 0) { this.state = { s: 'header' }; continue; }
          this.state = { s: 'skip', remaining: st.pad };
          continue;
        }
        events.push({ kind: 'entry-end' });
        this.state = st.pad ? { s: 'skip', remaining: st.pad } : { s: 'header' };
        continue;
      }
      if (st.s === 'skip') {
        const n = Math.min(st.remaining, buf.length - pos);
        st.remaining -= n;
        pos += n;
        if (st.remaining === 0) this.state = { s: 'header' };
        continue;
      }
      if (st.s === 'meta') {
        const n = Math.min(st.size - st.got, buf.length - pos);
        if (n > 0) st.parts.push(Buffer.from(buf.subarray(pos, pos + n)));
        st.got += n;
        pos += n;
        if (st.got < st.size) continue;
        this.finishMeta(st.type, Buffer.concat(st.parts));
        this.state = st.pad ? { s: 'skip', remaining: st.pad } : { s: 'header' };
        continue;
      }
      // header
      if (buf.length - pos < BLOCK) {
        this.pending = [Buffer.from(buf.subarray(pos))];
        this.pendingLen = buf.length - pos;
        return events;
      }
      const h = buf.subarray(pos, pos + BLOCK);
      pos += BLOCK;
      if (isZeroBlock(h)) {
        if (++this.zeroBlocks >= 2) this.state = { s: 'eof' };
        continue;
      }
      this.zeroBlocks = 0;
      if (!checksumOk(h)) throw new TarFormatError('tar header checksum mismatch (corrupt or not a tar archive)');
      const typeflag = String.fromCharCode(h[156]);
      const size = parseNumeric(h, 124, 12);
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
        if (size > this.maxMetaBytes) throw new TarFormatError(`a tar ${typeflag === 'x' || typeflag === 'g' ? 'PAX header' : 'long name record'} of ${size} bytes is larger than the limit of ${this.maxMetaBytes} bytes (IRONBOOT_IMAGE_MAX_PAX_BYTES)`);
        this.state = { s: 'meta', type: typeflag, size, pad, parts: [], got: 0 };
        if (size === 0) { this.finishMeta(typeflag, Buffer.alloc(0)); this.state = { s: 'header' }; }
        continue;
      }
      const entry = this.makeEntry(h, typeflag, size);
      if (!entry) {
        // unknown type (e.g. GNU sparse, volume label): skip its data
        const total = size + pad;
        this.state = total ? { s: 'skip', remaining: total } : { s: 'header' };
        continue;
      }
      events.push({ kind: 'entry', entry });
      if (entry.type !== 'file') {
        // links, dirs, devices carry no data; some writers still give them a size: drain it
        events.push({ kind: 'entry-end' });
        this.state = size > 0 ? { s: 'skip', remaining: size + pad } : { s: 'header' };
        continue;
      }
      const dataPad = (BLOCK - (entry.size % BLOCK)) % BLOCK;
      if (entry.size === 0) {
        events.push({ kind: 'entry-end' });
        this.state = { s: 'header' };
        continue;
      }
      this.state = { s: 'data', remaining: entry.size, pad: dataPad };
    }
    return events;
  }

  /** Throws if the archive stopped in the middle of an entry. A missing end-of-archive marker is tolerated. */
  end(): void {
    const st = this.state;
    if (st.s === 'data' && st.remaining > 0) throw new TarFormatError(`tar archive truncated: ${st.remaining} bytes of an entry missing`);
    if (st.s === 'meta') throw new TarFormatError('tar archive truncated in a metadata record');
    if (this.pendingLen) throw new TarFormatError('tar archive truncated in a header');
  }

  private finishMeta(type: string, body: Buffer): void {
    if (type === 'x') for (const [k, v] of parsePax(body)) this.pax.set(k, v);
    else if (type === 'g') for (const [k, v] of parsePax(body)) this.globalPax.set(k, v);
    else if (type === 'L') this.longName = cstring(body, 0, body.length);
    else if (type === 'K') this.longLink = cstring(body, 0, body.length);
  }

  private makeEntry(h: Buffer, typeflag: string, size: number): TarEntry | null {
    const type = TYPES[typeflag];
    const pax = this.globalPax.size ? new Map([...this.globalPax, ...this.pax]) : this.pax;
    this.pax = new Map();
    const longName = this.longName;
    const longLink = this.longLink;
    this.longName = this.longLink = null;
    if (!type) return null;
    let name = cstring(h, 0, 100);
    const magic = h.toString('ascii', 257, 263);
    if (magic.startsWith('ustar')) {
      const prefix = cstring(h, 345, magic === 'ustar\0' ? 155 : 131);
      if (prefix && magic === 'ustar\0') name = `${prefix}/${name}`;
    }
    if (longName !== null) name = longName;
    let linkname = longLink ?? cstring(h, 157, 100);
    const entry: TarEntry = {
      path: name, type, mode: parseNumeric(h, 100, 8) & 0o7777, uid: parseNumeric(h, 108, 8), gid: parseNumeric(h, 116, 8),
      size, mtime: parseNumeric(h, 136, 12), linkname, devmajor: 0, devminor: 0, xattrs: new Map(),
    };
    if (type === 'chardev' || type === 'blockdev') {
      entry.devmajor = parseNumeric(h, 329, 8);
      entry.devminor = parseNumeric(h, 337, 8);
    }
    for (const [k, v] of pax) {
      if (k === 'path') entry.path = v.toString('utf8');
      else if (k === 'linkpath') linkname = entry.linkname = v.toString('utf8');
      else if (k === 'size') entry.size = Number(v.toString('ascii'));
      else if (k === 'uid') entry.uid = Number(v.toString('ascii'));
      else if (k === 'gid') entry.gid = Number(v.toString('ascii'));
      else if (k === 'mtime') entry.mtime = Number(v.toString('ascii'));
      else if (k.startsWith('SCHILY.xattr.')) entry.xattrs.set(k.slice(13), v);
      else if (k.startsWith('LIBARCHIVE.xattr.')) {
        // libarchive: name URL-encoded, value base64
        entry.xattrs.set(decodeURIComponent(k.slice(17)), Buffer.from(v.toString('ascii'), 'base64'));
      }
    }
    if (type === 'file' && typeflag === '0' && entry.path.endsWith('/')) entry.type = 'dir'; // old tar: dir as file with trailing slash
    return entry;
  }
}

function isZeroBlock(h: Buffer): boolean {
  for (let i = 0; i < BLOCK; i += 4) if (h.readUInt32LE(i) !== 0) return false;
  return true;
}
