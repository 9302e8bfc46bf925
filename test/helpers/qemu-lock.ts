/**
 * One QEMU machine at a time across all test files of a run (TCG on 2 cores: two VMs at once only make both
 * slower and their timeouts flaky). The lock is a flock(1) held by a small process group that lives only as long
 * as this test process: released by release(), and also when the test process dies.
 *
 *   const release = await acquireQemuLock();
 *   try { ...run the VM... } finally { await release(); }
 */
import { spawn } from 'node:child_process';

export const QEMU_LOCK_FILE = process.env.IRONBOOT_QEMU_LOCK ?? '/tmp/ironboot-qemu.lock';

export function acquireQemuLock(file = QEMU_LOCK_FILE): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const watch = `echo locked; while kill -0 ${process.pid} 2>/dev/null; do sleep 0.5; done`;
    const holder = spawn('flock', ['-o', '-x', file, 'sh', '-c', watch], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    holder.once('error', reject);
    holder.stdout!.once('data', () => {
      holder.stdout!.destroy();
      // release: the group dies at once (SIGKILL), and with flock the lock; nothing to wait for, since the holder
      // is unref'd and a promise waiting on its exit would keep nothing alive (node:test reports it as pending)
      resolve(async () => {
        try { process.kill(-holder.pid!, 'SIGKILL'); } catch { /* already gone */ }
      });
    });
    holder.unref();
  });
}
