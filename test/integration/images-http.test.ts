/**
 * /images/<id>.ext4(.zst) over real HTTP on 127.0.0.1 (Range, HEAD, ETag, If-None-Match, If-Range, an
 * interrupted download resumed with Range), and POST /api/v1/images (202 + background build, 400 with the field).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import Fastify, { type FastifyInstance } from 'fastify';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService, type ImageService } from '../../server/images/index.ts';
import imageFilesRoutes from '../../server/http/routes/image-files.ts';
import imageBuildsRoutes from '../../server/http/routes/api/image-builds.ts';
import { errorHandler } from '../../server/http/errors.ts';
import { ErrorReply } from '../../server/http/schemas.ts';
import type { Image } from '../../server/store/images.ts';
import { buildImage, writeOciLayout, busyboxLayer } from '../helpers/images-oci.ts';

const skip = spawnSync('debugfs', ['-V']).error || spawnSync('zstd', ['-V']).error ? 'debugfs or zstd missing' : false;

let work: string;
let store: Store;
let svc: ImageService;
let app: FastifyInstance;
let base: string;
let img: Image;
let layout: string;
/** /images/ needs a token (a workflow's session token, or the admin token): these tests use the admin token. */
const ADMIN = 'images-http-admin-token';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'ibi-http-'));
  store = Store.open(join(work, 'data'));
  const log = pino({ level: 'silent' });
  svc = createImageService({ store, log, registry: new Registry(), dataDir: join(work, 'data') });
  layout = join(work, 'layout');
  writeOciLayout(layout, buildImage({ layers: [busyboxLayer()], config: { Cmd: ['/bin/sh'] } }), 'v1');
  img = await svc.build({ type: 'oci-layout', path: layout }, { name: 'bb' });
  app = Fastify({ logger: false, forceCloseConnections: true, ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } } }); // as buildApp
  app.setErrorHandler(errorHandler as never);
  app.addSchema(ErrorReply);
  const deps = { store, log, registry: new Registry(), imageService: svc, adminToken: ADMIN } as never;
  await app.register(imageFilesRoutes, deps);
  await app.register(imageBuildsRoutes, { ...(deps as object), prefix: '/api/v1' } as never);
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

after(async () => {
  if (skip) return;
  await app?.close();
  store?.close();
  rmSync(work, { recursive: true, force: true });
});

function get(path: string, headers: Record<string, string> = {}, method = 'GET', stopAfter = Infinity): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(base + path, { method, headers: { authorization: `Bearer ${ADMIN}`, ...headers }, agent: false }, (res) => {
      const parts: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        parts.push(c);
        n += c.length;
        if (n >= stopAfter) { req.destroy(); resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }); }
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', () => {});
    });
    req.on('error', (err) => { if (stopAfter === Infinity) reject(err); });
    req.end();
  });
}

test('GET and HEAD of both forms: Content-Length, ETag = sha256, exact bytes (sendfile helper and JS loop)', { skip }, async () => {
  for (const sendfile of ['1', '0']) for (const [suffix, file, digest, type] of [['.ext4.zst', svc.filePath(img.id, 'zst'), img.compressedSha256, 'application/zstd'], ['.ext4', svc.filePath(img.id, 'raw'), img.rawSha256, 'application/octet-stream']] as const) {
    process.env.IRONBOOT_SENDFILE = sendfile; // the raw disk (>16 MiB) goes through sendfile(2) unless 0
    const want = readFileSync(file);
    const r = await get(`/images/${img.id}${suffix}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], String(want.length));
    assert.equal(r.headers.etag, `"${digest}"`);
    assert.equal(r.headers['accept-ranges'], 'bytes');
    assert.equal(r.headers['content-type'], type);
    assert.equal(sha(r.body), digest);
    const h = await get(`/images/${img.id}${suffix}`, {}, 'HEAD');
    assert.equal(h.status, 200);
    assert.equal(h.headers['content-length'], String(want.length));
    assert.equal(h.headers.etag, `"${digest}"`);
    assert.equal(h.body.length, 0);
  }
  delete process.env.IRONBOOT_SENDFILE;
});

test('Range requests, suffix ranges, 416, If-None-Match 304, If-Range', { skip }, async () => {
  const want = readFileSync(svc.filePath(img.id, 'zst'));
  const url = `/images/${img.id}.ext4.zst`;
  const etag = `"${img.compressedSha256}"`;
  let r = await get(url, { range: 'bytes=100-4195' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], `bytes 100-4195/${want.length}`);
  assert.equal(r.headers['content-length'], '4096');
  assert.ok(r.body.equals(want.subarray(100, 4196)));
  r = await get(url, { range: 'bytes=-10' });
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(want.subarray(want.length - 10)));
  r = await get(url, { range: `bytes=${want.length - 5}-` });
  assert.ok(r.body.equals(want.subarray(want.length - 5)));
  r = await get(url, { range: `bytes=${want.length}-` });
  assert.equal(r.status, 416);
  assert.equal(r.headers['content-range'], `bytes */${want.length}`);
  r = await get(url, { 'if-none-match': etag });
  assert.equal(r.status, 304);
  assert.equal(r.body.length, 0);
  r = await get(url, { range: 'bytes=0-9', 'if-range': '"stale"' });
  assert.equal(r.status, 200, 'If-Range with another validator: the whole file');
  assert.equal(r.body.length, want.length);
  r = await get(url, { range: 'bytes=0-9', 'if-range': etag });
  assert.equal(r.status, 206);
});

test('an interrupted download resumed with Range gives the exact bytes', { skip }, async () => {
  const url = `/images/${img.id}.ext4`;
  const size = img.rawSize!;
  const first = await get(url, {}, 'GET', Math.floor(size / 3)); // through the sendfile helper
  assert.ok(first.body.length >= Math.floor(size / 3) && first.body.length < size, `interrupted after ${first.body.length} of ${size}`);
  const rest = await get(url, { range: `bytes=${first.body.length}-`, 'if-range': `"${img.rawSha256}"` });
  assert.equal(rest.status, 206);
  assert.equal(rest.headers['content-range'], `bytes ${first.body.length}-${size - 1}/${size}`);
  const whole = Buffer.concat([first.body, rest.body]);
  assert.equal(whole.length, size);
  assert.equal(sha(whole), img.rawSha256);
});

test('unknown, malformed and unfinished images are 404', { skip }, async () => {
  assert.equal((await get('/images/0123456789abcdef.ext4.zst')).status, 404);
  assert.equal((await get(`/images/${img.id}.tar`)).status, 404);
  assert.equal((await get('/images/..%2fironboot.db')).status, 404);
  store.images.insert({ id: 'feedfeedfeedfeed', name: 'half', state: 'building' });
  const r = await get('/images/feedfeedfeedfeed.ext4.zst');
  assert.equal(r.status, 404);
  assert.match(r.body.toString(), /is building/);
  store.images.delete('feedfeedfeedfeed');
});

test('POST /api/v1/images: 202 building, progress, then ready; 200 when reused; 400/409 with the field', { skip }, async () => {
  const layout2 = join(work, 'layout2');
  writeOciLayout(layout2, buildImage({ layers: [busyboxLayer(), [{ path: 'etc/v', content: '2' }]] }));
  let r = await app.inject({ method: 'POST', url: '/api/v1/images', payload: { name: 'bb2', source: { type: 'oci-layout', path: layout2 } } });
  assert.equal(r.statusCode, 202, r.body);
  const started = r.json();
  assert.equal(started.state, 'building');
  assert.equal(started.name, 'bb2');
  assert.equal(started.progress.layersTotal, 2);
  let row = store.images.get(started.id)!;
  for (let i = 0; i < 200 && row.state === 'building'; i++) { await new Promise((res) => setTimeout(res, 50)); row = store.images.get(started.id)!; }
  assert.equal(row.state, 'ready', row.error ?? '');
  assert.equal((row.progress as { stage: string }).stage, 'done');
  r = await app.inject({ method: 'POST', url: '/api/v1/images', payload: { source: { type: 'oci-layout', path: layout2 } } });
  assert.equal(r.statusCode, 200);
  assert.equal(r.json().id, started.id);

  const bad = async (payload: unknown, field: string, status = 400) => {
    const res = await app.inject({ method: 'POST', url: '/api/v1/images', payload: payload as object });
    assert.equal(res.statusCode, status, res.body);
    assert.equal(res.json().field, field, res.body);
    return res.json().message as string;
  };
  await bad({}, 'source');
  await bad({ source: { type: 'ftp', ref: 'x' } }, 'source.type');
  await bad({ source: { type: 'registry' } }, 'source.ref');
  await bad({ source: { type: 'oci-layout' } }, 'source.path');
  assert.match(await bad({ source: { type: 'registry', ref: 'UPPER/case' } }, 'source.ref'), /lowercase/);
  assert.match(await bad({ source: { type: 'registry', ref: 'x', platform: 'amd64' } }, 'source.platform'), /OS\/ARCH/);
  await bad({ source: { type: 'oci-layout', path: layout2 }, size: 'huge' }, 'size');
  await bad({ source: { type: 'oci-layout', path: layout2 }, extra: 1 }, 'extra');
  await bad({ source: { type: 'oci-layout', path: join(work, 'nope') } }, 'source.path');
  // the name belongs to another image
  const layout3 = join(work, 'layout3');
  writeOciLayout(layout3, buildImage({ layers: [[{ path: 'x', content: '3' }]] }));
  assert.match(await bad({ name: 'bb', source: { type: 'oci-layout', path: layout3 } }, 'name', 409), /is used by image/);
});
