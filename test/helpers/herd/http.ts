/** HTTP for the herd: every request leaves from the machine's own address (an http.Agent per boot stage). */
import http from 'node:http';
import { createHash } from 'node:crypto';
import type { PostJson } from '../../../init/agent/reporter.ts';

export const machineAgent = (localAddress: string, keepAlive: boolean): http.Agent =>
  new http.Agent({ keepAlive, maxSockets: keepAlive ? 1 : 8, localAddress } as http.AgentOptions);

export interface GetResult { status: number; bytes: number; sha256: string; body: Buffer | null; headers: http.IncomingHttpHeaders }

/** GET url; the body is hashed as it arrives and kept only when `keep` (scripts), else discarded. */
export function httpGet(url: string, agent: http.Agent, o: { keep?: boolean; onData?: (n: number) => void; timeoutMs?: number; token?: string } = {}): Promise<GetResult> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: o.token ? { authorization: `Bearer ${o.token}` } : {} }, (res) => {
      const hash = createHash('sha256');
      const kept: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => { hash.update(c); bytes += c.length; if (o.keep) kept.push(c); o.onData?.(bytes); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest('hex'), body: o.keep ? Buffer.concat(kept) : null, headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(o.timeoutMs ?? 60_000, () => req.destroy(new Error(`GET ${url}: no data for ${o.timeoutMs ?? 60_000} ms`)));
    req.on('error', reject);
  });
}

/** init/agent/reporter.ts's postJson, but from the machine's address (the agent's own sends from its only one). */
export function postJsonFrom(agent: http.Agent): PostJson {
  return (url, token, body, timeoutMs) => new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(url, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': data.length, authorization: `Bearer ${token}` },
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}
