import type { Db } from './db.ts';

/** boot: a persistent boot of a succeeded workflow (server/http/routes/agent-boot.ts). */
export type EventKind = 'state' | 'progress' | 'log' | 'info' | 'boot';

export interface WorkflowEvent {
  id: number;
  workflowId: string;
  seq: number;
  at: string;
  kind: EventKind;
  state: string | null;
  message: string | null;
  bytesDone: number | null;
  bytesTotal: number | null;
  payload: Record<string, unknown>;
}

export interface EventInput {
  workflowId: string;
  kind: EventKind;
  state?: string | null;
  message?: string | null;
  bytesDone?: number | null;
  bytesTotal?: number | null;
  payload?: Record<string, unknown>;
}

interface Row {
  id: number; workflow_id: string; seq: number; at: string; kind: string; state: string | null; message: string | null;
  bytes_done: number | null; bytes_total: number | null; payload: string;
}

const fromRow = (r: Row): WorkflowEvent => ({
  id: r.id, workflowId: r.workflow_id, seq: r.seq, at: r.at, kind: r.kind as EventKind, state: r.state,
  message: r.message, bytesDone: r.bytes_done, bytesTotal: r.bytes_total, payload: JSON.parse(r.payload),
});

/** The events table: an ordered log per workflow. */
export class EventRepository {
  constructor(private db: Db) {}

  append(e: EventInput): WorkflowEvent {
    const seq = (this.db.prepare('SELECT COALESCE(MAX(seq), 0) + 1 AS s FROM events WHERE workflow_id = ?')
      .get(e.workflowId) as { s: number }).s;
    const ev = {
      workflowId: e.workflowId, seq, at: new Date().toISOString(), kind: e.kind, state: e.state ?? null, message: e.message ?? null,
      bytesDone: e.bytesDone ?? null, bytesTotal: e.bytesTotal ?? null, payload: e.payload ?? {},
    };
    const { id } = this.db.prepare(`INSERT INTO events (workflow_id, seq, at, kind, state, message, bytes_done, bytes_total, payload)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`).get(ev.workflowId, seq, ev.at, ev.kind, ev.state, ev.message, ev.bytesDone,
      ev.bytesTotal, JSON.stringify(ev.payload)) as { id: number };
    return { id, ...ev };
  }

  list(workflowId: string, opts: { afterSeq?: number; limit?: number } = {}): WorkflowEvent[] {
    return (this.db.prepare('SELECT * FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq LIMIT ?')
      .all(workflowId, opts.afterSeq ?? 0, opts.limit ?? 100000) as Row[]).map(fromRow);
  }
}
