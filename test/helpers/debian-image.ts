/**
 * A small bootable Debian (bookworm) for the install tests: debootstrap --variant=minbase with its own kernel
 * (linux-image-amd64), systemd as init, udev and systemd-networkd enabled, trimmed (docs, locales, kernel modules
 * a VM never loads) and with a small initramfs (MODULES=list: virtio, ext4). Built once per package list and
 * recipe under CACHE_DIR/debian-<hash>/ and written as a `docker save`-style archive directory (manifest.json,
 * config, one layer tar), which ironboot imports as source type docker-archive.
 *
 * Run on its own to fill the cache: node --import tsx test/helpers/debian-image.ts
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR } from './agent-artifacts.ts';

export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_MIRROR = process.env.IRONBOOT_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
export const DEBIAN_PACKAGES = ['linux-image-amd64', 'systemd-sysv', 'udev', 'iproute2', 'kmod', 'zstd'];

/**
 * The kernel modules kept (paths under /lib/modules/VERSION/kernel): what a QEMU lab VM loads (virtio, SCSI/ATA,
 * e1000, ext4 and what it needs); the rest is removed to keep the disk small, and depmod runs again.
 */
const KEEP_MODULES = ['drivers/block', 'drivers/virtio', 'drivers/scsi', 'drivers/ata', 'drivers/char', 'drivers/net/virtio_net.ko',
  'drivers/net/net_failover.ko', 'drivers/net/ethernet/intel/e1000', 'drivers/nvme', 'net/core', 'fs/ext4', 'fs/jbd2', 'fs/mbcache.ko',
  'fs/fat', 'fs/nls', 'lib', 'crypto', 'arch'];

const RECIPE_VERSION = 'v4';

export function debianKey(): string {
  return createHash('sha256').update(JSON.stringify([RECIPE_VERSION, DEBIAN_SUITE, DEBIAN_PACKAGES, KEEP_MODULES])).digest('hex').slice(0, 12);
}

function sh(script: string, what: string, log: (m: string) => void): void {
  const t0 = Date.now();
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${(r.stdout + r.stderr).slice(-4000)}`);
  log(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

export interface DebianImage {
  /** The docker-archive directory (manifest.json, config.json, layer.tar). */
  archive: string;
  /** The kernel version inside (/boot/vmlinuz-VERSION). */
  kernelVersion: string;
  layerBytes: number;
}

/** Builds (or reuses) the Debian archive. Needs root and debootstrap; several minutes the first time. */
export async function debianImage(log: (m: string) => void = () => {}): Promise<DebianImage> {
  const dir = join(CACHE_DIR, `debian-${debianKey()}`);
  const archive = join(dir, 'archive');
  const done = join(dir, 'kernel-version');
  if (!existsSync(done)) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const root = join(tmp, 'rootfs');
    const out = join(tmp, 'archive');
    try {
      sh(`debootstrap --variant=minbase --include=${DEBIAN_PACKAGES.join(',')} ${DEBIAN_SUITE} ${root} ${DEBIAN_MIRROR} >${tmp}/debootstrap.log 2>&1 || { tail -50 ${tmp}/debootstrap.log; exit 1; }`, 'debootstrap', log);
      const kver = readdirSync(join(root, 'lib/modules'))[0];
      if (!kver) throw new Error('debootstrap installed no kernel modules');
      const mods = `${root}/usr/lib/modules/${kver}/kernel`;
      sh(`
        mkdir '${tmp}/keep'
        cd '${mods}'
        for m in ${KEEP_MODULES.join(' ')}; do [ -e "$m" ] && { mkdir -p "${tmp}/keep/$(dirname "$m")"; mv "$m" "${tmp}/keep/$m"; }; done
        cd /
        rm -rf '${mods}' && mv '${tmp}/keep' '${mods}'
        rm -rf '${root}'/var/cache/apt/archives/*.deb '${root}'/usr/lib/udev/hwdb.d '${root}'/usr/lib/x86_64-linux-gnu/gconv
        rm -rf '${root}'/usr/share/doc/* '${root}'/usr/share/man/* '${root}'/usr/share/locale/* '${root}'/var/cache/apt/*.bin '${root}'/var/lib/apt/lists/* '${root}'/var/log/*.log
        chroot '${root}' depmod -a ${kver}
        printf 'MODULES=list\\nCOMPRESS=zstd\\n' > '${root}'/etc/initramfs-tools/conf.d/ironboot-test
        printf 'virtio_pci\\nvirtio_blk\\nvirtio_scsi\\nsd_mod\\next4\\n' >> '${root}'/etc/initramfs-tools/modules
        chroot '${root}' update-initramfs -u -k ${kver} >/dev/null
        chroot '${root}' systemctl enable systemd-networkd.service >/dev/null 2>&1
        chroot '${root}' systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service >/dev/null 2>&1 || true
        # no root password: the console login prompt is what the test reads, nobody logs in
        echo 'debian-install-test' > '${root}'/etc/hostname
        : > '${root}'/etc/machine-id
        mkdir -p '${root}'/etc/systemd/system.conf.d
        printf '[Manager]\\nShowStatus=no\\nDefaultTimeoutStartSec=30s\\n' > '${root}'/etc/systemd/system.conf.d/ironboot-test.conf
        mkdir -p '${out}'
        tar --numeric-owner --xattrs --xattrs-include='*' -C '${root}' -cf '${out}/layer.tar' .
      `, 'trim, initramfs, layer tar', log);
      const diffId = `sha256:${await sha256File(join(out, 'layer.tar'))}`;
      const config = JSON.stringify({
        architecture: 'amd64', os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/true'] },
        rootfs: { type: 'layers', diff_ids: [diffId] },
      });
      writeFileSync(join(out, 'config.json'), config);
      writeFileSync(join(out, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: ['debian-install:bookworm'], Layers: ['layer.tar'] }]));
      writeFileSync(join(tmp, 'kernel-version'), kver);
      rmSync(root, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }
  const { readFileSync } = await import('node:fs');
  return { archive, kernelVersion: readFileSync(done, 'utf8').trim(), layerBytes: statSync(join(archive, 'layer.tar')).size };
}

/** Why the Debian image cannot be built here, or null. */
export function debianUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (debootstrap, chroot)';
  if (spawnSync('bash', ['-c', 'command -v debootstrap'], { stdio: 'ignore' }).status !== 0) return 'debootstrap is not installed (deploy/setup.sh --test)';
  return null;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t0 = Date.now();
  const img = await debianImage((m) => console.log(m));
  console.log(JSON.stringify({ ...img, seconds: (Date.now() - t0) / 1000 }));
}
