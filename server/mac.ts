/** MAC addresses in any common notation → canonical lower-case colon form. */

const HEX12 = /^[0-9a-f]{12}$/;

export class InvalidMacError extends Error {
  constructor(public input: string) {
    super(`"${input}" is not a MAC address (expected 6 bytes, e.g. 52:54:00:12:34:56, 52-54-00-12-34-56 or 525400123456)`);
    this.name = 'InvalidMacError';
  }
}

/** Accepts colons, dashes, dots (cisco), or no separators; any case. Returns null if not a MAC. */
export function parseMac(input: string): string | null {
  const s = input.trim().toLowerCase();
  let hex: string;
  if (/^([0-9a-f]{1,2}[:-]){5}[0-9a-f]{1,2}$/.test(s)) {
    hex = s.split(/[:-]/).map((p) => p.padStart(2, '0')).join('');
  } else if (/^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/.test(s)) {
    hex = s.replaceAll('.', '');
  } else {
    hex = s;
  }
  if (!HEX12.test(hex)) return null;
  return hex.match(/../g)!.join(':');
}

export function normalizeMac(input: string): string {
  const mac = parseMac(input);
  if (!mac) throw new InvalidMacError(input);
  return mac;
}

/** 52:54:00:12:34:56 → 52-54-00-12-34-56 (iPXE ${mac:hexhyp}, PXELINUX style). */
export function macHyphen(mac: string): string {
  return mac.replaceAll(':', '-');
}

/** MAC from 6 raw bytes. */
export function macFromBytes(b: Uint8Array): string {
  return Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}
