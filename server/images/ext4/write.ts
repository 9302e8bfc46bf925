/**
 * Emits a planned ext4 image (plan.ts) in one sequential pass: every 1 MiB chunk is hashed (sha256 of the raw
 * disk), written to the raw file and piped into `zstd -3 -T0`, so making the filesystem and compressing it overlap.
 * All-zero chunks are not written to the raw file (it is pre-sized, they stay holes) but are hashed and compressed
 * like the rest. The compressed file is hashed once zstd is done.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, ftruncateSync, openSync, readSync, statSync, write as writeCb } from 'node:fs';
import { BLOCK, type Ext4Layout } from './plan.ts';

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
const CHUNK = 1 << 20;
const ZERO = Buffer.alloc(CHUNK);

export interface DiskDigests { rawSize: number; rawSha256: string; compressedSize: number; compressedSha256: string }

export class ZstdError extends Error {
  constructor(message: string, readonly code?: string) { super(message); }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

export interface WriteProgress {
  /** Raw image bytes produced so far (hashed, written and handed to zstd). */
  onBytes?: (n: number) => void;
  /** Called once every byte went to zstd (only the compression is left). */
  onEmitted?: () => void;
}

/**
 * Writes the image to rawPath and its zstd form to zstPath; file contents come from memory or `tree/<path>`.
 * On failure the caller removes both files.
 */
export async function writeExt4(layout: Ext4Layout, tree: string, rawPath: string, zstPath: string, progress: WriteProgress = {}): Promise<DiskDigests> {
  const size = layout.blocks * BLOCK;
  const fileSize = layout.sizeBytes;
  const fd = openSync(rawPath, 'wx');
  const zstd = spawn('zstd', ['-3', '-T0', '-q', '-f', `--stream-size=${fileSize}`, '-o', zstPath], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  zstd.stderr.on('data', (d) => { if (stderr.length < 4096) stderr += d; });
  const exited = new Promise<number | null>((resolve, reject) => {
    zstd.once('error', (err) => reject(new ZstdError(`cannot run zstd: ${err.message} (install the zstd package)`)));
    zstd.once('close', resolve);
  });
  exited.catch(() => {});
  let pipeError: Error | null = null;
  zstd.stdin.on('error', (err) => { pipeError = err; });
  const zstdFailure = async (): Promise<Error> => {
    const code = await Promise.race([exited, new Promise((r) => setTimeout(r, 2000, 'timeout'))]).catch((e: Error) => e);
    if (code instanceof Error) return code;
    const msg = stderr.trim() || `exit ${String(code)}`;
    return new ZstdError(`zstd compression failed: ${msg}`, /no space/i.test(msg) ? 'ENOSPC' : undefined);
  };

  const hash = createHash('sha256');
  let pendingWrite: Promise<unknown> = Promise.resolve();
  let emitted = 0;
  // a small ring of chunk buffers, each reused once zstd's pipe and the raw file are done with it
  const free: Buffer[] = [];
  const waiting: Array<() => void> = [];
  const release = (b: Buffer) => { const w = waiting.shift(); free.push(b); w?.(); };
  let allocated = 0;
  const nextChunk = async (): Promise<Buffer> => {
    if (!free.length && allocated < 16) { allocated++; return Buffer.allocUnsafeSlow(CHUNK); }
    while (!free.length) await new Promise<void>((r) => waiting.push(r));
    return free.pop()!;
  };
  let chunk = await nextChunk();
  let fill = 0;
  let chunkStart = 0;

  const toZstd = async (buf: Buffer, done?: () => void) => {
    if (pipeError || zstd.exitCode !== null) throw await zstdFailure();
    if (!zstd.stdin.write(buf, done)) {
      await new Promise<void>((resolve) => {
        const go = () => { zstd.stdin.off('drain', go); zstd.off('close', go); resolve(); };
        zstd.stdin.on('drain', go);
        zstd.once('close', go);
      });
      if (pipeError || zstd.exitCode !== null) throw await zstdFailure();
    }
  };
  const flush = async () => {
    if (!fill) return;
    const out = chunk.subarray(0, fill);
    hash.update(out);
    await pendingWrite; // one raw write in flight at a time (in the thread pool, beside the hashing)
    const whole = chunk;
    let users = 2;
    const doneWith = () => { if (--users === 0) release(whole); };
    pendingWrite = fsWrite(fd, out, chunkStart).then(doneWith);
    pendingWrite.catch(() => {});
    await toZstd(out, doneWith);
    emitted += fill;
    progress.onBytes?.(fill);
    chunkStart += fill;
    chunk = await nextChunk();
    fill = 0;
  };
  const zeros = async (n: number) => {
    while (n > 0) {
      if (fill === 0 && n >= CHUNK) { // a whole zero chunk: a hole in the raw file
        hash.update(ZERO);
        await toZstd(ZERO);
        emitted += CHUNK;
        progress.onBytes?.(CHUNK);
        chunkStart += CHUNK;
        n -= CHUNK;
        continue;
      }
      const k = Math.min(n, CHUNK - fill);
      chunk.fill(0, fill, fill + k);
      fill += k;
      n -= k;
      if (fill === CHUNK) await flush();
    }
  };
  const bytes = async (data: Buffer) => {
    let off = 0;
    while (off < data.length) {
      const k = Math.min(data.length - off, CHUNK - fill);
      data.copy(chunk, fill, off, off + k);
      fill += k;
      off += k;
      if (fill === CHUNK) await flush();
    }
  };
  const chunkBytes = async (chunks: Buffer[], offset: number, length: number) => {
    let skip = offset;
    let left = length;
    for (const c of chunks) {
      if (skip >= c.length) { skip -= c.length; continue; }
      const part = c.subarray(skip, skip + left);
      skip = 0;
      await bytes(part);
      left -= part.length;
      if (!left) return;
    }
    throw new Error(`ext4 writer: a file held in memory has ${length - left} of ${length} bytes`);
  };
  const fileBytes = async (path: string, offset: number, length: number) => {
    const f = openSync(`${tree}/${path}`, 'r');
    try {
      let pos = offset;
      const end = offset + length;
      while (pos < end) {
        const n = readSync(f, chunk, fill, Math.min(end - pos, CHUNK - fill), pos);
        if (n === 0) throw new Error(`/${path}: the flattened file is shorter than its tar entry`);
        fill += n;
        pos += n;
        if (fill === CHUNK) await flush();
      }
    } finally {
      closeSync(f);
    }
  };

  try {
    ftruncateSync(fd, fileSize);
    let pos = 0;
    for (const p of layout.pieces) {
      const at = p.block * BLOCK;
      if (at < pos) throw new Error(`ext4 plan: overlapping pieces at block ${p.block}`);
      await zeros(at - pos);
      if ('data' in p) {
        await bytes(p.data);
        pos = at + p.data.length;
      } else if ('chunks' in p) {
        await chunkBytes(p.chunks, p.offset, p.length);
        pos = at + p.length;
      } else {
        await fileBytes(p.path, p.offset, p.length);
        pos = at + p.length;
      }
      const pad = (BLOCK - (pos % BLOCK)) % BLOCK;
      await zeros(pad);
      pos += pad;
    }
    await zeros(fileSize - pos); // free space (and the tail past the last group when the size is not a group multiple)
    await flush();
    if (emitted !== fileSize || size > fileSize) throw new Error(`ext4 writer: emitted ${emitted} of ${fileSize} bytes`);
    await pendingWrite;
    zstd.stdin.end();
    progress.onEmitted?.();
    const code = await exited;
    if (code !== 0) throw await zstdFailure();
  } catch (err) {
    zstd.stdin.destroy();
    if (zstd.exitCode === null) zstd.kill('SIGKILL');
    await exited.catch(() => {});
    await pendingWrite.catch(() => {});
    if (pipeError && !(err instanceof ZstdError)) throw await zstdFailure();
    throw err;
  } finally {
    closeSync(fd);
  }
  const rawSha256 = hash.digest('hex');
  const compressedSha256 = await sha256File(zstPath);
  return { rawSize: fileSize, rawSha256, compressedSize: statSync(zstPath).size, compressedSha256 };
}
