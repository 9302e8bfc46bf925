/**
 * Chunk manifests: the sha256 of each fixed byte range of a compressed disk file, computed once per file (in one
 * read, which also checks the whole file against the sha256 the store has for it) and kept in memory by the file's
 * sha256 and chunk size. Concurrent requests for the same file share one computation.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

export interface Manifest { file: string; size: number; chunkSize: number; chunks: string[] }

/** Reads `path` in `chunkSize` pieces; refuses a file whose sha256 is not `sha256` (changed or corrupt on disk). */
export async function computeManifest(path: string, sha256: string, chunkSize: number): Promise<Manifest> {
  const fh = await open(path, 'r');
  try {
    const whole = createHash('sha256');
    const chunks: string[] = [];
    const buf = Buffer.allocUnsafe(chunkSize);
    let size = 0;
    for (;;) {
      let got = 0;
      while (got < chunkSize) {
        const { bytesRead } = await fh.read(buf, got, chunkSize - got, size + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
      if (!got) break;
      const piece = buf.subarray(0, got);
      whole.update(piece);
      chunks.push(createHash('sha256').update(piece).digest('hex'));
      size += got;
      if (got < chunkSize) break;
    }
    const actual = whole.digest('hex');
    if (actual !== sha256) throw new Error(`${path}: sha256 ${actual}, the store says ${sha256}; not serving a manifest of a changed file`);
    return { file: sha256, size, chunkSize, chunks };
  } finally {
    await fh.close();
  }
}

export class ManifestCache {
  private cache = new Map<string, Promise<Manifest>>();
  constructor(private chunkSize: number, private maxEntries = 32) {}

  get(path: string, sha256: string): Promise<Manifest> {
    const key = `${sha256}/${this.chunkSize}`;
    let p = this.cache.get(key);
    if (p) { this.cache.delete(key); this.cache.set(key, p); return p; }
    p = computeManifest(path, sha256, this.chunkSize);
    p.catch(() => this.cache.delete(key));
    this.cache.set(key, p);
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }
}
