/**
 * Composition root of `ironboot serve`: config → store → services. Nothing else starts things.
 */
import { readFileSync } from 'node:fs';
import { ensurePrivateDataDir, weakTokenReason } from './data-dir.ts';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ServeConfig } from './config.ts';
import { Store } from './store/index.ts';
import { WorkflowService } from './workflows/service.ts';
import { loadAdminToken } from './http/auth.ts';
import { buildApp, type AppDeps } from './http/app.ts';
import { createMetricsRegistry } from './metrics.ts';
import { httpExtras, startNetworkServices, prepareArtifacts } from './services.ts';

export const ROOT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const VERSION: string = JSON.parse(readFileSync(join(ROOT_DIR, 'package.json'), 'utf8')).version;

export interface Daemon {
  config: ServeConfig;
  store: Store;
  app: FastifyInstance;
  workflows: WorkflowService;
  adminToken: string;
  /** Where HTTP actually listens (port resolved when 0 was asked). */
  httpAddress: { host: string; port: number };
  /** The background build of missing boot artifacts, if one was started. */
  artifacts: Promise<void> | null;
  close(): Promise<void>;
}

export async function startDaemon(config: ServeConfig, log: Logger): Promise<Daemon> {
  const dirWarning = ensurePrivateDataDir(config.dataDir);
  if (dirWarning) log.warn({ dataDir: config.dataDir }, dirWarning);
  const store = Store.open(config.dataDir);
  const closers: (() => Promise<void> | void)[] = [() => store.close()];
  const close = async () => {
    for (const c of closers.reverse()) {
      try { await c(); } catch (err) { log.warn({ err }, 'error during shutdown'); }
    }
  };
  try {
    const token = loadAdminToken(config.dataDir);
    if (token.generated) {
      // printed once, on the console, not in the JSON log stream's fields
      process.stderr.write(`\nironboot: generated the admin API token (saved in ${token.source}, mode 0600):\n\n    ${token.token}\n\n`);
    } else {
      log.info({ source: token.source }, 'admin token loaded');
      const weak = weakTokenReason(token.token);
      if (weak) log.warn({ source: token.source }, `the admin token is weak: ${weak}; anyone on the network who guesses it controls every machine. Use e.g. \`openssl rand -base64 32\``);
    }
    const registry = createMetricsRegistry();
    const workflows = new WorkflowService(store, log.child({ svc: 'workflows' }));
    const expiry = setInterval(() => workflows.expire(), 10_000);
    expiry.unref();
    closers.push(() => clearInterval(expiry));

    const artifactsDir = config.artifactsDir ?? join(config.dataDir, 'artifacts');
    const deps: AppDeps = {
      store, workflows, log, registry, adminToken: token.token, artifactsDir, ipxeDir: config.ipxeDir, version: VERSION,
      agentEventLimits: { maxEvents: config.agentMaxEvents, maxBytes: config.agentMaxEventBytes }, sseMaxClients: config.sseMaxClients,
    };
    const extras = httpExtras({ store, log, registry, config });
    deps.plugins = extras.plugins;
    deps.images = extras.images;
    const app = await buildApp(deps);
    closers.push(() => app.close());
    await app.listen({ host: config.httpListen.host, port: config.httpListen.port });
    const addr = app.server.address();
    const httpAddress = typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : config.httpListen;
    log.info({ http: `${httpAddress.host}:${httpAddress.port}`, dataDir: config.dataDir, version: VERSION }, 'ironboot serving HTTP');

    const net = await startNetworkServices({ store, log, registry, config, httpPort: httpAddress.port, artifactsDir, templates: extras.templates });
    closers.push(() => net.close());
    const artifacts = prepareArtifacts(config, artifactsDir, log);

    return { config, store, app, workflows, adminToken: token.token, httpAddress, artifacts, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Runs the daemon until SIGINT/SIGTERM, then shuts down gracefully. */
export async function serveUntilSignalled(config: ServeConfig, log: Logger): Promise<void> {
  const daemon = await startDaemon(config, log);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) { log.warn('second signal: exiting now'); process.exit(130); }
      stopping = true;
      log.info({ signal: sig }, 'shutting down');
      daemon.close().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  log.info('stopped');
}

