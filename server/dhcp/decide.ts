/**
 * Who gets what (pure): from a decoded request, the machine registered for its MAC, the address the lease
 * layer can give it and the serving context, decide to ignore, OFFER, ACK or NAK, with which options and
 * which boot file, and why. No I/O here: the server applies the lease action and sends the reply.
 */
import type { DhcpMode } from '../config.ts';
import type { Machine } from '../store/machines.ts';
import { prefixToMask, intToIp, sameSubnet } from '../ipv4.ts';
import { decodeRelayAgentInfo } from './relay-agent.ts';
import {
  type DhcpPacket, MessageType, Opt, IpxeOpt, PxeOpt, FLAG_BROADCAST, clientArches, userClasses, optIp, optString,
  encodeSubOptions, decodeSubOptions, ipBytes, ipListBytes, u32Bytes, replySkeleton, messageTypeName,
} from './packet.ts';
import { IRONBOOT_IPXE_USER_CLASS } from '../boot/ipxe-dir.ts';

// ---------------------------------------------------------------------------------------------------------
// Client classification

export type Firmware = 'bios' | 'uefi-x64' | 'uefi-ia32' | 'uefi-arm64' | 'unknown';

export interface ClientKind {
  /** Option 60 starts with "PXEClient". */
  pxe: boolean;
  /** Option 60 starts with "HTTPClient" (UEFI HTTP boot). */
  httpBoot: boolean;
  /** iPXE: option 77 "iPXE" (raw or RFC 3004) or option 175 present. */
  ipxe: boolean;
  /** iPXE that announces the HTTPS feature (option 175 sub-option 0x14, DHCP_EB_FEATURE_HTTPS). */
  ipxeHttps: boolean;
  /**
   * ironboot's own iPXE build (ironboot artifacts ipxe): its embedded script sets option 77 to "ironboot". Only this
   * one trusts the operator's CA; a NIC's iPXE ROM may have HTTPS too, but trusts other roots.
   */
  ironbootIpxe: boolean;
  /** Option 93 first value, null when absent. */
  archCode: number | null;
  vendorClass: string | null;
}

export function classifyClient(p: DhcpPacket): ClientKind {
  const vendorClass = optString(p, Opt.VENDOR_CLASS);
  const arches = clientArches(p);
  return {
    pxe: vendorClass?.startsWith('PXEClient') ?? false,
    httpBoot: vendorClass?.startsWith('HTTPClient') ?? false,
    ipxe: userClasses(p).includes('iPXE') || userClasses(p).includes(IRONBOOT_IPXE_USER_CLASS) || p.options.has(Opt.IPXE_ENCAP),
    ironbootIpxe: userClasses(p).includes(IRONBOOT_IPXE_USER_CLASS),
    ipxeHttps: p.options.has(Opt.IPXE_ENCAP) && decodeSubOptions(p.options.get(Opt.IPXE_ENCAP)!).has(IpxeOpt.FEATURE_HTTPS),
    archCode: arches.length ? arches[0] : null,
    vendorClass,
  };
}

/** RFC 4578 / IANA processor architecture types → firmware family. */
export function firmwareOfArch(code: number | null): Firmware {
  switch (code) {
    case 0: return 'bios';
    case 6: return 'uefi-ia32';
    case 7: case 9: case 16: return 'uefi-x64';      // 16 = x64 UEFI HTTP boot
    case 11: case 19: return 'uefi-arm64';           // 19 = arm64 UEFI HTTP boot
    default: return 'unknown';
  }
}

/** x86-64 UEFI binaries are per machine (ipxe.efi | snponly.efi); arm64 ones by the same choice, -arm64. */
export function efiBinaryFor(firmware: Firmware, efiBinary: Machine['efiBinary']): string | null {
  if (firmware === 'uefi-x64') return efiBinary;
  if (firmware === 'uefi-arm64') return efiBinary === 'snponly.efi' ? 'snponly-arm64.efi' : 'ipxe-arm64.efi';
  return null;
}

/** Where the HTTP side serves the iPXE binaries for UEFI HTTP boot: `${publicUrl}${HTTP_BOOT_PATH}<binary>`. */
export const HTTP_BOOT_PATH = '/ipxe/';

// ---------------------------------------------------------------------------------------------------------
// Boot file

export interface BootContext {
  /** Base URL machines reach the HTTP side at, no trailing slash. */
  publicUrl: string;
  /** TFTP next-server (siaddr): the serving interface's address. */
  tftpServer: string;
  /**
   * The served iPXE binaries fetch over HTTPS and trust the daemon's CA (ironboot artifacts ipxe): ironboot's iPXE gets
   * this HTTPS base for its boot script; any other iPXE (a NIC's own ROM) gets the TFTP binary to chain into instead.
   */
  ipxeHttpsUrl?: string | null;
}

export interface BootAnswer {
  /** Into the file field (or option 67 if longer than 127 bytes). */
  file: string;
  siaddr: string;
  /** Option 60 to echo ("PXEClient" / "HTTPClient"), if any. */
  vendorClass: string | null;
  /** PXE option 43 (discovery control: take the boot file from this offer). */
  pxeVendorOptions: boolean;
  /** Option 175 sub-option 176 = 1: iPXE need not wait for proxyDHCP. */
  ipxeNoProxyDhcp: boolean;
  why: string;
}

export type BootResult = { boot: BootAnswer } | { boot: null; why: string };

/** The boot file for this client and machine, or null with the reason. */
export function chooseBoot(client: ClientKind, machine: Machine | null, ctx: BootContext): BootResult {
  if (!machine) return { boot: null, why: 'unknown MAC: no boot file' };
  if (!machine.allowPxe) return { boot: null, why: 'allow_pxe is off: address only, no boot file' };
  if (client.ironbootIpxe && ctx.ipxeHttpsUrl) {
    return {
      boot: {
        file: `${ctx.ipxeHttpsUrl}/boot/${machine.mac}.ipxe`, siaddr: ctx.tftpServer, vendorClass: null,
        pxeVendorOptions: false, ipxeNoProxyDhcp: true, why: `ironboot's iPXE (HTTPS, the operator's CA): boot script over HTTPS${client.ipxeHttps ? '' : ' (it did not announce HTTPS)'}`,
      },
    };
  }
  const chainToHttpsIpxe = client.ipxe && !!ctx.ipxeHttpsUrl && client.pxe;
  if (client.ipxe && !chainToHttpsIpxe) {
    return {
      boot: {
        file: `${ctx.publicUrl}/boot/${machine.mac}.ipxe`, siaddr: ctx.tftpServer, vendorClass: null,
        pxeVendorOptions: false, ipxeNoProxyDhcp: true, why: 'iPXE client: HTTP boot script',
      },
    };
  }
  if (!client.pxe && !client.httpBoot) return { boot: null, why: `not a PXE/HTTP boot client (vendor class ${JSON.stringify(client.vendorClass)})` };
  const firmware = machine.arch !== 'auto' ? machine.arch : firmwareOfArch(client.archCode);
  const archWhy = machine.arch !== 'auto' ? `machine arch ${machine.arch}` : `option 93 = ${client.archCode}`;
  if (client.httpBoot) {
    const bin = efiBinaryFor(firmware, machine.efiBinary);
    if (!bin) return { boot: null, why: `UEFI HTTP boot with ${archWhy}: no EFI binary for ${firmware}` };
    return {
      boot: {
        file: `${ctx.publicUrl}${HTTP_BOOT_PATH}${bin}`, siaddr: ctx.tftpServer, vendorClass: 'HTTPClient',
        pxeVendorOptions: false, ipxeNoProxyDhcp: false, why: `UEFI HTTP boot, ${archWhy}: ${bin} over HTTP`,
      },
    };
  }
  const file = firmware === 'bios' ? 'undionly.kpxe' : efiBinaryFor(firmware, machine.efiBinary);
  if (!file) return { boot: null, why: `PXE client with ${archWhy}: no boot file for ${firmware}` };
  return {
    boot: {
      file, siaddr: ctx.tftpServer, vendorClass: 'PXEClient', pxeVendorOptions: true, ipxeNoProxyDhcp: false,
      why: chainToHttpsIpxe ? `iPXE that is not ironboot's (${client.ipxeHttps ? 'it has HTTPS, but not the operator\'s CA' : 'no HTTPS'}; ${archWhy}): ${file} over TFTP, ironboot's iPXE with HTTPS and the CA` : `PXE ${firmware} (${archWhy}): ${file} over TFTP`,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Replies

/** What the lease layer can give this MAC on this link (reservation or pool), all resolved. */
export interface AddressBinding {
  address: string;
  prefix: number;
  router: string | null;
  dns: string[];
  domain: string | null;
  hostname: string | null;
  leaseSeconds: number;
  source: 'reservation' | 'pool';
}

export type LeaseAction =
  | { kind: 'none' }
  | { kind: 'offer'; address: string }
  | { kind: 'bind'; address: string; leaseSeconds: number }
  | { kind: 'unoffer'; address: string }
  | { kind: 'release'; address: string }
  | { kind: 'decline'; address: string };

export type Decision =
  | { action: 'ignore'; why: string; lease: LeaseAction }
  | { action: 'reply'; type: number; reply: DhcpPacket; why: string; lease: LeaseAction };

export interface DecisionInput {
  mode: DhcpMode;
  /** 'dhcp' = port 67, 'proxy' = PXE proxyDHCP port 4011. */
  port: 'dhcp' | 'proxy';
  request: DhcpPacket;
  mac: string;
  machine: Machine | null;
  /** The address this MAC may have on the request's link (reservation or pool); null when none. */
  binding: AddressBinding | null;
  /** Why binding is null (for the log). */
  bindingWhy: string;
  /**
   * Decided again because this request's first reply claimed an address another daemon on the same store holds:
   * a client asking for that address is told no (NAK), not left to time out.
   */
  claimLost?: boolean;
  /** This server's identifier on the request's link (option 54): the serving interface's address. */
  serverId: string;
  boot: BootContext;
  /** Relays (giaddr) whose requests are served, as address/prefix; null or absent: any relay. */
  allowedRelays?: { address: string; prefix: number }[] | null;
}

const ignore = (why: string, lease: LeaseAction = { kind: 'none' }): Decision => ({ action: 'ignore', why, lease });

function addBoot(reply: DhcpPacket, boot: BootAnswer): void {
  reply.siaddr = boot.siaddr;
  if (Buffer.byteLength(boot.file, 'latin1') <= 127) reply.file = boot.file;
  else reply.options.set(Opt.BOOTFILE, Buffer.from(boot.file, 'latin1'));
  if (boot.vendorClass) reply.options.set(Opt.VENDOR_CLASS, Buffer.from(boot.vendorClass));
  if (boot.pxeVendorOptions) {
    // Discovery control bit 3: the boot file is in this offer, skip PXE boot server discovery.
    reply.options.set(Opt.VENDOR_SPECIFIC, encodeSubOptions([[PxeOpt.DISCOVERY_CONTROL, [8]]]));
  }
  if (boot.ipxeNoProxyDhcp) reply.options.set(Opt.IPXE_ENCAP, encodeSubOptions([[IpxeOpt.NO_PXEDHCP, [1]]]));
}

function addAddressOptions(reply: DhcpPacket, b: AddressBinding, withLease: boolean): void {
  reply.options.set(Opt.SUBNET_MASK, ipBytes(intToIp(prefixToMask(b.prefix))));
  if (b.router) reply.options.set(Opt.ROUTER, ipBytes(b.router));
  if (b.dns.length) reply.options.set(Opt.DNS, ipListBytes(b.dns));
  if (b.hostname) reply.options.set(Opt.HOSTNAME, Buffer.from(b.hostname));
  if (b.domain) reply.options.set(Opt.DOMAIN_NAME, Buffer.from(b.domain));
  if (withLease) {
    reply.options.set(Opt.LEASE_TIME, u32Bytes(b.leaseSeconds));
    reply.options.set(Opt.RENEWAL_TIME, u32Bytes(Math.floor(b.leaseSeconds / 2)));
    reply.options.set(Opt.REBINDING_TIME, u32Bytes(Math.floor(b.leaseSeconds * 7 / 8)));
  }
}

function makeReply(input: DecisionInput, type: number): DhcpPacket {
  const reply = replySkeleton(input.request);
  reply.options.set(Opt.MESSAGE_TYPE, Buffer.from([type]));
  reply.options.set(Opt.SERVER_ID, ipBytes(input.serverId));
  return reply;
}

function nak(input: DecisionInput, why: string, lease: LeaseAction = { kind: 'none' }): Decision {
  const reply = makeReply(input, MessageType.NAK);
  reply.options.set(Opt.MESSAGE, Buffer.from(why.slice(0, 200)));
  // RFC 2131 4.3.2: a NAK through a relay sets the broadcast bit so the relay broadcasts it.
  if (input.request.giaddr !== '0.0.0.0') reply.flags |= FLAG_BROADCAST;
  return { action: 'reply', type: MessageType.NAK, reply, why: `NAK: ${why}`, lease };
}

function offerOrAck(input: DecisionInput, type: number, b: AddressBinding, client: ClientKind, lease: LeaseAction, why: string): Decision {
  const reply = makeReply(input, type);
  reply.yiaddr = b.address;
  addAddressOptions(reply, b, true);
  const boot = chooseBoot(client, input.machine, input.boot);
  if (boot.boot) addBoot(reply, boot.boot);
  return { action: 'reply', type, reply, why: `${why}; ${boot.boot ? boot.boot.why : boot.why}`, lease };
}

/** Whether a relay's giaddr is one the operator allows (--dhcp-relay); every relay when no list is set. */
export function relayAllowed(giaddr: string, allowed: { address: string; prefix: number }[] | null | undefined): boolean {
  if (!allowed) return true;
  return allowed.some((r) => sameSubnet(giaddr, r.address, r.prefix));
}

/**
 * The decision for one request: the relay checks (allowlist, option 82 well-formed), then the mode's decision,
 * then option 82 echoed, unchanged and last, in the reply (RFC 3046 2.2: the relay uses it to forward the reply
 * to the client's circuit, and strips it).
 */
export function decide(input: DecisionInput): Decision {
  const req = input.request;
  if (req.giaddr !== '0.0.0.0' && !relayAllowed(req.giaddr, input.allowedRelays)) {
    return ignore(`relay ${req.giaddr} is not an allowed relay (--dhcp-relay)`);
  }
  const agentInfo = req.options.get(Opt.RELAY_AGENT);
  if (agentInfo) {
    const decoded = decodeRelayAgentInfo(agentInfo);
    if (!decoded.ok) return ignore(`malformed relay agent information: ${decoded.reason}`);
  }
  const d = decideRequest(input);
  if (d.action === 'reply' && agentInfo) {
    d.reply.options.delete(Opt.RELAY_AGENT);
    d.reply.options.set(Opt.RELAY_AGENT, agentInfo);
  }
  return d;
}

function decideRequest(input: DecisionInput): Decision {
  const req = input.request;
  const type = req.options.get(Opt.MESSAGE_TYPE)?.[0] ?? null;
  const client = classifyClient(req);
  if (req.op !== 1) return ignore('not a BOOTREQUEST');
  if (type === null) return ignore('BOOTP request without option 53: not served');
  if (input.mode === 'proxy' || input.port === 'proxy') return decideProxy(input, type, client);

  const serverIdOpt = optIp(req, Opt.SERVER_ID);
  const requested = optIp(req, Opt.REQUESTED_IP);
  const b = input.binding;
  switch (type) {
    case MessageType.DISCOVER:
      if (!b) return ignore(input.bindingWhy);
      return offerOrAck(input, MessageType.OFFER, b, client, { kind: 'offer', address: b.address }, `OFFER ${b.address} (${b.source})`);

    case MessageType.REQUEST: {
      if (serverIdOpt !== null) {
        // SELECTING: the client answers one OFFER
        if (serverIdOpt !== input.serverId) {
          return ignore(`REQUEST for server ${serverIdOpt}, not us (${input.serverId})`,
            b?.source === 'pool' ? { kind: 'unoffer', address: b.address } : { kind: 'none' });
        }
        if (!b) return nak(input, `no address for this client here (${input.bindingWhy})`);
        if (requested !== b.address) return nak(input, `requested ${requested ?? 'no address'}, offered ${b.address}`);
        return offerOrAck(input, MessageType.ACK, b, client, { kind: 'bind', address: b.address, leaseSeconds: b.leaseSeconds }, `ACK ${b.address} (selecting, ${b.source})`);
      }
      if (requested !== null && req.ciaddr === '0.0.0.0') {
        // INIT-REBOOT: verify the remembered address; NAK if wrong for a client we know, silence otherwise
        if (!b) return input.claimLost ? nak(input, `${requested} is taken (${input.bindingWhy})`) : ignore(`INIT-REBOOT for ${requested}: ${input.bindingWhy}`);
        if (requested !== b.address) return nak(input, `requested ${requested}, this client's address here is ${b.address}`);
        return offerOrAck(input, MessageType.ACK, b, client, { kind: 'bind', address: b.address, leaseSeconds: b.leaseSeconds }, `ACK ${b.address} (init-reboot, ${b.source})`);
      }
      if (req.ciaddr !== '0.0.0.0') {
        // RENEWING (unicast) or REBINDING (broadcast)
        if (!b) return input.claimLost ? nak(input, `${req.ciaddr} is taken (${input.bindingWhy})`) : ignore(`RENEW/REBIND of ${req.ciaddr}: ${input.bindingWhy}`);
        if (req.ciaddr !== b.address) return nak(input, `renewing ${req.ciaddr}, this client's address here is ${b.address}`);
        return offerOrAck(input, MessageType.ACK, b, client, { kind: 'bind', address: b.address, leaseSeconds: b.leaseSeconds }, `ACK ${b.address} (renew/rebind, ${b.source})`);
      }
      return ignore('REQUEST without server id, requested address or ciaddr');
    }

    case MessageType.RELEASE:
      if (serverIdOpt !== null && serverIdOpt !== input.serverId) return ignore(`RELEASE for server ${serverIdOpt}, not us`);
      if (b?.source !== 'pool' || req.ciaddr !== b.address) return ignore(`RELEASE of ${req.ciaddr}: no pool lease of this client (reservations stay)`);
      return ignore(`RELEASE of ${req.ciaddr}`, { kind: 'release', address: req.ciaddr });

    case MessageType.DECLINE:
      if (serverIdOpt !== null && serverIdOpt !== input.serverId) return ignore(`DECLINE for server ${serverIdOpt}, not us`);
      if (!requested) return ignore('DECLINE without option 50');
      if (b?.source !== 'pool' || requested !== b.address) return ignore(`DECLINE of ${requested}: not a pool address of this client (reservation conflict needs an operator)`);
      return ignore(`DECLINE of ${requested}: address in use by someone else, quarantined`, { kind: 'decline', address: requested });

    case MessageType.INFORM: {
      if (!input.machine && !b) return ignore(`INFORM from unknown MAC (${input.bindingWhy})`);
      const reply = makeReply(input, MessageType.ACK);
      if (b) addAddressOptions(reply, b, false);
      const boot = chooseBoot(client, input.machine, input.boot);
      if (boot.boot) addBoot(reply, boot.boot);
      return { action: 'reply', type: MessageType.ACK, reply, why: `ACK to INFORM from ${req.ciaddr}; ${boot.boot ? boot.boot.why : boot.why}`, lease: { kind: 'none' } };
    }

    default:
      return ignore(`message type ${messageTypeName(type)} is not served`);
  }
}

/** proxyDHCP (PXE spec): boot information only, to PXE clients of registered machines with allow_pxe on. */
function decideProxy(input: DecisionInput, type: number, client: ClientKind): Decision {
  if (!client.pxe && !client.httpBoot) return ignore(`proxy: not a PXE client (vendor class ${JSON.stringify(client.vendorClass)})`);
  if (!input.machine) return ignore('proxy: unknown MAC');
  const onProxyPort = input.port === 'proxy';
  let replyType: number;
  if (!onProxyPort && type === MessageType.DISCOVER) replyType = MessageType.OFFER;
  else if (onProxyPort && (type === MessageType.REQUEST || type === MessageType.INFORM)) replyType = MessageType.ACK;
  else return ignore(`proxy: ${messageTypeName(type)} on port ${onProxyPort ? 4011 : 67} is for the address server`);
  const boot = chooseBoot(client, input.machine, input.boot);
  if (!boot.boot) return ignore(`proxy: ${boot.why}`);
  const reply = makeReply(input, replyType);
  addBoot(reply, boot.boot);
  // proxyDHCP answers always carry option 60 and option 43, even to iPXE (PXE spec 2.2.5)
  if (!boot.boot.vendorClass) reply.options.set(Opt.VENDOR_CLASS, Buffer.from(client.httpBoot ? 'HTTPClient' : 'PXEClient'));
  if (!reply.options.has(Opt.VENDOR_SPECIFIC)) reply.options.set(Opt.VENDOR_SPECIFIC, encodeSubOptions([[PxeOpt.DISCOVERY_CONTROL, [8]]]));
  // Option 97 (client UUID) is echoed as the PXE spec asks.
  const uuid = input.request.options.get(Opt.UUID_GUID);
  if (uuid) reply.options.set(Opt.UUID_GUID, uuid);
  return { action: 'reply', type: replyType, reply, why: `proxy ${messageTypeName(replyType)}: ${boot.boot.why}`, lease: { kind: 'none' } };
}
