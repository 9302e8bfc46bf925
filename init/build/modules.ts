/** Kernel modules: modules.dep parsing and the dependency closure of a selection (pure). */

export interface ModuleIndex {
  /** normalised name (dashes → underscores) → path relative to /lib/modules/<ver> */
  byName: Map<string, string>;
  /** path → direct dependencies (paths) */
  deps: Map<string, string[]>;
}

export const moduleName = (path: string): string =>
  path.split('/').pop()!.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');

export function parseModulesDep(text: string): ModuleIndex {
  const byName = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    deps.set(path, line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
    byName.set(moduleName(path), path);
  }
  return { byName, deps };
}

/**
 * Every module file needed by `names` (names or path prefixes like `kernel/drivers/net/ethernet/`), with
 * all dependencies. Returns the sorted paths and the names that are not modules of this kernel.
 */
export function moduleClosure(index: ModuleIndex, names: string[], prefixes: string[] = [], exclude: string[] = []): { paths: string[]; missing: string[] } {
  const want: string[] = [];
  const missing: string[] = [];
  for (const n of names) {
    const p = index.byName.get(n.replace(/-/g, '_'));
    if (p) want.push(p); else missing.push(n);
  }
  for (const p of index.deps.keys()) {
    if (prefixes.some((x) => p.startsWith(x)) && !exclude.some((x) => p.startsWith(x))) want.push(p);
  }
  const seen = new Set<string>();
  const stack = [...want];
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    for (const d of index.deps.get(p) ?? []) stack.push(d);
  }
  return { paths: [...seen].sort(), missing };
}

/** Drivers for the default initramfs: common server and VM NICs and storage, the filesystems, loop, VLAN. */
export const DEFAULT_MODULES = [
  // bus / transport
  'virtio_pci', 'virtio_mmio',
  // NICs
  'virtio_net', 'e1000', 'e1000e', 'igb', 'igc', 'ixgbe', 'i40e', 'ice', 'bnxt_en', 'tg3', 'bnx2', 'mlx4_en', 'mlx5_core',
  'r8169', 'vmxnet3', 'be2net', 'qede', 'sfc',
  // storage
  'virtio_blk', 'virtio_scsi', 'ahci', 'ata_piix', 'sd_mod', 'nvme', 'megaraid_sas', 'mpt3sas', 'hpsa', 'smartpqi',
  'aacraid', 'vmw_pvscsi', 'mptsas',
  // filesystems
  'ext4', 'xfs', 'vfat', 'nls_cp437', 'nls_iso8859_1', 'squashfs', 'erofs', 'overlay',
  // misc
  'loop', '8021q', 'crc32c_generic', 'crc32c_intel',
];

/** --all-drivers: every network and storage driver of the kernel (no wireless, no firmware). */
export const ALL_DRIVER_PREFIXES = [
  'kernel/drivers/net/', 'kernel/drivers/scsi/', 'kernel/drivers/ata/', 'kernel/drivers/nvme/', 'kernel/drivers/block/',
  'kernel/drivers/md/', 'kernel/drivers/virtio/', 'kernel/drivers/usb/storage/', 'kernel/drivers/message/fusion/',
];
export const ALL_DRIVER_EXCLUDES = [
  'kernel/drivers/net/wireless/', 'kernel/drivers/net/can/', 'kernel/drivers/net/wwan/', 'kernel/drivers/net/ieee802154/',
  'kernel/drivers/net/hamradio/', 'kernel/drivers/net/arcnet/', 'kernel/drivers/net/fddi/', 'kernel/drivers/net/wan/',
];
