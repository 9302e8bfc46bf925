/**
 * The services `ironboot serve` runs beside its HTTP API: DHCP, TFTP, container-disk files and builds, boot
 * scripts, and the boot artifacts. Each is started from here so main.ts stays a plain list.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ServeConfig } from './config.ts';
import type { Store } from './store/index.ts';
import type { AppDeps, AppPlugin, ImageFiles } from './http/app.ts';
import { startDhcpService } from './dhcp/index.ts';
import { startTftpService, type TftpVirtualFiles } from './tftp/index.ts';
import { createImageService, type ImageService } from './images/index.ts';
import { loadBootTemplates, renderBootScript, bootTargetFor, type BootTemplates } from './boot/ipxe.ts';
import { bootPlugin } from './http/routes/boot.ts';
import { ARTIFACT_FILES } from './http/routes/artifacts.ts';
import imageFilesRoutes from './http/routes/image-files.ts';
import imageBuildsRoutes from './http/routes/api/image-builds.ts';
import { buildArtifacts, formatReport } from '../init/build/index.ts';
import { resolveListen } from './listen.ts';

export interface HttpExtras {
  plugins: AppPlugin[];
  images: ImageFiles;
  imageService: ImageService;
  templates: BootTemplates;
}

/** The boot scripts (templates checked now, not when a machine boots), container-disk files and builds. */
export function httpExtras(deps: { store: Store; log: Logger; registry: Registry; config: ServeConfig }): HttpExtras {
  const templates = loadBootTemplates(deps.config.templatesDir ?? undefined);
  const imageService = createImageService({ store: deps.store, log: deps.log, registry: deps.registry, dataDir: deps.config.dataDir });
  imageService.recover(); // builds a previous daemon left half-way: temp files removed, rows marked failed
  const plugins: AppPlugin[] = [
    { plugin: bootPlugin(templates, deps.config.publicUrl) },
    { plugin: async (app, d: AppDeps) => imageFilesRoutes(app, { ...d, imageService }) },
    { plugin: async (app, d: AppDeps) => imageBuildsRoutes(app, { ...d, imageService }), api: true },
  ];
  return { plugins, images: imageService, imageService, templates };
}

/**
 * Virtual TFTP files: `boot.ipxe` (or `<mac>/boot.ipxe`) is the requesting machine's iPXE script, rendered from
 * the same templates as /boot/<mac>.ipxe, for firmware set up to chain a script over TFTP. Without --public-url
 * its URLs name the address the TFTP request came in on (the machine reached this server there).
 */
export function tftpBootScripts(store: Store, templates: BootTemplates, publicUrlFor: (localAddress: string) => string): TftpVirtualFiles {
  return {
    lookup({ name, mac, local }) {
      if (name !== 'boot.ipxe' || !mac) return null;
      const out = renderBootScript(templates, bootTargetFor(store, mac), { publicUrl: publicUrlFor(local) });
      return { data: Buffer.from(out.script) };
    },
  };
}

interface Closable { close(): Promise<void> }

/** http://ADDRESS:PORT for a local address (IPv6 in brackets). */
export const httpUrlFor = (address: string, port: number): string => `http://${address.includes(':') ? `[${address}]` : address}:${port}`;

export async function startNetworkServices(deps: {
  store: Store; log: Logger; registry: Registry; config: ServeConfig; httpPort: number; artifactsDir: string; templates: BootTemplates;
  /** Addresses of the --dhcp-interface interfaces (the default listen addresses, with loopback). */
  provisioning?: string[];
}): Promise<Closable> {
  const { config, log } = deps;
  const started: Closable[] = [];
  const close = async () => { for (const c of started.reverse()) await c.close(); };
  try {
    if (config.dhcp && config.dhcpInterfaces.length === 0) {
      log.warn('DHCP stays off: no --dhcp-interface given (name the provisioning interface to serve DHCP there)');
    } else if (config.dhcp) {
      started.push(await startDhcpService({ store: deps.store, log, registry: deps.registry, config, httpPort: deps.httpPort }));
    }
    if (config.tftp) {
      try {
        const hosts = resolveListen('TFTP', 'tftp-listen', config.tftpListen, deps.provisioning ?? [], log);
        const tftp = await startTftpService({
          log, registry: deps.registry, config, artifactsDir: deps.artifactsDir, hosts,
          virtualFiles: tftpBootScripts(deps.store, deps.templates, (local) => config.publicUrl ?? httpUrlFor(local, deps.httpPort)),
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
  const missing = ARTIFACT_FILES.filter((n) => !existsSync(join(artifactsDir, n)));
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
  return buildArtifacts({ outDir: artifactsDir, log: (msg) => alog.info(msg) }).then(
    (r) => { alog.info({ report: formatReport(r.report) }, 'boot artifacts built'); },
    (err) => { alog.error({ err: (err as Error).message }, 'building the boot artifacts failed: machines cannot boot until `ironboot artifacts build` succeeds'); },
  );
}
