/**
 * The services `ironboot serve` runs beside its HTTP API: DHCP, TFTP, container-disk files and builds, boot
 * scripts, and the boot artifacts. Each is started from here so main.ts stays a plain list.
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ServeConfig } from './config.ts';
import type { Store } from './store/index.ts';
import type { AppDeps, ImageFiles } from './http/app.ts';
import { startDhcpService } from './dhcp/index.ts';
import { startTftpService } from './tftp/index.ts';

export async function extraHttpPlugins(_deps: AppDeps, _config: ServeConfig): Promise<{ plugins: { plugin: FastifyPluginAsync<AppDeps>; prefix?: string }[]; images?: ImageFiles }> {
  return { plugins: [] };
}

interface Closable { close(): Promise<void> }

export async function startNetworkServices(deps: { store: Store; log: Logger; registry: Registry; config: ServeConfig; httpPort: number; artifactsDir: string }): Promise<Closable> {
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
        const tftp = await startTftpService({ log, registry: deps.registry, config, artifactsDir: deps.artifactsDir });
        started.push(tftp);
        log.info({ tftp: tftp.address() }, 'ironboot serving TFTP');
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

export function prepareArtifacts(_config: ServeConfig, _artifactsDir: string, _log: Logger): void {}
