/**
 * A PXE ROM stand-in for the proxyDHCP test, run inside a client namespace:
 *
 *   node --import tsx test/helpers/dhcp-pxe-client.ts IFACE MAC discover            → offers (JSON) on stdout
 *   node --import tsx test/helpers/dhcp-pxe-client.ts IFACE MAC request SERVER CIADDR → the 4011 ACK (JSON)
 *
 * `discover` broadcasts the captured iPXE-ROM-style PXE BIOS DISCOVER (without the iPXE user class) and
 * collects every OFFER for 2 s, as a PXE ROM does before choosing; `request` sends the PXE boot server
 * REQUEST to SERVER:4011 from CIADDR:68 (PXE spec 2.2.6) and prints the ACK.
 */
import dgram from 'node:dgram';
import { loadNative } from '../../server/dhcp/server.ts';
import { parseDhcpPacket, optIp, optString, decodeSubOptions, Opt, messageType } from '../../server/dhcp/packet.ts';
import { buildRequest } from './dhcp-packets.ts';

const [iface, mac, mode, server, ciaddr] = process.argv.slice(2);
const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
const results: unknown[] = [];
sock.on('message', (msg) => {
  try {
    const p = parseDhcpPacket(msg);
    if (p.op !== 2) return;
    results.push({
      type: messageType(p), yiaddr: p.yiaddr, siaddr: p.siaddr, file: p.file, serverId: optIp(p, Opt.SERVER_ID),
      vendorClass: optString(p, Opt.VENDOR_CLASS),
      pxeDiscoveryControl: p.options.has(Opt.VENDOR_SPECIFIC) ? decodeSubOptions(p.options.get(Opt.VENDOR_SPECIFIC)!).get(6)?.[0] ?? null : null,
    });
  } catch { /* not ours */ }
});
sock.bind(68, mode === 'request' ? ciaddr : '0.0.0.0', () => {
  if (mode !== 'request') {
    const fd = Object.getOwnPropertySymbols(sock).map((s) => (sock as never as Record<symbol, { handle?: { fd?: number } }>)[s]).find((v) => v?.handle?.fd !== undefined)!.handle!.fd!;
    loadNative().bindToDevice(fd, iface);
  }
  sock.setBroadcast(true);
  const pkt = mode === 'request'
    ? buildRequest({ mac, type: 3, xid: 0x4011, ciaddr, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 })
    : buildRequest({ mac, type: 1, xid: 0x6701, flags: 0x8000, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0 });
  sock.send(pkt, mode === 'request' ? 4011 : 67, mode === 'request' ? server : '255.255.255.255');
  setTimeout(() => { process.stdout.write(JSON.stringify(results) + '\n'); sock.close(); }, 2000);
});
