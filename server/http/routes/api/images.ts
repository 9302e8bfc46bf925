import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { notFound, conflict } from '../../errors.ts';
import { Image, IdParams, ErrorReply } from '../../schemas.ts';
import type { AppDeps } from '../../app.ts';

/** /api/v1/images: container disks (list, get, delete). Building one: see server/images/. */
const imagesRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, log, images }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply };

  app.get('/images', { schema: { tags: ['images'], summary: 'List container disks', response: { 200: Type.Array(Image), ...errors } } },
    async () => store.images.list());

  app.get('/images/:id', { schema: { tags: ['images'], summary: 'Get a container disk by id or name', params: IdParams, response: { 200: Image, ...errors } } },
    async (req) => {
      const img = store.images.find(req.params.id);
      if (!img) throw notFound('id', `no image with id or name "${req.params.id}"`);
      return img;
    });

  app.delete('/images/:id', { schema: { tags: ['images'], summary: 'Delete a container disk (refused while an active workflow uses it)', params: IdParams, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      const img = store.tx(() => {
        const found = store.images.find(req.params.id);
        if (!found) throw notFound('id', `no image with id or name "${req.params.id}"`);
        const users = store.images.activeUsers(found.id);
        if (users > 0) throw conflict('id', `image ${found.name} is used by ${users} active workflow(s); cancel them first`);
        const n = (store.db.prepare('SELECT COUNT(*) AS n FROM workflows WHERE image_id = ?').get(found.id) as { n: number }).n;
        if (n > 0) throw conflict('id', `image ${found.name} is referenced by ${n} finished workflow(s); delete those machines' history first`);
        store.images.delete(found.id);
        return found;
      });
      await images?.removeFiles(img.id);
      log.info({ image: img.id, name: img.name }, 'image deleted');
      return reply.code(204).send(null);
    });
};

export default imagesRoutes;
