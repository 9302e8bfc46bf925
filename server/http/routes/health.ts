import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { metricsText } from '../../metrics.ts';

/** /healthz (liveness + database) and /metrics (Prometheus). Unauthenticated. */
const healthRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, registry, version }) => {
  app.get('/healthz', { schema: { tags: ['health'], response: { 200: Type.Object({ status: Type.String(), version: Type.String(), schema: Type.Integer() }) } } },
    async () => {
      const row = store.db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number };
      return { status: 'ok', version, schema: row.v };
    });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.header('Content-Type', registry.contentType);
    return metricsText(registry);
  });
};

export default healthRoutes;
