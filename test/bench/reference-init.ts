/**
 * The busybox reference the boot benchmarks (boot.ts, agent.ts) measure ironboot's agent against: the same kernel
 * modules as ironboot's initramfs, and a shell /init doing the same work (mounts, module coldplug, mount the disk,
 * chroot into its entrypoint) with nothing else.
 */
import { writeFileSync } from 'node:fs';
import { compressInitramfs, decompressInitramfs, initramfsCompressionOf } from '../../init/build/index.ts';
import { readCpio, writeCpio, type CpioEntry } from '../../init/build/cpio.ts';

export const SHELL_INIT = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev; mount -t tmpfs tmpfs /run
for pass in 1 2; do modprobe -q -a $(cat $(find /sys/bus/*/devices/*/ -maxdepth 1 -name modalias) 2>/dev/null | sort -u); sleep 0.2; done
modprobe -q -a crc32c_generic sd_mod ext4
for i in $(seq 1 100); do [ -b /dev/sda ] && break; sleep 0.1; done
mkdir -p /mnt; mount -t ext4 /dev/sda /mnt
for d in dev proc sys run; do mount -o rbind /$d /mnt/$d; done
exec chroot /mnt /entry.sh
`;

/** The seed flow's reference initramfs: ours (busybox, modules) without node, zstd, resize2fs and the agent, and SHELL_INIT as /init. */
export function referenceInitramfs(ours: string, out: string): void {
  const cpio = readCpio(decompressInitramfs(ours));
  const keep = cpio.filter((e) => /^(bin|dev|lib\/modules|etc\/(passwd|group)|sbin|usr|proc|sys|run|tmp|mnt)(\/|$)/.test(e.name) && !/^bin\/(node|zstd|resize2fs)$/.test(e.name));
  const entries: CpioEntry[] = keep.map((e) => {
    const type = e.mode & 0o170000;
    if (type === 0o040000) return { path: e.name, type: 'dir', mode: e.mode & 0o7777 };
    if (type === 0o120000) return { path: e.name, type: 'symlink', target: e.data.toString() };
    if (type === 0o020000) return { path: e.name, type: 'char', mode: e.mode & 0o7777, major: e.rdev[0], minor: e.rdev[1] };
    return { path: e.name, type: 'file', mode: e.mode & 0o7777, data: Buffer.from(e.data) };
  });
  entries.push({ path: 'init', type: 'file', mode: 0o755, data: Buffer.from(SHELL_INIT) });
  // compressed as ours is (the codec changes how long the kernel unpacks it: the comparison is of what is inside)
  writeFileSync(out, compressInitramfs(writeCpio(entries), initramfsCompressionOf(ours)));
}
