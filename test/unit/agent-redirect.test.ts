/**
 * The agent follows the server's redirect to a presigned S3 URL (--images-redirect): the whole-file stream and a
 * chunk fetch both, with the server's Authorization kept from the other origin, and every resume starting again
 * at the server (which redirects anew).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { redirectTarget, MAX_REDIRECTS } from '../../init/agent/redirect.ts';
import { streamDisk } from '../../init/agent/steps/stream.ts';
import { fetchBufferWith } from '../../init/agent/steps/peers.ts';
import { have } from '../helpers/netns.ts';

const noZstd = have('zstd') ? false : 'zstd is not installed';

test('redirectTarget: which answers are followed, where to, and with which headers', () => {
  const h = { authorization: 'Bearer s', range: 'bytes=5-' };
  assert.equal(redirectTarget('http://srv/images/a.zst', 200, 'http://x/', h), null);
  assert.equal(redirectTarget('http://srv/images/a.zst', 307, undefined, h), null);
  assert.deepEqual(redirectTarget('http://srv/images/a.zst', 307, '/other/a.zst', h), { url: 'http://srv/other/a.zst', headers: h }, 'same origin: the session goes along');
  assert.deepEqual(redirectTarget('http://srv/images/a.zst', 302, 'http://s3:9000/b/a.zst?X-Amz-Signature=1', h), { url: 'http://s3:9000/b/a.zst?X-Amz-Signature=1', headers: { range: 'bytes=5-' } }, 'another origin: no Authorization, the Range kept');
  assert.throws(() => redirectTarget('http://srv/a', 301, 'file:///etc/shadow', h), /only http and https/);
});

/** The "daemon": checks the session, answers 307 to the "bucket"; the "bucket" serves the bytes (with Range), cutting once. */
async function pair(body: Buffer, opts: { cutAt?: number } = {}) {
  const seen = { server: 0, bucketAuth: [] as (string | undefined)[], bucketRanges: [] as (string | undefined)[] };
  let cut = opts.cutAt;
  const bucket = http.createServer((req, res) => {
    seen.bucketAuth.push(req.headers.authorization);
    seen.bucketRanges.push(req.headers.range);
    const m = /^bytes=(\d+)-(\d+)?$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Number(m[2]) : body.length - 1;
    const part = body.subarray(start, end + 1);
    res.writeHead(m ? 206 : 200, { 'content-length': part.length, etag: '"s3-etag"', ...(m ? { 'content-range': `bytes ${start}-${end}/${body.length}` } : {}) });
    if (cut !== undefined && cut > start && cut < end) { res.write(part.subarray(0, cut - start)); cut = undefined; setTimeout(() => res.destroy(), 20); return; }
    res.end(part);
  });
  await new Promise<void>((r) => bucket.listen(0, '127.0.0.1', r));
  const bucketUrl = `http://127.0.0.1:${(bucket.address() as AddressInfo).port}`;
  const server = http.createServer((req, res) => {
    if (req.headers.authorization !== 'Bearer session') { res.writeHead(401).end(); return; }
    seen.server++;
    res.writeHead(307, { location: `${bucketUrl}/bkt${req.url}?X-Amz-Signature=${seen.server}` }).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/images/a.ext4.zst`;
  return { url, seen, close: () => { server.close(); bucket.close(); server.closeAllConnections(); bucket.closeAllConnections(); } };
}

test('the whole-file stream follows the 307, drops the session at the bucket, and resumes through the server', { skip: noZstd }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-redirect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const raw = Buffer.concat([randomBytes(300_000), Buffer.alloc(200_000)]);
  const zst = execFileSync('zstd', ['-q', '-3', '-c'], { input: raw });
  const p = await pair(zst, { cutAt: Math.floor(zst.length / 2) });
  t.after(() => p.close());
  const target = join(dir, 'disk.img');
  const r = await streamDisk({
    url: p.url, headers: { authorization: 'Bearer session' }, rawSize: raw.length, rawSha256: createHash('sha256').update(raw).digest('hex'),
    compressedSha256: createHash('sha256').update(zst).digest('hex'), compressedSize: zst.length, target, zstd: 'zstd', retryDelayMs: 10,
  });
  assert.equal(r.resumes, 1);
  assert.ok(readFileSync(target).equals(raw));
  assert.equal(p.seen.server, 2, 'the resume went back to the server for a fresh URL');
  assert.deepEqual(p.seen.bucketAuth, [undefined, undefined], 'the session never reached the bucket');
  assert.equal(p.seen.bucketRanges[0], undefined);
  assert.equal(p.seen.bucketRanges[1], `bytes=${Math.floor(zst.length / 2)}-`);
});

test('a chunk fetch follows the 307 with its Range; a redirect loop ends with an error', async (t) => {
  const body = randomBytes(10_000);
  const p = await pair(body);
  t.after(() => p.close());
  const fetch = fetchBufferWith();
  const r = await fetch(p.url, { authorization: 'Bearer session', range: 'bytes=100-199' }, 5000, 1 << 20);
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(body.subarray(100, 200)));
  assert.deepEqual(p.seen.bucketAuth, [undefined]);

  const loop = http.createServer((req, res) => res.writeHead(302, { location: req.url }).end());
  await new Promise<void>((r2) => loop.listen(0, '127.0.0.1', r2));
  t.after(() => loop.close());
  await assert.rejects(fetch(`http://127.0.0.1:${(loop.address() as AddressInfo).port}/x`, {}, 5000, 1000), new RegExp(`more than ${MAX_REDIRECTS} redirects`));
});
