/** Step 1: the early mounts (idempotent, so a respawned agent can run it again). */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { bb, PATHS } from '../sys.ts';

const EARLY: Array<[string, string, string, string]> = [
  ['proc', 'proc', '/proc', 'nosuid,nodev,noexec'],
  ['sysfs', 'sysfs', '/sys', 'nosuid,nodev,noexec'],
  ['devtmpfs', 'devtmpfs', '/dev', 'nosuid,mode=0755'],
  ['devpts', 'devpts', '/dev/pts', 'nosuid,noexec,gid=5,mode=620,ptmxmode=000'],
  ['tmpfs', 'shm', '/dev/shm', 'nosuid,nodev,mode=1777'],
  ['tmpfs', 'run', '/run', 'nosuid,nodev,mode=0755'],
  ['tmpfs', 'tmp', '/tmp', 'nosuid,nodev,mode=1777'],
];

/**
 * One busybox shell does every mount (each process spawned from node costs a fork of a large process,
 * which is slow under emulation); checking /proc/self/mounts keeps it idempotent for a respawned agent.
 */
export function earlyMountScript(withProc = false): string {
  const proc = withProc ? "[ -e /proc/self ] || { mkdir -p /proc && mount -t proc -o nosuid,nodev,noexec proc /proc; }\n" : '';
  return proc + EARLY.map(([type, source, target, options]) =>
    `mkdir -p ${target} && { grep -q ' ${target} ' /proc/self/mounts || mount -t ${type} -o ${options} ${source} ${target} || echo "mount -t ${type} ${target} failed" >&2; }`,
  ).join('\n') + `\nmkdir -p ${PATHS.runDir}\n`;
}

/** The same mounts as a script init runs before the agent starts (init/build: /etc/inittab sysinit). */
export const EARLY_MOUNTS = '/lib/ironboot/early-mounts.sh';

/** Whether every early mount is there already (init's sysinit did them): then no shell needs to be spawned. */
function allMounted(): boolean {
  try {
    const m = readFileSync('/proc/self/mounts', 'utf8');
    return EARLY.every(([, , target]) => m.includes(` ${target} `)) && existsSync(PATHS.runDir);
  } catch {
    return false;
  }
}

export async function mountEarly(): Promise<void> {
  if (allMounted()) return;
  // The check needs /proc: mount it first when it is not there.
  if (!(await stat('/proc/self').catch(() => null))) {
    await mkdir('/proc', { recursive: true });
    await bb('mount', ['-t', 'proc', '-o', 'nosuid,nodev,noexec', 'proc', '/proc']);
  }
  const r = await bb('sh', ['-c', earlyMountScript()]);
  if (r.stderr.trim()) throw new Error(r.stderr.trim());
}
