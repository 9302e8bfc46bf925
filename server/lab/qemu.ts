/**
 * QEMU command lines for lab VMs (pure), as measured in ../shared/lab: KVM where it works (accel.ts), else software
 * emulation (`-accel tcg -cpu max -smp 1`: -smp 2 was slower on 2 cores, -cpu max has SSE4.2 for crc32c), PXE through the NIC's iPXE option ROM,
 * `-nographic` so SeaBIOS and iPXE print on the serial line too, a raw disk, OVMF pflash for UEFI.
 */
import { createHash } from 'node:crypto';
import { accelArgs, type Accel } from './accel.ts';

export type LabNic = 'virtio' | 'e1000';
export type LabFirmware = 'bios' | 'uefi';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export interface VmSpec {
  tap: string;
  mac: string;
  nic: LabNic;
  firmware: LabFirmware;
  /** Raw disk image (virtio-blk); null: no disk. */
  disk: string | null;
  memoryMb: number;
  /** UEFI: this VM's writable copy of OVMF_VARS. */
  ovmfVars?: string;
  /** Exit QEMU instead of resetting the machine (tests that want one boot only). */
  noReboot?: boolean;
  /** Plain firmware PXE instead of the NIC's iPXE ROM (`romfile=`): UEFI then TFTPs ironboot's ipxe.efi. */
  noRom?: boolean;
  /** The disk gets bootindex=2, after the NIC: a network boot that exits falls through to the disk. */
  diskBoot?: boolean;
  /** KVM or TCG (default): chooseAccel() in accel.ts decides which works on this host. */
  accel?: Accel;
}

export const QEMU_BINARY = 'qemu-system-x86_64';

export function qemuArgs(v: VmSpec): string[] {
  const device = v.nic === 'virtio' ? 'virtio-net-pci' : 'e1000';
  const args = [
    ...accelArgs(v.accel ?? 'tcg'), '-smp', '1', '-m', String(v.memoryMb), '-nographic',
    '-netdev', `tap,id=n0,ifname=${v.tap},script=no,downscript=no`,
    '-device', `${device},netdev=n0,mac=${v.mac},bootindex=1${v.noRom ? ',romfile=' : ''}`,
    '-boot', 'n',
  ];
  if (v.disk && v.diskBoot) args.push('-drive', `file=${v.disk},if=none,id=d0,format=raw`, '-device', 'virtio-blk-pci,drive=d0,bootindex=2');
  else if (v.disk) args.push('-drive', `file=${v.disk},if=virtio,format=raw`);
  if (v.firmware === 'uefi') {
    if (!v.ovmfVars) throw new Error('a UEFI VM needs its own copy of OVMF_VARS');
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      '-drive', `if=pflash,format=raw,unit=1,file=${v.ovmfVars}`);
  }
  if (v.noReboot) args.push('-no-reboot');
  return args;
}

/** A stable locally administered MAC for a VM name: 52:54:00 (QEMU's prefix) + 3 bytes of its hash. */
export function macForName(name: string): string {
  const h = createHash('sha256').update(name).digest();
  return ['52', '54', '00', ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** "4G", "512M", "64m", "1073741824" → bytes. */
export function parseSize(s: string): number | null {
  const m = /^(\d+)([kmgt]?)i?b?$/i.exec(s.trim());
  if (!m) return null;
  const mult = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}
