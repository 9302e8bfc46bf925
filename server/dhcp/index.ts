/**
 * The DHCP side of `ironboot serve`: reservation, proxy and full modes on the configured interfaces.
 *
 *   const dhcp = await startDhcpService({ store, log, registry, config, httpPort });
 *   ...; await dhcp.close();
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Store } from '../store/index.ts';
import type { ServeConfig } from '../config.ts';
import { sameSubnet } from '../ipv4.ts';
import { DhcpLeases, guessPoolPrefix } from './leases.ts';
import { createRequestHandler } from './handle.ts';
import { openDhcpSockets, servingInterface, loadNative, DhcpStartError, type SocketSpec } from './server.ts';

export { DhcpStartError } from './server.ts';
export {
  decodeDhcpPacket, parseDhcpPacket, encodeDhcpPacket, decodeSubOptions, encodeSubOptions, DhcpDecodeError,
  DhcpEncodeError, MessageType, Opt, type DhcpPacket,
} from './packet.ts';
export { decide, chooseBoot, classifyClient } from './decide.ts';
export { DhcpLeases } from './leases.ts';

export async function startDhcpService(deps: {
  store: Store; log: Logger; registry: Registry; config: ServeConfig; httpPort: number;
  /** The served iPXE has HTTPS and the CA: the HTTPS base URL for its boot script (server/boot/ipxe-dir.ts). */
  ipxeHttpsUrlFor?: ((interfaceAddress: string) => string) | null;
}): Promise<{ close(): Promise<void> }> {
  const { config, store, registry, httpPort } = deps;
  const log = deps.log.child({ svc: 'dhcp' });
  if (!config.dhcpInterfaces.length) {
    throw new DhcpStartError('DHCP needs at least one --dhcp-interface (the provisioning network), or --no-dhcp');
  }
  loadNative();
  const ifaces = config.dhcpInterfaces.map(servingInterface);
  let poolPrefix = 24;
  if (config.dhcpPool) {
    const holder = ifaces.flatMap((i) => i.addresses).find((a) => sameSubnet(a.address, config.dhcpPool!.start, a.prefix));
    poolPrefix = holder ? holder.prefix : guessPoolPrefix(config.dhcpPool.start, config.dhcpPool.end);
    if (!holder) log.info({ pool: config.dhcpPool, prefix: poolPrefix }, 'dhcp: pool is on no serving interface: served to relays only, prefix guessed from the range');
  }
  const leases = new DhcpLeases(store, {
    mode: config.dhcpMode, pool: config.dhcpMode === 'full' ? config.dhcpPool : null, poolPrefix,
    exclude: ifaces.flatMap((i) => i.addresses.map((a) => a.address)),
    poolUnknown: config.dhcpPoolUnknown, leaseSeconds: config.dhcpLeaseSeconds, router: config.dhcpRouter, dns: config.dhcpDns,
  });
  const handler = createRequestHandler({
    store, leases, log, registry, mode: config.dhcpMode, serverPort: config.dhcpPort,
    publicUrlFor: (address) => config.publicUrl ?? `http://${address}:${httpPort}`,
    ipxeHttpsUrlFor: deps.ipxeHttpsUrlFor ?? null,
    allowedRelays: config.dhcpRelays,
  });
  const specs: SocketSpec[] = ifaces.map((iface) => ({ iface, port: config.dhcpPort, kind: 'dhcp' as const }));
  if (config.dhcpMode === 'proxy') specs.push(...ifaces.map((iface) => ({ iface, port: config.proxyPort, kind: 'proxy' as const })));
  const sockets = await openDhcpSockets(specs, handler, log, () => leases.flush());
  log.info({ mode: config.dhcpMode, interfaces: config.dhcpInterfaces, pool: config.dhcpPool,
    relays: config.dhcpRelays.length ? config.dhcpRelays.map((r) => `${r.address}/${r.prefix}`) : 'any' }, 'dhcp: started');
  return {
    close: async () => {
      await sockets.close();
      log.info('dhcp: stopped');
    },
  };
}
