/**
 * One RMCP+ (IPMI v2.0 lanplus) session as a state machine, without sockets (pure apart from the random source):
 *
 *   auth-caps ─▶ open-session ─▶ rakp1/2 ─▶ rakp3/4 ─▶ privilege ─▶ active ─▶ closing
 *
 * `next()` gives the datagram to send for the current step; `receive(datagram)` consumes a reply and advances,
 * or throws an IpmiError saying why the BMC refused. Once active, `request()` wraps a command (signed with
 * HMAC-SHA1-96, encrypted with AES-CBC-128) and `response()` unwraps and checks its reply.
 */
import { randomBytes } from 'node:crypto';
import {
  PayloadType, encodeV15, encodeV20, decodePacket, encodeRequest, decodeResponse, encodeOpenSessionRequest,
  decodeOpenSessionResponse, encodeRakp1, decodeRakp2, encodeRakp3, decodeRakp4, RMCP_PLUS_STATUS, COMPLETION_CODES,
  AUTH_ALG_HMAC_SHA1, INTEGRITY_ALG_HMAC_SHA1_96, CONFIDENTIALITY_ALG_AES_CBC_128, Privilege, type IpmiResponse,
} from './packet.ts';
import {
  rakp2Code, rakp3Code, rakp4Code, sessionIntegrityKey, deriveKeys, integrityCode, codesEqual, encryptPayload,
  decryptPayload, type RakpInputs, type SessionKeys,
} from './crypto.ts';

/** `auth`: the BMC refused the credentials (retrying will not help); `protocol`: it answered something unusable. */
export type IpmiErrorKind = 'auth' | 'protocol' | 'timeout' | 'unreachable' | 'command';

export class IpmiError extends Error {
  constructor(readonly kind: IpmiErrorKind, message: string) { super(message); this.name = 'IpmiError'; }
}

export const NetFn = { Chassis: 0x00, App: 0x06 } as const;
export const Cmd = {
  GetChannelAuthCapabilities: 0x38, SetSessionPrivilegeLevel: 0x3b, CloseSession: 0x3c,
  GetChassisStatus: 0x01, ChassisControl: 0x02, SetSystemBootOptions: 0x08, GetSystemBootOptions: 0x09,
} as const;

export type SessionStep = 'auth-caps' | 'open-session' | 'rakp1' | 'rakp3' | 'privilege' | 'active' | 'closed';

export interface SessionCredentials {
  username: string;
  password: string;
  /** Default: administrator (power control needs operator or above). */
  privilege?: Privilege;
  /** BMC key (Kg), if the BMC has one set; default none (Kg = password). */
  kg?: Buffer;
}

const NAME_ONLY_LOOKUP = 0x10;

export class RmcpPlusSession {
  step: SessionStep = 'auth-caps';
  private readonly consoleSessionId: number;
  private managedSessionId = 0;
  private readonly consoleRandom: Buffer;
  private rakp!: RakpInputs;
  private keys!: SessionKeys;
  private outSeq = 1;
  private rqSeq = 1;
  private readonly tag = 0;
  private readonly privilege: Privilege;
  private readonly username: Buffer;
  private readonly password: Buffer;

  constructor(private creds: SessionCredentials, private random: (n: number) => Buffer = randomBytes) {
    this.privilege = creds.privilege ?? Privilege.Administrator;
    this.username = Buffer.from(creds.username, 'utf8');
    this.password = Buffer.from(creds.password, 'utf8');
    if (this.username.length > 16) throw new IpmiError('auth', `IPMI user names are at most 16 bytes; "${creds.username}" has ${this.username.length}`);
    if (this.password.length > 20) throw new IpmiError('auth', `IPMI v2.0 passwords are at most 20 bytes; this one has ${this.password.length}`);
    this.consoleSessionId = (random(4).readUInt32LE(0) | 1) >>> 0; // never 0 (0 is "no session")
    this.consoleRandom = random(16);
  }

  get established(): boolean { return this.step === 'active'; }

  /** The datagram for the current setup step (resend it unchanged when its reply is lost). */
  next(): Buffer {
    switch (this.step) {
      case 'auth-caps':
        // channel 0xE (this one) with bit 7: report IPMI v2.0 extended capabilities; requested privilege
        return encodeV15(encodeRequest({ netFn: NetFn.App, cmd: Cmd.GetChannelAuthCapabilities, seq: 0, data: Buffer.from([0x8e, this.privilege]) }));
      case 'open-session':
        return this.v20Plain(PayloadType.OpenSessionRequest, encodeOpenSessionRequest({ tag: this.tag, privilege: this.privilege, consoleSessionId: this.consoleSessionId }));
      case 'rakp1':
        return this.v20Plain(PayloadType.Rakp1, encodeRakp1({
          tag: this.tag, managedSessionId: this.managedSessionId, consoleRandom: this.consoleRandom,
          role: this.privilege | NAME_ONLY_LOOKUP, username: this.username,
        }));
      case 'rakp3':
        return this.v20Plain(PayloadType.Rakp3, encodeRakp3({ tag: this.tag, status: 0, managedSessionId: this.managedSessionId, keyExchangeCode: rakp3Code(this.rakp) }));
      case 'privilege':
        return this.request(NetFn.App, Cmd.SetSessionPrivilegeLevel, Buffer.from([this.privilege])).packet;
      default:
        throw new Error(`no setup datagram in step ${this.step}`);
    }
  }

  /**
   * Consumes a reply to next(). Returns false for a datagram that is not the awaited reply (a late duplicate):
   * the caller keeps waiting.
   */
  receive(datagram: Buffer): boolean {
    const p = decodePacket(datagram, 12);
    switch (this.step) {
      case 'auth-caps': {
        if (p.version !== 1.5 && p.header.payloadType !== PayloadType.Ipmi) return false;
        const r = decodeResponse(p.payload);
        if (r.cmd !== Cmd.GetChannelAuthCapabilities) return false;
        if (r.completionCode !== 0) throw new IpmiError('protocol', `Get Channel Authentication Capabilities failed: ${ccText(r.completionCode)}`);
        if (r.data.length >= 4 && !(r.data[1] & 0x80)) throw new IpmiError('protocol', 'the BMC does not speak IPMI v2.0 (RMCP+); only IPMI v1.5 LAN is offered');
        this.step = 'open-session';
        return true;
      }
      case 'open-session': {
        if (p.header.payloadType !== PayloadType.OpenSessionResponse) return false;
        const r = decodeOpenSessionResponse(p.payload);
        if (r.consoleSessionId !== this.consoleSessionId) return false;
        if (r.status !== 0) throw new IpmiError(r.status === 0x11 || r.status === 0x04 || r.status === 0x05 || r.status === 0x10 ? 'protocol' : 'auth', `Open Session refused: ${rmcpText(r.status)}`);
        if (r.authAlg !== AUTH_ALG_HMAC_SHA1 || r.integrityAlg !== INTEGRITY_ALG_HMAC_SHA1_96 || r.confidentialityAlg !== CONFIDENTIALITY_ALG_AES_CBC_128) {
          throw new IpmiError('protocol', `the BMC chose algorithms ${r.authAlg}/${r.integrityAlg}/${r.confidentialityAlg}, not cipher suite 3 (1/1/1)`);
        }
        this.managedSessionId = r.managedSessionId;
        this.step = 'rakp1';
        return true;
      }
      case 'rakp1': {
        if (p.header.payloadType !== PayloadType.Rakp2) return false;
        const r = decodeRakp2(p.payload);
        if (r.consoleSessionId !== this.consoleSessionId) return false;
        if (r.status !== 0) throw new IpmiError('auth', `RAKP 2 refused: ${rmcpText(r.status)}`);
        this.rakp = {
          password: this.password, consoleSessionId: this.consoleSessionId, managedSessionId: this.managedSessionId,
          consoleRandom: this.consoleRandom, managedRandom: Buffer.from(r.managedRandom), managedGuid: Buffer.from(r.managedGuid),
          role: this.privilege | NAME_ONLY_LOOKUP, username: this.username,
        };
        if (!codesEqual(r.keyExchangeCode, rakp2Code(this.rakp))) {
          throw new IpmiError('auth', `the BMC's RAKP 2 key exchange code does not match: wrong password for user "${this.creds.username}"`);
        }
        this.step = 'rakp3';
        return true;
      }
      case 'rakp3': {
        if (p.header.payloadType !== PayloadType.Rakp4) return false;
        const r = decodeRakp4(p.payload);
        if (r.consoleSessionId !== this.consoleSessionId) return false;
        if (r.status !== 0) throw new IpmiError('auth', `RAKP 4 refused: ${rmcpText(r.status)}`);
        const sik = sessionIntegrityKey(this.rakp, this.creds.kg);
        if (!codesEqual(r.integrityCheck.subarray(0, 12), rakp4Code(this.rakp, sik))) {
          throw new IpmiError('auth', 'the BMC\'s RAKP 4 integrity check value does not match (wrong BMC key Kg?)');
        }
        this.keys = deriveKeys(sik);
        this.step = 'privilege';
        return true;
      }
      case 'privilege': {
        const r = this.response(datagram);
        if (!r || r.cmd !== Cmd.SetSessionPrivilegeLevel) return false;
        if (r.completionCode !== 0) throw new IpmiError('auth', `the BMC refused privilege level ${this.privilege}: ${ccText(r.completionCode)}`);
        this.step = 'active';
        return true;
      }
      default:
        return false;
    }
  }

  /**
   * Wraps a command in an authenticated, encrypted session packet. A resend passes the first send's `seq` (the IPMI
   * request sequence, so the BMC can tell a retry from a new request); the session sequence always advances.
   */
  request(netFn: number, cmd: number, data: Uint8Array = Buffer.alloc(0), resendOf?: number): { packet: Buffer; seq: number } {
    if (!this.keys) throw new Error('no session keys yet');
    const seq = resendOf ?? this.rqSeq;
    if (resendOf === undefined) this.rqSeq = (this.rqSeq % 63) + 1;
    const msg = encodeRequest({ netFn, cmd, data, seq });
    const payload = encryptPayload(this.keys.aesKey, this.random(16), msg);
    const packet = encodeV20({ encrypted: true, authenticated: true, payloadType: PayloadType.Ipmi, sessionId: this.managedSessionId, sequence: this.outSeq++ },
      payload, (covered) => integrityCode(this.keys.k1, covered));
    return { packet, seq };
  }

  /** Checks and decrypts a session reply; undefined for a datagram of another session or without valid integrity. */
  response(datagram: Buffer): IpmiResponse | undefined {
    const p = decodePacket(datagram, 12);
    if (p.version !== 2.0 || p.header.payloadType !== PayloadType.Ipmi) return undefined;
    if (p.header.sessionId !== this.consoleSessionId) return undefined;
    if (!p.header.authenticated || !p.covered || !p.authCode) throw new IpmiError('protocol', 'the BMC answered inside the session without integrity protection');
    if (!codesEqual(p.authCode, integrityCode(this.keys.k1, p.covered))) return undefined; // forged or corrupted: ignore
    const plain = p.header.encrypted ? decryptPayload(this.keys.aesKey, p.payload) : p.payload;
    return decodeResponse(plain);
  }

  /** Close Session for the active session. */
  close(): Buffer {
    const id = Buffer.alloc(4);
    id.writeUInt32LE(this.managedSessionId >>> 0);
    const { packet } = this.request(NetFn.App, Cmd.CloseSession, id);
    this.step = 'closed';
    return packet;
  }

  private v20Plain(type: PayloadType, payload: Buffer): Buffer {
    return encodeV20({ encrypted: false, authenticated: false, payloadType: type, sessionId: 0, sequence: 0 }, payload);
  }
}

export const rmcpText = (status: number): string => RMCP_PLUS_STATUS[status] ?? `status 0x${status.toString(16)}`;
export const ccText = (cc: number): string => COMPLETION_CODES[cc] ?? `completion code 0x${cc.toString(16)}`;
