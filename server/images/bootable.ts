/**
 * Bootable disks for `mode: install` (issue 10 part 2): a container disk whose image carries its own kernel
 * (/boot/vmlinuz-VERSION and /boot/initrd.img-VERSION) becomes a whole disk that boots on its own, BIOS and UEFI:
 *
 *   LBA 0            protective MBR with GRUB's boot.img (BIOS: jumps to core.img)
 *   LBA 1-33         GPT (disk GUID and partition GUIDs derived from the image id; names ironboot-*)
 *   p1  1 MiB        BIOS boot partition (EF02): GRUB i386-pc core.img
 *   p2  100 MiB      EFI system partition (EF00, FAT32): /EFI/BOOT/BOOTX64.EFI (GRUB x86_64-efi), /grub/grub.cfg
 *   p3  the image    the image's own ext4 (Linux filesystem), with an /etc/fstab naming the partitions
 *
 * Both GRUBs carry the same early config (find the ESP by its volume id, read /grub/grub.cfg there), and grub.cfg
 * loads the root's kernel and initrd with root=PARTUUID=… console=ttyS0 and sources /etc/ironboot/grub.cfg from the
 * root when present (the agent writes the workflow's kernel arguments there). Nothing is mounted: the GPT is
 * written by sfdisk, the ESP by mkfs.vfat + mtools, the fstab by debugfs, on files.
 *
 * Built once per image on demand and kept beside it (<id>.disk, <id>.disk.zst, <id>.disk.json; the json is
 * written last and says the files are whole), served at /install/<id>.disk.zst like the container disk.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Image } from '../store/images.ts';
import { ImageError } from './errors.ts';

export const SECTOR = 512;
/** The partitions' GPT names: an installed disk is recognised by them (init/agent/steps/disk.ts). */
export const PART_NAMES = { bios: 'ironboot-bios', esp: 'ironboot-esp', root: 'ironboot-root' } as const;
export const GPT_TYPES = {
  bios: '21686148-6449-6E6F-744E-656564454649',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;
export const BIOS_START = 2048;
export const BIOS_SECTORS = 2048;
export const ESP_START = BIOS_START + BIOS_SECTORS;
export const ESP_SECTORS = 100 * 2048;
export const ROOT_START = ESP_START + ESP_SECTORS;
/** The backup GPT: 32 sectors of entries and the header. */
const GPT_BACKUP_SECTORS = 33;
const BUILDER_VERSION = 1;

export const GRUB_DIRS = {
  pc: process.env.IRONBOOT_GRUB_PC_DIR ?? '/usr/lib/grub/i386-pc',
  efi: process.env.IRONBOOT_GRUB_EFI_DIR ?? '/usr/lib/grub/x86_64-efi',
};
const GRUB_MODULES_COMMON = ['part_gpt', 'part_msdos', 'fat', 'ext2', 'search', 'search_fs_uuid', 'normal', 'linux',
  'configfile', 'echo', 'test', 'serial', 'terminal', 'gzio', 'zstd', 'halt', 'reboot', 'ls', 'cat'];
const GRUB_MODULES = {
  pc: ['biosdisk', ...GRUB_MODULES_COMMON],
  efi: [...GRUB_MODULES_COMMON, 'efi_gop', 'efi_uga'],
};

/** Where the boot files of an image are (pure output of findBootFiles). */
export interface BootFiles { version: string; kernel: string; initrd: string }

export type BootFilesResult = ({ ok: true } & BootFiles) | { ok: false; reason: string };

/** Compares kernel versions the way people read them (6.1.0-50 > 6.1.0-9). */
const versionCmp = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

/**
 * Picks the kernel and initrd from a listing of /boot (debugfs `ls -p` lines: /inode/mode/uid/gid/name/size/):
 * the newest VERSION with both vmlinuz-VERSION and initrd.img-VERSION, regular files or symlinks (pure).
 */
export function pickBootFiles(listing: string | null): BootFilesResult {
  if (listing === null) return { ok: false, reason: 'it has no /boot directory: the image carries no kernel (install a kernel package in it, e.g. linux-image-amd64)' };
  const names = new Set<string>();
  for (const line of listing.split('\n')) {
    const f = line.split('/');
    if (f.length < 7) continue;
    const mode = f[2];
    if (!/^1[02]/.test(mode)) continue;   // regular file or symlink
    if (Number(f[6]) === 0 && mode.startsWith('10')) continue;   // empty file
    names.add(f[5]);
  }
  const kernels = [...names].filter((n) => /^vmlinuz-.+/.test(n)).map((n) => n.slice('vmlinuz-'.length)).sort(versionCmp).reverse();
  if (!kernels.length) return { ok: false, reason: 'it has no /boot/vmlinuz-*: the image carries no kernel (install a kernel package in it, e.g. linux-image-amd64)' };
  const v = kernels.find((k) => names.has(`initrd.img-${k}`));
  if (!v) return { ok: false, reason: `it has /boot/vmlinuz-${kernels[0]} but no /boot/initrd.img-${kernels[0]}: the kernel needs an initramfs to find its root (install initramfs-tools or dracut in the image)` };
  return { ok: true, version: v, kernel: `/boot/vmlinuz-${v}`, initrd: `/boot/initrd.img-${v}` };
}

function runTool(cmd: string, args: string[], input?: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    let child;
    try { child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' } }); } catch (e) { reject(e); return; }
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (e) => reject(new ImageError(`cannot run ${cmd}: ${e.message} (install it: deploy/setup.sh)`)));
    child.on('close', (code) => code === 0 ? resolve({ stdout, stderr })
      : reject(new ImageError(`${cmd} ${args.join(' ')} failed (exit ${code}): ${(stderr || stdout).trim().slice(0, 2000)}`)));
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** The listing of /boot in an ext4 image (null when there is none), read with debugfs: nothing is mounted. */
export async function listBoot(ext4: string): Promise<string | null> {
  const r = await runTool('debugfs', ['-R', 'ls -p /boot', ext4]);
  if (/File not found|not a directory/i.test(r.stderr) && !r.stdout.trim()) return null;
  return r.stdout;
}

/** The ext2/3/4 filesystem UUID from a superblock at `offset` of a file (null when there is none). */
export function readExtUuid(path: string, offset = 0): string | null {
  const fd = openSync(path, 'r');
  try {
    const sb = Buffer.alloc(1024);
    readSync(fd, sb, 0, 1024, offset + 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) return null;
    return uuidString(sb.subarray(0x68, 0x78));
  } finally { closeSync(fd); }
}

const uuidString = (b: Buffer) => {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
};

/** A GUID derived from the image id and a role: the same image always gives the same disk layout. */
export function derivedGuid(imageId: string, role: string): string {
  const b = createHash('sha256').update(`ironboot-bootdisk\n${imageId}\n${role}`).digest().subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x40;   // version 4 (random-looking)
  b[8] = (b[8] & 0x3f) | 0x80;   // RFC 4122 variant
  return uuidString(b);
}

export interface DiskLayout {
  totalSectors: number;
  rootSectors: number;
  diskGuid: string;
  partGuids: { bios: string; esp: string; root: string };
  /** The ESP's FAT volume id, as GRUB's search --fs-uuid writes it (XXXX-XXXX) and as mkfs.vfat -i takes it (hex). */
  espVolumeId: string;
}

/** The layout of the bootable disk for an ext4 image of `rawSize` bytes (pure). */
export function diskLayout(imageId: string, rawSize: number): DiskLayout {
  const rootSectors = Math.ceil(rawSize / SECTOR);
  const end = ROOT_START + rootSectors + GPT_BACKUP_SECTORS;
  const totalSectors = Math.ceil(end / 2048) * 2048;
  const vol = createHash('sha256').update(`ironboot-esp\n${imageId}`).digest('hex').slice(0, 8).toUpperCase();
  return {
    totalSectors, rootSectors, diskGuid: derivedGuid(imageId, 'disk'),
    partGuids: { bios: derivedGuid(imageId, 'bios'), esp: derivedGuid(imageId, 'esp'), root: derivedGuid(imageId, 'root') },
    espVolumeId: `${vol.slice(0, 4)}-${vol.slice(4)}`,
  };
}

/** sfdisk's script for the layout (pure). */
export function sfdiskScript(l: DiskLayout): string {
  return [
    'label: gpt', `label-id: ${l.diskGuid}`, 'unit: sectors', 'first-lba: 2048', '',
    `start=${BIOS_START}, size=${BIOS_SECTORS}, type=${GPT_TYPES.bios}, uuid=${l.partGuids.bios}, name="${PART_NAMES.bios}"`,
    `start=${ESP_START}, size=${ESP_SECTORS}, type=${GPT_TYPES.esp}, uuid=${l.partGuids.esp}, name="${PART_NAMES.esp}"`,
    `start=${ROOT_START}, size=${l.rootSectors}, type=${GPT_TYPES.linux}, uuid=${l.partGuids.root}, name="${PART_NAMES.root}"`,
    '',
  ].join('\n');
}

/** GRUB's early config, built into both core images: the ESP by its volume id, then its /grub/grub.cfg. */
export function grubEarlyConfig(l: DiskLayout): string {
  return [
    `search --no-floppy --fs-uuid --set=root ${l.espVolumeId}`,
    'set prefix=($root)/grub',
    '',
  ].join('\n');
}

/** /grub/grub.cfg on the ESP (pure). */
export function grubConfig(l: DiskLayout, boot: BootFiles, rootFsUuid: string, imageName: string): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    '# written by ironboot (server/images/bootable.ts); the workflow\'s kernel arguments come from the root\'s /etc/ironboot/grub.cfg',
    'serial --unit=0 --speed=115200',
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=1',
    'set ironboot_args=""',
    `search --no-floppy --fs-uuid --set=ironboot_root ${rootFsUuid}`,
    'if [ -f ($ironboot_root)/etc/ironboot/grub.cfg ]; then source ($ironboot_root)/etc/ironboot/grub.cfg; fi',
    `menuentry ${q(`ironboot install: ${imageName} (${boot.version})`)} {`,
    `  echo ${q(`ironboot: booting ${boot.kernel} from the local disk`)}`,
    '  set root=$ironboot_root',
    `  linux ${boot.kernel} root=PARTUUID=${l.partGuids.root} ro console=tty0 console=ttyS0,115200n8 $ironboot_args`,
    `  initrd ${boot.initrd}`,
    '}',
    '',
  ].join('\n');
}

/** /etc/fstab of the installed root (pure). */
export function fstab(l: DiskLayout): string {
  return [
    '# written by ironboot for the installed disk (PARTUUIDs of its GPT)',
    `PARTUUID=${l.partGuids.root}\t/\text4\terrors=remount-ro\t0\t1`,
    `PARTUUID=${l.partGuids.esp}\t/boot/efi\tvfat\tumask=0077,nofail,x-systemd.device-timeout=10s\t0\t2`,
    '',
  ].join('\n');
}

/**
 * GRUB's boot.img made to load core.img from `coreLba` (what grub-bios-setup does): the jump over the BIOS drive
 * check becomes NOPs (a hard disk), the kernel sector is set, and bytes 440..511 (disk signature, partition table,
 * 0x55AA) come from the MBR already on the disk (pure).
 */
export function patchBootImg(bootImg: Buffer, mbr: Buffer, coreLba: number): Buffer {
  if (bootImg.length !== 512) throw new ImageError(`boot.img is ${bootImg.length} bytes, not 512`);
  const out = Buffer.from(bootImg);
  out.writeBigUInt64LE(BigInt(coreLba), 0x5c);   // GRUB_BOOT_MACHINE_KERNEL_SECTOR
  out[0x66] = 0x90; out[0x67] = 0x90;             // GRUB_BOOT_MACHINE_DRIVE_CHECK
  mbr.copy(out, 440, 440, 512);
  return out;
}

/**
 * core.img's first sector (diskboot) lists where the rest of core.img is: one blocklist entry at the end of that
 * sector {start u64, len u16, segment u16}; grub-mkimage sets len, grub-bios-setup the start (pure).
 */
export function patchCoreImg(coreImg: Buffer, coreLba: number, maxSectors: number): Buffer {
  const sectors = Math.ceil(coreImg.length / SECTOR);
  if (sectors > maxSectors) throw new ImageError(`GRUB's core.img is ${sectors} sectors, the BIOS boot partition holds ${maxSectors}`);
  const out = Buffer.alloc(sectors * SECTOR);
  coreImg.copy(out);
  const at = SECTOR - 12;
  const len = out.readUInt16LE(at + 8);
  if (len !== sectors - 1) throw new ImageError(`core.img's blocklist says ${len} sectors, it has ${sectors - 1} after the first`);
  out.writeBigUInt64LE(BigInt(coreLba + 1), at);
  return out;
}

export interface BootDisk {
  imageId: string;
  builderVersion: number;
  rawSize: number;
  rawSha256: string;
  compressedSize: number;
  compressedSha256: string;
  kernel: string;
  initrd: string;
  kernelVersion: string;
  layout: DiskLayout;
  rootFsUuid: string;
  builtAt: string;
  seconds: number;
}

export interface BootDiskService {
  /** Whether the image can become a bootable disk: null, or why not (the reason names what is missing). */
  check(img: Image): Promise<string | null>;
  /** The bootable disk of an image: built once (concurrent callers share the build), then read from its json. */
  ensure(img: Image): Promise<BootDisk>;
  /** The built disk, if it is there (no build). */
  get(imageId: string): BootDisk | null;
  filePath(imageId: string, kind: 'raw' | 'zst'): string;
  removeFiles(imageId: string): void;
}

async function hashAndCompress(raw: string, zst: string): Promise<{ rawSha256: string; compressedSha256: string; compressedSize: number }> {
  const rawHash = createHash('sha256');
  const zHash = createHash('sha256');
  let compressedSize = 0;
  const z = spawn('zstd', ['-3', '-q', '-T0', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  z.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exit = new Promise<number>((resolve, reject) => { z.on('error', reject); z.on('close', (c) => resolve(c ?? 1)); });
  const out = createWriteStream(zst);
  const writing = pipeline(z.stdout, async function* (src) {
    for await (const c of src as AsyncIterable<Buffer>) { zHash.update(c); compressedSize += c.length; yield c; }
  }, out);
  await pipeline(createReadStream(raw, { highWaterMark: 4 << 20 }), async function* (src) {
    for await (const c of src as AsyncIterable<Buffer>) { rawHash.update(c); yield c; }
  }, z.stdin);
  await writing;
  const code = await exit;
  if (code !== 0) throw new ImageError(`zstd failed (exit ${code}): ${err.trim()}`);
  return { rawSha256: rawHash.digest('hex'), compressedSha256: zHash.digest('hex'), compressedSize };
}

/** Builds the bootable disk of `ext4` (the image's container disk) into `dir`; returns its description. */
export async function buildBootDisk(o: { imageId: string; imageName: string; ext4: string; rawSize: number; dir: string; log?: (m: string) => void }): Promise<Omit<BootDisk, 'compressedSize' | 'compressedSha256' | 'rawSha256' | 'seconds'> & { file: string }> {
  const log = o.log ?? (() => {});
  const boot = pickBootFiles(await listBoot(o.ext4));
  if (!boot.ok) throw new ImageError(`image ${o.imageName} cannot be installed as a bootable disk: ${boot.reason}`, 'image');
  const rootFsUuid = readExtUuid(o.ext4);
  if (!rootFsUuid) throw new ImageError(`image ${o.imageName}: ${o.ext4} holds no ext filesystem`, 'image');
  for (const [k, d] of Object.entries(GRUB_DIRS)) {
    if (!existsSync(join(d, 'moddep.lst'))) throw new ImageError(`GRUB ${k === 'pc' ? 'i386-pc (grub-pc-bin)' : 'x86_64-efi (grub-efi-amd64-bin)'} is not installed at ${d}: run deploy/setup.sh as root`);
  }
  const l = diskLayout(o.imageId, o.rawSize);
  const disk = join(o.dir, 'disk.img');
  const esp = join(o.dir, 'esp.img');
  writeFileSync(join(o.dir, 'early.cfg'), grubEarlyConfig(l));
  writeFileSync(join(o.dir, 'grub.cfg'), grubConfig(l, boot, rootFsUuid, o.imageName));
  writeFileSync(join(o.dir, 'fstab'), fstab(l));
  const fixed = new Date('2000-01-01T00:00:00Z');
  for (const f of ['grub.cfg', 'fstab']) utimesSync(join(o.dir, f), fixed, fixed);

  // the disk: a sparse file, the GPT (and protective MBR) by sfdisk
  const fd = openSync(disk, 'w');
  closeSync(fd);
  await runTool('truncate', ['-s', String(l.totalSectors * SECTOR), disk]);
  await runTool('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', '--wipe', 'always', disk], sfdiskScript(l));

  // GRUB for both firmwares
  const coreImg = join(o.dir, 'core.img');
  const efiImg = join(o.dir, 'BOOTX64.EFI');
  await runTool('grub-mkimage', ['-O', 'i386-pc', '-d', GRUB_DIRS.pc, '-c', join(o.dir, 'early.cfg'), '-p', '/grub', '-o', coreImg, ...GRUB_MODULES.pc]);
  await runTool('grub-mkimage', ['-O', 'x86_64-efi', '-d', GRUB_DIRS.efi, '-c', join(o.dir, 'early.cfg'), '-p', '/grub', '-o', efiImg, ...GRUB_MODULES.efi]);
  utimesSync(efiImg, fixed, fixed);

  // the ESP: FAT32 on a file, filled with mtools
  await runTool('mkfs.vfat', ['-C', '-F', '32', '-S', '512', '-n', 'IRONBOOTESP', '-i', l.espVolumeId.replace('-', ''), esp, String(ESP_SECTORS / 2)]);
  await runTool('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT', '::/grub']);
  await runTool('mcopy', ['-m', '-i', esp, efiImg, '::/EFI/BOOT/BOOTX64.EFI']);
  await runTool('mcopy', ['-m', '-i', esp, join(o.dir, 'grub.cfg'), '::/grub/grub.cfg']);

  // the partitions' contents (sparse: zero blocks stay holes)
  const dd = (src: string, lba: number) => runTool('dd', [`if=${src}`, `of=${disk}`, 'bs=1M', `seek=${lba * SECTOR}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
  await dd(esp, ESP_START);
  await dd(o.ext4, ROOT_START);

  // boot.img in the MBR and core.img in the BIOS boot partition
  const dfd = openSync(disk, 'r+');
  try {
    const mbr = Buffer.alloc(SECTOR);
    readSync(dfd, mbr, 0, SECTOR, 0);
    const bootImg = patchBootImg(readFileSync(join(GRUB_DIRS.pc, 'boot.img')), mbr, BIOS_START);
    writeSync(dfd, bootImg, 0, SECTOR, 0);
    const core = patchCoreImg(readFileSync(coreImg), BIOS_START, BIOS_SECTORS);
    writeSync(dfd, core, 0, core.length, BIOS_START * SECTOR);
  } finally { closeSync(dfd); }

  // /etc/fstab in the root (debugfs on the partition's offset: nothing mounted)
  const part = `${disk}?offset=${ROOT_START * SECTOR}`;
  const etc = await runTool('debugfs', ['-R', 'stat /etc', part]);
  const cmds = [
    ...(/File not found/.test(etc.stderr) ? ['mkdir /etc', 'sif /etc mode 040755'] : []),
    'rm /etc/fstab', `write ${join(o.dir, 'fstab')} /etc/fstab`, 'sif /etc/fstab uid 0', 'sif /etc/fstab gid 0', 'sif /etc/fstab mode 0100644',
  ];
  const w = await runTool('debugfs', ['-w', '-f', '-', part], cmds.join('\n') + '\n');
  if (/write: .*(error|fail)/i.test(w.stderr) || /No free space/i.test(w.stderr)) throw new ImageError(`writing /etc/fstab into the root failed: ${w.stderr.trim()}`);
  log(`bootable disk laid out: ${l.totalSectors * SECTOR} bytes, kernel ${boot.version}`);
  return {
    imageId: o.imageId, builderVersion: BUILDER_VERSION, rawSize: l.totalSectors * SECTOR, kernel: boot.kernel, initrd: boot.initrd,
    kernelVersion: boot.version, layout: l, rootFsUuid, builtAt: new Date().toISOString(), file: disk,
  };
}

let tmpN = 0;

/**
 * The bootable disks, kept beside the container disks in `imagesDir`. `ext4Path(id)` is the image's container disk;
 * `ensureExt4(img)` puts it there first when it can (with an S3 artifact store: fetched and verified), so each daemon
 * builds the bootable disk from the verified container disk of the shared store.
 */
export function createBootDiskService(deps: { imagesDir: string; ext4Path: (id: string) => string; ensureExt4?: (img: Image) => Promise<string>; log: Logger }): BootDiskService {
  const log = deps.log.child({ svc: 'bootdisk' });
  const inflight = new Map<string, Promise<BootDisk>>();
  const checked = new Map<string, string | null>();
  const filePath = (id: string, kind: 'raw' | 'zst' | 'json') => {
    if (!/^[a-z0-9]+$/.test(id)) throw new ImageError(`bad image id "${id}"`, 'id');
    return join(deps.imagesDir, `${id}.disk${kind === 'zst' ? '.zst' : kind === 'json' ? '.json' : ''}`);
  };
  const get = (id: string): BootDisk | null => {
    try {
      const d = JSON.parse(readFileSync(filePath(id, 'json'), 'utf8')) as BootDisk;
      if (d.builderVersion !== BUILDER_VERSION || !existsSync(filePath(id, 'raw')) || !existsSync(filePath(id, 'zst'))) return null;
      return d;
    } catch { return null; }
  };
  async function build(img: Image): Promise<BootDisk> {
    const t0 = performance.now();
    const tmp = join(deps.imagesDir, `.tmp-${img.id}boot-${process.pid}-${++tmpN}`);
    mkdirSync(tmp, { recursive: true });
    try {
      log.info({ image: img.id, name: img.name }, 'bootable disk build started');
      const ext4 = deps.ensureExt4 ? await deps.ensureExt4(img) : deps.ext4Path(img.id);
      const built = await buildBootDisk({ imageId: img.id, imageName: img.name, ext4, rawSize: img.rawSize ?? 0, dir: tmp });
      const zst = join(tmp, 'disk.img.zst');
      const h = await hashAndCompress(built.file, zst);
      const { file, ...rest } = built;
      const disk: BootDisk = { ...rest, ...h, seconds: Math.round((performance.now() - t0) / 10) / 100 };
      renameSync(zst, filePath(img.id, 'zst'));
      renameSync(file, filePath(img.id, 'raw'));
      writeFileSync(`${filePath(img.id, 'json')}.tmp`, JSON.stringify(disk, null, 2));
      renameSync(`${filePath(img.id, 'json')}.tmp`, filePath(img.id, 'json'));
      log.info({ image: img.id, rawSize: disk.rawSize, compressedSize: disk.compressedSize, kernel: disk.kernel, seconds: disk.seconds }, 'bootable disk ready');
      return disk;
    } catch (err) {
      log.warn({ image: img.id, err: (err as Error).message }, 'bootable disk build failed');
      throw err;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  return {
    filePath: (id, kind) => filePath(id, kind),
    get,
    async check(img) {
      if (img.format !== 'ext4') return `image ${img.name} is ${img.format}; a bootable disk needs an ext4 container disk`;
      if (checked.has(img.id)) return checked.get(img.id)!;
      let ext4 = deps.ext4Path(img.id);
      if (!existsSync(ext4) && deps.ensureExt4) {
        try { ext4 = await deps.ensureExt4(img); } catch (err) { return `image ${img.name}'s container disk is not available: ${(err as Error).message}`; }
      }
      if (!existsSync(ext4)) return `image ${img.name}'s container disk ${ext4} is missing`;
      const r = pickBootFiles(await listBoot(ext4));
      const reason = r.ok ? null : `image ${img.name} cannot boot on its own: ${r.reason}`;
      checked.set(img.id, reason);
      return reason;
    },
    ensure(img) {
      const have = get(img.id);
      if (have) return Promise.resolve(have);
      let p = inflight.get(img.id);
      if (!p) {
        p = build(img).finally(() => inflight.delete(img.id));
        inflight.set(img.id, p);
      }
      return p;
    },
    removeFiles(id) {
      checked.delete(id);
      for (const k of ['json', 'raw', 'zst'] as const) {
        try { unlinkSync(filePath(id, k)); } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, image: id }, 'could not remove bootable disk file');
        }
      }
    },
  };
}
