import type { Db } from './db.ts';
import { dialectOf } from './sql.ts';
import type { WorkflowState } from '../workflows/states.ts';

export type AfterAction = 'shell' | 'reboot' | 'poweroff' | 'wait';

/** What a workflow leaves on its machine (migrations/003_workflow_mode.sql). */
export type WorkflowMode = 'ephemeral' | 'persistent' | 'install';
export const WORKFLOW_MODES: readonly WorkflowMode[] = ['ephemeral', 'persistent', 'install'];

export interface Workflow {
  id: string;
  machineId: number;
  machineMac: string;
  imageId: string;
  entrypoint: string[] | null;
  args: string[] | null;
  env: Record<string, string>;
  kernelArgs: string;
  target: string;
  after: AfterAction;
  mode: WorkflowMode;
  /** The daemon sets next boot to PXE and power-cycles the machine through its BMC (migrations/*_machine_bmc.sql). */
  powerCycle?: boolean;
  /** The agent may overwrite a target holding a partition table or filesystem. */
  wipe?: boolean;
  /** Checks of the target disk before anything is written (null: none). */
  targetSerial?: string | null;
  targetSize?: number | null;
  /** Unused since migrations/*_agent_tokens.sql (always empty): agent tokens live hashed in agent_tokens (server/workflows/tokens.ts). */
  token: string;
  state: WorkflowState;
  reason: string | null;
  exitCode: number | null;
  timeoutSeconds: number;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface WorkflowInput {
  id: string;
  machineId: number;
  imageId: string;
  entrypoint?: string[] | null;
  args?: string[] | null;
  env?: Record<string, string>;
  kernelArgs?: string;
  target: string;
  after: AfterAction;
  mode?: WorkflowMode;
  powerCycle?: boolean;
  wipe?: boolean;
  targetSerial?: string | null;
  targetSize?: number | null;
  token: string;
  timeoutSeconds?: number;
}

interface Row {
  id: string; machine_id: number; mac: string; image_id: string; entrypoint: string | null; args: string | null;
  env: string; kernel_args: string; target: string; after: string; mode: string; power_cycle: number; token: string; state: string;
  reason: string | null; exit_code: number | null; timeout_seconds: number; created_at: string; updated_at: string;
  started_at: string | null; finished_at: string | null;
  wipe: number; target_serial: string | null; target_size: number | null;
}

function fromRow(r: Row): Workflow {
  return {
    id: r.id, machineId: r.machine_id, machineMac: r.mac, imageId: r.image_id,
    entrypoint: r.entrypoint ? JSON.parse(r.entrypoint) : null, args: r.args ? JSON.parse(r.args) : null,
    env: JSON.parse(r.env), kernelArgs: r.kernel_args, target: r.target, after: r.after as AfterAction, mode: r.mode as WorkflowMode, powerCycle: r.power_cycle === 1,
    wipe: r.wipe === 1, targetSerial: r.target_serial, targetSize: r.target_size,
    token: r.token, state: r.state as WorkflowState, reason: r.reason, exitCode: r.exit_code,
    timeoutSeconds: r.timeout_seconds, createdAt: r.created_at, updatedAt: r.updated_at,
    startedAt: r.started_at, finishedAt: r.finished_at,
  };
}

const SELECT = 'SELECT w.*, m.mac AS mac FROM workflows w JOIN machines m ON m.id = w.machine_id';
const ACTIVE = "w.state NOT IN ('succeeded','failed','timed-out','cancelled')";

/** The workflows table. State changes go through WorkflowService, which also records events. */
export class WorkflowRepository {
  private readonly latestSql: string;

  constructor(private db: Db) {
    // two workflows of a machine created in the same millisecond (a retry right after a cancel): SQLite orders them
    // by rowid; PostgreSQL tables have none, so by their first event (appended in the creating transaction)
    this.latestSql = dialectOf(db) === 'postgres'
      ? `${SELECT} WHERE w.machine_id = ? ORDER BY w.created_at DESC, (SELECT MIN(e.id) FROM events e WHERE e.workflow_id = w.id) DESC NULLS LAST, w.id DESC LIMIT 1`
      : `${SELECT} WHERE w.machine_id = ? ORDER BY w.created_at DESC, w.rowid DESC LIMIT 1`;
  }

  get(id: string): Workflow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE w.id = ?`).get(id) as Row | undefined;
    return r && fromRow(r);
  }

  list(filter: { machineId?: number; state?: WorkflowState } = {}): Workflow[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.machineId !== undefined) { where.push('w.machine_id = ?'); params.push(filter.machineId); }
    if (filter.state !== undefined) { where.push('w.state = ?'); params.push(filter.state); }
    const sql = `${SELECT}${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY w.created_at, w.id`;
    return (this.db.prepare(sql).all(...params) as Row[]).map(fromRow);
  }

  activeForMachine(machineId: number): Workflow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE w.machine_id = ? AND ${ACTIVE}`).get(machineId) as Row | undefined;
    return r && fromRow(r);
  }

  /** The most recent workflow of a machine, active or not. */
  latestForMachine(machineId: number): Workflow | undefined {
    const r = this.db.prepare(this.latestSql).get(machineId) as Row | undefined;
    return r && fromRow(r);
  }

  listActive(): Workflow[] {
    return (this.db.prepare(`${SELECT} WHERE ${ACTIVE}`).all() as Row[]).map(fromRow);
  }

  countForMachine(machineId: number): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM workflows WHERE machine_id = ?').get(machineId) as { n: number }).n;
  }

  insert(w: WorkflowInput): Workflow {
    const now = new Date().toISOString();
    this.db.prepare(`INSERT INTO workflows (id, machine_id, image_id, entrypoint, args, env, kernel_args, target, after, mode,
      power_cycle, token, state, timeout_seconds, created_at, updated_at, wipe, target_serial, target_size) VALUES (@id, @machineId, @imageId, @entrypoint, @args, @env,
      @kernelArgs, @target, @after, @mode, @powerCycle, @token, 'pending', @timeoutSeconds, @now, @now, @wipe, @targetSerial, @targetSize)`).run({
      wipe: w.wipe ? 1 : 0, targetSerial: w.targetSerial ?? null, targetSize: w.targetSize ?? null,
      id: w.id, machineId: w.machineId, imageId: w.imageId,
      entrypoint: w.entrypoint ? JSON.stringify(w.entrypoint) : null, args: w.args ? JSON.stringify(w.args) : null,
      env: JSON.stringify(w.env ?? {}), kernelArgs: w.kernelArgs ?? '', target: w.target, after: w.after, mode: w.mode ?? 'ephemeral', powerCycle: w.powerCycle ? 1 : 0,
      token: w.token, timeoutSeconds: w.timeoutSeconds ?? 3600, now,
    });
    return this.get(w.id)!;
  }

  /** Persistent boot (migrations/006_persistent_boot.sql): the sha256 of the token the agent writes into the disk's marker. */
  setBootTokenSha256(id: string, sha256: string): void {
    this.db.prepare('UPDATE workflows SET boot_token_sha256 = ? WHERE id = ?').run(sha256, id);
  }

  bootTokenSha256(id: string): string | null {
    return (this.db.prepare('SELECT boot_token_sha256 AS h FROM workflows WHERE id = ?').get(id) as { h: string | null } | undefined)?.h ?? null;
  }

  /** Counts one more persistent boot; returns its number (1 for the first boot after provisioning). */
  countBoot(id: string): number {
    return (this.db.prepare('UPDATE workflows SET boots = boots + 1 WHERE id = ? RETURNING boots').get(id) as { boots: number }).boots;
  }

  /**
   * Sets the state. With `expected`, a compare-and-set: the row changes only while its state is still `expected`
   * (PostgreSQL re-checks the condition on the row as committed by a concurrent writer), so of two daemons moving
   * one workflow from the state they both read, one wins. Returns the workflow as changed (RETURNING: no second
   * read), or null when no row changed.
   */
  setState(id: string, state: WorkflowState, fields: { reason?: string | null; exitCode?: number | null; final?: boolean; started?: boolean; expected?: WorkflowState } = {}): Workflow | null {
    const now = new Date().toISOString();
    const sql = `UPDATE workflows SET state = @state, updated_at = @now,
      reason = CASE WHEN @setReason = 1 THEN @reason ELSE reason END,
      exit_code = CASE WHEN @setExit = 1 THEN @exitCode ELSE exit_code END,
      started_at = CASE WHEN @started = 1 AND started_at IS NULL THEN @now ELSE started_at END,
      finished_at = CASE WHEN @final = 1 THEN @now ELSE finished_at END
      WHERE id = @id`;
    const returning = ' RETURNING *, (SELECT m.mac FROM machines m WHERE m.id = machine_id) AS mac';
    const expected = fields.expected !== undefined ? { expected: fields.expected } : {};
    const r = this.db.prepare(`${fields.expected !== undefined ? `${sql} AND state = @expected` : sql}${returning}`).get({
      id, state, now, ...expected,
      setReason: fields.reason !== undefined ? 1 : 0, reason: fields.reason ?? null,
      setExit: fields.exitCode !== undefined ? 1 : 0, exitCode: fields.exitCode ?? null,
      started: fields.started ? 1 : 0, final: fields.final ? 1 : 0,
    }) as Row | undefined;
    return r ? fromRow(r) : null;
  }
}
