/**
 * Which QEMU accelerator the lab and the tests use: KVM when it really runs a kernel here, TCG otherwise.
 *
 * `/dev/kvm` being there is not enough: under some nested hypervisors KVM opens, but `-cpu host` aborts QEMU
 * (an MSR assertion) and a plain CPU model hangs the kernel right after decompression. (Measured on one such host:
 * `-cpu host,-arch-capabilities` gets past the MSR abort, but the kernel's decompressor was still running after
 * 70 s, RIP sampled every 3 s through the monitor, while under TCG the whole kernel boot takes a few seconds in
 * test/bench/boot.ts: KVM that slow is no use.) So the choice is made by
 * a probe (blocking, up to 20 s, once): boot the kernel the VMs boot, with no initramfs, under KVM; it must reach its "no root" panic and QEMU
 * must exit (`-no-reboot`) within a deadline. The result is cached per kernel and QEMU binary, so the probe runs
 * once per machine.
 *
 *   IRONBOOT_QEMU_ACCEL=kvm|tcg   forces one (kvm fails loudly when /dev/kvm cannot be opened)
 *   IRONBOOT_QEMU_ACCEL=auto      (default) the probe decides
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Accel = 'kvm' | 'tcg';

export interface AccelChoice {
  accel: Accel;
  /** Why: "forced by IRONBOOT_QEMU_ACCEL", "KVM probe booted the kernel in 1.2 s", "no /dev/kvm", … */
  reason: string;
}

/**
 * QEMU arguments for an accelerator (pure). TCG: `-cpu max` (SSE4.2 for crc32c, measured in ../shared/lab);
 * KVM: `-cpu host`, the guest sees the host's CPU.
 */
export function accelArgs(accel: Accel): string[] {
  return accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max'];
}

/** The one-line summary tests and the lab print: "qemu accelerator: tcg (KVM probe: …)". */
export const describeAccel = (c: AccelChoice): string => `qemu accelerator: ${c.accel} (${c.reason})`;

/** Whether /dev/kvm can be opened for reading and writing; the reason when not. */
export function kvmDeviceProblem(dev = '/dev/kvm'): string | null {
  try {
    accessSync(dev, constants.R_OK | constants.W_OK);
    return null;
  } catch (err) {
    return `${dev}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  }
}

/** Verdict of one probe's console output and exit (pure, so it is tested without QEMU). */
export function judgeProbe(out: { console: string; exitCode: number | null; timedOut: boolean; seconds: number }): AccelChoice {
  const abort = /Assertion [^\n]*failed|kvm[^\n]*(?:error|failed)[^\n]*/i.exec(out.console);
  if (abort) return { accel: 'tcg', reason: `KVM probe: QEMU aborted: ${abort[0].trim().slice(0, 160)}` };
  if (out.timedOut) {
    const ran = /Linux version/.test(out.console);
    return { accel: 'tcg', reason: `KVM probe: the kernel ${ran ? 'started but did not finish booting' : 'printed nothing'} within ${Math.round(out.seconds)} s` };
  }
  if (/Kernel panic/.test(out.console)) return { accel: 'kvm', reason: `KVM probe booted the kernel in ${out.seconds.toFixed(1)} s` };
  return { accel: 'tcg', reason: `KVM probe: QEMU exited with code ${out.exitCode} before the kernel finished booting` };
}

function cacheKey(kernel: string, qemu: string): string {
  const q = spawnSync(qemu, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  const k = statSync(kernel);
  return createHash('sha256').update(`${kernel}\0${k.size}\0${k.mtimeMs}\0${q}`).digest('hex').slice(0, 16);
}

/** Boots `kernel` under KVM with no initramfs and judges the result (blocks up to `timeoutMs`). */
export function probeKvm(kernel: string, o: { qemu?: string; timeoutMs?: number } = {}): AccelChoice {
  const qemu = o.qemu ?? 'qemu-system-x86_64';
  const timeoutMs = o.timeoutMs ?? 20_000;
  const started = Date.now();
  const r = spawnSync(qemu, [...accelArgs('kvm'), '-smp', '1', '-m', '256', '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 loglevel=4'], {
    stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') return { accel: 'tcg', reason: `KVM probe: ${r.error.message}` };
  const console = `${r.stdout?.toString('latin1') ?? ''}${r.stderr?.toString('latin1') ?? ''}`;
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  return judgeProbe({ console, exitCode: r.status, timedOut, seconds: (Date.now() - started) / 1000 });
}

/**
 * The accelerator to use for VMs that boot `kernel`: the environment's choice, else the cached probe result,
 * else a fresh probe (cached under `cacheDir`).
 */
export function chooseAccel(kernel: string, o: { env?: NodeJS.ProcessEnv; cacheDir?: string; qemu?: string; timeoutMs?: number } = {}): AccelChoice {
  const env = o.env ?? process.env;
  const forced = (env.IRONBOOT_QEMU_ACCEL ?? 'auto').toLowerCase();
  if (forced === 'tcg') return { accel: 'tcg', reason: 'forced by IRONBOOT_QEMU_ACCEL=tcg' };
  const devProblem = kvmDeviceProblem();
  if (forced === 'kvm') {
    if (devProblem) throw new Error(`IRONBOOT_QEMU_ACCEL=kvm, but ${devProblem}`);
    return { accel: 'kvm', reason: 'forced by IRONBOOT_QEMU_ACCEL=kvm' };
  }
  if (forced !== 'auto') throw new Error(`IRONBOOT_QEMU_ACCEL must be kvm, tcg or auto, not "${forced}"`);
  if (devProblem) return { accel: 'tcg', reason: `no usable KVM: ${devProblem}` };
  const dir = o.cacheDir ?? join(tmpdir(), 'ironboot-accel');
  let file: string | null = null;
  try {
    file = join(dir, `${cacheKey(kernel, o.qemu ?? 'qemu-system-x86_64')}.json`);
    const cached = JSON.parse(readFileSync(file, 'utf8')) as AccelChoice;
    if (cached.accel === 'kvm' || cached.accel === 'tcg') return { ...cached, reason: `${cached.reason}; cached` };
  } catch { /* no cache yet */ }
  const choice = probeKvm(kernel, o);
  if (file) {
    try { mkdirSync(dir, { recursive: true }); writeFileSync(file, JSON.stringify(choice)); } catch { /* cache is optional */ }
  }
  return choice;
}
