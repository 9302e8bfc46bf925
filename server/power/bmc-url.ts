/** A machine's BMC address: `ipmi://host[:port]` (UDP, default 623) or `redfish://host[:port]` (HTTPS, default 443). Pure. */
import { isIP } from 'node:net';

export type BmcProtocol = 'ipmi' | 'redfish';
export interface BmcAddress { protocol: BmcProtocol; host: string; port: number }

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The address, or a sentence saying what is wrong with the URL. */
export function parseBmcUrl(input: string): BmcAddress | string {
  const m = /^([a-z]+):\/\/(\[[0-9A-Fa-f:.]+\]|[^/:?#@\s]+)(?::(\d{1,5}))?\/?$/.exec(input.trim());
  if (!m) return `"${input}" is not a BMC URL: use ipmi://HOST[:PORT] or redfish://HOST[:PORT] (no user, path or query)`;
  const protocol = m[1];
  if (protocol !== 'ipmi' && protocol !== 'redfish') return `"${protocol}" is not a BMC protocol: use ipmi:// (IPMI v2.0 lanplus) or redfish:// (Redfish over HTTPS)`;
  const host = m[2].startsWith('[') ? m[2].slice(1, -1) : m[2];
  if (m[2].startsWith('[') ? isIP(host) !== 6 : !(isIP(host) === 4 || HOSTNAME.test(host))) return `"${m[2]}" is not an IP address or host name`;
  const port = m[3] !== undefined ? Number(m[3]) : protocol === 'ipmi' ? 623 : 443;
  if (port < 1 || port > 65535) return `port ${m[3]} is outside 1–65535`;
  return { protocol, host, port };
}
