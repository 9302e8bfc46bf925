/** The native image codecs (server/images/native, codec.ts) against the subprocess / zlib paths they replace. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { nativeCodec, nativeDecompress, NativeZstd, codecUnavailable } from '../../server/images/codec.ts';
import { decompressed } from '../../server/images/layer-stream.ts';

const addon = nativeCodec();
const skip = addon ? false : `native codec: ${codecUnavailable()}`;

async function* chunks(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let o = 0; o < b.length; o += size) yield b.subarray(o, o + size);
}
async function all(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of src) out.push(c);
  return Buffer.concat(out);
}
const zstd = (b: Buffer, ...args: string[]) => spawnSync('zstd', ['-q', '-c', ...args], { input: b, maxBuffer: 1 << 30 }).stdout;
/** Compressible but not trivial: text-like with random runs. */
function sample(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let o = 0; o < n; o += 4096) (o % 3 ? Buffer.from(`line ${o} `.repeat(400)) : randomBytes(4096)).copy(b, o);
  return b;
}

test('gzip: multi-member, trailing zeros, any chunking, large outputs; same bytes as the subprocess path', { skip }, async () => {
  const a = sample(3 << 20), b = Buffer.alloc(5 << 20), c = sample(100_000);
  const gz = Buffer.concat([gzipSync(a), gzipSync(b), gzipSync(c), Buffer.alloc(512)]);
  const want = Buffer.concat([a, b, c]);
  for (const size of [1000, 1 << 20, gz.length]) assert.ok((await all(nativeDecompress(addon!, chunks(gz, size), 'gzip', 'l'))).equals(want), `chunks of ${size}`);
  const small = Buffer.concat([gzipSync(c.subarray(0, 20_000)), gzipSync(Buffer.alloc(0)), gzipSync(c.subarray(20_000, 30_000))]);
  assert.ok((await all(nativeDecompress(addon!, chunks(small, 1), 'gzip', 'l'))).equals(c.subarray(0, 30_000)), 'byte by byte, an empty member');
  process.env.IRONBOOT_IMAGE_CODEC = 'subprocess';
  try {
    assert.ok((await all(decompressed(chunks(gz.subarray(0, gz.length - 512), 1 << 20), 'l'))).equals(want), 'igzip / zlib agree');
  } finally { delete process.env.IRONBOOT_IMAGE_CODEC; }
  assert.ok((await all(decompressed(chunks(gz, 65536), 'l'))).equals(want), 'decompressed() takes the native path');
});

test('gzip: corrupt, truncated, bad crc and trailing garbage are clean errors', { skip }, async () => {
  const data = sample(1 << 20);
  const gz = gzipSync(data);
  const bad = Buffer.from(gz); bad[gz.length >> 1] ^= 0xff; bad[(gz.length >> 1) + 1] ^= 0x55;
  const crc = Buffer.from(gz); crc[gz.length - 6] ^= 1;
  const cases: Array<[string, Buffer]> = [
    ['corrupt', bad], ['truncated', gz.subarray(0, gz.length >> 1)], ['cut before the trailer', gz.subarray(0, gz.length - 4)],
    ['bad crc', crc], ['trailing garbage', Buffer.concat([gz, Buffer.from('junk')])],
  ];
  for (const [name, input] of cases) {
    await assert.rejects(all(nativeDecompress(addon!, chunks(input, 65536), 'gzip', 'layer 1/1 (x)')), /^ImageError: layer 1\/1 \(x\): gzip data is corrupt or truncated \(.+\)$/, name);
  }
  let closed = false;
  async function* src() { try { yield* chunks(bad, 1000); } finally { closed = true; } }
  await assert.rejects(all(nativeDecompress(addon!, src(), 'gzip', 'l')));
  assert.ok(closed, 'the source is closed on an error');
});

test('zstd layers: several frames and a skippable one; truncation is an error', { skip }, async () => {
  const a = sample(2 << 20), b = sample(300_000);
  const skipF = Buffer.alloc(16); skipF.writeUInt32LE(0x184d2a50, 0); skipF.writeUInt32LE(8, 4);
  const z = Buffer.concat([zstd(a), skipF, zstd(b, '--no-check')]);
  for (const size of [4099, 65536, z.length]) assert.ok((await all(nativeDecompress(addon!, chunks(z, size), 'zstd', 'l'))).equals(Buffer.concat([a, b])), `chunks of ${size}`);
  await assert.rejects(all(nativeDecompress(addon!, chunks(z.subarray(0, z.length - 10), 65536), 'zstd', 'l')), /zstd data is corrupt or truncated/);
});

test('NativeZstd: writes a zstd stream at the position, zstd -dc gives the input back; ENOSPC is a ZstdError', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-codec-'));
  try {
    const f = join(dir, 'x.zst');
    const fd = openSync(f, 'w+');
    writeSync(fd, Buffer.from('HEAD')); // the region before the position stays as written
    const z = new NativeZstd(addon!, fd, 100);
    const parts = [sample(1 << 20), Buffer.alloc(1 << 20), sample(3 << 20), sample(12345)];
    let released = 0;
    for (const p of parts) await z.write(p, () => released++);
    await z.end();
    z.close();
    closeSync(fd);
    assert.equal(released, parts.length, 'every buffer handed back');
    const file = readFileSync(f);
    assert.equal(file.subarray(0, 4).toString(), 'HEAD');
    const out = spawnSync('zstd', ['-dc'], { input: file.subarray(100), maxBuffer: 1 << 30 });
    assert.equal(out.status, 0, out.stderr.toString());
    assert.ok(out.stdout.equals(Buffer.concat(parts)));
    assert.ok(addon!.compressFrame(parts[0], 3).length < parts[0].length);
    assert.ok(spawnSync('zstd', ['-dc'], { input: addon!.compressFrame(parts[2], 3), maxBuffer: 1 << 30 }).stdout.equals(parts[2]));

    const full = openSync('/dev/full', 'w');
    const zf = new NativeZstd(addon!, full, 0);
    const err = await (async () => { for (let i = 0; i < 64; i++) await zf.write(randomBytes(1 << 20)); await zf.end(); })().then(() => null, (e: Error & { code?: string }) => e);
    await zf.abort();
    closeSync(full);
    assert.ok(err, 'writing to /dev/full fails');
    assert.equal(err!.name, 'Error');
    assert.equal((err as { code?: string }).code, 'ENOSPC');
    assert.match(err!.message, /zstd compression failed: .*No space left on device/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
