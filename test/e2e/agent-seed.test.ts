/**
 * QEMU (TCG): the seed's flow without any server, and PID 1 behaviour, in one boot.
 *
 *   kernel cmdline `root=/dev/sda entrypoint="/entry.sh a b"`, an AHCI disk holding a busybox ext4 root
 *   (mke2fs -d, never mounted on the host). The entrypoint prints a line, leaves two orphans behind,
 *   counts zombies, sends SIGTERM to the agent (forwarded back to it), then SIGKILLs the agent.
 *
 * Checks: (1) the entrypoint's output on the serial console; (3) orphans reaped by PID 1 (busybox init),
 * the agent survives SIGTERM, and a crash of the agent does not take the machine down (init respawns it,
 * it says so and opens a shell; no kernel panic).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testArtifacts } from '../helpers/agent-artifacts.ts';
import { makeBusyboxRootfs } from '../helpers/agent-rootfs.ts';
import { startVm, type Vm } from '../helpers/qemu.ts';
import { have, isRoot } from '../helpers/netns.ts';

const skip = !have('qemu-system-x86_64') ? 'qemu-system-x86_64 is not installed'
  : !have('mke2fs') ? 'mke2fs is not installed' : !isRoot() ? 'needs root (depmod/strip are fine, but the CI runs as root)' : false;

const ENTRY = `#!/bin/sh
trap 'echo "IBA got SIGTERM"' TERM
echo "IBA-SEED hello from the seed rootfs args=$* cwd=$(pwd) uid=$(id -u)"
sh -c 'sleep 1 & sleep 1 & exit 0'
sleep 3
echo "IBA zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)"
kill -TERM $PPID
sleep 2
echo "IBA agent-alive=$(kill -0 $PPID 2>/dev/null && echo yes || echo no)"
sleep 1   # let the agent relay that line before it dies
kill -KILL $PPID
sleep 600
`;

let dir: string;
let vm: Vm | undefined;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'iba-seed-'));
  const art = await testArtifacts();
  const disk = join(dir, 'root.img');
  makeBusyboxRootfs(disk, { 'entry.sh': ENTRY });
  vm = startVm({
    kernel: art.kernel, initrd: art.initramfs, disks: [{ file: disk, bus: 'ahci' }],
    append: 'console=ttyS0,115200 panic=-1 root=/dev/sda entrypoint="/entry.sh a b"',
    serialLog: join(dir, 'serial.log'), timeoutSec: 240,
  });
});

after(async () => {
  await vm?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('seed flow: root=/dev/sda entrypoint=… runs the entrypoint, output on the serial console', { skip, timeout: 200_000 }, async () => {
  const m = await vm!.waitFor(/IBA-SEED hello from the seed rootfs args=(.*) cwd=(\S+) uid=(\d+)\r?\n/, 180_000);
  assert.equal(m[1], 'a b');
  assert.equal(m[2], '/');
  assert.equal(m[3], '0');
  assert.match(vm!.output, /mounted \/dev\/sda \(ext4\) at \/mnt/);
});

test('PID 1 reaps the orphans the entrypoint leaves behind', { skip, timeout: 60_000 }, async () => {
  const m = await vm!.waitFor(/IBA zombies=(\d+)\r?\n/, 50_000);
  assert.equal(m[1], '0');
});

test('the agent survives SIGTERM and forwards it to the entrypoint', { skip, timeout: 60_000 }, async () => {
  // the whole line: the console arrives in pieces, and "y" alone would already match \w+
  const m = await vm!.waitFor(/IBA agent-alive=(\w+)\r?\n/, 50_000);
  assert.match(vm!.output, /SIGTERM received: forwarding it to the entrypoint/);
  assert.match(vm!.output, /IBA got SIGTERM/);
  assert.equal(m[1], 'yes');
});

test('a crash of the agent does not take the machine down', { skip, timeout: 60_000 }, async () => {
  await vm!.waitFor(/the agent restarted after an unexpected exit during step run/, 50_000);
  await vm!.waitFor(/starting a shell on the console/, 30_000);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(vm!.proc.exitCode, null, 'QEMU still runs');
  assert.doesNotMatch(vm!.output, /Kernel panic|Attempted to kill init/);
});
