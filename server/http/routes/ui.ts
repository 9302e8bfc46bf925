import type { FastifyPluginAsync } from 'fastify';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const PAGE = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'ui', 'index.html'));

/** GET / — the operators' web page (machines, container disks, workflows, live events); it calls the REST API. */
const uiRoutes: FastifyPluginAsync = async (app) => {
  app.get('/', { schema: { hide: true } }, async (_req, reply) =>
    reply.type('text/html; charset=utf-8').header('Content-Security-Policy', "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'").send(PAGE));
};

export default uiRoutes;
