/**
 * GET/HEAD /images/<id>.ext4.zst and /images/<id>.ext4: container disks for machines (Range for resume,
 * ETag = the file's sha256, Content-Length), via send-file.ts (sendfile(2) for big bodies).
 *
 * Each request presents a bearer token: the session token of a workflow that uses this image (from the address
 * its hello came from, while the workflow is not finished), or the admin token. 401 without or with a wrong
 * token, 403 for a workflow of another image or from another address, 409 once the workflow is final.
 *
 * With an S3 artifact store (--images s3://…) a daemon that has no copy of the file fetches it from the bucket into
 * its cache and checks it against the image row's sha256 before the first byte goes out (server/images/
 * artifact-cache.ts): a copy that does not match is refused (502) and never served. With --images-redirect the
 * zstd form is answered, after the same token check, by a 307 to a presigned URL of the object (the raw form,
 * which the bucket does not hold, is still streamed from here).
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { AppDeps } from '../app.ts';
import { ArtifactFetchError, type ImageService } from '../../images/index.ts';
import { sendFile } from '../send-file.ts';
import { bearer, tokenMatches } from '../auth.ts';
import { authorizeSession } from './agent.ts';
import type { BootDiskService } from '../../images/bootable.ts';

export type ImageFilesOptions = AppDeps & {
  imageService?: ImageService;
  bootDisks?: BootDiskService | null;
  /** Answer GET of the zstd form with a redirect to the S3 object, valid for `seconds` (S3 artifact store only). */
  redirect?: { seconds: number } | null;
};

/** Body bytes of container disks answered 200/206 to GET (a resumed download counts its remaining range only). */
function imageBytesCounter(registry: Registry): Counter<'kind'> {
  const name = 'ironboot_image_bytes_sent_total';
  return (registry.getSingleMetric(name) as Counter<'kind'> | undefined) ?? new Counter({
    name, help: 'Container disk body bytes sent to machines (GET answered 200/206), by file kind (zst, raw)', labelNames: ['kind'], registers: [registry],
  });
}

function imageRedirectsCounter(registry: Registry): Counter<'kind'> {
  const name = 'ironboot_image_redirects_total';
  return (registry.getSingleMetric(name) as Counter<'kind'> | undefined) ?? new Counter({
    name, help: 'Container disk GETs answered by a redirect to a presigned S3 URL (--images-redirect)', labelNames: ['kind'], registers: [registry],
  });
}

/** A file the S3 artifact cache could not provide (server/images/artifact-cache.ts): its status and reason. */
function fetchFailed(err: unknown, reply: FastifyReply) {
  if (!(err instanceof ArtifactFetchError)) throw err;
  return reply.code(err.status).send({ error: err.status === 503 ? 'Service Unavailable' : err.status === 404 ? 'Not Found' : 'Bad Gateway', field: 'image', message: err.message });
}

const FILE = /^([a-z0-9]{1,64})\.ext4(\.zst)?$/;
const CHUNKS = /^([a-z0-9]{1,64})\.(ext4|disk)\.zst\.chunks$/;
const INSTALL_FILE = /^([a-z0-9]{1,64})\.disk(\.zst)?$/;

const imageFilesRoutes: FastifyPluginAsync<ImageFilesOptions> = async (app, opts) => {
  const svc = opts.imageService ?? (opts.images as ImageService | undefined);
  if (!svc || typeof svc.filePath !== 'function') throw new Error('image-files: no imageService given');
  const { store, workflows, log, adminToken } = opts;
  const bytesSent = imageBytesCounter(opts.registry);
  const redirects = imageRedirectsCounter(opts.registry);
  const bucket = svc.artifactStore ?? null;
  const redirect = opts.redirect && bucket ? opts.redirect : null;
  const p2p = opts.p2p ?? null;
  /** The chunk manifest of a compressed disk (server/p2p): served under the same token rules as the file. */
  const manifest = async (path: string, sha256: string | null, reply: FastifyReply) => {
    if (!p2p || !sha256) return reply.code(404).send({ error: 'Not Found', message: 'peer-to-peer fetching is off (--no-p2p)' });
    try {
      const m = await p2p.manifest(path, sha256);
      reply.header('cache-control', 'no-store');
      return m;
    } catch (err) {
      // the agent then fetches the whole file, whose sha256 it checks as before
      log.error({ err, file: sha256 }, 'chunk manifest not served');
      return reply.code(500).send({ error: 'Internal Server Error', message: `no chunk manifest of ${sha256}: ${(err as Error).message}` });
    }
  };
  const handler = async (req: FastifyRequest<{ Params: { file: string } }>, reply: FastifyReply) => {
    const c = CHUNKS.exec(req.params.file);
    if (c && c[2] === 'ext4') {
      if (!tokenMatches(bearer(req.headers.authorization), adminToken)) {
        const wf = authorizeSession(store, workflows, log, req);
        if (wf.imageId !== c[1]) return reply.code(403).send({ error: 'Forbidden', field: 'image', message: `workflow ${wf.id} uses image ${wf.imageId}, not ${c[1]}` });
      }
      const img = store.images.get(c[1]);
      if (!img || img.state !== 'ready') return reply.code(404).send({ error: 'Not Found', message: img ? `image ${img.id} is ${img.state}` : `no image ${c[1]}` });
      // with an S3 artifact store the file may not be here yet: fetched and verified into the cache first
      let path: string;
      try {
        path = await svc.localFile(img, 'zst');
      } catch (err) {
        return fetchFailed(err, reply);
      }
      return manifest(path, img.compressedSha256 ?? null, reply);
    }
    const m = FILE.exec(req.params.file);
    if (!m) return reply.code(404).send({ error: 'Not Found', message: 'expected /images/<id>.ext4 or /images/<id>.ext4.zst' });
    if (!tokenMatches(bearer(req.headers.authorization), adminToken)) {
      const wf = authorizeSession(store, workflows, log, req);
      if (wf.imageId !== m[1]) {
        log.warn({ mac: wf.machineMac, workflow: wf.id, image: m[1], from: req.ip }, 'image download refused: the workflow uses another image');
        return reply.code(403).send({ error: 'Forbidden', field: 'image', message: `workflow ${wf.id} uses image ${wf.imageId}, not ${m[1]}` });
      }
    }
    const img = store.images.get(m[1]);
    if (!img || img.state !== 'ready') return reply.code(404).send({ error: 'Not Found', message: img ? `image ${img.id} is ${img.state}` : `no image ${m[1]}` });
    const kind = m[2] ? 'zst' : 'raw';
    if (redirect && bucket && kind === 'zst') {
      let url: string;
      try {
        url = await bucket.presign(`${img.id}.ext4.zst`, redirect.seconds);
      } catch (err) {
        log.error({ image: img.id, err: (err as Error).message }, 'image redirect refused: no presigned URL');
        return reply.code(503).send({ error: 'Service Unavailable', field: 'image', message: `cannot presign ${bucket.describe(`${img.id}.ext4.zst`)}: ${(err as Error).message}` });
      }
      redirects.inc({ kind });
      // the URL carries its own short-lived credentials: no cache may keep it
      return reply.code(307).header('location', url).header('cache-control', 'no-store').header('etag', `"${img.compressedSha256}"`).send();
    }
    let path: string;
    try {
      path = await svc.localFile(img, kind);
    } catch (err) {
      return fetchFailed(err, reply);
    }
    const out = sendFile(req, reply, path, {
      cacheControl: 'public, max-age=31536000, immutable',
      etag: (kind === 'zst' ? img.compressedSha256 : img.rawSha256) ?? undefined,
      contentType: kind === 'zst' ? 'application/zstd' : 'application/octet-stream',
    });
    if (req.method === 'GET' && (reply.statusCode === 200 || reply.statusCode === 206)) {
      bytesSent.inc({ kind }, Number(reply.getHeader('content-length') ?? 0));
    }
    return out;
  };
  app.get('/images/:file', { schema: { hide: true } as never, logLevel: 'warn' }, handler);

  // mode install: the bootable disk of an image (server/images/bootable.ts), same rules as the container disk
  const boot = opts.bootDisks ?? null;
  app.get('/install/:file', { schema: { hide: true } as never, logLevel: 'warn' }, async (req: FastifyRequest<{ Params: { file: string } }>, reply: FastifyReply) => {
    const c = CHUNKS.exec(req.params.file);
    const m = INSTALL_FILE.exec(req.params.file) ?? (c && c[2] === 'disk' ? c : null);
    if (!m || !boot) return reply.code(404).send({ error: 'Not Found', message: 'expected /install/<id>.disk or /install/<id>.disk.zst' });
    if (!tokenMatches(bearer(req.headers.authorization), adminToken)) {
      const wf = authorizeSession(store, workflows, log, req);
      if (wf.imageId !== m[1] || wf.mode !== 'install') {
        log.warn({ mac: wf.machineMac, workflow: wf.id, image: m[1], from: req.ip }, 'bootable disk download refused: not this workflow\'s install disk');
        return reply.code(403).send({ error: 'Forbidden', field: 'image', message: `workflow ${wf.id} (${wf.mode}) does not install image ${m[1]}` });
      }
    }
    const disk = boot.get(m[1]);
    if (!disk) return reply.code(404).send({ error: 'Not Found', message: `no bootable disk of image ${m[1]} (built when an install workflow is created)` });
    if (m === c) return manifest(boot.filePath(m[1], 'zst'), disk.compressedSha256, reply);
    const kind = m[2] ? 'zst' : 'raw';
    const out = sendFile(req, reply, boot.filePath(m[1], kind), {
      cacheControl: 'private, max-age=3600',
      etag: kind === 'zst' ? disk.compressedSha256 : disk.rawSha256,
      contentType: kind === 'zst' ? 'application/zstd' : 'application/octet-stream',
    });
    if (req.method === 'GET' && (reply.statusCode === 200 || reply.statusCode === 206)) {
      bytesSent.inc({ kind: `disk-${kind}` }, Number(reply.getHeader('content-length') ?? 0));
    }
    return out;
  });
};

export default imageFilesRoutes;
