/**
 * Benchmark of the boot artifacts and the agent (run by hand: `node --import tsx test/bench/agent.ts [runs]`).
 *
 * Prints the initramfs size (compressed, unpacked, by group) and boot-to-entrypoint times under QEMU TCG for
 * the seed flow (`root=/dev/sda entrypoint=…`, no server), against a reference measured in the same run: a
 * busybox-only initramfs with the same kernel modules and a shell /init doing the same work (mount, modprobe
 * coldplug, mount root, chroot) — the cost of the Node agent is the ratio between the two.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testArtifacts } from '../helpers/agent-artifacts.ts';
import { makeBusyboxRootfs } from '../helpers/agent-rootfs.ts';
import { startVm } from '../helpers/qemu.ts';
import { referenceInitramfs } from './reference-init.ts';

const RUNS = Number(process.argv[2] ?? 3);

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)];
  return `median ${med.toFixed(2)} s [${s[0].toFixed(2)}–${s[s.length - 1].toFixed(2)}]`;
}

async function boot(kernel: string, initrd: string, disk: string, dir: string, name: string) {
  const vm = startVm({
    kernel, initrd, disks: [{ file: disk, bus: 'ahci' }], serialLog: join(dir, `${name}.log`), timeoutSec: 180,
    append: 'console=ttyS0,115200 panic=-1 root=/dev/sda entrypoint=/entry.sh ironboot.after=poweroff',
  });
  try {
    const t0 = vm.startedAt;
    await vm.waitFor(/Run \/init as init process/, 150_000);
    const tInit = (Date.now() - t0) / 1000;
    const m = await vm.waitFor(/IBA-ENTRY uptime=([\d.]+)\s/, 150_000);
    const tEntry = (Date.now() - t0) / 1000;
    return { init: tInit, entry: tEntry, guestUptime: Number(m[1]) };
  } finally {
    await vm.kill();
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'iba-bench-'));
  try {
    const t0 = Date.now();
    const art = await testArtifacts((m) => console.error(`  build: ${m}`));
    const r = art.report;
    console.log(`artifacts (${((Date.now() - t0) / 1000).toFixed(1)} s incl. cache lookup; a fresh build took ${r.seconds.total.toFixed(1)} s, zstd ${r.seconds.compress.toFixed(1)} s)`);
    console.log(`  initramfs ${(r.initramfs.bytes / 1e6).toFixed(1)} MB (${r.initramfs.compression}), ${(r.initramfs.uncompressedBytes / 1e6).toFixed(1)} MB unpacked, ${r.initramfs.entries} entries`);
    for (const [g, v] of Object.entries(r.groups).sort((a, b) => b[1].bytes - a[1].bytes)) console.log(`    ${g.padEnd(9)} ${(v.bytes / 1e6).toFixed(1).padStart(6)} MB  ${v.files} files`);
    console.log(`  kernel ${(r.kernel.bytes / 1e6).toFixed(1)} MB (${r.kernelVersion})`);

    // reference: busybox + the same modules + a shell /init
    const ref = join(dir, 'reference.cpio.zst');
    referenceInitramfs(art.initramfs, ref);
    console.log(`  reference (busybox + same modules, shell /init): ${(execFileSync('stat', ['-c', '%s', ref], { encoding: 'utf8' }).trim() as unknown as number / 1e6).toFixed(1)} MB`);

    const disk = join(dir, 'root.img');
    makeBusyboxRootfs(disk, { 'entry.sh': '#!/bin/sh\necho "IBA-ENTRY uptime=$(cut -d" " -f1 /proc/uptime)"\nsleep 600\n' });
    const agent: Array<Awaited<ReturnType<typeof boot>>> = [];
    const shell: Array<Awaited<ReturnType<typeof boot>>> = [];
    for (let i = 0; i < RUNS; i++) {   // interleaved so host load hits both alike
      agent.push(await boot(art.kernel, art.initramfs, disk, dir, `agent-${i}`));
      shell.push(await boot(art.kernel, ref, disk, dir, `shell-${i}`));
    }
    const show = (name: string, xs: typeof agent) => {
      console.log(`  ${name}`);
      console.log(`    QEMU start → /init:        ${stats(xs.map((x) => x.init))}`);
      console.log(`    QEMU start → entrypoint:   ${stats(xs.map((x) => x.entry))}`);
      console.log(`    guest uptime at entrypoint: ${stats(xs.map((x) => x.guestUptime))}`);
    };
    console.log(`boot to entrypoint, seed flow, QEMU TCG -smp 1 -m 1024, AHCI disk, ${RUNS} runs each (load average ${execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ')})`);
    show('ironboot initramfs (busybox init → node agent)', agent);
    show('reference (busybox-only, shell /init)', shell);
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`  ratio agent/reference, QEMU start → entrypoint: ${(med(agent.map((x) => x.entry)) / med(shell.map((x) => x.entry))).toFixed(2)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
