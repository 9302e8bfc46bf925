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

export async function extraHttpPlugins(_deps: AppDeps, _config: ServeConfig): Promise<{ plugins: { plugin: FastifyPluginAsync<AppDeps>; prefix?: string }[]; images?: ImageFiles }> {
  return { plugins: [] };
}

export async function startNetworkServices(deps: { store: Store; log: Logger; registry: Registry; config: ServeConfig; httpPort: number; artifactsDir: string }): Promise<{ close(): Promise<void> }> {
  const closers: { close(): Promise<void> }[] = [];
  if (deps.config.dhcp) deps.log.warn('DHCP is not part of this build yet');
  if (deps.config.tftp) deps.log.warn('TFTP is not part of this build yet');
  return { close: async () => { for (const c of closers.reverse()) await c.close(); } };
}

export function prepareArtifacts(_config: ServeConfig, _artifactsDir: string, _log: Logger): void {}
