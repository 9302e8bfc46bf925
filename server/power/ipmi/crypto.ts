/**
 * RMCP+ cipher suite 3 (pure): RAKP-HMAC-SHA1 key exchange, HMAC-SHA1-96 integrity, AES-CBC-128 confidentiality
 * (IPMI v2.0 sections 13.28–13.32).
 */
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';

export const hmacSha1 = (key: Buffer, ...parts: Buffer[]): Buffer => {
  const h = createHmac('sha1', key);
  for (const p of parts) h.update(p);
  return h.digest();
};

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };

export interface RakpInputs {
  password: Buffer;              // Kuid
  consoleSessionId: number;      // SIDm
  managedSessionId: number;      // SIDc
  consoleRandom: Buffer;         // Rm
  managedRandom: Buffer;         // Rc
  managedGuid: Buffer;           // GUIDc
  role: number;                  // ROLEm as sent in RAKP 1 (privilege | name-only lookup bit)
  username: Buffer;              // UNAMEm
}

/** What RAKP 2 must carry if the BMC knows the same password (13.31). */
export function rakp2Code(i: RakpInputs): Buffer {
  return hmacSha1(i.password, u32(i.consoleSessionId), u32(i.managedSessionId), i.consoleRandom, i.managedRandom, i.managedGuid,
    Buffer.from([i.role, i.username.length]), i.username);
}

/** The console's proof in RAKP 3. */
export function rakp3Code(i: RakpInputs): Buffer {
  return hmacSha1(i.password, i.managedRandom, u32(i.consoleSessionId), Buffer.from([i.role, i.username.length]), i.username);
}

/** Session Integrity Key (Kg = Kuid: no BMC key configured). */
export function sessionIntegrityKey(i: RakpInputs, kg?: Buffer): Buffer {
  return hmacSha1(kg && kg.length ? kg : i.password, i.consoleRandom, i.managedRandom, Buffer.from([i.role, i.username.length]), i.username);
}

/** What RAKP 4 must carry: HMAC-SHA1-96(SIK, Rm | SIDc | GUIDc). */
export function rakp4Code(i: RakpInputs, sik: Buffer): Buffer {
  return hmacSha1(sik, i.consoleRandom, u32(i.managedSessionId), i.managedGuid).subarray(0, 12);
}

export interface SessionKeys { k1: Buffer; k2: Buffer; aesKey: Buffer }

export function deriveKeys(sik: Buffer): SessionKeys {
  const k1 = hmacSha1(sik, Buffer.alloc(20, 0x01));
  const k2 = hmacSha1(sik, Buffer.alloc(20, 0x02));
  return { k1, k2, aesKey: k2.subarray(0, 16) };
}

/** HMAC-SHA1-96 AuthCode of an outgoing or incoming packet. */
export const integrityCode = (k1: Buffer, covered: Buffer): Buffer => hmacSha1(k1, covered).subarray(0, 12);

export function codesEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** AES-CBC-128 payload: IV, then data + pad 1,2,3…n + n, encrypted (13.29). */
export function encryptPayload(aesKey: Buffer, iv: Buffer, data: Buffer): Buffer {
  const padLen = (16 - ((data.length + 1) % 16)) % 16;
  const pad = Buffer.alloc(padLen + 1);
  for (let i = 0; i < padLen; i++) pad[i] = i + 1;
  pad[padLen] = padLen;
  const c = createCipheriv('aes-128-cbc', aesKey, iv);
  c.setAutoPadding(false);
  return Buffer.concat([iv, c.update(Buffer.concat([data, pad])), c.final()]);
}

export function decryptPayload(aesKey: Buffer, payload: Buffer): Buffer {
  if (payload.length < 32 || payload.length % 16 !== 0) throw new Error(`encrypted payload of ${payload.length} bytes is not IV + whole AES blocks`);
  const d = createDecipheriv('aes-128-cbc', aesKey, payload.subarray(0, 16));
  d.setAutoPadding(false);
  const plain = Buffer.concat([d.update(payload.subarray(16)), d.final()]);
  const padLen = plain[plain.length - 1];
  if (padLen > 15 || padLen + 1 > plain.length) throw new Error('bad confidentiality pad length');
  for (let i = 0; i < padLen; i++) if (plain[plain.length - 1 - padLen + i] !== i + 1) throw new Error('bad confidentiality pad bytes');
  return plain.subarray(0, plain.length - 1 - padLen);
}
