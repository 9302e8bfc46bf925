/**
 * Composition root of `ironboot serve`: config → store → services. Nothing else starts things.
 */
import { readFileSync, mkdirSync } from 'node:fs';
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
import { listenAlsoOn, provisioningAddresses, resolveListen } from './listen.ts';

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
  mkdirSync(config.dataDir, { recursive: true });
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
    }
    const registry = createMetricsRegistry();
    const workflows = new WorkflowService(store, log.child({ svc: 'workflows' }));
    const expiry = setInterval(() => workflows.expire(), 10_000);
    expiry.unref();
    closers.push(() => clearInterval(expiry));

    const artifactsDir = config.artifactsDir ?? join(config.dataDir, 'artifacts');
    const deps: AppDeps = {
      store, workflows, log, registry, adminToken: token.token, artifactsDir, ipxeDir: config.ipxeDir, version: VERSION,
    };
    const extras = httpExtras({ store, log, registry, config });
    deps.plugins = extras.plugins;
    deps.images = extras.images;
    const app = await buildApp(deps);
    closers.push(() => app.close());
    // by default on the provisioning interfaces' addresses and loopback only (server/listen.ts)
    const provisioning = provisioningAddresses(config.dhcpInterfaces);
    const httpHosts = resolveListen('HTTP', 'http-listen', config.httpListen, provisioning, log);
    await app.listen({ host: httpHosts[0], port: config.httpListen.port });
    const addr = app.server.address();
    const httpAddress = typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : { host: httpHosts[0], port: config.httpListen.port };
    closers.push(await listenAlsoOn(app.server, httpHosts.slice(1), httpAddress.port));
    const shown = httpHosts.map((h) => `${h.includes(':') ? `[${h}]` : h}:${httpAddress.port}`);
    log.info({ http: shown[0], httpAlso: shown.slice(1), dataDir: config.dataDir, version: VERSION }, 'ironboot serving HTTP');

    const net = await startNetworkServices({
      store, log, registry, config, httpPort: httpAddress.port, artifactsDir, templates: extras.templates, provisioning,
    });
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

