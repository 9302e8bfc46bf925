import type { Db } from './db.ts';

/** How much a workflow has stored of what its agent reported (migrations/007_agent_event_delivery.sql). */
export interface AgentEventUsage {
  events: number;
  bytes: number;
  /** The truncation marker was written: later output is dropped. */
  truncated: boolean;
  dropped: number;
}

const SEEN_CHUNK = 64;

/** The agent's own event ids (a retried batch is not written twice) and the per-workflow usage counters. */
export class AgentEventRepository {
  constructor(private db: Db) {}

  /**
   * Which of `ids` this workflow already accepted. Asked SEEN_CHUNK ids at a time, not one by one: on PostgreSQL
   * each statement is a round trip, and an agent's batch carries hundreds of ids. One SQL text per chunk size, so
   * at most SEEN_CHUNK statements are ever prepared.
   */
  seen(workflowId: string, ids: string[]): Set<string> {
    const out = new Set<string>();
    for (let i = 0; i < ids.length; i += SEEN_CHUNK) {
      const chunk = ids.slice(i, i + SEEN_CHUNK);
      const q = this.db.prepare(`SELECT event_id FROM agent_event_ids WHERE workflow_id = ? AND event_id IN (${chunk.map(() => '?').join(', ')})`);
      for (const r of q.all(workflowId, ...chunk) as { event_id: string }[]) out.add(r.event_id);
    }
    return out;
  }

  remember(workflowId: string, id: string): void {
    this.db.prepare('INSERT INTO agent_event_ids (workflow_id, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING').run(workflowId, id);
  }

  usage(workflowId: string): AgentEventUsage {
    const r = this.db.prepare('SELECT events, bytes, truncated, dropped FROM agent_event_usage WHERE workflow_id = ?')
      .get(workflowId) as { events: number; bytes: number; truncated: number; dropped: number } | undefined;
    return r ? { events: r.events, bytes: r.bytes, truncated: r.truncated === 1, dropped: r.dropped } : { events: 0, bytes: 0, truncated: false, dropped: 0 };
  }

  setUsage(workflowId: string, u: AgentEventUsage): void {
    this.db.prepare(`INSERT INTO agent_event_usage (workflow_id, events, bytes, truncated, dropped) VALUES (@w, @e, @b, @t, @d)
      ON CONFLICT (workflow_id) DO UPDATE SET events = @e, bytes = @b, truncated = @t, dropped = @d`)
      .run({ w: workflowId, e: u.events, b: u.bytes, t: u.truncated ? 1 : 0, d: u.dropped });
  }
}
