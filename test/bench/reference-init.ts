/**
 * The busybox reference the boot benchmarks (boot.ts, agent.ts) measure ironboot's agent against: the same kernel
 * modules as ironboot's initramfs, and a shell /init doing the same work (mounts, module coldplug, mount the disk,
 * chroot into its entrypoint) with nothing else.
 */
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
