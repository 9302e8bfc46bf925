/**
 * Streams an ext4 image while it is being made: file contents are written to the raw file and piped into
 * `zstd -3 -T0` as the layers arrive (data area, from block headBlocks on), then the planned tail (plan.ts) and
 * the free space follow in the same stream, and the head (superblock + group descriptors, known last) is written
 * at offset 0 of the raw file and compressed on its own.
 *
 * The .zst file: [reserved region: the head's own zstd frame, then a skippable frame filling the region] [zstd's
 * frame of everything from the data area to the last metadata block] [a frame of RLE blocks for the zeros after
 * it: the journal's empty blocks and the free space]. Concatenated frames decompress to the concatenation and
 * skippable frames decompress to nothing, so `zstd -d` gives exactly the raw image. zstd writes its output through
 * a file descriptor positioned after the reserved region: libzstd in-process (codec.ts, the native addon) when
 * built, else the `zstd -3 -T0` process with the bytes piped to it.
 *
 * All-zero stretches of the tail and free space are not written to the raw file (it is sized at the end, they
 * stay holes); inside the tail they are compressed like the rest. The raw sha256 is computed at the end over the finished file
 * (head, then the data area back from the page cache, then the tail), while zstd compresses its last bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fstatSync, ftruncateSync, openSync, writeSync, read as readCb, write as writeCb } from 'node:fs';
import { BLOCK, type Ext4Layout } from './plan.ts';
import { nativeCodec, NativeZstd, ZstdError } from '../codec.ts';

export { ZstdError };

/** pwrite of the whole buffer, in the thread pool. */
function fsWrite(fd: number, buf: Buffer, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number) => writeCb(fd, buf, off, buf.length - off, pos + off, (err, n) => {
      if (err) reject(err);
      else if (off + n < buf.length) step(off + n);
      else resolve();
    });
    step(0);
  });
}
/** pread into buf[0, n), in the thread pool; the bytes read. */
function fsRead(fd: number, buf: Buffer, n: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => readCb(fd, buf, 0, n, pos, (err, got) => (err ? reject(err) : resolve(got))));
}
const CHUNK = 1 << 20;
const ZERO = Buffer.alloc(CHUNK);
/** Bytes at the start of the .zst for the head's frame and a skippable frame (a 64 KiB head compresses to ~1 KiB; bound ~65.9 KiB). */
export const ZST_RESERVED = 72 << 10;
const SKIPPABLE_MAGIC = 0x184d2a50;

export interface DiskDigests { rawSize: number; rawSha256: string; compressedSize: number; compressedSha256: string }

export interface WriteProgress {
  /** Image bytes produced so far (written and handed to zstd). */
  onBytes?: (n: number) => void;
  /** Called once every byte went to zstd (only the compression and the hashing are left). */
  onEmitted?: () => void;
}

async function sha256Fd(fd: number, size: number): Promise<string> {
  const h = createHash('sha256');
  if (size > 0) for await (const c of createReadStream('', { fd, start: 0, end: size - 1, autoClose: false, highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * A zstd frame (RFC 8878) of n zero bytes made of RLE blocks (a block header and the one byte, 128 KiB per
 * block): what zstd itself would spend time on, written directly.
 */
export function zeroFrame(n: number): Buffer {
  if (n <= 0) return Buffer.alloc(0);
  const MAX = 128 << 10;
  const out = Buffer.alloc(6 + Math.ceil(n / MAX) * 4);
  out.writeUInt32LE(0xfd2fb528, 0);
  out[4] = 0; // frame header descriptor: no content size, not single segment, no checksum, no dictionary
  out[5] = (17 - 10) << 3; // window descriptor: 128 KiB
  let o = 6;
  for (let left = n; left > 0; o += 4) {
    const k = Math.min(left, MAX);
    left -= k;
    out.writeUIntLE((left === 0 ? 1 : 0) | (1 << 1) | (k << 3), o, 3); // last block?, type RLE, size
    out[o + 3] = 0;
  }
  return out;
}

/** Compresses one buffer with `zstd -3` (the head's frame). */
function zstdBuffer(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const z = spawn('zstd', ['-3', '-q', '-c', `--stream-size=${data.length}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    z.stdout.on('data', (d: Buffer) => out.push(d));
    z.stderr.on('data', (d) => { if (stderr.length < 4096) stderr += d; });
    z.once('error', (err) => reject(new ZstdError(`cannot run zstd: ${err.message} (install the zstd package)`)));
    z.once('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new ZstdError(`zstd compression failed: ${stderr.trim() || `exit ${code}`}`))));
    z.stdin.on('error', () => {});
    z.stdin.end(data);
  });
}

/** Where the compressed stream goes: NativeZstd (codec.ts) or SubprocessZstd. */
interface ZstdSink {
  /** Takes buf (done: when it is no longer needed); resolves when more may be written; throws a ZstdError. */
  write(buf: Buffer, done?: () => void): Promise<void>;
  /** Ends the stream and waits for all of it to be in the file. */
  end(): Promise<void>;
  /** Stops at once. */
  abort(): Promise<void>;
  /** The compression's own error, if it failed (a write error may just be its symptom). */
  failure(): Promise<Error | null>;
  /** Frees what the compressor holds (after end() or abort()). */
  close(): void;
}

/** `zstd -3 -T0` with its stdout on the .zst's fd (positioned after the reserved region), fed through a pipe. */
class SubprocessZstd implements ZstdSink {
  private readonly child: ChildProcess & { stdin: NodeJS.WritableStream & { write: (b: Buffer, cb?: () => void) => boolean; destroy: () => void } };
  private stderr = '';
  private readonly exited: Promise<number | null>;
  private pipeError: Error | null = null;

  constructor(zfd: number) {
    const zstd = spawn('zstd', ['-3', '-T0', '-q', '-c'], { stdio: ['pipe', zfd, 'pipe'] });
    this.child = zstd as typeof this.child;
    zstd.stderr!.on('data', (d) => { if (this.stderr.length < 4096) this.stderr += d; });
    this.exited = new Promise<number | null>((resolve, reject) => {
      zstd.once('error', (err) => reject(new ZstdError(`cannot run zstd: ${err.message} (install the zstd package)`)));
      zstd.once('close', resolve);
    });
    this.exited.catch(() => {});
    zstd.stdin!.on('error', (err) => { this.pipeError = err; });
  }

  private async zstdFailure(): Promise<Error> {
    const code = await Promise.race([this.exited, new Promise((r) => setTimeout(r, 2000, 'timeout'))]).catch((e: Error) => e);
    if (code instanceof Error) return code;
    const msg = this.stderr.trim() || `exit ${String(code)}`;
    return new ZstdError(`zstd compression failed: ${msg}`, /no space/i.test(msg) ? 'ENOSPC' : undefined);
  }

  async failure(): Promise<Error | null> { return this.pipeError ? this.zstdFailure() : null; }

  async write(buf: Buffer, done?: () => void): Promise<void> {
    const z = this.child;
    if (this.pipeError || z.exitCode !== null) throw await this.zstdFailure();
    if (!z.stdin.write(buf, done)) {
      await new Promise<void>((resolve) => {
        const go = () => { z.stdin.removeListener('drain', go); z.removeListener('close', go); resolve(); };
        z.stdin.on('drain', go);
        z.once('close', go);
      });
      if (this.pipeError || z.exitCode !== null) throw await this.zstdFailure();
    }
  }

  async end(): Promise<void> {
    this.child.stdin.end();
    const code = await this.exited;
    if (code !== 0) throw await this.zstdFailure();
  }

  async abort(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin.destroy();
      this.child.kill('SIGKILL');
    }
    await this.exited.catch(() => {});
  }

  close(): void {}
}

/**
 * The raw file and the .zst being written. Bytes go in order from headBlocks * BLOCK on: emit() / zeros(), then
 * finish() with the planned layout. On failure call abort(); the caller removes both files.
 */
export class ImageStream {
  private readonly fd: number;
  private readonly zfd: number;
  private readonly zstd: ZstdSink;
  private readonly headFrame: (head: Buffer) => Promise<Buffer>;
  private pendingWrite: Promise<unknown> = Promise.resolve();
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<() => void> = [];
  private allocated = 0;
  private chunk: Buffer | null = null;
  private fill = 0;
  /** Raw offset of chunk[0]. */
  private chunkStart: number;
  private closed = false;
  private failed = false;
  /** Raw bytes [0, durable) are final on disk (their writes completed): the hash may read them. */
  private durable: number;
  private durableWaiters: Array<() => void> = [];

  constructor(rawPath: string, zstPath: string, readonly headBlocks: number, private readonly progress: WriteProgress = {}) {
    this.chunkStart = headBlocks * BLOCK;
    this.durable = this.chunkStart;
    this.fd = openSync(rawPath, 'wx+');
    try {
      this.zfd = openSync(zstPath, 'wx+');
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
    try {
      writeSync(this.zfd, Buffer.alloc(ZST_RESERVED)); // zstd's output starts after the reserved region (the fd's offset)
    } catch (err) {
      closeSync(this.fd); closeSync(this.zfd);
      throw err;
    }
    const codec = nativeCodec();
    try {
      this.zstd = codec ? new NativeZstd(codec, this.zfd, ZST_RESERVED) : new SubprocessZstd(this.zfd);
    } catch (err) {
      closeSync(this.fd); closeSync(this.zfd);
      throw err;
    }
    this.headFrame = codec ? async (b) => codec.compressFrame(b, 3) : zstdBuffer;
  }

  /** Raw offset of the next byte. */
  get position(): number { return this.chunkStart + this.fill; }

  private advance(to: number): void {
    this.durable = to;
    this.wake();
  }

  private wake(): void {
    const w = this.durableWaiters;
    this.durableWaiters = [];
    for (const f of w) f();
  }

  /** sha256 of the raw file, read (from the page cache) right behind the writes. */
  private async hashRaw(size: number): Promise<string> {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafeSlow(4 << 20);
    let pos = 0;
    while (pos < size) {
      while (this.durable <= pos && !this.failed) await new Promise<void>((r) => this.durableWaiters.push(r));
      if (this.failed) throw new Error('image stream failed');
      const n = await fsRead(this.fd, buf, Math.min(buf.length, this.durable - pos), pos);
      if (n === 0) throw new Error(`ext4 writer: the raw file ends at ${pos} of ${size} bytes`);
      h.update(buf.subarray(0, n));
      pos += n;
    }
    return h.digest('hex');
  }

  private release(b: Buffer): void {
    this.free.push(b);
    this.waiting.shift()?.();
  }

  /** A chunk buffer: a small ring, each reused once zstd's pipe and the raw file are done with it. */
  private async nextChunk(): Promise<Buffer> {
    if (!this.free.length && this.allocated < 16) { this.allocated++; return Buffer.allocUnsafeSlow(CHUNK); }
    while (!this.free.length) await new Promise<void>((r) => this.waiting.push(r));
    return this.free.pop()!;
  }

  private async flush(): Promise<void> {
    if (!this.fill) return;
    const whole = this.chunk!;
    const out = whole.subarray(0, this.fill);
    await this.pendingWrite; // one raw write in flight at a time (in the thread pool)
    let users = 2;
    const doneWith = () => { if (--users === 0) this.release(whole); };
    const end = this.chunkStart + out.length;
    this.pendingWrite = fsWrite(this.fd, out, this.chunkStart).then(() => { this.advance(end); doneWith(); });
    this.pendingWrite.catch(() => {});
    const n = this.fill;
    this.chunkStart += n;
    this.fill = 0;
    this.chunk = null;
    await this.zstd.write(out, doneWith);
    this.progress.onBytes?.(n);
  }

  /** Appends bytes. Returns a promise only when a chunk went out (await it: backpressure). */
  emit(data: Buffer): Promise<void> | undefined {
    if (this.chunk && this.fill + data.length < CHUNK) {
      data.copy(this.chunk, this.fill);
      this.fill += data.length;
      return undefined;
    }
    return this.emitSlow(data);
  }

  private async emitSlow(data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length) {
      if (!this.chunk) this.chunk = await this.nextChunk();
      const k = Math.min(data.length - off, CHUNK - this.fill);
      data.copy(this.chunk, this.fill, off, off + k);
      this.fill += k;
      off += k;
      if (this.fill === CHUNK) await this.flush();
    }
  }

  /** Appends n zero bytes; whole zero chunks stay holes in the raw file. */
  async zeros(n: number): Promise<void> {
    while (n > 0) {
      if (this.fill === 0 && n >= CHUNK) {
        await this.zstd.write(ZERO);
        const end = this.chunkStart + CHUNK; // a hole: final once the writes before it are (the file is sized)
        this.pendingWrite = this.pendingWrite.then(() => this.advance(end));
        this.pendingWrite.catch(() => {});
        this.chunkStart += CHUNK;
        this.progress.onBytes?.(CHUNK);
        n -= CHUNK;
        continue;
      }
      if (!this.chunk) this.chunk = await this.nextChunk();
      const k = Math.min(n, CHUNK - this.fill);
      this.chunk.fill(0, this.fill, this.fill + k);
      this.fill += k;
      n -= k;
      if (this.fill === CHUNK) await this.flush();
    }
  }

  /** Zeros up to the next block boundary. */
  pad(): Promise<void> | undefined {
    const r = this.position % BLOCK;
    return r ? this.zeros(BLOCK - r) : undefined;
  }

  /**
   * Writes the head, emits the tail (layout.pieces, all at or past the current position) and the free space up to
   * the file size while hashing the raw file behind the writes, puts the head's frame at the start of the .zst and
   * waits for zstd; returns the digests of both files.
   */
  async finish(layout: Ext4Layout): Promise<DiskDigests> {
    const fileSize = layout.sizeBytes;
    let hashing: Promise<string> | null = null;
    try {
      // the head first (at offset 0 of the raw file, sized now: what is never written reads as zeros), so the raw
      // hash can start at once and follow the writes while the tail is emitted and zstd catches up
      if (layout.head.length !== this.headBlocks * BLOCK) throw new Error('ext4 writer: the head does not match the reserved blocks');
      if (this.position > fileSize) throw new Error(`ext4 writer: ${this.position} bytes written for a ${fileSize}-byte image`);
      ftruncateSync(this.fd, fileSize);
      await fsWrite(this.fd, layout.head, 0);
      hashing = this.hashRaw(fileSize);
      hashing.catch(() => {});
      const headFrameP = this.headFrame(layout.head);
      headFrameP.catch(() => {});
      for (const p of layout.pieces) {
        const at = p.block * BLOCK;
        if (at < this.position) throw new Error(`ext4 plan: a tail piece at block ${p.block} overlaps what was written`);
        await this.zeros(at - this.position);
        await this.emit(p.data);
        await this.pad();
      }
      if (this.position > fileSize) throw new Error(`ext4 plan: the tail ends past the ${fileSize}-byte image`);
      // the rest (the journal after its first block, the free space) is zeros: holes in the raw file, and a frame
      // of RLE blocks appended to the .zst rather than passed through zstd
      await this.flush();
      const zeroRun = fileSize - this.position;
      this.pendingWrite = this.pendingWrite.then(() => this.advance(fileSize));
      await this.pendingWrite;
      const ended = this.zstd.end();
      ended.catch(() => {});
      this.progress.onBytes?.(zeroRun);
      this.progress.onEmitted?.();
      // the head's own frame at the start of the .zst
      const headFrame = await headFrameP;
      if (headFrame.length + 8 > ZST_RESERVED) throw new Error(`ext4 writer: the head compresses to ${headFrame.length} bytes, more than reserved`);
      const skip = Buffer.alloc(ZST_RESERVED - headFrame.length);
      skip.writeUInt32LE(SKIPPABLE_MAGIC, 0);
      skip.writeUInt32LE(skip.length - 8, 4);
      await fsWrite(this.zfd, Buffer.concat([headFrame, skip]), 0);
      const rawSha256 = await hashing;
      await ended;
      const zeros = zeroFrame(zeroRun);
      if (zeros.length) await fsWrite(this.zfd, zeros, fstatSync(this.zfd).size);
      const compressedSize = fstatSync(this.zfd).size;
      const compressedSha256 = await sha256Fd(this.zfd, compressedSize);
      return { rawSize: fileSize, rawSha256, compressedSize, compressedSha256 };
    } catch (err) {
      this.failed = true;
      this.wake();
      await hashing?.catch(() => {});
      await this.abort();
      if (!(err instanceof ZstdError)) { const zf = await this.zstd.failure(); if (zf) throw zf; }
      throw err;
    } finally {
      this.close();
    }
  }

  /** Stops zstd and closes both files (the caller removes them). */
  async abort(): Promise<void> {
    await this.zstd.abort();
    await this.pendingWrite.catch(() => {});
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.zstd.close();
    closeSync(this.fd);
    closeSync(this.zfd);
  }
}
