import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { streamDisk, ChecksumError } from '../../init/agent/steps/stream.ts';
import { startFakeImageServer } from '../helpers/agent-fake-server.ts';
import { have } from '../helpers/netns.ts';

const noZstd = have('zstd') ? false : 'zstd is not installed';
const ZSTD = 'zstd';

/** A disk-like image: mostly zeros, with random non-zero 4 KiB blocks and a tail that is not block-aligned. */
function makeImage(size: number): Buffer {
  const img = Buffer.alloc(size);
  for (let off = 0; off + 4096 <= size; off += 4096) {
    if ((off / 4096) % 7 === 0 || (off / 4096) % 11 === 3) randomBytes(4096).copy(img, off);
  }
  img.write('tail-bytes', size - 10);
  return img;
}

let dir: string;
let raw: Buffer;
let zst: Buffer;
let sha: string;
let zsha: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'iba-stream-'));
  raw = makeImage(3 * 1024 * 1024 + 1234);
  sha = createHash('sha256').update(raw).digest('hex');
  if (!noZstd) zst = execFileSync(ZSTD, ['-q', '-3', '-c'], { input: raw, maxBuffer: 1 << 28 });
  if (!noZstd) zsha = createHash('sha256').update(zst).digest('hex');
});
after(() => rmSync(dir, { recursive: true, force: true }));

for (const over of ['compressed', 'raw'] as const) {
  test(`streams and decompresses onto the target, skipping zeros (holes), verified over the ${over} bytes`, { skip: noZstd }, async (t) => {
    const srv = await startFakeImageServer(zst);
    t.after(() => srv.close());
    const target = join(dir, `disk1-${over}.img`);
    writeFileSync(target, Buffer.alloc(raw.length + 8192, 0xff)); // a "used" disk: old data everywhere
    const progress: number[] = [];
    let verifying = 0;
    const r = await streamDisk({
      url: srv.url, rawSize: raw.length, rawSha256: sha, target, zstd: ZSTD,
      ...(over === 'compressed' ? { compressedSha256: zsha, compressedSize: zst.length } : {}),
      onProgress: (d) => progress.push(d), onVerifying: () => verifying++,
    });
    assert.equal(r.verifiedOver, over);
    assert.equal(r.sha256, over === 'compressed' ? zsha : sha);
    assert.equal(r.rawBytes, raw.length);
    assert.equal(r.compressedBytes, zst.length);
    assert.equal(r.targetKind, 'file');
    assert.ok(readFileSync(target).equals(raw), 'target holds exactly the image');
    assert.ok(statSync(target).blocks * 512 < raw.length, `zero runs were not written (file is sparse: ${statSync(target).blocks * 512} bytes allocated)`);
    assert.ok(progress.length >= 2, `progress reported while streaming (${progress.length})`);
    assert.equal(progress[progress.length - 1], raw.length);
    assert.ok(progress.every((p, i) => i === 0 || p >= progress[i - 1]), 'progress is monotonic');
    assert.equal(verifying, 1);
    assert.deepEqual(srv.ranges, [null]);
  });
}

test('refuses a valid stream of another disk when the compressed sha256 differs, naming the image', { skip: noZstd }, async (t) => {
  // one byte changed in the raw image and compressed again: a well-formed stream, not the server's file
  const other = Buffer.from(raw);
  other[Math.floor(other.length / 2)] ^= 0x5a;
  const bad = execFileSync(ZSTD, ['-q', '-3', '-c'], { input: other, maxBuffer: 1 << 28 });
  const srv = await startFakeImageServer(bad);
  t.after(() => srv.close());
  const target = join(dir, 'disk8.img');
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, compressedSha256: zsha, compressedSize: zst.length, target, zstd: ZSTD }),
    (e: unknown) => e instanceof ChecksumError && e.over === 'compressed' && e.expected === zsha && e.message.includes(sha),
  );
  assert.ok(readFileSync(target).subarray(0, 1 << 20).equals(Buffer.alloc(1 << 20)), 'first MiB wiped');
});

test('resumes with a Range request after the connection is cut', { skip: noZstd }, async (t) => {
  const third = Math.floor(zst.length / 3);
  const srv = await startFakeImageServer(zst, { cuts: [third, third] });
  t.after(() => srv.close());
  const target = join(dir, 'disk2.img');
  const logs: string[] = [];
  const r = await streamDisk({
    url: srv.url, rawSize: raw.length, rawSha256: sha, target, zstd: ZSTD, retryDelayMs: 10, log: (m) => logs.push(m),
  });
  assert.equal(r.resumes, 2);
  assert.equal(srv.ranges[0], null);
  assert.equal(srv.ranges[1], `bytes=${third}-`);
  assert.equal(srv.ranges[2], `bytes=${2 * third}-`);
  assert.ok(readFileSync(target).equals(raw));
  assert.ok(logs.some((l) => /resuming at byte/.test(l)));
});

test('refuses a corrupted stream and wipes the start of the target', { skip: noZstd }, async (t) => {
  const bad = Buffer.from(zst);
  bad[Math.floor(bad.length / 2)] ^= 0xff;
  const srv = await startFakeImageServer(bad);
  t.after(() => srv.close());
  const target = join(dir, 'disk3.img');
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, compressedSha256: zsha, target, zstd: ZSTD }),
    /zstd could not decompress/,
  );
  // zstd removes a regular file it failed to write; what is left of it holds no image
  const left = existsSync(target) ? readFileSync(target) : Buffer.alloc(0);
  assert.ok(left.subarray(0, 1 << 20).equals(Buffer.alloc(Math.min(left.length, 1 << 20))), 'nothing of the image is left at the start');
});

test('refuses a well-formed stream whose sha256 differs from the workflow', { skip: noZstd }, async (t) => {
  const other = Buffer.from(raw);
  other[100] ^= 1;
  const srv = await startFakeImageServer(execFileSync(ZSTD, ['-q', '-c'], { input: other }));
  t.after(() => srv.close());
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, target: join(dir, 'disk4.img'), zstd: ZSTD }),
    (e: unknown) => e instanceof ChecksumError && e.over === 'raw' && e.expected === sha,
  );
});

test('refuses to resume when the server ignores Range', { skip: noZstd }, async (t) => {
  const srv = await startFakeImageServer(zst, { cuts: [1000], ignoreRange: true });
  t.after(() => srv.close());
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, target: join(dir, 'disk5.img'), zstd: ZSTD, retryDelayMs: 10 }),
    /cannot resume at byte 1000/,
  );
});

test('refuses a stream longer than the image size', { skip: noZstd }, async (t) => {
  const srv = await startFakeImageServer(zst);
  t.after(() => srv.close());
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length - 5000, rawSha256: sha, target: join(dir, 'disk6.img'), zstd: ZSTD }),
    /longer than the image/,
  );
});

test('reports an HTTP error', { skip: noZstd }, async () => {
  await assert.rejects(
    streamDisk({ url: 'http://127.0.0.1:9/none', rawSize: 10, rawSha256: sha, target: join(dir, 'disk7.img'), zstd: ZSTD, maxResumes: 1, retryDelayMs: 10 }),
    /download failed|ECONNREFUSED/,
  );
});

test('a zstd that cannot start fails the stream with the reason', { skip: noZstd }, async (t) => {
  const srv = await startFakeImageServer(zst);
  t.after(() => srv.close());
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, target: join(dir, 'disk9.img'), zstd: join(dir, 'no-such-zstd') }),
    /cannot start .*no-such-zstd.*ENOENT/,
  );
});
