import { EventEmitter } from 'node:events';
import { Counter, type Registry } from 'prom-client';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Store } from '../store/index.ts';
import type { Workflow, AfterAction, WorkflowMode } from '../store/workflows.ts';
import type { WorkflowEvent, EventInput } from '../store/events.ts';
import { canTransition, isFinal, type WorkflowState } from './states.ts';
import type { BootDiskService } from '../images/bootable.ts';
import { diskLayout, SECTOR } from '../images/bootable.ts';

export class WorkflowError extends Error {
  constructor(public status: 400 | 404 | 409, public field: string | null, message: string) {
    super(message);
    this.name = 'WorkflowError';
  }
}

export interface CreateWorkflowInput {
  mac: string;                 // canonical
  image: string;               // id or name
  target: string;
  after?: AfterAction;
  mode?: WorkflowMode;
  entrypoint?: string[];
  args?: string[];
  env?: Record<string, string>;
  kernelArgs?: string;
  timeoutSeconds?: number;
  /** Set next boot to PXE and power-cycle the machine through its BMC (server/power/service.ts does it). */
  powerCycle?: boolean;
  wipe?: boolean;
  targetSerial?: string;
  targetSize?: number;
}

/**
 * Group commit (see WorkflowService.commitSoon): how much queued work one transaction takes before the event loop
 * gets its turn again. A rack of agents reporting at once would otherwise hold the main thread, which also
 * answers TFTP and the HTTP downloads, for as long as the whole burst's transactions take.
 */
export interface GroupCommitLimits {
  /** Stop taking jobs into the open transaction once it has run this long (ms). */
  budgetMs: number;
  /** At most this many jobs per transaction. */
  maxJobs: number;
}

export const DEFAULT_GROUP_COMMIT: GroupCommitLimits = { budgetMs: 4, maxJobs: 64 };

interface QueuedWrite { fn: () => unknown; resolve: (v: unknown) => void; reject: (err: unknown) => void }

/** Told of every event inside the transaction that appends it (server/workflows/fleet-events.ts on PostgreSQL). */
export interface EventAnnouncer { announce(ev: WorkflowEvent): void }

/**
 * Where a workflow changes state. Every change is one transaction (the row and its event), is logged at info
 * with the MAC, and is published on `events` ('event', WorkflowEvent) for the live stream. Events other daemons
 * on the same PostgreSQL committed arrive on `events` as 'remote' (fleet-events.ts): views show them, nothing here
 * acts on them.
 */
export class WorkflowService {
  readonly events = new EventEmitter();

  /** While a batch() runs: what to log and publish once its transaction has committed. */
  private deferred: (() => void)[] | null = null;

  /** Bootable disks for mode install (server/images/bootable.ts); set by the composition root. */
  bootDisks: BootDiskService | null = null;

  /** Several daemons on one PostgreSQL: announces each event to the others (set by the composition root). */
  announcer: EventAnnouncer | null = null;

  /** Group commits so far and the jobs they carried (ironboot_group_commits_total, ironboot_group_commit_jobs_total). */
  readonly groupCommitStats = { groups: 0, jobs: 0 };

  /** Work waiting for the next group commit (commitSoon), oldest first. */
  private readonly queued: QueuedWrite[] = [];
  private flushScheduled = false;

  constructor(private store: Store, private log: Logger, readonly groupCommit: GroupCommitLimits = DEFAULT_GROUP_COMMIT) {
    this.events.setMaxListeners(0);
  }

  /**
   * Runs fn as part of a group commit: the writes of requests that arrive together (a rack's agents reporting, its
   * boot scripts) share one SQLite transaction, each job in a savepoint of its own, so a job that throws undoes only
   * its own writes and rejects only its own promise. The group runs after the current I/O callbacks (setImmediate);
   * it takes jobs until `groupCommit.budgetMs` or `maxJobs` is reached, commits, then publishes the logs and live
   * events of the jobs that succeeded, and settles their promises; what is left waits for the next turn of the
   * event loop, so timers and other sockets are served between groups. A commit that fails rejects every job of
   * its group. On PostgreSQL fn runs at once in a transaction of its own (a group would hold one daemon's row
   * locks across its jobs while other daemons wait on them).
   */
  commitSoon<T>(fn: () => T): Promise<T> {
    if (!this.store.sqlite) {
      try { return Promise.resolve(this.batch(fn)); } catch (err) { return Promise.reject(err); }
    }
    return new Promise<T>((resolve, reject) => {
      this.queued.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (!this.queued.length) return;
    const { budgetMs, maxJobs } = this.groupCommit;
    const started = performance.now();
    const settled: { job: QueuedWrite; ok: boolean; value: unknown }[] = [];
    const after: (() => void)[] = [];
    this.deferred = after;
    try {
      this.tx(() => {
        while (this.queued.length && settled.length < maxJobs && (settled.length === 0 || performance.now() - started < budgetMs)) {
          const job = this.queued.shift()!;
          const mark = after.length;
          try {
            settled.push({ job, ok: true, value: this.store.tx(job.fn) });
          } catch (err) {
            after.length = mark; // its savepoint is rolled back: nothing of it is published
            settled.push({ job, ok: false, value: err });
            // an I/O or disk-full error can make SQLite roll back the whole transaction: take no more jobs into
            // autocommit; the commit below then fails and refuses the group
            if (!this.store.sqlite!.inTransaction) break;
          }
        }
      });
    } catch (err) {
      // the commit itself failed: nothing of the group was written
      after.length = 0;
      for (const s of settled) { s.ok = false; s.value = err; }
      this.log.error({ jobs: settled.length, err: (err as Error).message }, 'group commit failed; its requests are refused');
    } finally {
      this.deferred = null;
    }
    this.groupCommitStats.groups++;
    this.groupCommitStats.jobs += settled.length;
    if (this.queued.length) this.scheduleFlush();
    for (const f of after) f();
    for (const s of settled) (s.ok ? s.job.resolve : s.job.reject)(s.value);
  }

  /**
   * The outermost transaction of a change. On SQLite it is BEGIN IMMEDIATE: it takes the write lock before its first
   * read, so a read-then-write of this daemon never works on a snapshot another daemon (another process on the same
   * file) has overtaken; a deferred one would fail with SQLITE_BUSY_SNAPSHOT instead of seeing the other's change.
   * PostgreSQL (READ COMMITTED) relies on the compare-and-set in setState instead.
   */
  private tx<T>(fn: () => T): T {
    const sqlite = this.store.sqlite;
    if (sqlite && !sqlite.inTransaction) return sqlite.transaction(fn).immediate();
    return this.store.tx(fn);
  }

  /**
   * The checks of a new workflow that read the image (mode install: a kernel and an initrd in its /boot), then
   * create(). The API calls this; a refusal names the field and writes nothing.
   */
  async createChecked(input: CreateWorkflowInput): Promise<Workflow> {
    if (input.mode === 'install') {
      const image = this.store.images.find(input.image);
      if (image && image.state === 'ready' && this.bootDisks) {
        const reason = await this.bootDisks.check(image);
        if (reason) throw new WorkflowError(400, 'image', reason);
      }
    }
    const wf = this.create(input);
    if (wf.mode === 'install' && this.bootDisks) {
      // built now, so the agent's hello does not wait for it (hello waits for the same build if it is still running)
      const img = this.store.images.get(wf.imageId)!;
      this.bootDisks.ensure(img).catch((err) => this.log.warn({ workflow: wf.id, image: img.id, err: (err as Error).message }, 'bootable disk build failed'));
    }
    return wf;
  }

  private publish(fn: () => void): void {
    if (this.deferred) this.deferred.push(fn); else fn();
  }

  /**
   * Runs several changes (transitions, records) as one transaction: all are written or none. Their logs and
   * live events go out only after the commit, so a refused batch shows nothing on the stream either.
   */
  batch<T>(fn: () => T): T {
    if (this.deferred) return this.tx(fn);
    const after: (() => void)[] = [];
    this.deferred = after;
    let result: T;
    try {
      result = this.tx(fn);
    } finally {
      this.deferred = null;
    }
    for (const f of after) f();
    return result;
  }

  create(input: CreateWorkflowInput): Workflow {
    const { store } = this;
    let created: Workflow;
    let first: WorkflowEvent;
    this.tx(() => {
      const machine = store.machines.getByMac(input.mac);
      if (!machine) throw new WorkflowError(404, 'machine', `no machine with MAC ${input.mac}`);
      const image = store.images.find(input.image);
      if (!image) throw new WorkflowError(404, 'image', `no image with id or name "${input.image}"`);
      if (image.state !== 'ready') {
        throw new WorkflowError(409, 'image', `image ${image.name} is ${image.state}, not ready`);
      }
      if (input.powerCycle && !machine.bmc) {
        throw new WorkflowError(400, 'powerCycle', `machine ${machine.mac} has no BMC to power-cycle it with; give it one (bmc.url) or leave powerCycle out`);
      }
      if (input.mode === 'persistent') {
        // later boots find the disk by its marker in the filesystem's unused first sector (init/agent/steps/marker.ts)
        if (input.target === 'ram') throw new WorkflowError(400, 'target', 'a persistent workflow needs a disk target (e.g. /dev/sda): a disk in RAM is gone at the next boot');
        if (!/^ext[234]$/.test(image.format)) throw new WorkflowError(400, 'mode', `persistent boot needs an ext2/3/4 disk; image ${image.name} is ${image.format}`);
      }
      if (input.mode === 'install') {
        if (input.target === 'ram') throw new WorkflowError(400, 'target', 'an install workflow needs a disk target (e.g. /dev/sda or /dev/disk/by-id/…): the machine boots from it afterwards');
        if (!this.bootDisks) throw new WorkflowError(409, 'mode', 'this server cannot build bootable disks (no bootable-disk service)');
        if (image.format !== 'ext4') throw new WorkflowError(400, 'image', `image ${image.name} is ${image.format}; an install needs an ext4 container disk`);
        const need = diskLayout(image.id, image.rawSize ?? 0).totalSectors * SECTOR;
        if (input.targetSize !== undefined && input.targetSize < need) {
          throw new WorkflowError(400, 'targetSize', `the bootable disk of image ${image.name} is ${need} bytes; a target of ${input.targetSize} bytes cannot hold it`);
        }
      }
      const active = store.workflows.activeForMachine(machine.id);
      if (active) {
        throw new WorkflowError(409, 'machine', `machine ${machine.mac} already has an active workflow ${active.id} (${active.state}); cancel it first`);
      }
      created = store.workflows.insert({
        id: randomUUID(), machineId: machine.id, imageId: image.id, entrypoint: input.entrypoint ?? null,
        args: input.args ?? null, env: input.env ?? {}, kernelArgs: input.kernelArgs ?? '', target: input.target,
        after: input.after ?? 'wait', mode: input.mode ?? 'ephemeral', powerCycle: input.powerCycle ?? false, token: '', timeoutSeconds: input.timeoutSeconds,
        wipe: input.wipe ?? false, targetSerial: input.targetSerial ?? null, targetSize: input.targetSize ?? null,
      });
      first = store.events.append({ workflowId: created.id, kind: 'state', state: 'pending', message: `created for image ${image.name}` });
      this.announcer?.announce(first);
    });
    this.log.info({ mac: input.mac, workflow: created!.id, state: 'pending' }, 'workflow created');
    this.events.emit('event', first!);
    return created!;
  }

  /**
   * Moves a workflow to `to` if the state machine allows it. Returns the updated workflow, or throws a
   * 409 WorkflowError naming the current state. The change is a compare-and-set on the state it read: when another
   * daemon changed the workflow in between, this one is refused (409 with the state the other set) and records
   * nothing, so of two racing changes exactly one wins and leaves one event. `current`: the workflow as the caller
   * read it in its own enclosing transaction (not read again); a stale one is refused by the compare-and-set.
   */
  transition(id: string, to: WorkflowState, detail: { message?: string; reason?: string; exitCode?: number; payload?: Record<string, unknown> } = {}, current?: Workflow): Workflow {
    let ev: WorkflowEvent;
    let wf: Workflow;
    this.tx(() => {
      const cur = current?.id === id ? current : this.store.workflows.get(id);
      if (!cur) throw new WorkflowError(404, 'id', `no workflow ${id}`);
      if (!canTransition(cur.state, to)) {
        throw new WorkflowError(409, 'state', `workflow ${id} is ${cur.state}; it cannot become ${to}`);
      }
      const changed = this.store.workflows.setState(id, to, {
        reason: detail.reason !== undefined ? detail.reason : (isFinal(to) ? undefined : null),
        exitCode: detail.exitCode,
        final: isFinal(to),
        started: to === 'booting' || to === 'agent-online',
        expected: cur.state,
      });
      if (!changed) {
        const now = this.store.workflows.get(id);
        throw new WorkflowError(409, 'state', `workflow ${id} is ${now?.state ?? 'gone'} (changed meanwhile, from ${cur.state}); it was not made ${to}`);
      }
      ev = this.store.events.append({
        workflowId: id, kind: 'state', state: to, message: detail.message ?? detail.reason ?? null,
        payload: { from: cur.state, ...(detail.exitCode !== undefined ? { exitCode: detail.exitCode } : {}), ...(detail.payload ?? {}) },
      });
      this.announcer?.announce(ev);
      wf = changed;
    });
    this.publish(() => {
      this.log.info({ mac: wf!.machineMac, workflow: id, from: ev!.payload.from, state: to, reason: detail.reason }, `workflow ${to}`);
      this.events.emit('event', ev!);
    });
    return wf!;
  }

  /** Like transition, but a no-op (returning undefined) when the move is not allowed. */
  tryTransition(id: string, to: WorkflowState, detail: Parameters<WorkflowService['transition']>[2] = {}): Workflow | undefined {
    try {
      return this.transition(id, to, detail);
    } catch (err) {
      if (err instanceof WorkflowError && err.status === 409) return undefined;
      throw err;
    }
  }

  /** Appends a non-state event (progress, log lines, info). */
  record(e: EventInput): WorkflowEvent {
    const append = () => { const ev = this.store.events.append(e); this.announcer?.announce(ev); return ev; };
    const ev = this.announcer ? this.tx(append) : append(); // the event and its announcement in one transaction
    this.publish(() => this.events.emit('event', ev));
    return ev;
  }

  cancel(id: string): Workflow {
    const cur = this.store.workflows.get(id);
    if (!cur) throw new WorkflowError(404, 'id', `no workflow ${id}`);
    if (isFinal(cur.state)) throw new WorkflowError(409, 'state', `workflow ${id} is already ${cur.state}`);
    return this.transition(id, 'cancelled', { reason: 'cancelled by operator' });
  }

  /** A new workflow with the same machine, image and overrides as a finished one. */
  retry(id: string): Workflow {
    const cur = this.store.workflows.get(id);
    if (!cur) throw new WorkflowError(404, 'id', `no workflow ${id}`);
    if (!isFinal(cur.state)) throw new WorkflowError(409, 'state', `workflow ${id} is still ${cur.state}; only a finished workflow can be retried`);
    return this.create({
      mac: cur.machineMac, image: cur.imageId, target: cur.target, after: cur.after, mode: cur.mode,
      entrypoint: cur.entrypoint ?? undefined, args: cur.args ?? undefined, env: cur.env,
      kernelArgs: cur.kernelArgs, timeoutSeconds: cur.timeoutSeconds, powerCycle: cur.powerCycle,
      wipe: cur.wipe, targetSerial: cur.targetSerial ?? undefined, targetSize: cur.targetSize ?? undefined,
    });
  }

  /** Marks active workflows whose time ran out as timed-out. Returns how many. */
  expire(now = Date.now()): number {
    let n = 0;
    for (const w of this.store.workflows.listActive()) {
      const since = Date.parse(w.startedAt ?? w.createdAt);
      // a powerCycle workflow's clock runs from its creation: the daemon itself started the boot
      if ((w.state !== 'pending' || w.powerCycle) && now - since > w.timeoutSeconds * 1000) {
        if (this.tryTransition(w.id, 'timed-out', { reason: `no completion within ${w.timeoutSeconds}s` })) n++;
      }
    }
    return n;
  }
}

/** The group commit's counters on the daemon's registry: jobs / groups is how many requests shared a transaction. */
export function registerGroupCommitMetrics(registry: Registry, workflows: WorkflowService): void {
  if (registry.getSingleMetric('ironboot_group_commits_total')) return;
  const stats = workflows.groupCommitStats;
  new Counter({
    name: 'ironboot_group_commits_total', help: 'SQLite transactions that carried queued agent reports, hellos and boot scripts (group commits)', registers: [registry],
    collect() { this.reset(); this.inc(stats.groups); },
  });
  new Counter({
    name: 'ironboot_group_commit_jobs_total', help: 'Requests whose writes went into a group commit (agent event batches, hellos, HTTP boot scripts)', registers: [registry],
    collect() { this.reset(); this.inc(stats.jobs); },
  });
}
