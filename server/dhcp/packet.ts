/**
 * DHCPv4 packets ⇄ objects (RFC 2131/2132), pure.
 *
 * - Every option is kept as raw bytes in `options` (a Map in wire order), unknown ones included.
 * - Pad (0) and End (255) are handled; options after End are ignored, a missing End at the end of the buffer
 *   is tolerated (several ROMs omit it).
 * - Option overload (52): options carried in the `file` and/or `sname` fields are decoded (RFC 2131 §4.1 order:
 *   options field, then file, then sname), and the encoder overloads them when the options do not fit.
 * - RFC 3396: several instances of one option are concatenated on decode; an option longer than 255 bytes is
 *   split into several instances on encode.
 * - Malformed input yields a `DhcpDecodeError` value (decodeDhcpPacket never throws).
 */

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header (236) + magic cookie (4). */
export const HEADER_SIZE = 240;
export const FLAG_BROADCAST = 0x8000;

export const MessageType = {
  DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];
export const messageTypeName = (t: number | null): string =>
  (Object.entries(MessageType).find(([, v]) => v === t)?.[0] ?? (t === null ? 'BOOTP' : `TYPE${t}`)).toLowerCase();

/** Option codes this server reads or writes. Others are kept as bytes under their number. */
export const Opt = {
  PAD: 0, SUBNET_MASK: 1, ROUTER: 3, DNS: 6, HOSTNAME: 12, DOMAIN_NAME: 15, BROADCAST: 28,
  VENDOR_SPECIFIC: 43, REQUESTED_IP: 50, LEASE_TIME: 51, OVERLOAD: 52, MESSAGE_TYPE: 53, SERVER_ID: 54,
  PARAMETER_LIST: 55, MESSAGE: 56, MAX_MESSAGE_SIZE: 57, RENEWAL_TIME: 58, REBINDING_TIME: 59, VENDOR_CLASS: 60,
  CLIENT_ID: 61, TFTP_SERVER: 66, BOOTFILE: 67, USER_CLASS: 77, CLIENT_ARCH: 93, CLIENT_NDI: 94, UUID_GUID: 97,
  RELAY_AGENT: 82, IPXE_ENCAP: 175, END: 255,
} as const;

/** Sub-options of the iPXE encapsulated option 175. */
export const IpxeOpt = { BUS_ID: 177, NO_PXEDHCP: 176, FEATURE_HTTPS: 0x14 } as const;
/** Sub-options of the PXE vendor option 43. */
export const PxeOpt = { DISCOVERY_CONTROL: 6, BOOT_SERVERS: 8, BOOT_MENU: 9, MENU_PROMPT: 10, BOOT_ITEM: 71 } as const;

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** 16 bytes as on the wire. */
  chaddr: Buffer;
  /** Server host name field (empty when overloaded with options). */
  sname: string;
  /** Boot file name field (empty when overloaded with options). */
  file: string;
  /** Options in wire order, each the concatenation of all its instances (RFC 3396), raw bytes. */
  options: Map<number, Buffer>;
}

export type DecodeErrorReason =
  | 'too-short' | 'bad-cookie' | 'bad-op' | 'option-truncated' | 'bad-overload' | 'bad-hlen';

export class DhcpDecodeError extends Error {
  constructor(readonly reason: DecodeErrorReason, message: string) {
    super(message);
    this.name = 'DhcpDecodeError';
  }
}

export type DecodeResult = { ok: true; packet: DhcpPacket } | { ok: false; error: DhcpDecodeError };

const ip4 = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString('latin1');
}

/**
 * Walks one options area, appending instances to `into`. Returns false when the End option was seen.
 * Throws DhcpDecodeError (caught by decodeDhcpPacket) on a length that runs past the area.
 */
function readOptionArea(area: Buffer, into: Map<number, Buffer[]>, where: string): void {
  let i = 0;
  while (i < area.length) {
    const code = area[i];
    if (code === Opt.PAD) { i++; continue; }
    if (code === Opt.END) return;
    if (i + 1 >= area.length) throw new DhcpDecodeError('option-truncated', `option ${code} in ${where} has no length byte`);
    const len = area[i + 1];
    if (i + 2 + len > area.length) {
      throw new DhcpDecodeError('option-truncated', `option ${code} in ${where} claims ${len} bytes, ${area.length - i - 2} left`);
    }
    const list = into.get(code);
    const value = area.subarray(i + 2, i + 2 + len);
    if (list) list.push(value); else into.set(code, [value]);
    i += 2 + len;
  }
}

/** Bytes → packet, or a DhcpDecodeError value saying what is wrong. Never throws. */
export function decodeDhcpPacket(buf: Buffer): DecodeResult {
  try {
    return { ok: true, packet: parse(buf) };
  } catch (err) {
    if (err instanceof DhcpDecodeError) return { ok: false, error: err };
    return { ok: false, error: new DhcpDecodeError('too-short', `undecodable packet: ${(err as Error).message}`) };
  }
}

/** Like decodeDhcpPacket, but throws the DhcpDecodeError. */
export function parseDhcpPacket(buf: Buffer): DhcpPacket {
  const r = decodeDhcpPacket(buf);
  if (!r.ok) throw r.error;
  return r.packet;
}

function parse(buf: Buffer): DhcpPacket {
  if (buf.length < HEADER_SIZE) throw new DhcpDecodeError('too-short', `${buf.length} bytes, a DHCP packet has at least ${HEADER_SIZE}`);
  const op = buf[0];
  if (op !== BOOTREQUEST && op !== BOOTREPLY) throw new DhcpDecodeError('bad-op', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`);
  if (buf[2] > 16) throw new DhcpDecodeError('bad-hlen', `hardware address length ${buf[2]} > 16`);
  if (buf.readUInt32BE(236) !== MAGIC_COOKIE) throw new DhcpDecodeError('bad-cookie', 'no DHCP magic cookie (plain BOOTP is not served)');
  const instances = new Map<number, Buffer[]>();
  readOptionArea(buf.subarray(HEADER_SIZE), instances, 'options');
  let sname = buf.subarray(44, 108);
  let file = buf.subarray(108, 236);
  const overload = instances.get(Opt.OVERLOAD);
  let snameText = cString(sname);
  let fileText = cString(file);
  if (overload) {
    const v = overload[0];
    if (v.length !== 1 || v[0] < 1 || v[0] > 3) throw new DhcpDecodeError('bad-overload', `option 52 value ${v.toString('hex')} is not 1, 2 or 3`);
    if (v[0] & 1) { readOptionArea(file, instances, 'file'); fileText = ''; }
    if (v[0] & 2) { readOptionArea(sname, instances, 'sname'); snameText = ''; }
  }
  const options = new Map<number, Buffer>();
  for (const [code, parts] of instances) {
    if (code === Opt.OVERLOAD) continue;
    options.set(code, parts.length === 1 ? Buffer.from(parts[0]) : Buffer.concat(parts));
  }
  return {
    op, htype: buf[1], hlen: buf[2], hops: buf[3],
    xid: buf.readUInt32BE(4), secs: buf.readUInt16BE(8), flags: buf.readUInt16BE(10),
    ciaddr: ip4(buf, 12), yiaddr: ip4(buf, 16), siaddr: ip4(buf, 20), giaddr: ip4(buf, 24),
    chaddr: Buffer.from(buf.subarray(28, 44)),
    sname: snameText, file: fileText, options,
  };
}

export class DhcpEncodeError extends Error {
  constructor(message: string) { super(message); this.name = 'DhcpEncodeError'; }
}

function writeIp(b: Buffer, o: number, ip: string): void {
  const p = ip.split('.');
  for (let i = 0; i < 4; i++) b[o + i] = Number(p[i]) & 255;
}

/** One option as wire instances: code,len,value; split in 255-byte pieces (RFC 3396). */
function optionChunks(code: number, value: Buffer): Buffer[] {
  if (value.length === 0) return [Buffer.from([code, 0])];
  const out: Buffer[] = [];
  for (let o = 0; o < value.length; o += 255) {
    const piece = value.subarray(o, Math.min(o + 255, value.length));
    out.push(Buffer.concat([Buffer.from([code, piece.length]), piece]));
  }
  return out;
}

export interface EncodeOptions {
  /** Largest datagram the client accepts (option 57, at least 576). Default 576. */
  maxSize?: number;
}

/** Codes written first, in this order (53 must come first for some clients; 54 right after). */
const FIRST = [Opt.MESSAGE_TYPE, Opt.SERVER_ID];

/**
 * Packet → bytes. Options go into the options field; when they do not fit in maxSize they overflow into the
 * file and then sname fields (option 52) if those are empty. Throws DhcpEncodeError if they still do not fit
 * (a bug of the caller, not of the peer).
 */
export function encodeDhcpPacket(p: DhcpPacket, opts: EncodeOptions = {}): Buffer {
  const maxSize = Math.max(576, Math.min(opts.maxSize ?? 576, 1472)) - 28; // minus IP + UDP headers
  const chunks: Buffer[] = [];
  const order = [...FIRST.filter((c) => p.options.has(c)), ...[...p.options.keys()].filter((c) => !FIRST.includes(c as 53))];
  for (const code of order) {
    if (code === Opt.PAD || code === Opt.END || code === Opt.OVERLOAD) continue;
    chunks.push(...optionChunks(code, p.options.get(code)!));
  }
  const mainBudget = Math.max(maxSize - HEADER_SIZE, 64);
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const areas: { main: Buffer[]; file: Buffer[]; sname: Buffer[] } = { main: [], file: [], sname: [] };
  let overload = 0;
  if (total + 1 <= mainBudget) {
    areas.main = chunks;
  } else {
    // Keep 3 bytes for option 52 and 1 for End in the main area; file and sname each need 1 for End.
    const fits: [keyof typeof areas, number, number][] = [['main', mainBudget - 4, 0]];
    if (!p.file) fits.push(['file', 127, 1]);
    if (!p.sname) fits.push(['sname', 63, 2]);
    let k = 0;
    let used = 0;
    for (const c of chunks) {
      while (k < fits.length && used + c.length > fits[k][1]) { k++; used = 0; }
      if (k >= fits.length) throw new DhcpEncodeError(`options (${total} bytes) do not fit in a ${maxSize + 28}-byte datagram`);
      areas[fits[k][0]].push(c);
      overload |= fits[k][2];
      used += c.length;
    }
  }
  const mainLen = areas.main.reduce((n, c) => n + c.length, 0) + (overload ? 3 : 0) + 1;
  const size = Math.max(300, HEADER_SIZE + mainLen); // BOOTP minimum of 300 bytes; some relays insist
  const b = Buffer.alloc(size);
  b[0] = p.op; b[1] = p.htype; b[2] = p.hlen; b[3] = p.hops;
  b.writeUInt32BE(p.xid >>> 0, 4); b.writeUInt16BE(p.secs & 0xffff, 8); b.writeUInt16BE(p.flags & 0xffff, 10);
  writeIp(b, 12, p.ciaddr); writeIp(b, 16, p.yiaddr); writeIp(b, 20, p.siaddr); writeIp(b, 24, p.giaddr);
  p.chaddr.copy(b, 28, 0, Math.min(16, p.chaddr.length));
  const writeArea = (start: number, len: number, list: Buffer[]): void => {
    let o = start;
    for (const c of list) { c.copy(b, o); o += c.length; }
    b[o] = Opt.END;
    if (o + 1 > start + len) throw new DhcpEncodeError('internal: option area overflow');
  };
  if (overload & 2) writeArea(44, 64, areas.sname);
  else if (p.sname) { const s = Buffer.from(p.sname, 'latin1'); if (s.length > 63) throw new DhcpEncodeError('sname longer than 63 bytes'); s.copy(b, 44); }
  if (overload & 1) writeArea(108, 128, areas.file);
  else if (p.file) { const f = Buffer.from(p.file, 'latin1'); if (f.length > 127) throw new DhcpEncodeError('file longer than 127 bytes'); f.copy(b, 108); }
  b.writeUInt32BE(MAGIC_COOKIE, 236);
  let o = HEADER_SIZE;
  if (overload) { b[o++] = Opt.OVERLOAD; b[o++] = 1; b[o++] = overload; }
  for (const c of areas.main) { c.copy(b, o); o += c.length; }
  b[o] = Opt.END;
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// Option value helpers

/** Sub-options of an encapsulated option (43, 175): code,len,value… with Pad/End. Truncated tail ignored. */
export function decodeSubOptions(value: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let i = 0;
  while (i < value.length) {
    const code = value[i];
    if (code === 0) { i++; continue; }
    if (code === 255) break;
    if (i + 1 >= value.length) break;
    const len = value[i + 1];
    if (i + 2 + len > value.length) break;
    const v = value.subarray(i + 2, i + 2 + len);
    const prev = out.get(code);
    out.set(code, prev ? Buffer.concat([prev, v]) : Buffer.from(v));
    i += 2 + len;
  }
  return out;
}

/** Map of sub-options → encapsulated option value, terminated with End (255) as PXE and iPXE expect. */
export function encodeSubOptions(subs: Map<number, Buffer> | [number, Buffer | number[]][]): Buffer {
  const parts: Buffer[] = [];
  for (const [code, v] of subs instanceof Map ? [...subs] : subs) {
    const val = Buffer.isBuffer(v) ? v : Buffer.from(v);
    if (val.length > 255) throw new DhcpEncodeError(`sub-option ${code} longer than 255 bytes`);
    parts.push(Buffer.from([code, val.length]), val);
  }
  parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

export const ipBytes = (ip: string): Buffer => { const b = Buffer.alloc(4); writeIp(b, 0, ip); return b; };
export const ipListBytes = (ips: string[]): Buffer => Buffer.concat(ips.map(ipBytes));
export const u32Bytes = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
export const u16Bytes = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n & 0xffff); return b; };

export function optIp(p: DhcpPacket, code: number): string | null {
  const v = p.options.get(code);
  return v && v.length >= 4 ? ip4(v, 0) : null;
}
export function optString(p: DhcpPacket, code: number): string | null {
  const v = p.options.get(code);
  return v ? v.toString('latin1').replace(/\0+$/, '') : null;
}
export function optU16(p: DhcpPacket, code: number): number | null {
  const v = p.options.get(code);
  return v && v.length >= 2 ? v.readUInt16BE(0) : null;
}
export function optU32(p: DhcpPacket, code: number): number | null {
  const v = p.options.get(code);
  return v && v.length >= 4 ? v.readUInt32BE(0) : null;
}
/** Option 53, or null for a BOOTP packet without it. */
export function messageType(p: DhcpPacket): number | null {
  const v = p.options.get(Opt.MESSAGE_TYPE);
  return v && v.length >= 1 ? v[0] : null;
}
/** Option 93 (RFC 4578): the list of client architecture types (first is the one that matters). */
export function clientArches(p: DhcpPacket): number[] {
  const v = p.options.get(Opt.CLIENT_ARCH);
  if (!v) return [];
  const out: number[] = [];
  for (let i = 0; i + 1 < v.length; i += 2) out.push(v.readUInt16BE(i));
  return out;
}

/**
 * Option 77 as a list of user classes. RFC 3004 encodes each as len,bytes; iPXE and many ROMs send a single
 * raw string ("iPXE") instead. Both are understood: when the RFC 3004 reading does not consume the value
 * exactly, the value is taken as one raw class.
 */
export function userClasses(p: DhcpPacket): string[] {
  const v = p.options.get(Opt.USER_CLASS);
  if (!v || v.length === 0) return [];
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    const len = v[i];
    if (len === 0 || i + 1 + len > v.length) return [v.toString('latin1')];
    out.push(v.subarray(i + 1, i + 1 + len).toString('latin1'));
    i += 1 + len;
  }
  return [v.toString('latin1'), ...out].filter((s, k, all) => all.indexOf(s) === k);
}

/** Client MAC from chaddr (Ethernet), or null for other hardware types. */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
export function clientMac(p: DhcpPacket): string | null {
  if (p.htype !== 1 || p.hlen !== 6) return null;
  const c = p.chaddr;
  return `${HEX[c[0]]}:${HEX[c[1]]}:${HEX[c[2]]}:${HEX[c[3]]}:${HEX[c[4]]}:${HEX[c[5]]}`;
}

/** The client's largest acceptable datagram (option 57), if it sent one. */
export function maxMessageSize(p: DhcpPacket): number | undefined {
  const v = optU16(p, Opt.MAX_MESSAGE_SIZE);
  return v !== null && v >= 576 ? v : undefined;
}

/** A blank reply to a request: op, xid, flags, giaddr and chaddr copied, no options. */
export function replySkeleton(req: DhcpPacket): DhcpPacket {
  return {
    op: BOOTREPLY, htype: req.htype, hlen: req.hlen, hops: 0, xid: req.xid, secs: 0, flags: req.flags,
    ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: req.giaddr,
    chaddr: Buffer.from(req.chaddr), sname: '', file: '', options: new Map(),
  };
}
