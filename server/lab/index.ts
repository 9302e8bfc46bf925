/** `ironboot lab`: the QEMU provisioning lab (see command.ts). */
export { labCommand, LAB_HELP } from './command.ts';
export { qemuArgs, macForName, parseSize, OVMF_CODE, OVMF_VARS, QEMU_BINARY, type VmSpec, type LabNic, type LabFirmware } from './qemu.ts';
