/**
 * GET/HEAD /images/<id>.ext4.zst and /images/<id>.ext4: container disks for machines (Range for resume,
 * ETag = the file's sha256, Content-Length), via send-file.ts (sendfile(2) for big bodies).
 *
 * Each request presents a bearer token: the session token of a workflow that uses this image (from the address
 * its hello came from, while the workflow is not finished), or the admin token. 401 without or with a wrong
 * token, 403 for a workflow of another image or from another address, 409 once the workflow is final.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { AppDeps } from '../app.ts';
import type { ImageService } from '../../images/index.ts';
import { sendFile } from '../send-file.ts';
import { bearer, tokenMatches } from '../auth.ts';
import { authorizeSession } from './agent.ts';
import type { BootDiskService } from '../../images/bootable.ts';

export type ImageFilesOptions = AppDeps & { imageService?: ImageService; bootDisks?: BootDiskService | null };

/** Body bytes of container disks answered 200/206 to GET (a resumed download counts its remaining range only). */
function imageBytesCounter(registry: Registry): Counter<'kind'> {
  const name = 'ironboot_image_bytes_sent_total';
  return (registry.getSingleMetric(name) as Counter<'kind'> | undefined) ?? new Counter({
    name, help: 'Container disk body bytes sent to machines (GET answered 200/206), by file kind (zst, raw)', labelNames: ['kind'], registers: [registry],
  });
}

const FILE = /^([a-z0-9]{1,64})\.ext4(\.zst)?$/;
const CHUNKS = /^([a-z0-9]{1,64})\.(ext4|disk)\.zst\.chunks$/;
const INSTALL_FILE = /^([a-z0-9]{1,64})\.disk(\.zst)?$/;

const imageFilesRoutes: FastifyPluginAsync<ImageFilesOptions> = async (app, opts) => {
  const svc = opts.imageService ?? (opts.images as ImageService | undefined);
  if (!svc || typeof svc.filePath !== 'function') throw new Error('image-files: no imageService given');
  const { store, workflows, log, adminToken } = opts;
  const bytesSent = imageBytesCounter(opts.registry);
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
      return manifest(svc.filePath(img.id, 'zst'), img.compressedSha256 ?? null, reply);
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
    const out = sendFile(req, reply, svc.filePath(img.id, kind), {
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
