/**
 * One QEMU machine at a time across all test files of a run (TCG on 2 cores: two VMs at once only make both
 * slower and their timeouts flaky). A held flock(1) on a lock file; released when the holder process ends, so a
 * crashed test never leaves it held.
 *
 *   const release = await acquireQemuLock();
 *   try { ...run the VM... } finally { await release(); }
 */
import { spawn } from 'node:child_process';

export const QEMU_LOCK_FILE = process.env.IRONBOOT_QEMU_LOCK ?? '/tmp/ironboot-qemu.lock';

export function acquireQemuLock(file = QEMU_LOCK_FILE): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const holder = spawn('flock', ['-x', file, '-c', 'echo locked; exec sleep 86400'], { stdio: ['ignore', 'pipe', 'inherit'] });
    holder.once('error', reject);
    holder.stdout!.once('data', () => {
      holder.stdout!.destroy();
      resolve(() => new Promise<void>((done) => {
        if (holder.exitCode !== null || holder.signalCode !== null) return done();
        holder.once('exit', () => done());
        holder.kill('SIGKILL');
      }));
    });
    holder.unref();
  });
}
