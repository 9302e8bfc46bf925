/**
 * The agent's state machine: which step runs when, what is reported, and what happens on failure.
 * Steps and the reporter are injected (index.ts wires the real ones; unit tests pass fakes), so the order
 * and the failure rules are tested without a machine.
 *
 *   server flow: mounts → drivers → net → hello → stream (+ verify) → mount → run → report final → after
 *     (mode persistent: stream → mark → mount: the disk's marker is written after verify, before anything mounts it)
 *   persistent boot (ironboot.boot=persistent, a later boot of a persistent workflow):
 *                mounts → drivers → net → marker (find the disk, check it) → check-in (server checks it, gives the spec)
 *                → mount → run → report `exited` → after; a refused disk is never mounted: `refused` + reason → shell
 *   seed flow:   mounts → drivers → net (best effort) → root device → mount → run → after   (no server)
 *   on failure:  console message → `failed` event with the reason (if the server can be reached) → shell
 */
import type { AgentEvent, AgentState, WorkflowSpec } from '../../server/agent/api.ts';
import type { AgentConfig, After } from './cmdline.ts';
import type { Console } from './sys.ts';
import type { DiskMarker } from './steps/marker.ts';

export interface NetInfo {
  iface: string; mac: string; ip: string; prefix: number; router: string | null;
  dns: string[]; hostname: string | null; domain: string | null;
}

export interface RunSpec {
  argv: string[];
  env: string[];
  workingDir: string | null;
  user: string | null;
}

export type LogLine = { stream: 'stdout' | 'stderr'; line: string };

export interface StreamHooks {
  progress(bytesDone: number, bytesTotal: number): void;
  /** Called once every byte is written, before the checksum is compared. */
  verifying(): void;
}

export interface AgentSteps {
  mounts(): Promise<void>;
  drivers(cfg: AgentConfig): Promise<void>;
  net(cfg: AgentConfig): Promise<NetInfo>;
  hello(cfg: AgentConfig, net: NetInfo): Promise<WorkflowSpec>;
  /** Streams and verifies the disk; returns the device (or loop device) holding it. Throws on a bad checksum. */
  stream(spec: WorkflowSpec, cfg: AgentConfig, hooks: StreamHooks): Promise<{ device: string }>;
  /** Seed flow: waits for `root=` (a path, LABEL= or UUID=) and returns the device. */
  rootDevice(cfg: AgentConfig): Promise<string>;
  mount(device: string, opts: { fsType: string | null; hostname: string | null; dns: string[]; searchDomain: string | null }): Promise<{ fsType: string }>;
  run(spec: RunSpec, onLine: (l: LogLine) => void): Promise<number>;
  /** Does what the workflow says after it ended; `shell` and `wait` never return. */
  after(action: After): Promise<void>;
  /** mode install: writes the first-boot files into the streamed disk's root partition (init/agent/steps/install.ts). */
  install?(spec: WorkflowSpec, device: string): Promise<{ written: string[]; loop: string }>;
}

export interface Reporter {
  send(e: AgentEvent): void;
  /** Sends `e` and resolves once the server has acknowledged it (and everything queued before it). */
  final(e: AgentEvent, opts?: { maxAttempts?: number }): Promise<boolean>;
  /** Why the server refused the last final event, if it did (final() then resolved false). */
  readonly finalRefusal?: string | null;
}

export type Step = 'mounts' | 'drivers' | 'net' | 'hello' | 'stream' | 'mark' | 'marker' | 'check-in' | 'root' | 'mount' | 'install' | 'run' | 'report' | 'after';

/** A disk found for a persistent boot (init/agent/steps/persist.ts). */
export interface FoundDisk { device: string; marker: DiskMarker }

/** Persistent boot's steps (init/agent/steps/persist.ts; unit tests pass fakes). */
export interface PersistSteps {
  /** Provisioning a persistent workflow: writes the disk's marker (after verify; the last write before mount). */
  markDisk(spec: WorkflowSpec, device: string, net: NetInfo): Promise<void>;
  /** The disk named on the command line, checked against its marker; throws (DiskRefused) with the reason. */
  findDisk(cfg: AgentConfig, net: NetInfo): Promise<FoundDisk>;
  /** The server checks the marker and answers the boot number and the spec; throws with the server's reason. */
  checkIn(cfg: AgentConfig, net: NetInfo, found: FoundDisk): Promise<{ boot: number; spec: WorkflowSpec }>;
  /** Reports the entrypoint's end or a refused disk; resolves whether the server took it. */
  report(cfg: AgentConfig, net: NetInfo, found: { device?: string; marker: DiskMarker | null } | null,
    r: { phase: 'exited' | 'refused'; boot?: number; exitCode?: number; reason?: string }): Promise<boolean>;
}

export interface Outcome { ok: boolean; step: Step; exitCode: number | null; reason: string | null }

export interface AgentDeps {
  cfg: AgentConfig;
  steps: AgentSteps;
  reporter: Reporter | null;
  /** Persistent boot and marking disks (index.ts wires steps/persist.ts). */
  persist?: PersistSteps;
  console: Console;
  /** Told before each step starts (index.ts writes it to /run so a respawned agent knows where it died). */
  onStep?: (s: Step) => void;
  /** Minimum interval between progress events (default 250 ms: a few per second). */
  progressIntervalMs?: number;
  now?: () => number;
}

export class StepError extends Error {
  constructor(readonly step: Step, message: string) { super(message); this.name = 'StepError'; }
}

/** Builds the entrypoint's argv/env/dir/user from the workflow (already merged by the server). */
export function runSpecFromWorkflow(spec: WorkflowSpec): RunSpec {
  return { argv: [...spec.entrypoint, ...spec.cmd], env: spec.env, workingDir: spec.workingDir, user: spec.user };
}

/** Runs the whole flow and then the after action. Resolves only when `after` returns (wait/shell never do). */
export async function runAgent(d: AgentDeps): Promise<Outcome> {
  const { cfg, console } = d;
  for (const w of cfg.warnings) console.warn(w);
  let outcome: Outcome;
  let after: After = 'shell';
  if (cfg.mode === 'server') {
    const r = await serverFlow(d);
    outcome = r.outcome; after = r.after;
  } else if (cfg.mode === 'persistent') {
    const r = await persistentFlow(d);
    outcome = r.outcome; after = r.after;
  } else if (cfg.mode === 'seed') {
    outcome = await seedFlow(d);
    after = outcome.ok ? (cfg.after ?? 'shell') : 'shell';
  } else {
    console.warn('nothing to do: the kernel command line has neither ironboot.server=/ironboot.workflow=/ironboot.token= nor root= with entrypoint=');
    outcome = { ok: false, step: 'mounts', exitCode: null, reason: 'no flow configured on the kernel command line' };
    try { await d.steps.mounts(); } catch { /* the shell still works without */ }
  }
  if (!outcome.ok) {
    console.warn(`FAILED in step ${outcome.step}: ${outcome.reason}`);
    console.say('dropping to a shell on the console');
    after = 'shell';
  }
  d.onStep?.('after');
  await d.steps.after(after);
  return outcome;
}

async function step<T>(d: AgentDeps, s: Step, fn: () => Promise<T>): Promise<T> {
  d.onStep?.(s);
  const t0 = Date.now();
  try {
    const r = await fn();
    if (s !== 'run') d.console.say(`step ${s} done in ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    return r;
  } catch (e) {
    if (e instanceof StepError) throw e;
    throw new StepError(s, (e as Error)?.message ?? String(e));
  }
}

function logBatcher(reporter: Reporter | null, now: () => number) {
  let lines: LogLine[] = [];
  let first = 0;
  const flush = () => {
    if (lines.length && reporter) reporter.send({ log: lines });
    lines = [];
  };
  return {
    add(l: LogLine) {
      if (!lines.length) first = now();
      lines.push(l);
      if (lines.length >= 200 || now() - first >= 500) flush();
    },
    flush,
    timer: setInterval(flush, 500),
  };
}

async function serverFlow(d: AgentDeps): Promise<{ outcome: Outcome; after: After }> {
  const { cfg, steps, console } = d;
  const reporter = d.reporter;
  const now = d.now ?? Date.now;
  const state = (s: AgentState, message?: string, extra: Partial<AgentEvent> = {}) => {
    console.say(`state ${s}${message ? `: ${message}` : ''}`);
    reporter?.send({ state: s, ...(message ? { message } : {}), ...extra });
  };
  let exitCode: number | null = null;
  try {
    await step(d, 'mounts', () => steps.mounts());
    await step(d, 'drivers', () => steps.drivers(cfg));
    const net = await step(d, 'net', () => steps.net(cfg));
    console.say(`network up: ${net.iface} ${net.mac} ${net.ip}/${net.prefix} router ${net.router ?? 'none'}`);
    const spec = await step(d, 'hello', () => steps.hello(cfg, net));
    console.say(`workflow ${spec.workflowId}: image ${spec.image.name} (${spec.image.rawSize} bytes) → ${spec.target}, then ${spec.after}`);
    state('streaming', `${spec.image.url} → ${spec.target}`, { bytesDone: 0, bytesTotal: spec.image.rawSize });
    let lastProgress = 0;
    const interval = d.progressIntervalMs ?? 250;
    const { device } = await step(d, 'stream', () => steps.stream(spec, cfg, {
      progress: (done, total) => {
        const t = now();
        if (t - lastProgress < interval && done < total) return;
        lastProgress = t;
        reporter?.send({ bytesDone: done, bytesTotal: total });
      },
      verifying: () => state('verifying', `sha256 ${spec.image.rawSha256}`),
    }));
    if (spec.mode === 'install') {
      // the disk is a whole bootable disk: its root gets the first-boot data, nothing of it runs here
      if (!steps.install || !spec.install) throw new StepError('install', steps.install ? 'the server sent no install section (first-boot data) for this install workflow' : 'this agent cannot install bootable disks');
      state('mounted', `${device}: bootable disk verified; root partition ${spec.install.rootPartition} (PARTUUID ${spec.install.rootPartUuid}) for first-boot data`);
      state('running', `writing first-boot data (${spec.install.files.length} files) into the installed root`);
      const r = await step(d, 'install', () => steps.install!(spec, device));
      reporter?.send({ message: `first-boot data written: ${r.written.join(', ')}`, payload: { install: { written: r.written, instanceId: spec.install.instanceId } } });
      d.onStep?.('report');
      const final: AgentEvent = { state: 'succeeded', exitCode: 0, message: `installed image ${spec.image.name} on ${device} (kernel ${spec.install.kernel}); the machine boots from its own disk next`, payload: { installed: device } };
      if (reporter) {
        console.say(`reporting ${final.state} to ${cfg.server}`);
        if (!await reporter.final(final)) {
          const reason = `the server refused the final report (succeeded)${reporter.finalRefusal ? `: ${reporter.finalRefusal}` : ''}`;
          console.warn(reason);
          await reporter.final({ state: 'failed', message: reason }, { maxAttempts: 3 });
          return { outcome: { ok: false, step: 'report', exitCode: null, reason }, after: 'shell' };
        }
        console.say('final status acknowledged by the server');
      }
      console.say(`installed: ${device} boots on its own; ${spec.after}`);
      return { outcome: { ok: true, step: 'install', exitCode: 0, reason: null }, after: spec.after };
    }
    if (spec.mode === 'persistent') {
      // after verify and resize, before anything mounts it: a disk without a marker is never booted again
      if (!d.persist) throw new StepError('mark', 'this agent cannot mark disks for persistent boot');
      await step(d, 'mark', () => d.persist!.markDisk(spec, device, net));
      console.say(`persistent-boot marker written to ${device}`);
      reporter?.send({ message: `persistent-boot marker written to ${device}`, payload: { marker: device } });
    }
    const hostname = spec.machine.hostname ?? net.hostname;
    const { fsType } = await step(d, 'mount', () => steps.mount(device, {
      fsType: spec.image.format || null, hostname, dns: spec.dns.length ? spec.dns : net.dns, searchDomain: net.domain,
    }));
    state('mounted', `${device} (${fsType}) at /mnt`);
    const run = runSpecFromWorkflow(spec);
    state('running', run.argv.join(' '));
    const logs = logBatcher(reporter, now);
    try {
      exitCode = await step(d, 'run', () => steps.run(run, (l) => logs.add(l)));
    } finally {
      clearInterval(logs.timer);
      logs.flush();
    }
    console.say(`entrypoint exited with code ${exitCode}`);
    d.onStep?.('report');
    const final: AgentEvent = exitCode === 0
      ? { state: 'succeeded', exitCode, message: 'entrypoint exited with code 0' }
      : { state: 'failed', exitCode, message: `entrypoint exited with code ${exitCode}` };
    // The after action waits for this acknowledgement, so a reboot never races the last report.
    if (reporter) {
      console.say(`reporting ${final.state} to ${cfg.server}`);
      if (!await reporter.final(final)) {
        // Refused (e.g. the workflow was cancelled or timed out meanwhile): not delivered, so not a success.
        const reason = `the server refused the final report (${final.state})${reporter.finalRefusal ? `: ${reporter.finalRefusal}` : ''}`;
        console.warn(reason);
        if (final.state !== 'failed') await reporter.final({ state: 'failed', message: reason, exitCode }, { maxAttempts: 3 });
        return { outcome: { ok: false, step: 'report', exitCode, reason }, after: 'shell' };
      }
      console.say('final status acknowledged by the server');
    }
    if (exitCode !== 0) return { outcome: { ok: false, step: 'run', exitCode, reason: final.message! }, after: 'shell' };
    return { outcome: { ok: true, step: 'run', exitCode, reason: null }, after: spec.after };
  } catch (e) {
    const s = e instanceof StepError ? e.step : 'run';
    const reason = (e as Error)?.message ?? String(e);
    console.warn(`step ${s} failed: ${reason}`);
    if (reporter) {
      const acked = await reporter.final({ state: 'failed', message: `${s}: ${reason}`, ...(exitCode !== null ? { exitCode } : {}) }, { maxAttempts: 5 });
      if (!acked) console.warn(`could not report the failure to ${cfg.server}`);
    }
    return { outcome: { ok: false, step: s, exitCode, reason }, after: 'shell' };
  }
}

/**
 * A later boot of a persistent workflow: the disk it wrote, checked by its marker locally and by the server, runs
 * again without a stream. Nothing is mounted before both checks passed; a refusal is reported with its reason.
 */
async function persistentFlow(d: AgentDeps): Promise<{ outcome: Outcome; after: After }> {
  const { cfg, steps, console } = d;
  const p = d.persist;
  let net: NetInfo | null = null;
  let found: FoundDisk | null = null;
  let refusedMarker: DiskMarker | null = null;
  let boot: number | undefined;
  let started = false;
  try {
    if (!p) throw new StepError('marker', 'this agent has no persistent-boot steps');
    await step(d, 'mounts', () => steps.mounts());
    await step(d, 'drivers', () => steps.drivers(cfg));
    net = await step(d, 'net', () => steps.net(cfg));
    const n = net;
    console.say(`network up: ${n.iface} ${n.mac} ${n.ip}/${n.prefix}; persistent boot of workflow ${cfg.workflowId} from ${cfg.persistentDisk}`);
    found = await step(d, 'marker', async () => {
      try { return await p.findDisk(cfg, n); } catch (e) {
        refusedMarker = (e as { marker?: DiskMarker | null }).marker ?? null;   // reported with the refusal
        throw e;
      }
    });
    const f = found;
    console.say(`${f.device}: marker of workflow ${f.marker.workflowId}, image ${f.marker.imageId}, written ${f.marker.writtenAt}`);
    const r = await step(d, 'check-in', () => p.checkIn(cfg, n, f));
    boot = r.boot;
    const spec = r.spec;
    console.say(`persistent boot ${boot} accepted by ${cfg.server}: image ${spec.image.name}, then ${spec.after}`);
    const { fsType } = await step(d, 'mount', () => steps.mount(f.device, {
      fsType: spec.image.format || null, hostname: spec.machine.hostname ?? n.hostname, dns: spec.dns.length ? spec.dns : n.dns, searchDomain: n.domain,
    }));
    const run = runSpecFromWorkflow(spec);
    console.say(`mounted ${f.device} (${fsType}) at /mnt; running ${run.argv.join(' ')}`);
    started = true;
    const exitCode = await step(d, 'run', () => steps.run(run, () => {}));   // output goes to the console
    console.say(`entrypoint exited with code ${exitCode}`);
    d.onStep?.('report');
    if (!await p.report(cfg, n, f, { phase: 'exited', boot, exitCode })) console.warn(`could not report the exit to ${cfg.server}`);
    if (exitCode !== 0) return { outcome: { ok: false, step: 'run', exitCode, reason: `entrypoint exited with code ${exitCode}` }, after: 'shell' };
    return { outcome: { ok: true, step: 'run', exitCode, reason: null }, after: spec.after };
  } catch (e) {
    const s = e instanceof StepError ? e.step : 'run';
    const reason = (e as Error)?.message ?? String(e);
    console.warn(`persistent boot: step ${s} failed: ${reason}${started ? '' : '; the disk was not run'}`);
    if (net && p) {
      const r = started ? { phase: 'exited' as const, boot, reason: `${s}: ${reason}` } : { phase: 'refused' as const, reason: `${s}: ${reason}` };
      const acked = await p.report(cfg, net, found ?? { marker: refusedMarker }, r);
      console.say(acked ? `reported to ${cfg.server}: ${r.phase}` : `could not report to ${cfg.server}`);
    }
    return { outcome: { ok: false, step: s, exitCode: null, reason }, after: 'shell' };
  }
}

async function seedFlow(d: AgentDeps): Promise<Outcome> {
  const { cfg, steps, console } = d;
  let exitCode: number | null = null;
  try {
    await step(d, 'mounts', () => steps.mounts());
    await step(d, 'drivers', () => steps.drivers(cfg));
    let net: NetInfo | null = null;
    if (cfg.net) {
      try {
        net = await step(d, 'net', () => steps.net(cfg));
        console.say(`network up: ${net.iface} ${net.ip}/${net.prefix} router ${net.router ?? 'none'}`);
      } catch (e) {
        console.warn(`no network (carrying on without): ${(e as Error).message}`);
      }
    }
    const device = await step(d, 'root', () => steps.rootDevice(cfg));
    const { fsType } = await step(d, 'mount', () => steps.mount(device, {
      fsType: cfg.rootFsType, hostname: net?.hostname ?? null, dns: net?.dns ?? [], searchDomain: net?.domain ?? null,
    }));
    console.say(`mounted ${device} (${fsType}) at /mnt; running ${cfg.entrypoint.join(' ')}`);
    exitCode = await step(d, 'run', () => steps.run({ argv: cfg.entrypoint, env: [], workingDir: null, user: null }, () => {}));
    console.say(`entrypoint exited with code ${exitCode}`);
    if (exitCode !== 0) return { ok: false, step: 'run', exitCode, reason: `entrypoint exited with code ${exitCode}` };
    return { ok: true, step: 'run', exitCode, reason: null };
  } catch (e) {
    const s = e instanceof StepError ? e.step : 'run';
    return { ok: false, step: s, exitCode, reason: (e as Error)?.message ?? String(e) };
  }
}
