/**
 * The HTTP side: one fastify instance, a plugin per surface.
 *   /api/v1/*      REST API for operators (Bearer admin token)   routes/api/*.ts
 *   /api/docs      OpenAPI document and browsable page
 *   /agent/v1/*    the init agent (Bearer workflow token)        routes/agent.ts
 *   /boot/*        iPXE scripts for machines                     routes/boot.ts
 *   /artifacts/*   kernel + initramfs                            routes/artifacts.ts
 *   /images/*      container disks                               routes/image-files.ts
 *   /healthz, /metrics, / (web page)
 */
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Store } from '../store/index.ts';
import { registerGroupCommitMetrics, type WorkflowService } from '../workflows/service.ts';
import type { AgentEventLimits } from '../workflows/agent-events.ts';
import type { P2pService } from '../p2p/service.ts';
import { errorHandler, ApiError } from './errors.ts';
import { bearer, tokenMatches } from './auth.ts';
import { ErrorReply } from './schemas.ts';
import { redactedRequest } from './redact.ts';
import { StreamTickets } from './stream-tickets.ts';
import healthRoutes from './routes/health.ts';
import machinesRoutes from './routes/api/machines.ts';
import imagesRoutes from './routes/api/images.ts';
import workflowsRoutes from './routes/api/workflows.ts';
import eventsRoutes from './routes/api/events.ts';
import agentRoutes from './routes/agent.ts';
import agentBootRoutes from './routes/agent-boot.ts';
import artifactsRoutes from './routes/artifacts.ts';
import uiRoutes from './routes/ui.ts';

/** What the container-disk side offers the HTTP app (server/images/). */
export interface ImageFiles {
  /** May finish later (an S3 artifact store deletes its objects): the API answers once it has. */
  removeFiles(id: string): void | Promise<void>;
}

export interface AppDeps {
  store: Store;
  workflows: WorkflowService;
  log: Logger;
  registry: Registry;
  adminToken: string;
  artifactsDir: string;
  /** iPXE binaries (served under /ipxe/ for UEFI HTTP boot). */
  ipxeDir?: string;
  version: string;
  images?: ImageFiles;
  /** Caps on what one workflow's agent may store (server/workflows/agent-events.ts); defaults apply when unset. */
  agentEventLimits?: AgentEventLimits;
  /** Most concurrent /api/v1/events/stream clients (default 64). */
  sseMaxClients?: number;
  /** Tickets for the live event stream (created by buildApp when unset). */
  streamTickets?: StreamTickets;
  /** Extra plugins (boot scripts, image files, image builds) registered by the composition root. */
  plugins?: AppPlugin[];
  /** Peer-to-peer disk fetching (server/p2p); null or absent: agents fetch the whole file from the server. */
  p2p?: P2pService | null;
  /** PEM certificate and key: the app serves HTTPS (iPXE's plain-HTTP paths go through plainHttpHandler). */
  https?: { cert: Buffer; key: Buffer };
}

/**
 * What stays reachable over plain HTTP when the app serves HTTPS: what iPXE fetches (Debian's iPXE has no TLS:
 * the boot scripts, kernel, initramfs and iPXE binaries), and health. Everything that carries a token (the agent,
 * the API, the images) is refused there with a pointer to the HTTPS side.
 */
export const PLAIN_HTTP_PATHS = /^\/(boot|artifacts|ipxe|2009-04-04|latest)\/|^\/healthz(\?|$)/;

/**
 * Plain HTTP when the served iPXE fetches over HTTPS and trusts the daemon's CA (ironboot artifacts ipxe): only the
 * iPXE binaries (UEFI HTTP boot loads them before any TLS) and health; boot scripts, kernel and initramfs go over HTTPS.
 */
export const IPXE_HTTPS_PLAIN_PATHS = /^\/ipxe\/|^\/healthz(\?|$)/;

export function plainHttpHandler(app: FastifyInstance, httpsUrl: (req: import('node:http').IncomingMessage) => string, paths: RegExp = PLAIN_HTTP_PATHS) {
  return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void => {
    if (paths.test(req.url ?? '/')) { app.routing(req, res); return; }
    const body = JSON.stringify({ error: 'Forbidden', field: 'url', message: `this daemon serves ${(req.url ?? '/').split('?')[0]} over HTTPS only: ${httpsUrl(req)}` });
    res.writeHead(403, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
  };
}

/** A plugin the composition root adds; `api: true` puts it under /api/v1, behind the admin token. */
export interface AppPlugin {
  plugin: FastifyPluginAsync<AppDeps>;
  api?: boolean;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const streamTickets = deps.streamTickets ?? new StreamTickets();
  const app = (Fastify as unknown as (o: object) => FastifyInstance)({
    // request URLs are logged with credential-like query values redacted (?token=, ?ticket=)
    loggerInstance: deps.log.child({ svc: 'http' }, { serializers: { req: redactedRequest } }) as never,
    trustProxy: false,
    bodyLimit: 1 << 20,
    ...(deps.https ? { https: deps.https } : {}),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  registerGroupCommitMetrics(deps.registry, deps.workflows);
  app.setErrorHandler(errorHandler as never);
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'Not Found', message: `no route ${req.method} ${req.url.split('?')[0]}` }));
  app.addSchema(ErrorReply);

  await app.register(swagger, {
    openapi: {
      info: { title: 'ironboot API', version: deps.version, description: 'Bare-metal provisioning: machines, container disks, workflows.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/api/docs' });

  await app.register(healthRoutes, deps);
  await app.register(async (api) => {
    api.addHook('onRequest', async (req) => {
      const stream = req.url.startsWith('/api/v1/events/stream');
      // EventSource cannot send headers: the stream also takes a short-lived ?ticket= (or, still, ?token=)
      if (stream && streamTickets.valid((req.query as { ticket?: string }).ticket)) return;
      const presented = bearer(req.headers.authorization) ?? (stream ? (req.query as { token?: string }).token : undefined);
      if (!tokenMatches(presented, deps.adminToken)) throw new ApiError(401, 'authorization', 'missing or wrong bearer token (Authorization: Bearer <admin token>)');
    });
    await api.register(machinesRoutes, deps);
    await api.register(imagesRoutes, deps);
    await api.register(workflowsRoutes, deps);
    await api.register(eventsRoutes, { ...deps, streamTickets });
    for (const p of deps.plugins ?? []) if (p.api) await api.register(p.plugin, deps);
  }, { prefix: '/api/v1' });
  await app.register(agentRoutes, { ...deps, prefix: '/agent/v1' });
  await app.register(agentBootRoutes, { ...deps, prefix: '/agent/v1' });
  await app.register(artifactsRoutes, deps);
  await app.register(uiRoutes);
  for (const p of deps.plugins ?? []) if (!p.api) await app.register(p.plugin, deps);
  return app as unknown as FastifyInstance;
}
