/**
 * What the TFTP server serves: virtual files (answered from memory or a stream, e.g. a per-MAC script),
 * the iPXE binaries directory and the boot artifacts directory, looked up in that order.
 *
 * Safety: a request names a path relative to the served roots. Absolute paths are mapped into the roots
 * ("/undionly.kpxe" → "undionly.kpxe"); "..", NUL bytes, backslashes and control characters are refused;
 * symlinks are followed only while they stay inside the root (realpath check); only regular files are served.
 * A leading MAC directory ("52-54-00-12-34-56/undionly.kpxe", colon or bare-hex form, also PXELINUX's
 * "01-52-54-…") is stripped and passed to the virtual-file provider.
 */
import { open, realpath, type FileHandle } from 'node:fs/promises';
import { sep } from 'node:path';
import type { Readable } from 'node:stream';
import { parseMac } from '../mac.ts';
import { encodeNetascii, TFTP_ERROR } from './packet.ts';

/** A file that is not on disk: a Buffer, or a stream of exactly `size` bytes opened per transfer. */
export type TftpVirtualFile = { data: Buffer } | { size: number; open(): Readable };

export interface TftpFileRequest {
  /** The path with any MAC directory and leading slashes removed, e.g. "boot.ipxe". */
  name: string;
  /** The MAC named in the path (canonical lower-case colon form), or null. */
  mac: string | null;
  client: { address: string; port: number };
  /** This server's address the request came in on (the address the client reaches it at). */
  local: string;
}

/** Provider of virtual files; null means "not mine" (the disk roots are tried next). */
export interface TftpVirtualFiles {
  lookup(request: TftpFileRequest): TftpVirtualFile | null | Promise<TftpVirtualFile | null>;
}

/** Random-ish access to the bytes of one transfer. Reads are sequential apart from short steps back. */
export interface ByteSource {
  readonly size: number;
  /** Bytes [pos, pos+len) if already buffered, else null (then call read). */
  peek(pos: number, len: number): Buffer | null;
  read(pos: number, len: number): Promise<Buffer>;
  /** Bytes below `pos` will not be asked for again. */
  release(pos: number): void;
  close(): Promise<void>;
}

export class TftpFileError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = 'TftpFileError';
  }
}

export type ResolvedName = { name: string; segments: string[]; mac: string | null } | { error: TftpFileError };

const MAC_DIR = /^(?:01-)?([0-9a-f]{2}([-:])(?:[0-9a-f]{2}\2){4}[0-9a-f]{2}|[0-9a-f]{12})$/i;

/** Checks and normalizes a requested filename. Pure. */
export function resolveRequestName(filename: string): ResolvedName {
  const refuse = (why: string) => ({ error: new TftpFileError(TFTP_ERROR.accessViolation, `${why}: access denied`) });
  if (filename.includes('\0')) return refuse('NUL byte in the filename');
  if (filename.includes('\\')) return refuse('backslash in the filename');
  if (/[\x01-\x1f\x7f]/.test(filename)) return refuse('control character in the filename');
  const parts = filename.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) return refuse('".." in the filename');
  let mac: string | null = null;
  if (parts.length > 1) {
    const m = MAC_DIR.exec(parts[0]);
    if (m) {
      mac = parseMac(m[1]);
      parts.shift();
    }
  }
  if (parts.length === 0) return { error: new TftpFileError(TFTP_ERROR.fileNotFound, 'no file named') };
  return { name: parts.join('/'), segments: parts, mac };
}

/** A served directory. `allowOutside`: real paths of files outside it that its symlinks may point to. */
export interface ServedRoot {
  dir: string;
  allowOutside?: ReadonlySet<string>;
}

/** The binaries Debian's ipxe package installs; in /usr/lib/ipxe some are symlinks into /boot. */
export const IPXE_BINARIES = ['undionly.kpxe', 'undionly.kkpxe', 'ipxe.efi', 'snponly.efi', 'ipxe.pxe', 'ipxe.lkrn'];

/**
 * The iPXE directory as a root: Debian links /usr/lib/ipxe/ipxe.efi → /boot/ipxe.efi, so the real paths of the
 * well-known binaries (resolved now, at start) may lie outside it. Any other symlink must stay inside.
 */
export async function ipxeRoot(dir: string): Promise<ServedRoot> {
  const allowOutside = new Set<string>();
  for (const name of IPXE_BINARIES) {
    try { allowOutside.add(await realpath(dir + sep + name)); } catch { /* not installed */ }
  }
  return { dir, allowOutside };
}

/** Opens `segments` below `root` if it is a regular file whose real path stays inside the root. */
export async function openInsideRoot(root: ServedRoot | string, segments: string[]): Promise<{ handle: FileHandle; size: number; path: string } | null> {
  const { dir, allowOutside } = typeof root === 'string' ? { dir: root, allowOutside: undefined } : root;
  let realRoot: string;
  try {
    realRoot = await realpath(dir);
  } catch {
    return null;
  }
  let real: string;
  try {
    real = await realpath(realRoot + sep + segments.join(sep));
  } catch {
    return null;
  }
  const prefix = realRoot.endsWith(sep) ? realRoot : realRoot + sep;
  if (!real.startsWith(prefix) && !allowOutside?.has(real)) throw new TftpFileError(TFTP_ERROR.accessViolation, 'path leaves the served directory: access denied');
  let handle: FileHandle;
  try {
    handle = await open(real, 'r');
  } catch (err) {
    throw new TftpFileError(TFTP_ERROR.accessViolation, `cannot open: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const st = await handle.stat();
  if (!st.isFile()) {
    await handle.close();
    throw new TftpFileError(TFTP_ERROR.fileNotFound, 'not a regular file');
  }
  return { handle, size: st.size, path: real };
}

/** A Buffer as a ByteSource. */
export class BufferSource implements ByteSource {
  constructor(private data: Buffer) {}
  get size(): number { return this.data.length; }
  peek(pos: number, len: number): Buffer { return this.data.subarray(pos, pos + len); }
  async read(pos: number, len: number): Promise<Buffer> { return this.peek(pos, len); }
  release(): void {}
  async close(): Promise<void> {}
}

const CHUNK = 1 << 20;

/** A file read in 1 MiB chunks, the next chunk prefetched while the current one is being sent. */
export class FileSource implements ByteSource {
  private chunks = new Map<number, Buffer>(); // chunk index → bytes
  private loading = new Map<number, Promise<Buffer>>();
  private closed = false;

  constructor(private handle: FileHandle, readonly size: number) {}

  /** The open file's descriptor (the native transfer loop reads a duplicate of it). */
  get fd(): number { return this.handle.fd; }

  peek(pos: number, len: number): Buffer | null {
    const end = Math.min(pos + len, this.size);
    const i = Math.floor(pos / CHUNK);
    const chunk = this.chunks.get(i);
    if (!chunk) return null;
    const off = pos - i * CHUNK;
    if (end - i * CHUNK <= chunk.length) {
      // read ahead when the second half of a chunk is reached
      if (off >= CHUNK / 2) this.prefetch(i + 1);
      return chunk.subarray(off, end - i * CHUNK);
    }
    return null; // spans two chunks
  }

  async read(pos: number, len: number): Promise<Buffer> {
    const end = Math.min(pos + len, this.size);
    if (end <= pos) return Buffer.alloc(0);
    const first = Math.floor(pos / CHUNK);
    const last = Math.floor((end - 1) / CHUNK);
    const parts: Buffer[] = [];
    for (let i = first; i <= last; i++) {
      const chunk = this.chunks.get(i) ?? (await this.load(i));
      const from = Math.max(pos - i * CHUNK, 0);
      const to = Math.min(end - i * CHUNK, chunk.length);
      parts.push(chunk.subarray(from, to));
    }
    this.prefetch(last + 1);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  release(pos: number): void {
    const keepFrom = Math.floor(pos / CHUNK);
    for (const i of this.chunks.keys()) if (i < keepFrom) this.chunks.delete(i);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled(this.loading.values());
    this.chunks.clear();
    await this.handle.close();
  }

  private prefetch(i: number): void {
    if (i * CHUNK < this.size && !this.chunks.has(i) && !this.loading.has(i) && !this.closed) {
      this.load(i).catch(() => { /* read() of that chunk will report it */ });
    }
  }

  private load(i: number): Promise<Buffer> {
    const pending = this.loading.get(i);
    if (pending) return pending;
    const p = (async () => {
      if (this.closed) throw new Error('source closed');
      const want = Math.min(CHUNK, this.size - i * CHUNK);
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await this.handle.read(buf, got, want - got, i * CHUNK + got);
        if (bytesRead === 0) throw new Error(`file shrank while being sent (${i * CHUNK + got} of ${this.size} bytes)`);
        got += bytesRead;
      }
      this.chunks.set(i, buf);
      return buf;
    })();
    this.loading.set(i, p);
    p.finally(() => this.loading.delete(i)).catch(() => {});
    return p;
  }
}

/** A stream of a declared size; bytes are kept from the lowest released position on. */
export class StreamSource implements ByteSource {
  private buffered: Buffer[] = [];
  private base = 0; // file position of buffered[0][0]
  private length = 0; // bytes buffered
  private ended = false;
  private failure: Error | null = null;
  private waiters: Array<() => void> = [];

  constructor(private stream: Readable, readonly size: number) {
    stream.on('data', (c: Buffer | string) => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      this.buffered.push(b);
      this.length += b.length;
      if (this.base + this.length >= this.size + CHUNK) stream.pause();
      this.wake();
    });
    stream.on('end', () => { this.ended = true; this.wake(); });
    stream.on('error', (err) => { this.failure = err; this.wake(); });
  }

  peek(pos: number, len: number): Buffer | null {
    const end = Math.min(pos + len, this.size);
    if (end > this.base + this.length) return null;
    return this.slice(pos, end);
  }

  async read(pos: number, len: number): Promise<Buffer> {
    const end = Math.min(pos + len, this.size);
    while (end > this.base + this.length) {
      if (this.failure) throw this.failure;
      if (this.ended) throw new Error(`stream ended after ${this.base + this.length} of ${this.size} bytes`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.slice(pos, end);
  }

  release(pos: number): void {
    while (this.buffered.length > 1 && this.base + this.buffered[0].length <= pos) {
      const b = this.buffered.shift()!;
      this.base += b.length;
      this.length -= b.length;
    }
    if (this.stream.isPaused() && this.length < CHUNK * 4) this.stream.resume();
  }

  async close(): Promise<void> {
    this.stream.destroy();
    this.buffered = [];
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private slice(pos: number, end: number): Buffer {
    if (pos < this.base) throw new Error(`position ${pos} was already released`);
    if (this.buffered.length > 1 && this.base + this.buffered[0].length < end) {
      // merge so the request lies in one buffer (window-sized reads: cheap)
      const merged = Buffer.concat(this.buffered);
      this.buffered = [merged];
    }
    const first = this.buffered[0];
    return first.subarray(pos - this.base, end - this.base);
  }
}

export interface FileLookupOptions {
  /** Disk roots in lookup order (the iPXE directory, the artifacts directory). */
  roots: ServedRoot[];
  virtualFiles?: TftpVirtualFiles;
  /** The local address the request came in on (passed to virtual files). */
  local?: string;
  /** Largest file served in netascii mode (converted in memory; default MAX_NETASCII_BYTES). */
  maxNetasciiBytes?: number;
  /**
   * The server's memory budget for netascii conversions across transfers: reserve() before a conversion (false
   * when spent: the request is refused as busy), release() when its transfer ends.
   */
  netasciiBudget?: { reserve(bytes: number): boolean; release(bytes: number): void };
}

export interface OpenedFile {
  source: ByteSource;
  /** Where it came from, for the log: "virtual", or the real path on disk. */
  origin: string;
  mac: string | null;
  name: string;
  /** Bytes of netascii conversion held in memory (reserved through reserveNetascii), 0 for octet. */
  netasciiBytes: number;
}

/**
 * netascii transfers are converted in memory; larger files must be fetched in octet mode. netascii is for text
 * (scripts, configs); boot binaries are fetched in octet mode by every firmware.
 */
export const MAX_NETASCII_BYTES = 1 << 20;

/**
 * Finds and opens the file a read request names. Throws TftpFileError (code + message for the ERROR packet).
 */
export async function openRequestedFile(
  filename: string,
  mode: 'octet' | 'netascii',
  client: { address: string; port: number },
  opts: FileLookupOptions,
): Promise<OpenedFile> {
  const resolved = resolveRequestName(filename);
  if ('error' in resolved) throw resolved.error;
  const { name, segments, mac } = resolved;
  let opened: OpenedFile | null = null;
  const virtual = opts.virtualFiles ? await opts.virtualFiles.lookup({ name, mac, client, local: opts.local ?? '' }) : null;
  if (virtual) {
    const source = 'data' in virtual ? new BufferSource(virtual.data) : new StreamSource(virtual.open(), virtual.size);
    opened = { source, origin: 'virtual', mac, name, netasciiBytes: 0 };
  } else {
    for (const root of opts.roots) {
      const file = await openInsideRoot(root, segments);
      if (file) {
        opened = { source: new FileSource(file.handle, file.size), origin: file.path, mac, name, netasciiBytes: 0 };
        break;
      }
    }
  }
  if (!opened) throw new TftpFileError(TFTP_ERROR.fileNotFound, `file not found: ${name}`);
  if (mode === 'netascii') {
    const src = opened.source;
    try {
      const limit = opts.maxNetasciiBytes ?? MAX_NETASCII_BYTES;
      if (src.size > limit) throw new TftpFileError(TFTP_ERROR.notDefined, `netascii mode is limited to ${limit} bytes; use octet`);
      // the conversion holds the file and its converted copy (at most twice as long)
      const held = src.size * 3;
      if (opts.netasciiBudget && !opts.netasciiBudget.reserve(held)) {
        throw new TftpFileError(TFTP_ERROR.notDefined, 'server busy: netascii conversions use their memory budget; try again later, or use octet');
      }
      try {
        opened.source = new BufferSource(encodeNetascii(await src.read(0, src.size)));
        opened.netasciiBytes = held;
      } catch (err) {
        opts.netasciiBudget?.release(held);
        throw err;
      }
    } finally {
      await src.close();
    }
  }
  return opened;
}
