/**
 * The operator's CA (ironboot serve --tls-ca, built into the initramfs as /etc/ironboot/ca.pem): when present,
 * every HTTPS request of the agent (hello, events, the image download: all go through node:https' global agent)
 * verifies the server against it, and only against it (`ca` replaces node's built-in public CAs).
 */
import https from 'node:https';
import { readFileSync } from 'node:fs';

export const CA_FILE = '/etc/ironboot/ca.pem';

/** Installs the CA for every request through https.globalAgent; returns the file used, or null when there is none. */
export function trustOperatorCa(file = CA_FILE, agent: https.Agent = https.globalAgent): string | null {
  let pem: Buffer;
  try { pem = readFileSync(file); } catch { return null; }
  (agent.options as https.AgentOptions).ca = pem;
  return file;
}
