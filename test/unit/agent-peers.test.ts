/**
 * The agent's peer side (init/agent/steps/peers.ts) and the chunk path of streamDisk: chunks fed in order to zstd
 * land as the image on the target; a stream whose whole sha256 differs is refused; the peer server serves only
 * verified chunks, only with the file's peer token, and waits for a chunk still being fetched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { streamDisk, ChecksumError } from '../../init/agent/steps/stream.ts';
import { HeldChunks, servePeers, fetchBufferWith, sha256 } from '../../init/agent/steps/peers.ts';
import type { ChunkManifest } from '../../server/agent/api.ts';
import { have } from '../helpers/netns.ts';

const noZstd = have('zstd') ? false : 'zstd is not installed';

function manifestOf(file: Buffer, chunkSize: number): ChunkManifest {
  const chunks: string[] = [];
  for (let o = 0; o < file.length; o += chunkSize) chunks.push(sha256(file.subarray(o, o + chunkSize)));
  return { file: sha256(file), size: file.length, chunkSize, chunks, peerToken: randomBytes(18).toString('base64url'), port: 7480 };
}
async function* pieces(b: Buffer, size: number): AsyncGenerator<Buffer> { for (let o = 0; o < b.length; o += size) yield b.subarray(o, o + size); }

test('streamDisk with a chunk source: the chunks go through zstd onto the target, the whole stream verified', { skip: noZstd }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-peers-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const raw = Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000), randomBytes(123_457)]);
  const zst = execFileSync('zstd', ['-q', '-3', '-c'], { input: raw });
  const target = join(dir, 'disk.img');
  writeFileSync(target, Buffer.alloc(raw.length, 0xee));
  const r = await streamDisk({
    url: 'http://127.0.0.1:9/never-fetched', chunks: pieces(zst, 65536), rawSize: raw.length, rawSha256: sha256(raw),
    compressedSha256: sha256(zst), compressedSize: zst.length, target, zstd: 'zstd',
  });
  assert.equal(r.verifiedOver, 'compressed');
  assert.equal(r.compressedBytes, zst.length);
  assert.ok(readFileSync(target).equals(raw));
  // a source whose bytes are not the file (say, a manifest that was wrong): refused by the whole-stream sha256
  const other = Buffer.from(zst); other[other.length - 9] ^= 1;
  await assert.rejects(streamDisk({
    url: 'http://127.0.0.1:9/never-fetched', chunks: pieces(other, 65536), rawSize: raw.length, rawSha256: sha256(raw),
    compressedSha256: sha256(zst), compressedSize: zst.length, target: join(dir, 'disk2.img'), zstd: 'zstd',
  }), (e: Error) => e instanceof ChecksumError || /zstd could not decompress/.test(e.message));
});

test('the peer server: only verified chunks, only with the peer token, waits for a chunk being fetched', async (t) => {
  const file = randomBytes(3 * 1000 + 17);
  const m = manifestOf(file, 1000);
  const held = new HeldChunks(m);
  const srv = await servePeers(new Map([[m.file, held]]), { host: '127.0.0.1', port: 0, waitMs: 2000 });
  t.after(() => srv.close());
  const get = fetchBufferWith();
  const url = (n: number) => `http://127.0.0.1:${srv.port}/p2p/${m.file}/${n}`;
  const auth = { authorization: `Bearer ${m.peerToken}` };
  assert.throws(() => held.put(0, file.subarray(1, 1001), sha256(file.subarray(1, 1001))), /not the manifest's sha256/);
  held.put(0, file.subarray(0, 1000), m.chunks[0]);
  assert.equal((await get(url(0), {}, 5000, 1 << 20)).status, 401, 'no token');
  assert.equal((await get(url(0), { authorization: 'Bearer nope-nope-nope-nope-' }, 5000, 1 << 20)).status, 401, 'wrong token');
  assert.equal((await get(`http://127.0.0.1:${srv.port}/p2p/${'0'.repeat(64)}/0`, auth, 5000, 1 << 20)).status, 404, 'another file');
  const ok = await get(url(0), auth, 5000, 1 << 20);
  assert.equal(ok.status, 200);
  assert.ok(ok.body.equals(file.subarray(0, 1000)));
  // chunk 1 is still being fetched: the request waits and gets it once it is verified
  const waiting = get(url(1), auth, 5000, 1 << 20);
  setTimeout(() => held.put(1, file.subarray(1000, 2000), m.chunks[1]), 100);
  assert.ok((await waiting).body.equals(file.subarray(1000, 2000)));
  // the fetch ended without chunk 2: nobody waits for it any more
  held.settle();
  assert.equal((await get(url(2), auth, 5000, 1 << 20)).status, 404);
  assert.equal((await get(url(9), auth, 5000, 1 << 20)).status, 404, 'past the last chunk');
  assert.equal(createHash('sha256').update(file).digest('hex'), m.file);
});
