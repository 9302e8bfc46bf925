/**
 * Option 82, relay agent information (RFC 3046), pure. A relay adds it to a client's request (circuit id = the
 * port the client is on, remote id = the relay or switch); the server echoes the whole option, bytes unchanged, in
 * every reply to that request (RFC 3046 2.2), and the relay strips it before the client sees the reply.
 * A well-formed option is a sequence of sub-options (code, length, data), each at least 1 byte long.
 */

export const RelaySubOpt = { CIRCUIT_ID: 1, REMOTE_ID: 2, LINK_SELECTION: 5, SUBSCRIBER_ID: 6, SERVER_ID_OVERRIDE: 11 } as const;

export interface RelayAgentInfo {
  /** Sub-options in the order the relay sent them. */
  subOptions: { code: number; data: Buffer }[];
  circuitId: Buffer | null;
  remoteId: Buffer | null;
}

export type RelayAgentDecode = { ok: true; info: RelayAgentInfo } | { ok: false; reason: string };

export function decodeRelayAgentInfo(bytes: Buffer): RelayAgentDecode {
  if (bytes.length === 0) return { ok: false, reason: 'option 82 is empty' };
  const subOptions: { code: number; data: Buffer }[] = [];
  let i = 0;
  while (i < bytes.length) {
    if (i + 2 > bytes.length) return { ok: false, reason: `option 82: sub-option ${bytes[i]} at byte ${i} has no length` };
    const code = bytes[i];
    const len = bytes[i + 1];
    if (len === 0) return { ok: false, reason: `option 82: sub-option ${code} has length 0 (RFC 3046: at least 1)` };
    if (i + 2 + len > bytes.length) return { ok: false, reason: `option 82: sub-option ${code} claims ${len} bytes, ${bytes.length - i - 2} left` };
    subOptions.push({ code, data: Buffer.from(bytes.subarray(i + 2, i + 2 + len)) });
    i += 2 + len;
  }
  const find = (c: number) => subOptions.find((s) => s.code === c)?.data ?? null;
  return { ok: true, info: { subOptions, circuitId: find(RelaySubOpt.CIRCUIT_ID), remoteId: find(RelaySubOpt.REMOTE_ID) } };
}

export function encodeRelayAgentInfo(subOptions: { code: number; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of subOptions) {
    if (s.data.length < 1 || s.data.length > 255) throw new RangeError(`option 82 sub-option ${s.code}: ${s.data.length} bytes (1..255)`);
    parts.push(Buffer.from([s.code, s.data.length]), s.data);
  }
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new RangeError(`option 82: ${out.length} bytes (at most 255)`);
  return out;
}

/** Printable form for logs: circuit and remote id as text when printable, else hex. */
export function describeRelayAgentInfo(info: RelayAgentInfo): { circuitId?: string; remoteId?: string } {
  const show = (b: Buffer | null) => (b === null ? undefined : /^[\x20-\x7e]+$/.test(b.toString('latin1')) ? b.toString('latin1') : b.toString('hex'));
  return { circuitId: show(info.circuitId), remoteId: show(info.remoteId) };
}
