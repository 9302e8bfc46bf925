/**
 * The lab's network namespace: a bridge with the server address, taps for VMs, and the processes started
 * inside it. A process is only ever signalled by PID after `ip netns identify` places it inside our namespace
 * (PIDs wrap; a stale pid file can name somebody else's process).
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

export class LabError extends Error {
  constructor(message: string) { super(message); this.name = 'LabError'; }
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new LabError(`${cmd} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}

export const ip = (...args: string[]): string => run('ip', args);

export function namespaceExists(ns: string): boolean {
  return run('ip', ['netns', 'list']).split('\n').some((l) => l.split(' ')[0] === ns);
}

/** 10.77.0.1/24 → { address, prefix }; the address is the server's, on the bridge. */
export function parseSubnet(s: string): { address: string; prefix: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(s);
  if (!m || m[1].split('.').some((o) => Number(o) > 255) || Number(m[2]) < 8 || Number(m[2]) > 30) {
    throw new LabError(`--subnet "${s}" is not ADDRESS/PREFIX with a prefix of 8-30, e.g. 10.77.0.1/24`);
  }
  return { address: m[1], prefix: Number(m[2]) };
}

export interface LabNetwork {
  ns: string;
  bridge: string;
  address: string;
  prefix: number;
  taps: string[];
}

/** Creates the namespace, the bridge (server address, no DAD delay for the RA sender) and the taps. */
export function createLabNetwork(n: LabNetwork): void {
  if (namespaceExists(n.ns)) throw new LabError(`network namespace ${n.ns} already exists (ironboot lab down --name ${n.ns})`);
  ip('netns', 'add', n.ns);
  try {
    ip('-n', n.ns, 'link', 'set', 'lo', 'up');
    ip('-n', n.ns, 'link', 'add', n.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    try { run('ip', ['netns', 'exec', n.ns, 'sysctl', '-qw', `net.ipv6.conf.${n.bridge}.accept_dad=0`]); } catch { /* IPv6 off: no RA needed */ }
    ip('-n', n.ns, 'addr', 'add', `${n.address}/${n.prefix}`, 'dev', n.bridge);
    ip('-n', n.ns, 'link', 'set', n.bridge, 'up');
    for (const tap of n.taps) {
      ip('-n', n.ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap');
      ip('-n', n.ns, 'link', 'set', tap, 'master', n.bridge);
      ip('-n', n.ns, 'link', 'set', tap, 'up');
    }
  } catch (err) {
    try { ip('netns', 'del', n.ns); } catch { /* best effort */ }
    throw err;
  }
}

/** Whether PID is a live process inside namespace ns. */
export function pidInNamespace(pid: number, ns: string): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    return run('ip', ['netns', 'identify', String(pid)]).trim() === ns;
  } catch {
    return false;
  }
}

export function namespacePids(ns: string): number[] {
  try {
    return run('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL after graceMs — only if the PID is inside ns. Returns whether it was ours and signalled. */
export async function stopInNamespace(pid: number, ns: string, graceMs = 5000): Promise<boolean> {
  if (!pidInNamespace(pid, ns)) return false;
  try { process.kill(pid, 'SIGTERM'); } catch { return false; }
  for (let t = 0; t < graceMs && alive(pid); t += 100) await sleep(100);
  if (alive(pid) && pidInNamespace(pid, ns)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  for (let t = 0; t < 2000 && alive(pid); t += 50) await sleep(50);
  return true;
}

/**
 * Starts a detached process inside ns (`ip netns exec` execs it, so the PID is the program's own), its output
 * appended to logFile. Returns the PID.
 */
export function spawnInNamespace(ns: string, cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): number {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { detached: true, stdio: ['ignore', fd, fd], env });
    child.unref();
    if (!child.pid) throw new LabError(`could not start ${cmd}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}
