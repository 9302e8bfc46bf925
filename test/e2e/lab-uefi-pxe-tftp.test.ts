/**
 * The chainload through TFTP, for real: OVMF's own PXE (the NIC without an option ROM) → ironboot DHCP (arch 7)
 * → TFTP ipxe.efi from ironboot → iPXE's DHCP (user class iPXE) → the per-MAC script over HTTP → kernel +
 * initramfs. The other tests boot through the NIC ROM's iPXE, which goes straight to HTTP; this one stops once
 * the kernel has its initramfs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { LabEnv, buildHttpdDisk, labUnavailable } from '../helpers/lab-env.ts';
import { OVMF_CODE, macForName } from '../../server/lab/qemu.ts';

const skip = labUnavailable() || (existsSync(OVMF_CODE) ? false : `${OVMF_CODE} missing (apt-get install ovmf)`);

test('UEFI firmware PXE → TFTP ipxe.efi → iPXE → per-MAC script → kernel', { skip, timeout: 300_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 17 });
  t.after(() => env.destroy());
  const mac = macForName(`${env.ns}/pxe`);
  await env.registerMachine(mac, env.hostAddress(7));
  await buildHttpdDisk(env);
  const wf = await env.api('POST', '/workflows', { machine: mac, image: 'httpd', target: '/dev/vda' });
  const vm = env.startVm({ name: 'pxe', mac, nic: 'virtio', firmware: 'uefi', noRom: true });
  await vm.waitFor(/EFI stub: Loaded initrd from command line option/, 180_000, { failOn: /ironboot: could not load|No bootable device/ });
  assert.ok(vm.find(/ironboot: provisioning/) >= 0);
  assert.ok(['booting', 'agent-online'].includes((await env.workflow(wf.id)).state), 'serving the script moved the workflow to booting');
  const text = vm.text();
  assert.match(text, /Start PXE over IPv4/);
  assert.match(text, /NBP filename is ipxe\.efi/, 'DHCP sent UEFI firmware to ipxe.efi over TFTP');
  assert.match(text, /NBP file downloaded successfully/, 'TFTP transfer from ironboot');
  assert.match(text, /iPXE initialising devices/);
  assert.match(text, new RegExp(`Filename: http://${env.address.replaceAll('.', '\\.')}:8080/boot/${mac}\\.ipxe`), 'iPXE DHCP got the per-MAC script URL');
});
