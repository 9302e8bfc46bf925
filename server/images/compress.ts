/**
 * The wire form of a disk: `zstd -3 -T0` of the raw image (level 3: the sweet spot of ratio and speed),
 * with the sha256 and size of both, the raw one hashed while zstd reads it.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { ImageError } from './errors.ts';

export interface DiskDigests { rawSize: number; rawSha256: string; compressedSize: number; compressedSha256: string }

export async function sha256File(path: string, onBytes?: (n: number) => void): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 << 20 })) {
    h.update(c as Buffer);
    onBytes?.((c as Buffer).length);
  }
  return h.digest('hex');
}

export async function compressDisk(rawPath: string, zstPath: string, onBytes?: (n: number) => void): Promise<DiskDigests> {
  // zstd reads and writes the files itself (piping its output through Node measured 2× slower); the raw file is
  // hashed meanwhile, the compressed one after
  const zstd = spawn('zstd', ['-3', '-T0', '-q', '-f', '-o', zstPath, rawPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  zstd.stderr.on('data', (d) => { if (stderr.length < 4096) stderr += d; });
  const exited = new Promise<number | null>((resolve, reject) => {
    zstd.once('error', (err) => reject(new ImageError(`cannot run zstd: ${err.message} (install the zstd package)`)));
    zstd.once('close', resolve);
  });
  exited.catch(() => {});
  let rawSha256: string;
  try {
    rawSha256 = await sha256File(rawPath, onBytes);
  } catch (err) {
    zstd.kill('SIGKILL');
    await exited.catch(() => {});
    throw err;
  }
  const code = await exited;
  if (code !== 0) {
    const msg = stderr.trim() || `exit ${code}`;
    throw Object.assign(new ImageError(`zstd compression failed: ${msg}`), /no space/i.test(msg) ? { code: 'ENOSPC' } : {});
  }
  const compressedSha256 = await sha256File(zstPath);
  return { rawSize: statSync(rawPath).size, rawSha256, compressedSize: statSync(zstPath).size, compressedSha256 };
}
