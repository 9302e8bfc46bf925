/**
 * In-process codecs from the native addon (native/codec.cc, built by deploy/build-native.sh): layer
 * decompression (ISA-L's inflate for gzip, multi-member; libzstd for zstd) and the image's zstd compression
 * (libzstd, level 3, a worker per CPU) written straight to the .zst file descriptor — no pipes, no processes.
 * Each call runs in libuv's thread pool on one chunk; one call is in flight per stream. When the addon is not
 * built (or IRONBOOT_IMAGE_CODEC=subprocess) the igzip / zstd subprocesses are used instead.
 */
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon, type LoadedAddon } from '../native-addon.ts';
import { ImageError } from './errors.ts';


type DecodeDone = (err: string | null, consumed: number, produced: number, atBoundary: boolean) => void;
type EncodeDone = (err: string | null, errno: number, position: number) => void;
export interface CodecAddon {
  decoderNew(kind: 0 | 1): unknown;
  decoderRun(h: unknown, input: Buffer, inOffset: number, output: Buffer, cb: DecodeDone): void;
  encoderNew(fd: number, position: number, level: number, workers: number): unknown;
  encoderWrite(h: unknown, data: Buffer | null, end: boolean, cb: EncodeDone): void;
  encoderClose(h: unknown): void;
  compressFrame(data: Buffer, level: number): Buffer;
}

let loaded: LoadedAddon<CodecAddon> | undefined;

/** The addon, or null (reason in codecUnavailable()) when not built, not loadable, or IRONBOOT_IMAGE_CODEC=subprocess. */
export function nativeCodec(): CodecAddon | null {
  if (process.env.IRONBOOT_IMAGE_CODEC === 'subprocess') return null;
  loaded ??= loadAddon<CodecAddon>(join(dirname(fileURLToPath(import.meta.url)), 'native'), 'ironboot_images_native');
  return loaded.addon;
}

export function codecUnavailable(): string { return process.env.IRONBOOT_IMAGE_CODEC === 'subprocess' ? 'IRONBOOT_IMAGE_CODEC=subprocess' : loaded?.why ?? ''; }

const OUT = 1 << 20;
const IN_MIN = 1 << 20;
const EMPTY = Buffer.alloc(0);

/**
 * Decompresses a gzip (any number of members) or zstd (any number of frames) stream in the thread pool; yields
 * 1 MiB chunks, decoding the next while the consumer handles the last. Errors are ImageErrors naming the layer.
 */
export async function* nativeDecompress(a: CodecAddon, src: AsyncIterable<Buffer>, format: 'gzip' | 'zstd', what: string): AsyncGenerator<Buffer> {
  const h = a.decoderNew(format === 'gzip' ? 0 : 1);
  const it = src[Symbol.asyncIterator]();
  const fail = (detail: string) => new ImageError(`${what}: ${format} data is corrupt or truncated (${detail})`);
  let input: Buffer = EMPTY;
  let off = 0;
  let eof = false;
  let needInput = true;
  let boundary = true;
  let out = Buffer.allocUnsafeSlow(OUT);
  let fill = 0;
  let full: Buffer | null = null;
  let finished = false;
  try {
    for (;;) {
      if (needInput && off >= input.length) {
        if (eof) break;
        // at least IN_MIN bytes per call: an HTTP body arrives in 16–64 KiB pieces, and each call is a round trip
        // through the thread pool (a registry pull was 0.5 s slower than a local layout before this)
        const parts: Buffer[] = [];
        let have = 0;
        while (have < IN_MIN) {
          const r = await it.next();
          if (r.done) { eof = true; break; }
          parts.push(r.value);
          have += r.value.length;
        }
        input = parts.length === 1 ? parts[0] : Buffer.concat(parts, have);
        off = 0;
        if (!input.length) continue;
      }
      const p = new Promise<[string | null, number, number, boolean]>((resolve) =>
        a.decoderRun(h, input, off, out.subarray(fill), (err, consumed, produced, atBoundary) => resolve([err, consumed, produced, atBoundary])));
      if (full) { const f = full; full = null; yield f; }
      const [err, consumed, produced, atBoundary] = await p;
      if (err) throw fail(err);
      off += consumed;
      fill += produced;
      boundary = atBoundary;
      needInput = fill < out.length;
      if (needInput && !consumed && !produced && off < input.length) throw fail('no progress');
      if (fill === out.length) { full = out; out = Buffer.allocUnsafeSlow(OUT); fill = 0; }
    }
    if (full) yield full;
    if (fill) yield out.subarray(0, fill);
    if (!boundary) throw fail('unexpected end of data');
    finished = true;
  } finally {
    if (!finished) try { await it.return?.(undefined); } catch { /* the source's own error is not the one to report */ }
  }
}

/** A failure of the image's zstd compression (code ENOSPC when the .zst's disk is full). */
export class ZstdError extends Error {
  constructor(message: string, readonly code?: string) { super(message); }
}

const ENOSPC = 28;
const QUEUE = 3;

/**
 * zstd compression of the buffers written, level 3 with a worker per CPU, appended to fd from position on
 * (pwrite: the fd's offset is not used). write() resolves once the buffer is queued (waits while QUEUE are);
 * `done` is called when zstd no longer needs it. end() finishes the frame; abort() stops after the running call.
 */
export class NativeZstd {
  private readonly h: unknown;
  private readonly queue: Array<{ buf: Buffer | null; end: boolean; done?: () => void }> = [];
  private running = false;
  private closed = false;
  error: ZstdError | null = null;
  private waiters: Array<() => void> = [];
  private endResult: { resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(private readonly a: CodecAddon, fd: number, position: number) {
    this.h = a.encoderNew(fd, position, 3, availableParallelism());
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private pump(): void {
    if (this.running || this.closed || !this.queue.length) return;
    const item = this.queue.shift()!;
    if (this.error) { item.done?.(); this.pump(); return; }
    this.running = true;
    this.a.encoderWrite(this.h, item.buf, item.end, (err, errno) => {
      this.running = false;
      item.done?.();
      if (err && !this.error) this.error = new ZstdError(`zstd compression failed: ${err}`, errno === ENOSPC ? 'ENOSPC' : undefined);
      if (this.error) for (const q of this.queue.splice(0)) q.done?.();
      if ((item.end || this.error) && this.endResult) {
        const r = this.endResult;
        this.endResult = null;
        if (this.error) r.reject(this.error); else r.resolve();
      }
      this.wake();
      this.pump();
    });
  }

  /** Queues buf; waits while the queue is full. Throws the compression error once there is one. */
  async write(buf: Buffer, done?: () => void): Promise<void> {
    if (this.error) { done?.(); throw this.error; }
    this.queue.push({ buf, end: false, done });
    this.pump();
    while (this.queue.length >= QUEUE && !this.error) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error) throw this.error;
  }

  /** Ends the frame and waits for every byte to be written. */
  end(): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    return new Promise<void>((resolve, reject) => {
      this.endResult = { resolve, reject };
      this.queue.push({ buf: null, end: true });
      this.pump();
    });
  }

  /** Drops what is queued, waits for the running call, frees the compressor. */
  async abort(): Promise<void> {
    for (const q of this.queue.splice(0)) q.done?.();
    while (this.running) await new Promise<void>((r) => this.waiters.push(r));
    if (this.endResult) { this.endResult.reject(new ZstdError('zstd compression aborted')); this.endResult = null; }
    this.close();
  }

  /** The compression error, if there was one. */
  async failure(): Promise<Error | null> { return this.error; }

  close(): void {
    if (this.closed || this.running) return;
    this.closed = true;
    this.a.encoderClose(this.h);
  }
}
