/**
 * The bootable disk builder (server/images/bootable.ts), checked with the real tools: sfdisk --json and sgdisk -v
 * (the GPT), fsck.vfat -n and mtools (the ESP), e2fsck -fn and debugfs (the root and its fstab), and the GRUB pieces
 * (boot.img patched to load core.img from the BIOS boot partition, core.img's blocklist, BOOTX64.EFI a PE32+ x86-64
 * image). The lab tests (test/e2e/lab-install.test.ts) boot such a disk, BIOS and UEFI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  buildBootDisk, pickBootFiles, diskLayout, createBootDiskService, patchBootImg, patchCoreImg, GRUB_DIRS, PART_NAMES,
  BIOS_START, ESP_START, ESP_SECTORS, ROOT_START, SECTOR,
} from '../../server/images/bootable.ts';
import type { Image } from '../../server/store/images.ts';

const need = ['sfdisk', 'sgdisk', 'mkfs.vfat', 'mcopy', 'mdir', 'mtype', 'fsck.vfat', 'debugfs', 'e2fsck', 'mke2fs', 'grub-mkimage', 'zstd'];
const missing = need.filter((t) => spawnSync('bash', ['-c', `command -v ${t}`]).status !== 0);
const noGrub = !existsSync(join(GRUB_DIRS.pc, 'boot.img')) || !existsSync(join(GRUB_DIRS.efi, 'moddep.lst'));
const skip = missing.length ? `missing tools: ${missing.join(' ')} (deploy/setup.sh --test)` : noGrub ? 'GRUB (grub-pc-bin, grub-efi-amd64-bin) is not installed' : false;

const sh = (cmd: string, args: string[], input?: string) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  return { code: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
};

function ext4With(dir: string, files: Record<string, string>, sizeMb = 16): string {
  const root = join(dir, 'root');
  rmSync(root, { recursive: true, force: true });
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), c);
  }
  mkdirSync(root, { recursive: true });
  const img = join(dir, `img-${Object.keys(files).length}-${Math.random().toString(36).slice(2)}.ext4`);
  const r = sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'ironboot', '-d', root, img, `${sizeMb}M`]);
  assert.equal(r.code, 0, r.out);
  return img;
}

const readAt = (file: string, off: number, len: number) => {
  const fd = openSync(file, 'r');
  try { const b = Buffer.alloc(len); readSync(fd, b, 0, len, off); return b; } finally { closeSync(fd); }
};

test('pickBootFiles: the newest kernel that has an initrd; no kernel and no initrd are named', () => {
  const l = (names: string[]) => names.map((n, i) => `/${12 + i}/100644/0/0/${n}/100/`).join('\n');
  assert.deepEqual(pickBootFiles(l(['vmlinuz-6.1.0-9-amd64', 'initrd.img-6.1.0-9-amd64', 'vmlinuz-6.1.0-10-amd64', 'initrd.img-6.1.0-10-amd64'])),
    { ok: true, version: '6.1.0-10-amd64', kernel: '/boot/vmlinuz-6.1.0-10-amd64', initrd: '/boot/initrd.img-6.1.0-10-amd64' });
  const noInitrd = pickBootFiles(l(['vmlinuz-6.1.0-9-amd64', 'config-6.1.0-9-amd64']));
  assert.equal(noInitrd.ok, false);
  assert.match((noInitrd as { reason: string }).reason, /vmlinuz-6\.1\.0-9-amd64 but no \/boot\/initrd\.img-6\.1\.0-9-amd64/);
  assert.match((pickBootFiles(l(['grub'])) as { reason: string }).reason, /no \/boot\/vmlinuz-\*: the image carries no kernel/);
  assert.match((pickBootFiles(null) as { reason: string }).reason, /no \/boot directory/);
  // an empty vmlinuz is no kernel
  assert.equal(pickBootFiles('/12/100644/0/0/vmlinuz-1/0/\n/13/100644/0/0/initrd.img-1/5/').ok, false);
});

test('diskLayout: the root fits before the backup GPT, sizes are whole MiB, GUIDs depend on the image only', () => {
  const a = diskLayout('aaaa', 100 << 20);
  assert.equal(a.totalSectors % 2048, 0);
  assert.ok(a.totalSectors - 34 >= ROOT_START + a.rootSectors - 1);
  assert.deepEqual(diskLayout('aaaa', 100 << 20), a);
  assert.notEqual(diskLayout('bbbb', 100 << 20).partGuids.root, a.partGuids.root);
  assert.match(a.espVolumeId, /^[0-9A-F]{4}-[0-9A-F]{4}$/);
});

test('patchBootImg / patchCoreImg: what grub-bios-setup writes', () => {
  const boot = Buffer.alloc(512, 0xcc);
  const mbr = Buffer.alloc(512);
  mbr.fill(0xee, 446, 510); mbr[510] = 0x55; mbr[511] = 0xaa; mbr.writeUInt32LE(0x12345678, 440);
  const p = patchBootImg(boot, mbr, 2048);
  assert.equal(p.readBigUInt64LE(0x5c), 2048n);
  assert.deepEqual([p[0x66], p[0x67]], [0x90, 0x90]);
  assert.deepEqual(p.subarray(440), mbr.subarray(440));
  assert.equal(p[0], 0xcc);
  const core = Buffer.alloc(512 * 3 + 100);
  core.writeUInt16LE(3, 512 - 12 + 8);   // grub-mkimage's len: sectors after the first
  const c = patchCoreImg(core, 2048, 2048);
  assert.equal(c.length, 512 * 4);
  assert.equal(c.readBigUInt64LE(500), 2049n);
  assert.throws(() => patchCoreImg(core, 2048, 2), /holds 2/);
  core.writeUInt16LE(9, 500 + 8);
  assert.throws(() => patchCoreImg(core, 2048, 2048), /blocklist says 9/);
});

test('buildBootDisk: GPT, BIOS boot + ESP + root, GRUB for BIOS and UEFI, grub.cfg and fstab, all checked by the real tools', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ibo-bootdisk-'));
  try {
    const ext4 = ext4With(dir, { 'boot/vmlinuz-6.1.0-9-amd64': 'kernel', 'boot/initrd.img-6.1.0-9-amd64': 'initrd', 'etc/fstab': '# UNCONFIGURED FSTAB\n', 'etc/os-release': 'ID=debian\n' });
    const out = join(dir, 'out');
    mkdirSync(out);
    const d = await buildBootDisk({ imageId: 'feed01', imageName: 'deb-test', ext4, rawSize: statSync(ext4).size, dir: out });
    assert.equal(statSync(d.file).size, d.rawSize);
    assert.equal(d.kernel, '/boot/vmlinuz-6.1.0-9-amd64');

    // the GPT: three partitions where the layout says, with their types, names and GUIDs
    const dump = sh('sfdisk', ['--json', d.file]);
    assert.equal(dump.code, 0, dump.out);
    const pt = JSON.parse(dump.stdout).partitiontable;
    assert.equal(pt.label, 'gpt');
    assert.equal(pt.id.toLowerCase(), d.layout.diskGuid);
    assert.deepEqual(pt.partitions.map((p: any) => [p.start, p.size, p.type, p.name, p.uuid.toLowerCase()]), [
      [BIOS_START, 2048, '21686148-6449-6E6F-744E-656564454649', PART_NAMES.bios, d.layout.partGuids.bios],
      [ESP_START, ESP_SECTORS, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', PART_NAMES.esp, d.layout.partGuids.esp],
      [ROOT_START, d.layout.rootSectors, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', PART_NAMES.root, d.layout.partGuids.root],
    ]);
    const v = sh('sgdisk', ['-v', d.file]);
    assert.match(v.out, /No problems found/, v.out);

    // the MBR: GRUB's boot.img, pointing at core.img in the BIOS boot partition, with the protective partition kept
    const mbr = readAt(d.file, 0, 512);
    const bootImg = readFileSync(join(GRUB_DIRS.pc, 'boot.img'));
    assert.deepEqual(mbr.subarray(0, 0x5c), bootImg.subarray(0, 0x5c), 'boot.img code');
    assert.equal(mbr.readBigUInt64LE(0x5c), BigInt(BIOS_START));
    assert.equal(mbr[446 + 4], 0xee, 'protective MBR partition');
    assert.equal(mbr.readUInt16LE(510), 0xaa55);
    const core = readAt(d.file, BIOS_START * SECTOR, 512);
    assert.equal(core.readBigUInt64LE(500), BigInt(BIOS_START + 1), 'core.img blocklist start');
    assert.ok(core.readUInt16LE(508) > 10, 'core.img blocklist length');

    // the ESP: a clean FAT32 with GRUB for UEFI and grub.cfg
    const esp = join(dir, 'esp.img');
    assert.equal(sh('dd', [`if=${d.file}`, `of=${esp}`, 'bs=512', `skip=${ESP_START}`, `count=${ESP_SECTORS}`, 'status=none']).code, 0);
    const fsck = sh('fsck.vfat', ['-n', esp]);
    assert.equal(fsck.code, 0, fsck.out);
    assert.match(sh('mdir', ['-i', esp, '::/EFI/BOOT']).out, /BOOTX64\s+EFI/);
    assert.match(sh('mdir', ['-i', esp, '::/']).out, new RegExp(`Serial Number is ${d.layout.espVolumeId}`));
    const efi = readFileSync(join(out, 'BOOTX64.EFI'));
    assert.equal(efi.toString('latin1', 0, 2), 'MZ');
    const pe = efi.readUInt32LE(0x3c);
    assert.equal(efi.toString('latin1', pe, pe + 4), 'PE\0\0');
    assert.equal(efi.readUInt16LE(pe + 4), 0x8664, 'x86-64 PE image');
    const cfg = sh('mtype', ['-i', esp, '::/grub/grub.cfg']).stdout;
    assert.match(cfg, new RegExp(`linux /boot/vmlinuz-6\\.1\\.0-9-amd64 root=PARTUUID=${d.layout.partGuids.root} ro .*console=ttyS0`));
    assert.match(cfg, /initrd \/boot\/initrd\.img-6\.1\.0-9-amd64/);
    assert.match(cfg, new RegExp(`search --no-floppy --fs-uuid --set=ironboot_root ${d.rootFsUuid}`));
    // GRUB for UEFI finds the ESP by its volume id (i386-pc's core.img holds the same config, lzma-compressed)
    assert.ok(efi.includes(Buffer.from(`--set=root ${d.layout.espVolumeId}`)));

    // the root: the image's ext4, clean, with the fstab naming the partitions
    const part = `${d.file}?offset=${ROOT_START * SECTOR}`;
    const e2 = sh('e2fsck', ['-fn', part]);
    assert.equal(e2.code, 0, e2.out);
    const fst = sh('debugfs', ['-R', 'cat /etc/fstab', part]).stdout;
    assert.match(fst, new RegExp(`^PARTUUID=${d.layout.partGuids.root}\\s+/\\s+ext4`, 'm'));
    assert.match(fst, new RegExp(`^PARTUUID=${d.layout.partGuids.esp}\\s+/boot/efi\\s+vfat`, 'm'));
    assert.doesNotMatch(fst, /UNCONFIGURED/);
    assert.match(sh('debugfs', ['-R', 'stat /etc/fstab', part]).stdout, /User:\s+0\s+Group:\s+0/);
    assert.equal(sh('debugfs', ['-R', 'cat /etc/os-release', part]).stdout, 'ID=debian\n', 'the image\'s files are there');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('BootDiskService: check names what is missing; ensure builds once for concurrent callers and keeps the files', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ibo-bootsvc-'));
  try {
    const good = ext4With(dir, { 'boot/vmlinuz-1': 'k', 'boot/initrd.img-1': 'i' });
    const bare = ext4With(dir, { 'etc/hostname': 'x\n' });
    const paths: Record<string, string> = { aa11: good, bb22: bare };
    const svc = createBootDiskService({ imagesDir: dir, ext4Path: (id) => paths[id], log: pino({ level: 'silent' }) });
    const img = (id: string) => ({ id, name: `img-${id}`, format: 'ext4', rawSize: statSync(paths[id]).size, state: 'ready' }) as unknown as Image;
    assert.equal(await svc.check(img('aa11')), null);
    assert.match((await svc.check(img('bb22')))!, /img-bb22 cannot boot on its own: it has no \/boot directory/);
    assert.match((await svc.check({ ...img('aa11'), format: 'squashfs' } as Image))!, /needs an ext4/);
    const [a, b] = await Promise.all([svc.ensure(img('aa11')), svc.ensure(img('aa11'))]);
    assert.deepEqual(a, b);
    assert.equal(statSync(svc.filePath('aa11', 'raw')).size, a.rawSize);
    const sha = sh('sha256sum', [svc.filePath('aa11', 'raw')]).stdout.split(' ')[0];
    assert.equal(sha, a.rawSha256);
    const unz = sh('bash', ['-c', `zstd -dc ${svc.filePath('aa11', 'zst')} | sha256sum`]).stdout.split(' ')[0];
    assert.equal(unz, a.rawSha256, 'the zst decompresses to the raw disk');
    assert.equal(sh('sha256sum', [svc.filePath('aa11', 'zst')]).stdout.split(' ')[0], a.compressedSha256);
    assert.deepEqual(svc.get('aa11'), a, 'read back from its json');
    await assert.rejects(svc.ensure(img('bb22')), /cannot be installed as a bootable disk/);
    assert.equal(svc.get('bb22'), null);
    svc.removeFiles('aa11');
    assert.equal(svc.get('aa11'), null);
    assert.equal(existsSync(svc.filePath('aa11', 'zst')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
