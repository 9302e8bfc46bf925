/**
 * mode install, after the bootable disk was streamed and verified (disk.ts checked the target first, its size
 * included): the root partition is reached through a loop device at its offset (no partition re-read needed, the
 * machine reboots next), its ext4 superblock is checked against what the server built, the first-boot files from
 * the spec are written (hostname, hosts, systemd-networkd, authorized_keys, the NoCloud seed, GRUB's kernel
 * arguments), and the filesystem is synced and unmounted. Nothing here runs code from the installed image.
 */
import { chmod, lstat, mkdir, rm, writeFile, open } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import type { InstallFile, WorkflowSpec } from '../../../server/agent/api.ts';
import { bb, mustRun, PATHS, run } from '../sys.ts';

export const INSTALL_ROOT = `${PATHS.runDir}/install-root`;

/** Where a file of the spec lands under `root`; refuses paths that leave it (pure). */
export function installPath(root: string, p: string): string {
  const n = normalize(p);
  if (!n.startsWith('/') || n.split('/').includes('..')) throw new Error(`install file ${p}: not an absolute path inside the root`);
  return join(root, n);
}

/** Writes the first-boot files under `root` (a mounted installed root, or a directory in tests). */
export async function writeInstallFiles(root: string, files: InstallFile[]): Promise<string[]> {
  const written: string[] = [];
  for (const f of files) {
    const dest = installPath(root, f.path);
    const dir = dirname(dest);
    await mkdir(dir, { recursive: true, mode: f.dirMode ?? 0o755 });
    if (f.dirMode !== undefined) await chmod(dir, f.dirMode);
    const st = await lstat(dest).catch(() => null);
    if (st?.isSymbolicLink() || (st && !st.isFile())) {
      if (!f.replaceSymlink && st.isSymbolicLink()) throw new Error(`${f.path} in the installed root is a symlink; not following it`);
      await rm(dest, { recursive: true, force: true });
    }
    await writeFile(dest, f.content, { mode: f.mode });
    await chmod(dest, f.mode);
    written.push(f.path);
  }
  return written;
}

/** The ext UUID of a superblock at `offset` of `device` (null: none). */
async function extUuidAt(device: string, offset: number): Promise<string | null> {
  const fh = await open(device, 'r');
  try {
    const sb = Buffer.alloc(1024);
    await fh.read(sb, 0, 1024, offset + 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) return null;
    return sb.subarray(0x68, 0x78).toString('hex');
  } finally { await fh.close(); }
}

/**
 * Mounts the root partition of the installed disk, writes the spec's files, unmounts. Returns the files written and
 * the loop device used. `say` reports each step on the console (the caller reports them as events too).
 */
export async function installFirstBoot(spec: WorkflowSpec, device: string, say: (m: string) => void): Promise<{ written: string[]; loop: string }> {
  const ins = spec.install;
  if (!ins) throw new Error('the server sent no install section for this install workflow');
  if (!(await extUuidAt(device, ins.rootOffset))) throw new Error(`${device}: no ext4 at byte ${ins.rootOffset} (partition ${ins.rootPartition}) after the stream`);
  const free = await mustRun(PATHS.busybox, ['losetup', '-f']);
  const loop = free.stdout.trim();
  if (!loop.startsWith('/dev/loop')) throw new Error(`no free loop device (losetup -f said "${free.stdout.trim()}")`);
  await mustRun(PATHS.busybox, ['losetup', '-o', String(ins.rootOffset), loop, device]);
  let mounted = false;
  try {
    await mkdir(INSTALL_ROOT, { recursive: true });
    await mustRun(PATHS.busybox, ['mount', '-t', 'ext4', loop, INSTALL_ROOT]);
    mounted = true;
    say(`root partition ${ins.rootPartition} of ${device} (PARTUUID ${ins.rootPartUuid}) mounted through ${loop}`);
    const written = await writeInstallFiles(INSTALL_ROOT, ins.files);
    await bb('sync', []);
    await mustRun(PATHS.busybox, ['umount', INSTALL_ROOT]);
    mounted = false;
    return { written, loop };
  } finally {
    if (mounted) {
      const u = await run(PATHS.busybox, ['umount', INSTALL_ROOT]);
      if (u.code !== 0) say(`umount ${INSTALL_ROOT}: ${u.stderr.trim()}`);
    }
    await run(PATHS.busybox, ['losetup', '-d', loop]);
  }
}
