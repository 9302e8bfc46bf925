/**
 * Step 7: run the entrypoint inside /mnt: chroot, working directory and uid/gid through busybox nsenter
 * (`-r` root, `-w` directory, `-S`/`-G` ids; the image's own /etc/passwd resolves names), the image's Env
 * with the workflow's on top. Output goes to the console as it comes and, line by line, to onLine.
 * SIGTERM/SIGINT received by the agent are forwarded to the entrypoint (index.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { LogLine, RunSpec } from '../main.ts';
import { PATHS } from '../sys.ts';
import { resolveUser } from './user.ts';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

let current: ChildProcess | null = null;

/** The running entrypoint, if any (signals are forwarded to it). */
export const currentEntrypoint = (): ChildProcess | null => current;

/** The command line that runs `spec` inside `root` (pure). */
export function entrypointCommand(spec: RunSpec, ids: { uid: number; gid: number; home: string | null }, root = PATHS.mnt): {
  cmd: string; args: string[]; env: Record<string, string>;
} {
  if (!spec.argv.length) throw new Error('the image has neither Entrypoint nor Cmd, and the workflow gives none');
  const env: Record<string, string> = {};
  for (const kv of spec.env) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  env.PATH ??= DEFAULT_PATH;
  env.HOME ??= ids.home ?? '/';
  env.TERM ??= 'linux';
  const wd = spec.workingDir && spec.workingDir !== '' ? spec.workingDir : '/';
  const args = ['nsenter', `-r${root}`, `-w${root}${wd.startsWith('/') ? wd : `/${wd}`}`];
  if (ids.uid !== 0 || ids.gid !== 0) args.push('-S', String(ids.uid), '-G', String(ids.gid));
  args.push('-F', ...spec.argv);
  return { cmd: PATHS.busybox, args, env };
}

function lines(stream: 'stdout' | 'stderr', onLine: (l: LogLine) => void) {
  let buf = '';
  return {
    push(d: Buffer) {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine({ stream, line: buf.slice(0, nl).replace(/\r$/, '') });
        buf = buf.slice(nl + 1);
      }
      if (buf.length > 8192) { onLine({ stream, line: buf }); buf = ''; }
    },
    end() { if (buf) onLine({ stream, line: buf }); buf = ''; },
  };
}

export async function runEntrypoint(spec: RunSpec, onLine: (l: LogLine) => void, root = PATHS.mnt): Promise<number> {
  const passwd = await readFile(`${root}/etc/passwd`, 'utf8').catch(() => '');
  const group = await readFile(`${root}/etc/group`, 'utf8').catch(() => '');
  const ids = resolveUser(spec.user, passwd, group);
  const { cmd, args, env } = entrypointCommand(spec, ids, root);
  return new Promise<number>((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    current = child;
    const out = lines('stdout', onLine);
    const err = lines('stderr', onLine);
    child.stdout!.on('data', (d: Buffer) => { process.stdout.write(d); out.push(d); });
    child.stderr!.on('data', (d: Buffer) => { process.stderr.write(d); err.push(d); });
    child.on('error', (e) => { current = null; reject(new Error(`cannot start the entrypoint: ${e.message}`)); });
    child.on('close', (code, signal) => {
      current = null;
      out.end(); err.end();
      if (code !== null) resolve(code);
      else resolve(128 + (signal ? (({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15 } as Record<string, number>)[signal] ?? 0) : 0));
    });
  });
}
