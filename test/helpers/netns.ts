/**
 * Network namespaces for tests (the network rule: traffic only between namespaces the test creates).
 *
 *   const lab = await Lab.create('ibd');            // unique prefix per test file
 *   const srv = lab.ns('srv'); const cli = lab.ns('cli');
 *   lab.veth(srv, '10.81.0.1/24', cli, null);       // veth pair between two namespaces
 *   ...; await lab.destroy();                        // always, also on failure (t.after / finally)
 *
 * Namespace names are `<prefix>-<pid>-<name>` so parallel test files never collide; destroy() kills every
 * process this Lab started (by PID) and deletes its namespaces.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export function sh(cmd: string, args: string[], opts: { input?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Whether a command is on PATH. */
export function have(cmd: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** Reason to skip a namespace test, or false when it can run. */
export function netnsUnavailable(...cmds: string[]): string | false {
  if (!isRoot()) return 'needs root for network namespaces';
  for (const c of ['ip', ...cmds]) if (!have(c)) return `${c} is not installed`;
  return false;
}

export class Namespace {
  constructor(readonly name: string, private lab: Lab) {}
  exec(cmd: string, args: string[], opts: { input?: string } = {}): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }
  /** Starts a long-running process inside the namespace; the Lab kills it on destroy(). */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.lab.track(spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
  }
  ip(...args: string[]): string { return sh('ip', ['-n', this.name, ...args]); }
}

let counter = 0;

export class Lab {
  private namespaces: Namespace[] = [];
  private procs: ChildProcess[] = [];
  private constructor(readonly prefix: string) {}

  static async create(prefix: string): Promise<Lab> {
    return new Lab(`${prefix}${process.pid % 100000}${(counter++).toString(36)}`);
  }

  ns(name: string): Namespace {
    const full = `${this.prefix}-${name}`;
    sh('ip', ['netns', 'add', full]);
    const ns = new Namespace(full, this);
    this.namespaces.push(ns);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** A veth pair a<->b with optional addresses (CIDR). Interface names default to v<a>/v<b>. */
  veth(a: Namespace, aAddr: string | null, b: Namespace, bAddr: string | null, names?: [string, string]): [string, string] {
    const id = Math.random().toString(36).slice(2, 7);
    const [na, nb] = names ?? [`va${id}`, `vb${id}`];
    sh('ip', ['link', 'add', na, 'netns', a.name, 'type', 'veth', 'peer', 'name', nb, 'netns', b.name]);
    if (aAddr) a.ip('addr', 'add', aAddr, 'dev', na);
    if (bAddr) b.ip('addr', 'add', bAddr, 'dev', nb);
    a.ip('link', 'set', na, 'up');
    b.ip('link', 'set', nb, 'up');
    return [na, nb];
  }

  track(p: ChildProcess): ChildProcess {
    this.procs.push(p);
    return p;
  }

  async destroy(): Promise<void> {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null && p.pid) {
        try { process.kill(p.pid, 'SIGTERM'); } catch { /* already gone */ }
      }
    }
    await Promise.all(this.procs.map((p) => new Promise<void>((resolve) => {
      if (p.exitCode !== null || p.signalCode !== null) return resolve();
      const t = setTimeout(() => { try { if (p.pid) process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } resolve(); }, 3000);
      p.once('exit', () => { clearTimeout(t); resolve(); });
    })));
    for (const ns of this.namespaces.reverse()) {
      // anything still running inside (children of `ip netns exec`) — only processes in our own namespace
      try {
        const pids = sh('ip', ['netns', 'pids', ns.name]).split(/\s+/).filter(Boolean);
        for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } }
      } catch { /* namespace gone */ }
      try { sh('ip', ['netns', 'del', ns.name]); } catch { /* already gone */ }
    }
    this.namespaces = [];
  }
}
