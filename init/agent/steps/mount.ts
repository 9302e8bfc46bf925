/**
 * Step 6: mount the disk at /mnt (filesystem detected from its superblock, not assumed), bind /dev /proc
 * /sys /run into it, write /etc/resolv.conf and /etc/hostname. Read-only filesystems (squashfs, erofs)
 * get a tmpfs overlay so the files can be written.
 */
import { lstat, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { bb, mustRun, PATHS, sleep } from '../sys.ts';
import { detectFsType, FS_PROBE_BYTES, READ_ONLY_FS } from './fstype.ts';
import { resolveBlockTarget } from './disk.ts';

export async function probeFsType(device: string): Promise<string | null> {
  const fh = await open(device, 'r');
  try {
    const buf = Buffer.alloc(FS_PROBE_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return detectFsType(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

export async function rootDevice(root: string): Promise<string> {
  return resolveBlockTarget(root, 30_000);
}

export async function mountDisk(device: string, o: { fsType: string | null; hostname: string | null; dns: string[]; searchDomain: string | null }): Promise<{ fsType: string }> {
  const detected = await probeFsType(device);
  const fsType = detected ?? o.fsType;
  if (!fsType) throw new Error(`no known filesystem on ${device}`);
  if (o.fsType && detected && o.fsType !== detected && !(o.fsType.startsWith('ext') && detected.startsWith('ext'))) {
    throw new Error(`${device} holds ${detected}, the workflow says ${o.fsType}`);
  }
  const isFile = (await stat(device)).isFile();
  const mnt = PATHS.mnt;
  await mkdir(mnt, { recursive: true });
  if (fsType !== 'ext4') await bb('modprobe', ['-q', fsType]);   // ext4 is loaded with the drivers
  const opts = isFile ? ['-o', 'loop'] : [];
  if (READ_ONLY_FS.has(fsType)) {
    const lower = `${PATHS.runDir}/lower`;
    const rw = `${PATHS.runDir}/overlay`;
    await mkdir(lower, { recursive: true });
    await mkdir(rw, { recursive: true });
    await mustRun(PATHS.busybox, ['mount', '-t', fsType, '-o', ['ro', ...(isFile ? ['loop'] : [])].join(','), device, lower]);
    await mustRun(PATHS.busybox, ['mount', '-t', 'tmpfs', 'ironboot-overlay', rw]);
    await mkdir(`${rw}/upper`); await mkdir(`${rw}/work`);
    await bb('modprobe', ['-q', 'overlay']);
    await mustRun(PATHS.busybox, ['mount', '-t', 'overlay', '-o', `lowerdir=${lower},upperdir=${rw}/upper,workdir=${rw}/work`, 'overlay', mnt]);
  } else {
    let last = '';
    for (let i = 0; i < 3; i++) {
      const r = await bb('mount', ['-t', fsType, ...opts, device, mnt]);
      if (r.code === 0) { last = ''; break; }
      last = r.stderr.trim();
      await sleep(300);
    }
    if (last) throw new Error(`mount -t ${fsType} ${device} ${mnt}: ${last}`);
  }
  // One shell for the four binds (every spawn from node is a fork of a large process).
  await mustRun(PATHS.busybox, ['sh', '-e', '-c',
    ['dev', 'proc', 'sys', 'run'].map((d) => `mkdir -p ${mnt}/${d} && mount -o rbind /${d} ${mnt}/${d}`).join('\n')]);
  await mkdir(`${mnt}/etc`, { recursive: true });
  if (o.dns.length || o.searchDomain) {
    const conf = `${o.searchDomain ? `search ${o.searchDomain}\n` : ''}${o.dns.map((d) => `nameserver ${d}`).join('\n')}\n`;
    // A symlink (systemd-resolved's stub) would point at nothing here: replace it with a file.
    if (await lstat(`${mnt}/etc/resolv.conf`).then((s) => s.isSymbolicLink()).catch(() => false)) await rm(`${mnt}/etc/resolv.conf`);
    await writeFile(`${mnt}/etc/resolv.conf`, conf);
  }
  if (o.hostname) {
    await writeFile(`${mnt}/etc/hostname`, `${o.hostname}\n`);
    await bb('hostname', [o.hostname]);
  }
  return { fsType };
}
