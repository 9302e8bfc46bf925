/** IPv4 helpers (pure). */

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`"${ip}" is not an IPv4 address`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function isIpv4(s: string): boolean {
  return /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s);
}

export const prefixToMask = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** 255.255.255.0 → 24; null if the mask is not contiguous. */
export function maskToPrefix(mask: string): number | null {
  const n = ipToInt(mask);
  const inv = ~n >>> 0;
  if ((inv & (inv + 1)) !== 0) return null;
  let bits = 0;
  for (let i = 31; i >= 0; i--) if ((n >>> i) & 1) bits++;
  return bits;
}

export function sameSubnet(a: string, b: string, prefix: number): boolean {
  const m = prefixToMask(prefix);
  return ((ipToInt(a) & m) >>> 0) === ((ipToInt(b) & m) >>> 0);
}

export function networkOf(ip: string, prefix: number): number {
  return (ipToInt(ip) & prefixToMask(prefix)) >>> 0;
}

export function broadcastOf(ip: string, prefix: number): number {
  return (networkOf(ip, prefix) | (~prefixToMask(prefix) >>> 0)) >>> 0;
}
