/**
 * The streaming writer: GET a zstd-compressed disk image and let the `zstd` binary shipped in the initramfs
 * decompress it straight onto the target (`zstd -d --sparse -o TARGET`): no decompressed byte passes through JS,
 * and zstd seeks over runs of zeros instead of writing them. The target's skipped regions must read as zeros: a
 * regular file is truncated by zstd (holes), a block device is zeroed first by the caller's `zeroRange`
 * (BLKZEROOUT through `blkdiscard -z`, which devices with WRITE ZEROES/unmap do almost for free); without it, the
 * first MiB is still written whole, so no old partition table, superblock or disk marker survives there.
 *
 * Verification: the compressed bytes are hashed as they arrive (a few per cent of the raw size) and compared with
 * the workflow's `compressedSha256`, the digest of the very file the server built from the raw image; decompression
 * is deterministic, so a match means the disk holds the image whose sha256 is `rawSha256`. Without a compressed
 * digest the written disk is read back and its first `rawSize` bytes hashed against `rawSha256`.
 *
 * A connection that drops (error, early end, stall) is resumed with `Range: bytes=<received>-` and
 * `If-Range: <etag>`; the compressed bytes keep flowing into the same zstd process, so nothing is redone.
 * With `chunks` (peer-to-peer fetching, init/agent/steps/peers.ts) the compressed bytes come from that source instead,
 * in order, each chunk already checked against its manifest; the whole stream is still hashed and compared as above.
 * A stream whose sha256 differs is refused (ChecksumError) and the first MiB of the target is wiped so nothing
 * mounts it by mistake.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { open, stat, type FileHandle } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { MAX_REDIRECTS, redirectTarget } from '../redirect.ts';

export class ChecksumError extends Error {
  /** `expected`/`actual`: the digests compared (of the compressed stream, or of the raw disk); `image`: the image's raw sha256. */
  constructor(readonly expected: string, readonly actual: string, readonly over: 'compressed' | 'raw', readonly image: string) {
    super(over === 'compressed'
      ? `sha256 mismatch of the compressed stream: expected ${expected}, got ${actual}; the disk image ${image} was not mounted`
      : `sha256 mismatch: expected ${expected}, got ${actual}; the disk was not mounted`);
    this.name = 'ChecksumError';
  }
}

export interface StreamOptions {
  url: string;
  rawSize: number;
  rawSha256: string;
  /** sha256 and size of the compressed file (the workflow's image): verified instead of re-reading the disk. */
  compressedSha256?: string;
  compressedSize?: number;
  /** A regular file (created or truncated) or a block device. */
  target: string;
  zstd: string;
  headers?: Record<string, string>;
  /** The compressed file in order, chunk by chunk (init/agent/steps/peers.ts fetchChunks): replaces the GET of `url`. */
  chunks?: AsyncIterable<Buffer>;
  /** Raw bytes done (estimated from the compressed bytes received) of the total. */
  onProgress?: (rawBytesDone: number, rawBytesTotal: number) => void;
  /** Called once every byte has been written, before the checksum is compared. */
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
  resumes: number;
  /** The digest that matched: of the compressed stream (`verifiedOver` compressed) or of the raw disk. */
  sha256: string;
  verifiedOver: 'compressed' | 'raw';
  targetKind: 'file' | 'block';
}

/** What the writer leaves whole at the start of a block device it does not zero, and wipes on failure. */
export const HEAD_BYTES = 1 << 20;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GET, following redirects (init/agent/redirect.ts: --images-redirect sends the agent to a presigned S3 URL). */
async function get(url: string, headers: Record<string, string>, signal: AbortSignal, stallMs: number): Promise<http.IncomingMessage> {
  for (let hop = 0; ; hop++) {
    const res = await getOnce(url, headers, signal, stallMs);
    const next = redirectTarget(url, res.statusCode ?? 0, res.headers.location, headers);
    if (!next) return res;
    res.resume();
    if (hop >= MAX_REDIRECTS) throw new Error(`GET ${url}: more than ${MAX_REDIRECTS} redirects`);
    ({ url, headers } = next);
  }
}

function getOnce(url: string, headers: Record<string, string>, signal: AbortSignal, stallMs: number): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { headers, signal }, resolve);
    req.on('error', reject);
    req.setTimeout(stallMs, () => req.destroy(new Error(`no data for ${stallMs} ms`)));
  });
}

/** sha256 of the first `length` bytes of a file or device, read in large blocks (few calls into JS). */
async function hashHead(path: string, length: number): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    for (let pos = 0; pos < length;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
      if (!bytesRead) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

async function wipeHead(target: string, rawSize: number): Promise<void> {
  const n = Math.min(HEAD_BYTES, rawSize);
  const fh = await open(target, 'r+');
  try {
    await fh.write(Buffer.alloc(n), 0, n, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function streamDisk(o: StreamOptions): Promise<StreamResult> {
  const log = o.log ?? (() => {});
  const st = await stat(o.target).catch(() => null);
  const targetKind: 'file' | 'block' = st?.isBlockDevice() ? 'block' : 'file';
  const wantCompressed = (o.compressedSha256 ?? '').toLowerCase() || null;
  if (targetKind === 'block') {
    const fh = await open(o.target, 'r+');
    try {
      const { size } = await fh.stat();
      // stat() of a block device reports size 0; ask the device itself by seeking with a read at the end.
      const devSize = size > 0 ? size : await blockDeviceSize(o.target);
      if (devSize > 0 && devSize < o.rawSize) throw new Error(`${o.target} holds ${devSize} bytes, the image needs ${o.rawSize}`);
      // zstd --sparse seeks over zeros: they must read as zeros, at least where signatures and markers live
      if (o.zeroRange) await o.zeroRange(o.target, o.rawSize);
      else { const n = Math.min(HEAD_BYTES, o.rawSize); await fh.write(Buffer.alloc(n), 0, n, 0); }
    } finally {
      await fh.close();
    }
  }

  const ac = new AbortController();
  // -f: the target exists (a device, or a file to replace); zstd truncates a regular file and seeks on a device
  const zstd = spawn(o.zstd, ['-d', '-q', '-f', '--sparse', '-o', o.target], { stdio: ['pipe', 'ignore', 'pipe'] });
  let zstdErr = '';
  zstd.stderr.on('data', (d: Buffer) => { zstdErr += d.toString(); });
  zstd.stdin.on('error', () => { /* EPIPE when zstd gave up; its exit status says why */ });
  const zstdExit = new Promise<number>((resolve) => zstd.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
  const spawnError = new Promise<never>((_, reject) => zstd.on('error', (e) => reject(new Error(`cannot start ${o.zstd}: ${e.message}`))));
  spawnError.catch(() => {});

  const hash = createHash('sha256');
  let compressedBytes = 0;
  let resumes = 0;
  let total: number | null = o.compressedSize && o.compressedSize > 0 ? o.compressedSize : null;

  const write = async (chunk: Buffer): Promise<void> => {
    compressedBytes += chunk.length;
    hash.update(chunk);
    if (!zstd.stdin.write(chunk)) await Promise.race([once(zstd.stdin, 'drain'), zstdExit]);
    if (zstd.exitCode !== null) throw new Error('zstd exited early');
    if (total) o.onProgress?.(Math.min(o.rawSize - 1, Math.floor(o.rawSize * (compressedBytes / total))), o.rawSize);
  };

  const feedChunks = async (chunks: AsyncIterable<Buffer>): Promise<void> => {
    for await (const chunk of chunks) {
      if (ac.signal.aborted) throw new Error('stopped');
      await write(chunk);
    }
    zstd.stdin.end();
  };

  const feed = async (): Promise<void> => {
    if (o.chunks) return feedChunks(o.chunks);
    let etag: string | null = null;
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
        if (cl !== undefined) total = Number(cl);
      } else {
        const cr = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
        if (res.statusCode !== 206 || !cr || Number(cr[1]) !== compressedBytes) {
          res.resume();
          throw new Error(`cannot resume at byte ${compressedBytes}: the server answered HTTP ${res.statusCode} without a matching Content-Range (image changed or no Range support)`);
        }
      }
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) await write(chunk);
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

  let stoppedBy: Error | null = null;
  try {
    // The first failure stops both: the download is aborted and zstd is killed.
    await Promise.race([feed(), spawnError]).catch((e: Error) => { stoppedBy = e; ac.abort(); zstd.kill('SIGKILL'); });
    const code = await Promise.race([zstdExit, spawnError.catch(() => 127)]);
    const stop = stoppedBy as Error | null;
    if (stop && /cannot start/.test(stop.message)) throw stop;
    // zstd's own failure (corrupt data) shows up on our side as an early exit or a broken pipe.
    if (code !== 0 && (!stop || /zstd exited early|EPIPE|write after end/.test(stop.message))) {
      throw new Error(`zstd could not decompress the stream (exit ${code}): ${zstdErr.trim() || 'corrupt data'}`);
    }
    if (stop) throw stop;
    if (targetKind === 'file') {
      const size = (await stat(o.target)).size;
      if (size > o.rawSize) throw new Error(`the stream is longer than the image's ${o.rawSize} bytes (${size})`);
      if (size < o.rawSize) throw new Error(`the stream ended after ${size} of ${o.rawSize} bytes`);
    }
    const fh = await open(o.target, 'r+');
    try { await fh.sync(); } finally { await fh.close(); }
    o.onProgress?.(o.rawSize, o.rawSize);
    o.onVerifying?.();
    let sha256: string;
    if (wantCompressed) {
      sha256 = hash.digest('hex');
      if (sha256 !== wantCompressed) throw new ChecksumError(wantCompressed, sha256, 'compressed', o.rawSha256);
    } else {
      sha256 = await hashHead(o.target, o.rawSize);
      if (sha256 !== o.rawSha256.toLowerCase()) throw new ChecksumError(o.rawSha256, sha256, 'raw', o.rawSha256);
    }
    log(`verified the sha256 of the ${wantCompressed ? `compressed stream (${compressedBytes} bytes)` : `written disk (${o.rawSize} bytes)`}; ${resumes} resume(s)`);
    return { rawBytes: o.rawSize, compressedBytes, resumes, sha256, verifiedOver: wantCompressed ? 'compressed' : 'raw', targetKind };
  } catch (e) {
    // Nothing may mount what failed: wipe the start of the target (superblocks, partition table).
    if (zstd.exitCode === null) { zstd.kill('SIGKILL'); await zstdExit; }
    await wipeHead(o.target, o.rawSize).catch(() => {});
    throw e;
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
