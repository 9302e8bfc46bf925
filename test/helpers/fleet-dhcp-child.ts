/**
 * One DHCP daemon's lease side, for the several-daemons tests (test/unit/dhcp-fleet.test.ts): its own process and
 * store connection (STORE: a SQLite data directory, or a postgres:// URL), DhcpLeases in
 * full mode on the shared pool, the real request handler and the real group commit (ReplyBatch), fed real DHCP
 * request bytes. Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout:
 *
 *   {"op":"add","mac":M,"type":"discover"}                    a request handled now, its reply held for settle
 *   {"op":"add","mac":M,"type":"request","requested":A,"reboot":true|false}   SELECTING (with our server id) or INIT-REBOOT
 *   {"op":"settle"}                                           → {"replies":[{mac,type,yiaddr,message}],"lost":n,"lostMacs":[…]}
 *   {"op":"run","macs":[…],"burst":k}                          free-running DISCOVER → REQUEST for every MAC, k per burst
 *   {"op":"quit"}
 *
 *   node --import tsx test/helpers/fleet-dhcp-child.ts STORE SERVER_ADDRESS
 */
import { createInterface } from 'node:readline';
import pino from 'pino';
import { Registry } from 'prom-client';
import { openStore } from './fleet-store.ts';
import { DhcpLeases } from '../../server/dhcp/leases.ts';
import { createRequestHandler, type RequestMeta } from '../../server/dhcp/handle.ts';
import { ReplyBatch } from '../../server/dhcp/batch.ts';
import { parseDhcpPacket, messageType, MessageType as T, Opt } from '../../server/dhcp/packet.ts';
import { buildRequest } from './dhcp-packets.ts';

export const FLEET_POOL = { start: '10.90.0.100', end: '10.90.0.129' };

const [storeSpec, serverAddress] = process.argv.slice(2);
const store = openStore(storeSpec);
const leases = new DhcpLeases(store, {
  mode: 'full', pool: FLEET_POOL, poolPrefix: 24, poolUnknown: true, leaseSeconds: 3600, router: null, dns: [],
  exclude: [serverAddress],
});
const handler = createRequestHandler({
  store, leases, log: pino({ level: 'silent' }), registry: new Registry(), mode: 'full', serverPort: 67,
  publicUrlFor: (a) => `http://${a}:8080`,
});
let lostMacs: string[] = [];
const batch = new ReplyBatch<string>(handler, () => { for (const c of leases.flush()) lostMacs.push(c.mac); });
const meta: RequestMeta = { iface: { name: 'fleet0', addresses: [{ address: serverAddress, prefix: 24 }] }, port: 'dhcp', from: { address: '0.0.0.0', port: 68 } };
const names: Record<number, string> = { [T.OFFER]: 'offer', [T.ACK]: 'ack', [T.NAK]: 'nak' };

type Cmd = { op: 'add'; mac: string; type: 'discover' | 'request'; requested?: string; reboot?: boolean } | { op: 'settle' } | { op: 'run'; macs: string[]; burst: number } | { op: 'quit' };

let xid = 1;
function add(c: { mac: string; type: 'discover' | 'request'; requested?: string; reboot?: boolean }): void {
  const bytes = c.type === 'discover'
    ? buildRequest({ mac: c.mac, type: T.DISCOVER, xid: xid++ })
    : buildRequest({ mac: c.mac, type: T.REQUEST, xid: xid++, requested: c.requested, serverId: c.reboot ? undefined : serverAddress });
  batch.add(bytes, meta, c.mac);
}

function settle(): { replies: { mac: string; type: string; yiaddr: string; message: string | null }[]; lost: number; lostMacs: string[] } {
  lostMacs = [];
  const { replies, error } = batch.settle();
  if (error) throw error;
  return {
    lost: lostMacs.length, lostMacs,
    replies: replies.map(({ out, tag }) => {
      const p = parseDhcpPacket(out.data);
      return { mac: tag, type: names[messageType(p) ?? 0] ?? String(messageType(p)), yiaddr: p.yiaddr, message: p.options.get(Opt.MESSAGE)?.toString() ?? null };
    }),
  };
}

const out = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const c = JSON.parse(line) as Cmd;
  try {
    if (c.op === 'add') { add(c); out({ ok: true }); }
    else if (c.op === 'settle') out(settle());
    else if (c.op === 'run') {
      const all: ReturnType<typeof settle>['replies'] = [];
      let lost = 0;
      for (let i = 0; i < c.macs.length; i += c.burst) {
        const group = c.macs.slice(i, i + c.burst);
        for (const mac of group) add({ mac, type: 'discover' });
        const offers = settle();
        lost += offers.lost;
        all.push(...offers.replies);
        for (const r of offers.replies) if (r.type === 'offer') add({ mac: r.mac, type: 'request', requested: r.yiaddr });
        const acks = settle();
        lost += acks.lost;
        all.push(...acks.replies);
      }
      out({ replies: all, lost });
    } else { rl.close(); store.close(); out({ bye: true }); process.exit(0); }
  } catch (err) {
    out({ error: (err as Error).stack ?? String(err) });
  }
});
out({ ready: true, writer: leases.writer });
