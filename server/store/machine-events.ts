import type { Db } from './db.ts';

/** One thing done to a machine (a power action) and how it ended (migrations/*_machine_bmc.sql). */
export interface MachineEvent {
  id: number;
  machineId: number;
  at: string;
  kind: 'power';
  action: string;
  outcome: 'ok' | 'failed';
  message: string | null;
  workflowId: string | null;
  payload: Record<string, unknown>;
}

export type MachineEventInput = Omit<MachineEvent, 'id' | 'at' | 'payload'> & { payload?: Record<string, unknown> };

interface Row {
  id: number; machine_id: number; at: string; kind: string; action: string; outcome: string; message: string | null;
  workflow_id: string | null; payload: string;
}

const fromRow = (r: Row): MachineEvent => ({
  id: r.id, machineId: r.machine_id, at: r.at, kind: r.kind as 'power', action: r.action, outcome: r.outcome as MachineEvent['outcome'],
  message: r.message, workflowId: r.workflow_id, payload: JSON.parse(r.payload),
});

/** The machine_events table: what was done to each machine, newest last. */
export class MachineEventRepository {
  constructor(private db: Db) {}

  append(e: MachineEventInput): MachineEvent {
    const at = new Date().toISOString();
    const { id } = this.db.prepare(`INSERT INTO machine_events (machine_id, at, kind, action, outcome, message, workflow_id, payload)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`).get(e.machineId, at, e.kind, e.action, e.outcome, e.message, e.workflowId, JSON.stringify(e.payload ?? {})) as { id: number };
    return { ...e, id, at, payload: e.payload ?? {} };
  }

  /** The newest `limit` events of a machine, oldest first. */
  list(machineId: number, limit = 100): MachineEvent[] {
    const rows = this.db.prepare('SELECT * FROM machine_events WHERE machine_id = ? ORDER BY id DESC LIMIT ?').all(machineId, limit) as Row[];
    return rows.reverse().map(fromRow);
  }
}
