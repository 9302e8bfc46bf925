/**
 * Issue 10 part 2: bootable OS installs in the QEMU lab, UEFI and BIOS. A Debian bookworm built in the test by
 * debootstrap (its own kernel, systemd, networkd; test/helpers/debian-image.ts, cached) is imported as a docker
 * archive, an install workflow (after=reboot) writes its bootable disk to the VM's disk with the machine's first-boot
 * data, and the VM (QEMU -no-reboot: the reboot ends it) is started again on the same disk. That second boot
 * netboots only as far as ironboot's local-boot script (the NIC has bootindex 1, the disk 2), then GRUB from the
 * disk loads Debian's own kernel: the console shows GRUB, Debian's kernel and the hostname's login prompt, the
 * daemon serves no kernel again, and the machine answers on the static address networkd was given (no DHCP from it
 * once Debian runs).
 *
 * The timeout covers the wait for the shared QEMU lock (test/helpers/qemu-lock.ts); the run itself takes about
 * 3-4 minutes under TCG (the console and the daemon's log show each phase).
 */
import { test } from 'node:test';
import { labUnavailable } from '../helpers/lab-env.ts';
import { debianUnavailable } from '../helpers/debian-image.ts';
import { installAndBoot } from '../helpers/install-lab.ts';

const skip = labUnavailable() || debianUnavailable() || false;

test('install (UEFI): Debian with its own kernel boots from its own disk with the hostname and the static address it was given', { skip, timeout: 900_000 }, async (t) => {
  await installAndBoot('uefi', 31, (m) => console.log(`# ${m}`), t.signal);
});

test('install (BIOS): Debian with its own kernel boots from its own disk with the hostname and the static address it was given', { skip, timeout: 900_000 }, async (t) => {
  await installAndBoot('bios', 32, (m) => console.log(`# ${m}`), t.signal);
});
