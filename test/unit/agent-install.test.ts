/**
 * The agent's side of mode install: a target smaller than the bootable disk is refused before anything is written
 * (a real loop device), a GPT that ironboot's builder wrote is recognised (a reinstall needs no wipe) while any other
 * GPT still is refused, and the first-boot files land under the root with their modes (and never outside it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, truncateSync, statSync, symlinkSync, lstatSync, mkdirSync, openSync, readSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkTarget, isIronbootGpt, TargetRefused, SIGNATURE_BYTES } from '../../init/agent/steps/disk.ts';
import { writeInstallFiles, installPath } from '../../init/agent/steps/install.ts';
import { sfdiskScript, diskLayout, PART_NAMES } from '../../server/images/bootable.ts';
import { have } from '../helpers/netns.ts';

const isRoot = process.getuid?.() === 0;
const skipLoop = !isRoot ? 'needs root (losetup)' : !have('sfdisk') ? 'sfdisk is not installed' : !have('losetup') ? 'losetup is not installed' : false;

function tmp(t: { after(fn: () => unknown): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'ibo-install-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
function loop(t: { after(fn: () => unknown): void }, file: string): string {
  const dev = execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
  t.after(() => { try { execFileSync('losetup', ['-d', dev]); } catch { /* already gone */ } });
  return dev;
}
const head = (f: string) => {
  const fd = openSync(f, 'r');
  try { const b = Buffer.alloc(SIGNATURE_BYTES); readSync(fd, b, 0, b.length, 0); return b; } finally { closeSync(fd); }
};

test('a target smaller than the bootable disk is refused before anything is written (loop device)', { skip: skipLoop }, async (t) => {
  const dir = tmp(t);
  const f = join(dir, 'small.img');
  writeFileSync(f, '');
  truncateSync(f, 64 << 20);
  const before = readFileSync(f);
  const dev = loop(t, f);
  await assert.rejects(checkTarget(dev, { minSize: 377487360 }), (e: Error) => e instanceof TargetRefused
    && new RegExp(`target ${dev} is 67108864 bytes, smaller than the disk image \\(377487360 bytes\\); nothing was written`).test(e.message));
  assert.ok(readFileSync(f).equals(before), 'the disk is untouched');
  await checkTarget(dev, { minSize: 64 << 20 });   // exactly big enough passes
});

test('an ironboot GPT (partition names) is reinstalled without wipe; any other GPT is refused', { skip: skipLoop }, async (t) => {
  const dir = tmp(t);
  const ours = join(dir, 'ours.img');
  const l = diskLayout('abcd', 16 << 20);
  writeFileSync(ours, ''); truncateSync(ours, l.totalSectors * 512);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', ours], { input: sfdiskScript(l) });
  assert.equal(isIronbootGpt(head(ours)), true);
  await checkTarget(loop(t, ours), {});

  const other = join(dir, 'other.img');
  writeFileSync(other, ''); truncateSync(other, l.totalSectors * 512);
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', other], { input: sfdiskScript(l).replace(`name="${PART_NAMES.esp}"`, 'name="EFI system"') });
  assert.equal(isIronbootGpt(head(other)), false);
  await assert.rejects(checkTarget(loop(t, other), {}), /already holds a GPT partition table; refusing to overwrite it/);
});

test('writeInstallFiles: modes, directories, a symlinked resolv.conf replaced, nothing outside the root', async (t) => {
  const root = tmp(t);
  mkdirSync(join(root, 'etc'));
  symlinkSync('../run/systemd/resolve/stub-resolv.conf', join(root, 'etc/resolv.conf'));
  symlinkSync('/etc/passwd', join(root, 'etc/hostname'));
  const written = await writeInstallFiles(root, [
    { path: '/root/.ssh/authorized_keys', content: 'ssh-ed25519 AAAA x\n', mode: 0o600, dirMode: 0o700 },
    { path: '/etc/resolv.conf', content: 'nameserver 10.91.0.1\n', mode: 0o644, replaceSymlink: true },
  ]);
  assert.deepEqual(written, ['/root/.ssh/authorized_keys', '/etc/resolv.conf']);
  assert.equal(statSync(join(root, 'root/.ssh/authorized_keys')).mode & 0o777, 0o600);
  assert.equal(statSync(join(root, 'root/.ssh')).mode & 0o777, 0o700);
  assert.equal(lstatSync(join(root, 'etc/resolv.conf')).isFile(), true);
  assert.equal(readFileSync(join(root, 'etc/resolv.conf'), 'utf8'), 'nameserver 10.91.0.1\n');
  await assert.rejects(writeInstallFiles(root, [{ path: '/etc/hostname', content: 'x\n', mode: 0o644 }]), /is a symlink; not following it/);
  assert.notEqual(readFileSync('/etc/passwd', 'utf8'), 'x\n');
  assert.equal(installPath(root, '/../../etc/passwd'), join(root, 'etc/passwd'), 'dot-dot stops at the root');
  assert.throws(() => installPath(root, 'etc/x'), /absolute/);
});
