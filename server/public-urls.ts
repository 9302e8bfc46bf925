/** The URLs ironboot hands out for itself: pure functions of the settings and the bound ports. */
import type { ServeConfig } from './config.ts';

export const httpUrlFor = (address: string, port: number): string => `http://${address.includes(':') ? `[${address}]` : address}:${port}`;

/**
 * ironboot.server= for the agent when HTTPS is on: --public-https-url, else the script's host on the HTTPS port
 * (`httpsPort()` is read per script: the port is known once HTTPS listens).
 */
export function agentUrlFor(config: ServeConfig, httpsPort: () => number): ((scriptBase: string) => string) | null {
  if (!config.tls) return null;
  if (config.publicHttpsUrl) { const u = config.publicHttpsUrl; return () => u; }
  return (base) => {
    let host = config.httpListen.host;
    try { host = new URL(base).hostname; } catch { /* a Host header that is no host: the listen address */ }
    return `https://${host}:${httpsPort()}`;
  };
}

/**
 * Where ironboot's own iPXE (built with HTTPS and the operator's CA) fetches its script, for the interface address a
 * request came in on: the HTTPS side, on the host the plain URL would name. Used by DHCP (on its thread) and TFTP.
 */
export function ipxeHttpsUrlFor(config: ServeConfig, httpPort: number, httpsPort: number): (address: string) => string {
  const agentUrl = agentUrlFor(config, () => httpsPort)!;
  return (address) => agentUrl(config.publicUrl ?? httpUrlFor(address, httpPort));
}
