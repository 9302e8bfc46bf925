import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { streamDisk, ChecksumError, nonZeroRuns } from '../../init/agent/steps/stream.ts';
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

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'iba-stream-'));
  raw = makeImage(3 * 1024 * 1024 + 1234);
  sha = createHash('sha256').update(raw).digest('hex');
  if (!noZstd) zst = execFileSync(ZSTD, ['-q', '-3', '-c'], { input: raw, maxBuffer: 1 << 28 });
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('nonZeroRuns finds runs of non-zero blocks', () => {
  const b = Buffer.alloc(16);
  b[5] = 1; b[6] = 1; b[13] = 1;
  assert.deepEqual(nonZeroRuns(b, 4), [[4, 8], [12, 16]]);
  assert.deepEqual(nonZeroRuns(Buffer.alloc(8), 4), []);
  assert.deepEqual(nonZeroRuns(Buffer.from([0, 0, 0, 0, 0, 9]), 4), [[4, 6]]);
});

test('streams, decompresses, verifies and skips zero blocks; skipped regions read as zeros', { skip: noZstd }, async (t) => {
  const srv = await startFakeImageServer(zst);
  t.after(() => srv.close());
  const target = join(dir, 'disk1.img');
  writeFileSync(target, Buffer.alloc(raw.length + 8192, 0xff)); // a "used" disk: old data everywhere
  const progress: number[] = [];
  let verifying = 0;
  const r = await streamDisk({
    url: srv.url, rawSize: raw.length, rawSha256: sha, target, zstd: ZSTD,
    onProgress: (d) => progress.push(d), onVerifying: () => verifying++,
  });
  assert.equal(r.sha256, sha);
  assert.equal(r.rawBytes, raw.length);
  assert.equal(r.compressedBytes, zst.length);
  assert.equal(r.targetKind, 'file');
  assert.ok(r.bytesSkipped > raw.length / 2, `most of the image is zeros and skipped (${r.bytesSkipped})`);
  assert.equal(r.bytesWritten + r.bytesSkipped, raw.length);
  assert.ok(readFileSync(target).equals(raw), 'target holds exactly the image');
  assert.ok(statSync(target).blocks * 512 < raw.length, 'zero blocks were not written (file is sparse)');
  assert.equal(progress[progress.length - 1], raw.length);
  assert.ok(progress.every((p, i) => i === 0 || p >= progress[i - 1]), 'progress is monotonic');
  assert.equal(verifying, 1);
  assert.deepEqual(srv.ranges, [null]);
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
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, target, zstd: ZSTD }),
    /zstd could not decompress/,
  );
  assert.ok(readFileSync(target).subarray(0, 1 << 20).equals(Buffer.alloc(1 << 20)), 'first MiB wiped');
});

test('refuses a well-formed stream whose sha256 differs from the workflow', { skip: noZstd }, async (t) => {
  const other = Buffer.from(raw);
  other[100] ^= 1;
  const srv = await startFakeImageServer(execFileSync(ZSTD, ['-q', '-c'], { input: other }));
  t.after(() => srv.close());
  await assert.rejects(
    streamDisk({ url: srv.url, rawSize: raw.length, rawSha256: sha, target: join(dir, 'disk4.img'), zstd: ZSTD }),
    (e: unknown) => e instanceof ChecksumError && e.expected === sha,
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
