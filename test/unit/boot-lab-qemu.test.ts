import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuArgs, macForName, parseSize, OVMF_CODE } from '../../server/lab/qemu.ts';
import { parseSubnet, LabError } from '../../server/lab/netns.ts';

test('qemuArgs: BIOS + virtio — TCG, one vCPU, NIC first in the boot order, raw virtio disk', () => {
  const a = qemuArgs({ tap: 'tap1', mac: '52:54:00:01:02:03', nic: 'virtio', firmware: 'bios', disk: '/x/d.img', memoryMb: 1024 });
  const s = a.join(' ');
  assert.match(s, /^-accel tcg -cpu max -smp 1 -m 1024 -nographic /);
  assert.match(s, /-netdev tap,id=n0,ifname=tap1,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=52:54:00:01:02:03,bootindex=1 -boot n/);
  assert.match(s, /-drive file=\/x\/d\.img,if=virtio,format=raw/);
  assert.doesNotMatch(s, /pflash|-no-reboot|romfile/);
});

test('qemuArgs: UEFI + e1000 — OVMF code read-only, the VM\'s own vars copy; plain PXE and no-reboot on request', () => {
  const a = qemuArgs({ tap: 'tap0', mac: '52:54:00:01:02:04', nic: 'e1000', firmware: 'uefi', disk: null, memoryMb: 768, ovmfVars: '/x/v.fd', noReboot: true, noRom: true });
  const s = a.join(' ');
  assert.match(s, /-device e1000,netdev=n0,mac=52:54:00:01:02:04,bootindex=1,romfile= /);
  assert.ok(s.includes(`-drive if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE} -drive if=pflash,format=raw,unit=1,file=/x/v.fd`));
  assert.match(s, /-no-reboot$/);
  assert.doesNotMatch(s, /if=virtio/);
  assert.throws(() => qemuArgs({ tap: 't', mac: 'm', nic: 'e1000', firmware: 'uefi', disk: null, memoryMb: 1024 }), /OVMF_VARS/);
});

test('macForName is stable, QEMU-prefixed, and differs between names', () => {
  assert.equal(macForName('lab/vm1'), macForName('lab/vm1'));
  assert.match(macForName('lab/vm1'), /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.notEqual(macForName('lab/vm1'), macForName('lab/vm2'));
});

test('parseSize and parseSubnet', () => {
  assert.equal(parseSize('4G'), 4 * 2 ** 30);
  assert.equal(parseSize('512m'), 512 * 2 ** 20);
  assert.equal(parseSize('1024'), 1024);
  assert.equal(parseSize('lots'), null);
  assert.deepEqual(parseSubnet('10.77.0.1/24'), { address: '10.77.0.1', prefix: 24 });
  assert.throws(() => parseSubnet('10.77.0.1'), LabError);
  assert.throws(() => parseSubnet('10.77.0.300/24'), /ADDRESS\/PREFIX/);
  assert.throws(() => parseSubnet('10.77.0.1/31'), /8-30/);
});
