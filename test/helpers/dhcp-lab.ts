/**
 * DHCP integration test helpers: the ironboot DHCP runner inside a namespace, and real clients (busybox udhcpc,
 * ISC dhclient) whose hook scripts only record what they were told (nothing is configured outside the
 * namespace; dhclient gets its own -cf/-sf/-lf/-pf files, never /etc/resolv.conf).
 */
import { mkdtempSync, writeFileSync, readFileSync, existsSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync, type ChildProcess } from 'node:child_process';
import type { Namespace } from './netns.ts';
import type { MachineInput } from '../../server/store/machines.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUNNER = join(ROOT, 'test', 'helpers', 'dhcp-server-runner.ts');
export const NATIVE_ADDON = join(ROOT, 'server', 'dhcp', 'native', 'build', 'Release', 'ironboot_dhcp_native.node');

/** Builds the native addon once if missing (tests run where deploy/setup.sh may not have). */
export function ensureNativeAddon(): void {
  if (existsSync(NATIVE_ADDON)) return;
  const r = spawnSyncQuiet('bash', [join(ROOT, 'deploy', 'build-native.sh'), join(ROOT, 'server', 'dhcp', 'native')]);
  if (!existsSync(NATIVE_ADDON)) throw new Error(`could not build the DHCP native addon: ${r}`);
}

function spawnSyncQuiet(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.status} ${r.stdout} ${r.stderr}`;
}

const tempDirs: string[] = [];
process.once('exit', () => { for (const d of tempDirs) { try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort */ } } });

/** A temporary directory, removed when the test process exits. */
export function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `ibd-${tag}-`));
  tempDirs.push(d);
  return d;
}

export interface RunningServer {
  proc: ChildProcess;
  stderr: () => string;
  metrics: () => Promise<string>;
  stop: () => Promise<void>;
}

/** Starts test/helpers/dhcp-server-runner.ts inside ns with these serve flags; resolves once it listens. */
export async function startDhcpRunner(ns: Namespace, opts: { dataDir: string; machines?: MachineInput[]; args: string[] }): Promise<RunningServer> {
  ensureNativeAddon();
  const mfile = join(tempDir('machines'), 'machines.json');
  writeFileSync(mfile, JSON.stringify(opts.machines ?? []));
  const proc = ns.spawn(process.execPath, ['--import', 'tsx', RUNNER, '--machines', mfile, '--', '--data-dir', opts.dataDir, ...opts.args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { err += d; if (err.length > 4e6) err = err.slice(-2e6); });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`DHCP runner did not start in 20 s: ${out} ${err.slice(-2000)}`)), 20000);
    const check = () => {
      if (out.includes('READY')) { clearTimeout(t); resolve(); }
      else if (out.includes('FAILED')) { clearTimeout(t); reject(new Error(`DHCP runner failed: ${out} ${err.slice(-2000)}`)); }
    };
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`DHCP runner exited ${code}: ${out} ${err.slice(-2000)}`)); });
  });
  return {
    proc,
    stderr: () => err,
    metrics: async () => {
      const start = out.length;
      proc.kill('SIGUSR2');
      for (let i = 0; i < 100; i++) {
        const seg = out.slice(start);
        if (seg.includes('\nEND\n')) return seg.slice(seg.indexOf('METRICS'), seg.indexOf('\nEND\n'));
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('no metrics from the runner');
    },
    stop: () => new Promise<void>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    }),
  };
}

/** Sum of a counter's samples whose labels contain all of `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(' ').pop());
  }
  return sum;
}

/** A hook script that appends its argument and environment to outFile (dhclient clears the environment). */
const recordScript = (outFile: string, configure = false): string => `#!/bin/sh
{ echo "EVENT=$1"; env | grep -v '^PWD=' ; echo "--"; } >> '${outFile}'
${configure ? `# inside the test's own namespace only (udhcpc runs there): so that renewals can be unicast
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
esac` : ''}
exit 0
`;

export interface UdhcpcResult { exitCode: number | null; events: Record<string, string>[]; bound: Record<string, string> | null; log: string }

function parseEvents(file: string): Record<string, string>[] {
  if (!existsSync(file)) return [];
  // only whole events: the script may be halfway through appending the last one
  return readFileSync(file, 'utf8').split('--\n').slice(0, -1).filter((b) => b.trim()).map((block) => {
    const env: Record<string, string> = {};
    for (const line of block.split('\n')) { const i = line.indexOf('='); if (i > 0) env[line.slice(0, i)] = line.slice(i + 1); }
    return env;
  });
}

/** busybox udhcpc once (-q -n): returns the env of its `bound` event, if any. Extra args e.g. ['-V', 'PXEClient…']. */
export async function runUdhcpc(ns: Namespace, iface: string, args: string[] = [], opts: { tries?: number; timeoutMs?: number; configure?: boolean } = {}): Promise<UdhcpcResult> {
  const dir = tempDir('udhcpc');
  const script = join(dir, 'script.sh');
  const outFile = join(dir, 'events');
  writeFileSync(script, recordScript(outFile, opts.configure)); chmodSync(script, 0o755);
  const tries = String(opts.tries ?? 3);
  const p = ns.spawn('busybox', ['udhcpc', '-i', iface, '-f', '-q', '-n', '-t', tries, '-T', '1', '-A', '1', '-s', script, ...args]);
  let log = '';
  p.stdout!.on('data', (d) => { log += d; });
  p.stderr!.on('data', (d) => { log += d; });
  const exitCode = await waitExit(p, opts.timeoutMs ?? 20000);
  const events = parseEvents(outFile);
  return { exitCode, events, bound: events.find((e) => e.EVENT === 'bound') ?? null, log };
}

/** A long-running udhcpc (renew with SIGUSR1, release with SIGUSR2); events read with `events()`. */
export function startUdhcpc(ns: Namespace, iface: string, args: string[] = [], opts: { configure?: boolean } = {}): { proc: ChildProcess; events: () => Record<string, string>[]; log: () => string } {
  const dir = tempDir('udhcpc');
  const script = join(dir, 'script.sh');
  const outFile = join(dir, 'events');
  writeFileSync(script, recordScript(outFile, opts.configure)); chmodSync(script, 0o755);
  const p = ns.spawn('busybox', ['udhcpc', '-i', iface, '-f', '-t', '5', '-T', '1', '-A', '1', '-s', script, ...args]);
  let log = '';
  p.stdout!.on('data', (d) => { log += d; });
  p.stderr!.on('data', (d) => { log += d; });
  return { proc: p, events: () => parseEvents(outFile), log: () => log };
}

export async function waitFor<T>(fn: () => T | undefined | null | false, what: string, timeoutMs = 15000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function waitExit(p: ChildProcess, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    if (p.exitCode !== null) return resolve(p.exitCode);
    const t = setTimeout(() => { p.kill('SIGKILL'); }, timeoutMs);
    p.once('exit', (code) => { clearTimeout(t); resolve(code); });
  });
}

/** ISC dhclient, foreground, own config/script/lease/pid files; resolves with the env of BOUND (then stops it). */
export async function runDhclient(ns: Namespace, iface: string, timeoutMs = 20000): Promise<{ bound: Record<string, string> | null; log: string; leases: string }> {
  const dir = tempDir('dhclient');
  const script = join(dir, 'script.sh');
  const outFile = join(dir, 'events');
  writeFileSync(script, recordScript(outFile)); chmodSync(script, 0o755);
  const conf = join(dir, 'dhclient.conf');
  writeFileSync(conf, 'request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name, interface-mtu;\n');
  const lf = join(dir, 'dhclient.leases');
  const p = ns.spawn('dhclient', ['-4', '-1', '-d', '-v', '-cf', conf, '-sf', script, '-lf', lf, '-pf', join(dir, 'dhclient.pid'), iface]);
  let log = '';
  p.stdout!.on('data', (d) => { log += d; });
  p.stderr!.on('data', (d) => { log += d; });
  let bound: Record<string, string> | null = null;
  try {
    bound = await waitFor(() => parseEvents(outFile).find((e) => ['BOUND', 'REBOOT', 'RENEW'].includes(e.reason)), 'dhclient BOUND', timeoutMs);
  } catch { /* returns null */ }
  if (p.exitCode === null) { p.kill('SIGTERM'); await waitExit(p, 3000); }
  return { bound, log, leases: existsSync(lf) ? readFileSync(lf, 'utf8') : '' };
}

/** Sets a fixed MAC on an interface in ns (down/up around it). */
export function setMac(ns: Namespace, iface: string, mac: string): void {
  ns.ip('link', 'set', iface, 'down');
  ns.ip('link', 'set', iface, 'address', mac);
  ns.ip('link', 'set', iface, 'up');
}
