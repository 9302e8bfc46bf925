import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { moduleClosure, moduleName, parseModulesDep, DEFAULT_MODULES } from '../../init/build/modules.ts';
import { parseLdd } from '../../init/build/ldd.ts';
import { compareVersions, findKernel } from '../../init/build/kernel.ts';

const DEP = `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/net/wireless/foo.ko:
`;

test('closure over modules.dep, names with - or _, prefixes and excludes', () => {
  const idx = parseModulesDep(DEP);
  assert.equal(moduleName('kernel/arch/x86/crypto/crc32c-intel.ko.xz'), 'crc32c_intel');
  const r = moduleClosure(idx, ['ext4', 'crc32c-intel', 'nope']);
  assert.deepEqual(r.paths, ['kernel/arch/x86/crypto/crc32c-intel.ko.xz', 'kernel/fs/ext4/ext4.ko', 'kernel/fs/jbd2/jbd2.ko', 'kernel/fs/mbcache.ko', 'kernel/lib/crc16.ko']);
  assert.deepEqual(r.missing, ['nope']);
  const all = moduleClosure(idx, [], ['kernel/drivers/net/'], ['kernel/drivers/net/wireless/']);
  assert.deepEqual(all.paths, ['kernel/drivers/net/net_failover.ko', 'kernel/drivers/net/virtio_net.ko', 'kernel/net/core/failover.ko']);
});

test('the host kernel: default drivers resolve with their dependencies', { skip: (() => { try { findKernel(); return false; } catch (e) { return (e as Error).message; } })() }, () => {
  const k = findKernel();
  const idx = parseModulesDep(readFileSync(`${k.modulesDir}/modules.dep`, 'utf8'));
  const r = moduleClosure(idx, DEFAULT_MODULES);
  const names = new Set(r.paths.map(moduleName));
  for (const m of ['virtio_pci', 'virtio_net', 'virtio_blk', 'ahci', 'libahci', 'libata', 'sd_mod', 'scsi_mod', 'ext4', 'jbd2', 'mbcache', 'crc16',
    'nvme', 'nvme_core', 'e1000', 'megaraid_sas', 'mpt3sas', 'xfs', 'vfat', 'squashfs', 'erofs', 'overlay', 'loop', '8021q', 'crc32c_generic']) {
    assert.ok(names.has(m), `${m} is in the initramfs`);
  }
  assert.ok(r.paths.every((p) => existsSync(`${k.modulesDir}/${p}`)));
});

test('ldd output: libraries with and without =>, no vDSO', () => {
  const text = `\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n`;
  assert.deepEqual(parseLdd(text), ['/lib/x86_64-linux-gnu/libc.so.6', '/lib/x86_64-linux-gnu/libz.so.1', '/lib64/ld-linux-x86-64.so.2']);
  assert.throws(() => parseLdd('\tlibfoo.so => not found\n'), /missing library/);
});

test('kernel versions sort like sort -V', () => {
  assert.deepEqual(['6.1.0-9-amd64', '6.1.0-56-amd64', '5.10.0-30-amd64'].sort(compareVersions), ['5.10.0-30-amd64', '6.1.0-9-amd64', '6.1.0-56-amd64']);
});
