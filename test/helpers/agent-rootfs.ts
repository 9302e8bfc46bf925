/**
 * A tiny root filesystem for the agent's QEMU tests: busybox-static plus the given files, as an ext4 image
 * made with `mke2fs -d` (no mounting, no loop device).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export function makeBusyboxRootfs(image: string, files: Record<string, string>, sizeMb = 16): void {
  const dir = mkdtempSync(join(tmpdir(), 'iba-rootfs-'));
  try {
    for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'root']) mkdirSync(join(dir, d));
    cpSync('/usr/bin/busybox', join(dir, 'bin/busybox'));
    for (const a of ['sh', 'echo', 'cat', 'sleep', 'ls', 'grep', 'wc', 'kill', 'id', 'pwd', 'env', 'true', 'false']) {
      symlinkSync('busybox', join(dir, 'bin', a));
    }
    writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n');
    writeFileSync(join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n');
    for (const [p, content] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, p)), { recursive: true });
      writeFileSync(join(dir, p), content);
      if (content.startsWith('#!')) chmodSync(join(dir, p), 0o755);
    }
    rmSync(image, { force: true });
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'ibroot', '-d', dir, image, `${sizeMb}M`], { stdio: ['ignore', 'ignore', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
