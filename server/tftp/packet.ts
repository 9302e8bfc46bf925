/**
 * TFTP packets ⇄ objects (RFC 1350, RFC 2347 option extension). Pure: Buffer in, objects out, and back.
 *
 * decodePacket never throws: a datagram that is not a well-formed TFTP packet comes back as
 * `{ op: 'malformed', reason }` so the socket layer can count it, log it at debug and drop it.
 */

export const OPCODE = { rrq: 1, wrq: 2, data: 3, ack: 4, error: 5, oack: 6 } as const;

/** RFC 1350 + RFC 2347 error codes. */
export const TFTP_ERROR = {
  notDefined: 0,
  fileNotFound: 1,
  accessViolation: 2,
  diskFull: 3,
  illegalOperation: 4,
  unknownTransferId: 5,
  fileExists: 6,
  noSuchUser: 7,
  optionsRefused: 8,
} as const;

export type TftpMode = 'octet' | 'netascii';

export interface RequestPacket {
  op: 'rrq' | 'wrq';
  filename: string;
  /** Lower-cased as sent ("octet", "netascii", "mail", …); see parseMode. */
  mode: string;
  /** Option names lower-cased (RFC 2347: case-insensitive); values as sent. Later duplicates are ignored. */
  options: Record<string, string>;
}
export interface DataPacket { op: 'data'; block: number; data: Buffer }
export interface AckPacket { op: 'ack'; block: number }
export interface ErrorPacket { op: 'error'; code: number; message: string }
export interface OackPacket { op: 'oack'; options: Record<string, string> }
export interface MalformedPacket { op: 'malformed'; reason: string }

export type TftpPacket = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;
export type DecodedPacket = TftpPacket | MalformedPacket;

const malformed = (reason: string): MalformedPacket => ({ op: 'malformed', reason });

/** Splits NUL-terminated strings starting at `start`. A trailing run without NUL is returned as `rest`. */
function cstrings(buf: Buffer, start: number): { strings: string[]; rest: number } {
  const strings: string[] = [];
  let pos = start;
  while (pos < buf.length) {
    const end = buf.indexOf(0, pos);
    if (end < 0) return { strings, rest: buf.length - pos };
    // latin1 keeps every byte as one char: no UTF-8 decoding surprises in filenames
    strings.push(buf.toString('latin1', pos, end));
    pos = end + 1;
  }
  return { strings, rest: 0 };
}

function decodeOptions(pairs: string[]): Record<string, string> | MalformedPacket {
  const options: Record<string, string> = {};
  // Some clients pad with extra NULs: an even number of empty strings at the end is tolerated.
  let n = pairs.length;
  while (n > 0 && pairs[n - 1] === '') n--;
  if (n % 2 === 1) {
    // "name\0\0" is an option with an empty value; a lone trailing name without value is dropped
    n = pairs.length === n ? n - 1 : n + 1;
  }
  for (let i = 0; i < n; i += 2) {
    const name = pairs[i].toLowerCase();
    if (name === '') return malformed('empty option name');
    if (name === '__proto__') continue;
    if (!Object.hasOwn(options, name)) options[name] = pairs[i + 1] ?? '';
  }
  return options;
}

export function decodePacket(buf: Buffer): DecodedPacket {
  if (buf.length < 2) return malformed(`${buf.length}-byte datagram is shorter than an opcode`);
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case OPCODE.rrq:
    case OPCODE.wrq: {
      const { strings, rest } = cstrings(buf, 2);
      if (rest > 0) return malformed('request is not NUL-terminated');
      if (strings.length < 2) return malformed('request without filename and mode');
      const [filename, mode, ...pairs] = strings;
      if (filename === '') return malformed('empty filename');
      const options = decodeOptions(pairs);
      if ('op' in options) return options as MalformedPacket;
      return { op: opcode === OPCODE.rrq ? 'rrq' : 'wrq', filename, mode: mode.toLowerCase(), options };
    }
    case OPCODE.data:
      if (buf.length < 4) return malformed('DATA shorter than 4 bytes');
      return { op: 'data', block: buf.readUInt16BE(2), data: buf.subarray(4) };
    case OPCODE.ack:
      // Trailing bytes after the block number are tolerated (some PXE ROMs pad small packets).
      if (buf.length < 4) return malformed('ACK shorter than 4 bytes');
      return { op: 'ack', block: buf.readUInt16BE(2) };
    case OPCODE.error: {
      if (buf.length < 4) return malformed('ERROR shorter than 4 bytes');
      const end = buf.indexOf(0, 4);
      // A missing terminator is tolerated: the message is what is there.
      const message = buf.toString('utf8', 4, end < 0 ? buf.length : end);
      return { op: 'error', code: buf.readUInt16BE(2), message };
    }
    case OPCODE.oack: {
      const { strings, rest } = cstrings(buf, 2);
      if (rest > 0) return malformed('OACK is not NUL-terminated');
      const options = decodeOptions(strings);
      if ('op' in options) return options as MalformedPacket;
      return { op: 'oack', options };
    }
    default:
      return malformed(`unknown opcode ${opcode}`);
  }
}

/** "octet"/"binary" → octet, "netascii"/"ascii" → netascii; anything else (e.g. "mail") → null. */
export function parseMode(mode: string): TftpMode | null {
  const m = mode.toLowerCase();
  if (m === 'octet' || m === 'binary') return 'octet';
  if (m === 'netascii' || m === 'ascii') return 'netascii';
  return null;
}

function encodeStrings(opcode: number, strings: string[]): Buffer {
  const parts = strings.map((s) => Buffer.from(s, 'latin1'));
  const out = Buffer.alloc(2 + parts.reduce((n, p) => n + p.length + 1, 0));
  out.writeUInt16BE(opcode, 0);
  let pos = 2;
  for (const p of parts) {
    p.copy(out, pos);
    pos += p.length + 1; // the NUL is already there (alloc zero-fills)
  }
  return out;
}

const optionList = (options: Record<string, string | number>): string[] =>
  Object.entries(options).flatMap(([k, v]) => [k, String(v)]);

export function encodeRequest(op: 'rrq' | 'wrq', filename: string, mode: string, options: Record<string, string | number> = {}): Buffer {
  return encodeStrings(op === 'rrq' ? OPCODE.rrq : OPCODE.wrq, [filename, mode, ...optionList(options)]);
}

export function encodeOack(options: Record<string, string | number>): Buffer {
  return encodeStrings(OPCODE.oack, optionList(options));
}

export function encodeAck(block: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt16BE(OPCODE.ack, 0);
  out.writeUInt16BE(block & 0xffff, 2);
  return out;
}

/** DATA packet; `block` is taken modulo 65536 (rollover to 0, as tftp-hpa and curl expect). */
export function encodeData(block: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + data.length);
  out.writeUInt16BE(OPCODE.data, 0);
  out.writeUInt16BE(block & 0xffff, 2);
  out.set(data, 4);
  return out;
}

export function encodeError(code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const out = Buffer.alloc(5 + msg.length);
  out.writeUInt16BE(OPCODE.error, 0);
  out.writeUInt16BE(code, 2);
  msg.copy(out, 4);
  return out;
}

/**
 * netascii (RFC 764 as used by RFC 1350): LF → CR LF, CR → CR NUL. Local files use Unix line ends, so a
 * CR LF already in the file becomes CR NUL CR LF (what tftp-hpa's server does too).
 */
export function encodeNetascii(input: Uint8Array): Buffer {
  let extra = 0;
  for (let i = 0; i < input.length; i++) if (input[i] === 0x0a || input[i] === 0x0d) extra++;
  if (extra === 0) return Buffer.from(input);
  const out = Buffer.allocUnsafe(input.length + extra);
  let o = 0;
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (c === 0x0a) { out[o++] = 0x0d; out[o++] = 0x0a; }
    else if (c === 0x0d) { out[o++] = 0x0d; out[o++] = 0x00; }
    else out[o++] = c;
  }
  return out;
}

/** The inverse of encodeNetascii (for clients and tests): CR LF → LF, CR NUL → CR. */
export function decodeNetascii(input: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(input.length);
  let o = 0;
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (c === 0x0d && i + 1 < input.length && (input[i + 1] === 0x0a || input[i + 1] === 0x00)) {
      out[o++] = input[i + 1] === 0x0a ? 0x0a : 0x0d;
      i++;
    } else out[o++] = c;
  }
  return out.subarray(0, o);
}
