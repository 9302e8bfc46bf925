/** Filesystem detection from the first bytes of a device (pure): superblock magics. */

export const FS_PROBE_BYTES = 68 * 1024;

export function detectFsType(b: Buffer): string | null {
  const at = (off: number, s: string) => b.length >= off + s.length && b.toString('latin1', off, off + s.length) === s;
  if (b.length >= 1082 && b.readUInt16LE(1080) === 0xef53) {
    const compat = b.readUInt32LE(1024 + 0x5c);
    const incompat = b.readUInt32LE(1024 + 0x60);
    const roCompat = b.readUInt32LE(1024 + 0x64);
    if (incompat & 0x40 /* extents */ || incompat & 0x80 /* 64bit */ || roCompat & 0x8 /* huge_file */ || incompat & 0x200 /* flex_bg */) return 'ext4';
    if (compat & 0x4 /* has_journal */) return 'ext3';
    return 'ext2';
  }
  if (at(0, 'XFSB')) return 'xfs';
  if (at(0, 'hsqs')) return 'squashfs';
  if (b.length >= 1028 && b.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  if (at(65600, '_BHRfS_M')) return 'btrfs';
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && (at(82, 'FAT32   ') || at(54, 'FAT16   ') || at(54, 'FAT12   ') || at(54, 'FAT     '))) return 'vfat';
  return null;
}

export const READ_ONLY_FS = new Set(['squashfs', 'erofs']);
