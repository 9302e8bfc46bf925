/**
 * The streaming writer: GET a zstd-compressed disk image, decompress it on the fly (the `zstd` binary
 * shipped in the initramfs), hash the raw bytes, and write only the blocks that are not all zeros, each at
 * its own offset. The target's skipped regions must read as zeros: a regular file is truncated to the
 * image size (holes), a block device is zeroed first by the caller's `zeroRange` (BLKZEROOUT through
 * `blkdiscard -z`, which devices with WRITE ZEROES/unmap do almost for free).
 *
 * A connection that drops (error, early end, stall) is resumed with `Range: bytes=<received>-` and
 * `If-Range: <etag>`; the compressed bytes keep flowing into the same zstd process, so nothing is redone.
 * A stream whose sha256 differs from the workflow's is refused (ChecksumError) and the first MiB of the
 * target is wiped so nothing mounts it by mistake.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { open, stat, type FileHandle } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';

export class ChecksumError extends Error {
  constructor(readonly expected: string, readonly actual: string) {
    super(`sha256 mismatch: expected ${expected}, got ${actual}; the disk was not mounted`);
    this.name = 'ChecksumError';
  }
}

export interface StreamOptions {
  url: string;
  rawSize: number;
  rawSha256: string;
  /** A regular file (created or truncated) or a block device. */
  target: string;
  zstd: string;
  headers?: Record<string, string>;
  blockSize?: number;
  onProgress?: (rawBytesDone: number, rawBytesTotal: number) => void;
  /** Called once every raw byte has been written, before the checksum is compared. */
  onVerifying?: () => void;
  /** Makes [0, length) of a block device read as zeros before writing (skipped when absent). */
  zeroRange?: (device: string, length: number) => Promise<void>;
  maxResumes?: number;
  stallTimeoutMs?: number;
  retryDelayMs?: number;
  log?: (msg: string) => void;
}

export interface StreamResult {
  rawBytes: number;
  compressedBytes: number;
  bytesWritten: number;
  bytesSkipped: number;
  resumes: number;
  sha256: string;
  targetKind: 'file' | 'block';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function get(url: string, headers: Record<string, string>, signal: AbortSignal, stallMs: number): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { headers, signal }, resolve);
    req.on('error', reject);
    req.setTimeout(stallMs, () => req.destroy(new Error(`no data for ${stallMs} ms`)));
  });
}

/** Indexes of the runs of non-zero blocks in buf: [start, end) byte offsets. */
export function nonZeroRuns(buf: Buffer, blockSize: number): Array<[number, number]> {
  const zero = Buffer.alloc(blockSize);
  const runs: Array<[number, number]> = [];
  let start = -1;
  for (let off = 0; off < buf.length; off += blockSize) {
    const end = Math.min(off + blockSize, buf.length);
    const isZero = buf.compare(zero, 0, end - off, off, end) === 0;
    if (!isZero && start < 0) start = off;
    if (isZero && start >= 0) { runs.push([start, off]); start = -1; }
  }
  if (start >= 0) runs.push([start, buf.length]);
  return runs;
}

export async function streamDisk(o: StreamOptions): Promise<StreamResult> {
  const bs = o.blockSize ?? 4096;
  const log = o.log ?? (() => {});
  const st = await stat(o.target).catch(() => null);
  const targetKind: 'file' | 'block' = st?.isBlockDevice() ? 'block' : 'file';
  let fh: FileHandle;
  if (targetKind === 'block') {
    fh = await open(o.target, 'r+');
    const { size } = await fh.stat();
    // stat() of a block device reports size 0; ask the device itself by seeking with a read at the end.
    const devSize = size > 0 ? size : await blockDeviceSize(o.target);
    if (devSize > 0 && devSize < o.rawSize) {
      await fh.close();
      throw new Error(`${o.target} holds ${devSize} bytes, the image needs ${o.rawSize}`);
    }
    if (o.zeroRange) await o.zeroRange(o.target, o.rawSize);
  } else {
    fh = await open(o.target, 'w');
    await fh.truncate(o.rawSize);           // skipped blocks are holes and read as zeros
  }

  const ac = new AbortController();
  const zstd = spawn(o.zstd, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let zstdErr = '';
  zstd.stderr.on('data', (d: Buffer) => { zstdErr += d.toString(); });
  zstd.stdin.on('error', () => { /* EPIPE when zstd gave up; its exit status says why */ });
  const zstdExit = new Promise<number>((resolve) => zstd.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
  const spawnError = new Promise<never>((_, reject) => zstd.on('error', (e) => reject(new Error(`cannot start ${o.zstd}: ${e.message}`))));
  spawnError.catch(() => {});

  let compressedBytes = 0;
  let resumes = 0;

  const feed = async (): Promise<void> => {
    let etag: string | null = null;
    let total: number | null = null;
    for (;;) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      if (compressedBytes > 0) {
        headers.range = `bytes=${compressedBytes}-`;
        if (etag) headers['if-range'] = etag;
      }
      let res: http.IncomingMessage;
      try {
        res = await get(o.url, headers, ac.signal, o.stallTimeoutMs ?? 30_000);
      } catch (e) {
        if (ac.signal.aborted) throw e;
        if (++resumes > (o.maxResumes ?? 20)) throw new Error(`download failed after ${resumes - 1} resumes: ${(e as Error).message}`);
        log(`connection failed (${(e as Error).message}); retrying at byte ${compressedBytes}`);
        await sleep(o.retryDelayMs ?? 1000);
        continue;
      }
      if (compressedBytes === 0) {
        if (res.statusCode !== 200) { res.resume(); throw new Error(`GET ${o.url}: HTTP ${res.statusCode}`); }
        etag = (res.headers.etag as string | undefined) ?? null;
        const cl = res.headers['content-length'];
        total = cl !== undefined ? Number(cl) : null;
      } else {
        const cr = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
        if (res.statusCode !== 206 || !cr || Number(cr[1]) !== compressedBytes) {
          res.resume();
          throw new Error(`cannot resume at byte ${compressedBytes}: the server answered HTTP ${res.statusCode} without a matching Content-Range (image changed or no Range support)`);
        }
      }
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          compressedBytes += chunk.length;
          if (!zstd.stdin.write(chunk)) await Promise.race([once(zstd.stdin, 'drain'), zstdExit]);
          if (zstd.exitCode !== null) throw new Error('zstd exited early');
        }
      } catch (e) {
        if (ac.signal.aborted || zstd.exitCode !== null) throw e;
        log(`connection cut at byte ${compressedBytes} (${(e as Error).message})`);
      }
      const done = total !== null ? compressedBytes >= total : res.complete;
      if (done) break;
      if (++resumes > (o.maxResumes ?? 20)) throw new Error(`download incomplete after ${resumes - 1} resumes (${compressedBytes} of ${total ?? '?'} bytes)`);
      log(`resuming at byte ${compressedBytes} of ${total ?? '?'} (resume ${resumes})`);
      await sleep(o.retryDelayMs ?? 200);
    }
    zstd.stdin.end();
  };

  const hash = createHash('sha256');
  let pos = 0;
  let written = 0;
  let skipped = 0;
  let writeMs = 0;
  let hashMs = 0;
  const writeBlocks = async (buf: Buffer, at: number) => {
    const tw = performance.now();
    try { await writeRuns(buf, at); } finally { writeMs += performance.now() - tw; }
  };
  const writeRuns = async (buf: Buffer, at: number) => {
    if (at + buf.length > o.rawSize) throw new Error(`the stream is longer than the image's ${o.rawSize} bytes`);
    let last = 0;
    for (const [s, e] of nonZeroRuns(buf, bs)) {
      let off = s;
      while (off < e) {
        const { bytesWritten } = await fh.write(buf, off, e - off, at + off);
        off += bytesWritten;
      }
      written += e - s;
      skipped += s - last;
      last = e;
    }
    skipped += buf.length - last;
  };
  const consume = async (): Promise<void> => {
    let carry: Buffer = Buffer.alloc(0);
    for await (const chunk of zstd.stdout as AsyncIterable<Buffer>) {
      const th = performance.now();
      hash.update(chunk);
      hashMs += performance.now() - th;
      const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      const full = data.length - (data.length % bs);
      if (full) await writeBlocks(data.subarray(0, full), pos);
      pos += full;
      carry = Buffer.from(data.subarray(full));
      o.onProgress?.(pos + carry.length, o.rawSize);
    }
    if (carry.length) { await writeBlocks(carry, pos); pos += carry.length; }
  };

  // The first failure on either side stops both: the download is aborted and zstd is killed.
  let stoppedBy: Error | null = null;
  const stopAll = (e: Error) => { stoppedBy ??= e; ac.abort(); zstd.kill('SIGKILL'); throw e; };
  const feeding = Promise.race([feed(), spawnError]).catch(stopAll);
  const consuming = Promise.race([consume(), spawnError]).catch(stopAll);
  await Promise.allSettled([feeding, consuming]);
  const code = await Promise.race([zstdExit, spawnError.catch(() => 127)]);
  try {
    const stop = stoppedBy as Error | null;
    if (stop && /cannot start/.test(stop.message)) throw stop;
    // zstd's own failure (corrupt data) shows up on our side as an early exit or a broken pipe.
    if (code !== 0 && (!stop || /zstd exited early|EPIPE|write after end/.test(stop.message))) {
      throw new Error(`zstd could not decompress the stream (exit ${code}): ${zstdErr.trim() || 'corrupt data'}`);
    }
    if (stop) throw stop;
    if (pos !== o.rawSize) throw new Error(`the stream ended after ${pos} of ${o.rawSize} bytes`);
    o.onVerifying?.();
    const sha256 = hash.digest('hex');
    if (sha256 !== o.rawSha256.toLowerCase()) throw new ChecksumError(o.rawSha256, sha256);
    await fh.sync();
    log(`wrote ${written} bytes, skipped ${skipped} zero bytes, ${resumes} resume(s); time in writes ${(writeMs / 1000).toFixed(2)} s, hashing ${(hashMs / 1000).toFixed(2)} s`);
    return { rawBytes: pos, compressedBytes, bytesWritten: written, bytesSkipped: skipped, resumes, sha256, targetKind };
  } catch (e) {
    // Nothing may mount what failed: wipe the start of the target (superblocks, partition table).
    await fh.write(Buffer.alloc(Math.min(1 << 20, o.rawSize)), 0, Math.min(1 << 20, o.rawSize), 0).catch(() => {});
    await fh.sync().catch(() => {});
    throw e;
  } finally {
    await fh.close().catch(() => {});
  }
}

/** Size of a block device in bytes, from /sys/class/block/<name>/size (512-byte sectors). */
export async function blockDeviceSize(dev: string): Promise<number> {
  const { readFile, realpath } = await import('node:fs/promises');
  try {
    const name = (await realpath(dev)).split('/').pop()!;
    return Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim()) * 512;
  } catch {
    return 0;
  }
}
