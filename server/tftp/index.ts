/**
 * The TFTP side of `ironboot serve`: read-only TFTP on config.tftpListen serving virtual files, the iPXE
 * binaries (config.ipxeDir) and the boot artifacts.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ServeConfig } from '../config.ts';
import { ipxeRoot, type TftpVirtualFiles } from './files.ts';
import { createTftpServer } from './server.ts';
import { DEBIAN_IPXE_DIR } from '../boot/ipxe-dir.ts';

export type { TftpVirtualFile, TftpVirtualFiles, TftpFileRequest } from './files.ts';

export async function startTftpService(deps: {
  log: Logger;
  registry: Registry;
  config: ServeConfig;
  artifactsDir: string;
  /** Addresses to listen on (default: config.tftpListen.host, or every address when that is unset). */
  hosts?: string[];
  virtualFiles?: TftpVirtualFiles;
}): Promise<{ close(): Promise<void>; address(): { address: string; port: number }; addresses(): { address: string; port: number }[] }> {
  const { config } = deps;
  const server = await createTftpServer({
    log: deps.log.child({ component: 'tftp' }),
    registry: deps.registry,
    host: config.tftpListen.host ?? '0.0.0.0',
    hosts: deps.hosts,
    port: config.tftpListen.port,
    roots: [await ipxeRoot(config.ipxeDir ?? DEBIAN_IPXE_DIR), { dir: deps.artifactsDir }],
    virtualFiles: deps.virtualFiles,
    maxTransfers: config.tftpMaxTransfers,
  });
  return { close: () => server.close(), address: () => server.address(), addresses: () => server.addresses() };
}
