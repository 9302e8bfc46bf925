import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { accelArgs, chooseAccel, judgeProbe, kvmDeviceProblem } from '../../server/lab/accel.ts';
import { qemuArgs } from '../../server/lab/qemu.ts';
import { findKernel } from '../../init/build/kernel.ts';

test('accelArgs: KVM uses the host CPU, TCG -cpu max; lab VMs default to TCG and take the choice', () => {
  assert.deepEqual(accelArgs('kvm'), ['-accel', 'kvm', '-cpu', 'host']);
  assert.deepEqual(accelArgs('tcg'), ['-accel', 'tcg', '-cpu', 'max']);
  const base = { tap: 't', mac: '52:54:00:00:00:01', nic: 'virtio' as const, firmware: 'bios' as const, disk: null, memoryMb: 512 };
  assert.match(qemuArgs(base).join(' '), /^-accel tcg -cpu max -smp 1 /);
  assert.match(qemuArgs({ ...base, accel: 'kvm' }).join(' '), /^-accel kvm -cpu host -smp 1 /);
});

test('judgeProbe: only a kernel that reached its panic and let QEMU exit means KVM works', () => {
  assert.equal(judgeProbe({ console: 'Linux version 6.1\n...\nKernel panic - not syncing: VFS', exitCode: 0, timedOut: false, seconds: 1.4 }).accel, 'kvm');
  const abort = judgeProbe({ console: "qemu: ../kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == n' failed.\n", exitCode: null, timedOut: false, seconds: 0.05 });
  assert.equal(abort.accel, 'tcg');
  assert.match(abort.reason, /QEMU aborted: .*Assertion/);
  const hang = judgeProbe({ console: 'SeaBIOS\nBooting from ROM...\n', exitCode: null, timedOut: true, seconds: 20 });
  assert.equal(hang.accel, 'tcg');
  assert.match(hang.reason, /printed nothing within 20 s/);
  assert.match(judgeProbe({ console: 'Linux version 6.1\n', exitCode: null, timedOut: true, seconds: 20 }).reason, /started but did not finish/);
  assert.equal(judgeProbe({ console: 'Linux version', exitCode: 1, timedOut: false, seconds: 2 }).accel, 'tcg');
});

test('chooseAccel: IRONBOOT_QEMU_ACCEL forces tcg, refuses nonsense; kvm is refused without a usable /dev/kvm', () => {
  const kernel = '/nonexistent';
  assert.deepEqual(chooseAccel(kernel, { env: { IRONBOOT_QEMU_ACCEL: 'tcg' } }), { accel: 'tcg', reason: 'forced by IRONBOOT_QEMU_ACCEL=tcg' });
  assert.throws(() => chooseAccel(kernel, { env: { IRONBOOT_QEMU_ACCEL: 'hvf' } }), /kvm, tcg or auto/);
  if (kvmDeviceProblem()) assert.throws(() => chooseAccel(kernel, { env: { IRONBOOT_QEMU_ACCEL: 'kvm' } }), /\/dev\/kvm/);
});

test('chooseAccel auto: the probe boots the real kernel under KVM, its verdict is cached, and it matches a real QEMU run', (t) => {
  let kernel: string;
  try { kernel = findKernel().path; } catch { t.skip('no Debian kernel in /boot'); return; }
  if (spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }).status !== 0) { t.skip('no qemu-system-x86_64'); return; }
  const dir = mkdtempSync(join(tmpdir(), 'ib-accel-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = chooseAccel(kernel, { env: {}, cacheDir: dir, timeoutMs: 20_000 });
  t.diagnostic(`this host: ${first.accel} (${first.reason})`);
  assert.equal(readdirSync(dir).length, 1, 'the verdict is cached');
  const second = chooseAccel(kernel, { env: {}, cacheDir: dir });
  assert.equal(second.accel, first.accel);
  assert.match(second.reason, /cached$/);
  if (kvmDeviceProblem()) { assert.equal(first.accel, 'tcg'); assert.match(first.reason, /no usable KVM/); return; }
  if (first.accel === 'tcg') {
    // the chosen fallback must really work: the same kernel reaches its panic under TCG
    const r = spawnSync('qemu-system-x86_64', [...accelArgs('tcg'), '-m', '256', '-nographic', '-no-reboot', '-nic', 'none',
      '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 loglevel=4'], { timeout: 120_000, killSignal: 'SIGKILL', encoding: 'latin1' });
    assert.match(`${r.stdout}`, /Kernel panic/, 'TCG boots the kernel that KVM could not');
  }
});
