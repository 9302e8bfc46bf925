/**
 * IPMI over LAN, byte level (pure): RMCP framing, the IPMI v1.5 and v2.0 (RMCP+) session wrappers, IPMI
 * request/response messages and the RMCP+ session-setup payloads (Open Session, RAKP 1–4). Nothing here
 * knows keys or sockets: integrity and confidentiality are applied by session.ts through the hooks below.
 * References: IPMI v2.0 rev 1.1, sections 13.6 (packet formats), 13.17–13.24 (RMCP+ session setup).
 */

export const RMCP_HEADER = Buffer.from([0x06, 0x00, 0xff, 0x07]); // version 6, reserved, no-ACK seq, class IPMI

export const enum PayloadType {
  Ipmi = 0x00,
  OpenSessionRequest = 0x10,
  OpenSessionResponse = 0x11,
  Rakp1 = 0x12,
  Rakp2 = 0x13,
  Rakp3 = 0x14,
  Rakp4 = 0x15,
}

export const AUTH_TYPE_NONE = 0x00;
export const AUTH_TYPE_RMCP_PLUS = 0x06;

export class IpmiDecodeError extends Error {
  constructor(message: string) { super(message); this.name = 'IpmiDecodeError'; }
}

/** Two's-complement checksum of an IPMI message part (13.8). */
export function checksum(b: Uint8Array): number {
  let s = 0;
  for (const x of b) s = (s + x) & 0xff;
  return (0x100 - s) & 0xff;
}

export interface IpmiRequest { netFn: number; cmd: number; data: Uint8Array; seq: number }
export interface IpmiResponse { netFn: number; cmd: number; seq: number; completionCode: number; data: Buffer }

const BMC_ADDR = 0x20;        // responder: the BMC
const CONSOLE_SWID = 0x81;    // requester: remote console software ID

/** An IPMI LAN request message: rsAddr, netFn/LUN, checksum, rqAddr, rqSeq/LUN, cmd, data, checksum. */
export function encodeRequest(r: IpmiRequest): Buffer {
  const head = Buffer.from([BMC_ADDR, (r.netFn << 2) & 0xfc]);
  const body = Buffer.concat([Buffer.from([CONSOLE_SWID, (r.seq << 2) & 0xfc, r.cmd]), Buffer.from(r.data)]);
  return Buffer.concat([head, Buffer.from([checksum(head)]), body, Buffer.from([checksum(body)])]);
}

export function decodeResponse(b: Buffer): IpmiResponse {
  if (b.length < 8) throw new IpmiDecodeError(`IPMI response of ${b.length} bytes is too short`);
  if (checksum(b.subarray(0, 2)) !== b[2]) throw new IpmiDecodeError('IPMI response header checksum mismatch');
  if (checksum(b.subarray(3, b.length - 1)) !== b[b.length - 1]) throw new IpmiDecodeError('IPMI response data checksum mismatch');
  return { netFn: b[1] >> 2, seq: b[4] >> 2, cmd: b[5], completionCode: b[6], data: b.subarray(7, b.length - 1) };
}

/** IPMI v1.5 session wrapper without authentication (used only before a session exists). */
export function encodeV15(message: Buffer): Buffer {
  const h = Buffer.alloc(10);
  h[0] = AUTH_TYPE_NONE; // seq (4) and session id (4) stay 0
  h[9] = message.length;
  return Buffer.concat([RMCP_HEADER, h, message]);
}

export interface V20Header {
  encrypted: boolean;
  authenticated: boolean;
  payloadType: number;
  sessionId: number;
  sequence: number;
}

/**
 * An IPMI v2.0 session packet. `authCode(bytes)` is given everything from the auth type through the next-header
 * byte and returns the integrity AuthCode; it is only called for authenticated packets.
 */
export function encodeV20(h: V20Header, payload: Buffer, authCode?: (covered: Buffer) => Buffer): Buffer {
  const sh = Buffer.alloc(12);
  sh[0] = AUTH_TYPE_RMCP_PLUS;
  sh[1] = (h.encrypted ? 0x80 : 0) | (h.authenticated ? 0x40 : 0) | (h.payloadType & 0x3f);
  sh.writeUInt32LE(h.sessionId >>> 0, 2);
  sh.writeUInt32LE(h.sequence >>> 0, 6);
  sh.writeUInt16LE(payload.length, 10);
  if (!h.authenticated) return Buffer.concat([RMCP_HEADER, sh, payload]);
  if (!authCode) throw new Error('an authenticated packet needs an integrity algorithm');
  const padLen = (4 - ((sh.length + payload.length + 2) % 4)) % 4;
  const trailer = Buffer.concat([Buffer.alloc(padLen, 0xff), Buffer.from([padLen, 0x07])]);
  const covered = Buffer.concat([sh, payload, trailer]);
  return Buffer.concat([RMCP_HEADER, covered, authCode(covered)]);
}

export interface DecodedPacket {
  /** 1.5 (session-less replies) or 2.0 */
  version: 1.5 | 2.0;
  header: V20Header;
  payload: Buffer;
  /** For authenticated 2.0 packets: the bytes the AuthCode covers, and the AuthCode. */
  covered?: Buffer;
  authCode?: Buffer;
}

/** Splits a datagram into header and payload; `authCodeLength` is the integrity algorithm's (12 for HMAC-SHA1-96). */
export function decodePacket(b: Buffer, authCodeLength: number): DecodedPacket {
  if (b.length < 4 || b[0] !== 0x06 || b[3] !== 0x07) throw new IpmiDecodeError('not an RMCP IPMI datagram');
  const s = b.subarray(4);
  if (s.length < 1) throw new IpmiDecodeError('empty IPMI session header');
  if (s[0] !== AUTH_TYPE_RMCP_PLUS) {
    // IPMI v1.5: auth type, seq, session id, [auth code 16 if auth type ≠ none], length, message
    const authLen = s[0] === AUTH_TYPE_NONE ? 0 : 16;
    const lenAt = 9 + authLen;
    if (s.length < lenAt + 1) throw new IpmiDecodeError('truncated IPMI v1.5 session header');
    const len = s[lenAt];
    const payload = s.subarray(lenAt + 1, lenAt + 1 + len);
    if (payload.length !== len) throw new IpmiDecodeError('truncated IPMI v1.5 message');
    return {
      version: 1.5, payload,
      header: { encrypted: false, authenticated: false, payloadType: PayloadType.Ipmi, sessionId: s.readUInt32LE(5), sequence: s.readUInt32LE(1) },
    };
  }
  if (s.length < 12) throw new IpmiDecodeError('truncated IPMI v2.0 session header');
  const header: V20Header = {
    encrypted: (s[1] & 0x80) !== 0, authenticated: (s[1] & 0x40) !== 0, payloadType: s[1] & 0x3f,
    sessionId: s.readUInt32LE(2), sequence: s.readUInt32LE(6),
  };
  const len = s.readUInt16LE(10);
  const payload = s.subarray(12, 12 + len);
  if (payload.length !== len) throw new IpmiDecodeError(`IPMI v2.0 payload is ${payload.length} bytes, header says ${len}`);
  if (!header.authenticated) return { version: 2.0, header, payload };
  const authCode = s.subarray(s.length - authCodeLength);
  const covered = s.subarray(0, s.length - authCodeLength);
  if (covered.length < 12 + len + 2) throw new IpmiDecodeError('authenticated packet without its integrity trailer');
  return { version: 2.0, header, payload, covered, authCode };
}

// -------------------------------------------------------------------------------------------------------------
// RMCP+ session setup payloads (13.17–13.23). Algorithms of cipher suite 3.

export const AUTH_ALG_HMAC_SHA1 = 0x01;
export const INTEGRITY_ALG_HMAC_SHA1_96 = 0x01;
export const CONFIDENTIALITY_ALG_AES_CBC_128 = 0x01;

export const enum Privilege { Callback = 1, User = 2, Operator = 3, Administrator = 4 }

export function encodeOpenSessionRequest(o: { tag: number; privilege: number; consoleSessionId: number }): Buffer {
  const b = Buffer.alloc(32);
  b[0] = o.tag;
  b[1] = o.privilege;
  b.writeUInt32LE(o.consoleSessionId >>> 0, 4);
  const alg = (at: number, type: number, id: number) => { b[at] = type; b[at + 3] = 0x08; b[at + 4] = id; };
  alg(8, 0x00, AUTH_ALG_HMAC_SHA1);
  alg(16, 0x01, INTEGRITY_ALG_HMAC_SHA1_96);
  alg(24, 0x02, CONFIDENTIALITY_ALG_AES_CBC_128);
  return b;
}

export interface OpenSessionResponse {
  tag: number; status: number; privilege: number; consoleSessionId: number; managedSessionId: number;
  authAlg: number; integrityAlg: number; confidentialityAlg: number;
}

export function decodeOpenSessionResponse(b: Buffer): OpenSessionResponse {
  if (b.length < 8) throw new IpmiDecodeError('Open Session response too short');
  const r: OpenSessionResponse = {
    tag: b[0], status: b[1], privilege: b[2], consoleSessionId: b.readUInt32LE(4), managedSessionId: 0,
    authAlg: -1, integrityAlg: -1, confidentialityAlg: -1,
  };
  if (r.status !== 0) return r;
  if (b.length < 36) throw new IpmiDecodeError('Open Session response too short for its algorithms');
  r.managedSessionId = b.readUInt32LE(8);
  r.authAlg = b[16] & 0x3f;
  r.integrityAlg = b[24] & 0x3f;
  r.confidentialityAlg = b[32] & 0x3f;
  return r;
}

export function encodeRakp1(o: { tag: number; managedSessionId: number; consoleRandom: Buffer; role: number; username: Buffer }): Buffer {
  const b = Buffer.alloc(28 + o.username.length);
  b[0] = o.tag;
  b.writeUInt32LE(o.managedSessionId >>> 0, 4);
  o.consoleRandom.copy(b, 8);
  b[24] = o.role;
  b[27] = o.username.length;
  o.username.copy(b, 28);
  return b;
}

export interface Rakp2 { tag: number; status: number; consoleSessionId: number; managedRandom: Buffer; managedGuid: Buffer; keyExchangeCode: Buffer }

export function decodeRakp2(b: Buffer): Rakp2 {
  if (b.length < 8) throw new IpmiDecodeError('RAKP 2 too short');
  const r: Rakp2 = { tag: b[0], status: b[1], consoleSessionId: b.readUInt32LE(4), managedRandom: Buffer.alloc(0), managedGuid: Buffer.alloc(0), keyExchangeCode: Buffer.alloc(0) };
  if (r.status !== 0) return r;
  if (b.length < 40) throw new IpmiDecodeError('RAKP 2 too short for its random number and GUID');
  r.managedRandom = b.subarray(8, 24);
  r.managedGuid = b.subarray(24, 40);
  r.keyExchangeCode = b.subarray(40);
  return r;
}

export function encodeRakp3(o: { tag: number; status: number; managedSessionId: number; keyExchangeCode: Buffer }): Buffer {
  const b = Buffer.alloc(8);
  b[0] = o.tag;
  b[1] = o.status;
  b.writeUInt32LE(o.managedSessionId >>> 0, 4);
  return Buffer.concat([b, o.keyExchangeCode]);
}

export interface Rakp4 { tag: number; status: number; consoleSessionId: number; integrityCheck: Buffer }

export function decodeRakp4(b: Buffer): Rakp4 {
  if (b.length < 8) throw new IpmiDecodeError('RAKP 4 too short');
  return { tag: b[0], status: b[1], consoleSessionId: b.readUInt32LE(4), integrityCheck: b.subarray(8) };
}

/** RMCP+ status codes (table 13-15), for errors an operator can read. */
export const RMCP_PLUS_STATUS: Record<number, string> = {
  0x01: 'insufficient resources to create a session',
  0x02: 'invalid session ID',
  0x03: 'invalid payload type',
  0x04: 'invalid authentication algorithm',
  0x05: 'invalid integrity algorithm',
  0x06: 'no matching authentication payload',
  0x07: 'no matching integrity payload',
  0x08: 'inactive session ID',
  0x09: 'invalid role',
  0x0a: 'unauthorized role or privilege level requested',
  0x0b: 'insufficient resources to create a session at the requested role',
  0x0c: 'invalid name length',
  0x0d: 'unauthorized name (no such user)',
  0x0e: 'unauthorized GUID',
  0x0f: 'invalid integrity check value (wrong password?)',
  0x10: 'invalid confidentiality algorithm',
  0x11: 'no cipher suite match with proposed security algorithms',
  0x12: 'illegal or unrecognized parameter',
};

/** IPMI completion codes (table 5-2) worth naming. */
export const COMPLETION_CODES: Record<number, string> = {
  0xc0: 'node busy', 0xc1: 'invalid command', 0xc3: 'timeout while processing', 0xc7: 'request data length invalid',
  0xc9: 'parameter out of range', 0xcc: 'invalid data field in request', 0xcd: 'command illegal for this sensor or record type',
  0xd4: 'insufficient privilege level', 0xd5: 'command not supported in present state', 0xff: 'unspecified error',
};
