/**
 * Process and console helpers for the agent: the paths of the tools shipped in the initramfs, running a
 * command to completion, and console messages.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Where the initramfs builder puts things (init/build/layout.ts writes the same paths). */
export const PATHS = {
  busybox: '/bin/busybox',
  tools: '/lib/ironboot/bin',
  zstd: '/lib/ironboot/bin/zstd',
  resize2fs: '/lib/ironboot/bin/resize2fs',
  blkdiscard: '/lib/ironboot/bin/blkdiscard',
  udhcpcScript: '/lib/ironboot/udhcpc.script',
  runDir: '/run/ironboot',
  stateFile: '/run/ironboot/agent.json',
  ramDir: '/run/ironboot/ram',
  mnt: '/mnt',
};

export const AGENT_VERSION = '0.1.0';

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command to completion; never throws for a non-zero exit (the caller decides). */
export function run(cmd: string, args: string[], opts: SpawnOptions & { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let child;
    try {
      child = spawn(cmd, args, { ...opts, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ code: 127, stdout: '', stderr: String((e as Error).message) });
      return;
    }
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : null;
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (e) => { stderr += e.message; });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin!.on('error', () => { /* the command exited without reading its input */ });
    child.stdin!.end(opts.input ?? '');
  });
}

/** Runs a busybox applet. */
export const bb = (applet: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> =>
  run(PATHS.busybox, [applet, ...args], opts);

/** Like run, but a non-zero exit becomes an Error that names the command and its output. */
export async function mustRun(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${[cmd, ...args].join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r;
}

export interface Console { say(msg: string): void; warn(msg: string): void }

/** Seconds since boot (the machine's, not the agent's: boot-to-entrypoint is read off the console). */
const uptime = (): string => {
  try { return readFileSync('/proc/uptime', 'utf8').split(' ')[0]; } catch { return process.uptime().toFixed(2); }
};

/** Console messages: one line each, prefixed so they stand out among the kernel's. */
export const consoleOut: Console = {
  say: (msg) => { process.stdout.write(`ironboot[${uptime()}]: ${msg}\n`); },
  warn: (msg) => { process.stdout.write(`ironboot[${uptime()}]: WARNING: ${msg}\n`); },
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
