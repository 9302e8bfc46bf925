import type { Db } from './db.ts';

export type AgentTokenKind = 'boot' | 'session';
export type AgentTokenState = 'active' | 'used' | 'superseded';

/** One row of agent_tokens: a token's sha256, never the token. */
export interface AgentTokenRow {
  hash: string;
  workflowId: string;
  kind: AgentTokenKind;
  ip: string | null;
  state: AgentTokenState;
  createdAt: string;
  usedAt: string | null;
}

interface Row { hash: string; workflow_id: string; kind: AgentTokenKind; ip: string | null; state: AgentTokenState; created_at: string; used_at: string | null }

const fromRow = (r: Row): AgentTokenRow => ({
  hash: r.hash, workflowId: r.workflow_id, kind: r.kind, ip: r.ip, state: r.state, createdAt: r.created_at, usedAt: r.used_at,
});

/** The agent_tokens table (migrations/005_agent_tokens.sql). Callers wrap multi-row changes in store.tx. */
export class AgentTokenRepository {
  private readonly getStmt;
  private readonly insertStmt;
  private readonly supersedeStmt;
  private readonly useStmt;

  constructor(db: Db) {
    this.getStmt = db.prepare('SELECT * FROM agent_tokens WHERE hash = ?');
    this.insertStmt = db.prepare(`INSERT INTO agent_tokens (hash, workflow_id, kind, ip, state, created_at)
      VALUES (@hash, @workflowId, @kind, @ip, 'active', @now)`);
    this.supersedeStmt = db.prepare(`UPDATE agent_tokens SET state = 'superseded' WHERE workflow_id = ? AND kind = ? AND state = 'active'`);
    this.useStmt = db.prepare(`UPDATE agent_tokens SET state = 'used', used_at = ? WHERE hash = ? AND state = 'active'`);
  }

  get(hash: string): AgentTokenRow | undefined {
    const r = this.getStmt.get(hash) as Row | undefined;
    return r && fromRow(r);
  }

  insert(t: { hash: string; workflowId: string; kind: AgentTokenKind; ip: string | null }): void {
    this.insertStmt.run({ ...t, now: new Date().toISOString() });
  }

  /** Marks every active token of that kind of the workflow superseded; returns how many. */
  supersede(workflowId: string, kind: AgentTokenKind): number {
    return this.supersedeStmt.run(workflowId, kind).changes;
  }

  /** Marks an active token used; false when it was not active (a race lost to another use). */
  markUsed(hash: string): boolean {
    return this.useStmt.run(new Date().toISOString(), hash).changes > 0;
  }
}
