/**
 * Power control of machines through their BMCs: the one place that drives a BMC. Each action is recorded as a
 * machine event (store/machine-events.ts) and, when it is done for a workflow, also as an info event of that
 * workflow; the machine's power state is kept (power.state, checkedAt, error) and polled in the background.
 * Actions on one machine run one after the other; transient failures (timeout, unreachable) are retried with
 * exponential backoff (3 tries); a refused login is retried once after the backoff (a BMC whose session slots are
 * full, or a password rotated meanwhile, may take it then), never more: repeated bad logins lock accounts on real
 * BMCs. Certificates are not retried (they need the operator). Nothing blocks the
 * event loop: a dead BMC costs timers.
 *
 *   power.act(mac, 'cycle')                       REST / CLI / web page
 *   power.cycle(mac, { pxe: true, workflowId })   a workflow created with powerCycle: true (and issue 10's reboots)
 */
import type { Logger } from 'pino';
import type { Store } from '../store/index.ts';
import type { BmcCredentials, Machine } from '../store/machines.ts';
import type { MachineEvent } from '../store/machine-events.ts';
import type { WorkflowService } from '../workflows/service.ts';
import type { WorkflowEvent } from '../store/events.ts';
import { parseBmcUrl } from './bmc-url.ts';
import { PowerError, type PowerAction, type PowerDriver } from './driver.ts';
import { IpmiPowerDriver } from './ipmi/driver.ts';
import { RedfishClient } from './redfish/client.ts';

export interface PowerServiceOptions {
  /** Tries per action for transient failures (default 3). */
  attempts?: number;
  /** First backoff between tries (default 1000 ms; doubles). */
  backoffMs?: number;
  /** Poll every machine's power state this often (default 60 s; 0: never). */
  pollSeconds?: number;
  /** How to talk to a BMC (default: IPMI or Redfish by its URL). */
  driverFor?: (bmc: BmcCredentials) => PowerDriver;
}

export interface PowerResult {
  mac: string;
  action: PowerAction;
  outcome: 'ok' | 'failed';
  /** Power state after the action, when known. */
  state: 'on' | 'off' | null;
  message: string;
  attempts: number;
  event: MachineEvent;
}

/** A refused request (no such machine, no BMC): status and field for the API. */
export class PowerRequestError extends Error {
  constructor(readonly status: 404 | 409, readonly field: string, message: string) { super(message); this.name = 'PowerRequestError'; }
}

export function defaultDriver(bmc: BmcCredentials): PowerDriver {
  const addr = parseBmcUrl(bmc.url);
  if (typeof addr === 'string') throw new PowerError('protocol', addr);
  const creds = { username: bmc.username, password: bmc.password };
  return addr.protocol === 'ipmi'
    ? new IpmiPowerDriver(addr, creds)
    : new RedfishClient(addr, creds, { ca: bmc.ca, tlsInsecure: bmc.tlsInsecure });
}

const protocolOf = (url: string): string | null => { const a = parseBmcUrl(url); return typeof a === 'string' ? null : a.protocol; };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref?.());

export class PowerService {
  private queues = new Map<number, Promise<unknown>>();
  private poller: NodeJS.Timeout | null = null;
  private polling = false;
  private stopped = false;
  private readonly onWorkflowEvent = (ev: WorkflowEvent) => this.workflowEvent(ev);
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly driverFor: (bmc: BmcCredentials) => PowerDriver;

  constructor(private store: Store, private workflows: WorkflowService, private log: Logger, private opts: PowerServiceOptions = {}) {
    this.attempts = Math.max(1, opts.attempts ?? 3);
    this.backoffMs = opts.backoffMs ?? 1000;
    this.driverFor = opts.driverFor ?? defaultDriver;
  }

  /** Starts following workflows (powerCycle) and polling power states. */
  start(): void {
    this.workflows.events.on('event', this.onWorkflowEvent);
    const every = this.opts.pollSeconds ?? 60;
    if (every > 0) {
      this.poller = setInterval(() => { void this.pollAll(); }, every * 1000);
      this.poller.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    this.workflows.events.off('event', this.onWorkflowEvent);
    if (this.poller) clearInterval(this.poller);
  }

  /** One action on one machine, recorded; resolves with the outcome (a failed action is an outcome, not a throw). */
  act(mac: string, action: PowerAction, ctx: { workflowId?: string } = {}): Promise<PowerResult> {
    const machine = this.store.machines.getByMac(mac);
    if (!machine) throw new PowerRequestError(404, 'mac', `no machine with MAC ${mac}`);
    const bmc = this.store.machines.getBmcCredentials(machine.id);
    if (!bmc) throw new PowerRequestError(409, 'bmc', `machine ${mac} has no BMC; set one with PATCH /api/v1/machines/${mac} {"bmc": {"url": …}}`);
    return this.serial(machine.id, () => this.run(machine, bmc, action, ctx));
  }

  /**
   * Power-cycles a machine (powers it on when it is off), first setting its next boot to the network when
   * `pxe`. Resolves with the last result; a failed step ends it.
   */
  async cycle(mac: string, opts: { pxe?: boolean; workflowId?: string } = {}): Promise<PowerResult> {
    if (opts.pxe) {
      const r = await this.act(mac, 'pxe', { workflowId: opts.workflowId });
      if (r.outcome === 'failed') return r;
    }
    return this.act(mac, 'cycle', { workflowId: opts.workflowId });
  }

  private serial<T>(machineId: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(machineId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.queues.set(machineId, tail);
    void tail.then(() => { if (this.queues.get(machineId) === tail) this.queues.delete(machineId); });
    return next;
  }

  private async run(machine: Machine, bmc: BmcCredentials, action: PowerAction, ctx: { workflowId?: string }): Promise<PowerResult> {
    const log = this.log.child({ mac: machine.mac, bmc: bmc.url, action, ...(ctx.workflowId ? { workflow: ctx.workflowId } : {}) });
    let attempt = 0;
    let state: 'on' | 'off' | null = null;
    let message = '';
    let outcome: 'ok' | 'failed' = 'ok';
    for (;;) {
      attempt++;
      try {
        const driver = this.driverFor(bmc);
        ({ state, message } = await this.perform(driver, action, machine));
        break;
      } catch (err) {
        const pe = err instanceof PowerError ? err : new PowerError('protocol', (err as Error).message);
        const tries = pe.retryable ? this.attempts : pe.kind === 'auth' ? Math.min(2, this.attempts) : 1;
        if (attempt < tries && !this.stopped) {
          const wait = this.backoffMs * 2 ** (attempt - 1);
          log.warn({ attempt, retryInMs: wait, reason: pe.message }, 'power action failed; retrying');
          await sleep(wait);
          continue;
        }
        outcome = 'failed';
        message = attempt > 1 ? `${pe.message} (after ${attempt} tries)` : pe.message;
        log.warn({ attempt, kind: pe.kind, reason: pe.message }, `power ${action} failed`);
        break;
      }
    }
    if (outcome === 'ok') this.store.machines.setPower(machine.id, { state: state ?? machine.power?.state ?? 'unknown' });
    else if (action === 'status') this.store.machines.setPower(machine.id, { state: 'unknown', error: message });
    const event = this.store.machineEvents.append({
      machineId: machine.id, kind: 'power', action, outcome, message, workflowId: ctx.workflowId ?? null,
      payload: { attempts: attempt, protocol: protocolOf(bmc.url), ...(state ? { state } : {}) },
    });
    if (ctx.workflowId) {
      this.workflows.record({ workflowId: ctx.workflowId, kind: 'info', message: `power ${action}: ${message}`, payload: { power: { action, outcome, state, attempts: attempt } } });
    }
    if (outcome === 'ok') log.info({ state, attempts: attempt }, `power ${action}: ${message}`);
    return { mac: machine.mac, action, outcome, state, message, attempts: attempt, event };
  }

  private async perform(driver: PowerDriver, action: PowerAction, machine: Machine): Promise<{ state: 'on' | 'off' | null; message: string }> {
    switch (action) {
      case 'status': {
        const s = await driver.status();
        return { state: s, message: `power is ${s}` };
      }
      case 'on':
        await driver.on();
        return { state: 'on', message: 'powered on' };
      case 'off':
        await driver.off();
        return { state: 'off', message: 'powered off' };
      case 'cycle': {
        const before = await driver.status();
        if (before === 'off') {
          await driver.on();
          return { state: 'on', message: 'was off: powered on' };
        }
        await driver.cycle();
        return { state: 'on', message: 'power-cycled' };
      }
      case 'pxe':
        await driver.bootPxe({ efi: machine.arch === 'uefi-x64' || machine.arch === 'uefi-arm64' });
        return { state: null, message: 'next boot from the network' };
    }
  }

  /** A workflow created (or retried) with powerCycle: set PXE and cycle; fail the workflow if the BMC cannot. */
  private workflowEvent(ev: WorkflowEvent): void {
    if (ev.kind !== 'state' || ev.state !== 'pending') return;
    const wf = this.store.workflows.get(ev.workflowId);
    if (!wf?.powerCycle) return;
    this.log.info({ mac: wf.machineMac, workflow: wf.id }, 'workflow asks for a power cycle: next boot from the network, then cycle');
    this.cycle(wf.machineMac, { pxe: true, workflowId: wf.id }).then((r) => {
      if (r.outcome === 'failed') this.workflows.tryTransition(wf.id, 'failed', { reason: `power ${r.action} failed: ${r.message}` });
    }, (err: Error) => {
      this.workflows.tryTransition(wf.id, 'failed', { reason: `power cycle failed: ${err.message}` });
    });
  }

  /** Polls every machine with a BMC once (one try each, four BMCs at a time); logs changes. */
  async pollAll(): Promise<void> {
    if (this.polling || this.stopped) return;
    this.polling = true;
    try {
      const todo = this.store.machines.listWithBmc();
      const worker = async () => {
        for (let m = todo.shift(); m && !this.stopped; m = todo.shift()) await this.pollOne(m);
      };
      await Promise.all(Array.from({ length: 4 }, worker));
    } finally {
      this.polling = false;
    }
  }

  private async pollOne(m: Machine): Promise<void> {
    if (this.queues.has(m.id)) return; // an action is running; it records the state itself
    const bmc = this.store.machines.getBmcCredentials(m.id);
    if (!bmc) return;
    try {
      const s = await this.driverFor(bmc).status();
      if (s !== m.power?.state) this.log.info({ mac: m.mac, from: m.power?.state, state: s }, 'machine power state changed');
      if (this.store.machines.getById(m.id)) this.store.machines.setPower(m.id, { state: s });
    } catch (err) {
      const msg = (err as Error).message;
      if (m.power?.error !== msg) this.log.warn({ mac: m.mac, reason: msg }, 'power state poll failed');
      if (this.store.machines.getById(m.id)) this.store.machines.setPower(m.id, { state: 'unknown', error: msg });
    }
  }
}
