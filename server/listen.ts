/**
 * Where HTTP and TFTP listen. By default on the provisioning interfaces' addresses (those named by
 * --dhcp-interface) and on loopback, not on every interface of the host: the boot scripts, artifacts and container
 * disks are meant for the provisioning network, and DHCP serves only the interfaces it is told to. An operator
 * can still name one address (--http-listen 10.0.0.1:8080), or all of them (0.0.0.0 / ::), which is warned about.
 */
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { servingInterface } from './dhcp/server.ts';

/** A listen setting: host null means "the default addresses" (provisioning interfaces + loopback). */
export interface ListenSpec { host: string | null; port: number }

export const isWildcard = (host: string): boolean => host === '0.0.0.0' || host === '::' || host === '';

/** Loopback addresses present on this host (127.0.0.1, and ::1 when IPv6 is on). */
export function loopbackAddresses(): string[] {
  const all = Object.values(networkInterfaces()).flat();
  return ['127.0.0.1', ...(all.some((a) => a?.address === '::1') ? ['::1'] : [])];
}

/** IPv4 addresses of the provisioning interfaces (throws, with the reason, for an interface that has none). */
export function provisioningAddresses(interfaces: string[]): string[] {
  return interfaces.flatMap((name) => servingInterface(name).addresses.map((a) => a.address));
}

/**
 * The addresses to listen on for one service (pure). Explicit host: just it. Default: the provisioning addresses,
 * then loopback, without duplicates.
 */
export function listenHosts(spec: ListenSpec, provisioning: string[], loopback: string[]): string[] {
  if (spec.host !== null) return [spec.host];
  return [...new Set([...provisioning, ...loopback])];
}

/** Resolves a service's listen addresses and says, in the log, what that exposes. */
export function resolveListen(service: 'HTTP' | 'HTTPS' | 'TFTP', flag: string, spec: ListenSpec, provisioning: string[], log: Logger): string[] {
  const hosts = listenHosts(spec, provisioning, loopbackAddresses());
  if (spec.host !== null && isWildcard(spec.host)) {
    log.warn({ service, listen: `${spec.host}:${spec.port}` },
      `${service} listens on ALL interfaces (${spec.host}): everything it serves is reachable from every network this host is on, ` +
      `not only the provisioning network. Prefer the provisioning interface's address (--${flag} ADDRESS:${spec.port}), ` +
      `or leave --${flag} unset to listen on the --dhcp-interface addresses and loopback.`);
  } else if (spec.host === null && provisioning.length === 0) {
    log.info({ service, hosts, port: spec.port },
      `${service} listens on loopback only: no --dhcp-interface names a provisioning interface. Machines cannot reach it; ` +
      `name the interface (--dhcp-interface), or an address (--${flag} ADDRESS:${spec.port}) when another DHCP server points machines here.`);
  }
  return hosts;
}

/**
 * Makes an HTTP(S) server that already listens on one address answer on more: each extra address gets a plain TCP
 * listener that hands its connections to `server` (so TLS, keep-alive and close() of the server apply to them).
 * Returns a function that closes the extra listeners.
 */
export async function listenAlsoOn(server: Server, hosts: string[], port: number): Promise<() => Promise<void>> {
  const extra: net.Server[] = [];
  const closeAll = () => Promise.all(extra.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => {});
  try {
    for (const host of hosts) {
      const s = net.createServer((socket) => server.emit('connection', socket));
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen({ host, port, ipv6Only: host.includes(':') }, () => { s.off('error', reject); resolve(); });
      });
      extra.push(s);
    }
  } catch (err) {
    await closeAll();
    throw err;
  }
  return closeAll;
}
