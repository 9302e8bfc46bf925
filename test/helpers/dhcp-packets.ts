/** DHCP request bytes for tests: a PXE ROM DISCOVER as captured in the lab, and a builder for others. */
import { MAGIC_COOKIE } from '../../server/dhcp/packet.ts';

/** BOOTP header for a client request; options appended by the caller (after the magic cookie). */
export function header(mac = '525400123456', xid = 0x1a2b3c4d, flags = 0, fields: { ciaddr?: string; giaddr?: string; hops?: number } = {}): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 1; b[1] = 1; b[2] = 6; b[3] = fields.hops ?? 0; b.writeUInt32BE(xid >>> 0, 4); b.writeUInt16BE(flags, 10);
  const ip = (s: string, o: number) => s.split('.').forEach((x, i) => { b[o + i] = Number(x); });
  if (fields.ciaddr) ip(fields.ciaddr, 12);
  if (fields.giaddr) ip(fields.giaddr, 24);
  Buffer.from(mac.replaceAll(':', ''), 'hex').copy(b, 28);
  b.writeUInt32BE(MAGIC_COOKIE, 236);
  return b;
}

export const opt = (code: number, bytes: number[] | Buffer | string): Buffer => {
  const v = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes);
  return Buffer.concat([Buffer.from([code, v.length]), v]);
};

/**
 * A PXE BIOS DISCOVER as QEMU's iPXE NIC ROM (iPXE 1.0.0+git-20190125) sends it, in the option layout seen in
 * the lab captures (lab README 3.3): option 60 PXEClient:Arch:00000:UNDI:002001, option 77 raw "iPXE", option
 * 93 = 0, option 94, option 97, option 175 (bus id PCI 1af4:1000 + feature flags), and a parameter request
 * list with 150 and 175 (which made the npm dhcp package crash). Padded to 300 bytes as on the wire.
 */
export function qemuBiosIpxeDiscover(mac = '525400771010', xid = 0x7c1f2e01): Buffer {
  const options = Buffer.concat([
    opt(53, [1]),
    opt(57, [0x05, 0xc0]),
    opt(93, [0, 0]),
    opt(94, [1, 2, 1]),
    opt(60, 'PXEClient:Arch:00000:UNDI:002001'),
    opt(77, 'iPXE'),
    opt(55, [1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 150, 175, 203]),
    opt(175, [0xb1, 0x05, 0x01, 0x1a, 0xf4, 0x10, 0x00, 0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x22, 0x01, 0x01,
      0x13, 0x01, 0x01, 0x14, 0x01, 0x01, 0x11, 0x01, 0x01, 0x27, 0x01, 0x01, 0x19, 0x01, 0x01, 0x29, 0x01, 0x01,
      0x10, 0x01, 0x02, 0x21, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0x12, 0x01, 0x01]),
    opt(61, [1, ...Buffer.from(mac.replaceAll(':', ''), 'hex')]),
    opt(97, [0, ...Buffer.alloc(16, 0x11)]),
    Buffer.from([255]),
  ]);
  const b = Buffer.concat([header(mac, xid, 0), options]);
  return Buffer.concat([b, Buffer.alloc(Math.max(0, 300 - b.length))]);
}

export interface RequestSpec {
  mac: string;
  type: number;
  xid?: number;
  flags?: number;
  ciaddr?: string;
  giaddr?: string;
  requested?: string;
  serverId?: string;
  vendorClass?: string;
  /** raw option 77 bytes (string) */
  userClass?: string;
  arch?: number;
  ipxeEncap?: boolean;
}

/** A client request with the given fields. */
export function buildRequest(s: RequestSpec): Buffer {
  const ipb = (ip: string) => ip.split('.').map(Number);
  const parts = [header(s.mac, s.xid ?? 0x01020304, s.flags ?? 0, { ciaddr: s.ciaddr, giaddr: s.giaddr }), opt(53, [s.type])];
  if (s.requested) parts.push(opt(50, ipb(s.requested)));
  if (s.serverId) parts.push(opt(54, ipb(s.serverId)));
  if (s.vendorClass) parts.push(opt(60, s.vendorClass));
  if (s.userClass) parts.push(opt(77, s.userClass));
  if (s.arch !== undefined) parts.push(opt(93, [s.arch >> 8, s.arch & 255]));
  if (s.ipxeEncap) parts.push(opt(175, [0xb1, 0x05, 0x01, 0x1a, 0xf4, 0x10, 0x00]));
  parts.push(opt(55, [1, 3, 6, 12, 15, 43, 60, 66, 67, 150, 175]), Buffer.from([255]));
  return Buffer.concat(parts);
}
