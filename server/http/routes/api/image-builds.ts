/**
 * POST /api/v1/images: build a container disk from a source in the background. The source is resolved first
 * (so a bad reference or unknown tag is a 400 at once), then the answer is 202 with the image row in state
 * "building"; progress goes to the row's `progress` and to the log. 200 with the ready row when the same
 * content was built before.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ApiError, badRequest } from '../../errors.ts';
import { Image, ErrorReply } from '../../schemas.ts';
import type { AppDeps } from '../../app.ts';
import { ImageError, type ImageService } from '../../../images/index.ts';

export const ImageBuildRequest = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[\\w][\\w.:@/+-]*$' })),
  source: Type.Object({
    type: Type.Union([Type.Literal('registry'), Type.Literal('oci-layout'), Type.Literal('docker-archive')]),
    ref: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'registry: image reference; oci-layout/docker-archive: tag inside' })),
    path: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'oci-layout/docker-archive: directory or tar on the server' })),
    platform: Type.Optional(Type.String({ description: 'OS/ARCH[/VARIANT], default linux/amd64' })),
    insecure: Type.Optional(Type.Boolean({ description: 'plain-HTTP registry' })),
  }, { additionalProperties: false }),
  size: Type.Optional(Type.Union([Type.Integer({ minimum: 4194304 }), Type.String({ pattern: '^\\d+(\\.\\d+)?\\s*[kKmMgGtT]?(i?[bB])?$' })], { description: 'force the disk size (bytes or 512M, 2G)' })),
  headroom: Type.Optional(Type.Number({ minimum: 0, maximum: 10, description: 'free space as a fraction of the content (default 0.25)' })),
}, { additionalProperties: false });

export type ImageBuildsOptions = AppDeps & { imageService?: ImageService };

const imageBuildsRoutes: FastifyPluginAsyncTypebox<ImageBuildsOptions> = async (app, opts) => {
  const svc = opts.imageService ?? (opts.images as ImageService | undefined);
  if (!svc || typeof svc.start !== 'function') throw new Error('image-builds: no imageService given');
  const log = opts.log.child({ svc: 'images' });
  const errors = { 400: ErrorReply, 401: ErrorReply, 409: ErrorReply };

  app.post('/images', {
    schema: { tags: ['images'], summary: 'Build a container disk from a registry image, an OCI layout or a docker save archive',
      body: ImageBuildRequest, response: { 200: Image, 202: Image, ...errors } },
  }, async (req, reply) => {
    const b = req.body;
    if (b.source.type === 'registry' && !b.source.ref) throw badRequest('source.ref', 'a registry source needs ref (e.g. docker.io/library/busybox:1.36)');
    if (b.source.type !== 'registry' && !b.source.path) throw badRequest('source.path', `a ${b.source.type} source needs path`);
    let started;
    try {
      let lastLog = 0;
      started = await svc.start(b.source, { name: b.name, size: b.size, headroom: b.headroom }, (p) => {
        const now = Date.now();
        if (now - lastLog < 2000 && p.stage !== 'done') return;
        lastLog = now;
        log.info({ stage: p.stage, layers: `${p.layersDone}/${p.layersTotal}`, pulled: p.bytesPulled, flattened: p.bytesFlattened }, 'image build progress');
      });
    } catch (err) {
      if (err instanceof ImageError) {
        throw err.field === 'name' && /is used by/.test(err.message) ? new ApiError(409, 'name', err.message) : badRequest(err.field ?? 'source', err.message);
      }
      throw err;
    }
    started.done.catch(() => { /* recorded in the row and logged by the service */ });
    if (started.reused && started.image.state === 'ready') return reply.code(200).send(started.image);
    return reply.code(202).send(started.image);
  });
};

export default imageBuildsRoutes;
