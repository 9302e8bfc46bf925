/**
 * Composition root of `ironboot serve`: config → store → services. Nothing else starts things.
 */
import { readFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import { ensurePrivateDataDir, weakTokenReason } from './data-dir.ts';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ServeConfig } from './config.ts';
import { Checkpointer } from './store/checkpointer.ts';
import { Store } from './store/index.ts';
import { WorkflowService } from './workflows/service.ts';
import { FleetEvents } from './workflows/fleet-events.ts';
import { loadAdminToken } from './http/auth.ts';
import { buildApp, plainHttpHandler, PLAIN_HTTP_PATHS, IPXE_HTTPS_PLAIN_PATHS, type AppDeps } from './http/app.ts';
import { createMetricsRegistry, watchEventLoopDelay } from './metrics.ts';
import { httpExtras, startNetworkServices, prepareArtifacts, agentUrlFor, selectIpxe } from './services.ts';
import { ConfigError } from './config.ts';
import type { ArtifactStore, ArtifactStoreError } from './images/artifact-store.ts';
import { PowerService } from './power/service.ts';
import { powerRoutes } from './http/routes/api/power.ts';
import { listenAlsoOn, provisioningAddresses, resolveListen } from './listen.ts';
import { P2pService } from './p2p/service.ts';

export const ROOT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const VERSION: string = JSON.parse(readFileSync(join(ROOT_DIR, 'package.json'), 'utf8')).version;

export interface Daemon {
  config: ServeConfig;
  store: Store;
  app: FastifyInstance;
  workflows: WorkflowService;
  power: PowerService;
  adminToken: string;
  /** Where HTTP actually listens (port resolved when 0 was asked). */
  httpAddress: { host: string; port: number };
  /** Where HTTPS listens, with --tls-cert/--tls-key; else null. */
  httpsAddress: { host: string; port: number } | null;
  /** The background build of missing boot artifacts, if one was started. */
  artifacts: Promise<void> | null;
  close(): Promise<void>;
}

export async function startDaemon(givenConfig: ServeConfig, log: Logger): Promise<Daemon> {
  let config = givenConfig;
  const dirWarning = ensurePrivateDataDir(config.dataDir);
  if (dirWarning) log.warn({ dataDir: config.dataDir }, dirWarning);
  const store = Store.open(config.dataDir, { url: config.store });
  if (config.store) log.info({ store: store.db.name }, 'store: PostgreSQL');
  // SQLite: WAL checkpoints (and their fsyncs) on a thread of their own, never inside a commit on this one
  const checkpointer = store.sqlite ? new Checkpointer(store.sqlite, { log: log.child({ component: 'store' }) }) : null;
  const closers: (() => Promise<void> | void)[] = [() => store.close(), () => checkpointer?.stop()];
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
    closers.push(watchEventLoopDelay(registry));
    const workflows = new WorkflowService(store, log.child({ svc: 'workflows' }));
    if (store.dialect === 'postgres' && config.store) {
      // several daemons on one PostgreSQL: the live stream shows every daemon's events (README "Several daemons")
      const fleet = new FleetEvents({ url: config.store, store, workflows, log: log.child({ svc: 'fleet-events' }) });
      await fleet.start();
      workflows.announcer = fleet;
      closers.push(() => fleet.stop());
    }
    const expiry = setInterval(() => workflows.expire(), 10_000);
    expiry.unref();
    closers.push(() => clearInterval(expiry));

    const power = new PowerService(store, workflows, log.child({ svc: 'power' }), { pollSeconds: config.powerPollSeconds ?? 60 });
    power.start();
    closers.push(() => power.stop());

    const artifactsDir = config.artifactsDir ?? join(config.dataDir, 'artifacts');
    const ipxe = selectIpxe(config, artifactsDir, log);
    config = { ...config, ipxeDir: ipxe.dir };
    const deps: AppDeps = {
      store, workflows, log, registry, adminToken: token.token, artifactsDir, ipxeDir: ipxe.dir, version: VERSION,
      agentEventLimits: { maxEvents: config.agentMaxEvents, maxBytes: config.agentMaxEventBytes }, sseMaxClients: config.sseMaxClients,
    };
    let httpsPort = config.httpsListen.port;
    const agentUrl = agentUrlFor(config, () => httpsPort);
    const imageStore = await openArtifactStore(config, log);
    const extras = httpExtras({ store, log, registry, config, agentUrl, artifacts: imageStore });
    deps.plugins = [...extras.plugins, { plugin: powerRoutes(power) as never, api: true }];
    deps.images = extras.images;
    if (config.p2p) {
      const p2p = new P2pService(log.child({ svc: 'p2p' }), registry, { chunkSize: config.p2pChunkSize, port: config.p2pPort });
      // a holder serves peers only while its workflow runs
      closers.push(p2p.follow(workflows.events));
      if (config.tls) log.warn('peer-to-peer disk fetching is on with HTTPS: chunks travel between machines over plain HTTP (each verified by its sha256, not encrypted); --no-p2p keeps every disk byte on HTTPS');
      deps.p2p = p2p;
    }
    workflows.bootDisks = extras.bootDisks;
    if (config.tls) {
      const read = (key: string, path: string) => {
        try { return readFileSync(path); } catch (err) { throw new ConfigError(key, `cannot read ${path}: ${(err as Error).message}`); }
      };
      deps.https = { cert: read('tls-cert', config.tls.cert), key: read('tls-key', config.tls.key) };
    }
    const app = await buildApp(deps);
    closers.push(() => app.close());
    const bound = (s: { address(): unknown }, fallback: { host: string; port: number }) => {
      const a = s.address() as { address: string; port: number } | null;
      return a && typeof a === 'object' ? { host: a.address, port: a.port } : fallback;
    };
    // by default on the provisioning interfaces' addresses and loopback only (server/listen.ts)
    const provisioning = provisioningAddresses(config.dhcpInterfaces);
    const httpHosts = resolveListen('HTTP', 'http-listen', config.httpListen, provisioning, log);
    let httpAddress: { host: string; port: number };
    let httpsAddress: { host: string; port: number } | null = null;
    let httpsHosts: string[] = [];
    if (config.tls) {
      // HTTPS: the agent, the API, the images; plain HTTP keeps only what iPXE fetches (see PLAIN_HTTP_PATHS)
      httpsHosts = resolveListen('HTTPS', 'https-listen', config.httpsListen, provisioning, log);
      await app.listen({ host: httpsHosts[0], port: config.httpsListen.port });
      httpsAddress = bound(app.server, { host: httpsHosts[0], port: config.httpsListen.port });
      httpsPort = httpsAddress.port;
      closers.push(await listenAlsoOn(app.server, httpsHosts.slice(1), httpsAddress.port));
      // with the verifying iPXE, boot scripts, kernel and initramfs go over HTTPS only; plain HTTP keeps the iPXE binaries
      const plain = http.createServer(plainHttpHandler(app, (req) => agentUrl!(`http://${req.headers.host ?? httpHosts[0]}`), ipxe.https ? IPXE_HTTPS_PLAIN_PATHS : PLAIN_HTTP_PATHS));
      await new Promise<void>((resolve, reject) => {
        plain.once('error', reject);
        plain.listen(config.httpListen.port, httpHosts[0], () => { plain.off('error', reject); resolve(); });
      });
      closers.push(() => new Promise<void>((resolve) => { plain.closeAllConnections(); plain.close(() => resolve()); }));
      httpAddress = bound(plain, { host: httpHosts[0], port: config.httpListen.port });
      closers.push(await listenAlsoOn(plain, httpHosts.slice(1), httpAddress.port));
    } else {
      await app.listen({ host: httpHosts[0], port: config.httpListen.port });
      httpAddress = bound(app.server, { host: httpHosts[0], port: config.httpListen.port });
      closers.push(await listenAlsoOn(app.server, httpHosts.slice(1), httpAddress.port));
    }
    const shown = (hosts: string[], port: number) => hosts.map((h) => `${h.includes(':') ? `[${h}]` : h}:${port}`);
    const httpShown = shown(httpHosts, httpAddress.port);
    log.info({
      http: httpShown[0], httpAlso: httpShown.slice(1),
      ...(httpsAddress ? { https: shown(httpsHosts, httpsAddress.port)[0], httpsAlso: shown(httpsHosts, httpsAddress.port).slice(1), tlsCa: config.tls!.ca } : {}),
      dataDir: config.dataDir, version: VERSION, bootScriptAuth: config.bootScriptAuth,
    }, httpsAddress ? (ipxe.https ? 'ironboot serving HTTP (iPXE binaries) and HTTPS (iPXE: boot scripts, kernel, initramfs; agent, API, images)'
      : 'ironboot serving HTTP (iPXE: boot scripts, kernel, initramfs) and HTTPS (agent, API, images)') : 'ironboot serving HTTP');
    // iPXE's boot script base on the HTTPS side: --public-https-url, else the public URL's (or the interface's) host on the HTTPS port

    const net = await startNetworkServices({
      store, log, registry, config, httpPort: httpAddress.port, artifactsDir, templates: extras.templates, workflows, agentUrl, provisioning, ipxeHttpsPort: ipxe.https ? httpsPort : null,
    });
    closers.push(() => net.close());
    const artifacts = prepareArtifacts(config, artifactsDir, log);

    return { config, store, app, workflows, power, adminToken: token.token, httpAddress, httpsAddress, artifacts, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * The --images store: undefined for the local directory (the image service's default); an S3 bucket is checked
 * now (HeadBucket), so a wrong bucket, endpoint or credentials stop the start with the setting to fix.
 */
async function openArtifactStore(config: ServeConfig, log: Logger): Promise<ArtifactStore | undefined> {
  const cfg = config.imageStore;
  if (cfg.kind !== 's3') return undefined;
  // The SDK warns on every start that its releases after January 2027 need Node 22. ironboot runs on Node 20 with
  // the SDK versions its package-lock pins (tested there); the warning is said once, in the log, as one line.
  if (process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED === undefined && Number(process.versions.node.split('.')[0]) < 22) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
    log.info({ node: process.versions.node }, 'images: the AWS SDK versions in package-lock run on this Node; SDK releases after January 2027 need Node 22');
  }
  const { s3ArtifactStore } = await import('./images/s3-store.ts'); // the AWS SDK only for daemons that use it
  const store = s3ArtifactStore(cfg);
  try {
    await store.check();
  } catch (err) {
    const e = err as ArtifactStoreError;
    throw new ConfigError(e.setting ? `--${e.setting}` : '--images', e.message);
  }
  log.info({ images: store.location, endpoint: cfg.endpoint ?? 'AWS', region: cfg.region, pathStyle: cfg.pathStyle, redirect: cfg.redirect }, 'images: S3 artifact store (DATA_DIR/images is its cache)');
  return store;
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

