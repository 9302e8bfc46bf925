/**
 * The agent's entry point in the initramfs (bundled to /lib/ironboot/agent.mjs and started by busybox init,
 * which is PID 1: it reaps orphans and respawns the agent if it dies).
 *
 * Wires the real steps into the state machine (main.ts), handles SIGTERM/SIGINT (forwarded to the running
 * entrypoint; the agent itself never exits on them), and keeps a marker in /run so that an agent that is
 * respawned after a crash says so on the console, reports `failed`, and opens a shell instead of starting
 * the workflow over.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseAgentConfig, type AgentConfig } from './cmdline.ts';
import { runAgent, type AgentSteps, type PersistSteps, type Step } from './main.ts';
import { EventReporter } from './reporter.ts';
import { consoleOut, PATHS } from './sys.ts';
import { doAfter, consoleShell } from './steps/after.ts';
import { installFirstBoot } from './steps/install.ts';
import { streamToTarget } from './steps/disk.ts';
import { loadDrivers } from './steps/drivers.ts';
import { sayHello, savedSessionToken } from './steps/hello.ts';
import { trustOperatorCa } from './tls.ts';
import { mountDisk, rootDevice } from './steps/mount.ts';
import { mountEarly } from './steps/mounts.ts';
import { bringUpNetwork } from './steps/net.ts';
import { checkIn, findPersistentDisk, markDisk, reportBoot } from './steps/persist.ts';
import { currentEntrypoint, runEntrypoint } from './steps/run.ts';

interface Marker { pid: number; step: Step; startedAt: number; finished: boolean; restarts: number }

const say = consoleOut.say;

function writeMarker(m: Marker): void {
  try { writeFileSync(PATHS.stateFile, JSON.stringify(m)); } catch { /* /run not mounted yet */ }
}

function readMarker(): Marker | null {
  try { return JSON.parse(readFileSync(PATHS.stateFile, 'utf8')) as Marker; } catch { return null; }
}

function installSignalHandlers(): void {
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      const ep = currentEntrypoint();
      if (ep?.pid && ep.exitCode === null) {
        say(`${sig} received: forwarding it to the entrypoint (pid ${ep.pid})`);
        try { ep.kill(sig); } catch { /* gone */ }
      } else {
        say(`${sig} received: no entrypoint is running; the agent keeps going`);
      }
    });
  }
}

export const realSteps: AgentSteps = {
  mounts: () => mountEarly(),
  drivers: (cfg) => loadDrivers(cfg, say),
  net: (cfg) => bringUpNetwork(cfg, say),
  hello: (cfg, net) => sayHello(cfg, net, say),
  stream: (spec, cfg, hooks) => streamToTarget(spec, cfg, hooks, say),
  rootDevice: (cfg) => rootDevice(cfg.root!),
  mount: (device, o) => mountDisk(device, o),
  run: (spec, onLine) => runEntrypoint(spec, onLine),
  after: (action) => doAfter(action, say),
  install: (spec, device) => installFirstBoot(spec, device, say),
};

export const realPersistSteps: PersistSteps = {
  markDisk: async (spec, device, net) => { await markDisk(spec, device, net.mac); },
  findDisk: (cfg, net) => findPersistentDisk(cfg, net.mac),
  checkIn: (cfg, net, found) => checkIn(cfg, net, found, say),
  report: (cfg, net, found, r) => reportBoot(cfg, net, found, r),
};

async function main(): Promise<void> {
  // An error that escapes a step is printed, not fatal: the agent exiting would only make init respawn it.
  process.on('uncaughtException', (e) => { consoleOut.warn(`agent error: ${e.stack ?? e.message}`); });
  process.on('unhandledRejection', (e) => { consoleOut.warn(`agent error (unhandled rejection): ${(e as Error)?.stack ?? String(e)}`); });
  installSignalHandlers();
  process.env.PATH = '/bin:/sbin:/usr/bin:/usr/sbin:/lib/ironboot/bin';
  say(`agent starting (pid ${process.pid}, node ${process.version})`);
  let cfg: AgentConfig;
  try {
    await mountEarly();
    cfg = parseAgentConfig(readFileSync('/proc/cmdline', 'utf8'));
  } catch (e) {
    consoleOut.warn(`cannot even mount /proc: ${(e as Error).message}`);
    await consoleShell(say);
    return;
  }
  const ca = trustOperatorCa();
  if (ca) say(`HTTPS: verifying the server against the operator's CA ${ca}`);
  const reporter = cfg.mode === 'server'
    ? new EventReporter({ server: cfg.server!, workflowId: cfg.workflowId!, token: () => cfg.token!, console: consoleOut })
    : null;

  const prev = readMarker();
  if (prev && prev.pid !== process.pid) {
    const what = prev.finished ? 'after the workflow had finished' : `during step ${prev.step}`;
    consoleOut.warn(`the agent restarted after an unexpected exit ${what} (previous pid ${prev.pid}); not starting over`);
    writeMarker({ ...prev, pid: process.pid, restarts: prev.restarts + 1 });
    cfg.token = savedSessionToken() ?? cfg.token; // the boot token was exchanged by the previous run's hello
    if (!prev.finished && reporter) {
      await reporter.final({ state: 'failed', message: `agent exited unexpectedly during step ${prev.step}` }, { maxAttempts: 5 });
    }
    await consoleShell(say);
    return;
  }
  const marker: Marker = { pid: process.pid, step: 'mounts', startedAt: Date.now(), finished: false, restarts: 0 };
  writeMarker(marker);


  await runAgent({
    cfg, steps: realSteps, persist: realPersistSteps, reporter, console: consoleOut,
    onStep: (s) => {
      marker.step = s;
      if (s === 'after') marker.finished = true;
      writeMarker(marker);
    },
  });
}

void main();
