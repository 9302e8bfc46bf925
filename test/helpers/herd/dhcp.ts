/**
 * The herd's DHCP client: requests sent from a socket bound to the machine's own macvlan (SO_BINDTODEVICE, as
 * udhcpc binds its interface), replies read where the rack steers them (dhr0); DISCOVER → OFFER → REQUEST → ACK with the retransmission a PXE ROM does. The
 * three flavours are the three DHCP exchanges of a real boot: the PXE ROM, iPXE (user class "iPXE"), and the
 * agent's udhcpc. Every request that had to be sent again because no answer came in time counts as a drop.
 */
import dgram from 'node:dgram';
import { loadNative } from '../../../server/dhcp/server.ts';
import { parseDhcpPacket, optIp, optString, messageType, Opt } from '../../../server/dhcp/packet.ts';
import { buildRequest, qemuBiosIpxeDiscover } from '../dhcp-packets.ts';

export type DhcpFlavour = 'pxe' | 'ipxe' | 'udhcpc';

export interface DhcpLease { yiaddr: string; siaddr: string; serverId: string; file: string; retransmits: number }

const PXE_VENDOR = 'PXEClient:Arch:00000:UNDI:002001';

function fdOf(sock: dgram.Socket): number {
  return Object.getOwnPropertySymbols(sock).map((s) => (sock as never as Record<symbol, { handle?: { fd?: number } }>)[s])
    .find((v) => v?.handle?.fd !== undefined)!.handle!.fd!;
}

function packet(flavour: DhcpFlavour, mac: string, type: 1 | 3, xid: number, offer?: { yiaddr: string; serverId: string }): Buffer {
  const ids = offer ? { requested: offer.yiaddr, serverId: offer.serverId } : {};
  if (flavour === 'pxe' && type === 1) {
    const b = qemuBiosIpxeDiscover(mac.replaceAll(':', ''), xid);
    b.writeUInt16BE(0x8000, 10); // broadcast flag: the client has no address to receive a unicast on
    return b;
  }
  if (flavour === 'pxe') return buildRequest({ mac, type, xid, flags: 0x8000, vendorClass: PXE_VENDOR, arch: 0, ...ids });
  if (flavour === 'ipxe') return buildRequest({ mac, type, xid, flags: 0x8000, vendorClass: PXE_VENDOR, arch: 0, userClass: 'iPXE', ipxeEncap: true, ...ids });
  return buildRequest({ mac, type, xid, flags: 0x8000, vendorClass: 'udhcp 1.35.0', ...ids });
}

type Waiter = (p: ReturnType<typeof parseDhcpPacket>) => void;

/** Where the rack's DHCP replies arrive (index.ts steerDhcp redirects them there) and the reply listener reads them. */
export const REPLY_IFACE = 'dhr0';

/**
 * Replies are broadcast, so a socket on port 68 per machine would get every machine's replies (N² datagrams: at
 * 500 machines the simulator, not the server, dropped them). One listener on the interface the rack's replies are
 * steered into (REPLY_IFACE, SO_BINDTODEVICE) hands each reply to the machine waiting for its xid.
 */
class ReplyListener {
  private static instance: Promise<ReplyListener> | null = null;
  readonly waiters = new Map<number, Waiter>();
  private constructor(readonly sock: dgram.Socket) {
    sock.on('message', (msg) => {
      if (msg.length < 240) return;
      const w = this.waiters.get(msg.readUInt32BE(4));
      if (!w) return;
      try { const p = parseDhcpPacket(msg); if (p.op === 2) w(p); } catch { /* not a DHCP reply */ }
    });
  }
  static get(replyIface: string): Promise<ReplyListener> {
    ReplyListener.instance ??= (async () => {
      const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(68, '0.0.0.0', () => resolve()); });
      loadNative().bindToDevice(fdOf(sock), replyIface);
      try { sock.setRecvBufferSize(16 << 20); } catch { /* capped by rmem_max */ }
      sock.unref();
      return new ReplyListener(sock);
    })();
    return ReplyListener.instance;
  }
}

/**
 * One DHCP exchange: requests leave from the machine's own macvlan `iface` (SO_BINDTODEVICE: its MAC on the wire),
 * replies come through the listener on replyIface. Retransmits after 1, 2, 4, 4… s (at most `attempts` sends).
 */
export async function dhcpExchange(iface: string, mac: string, flavour: DhcpFlavour, o: { attempts?: number; replyIface?: string } = {}): Promise<DhcpLease> {
  const listener = await ReplyListener.get(o.replyIface ?? REPLY_IFACE);
  const sock = dgram.createSocket({ type: 'udp4' });
  const macHex = mac.replaceAll(':', '').toLowerCase();
  let xid = (Math.random() * 0xffffffff) >>> 0;
  while (listener.waiters.has(xid)) xid = (xid + 1) >>> 0;
  let waiter: Waiter | null = null;
  listener.waiters.set(xid, (p) => { if (waiter && p.chaddr.subarray(0, 6).toString('hex') === macHex) waiter(p); });
  await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(0, '0.0.0.0', () => resolve()); });
  loadNative().bindToDevice(fdOf(sock), iface);
  sock.setBroadcast(true);
  let retransmits = 0;
  const ask = async (type: 1 | 3, want: number, offer?: { yiaddr: string; serverId: string }) => {
    const data = packet(flavour, mac, type, xid, offer);
    for (let attempt = 0; attempt < (o.attempts ?? 8); attempt++) {
      if (attempt > 0) retransmits++;
      const reply = await new Promise<ReturnType<typeof parseDhcpPacket> | null>((resolve) => {
        const t = setTimeout(() => { waiter = null; resolve(null); }, Math.min(4000, 1000 * 2 ** attempt));
        waiter = (p) => { if (messageType(p) === want || messageType(p) === 6) { clearTimeout(t); waiter = null; resolve(p); } };
        sock.send(data, 67, '255.255.255.255');
      });
      if (reply && messageType(reply) === 6) throw new Error(`DHCP NAK for ${mac}: ${optString(reply, Opt.MESSAGE) ?? ''}`);
      if (reply) return reply;
    }
    throw new Error(`no DHCP ${want === 2 ? 'OFFER' : 'ACK'} for ${mac} (${flavour}) after ${o.attempts ?? 8} sends`);
  };
  try {
    const offer = await ask(1, 2);
    const serverId = optIp(offer, Opt.SERVER_ID) ?? offer.siaddr;
    const ack = await ask(3, 5, { yiaddr: offer.yiaddr, serverId });
    return { yiaddr: ack.yiaddr, siaddr: ack.siaddr, serverId, file: ack.file || optString(ack, Opt.BOOTFILE) || '', retransmits };
  } finally {
    listener.waiters.delete(xid);
    sock.close();
  }
}

let worker: Promise<{ w: import('node:worker_threads').Worker; pending: Map<number, (r: { lease?: DhcpLease; error?: string }) => void> }> | null = null;
let nextId = 0;

/** dhcpExchange on the DHCP thread (dhcp-worker.ts); the herd's machines use this one. */
export async function dhcpExchangeOffThread(iface: string, mac: string, flavour: DhcpFlavour, replyIface = REPLY_IFACE): Promise<DhcpLease> {
  worker ??= (async () => {
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(new URL('./dhcp-worker.mjs', import.meta.url));
    const pending = new Map<number, (r: { lease?: DhcpLease; error?: string }) => void>();
    // referenced only while an exchange is under way: an idle thread must not keep the runner alive
    w.on('message', (r: { id: number; lease?: DhcpLease; error?: string }) => {
      pending.get(r.id)?.(r); pending.delete(r.id);
      if (!pending.size) w.unref();
    });
    w.unref();
    return { w, pending };
  })();
  const { w, pending } = await worker;
  const id = nextId++;
  w.ref();
  const r = await new Promise<{ lease?: DhcpLease; error?: string }>((resolve) => { pending.set(id, resolve); w.postMessage({ id, iface, mac, flavour, replyIface }); });
  if (r.error) throw new Error(r.error);
  return r.lease!;
}
