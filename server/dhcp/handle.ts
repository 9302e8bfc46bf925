/**
 * One request, bytes in → reply bytes and destination out: decode, look up the machine and its address,
 * decide, apply the lease change, encode. Socket-free (server.ts feeds it and sends what it returns).
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { Store } from '../store/index.ts';
import type { DhcpMode } from '../config.ts';
import {
  decodeDhcpPacket, encodeDhcpPacket, clientMac, messageType, messageTypeName, maxMessageSize, optIp, Opt,
  MessageType, type DhcpPacket,
} from './packet.ts';
import { decide, type Decision } from './decide.ts';
import { DeclineRefused, type Claim, type DhcpLeases, type Link } from './leases.ts';
import { decodeRelayAgentInfo, describeRelayAgentInfo } from './relay-agent.ts';
import { sameSubnet } from '../ipv4.ts';

/** A serving interface as the handler sees it. */
export interface ServingInterface {
  name: string;
  /** IPv4 addresses of the interface; the first is the primary (server id, next-server by default). */
  addresses: { address: string; prefix: number }[];
}

export interface RequestMeta {
  iface: ServingInterface;
  /** 'dhcp' = port 67 socket, 'proxy' = port 4011 socket. */
  port: 'dhcp' | 'proxy';
  from: { address: string; port: number };
  /** Set when the request is decided again because the claim of its first reply lost (server/dhcp/batch.ts). */
  again?: number;
}

export interface Outgoing {
  data: Buffer; address: string; port: number; broadcast: boolean;
  /** The pool address this reply offers or acknowledges: it may leave only if the claim did not lose at commit. */
  claim?: Claim;
}

export interface HandlerDeps {
  store: Store;
  leases: DhcpLeases;
  log: Logger;
  registry: Registry;
  mode: DhcpMode;
  /** Server port (67, or the test port): relays are answered on it, clients on port + 1. */
  serverPort: number;
  /** Base URL of the HTTP side for an interface address (publicUrl, or http://ADDRESS:httpPort). */
  publicUrlFor: (interfaceAddress: string) => string;
  /** With a served iPXE that has HTTPS and the CA: base URL of the HTTPS side for an interface address. */
  ipxeHttpsUrlFor?: ((interfaceAddress: string) => string) | null;
  /** Relays whose requests are served (--dhcp-relay); null or empty: any. */
  allowedRelays?: { address: string; prefix: number }[] | null;
}

export interface DhcpMetrics {
  requests: Counter<'type' | 'outcome'>;
  malformed: Counter<'reason'>;
  claimsLost: Counter<'type'>;
}

function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function dhcpMetrics(registry: Registry): DhcpMetrics {
  return {
    requests: counter(registry, 'ironboot_dhcp_requests_total', 'DHCP requests by message type and outcome (offer, ack, nak, ignore, release, decline, decline_refused, error)', ['type', 'outcome']),
    malformed: counter(registry, 'ironboot_dhcp_malformed_total', 'DHCP packets dropped because they could not be decoded, by reason', ['reason']),
    claimsLost: counter(registry, 'ironboot_dhcp_lease_claims_lost_total', 'OFFERs and ACKs not sent because another daemon on the same store claimed the address first (the request was decided again), by request type', ['type']),
  };
}

/** Where a reply goes (RFC 2131 4.1): relay, ciaddr, or broadcast. */
export function replyDestination(req: DhcpPacket, reply: DhcpPacket, meta: RequestMeta, serverPort: number): { address: string; port: number; broadcast: boolean } {
  const clientPort = serverPort + 1;
  if (req.giaddr !== '0.0.0.0') return { address: req.giaddr, port: serverPort, broadcast: false };
  if (meta.port === 'proxy') return { address: meta.from.address, port: meta.from.port, broadcast: false };
  const type = reply.options.get(Opt.MESSAGE_TYPE)?.[0];
  if (type !== MessageType.NAK && req.ciaddr !== '0.0.0.0') return { address: req.ciaddr, port: clientPort, broadcast: false };
  // Without ARP injection (no raw socket) a unicast to yiaddr cannot reach a client that has no address yet:
  // broadcast, which every client accepts.
  return { address: '255.255.255.255', port: clientPort, broadcast: true };
}

export type RequestHandler = (data: Buffer, meta: RequestMeta) => Outgoing | null;

export function createRequestHandler(deps: HandlerDeps): RequestHandler {
  const metrics = dhcpMetrics(deps.registry);
  const { log } = deps;
  const refusedRelays = new Map<string, number>();
  return (data, meta) => {
    const debug = log.isLevelEnabled('debug');
    const decoded = decodeDhcpPacket(data);
    if (!decoded.ok) {
      metrics.malformed.inc({ reason: decoded.error.reason });
      if (debug) log.debug({ iface: meta.iface.name, from: `${meta.from.address}:${meta.from.port}`, reason: decoded.error.message }, 'dhcp: malformed packet dropped');
      return null;
    }
    const req = decoded.packet;
    const type = messageType(req);
    const typeName = messageTypeName(type);
    const mac = clientMac(req);
    if (req.op !== 1) { metrics.requests.inc({ type: typeName, outcome: 'ignore' }); return null; }
    if (!mac) {
      metrics.requests.inc({ type: typeName, outcome: 'ignore' });
      if (debug) log.debug({ iface: meta.iface.name, htype: req.htype, hlen: req.hlen }, 'dhcp: ignored, not an Ethernet client');
      return null;
    }
    if (meta.again) {
      metrics.claimsLost.inc({ type: typeName });
      log.info({ mac, type: typeName, round: meta.again }, `dhcp: ${typeName} from ${mac}: another daemon claimed the address first; deciding again`);
    }
    const machine = deps.leases.machines.byMac(mac);
    const relay = req.giaddr !== '0.0.0.0' ? req.giaddr : null;
    const link: Link = { interfaceAddresses: meta.iface.addresses, relay };
    const preferred = optIp(req, Opt.REQUESTED_IP) ?? (req.ciaddr !== '0.0.0.0' ? req.ciaddr : null);
    const needsAddress = deps.mode !== 'proxy' && meta.port === 'dhcp';
    const resolution = needsAddress ? deps.leases.resolve(mac, machine, link, preferred) : { binding: null, why: 'proxy mode: no addresses' };

    // Server id: the interface address the client named, else the one on the client's subnet, else the primary.
    const named = optIp(req, Opt.SERVER_ID);
    const addrs = meta.iface.addresses;
    const serverId = addrs.find((a) => a.address === named)?.address
      ?? (resolution.binding && !relay ? addrs.find((a) => sameSubnet(a.address, resolution.binding!.address, a.prefix))?.address : undefined)
      ?? addrs[0]?.address ?? '0.0.0.0';

    let decision: Decision;
    let claim: Claim | null;
    try {
      decision = decide({
        mode: deps.mode, port: meta.port, request: req, mac, machine, binding: resolution.binding, bindingWhy: resolution.why, claimLost: !!meta.again,
        serverId, boot: { publicUrl: deps.publicUrlFor(serverId), tftpServer: serverId, ipxeHttpsUrl: deps.ipxeHttpsUrlFor?.(serverId) ?? null },
        allowedRelays: deps.allowedRelays?.length ? deps.allowedRelays : null,
      });
      claim = deps.leases.apply(mac, decision.lease, machine?.hostname ?? null);
    } catch (err) {
      if (err instanceof DeclineRefused) {
        metrics.requests.inc({ type: typeName, outcome: 'decline_refused' });
        log.warn({ mac, iface: meta.iface.name, relay }, `dhcp: DECLINE ignored: ${err.message}`);
        return null;
      }
      metrics.requests.inc({ type: typeName, outcome: 'error' });
      log.warn({ mac, type: typeName, err }, 'dhcp: request failed');
      return null;
    }
    const outcome = decision.action === 'reply' ? messageTypeName(decision.type)
      : decision.lease.kind === 'release' || decision.lease.kind === 'decline' ? decision.lease.kind : 'ignore';
    metrics.requests.inc({ type: typeName, outcome });
    if (debug) {
      const agent = req.options.get(Opt.RELAY_AGENT);
      const decodedAgent = agent ? decodeRelayAgentInfo(agent) : null;
      const agentInfo = decodedAgent?.ok ? describeRelayAgentInfo(decodedAgent.info) : undefined;
      log.debug({ mac, type: typeName, iface: meta.iface.name, relay, agentInfo, port: meta.port, outcome, why: decision.why, again: meta.again }, `dhcp: ${typeName} from ${mac}: ${outcome}`);
    } else if (relay && decision.action === 'ignore' && decision.why.startsWith('relay ')) {
      // the allowlist at work: said once a minute per relay (a flood must not become a log flood)
      const t = Date.now();
      if ((refusedRelays.get(relay) ?? -Infinity) < t - 60_000) {
        if (refusedRelays.size > 1000) refusedRelays.clear();
        refusedRelays.set(relay, t);
        log.warn({ mac, relay, iface: meta.iface.name }, `dhcp: ${decision.why}; its requests are ignored (logged once a minute per relay)`);
      }
    }
    if (decision.action !== 'reply') return null;
    let bytes: Buffer;
    try {
      bytes = encodeDhcpPacket(decision.reply, { maxSize: maxMessageSize(req) });
    } catch (err) {
      metrics.requests.inc({ type: typeName, outcome: 'error' });
      log.warn({ mac, err }, 'dhcp: reply could not be encoded');
      return null;
    }
    const dest = replyDestination(req, decision.reply, meta, deps.serverPort);
    return claim ? { data: bytes, ...dest, claim } : { data: bytes, ...dest };
  };
}
