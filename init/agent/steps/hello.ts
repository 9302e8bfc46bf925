/** Step 4: hello. POST /agent/v1/hello with the MAC, IP and inventory; the answer is the workflow. */
import { Value } from '@sinclair/typebox/value';
import { AGENT_API_PREFIX, WorkflowSpec, type Hello } from '../../../server/agent/api.ts';
import type { AgentConfig } from '../cmdline.ts';
import type { NetInfo } from '../main.ts';
import { postJson, type PostJson } from '../reporter.ts';
import { AGENT_VERSION, sleep } from '../sys.ts';
import { readInventory } from './inventory.ts';

export async function sayHello(cfg: AgentConfig, net: NetInfo, say: (m: string) => void,
  o: { post?: PostJson; deadlineMs?: number; inventory?: Hello['inventory'] } = {}): Promise<WorkflowSpec> {
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
