/**
 * The services `ironboot serve` runs beside its HTTP API: DHCP, TFTP, container-disk files and builds, boot
 * scripts, and the boot artifacts. Each is started from here so main.ts stays a plain list.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ServeConfig } from './config.ts';
import type { Store } from './store/index.ts';
import type { AppDeps, AppPlugin, ImageFiles } from './http/app.ts';
import { startDhcpService } from './dhcp/index.ts';
import { startDhcpThread } from './dhcp/thread.ts';
import { agentUrlFor, httpUrlFor, ipxeHttpsUrlFor } from './public-urls.ts';

export { agentUrlFor, httpUrlFor, ipxeHttpsUrlFor };
import { startTftpService, type TftpVirtualFiles } from './tftp/index.ts';
import { createImageService, type ImageService } from './images/index.ts';
import type { ArtifactStore } from './images/artifact-store.ts';
import { createBootDiskService, type BootDiskService } from './images/bootable.ts';
import { loadBootTemplates, type BootTemplates } from './boot/ipxe.ts';
import { createBootScriptServer, type BootScriptPolicy, type BootScriptServer } from './boot/serve.ts';
import type { WorkflowService } from './workflows/service.ts';
import { bootPlugin } from './http/routes/boot.ts';
import { ARTIFACT_FILES } from './http/routes/artifacts.ts';
import imageFilesRoutes from './http/routes/image-files.ts';
import imageBuildsRoutes from './http/routes/api/image-builds.ts';
import metadataRoutes from './http/routes/metadata.ts';
import { buildArtifacts, formatReport, CA_STAMP } from '../init/build/index.ts';
import { createHash } from 'node:crypto';
import { resolveListen } from './listen.ts';
import { chooseIpxeDir, readIpxeManifest, ipxeTlsProblems, DEBIAN_IPXE_DIR, type IpxeManifest } from './boot/ipxe-dir.ts';

export interface HttpExtras {
  plugins: AppPlugin[];
  images: ImageFiles;
  imageService: ImageService;
  bootDisks: BootDiskService;
  templates: BootTemplates;
}

/** The boot scripts (templates checked now, not when a machine boots), container-disk files and builds. */
/** Who may receive a provisioning script: ironboot's own leases when its DHCP hands out addresses, else --boot-script-auth. */
export function bootScriptPolicy(config: ServeConfig): BootScriptPolicy {
  return { mode: config.bootScriptAuth, dhcpLeases: config.dhcp && config.dhcpInterfaces.length > 0 && config.dhcpMode !== 'proxy' };
}

export function httpExtras(deps: { store: Store; log: Logger; registry: Registry; config: ServeConfig; agentUrl?: ((scriptBase: string) => string) | null; artifacts?: ArtifactStore }): HttpExtras {
  const templates = loadBootTemplates(deps.config.templatesDir ?? undefined);
  const imageService = createImageService({ store: deps.store, log: deps.log, registry: deps.registry, dataDir: deps.config.dataDir, artifacts: deps.artifacts });
  imageService.recover(); // builds a previous daemon left half-way: temp files removed, rows marked failed
  const bootDisks = createBootDiskService({
    imagesDir: imageService.imagesDir, ext4Path: (id) => imageService.filePath(id, 'raw'), ensureExt4: (img) => imageService.localFile(img, 'raw'), log: deps.log,
  });
  // deleting an image removes its bootable disk too
  const images: ImageFiles = { removeFiles: async (id) => { bootDisks.removeFiles(id); await imageService.removeFiles(id); } };
  const store = deps.config.imageStore;
  const redirect = store.kind === 's3' && store.redirect ? { seconds: store.redirectSeconds } : null;
  const plugins: AppPlugin[] = [
    { plugin: bootPlugin(templates, deps.config.publicUrl, undefined, { policy: bootScriptPolicy(deps.config), agentUrl: deps.agentUrl ?? null }) },
    { plugin: async (app, d: AppDeps) => imageFilesRoutes(app, { ...d, imageService, bootDisks, redirect }) },
    { plugin: async (app, d: AppDeps) => metadataRoutes(app, d) },
    { plugin: async (app, d: AppDeps) => imageBuildsRoutes(app, { ...d, imageService }), api: true },
  ];
  return { plugins, images, imageService, bootDisks, templates };
}

/**
 * Virtual TFTP files: `boot.ipxe` (or `<mac>/boot.ipxe`) is the requesting machine's iPXE script, served by the
 * same rule as /boot/<mac>.ipxe (server/boot/serve.ts: a provisioning script only to that machine's address),
 * for firmware set up to chain a script over TFTP. Without --public-url its URLs name the address the TFTP request
 * came in on (the machine reached this server there).
 */
export function tftpBootScripts(serveBootScript: BootScriptServer, publicUrlFor: (localAddress: string) => string, agentUrl?: ((scriptBase: string) => string) | null): TftpVirtualFiles {
  return {
    lookup({ name, mac, client, local }) {
      if (name !== 'boot.ipxe' || !mac) return null;
      const publicUrl = publicUrlFor(local);
      const out = serveBootScript({ mac, sourceIp: client.address, via: 'tftp', urls: { publicUrl, agentUrl: agentUrl?.(publicUrl) } });
      return { data: Buffer.from(out.script) };
    },
  };
}

interface Closable { close(): Promise<void> }

/**
 * The iPXE binaries to serve (server/boot/ipxe-dir.ts) and whether iPXE goes to the HTTPS side: a built iPXE
 * (ironboot-ipxe.json says HTTPS) and --tls-cert. Problems iPXE would have with the certificate are logged as errors
 * at start; iPXE is not silently sent back to plain HTTP (the operator asked for a verified boot).
 */
export function selectIpxe(config: ServeConfig, artifactsDir: string, log: Logger): { dir: string; https: boolean; manifest: IpxeManifest | null } {
  let chosen = chooseIpxeDir(config.ipxeDir, artifactsDir);
  let read = readIpxeManifest(chosen.dir);
  if (read.problem) {
    log.warn({ ipxeDir: chosen.dir }, `iPXE build unusable: ${read.problem}${config.ipxeDir ? '' : `; serving ${DEBIAN_IPXE_DIR} instead (run ironboot artifacts ipxe --trust CA.pem again)`}`);
    if (!config.ipxeDir) { chosen = { dir: DEBIAN_IPXE_DIR, why: 'the built iPXE is unusable' }; read = readIpxeManifest(chosen.dir); }
  }
  const m = read.manifest;
  const https = !!(m?.https && config.tls);
  if (m?.https && !config.tls) log.warn({ ipxeDir: chosen.dir }, 'the iPXE binaries have HTTPS, but the daemon has no --tls-cert/--tls-key: iPXE fetches over plain HTTP');
  if (https) {
    let pem = '';
    try { pem = readFileSync(config.tls!.cert, 'utf8'); } catch { /* reported when HTTPS starts */ }
    for (const problem of pem ? ipxeTlsProblems(m!, chosen.dir, pem) : []) log.error({ ipxeDir: chosen.dir, tlsCert: config.tls!.cert }, `iPXE will not boot: ${problem}`);
  }
  log.info({ ipxeDir: chosen.dir, why: chosen.why, https, ...(m ? { source: m.source.version, trust: m.trust.map((t) => t.subject) } : {}) },
    https ? 'iPXE: HTTPS with the built-in CA (boot scripts, kernel, initramfs over HTTPS)' : 'iPXE: plain HTTP');
  return { dir: chosen.dir, https, manifest: m };
}

/** http://ADDRESS:PORT for a local address (IPv6 in brackets). */

export async function startNetworkServices(deps: {
  store: Store; log: Logger; registry: Registry; config: ServeConfig; httpPort: number; artifactsDir: string; templates: BootTemplates;
  workflows: WorkflowService; agentUrl?: ((scriptBase: string) => string) | null;
  /** Addresses of the --dhcp-interface interfaces (the default listen addresses, with loopback). */
  provisioning?: string[];
  /** The served iPXE has HTTPS and the CA: the HTTPS base URL for an interface address (selectIpxe). */
  /** The HTTPS port, when ironboot's own iPXE fetches over HTTPS (then DHCP and TFTP hand out https script URLs). */
  ipxeHttpsPort?: number | null;
}): Promise<Closable> {
  const { config, log } = deps;
  const ipxeHttps = deps.ipxeHttpsPort != null ? ipxeHttpsUrlFor(config, deps.httpPort, deps.ipxeHttpsPort) : null;
  const started: Closable[] = [];
  const close = async () => { for (const c of started.reverse()) await c.close(); };
  try {
    if (config.dhcp && config.dhcpInterfaces.length === 0) {
      log.warn('DHCP stays off: no --dhcp-interface given (name the provisioning interface to serve DHCP there)');
    } else if (config.dhcp) {
      // on a thread of its own (IRONBOOT_DHCP_THREAD=0: on the main thread), so nothing else delays a reply
      started.push(process.env.IRONBOOT_DHCP_THREAD === '0'
        ? await startDhcpService({ store: deps.store, log, registry: deps.registry, config, httpPort: deps.httpPort, ipxeHttpsUrlFor: ipxeHttps })
        : await startDhcpThread({ log, registry: deps.registry, config, httpPort: deps.httpPort, ipxeHttpsPort: deps.ipxeHttpsPort ?? null }));
    }
    if (config.tftp) {
      try {
        const hosts = resolveListen('TFTP', 'tftp-listen', config.tftpListen, deps.provisioning ?? [], log);
        const tftp = await startTftpService({
          log, registry: deps.registry, config, artifactsDir: deps.artifactsDir, hosts,
          virtualFiles: tftpBootScripts(createBootScriptServer({
            store: deps.store, workflows: deps.workflows, log: log.child({ svc: 'tftp-boot' }), templates: deps.templates, policy: bootScriptPolicy(config),
          }), (local) => ipxeHttps?.(local) ?? config.publicUrl ?? httpUrlFor(local, deps.httpPort), deps.agentUrl),
        });
        started.push(tftp);
        log.info({ tftp: tftp.addresses().map((a) => `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`) }, 'ironboot serving TFTP');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EACCES' && config.tftpListen.port < 1024 && process.getuid?.() !== 0) {
          log.warn({ listen: config.tftpListen }, 'TFTP stays off: binding a port below 1024 needs root or CAP_NET_BIND_SERVICE (or use --tftp-listen with a high port, or --no-tftp)');
        } else {
          throw err;
        }
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { close };
}

/**
 * Builds the kernel + initramfs in the background when they are missing (and --build-artifacts is on), so a fresh
 * install can boot machines without a separate step. Machines that ask before it is done get 404 and iPXE retries.
 */
export function prepareArtifacts(config: ServeConfig, artifactsDir: string, log: Logger): Promise<void> | null {
  const missing: string[] = ARTIFACT_FILES.filter((n) => !existsSync(join(artifactsDir, n)));
  const caFile = config.tls?.ca ?? null;
  // the initramfs carries the CA the agent verifies HTTPS against: a build with another (or no) CA is stale
  const wantCa = caFile ? createHash('sha256').update(readFileSync(caFile)).digest('hex') : null;
  let builtCa: string | null = null;
  try { builtCa = readFileSync(join(artifactsDir, CA_STAMP), 'utf8').trim(); } catch { /* none built in */ }
  if (!missing.length && wantCa && builtCa !== wantCa) {
    if (!config.buildArtifacts) {
      log.warn({ artifactsDir, tlsCa: caFile }, 'the initramfs does not carry --tls-ca (and --no-build-artifacts): agents will refuse the HTTPS side; run `ironboot artifacts build --tls-ca FILE`');
      return null;
    }
    missing.push('initramfs (built without this --tls-ca)');
  }
  if (!missing.length) {
    log.info({ artifactsDir }, 'boot artifacts present');
    return null;
  }
  if (!config.buildArtifacts) {
    log.warn({ artifactsDir, missing }, 'boot artifacts missing and --no-build-artifacts: run `ironboot artifacts build` before booting machines');
    return null;
  }
  log.info({ artifactsDir, missing }, 'building the boot artifacts (kernel + initramfs) in the background');
  const alog = log.child({ svc: 'artifacts' });
  return buildArtifacts({ outDir: artifactsDir, caFile, log: (msg) => alog.info(msg) }).then(
    (r) => { alog.info({ report: formatReport(r.report) }, 'boot artifacts built'); },
    (err) => { alog.error({ err: (err as Error).message }, 'building the boot artifacts failed: machines cannot boot until `ironboot artifacts build` succeeds'); },
  );
}
