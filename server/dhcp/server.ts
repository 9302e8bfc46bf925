/**
 * DHCP sockets: one UDP socket per configured interface and port, each bound to 0.0.0.0:PORT with SO_REUSEADDR
 * and then to its device (SO_BINDTODEVICE, through the native addon in ./native). Bound to a device, a socket
 * sees only requests that arrived on that interface, and its replies to 255.255.255.255 leave by that interface
 * (with or without a default route), from that interface's address.
 */
import dgram from 'node:dgram';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { networkInterfaces } from 'node:os';
import { execFileSync } from 'node:child_process';
import type { Logger } from 'pino';
import { loadAddon } from '../native-addon.ts';
import type { RequestHandler, RequestMeta, ServingInterface } from './handle.ts';
import { ReplyBatch } from './batch.ts';

const NATIVE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'native');

export interface DhcpNative {
  bindToDevice(fd: number, ifname: string): void;
  interfaceIndex(ifname: string): number;
}

export class DhcpStartError extends Error {
  constructor(message: string) { super(message); this.name = 'DhcpStartError'; }
}

let native: DhcpNative | null = null;

/** The SO_BINDTODEVICE addon, or a DhcpStartError saying how to build it. */
export function loadNative(): DhcpNative {
  if (native) return native;
  const loaded = loadAddon<DhcpNative>(NATIVE_DIR, 'ironboot_dhcp_native');
  if (!loaded.addon) {
    throw new DhcpStartError(`DHCP needs its native helper (SO_BINDTODEVICE): ${loaded.why}; run deploy/build-native.sh ` +
      `(needs g++, python3 and the node headers; deploy/setup.sh does it), or start with --no-dhcp`);
  }
  return (native = loaded.addon);
}

/**
 * IPv4 addresses of an interface, or a DhcpStartError. os.networkInterfaces() omits interfaces that are not
 * running (no carrier yet, e.g. a bridge whose ports just came up), so those are read with `ip -j addr`.
 */
export function servingInterface(name: string): ServingInterface {
  const all = networkInterfaces();
  let addresses = (all[name] ?? []).filter((a) => a.family === 'IPv4')
    .map((a) => ({ address: a.address, prefix: Number(a.cidr?.split('/')[1] ?? 32) }));
  if (!all[name]) {
    let out: { addr_info?: { family: string; local: string; prefixlen: number }[] }[] = [];
    try {
      out = JSON.parse(execFileSync('ip', ['-j', '-4', 'addr', 'show', 'dev', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
      throw new DhcpStartError(`--dhcp-interface ${name}: no such interface (have: ${Object.keys(all).join(', ') || 'none'})`);
    }
    addresses = out.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ address: a.local, prefix: a.prefixlen }));
  }
  if (!addresses.length) throw new DhcpStartError(`--dhcp-interface ${name}: the interface has no IPv4 address; give it the server's address first`);
  return { name, addresses };
}

/** The fd of a bound dgram socket (Node keeps its handle behind a private symbol; `_handle` is deprecated). */
function socketFd(sock: dgram.Socket): number {
  const state = Object.getOwnPropertySymbols(sock).map((s) => (sock as unknown as Record<symbol, { handle?: { fd?: number } }>)[s])
    .find((v) => v && typeof v === 'object' && v.handle && typeof v.handle.fd === 'number');
  const fd = state?.handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new DhcpStartError('cannot find the file descriptor of the DHCP socket (unsupported Node.js version?)');
  return fd;
}

export interface SocketSpec { iface: ServingInterface; port: number; kind: RequestMeta['port'] }

export interface DhcpSockets {
  close(): Promise<void>;
  /** Datagrams received / replies sent / send errors, for tests and logs. */
  stats: { received: number; sent: number; sendErrors: number };
}

async function openSocket(spec: SocketSpec, nat: DhcpNative, onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo) => void, log: Logger): Promise<dgram.Socket> {
  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  let ready = false;
  sock.on('message', (msg, rinfo) => { if (ready) onMessage(msg, rinfo); });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(new DhcpStartError(`cannot listen on UDP 0.0.0.0:${spec.port} for ${spec.iface.name}: ${err.message}`));
    sock.once('error', onError);
    sock.bind({ port: spec.port, address: '0.0.0.0', exclusive: true }, () => { sock.off('error', onError); resolve(); });
  });
  try {
    nat.bindToDevice(socketFd(sock), spec.iface.name);
    sock.setBroadcast(true);
  } catch (err) {
    sock.close();
    throw err instanceof DhcpStartError ? err : new DhcpStartError(`${spec.iface.name}: ${(err as Error).message} (needs root or CAP_NET_RAW)`);
  }
  // Between bind() and SO_BINDTODEVICE (microseconds at start) a datagram from another interface could be
  // queued; messages delivered before the next loop turn are not handled, which covers most of that window.
  setImmediate(() => { ready = true; });
  sock.on('error', (err) => log.warn({ iface: spec.iface.name, port: spec.port, err }, 'dhcp: socket error'));
  return sock;
}

/**
 * Opens every socket. Requests are handled as they arrive; their replies are queued and sent together once the
 * current burst of datagrams is handled, right after `commit()` has written the burst's lease changes in one
 * transaction (group commit: no ACK leaves before its lease is stored; a reply whose claim lost is decided again,
 * see batch.ts). If commit fails, the burst's replies are dropped (clients retry) and the error logged.
 */
export async function openDhcpSockets(specs: SocketSpec[], handler: RequestHandler, log: Logger, commit: () => void = () => {}): Promise<DhcpSockets> {
  const nat = loadNative();
  const socks: dgram.Socket[] = [];
  const stats = { received: 0, sent: 0, sendErrors: 0 };
  const batch = new ReplyBatch<{ sock: dgram.Socket; iface: string }>(handler, commit);
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const held = batch.size;
    const { replies, error } = batch.settle();
    if (error) log.error({ err: error, replies: held - replies.length }, 'dhcp: cannot store leases; replies of this burst dropped');
    for (const { out, tag: { sock, iface } } of replies) {
      sock.send(out.data, out.port, out.address, (err) => {
        if (err) { stats.sendErrors++; log.warn({ err, to: `${out.address}:${out.port}`, iface }, 'dhcp: send failed'); } else stats.sent++;
      });
    }
  };
  try {
    for (const spec of specs) {
      const s: dgram.Socket = await openSocket(spec, nat, (msg, rinfo) => {
        stats.received++;
        try {
          batch.add(msg, { iface: spec.iface, port: spec.kind, from: { address: rinfo.address, port: rinfo.port } }, { sock: s, iface: spec.iface.name });
        } catch (err) {
          log.error({ err, iface: spec.iface.name }, 'dhcp: handler failed');
          return;
        }
        // flush also when there is no reply: a RELEASE or DECLINE changes a lease too
        if (!scheduled) { scheduled = true; setImmediate(flush); }
      }, log);
      socks.push(s);
      log.info({ iface: spec.iface.name, port: spec.port, kind: spec.kind, addresses: spec.iface.addresses.map((a) => `${a.address}/${a.prefix}`) }, 'dhcp: listening');
    }
  } catch (err) {
    for (const s of socks) s.close();
    throw err;
  }
  return {
    stats,
    close: async () => {
      if (scheduled) flush();
      try { commit(); } catch (err) { log.error({ err }, 'dhcp: cannot store leases at close'); }
      await Promise.all(socks.map((s) => new Promise<void>((r) => { try { s.close(() => r()); } catch { r(); } })));
    },
  };
}
