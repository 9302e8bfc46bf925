/**
 * Step 4: hello. POST /agent/v1/hello with the MAC, IP and inventory and the boot token from the kernel command
 * line; the answer is the workflow and a session token. The boot token is single-use: from here on cfg.token is
 * the session token (the reporter and the image download read it from there), and it is kept in /run so that an
 * agent respawned after a crash can still report.
 */
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { AGENT_API_PREFIX, WorkflowSpec, type Hello } from '../../../server/agent/api.ts';
import type { AgentConfig } from '../cmdline.ts';
import type { NetInfo } from '../main.ts';
import { postJson, type PostJson } from '../reporter.ts';
import { AGENT_VERSION, PATHS, sleep } from '../sys.ts';

/** Where the session token is kept (tmpfs) for an agent respawned after a crash. */
export const SESSION_FILE = `${dirname(PATHS.stateFile)}/session-token`;

/** The session token a previous run of the agent got, if any. */
export function savedSessionToken(file = SESSION_FILE): string | null {
  try { return readFileSync(file, 'utf8').trim() || null; } catch { return null; }
}
import { readInventory } from './inventory.ts';

export async function sayHello(cfg: AgentConfig, net: NetInfo, say: (m: string) => void,
  o: { post?: PostJson; deadlineMs?: number; inventory?: Hello['inventory']; sessionFile?: string | null } = {}): Promise<WorkflowSpec> {
  const body: Hello = {
    workflowId: cfg.workflowId!, mac: net.mac, ip: net.ip,
    inventory: o.inventory ?? await readInventory(), agentVersion: AGENT_VERSION,
  };
  const url = `${cfg.server}${AGENT_API_PREFIX}/hello`;
  const end = Date.now() + (o.deadlineMs ?? 120_000);
  for (let attempt = 0; ; attempt++) {
    let why: string;
    try {
      const r = await (o.post ?? postJson)(url, cfg.token!, body, 15_000);
      if (r.status >= 200 && r.status < 300) {
        const spec = JSON.parse(r.body) as unknown;
        if (!Value.Check(WorkflowSpec, spec)) {
          const first = [...Value.Errors(WorkflowSpec, spec)][0];
          throw new Error(`the server's workflow does not match the agent API: ${first?.path || '/'} ${first?.message ?? ''}`);
        }
        if (spec.sessionToken) {
          cfg.token = spec.sessionToken;
          const file = o.sessionFile === undefined ? SESSION_FILE : o.sessionFile;
          if (file) {
            try { mkdirSync(dirname(file), { recursive: true }); writeFileSync(file, spec.sessionToken, { mode: 0o600 }); } catch { /* /run not writable: only a respawn loses it */ }
          }
        }
        return spec;
      }
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        throw new Error(`hello refused: HTTP ${r.status} ${r.body.slice(0, 500)}`);
      }
      why = `HTTP ${r.status}`;
    } catch (e) {
      if (/hello refused|does not match/.test((e as Error).message)) throw e;
      why = (e as Error).message;
    }
    if (Date.now() > end) throw new Error(`cannot reach ${url}: ${why}`);
    say(`hello to ${url} failed (${why}); retrying`);
    await sleep(Math.min(5000, 500 * 2 ** attempt));
  }
}
