/**
 * Benchmark: time from VM start to the entrypoint running, phase by phase, for ironboot beside the reference
 * lab (dnsmasq + python HTTP + a busybox shell init, from ../shared/lab, run from a copy) in the same run.
 * By hand, as root:  node --import tsx test/bench/boot.ts [--runs N] [--firmware bios|uefi] [--nic virtio|e1000] [--only pxe|seed]
 *                    node --import tsx test/bench/boot.ts --install [--firmware bios|uefi]
 *
 * Two comparisons, both in the same run and on the same accelerator (KVM where it boots the kernel here, else TCG;
 * the reference lab's QEMU is switched alike), each printed phase by phase with the ratio:
 *   pxe   the full PXE boot. ironboot phases come from the serial console (host-timestamped lines) and the
 *         workflow's events (the server's clock, the same host clock): firmware → DHCP + script → kernel +
 *         initramfs download → kernel boot → agent online → stream → verify → mount → entrypoint. The reference
 *         streams a gzip'ed ext4 image to a blank disk the same way (its `stream` mode), so both write a container
 *         disk before running httpd.
 *   seed  the article's flow, `root=/dev/sda entrypoint=…` (no network, no server), QEMU start → entrypoint, against
 *         a busybox-only initramfs with the same kernel modules and a shell /init doing the same work.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabEnv, buildHttpdDisk, provision, labUnavailable, ensureArtifacts, type LabVm } from '../helpers/lab-env.ts';
import type { LabFirmware, LabNic } from '../../server/lab/qemu.ts';
import { accelArgs, chooseAccel, describeAccel, type AccelChoice } from '../../server/lab/accel.ts';
import { findKernel } from '../../init/build/kernel.ts';
import { makeBusyboxRootfs } from '../helpers/agent-rootfs.ts';
import { startVm } from '../helpers/qemu.ts';
import { referenceInitramfs } from './reference-init.ts';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : def; };
const RUNS = Number(opt('runs', '1'));
const FIRMWARE = opt('firmware', 'bios') as LabFirmware;
const NIC = opt('nic', 'virtio') as LabNic;
const REF_SRC = opt('reference', '/work/shared/lab');
const ONLY = opt('only', '');
let ACCEL: AccelChoice;

type Milestones = Record<string, number | undefined>;

const PHASES: [string, string, string][] = [
  ['firmware + iPXE ROM init', 'start', 'nicOpen'],
  ['DHCP + iPXE script', 'nicOpen', 'script'],
  ['kernel + initramfs download', 'script', 'initrdDone'],
  ['kernel boot (to /init)', 'initrdDone', 'initStart'],
  ['/init → agent online', 'initStart', 'agentOnline'],
  ['hello → stream start', 'agentOnline', 'streaming'],
  ['stream (write disk)', 'streaming', 'verifying'],
  ['verify', 'verifying', 'verified'],
  ['mount', 'verified', 'mounted'],
  ['entrypoint up', 'mounted', 'running'],
];

/** Time of a kernel or agent console line (one line each: not joined with the next, as iPXE's wrapped lines are). */
function consoleLineAt(vm: LabVm, re: RegExp): number | undefined {
  return vm.lines.find((l) => re.test(l.text))?.t;
}

function lineAt(vm: LabVm, re: RegExp, from = 0): number | undefined {
  const i = vm.find(re, from);
  return i >= 0 ? vm.lines[i].t : undefined;
}

async function ironbootRun(env: LabEnv, n: number): Promise<Milestones> {
  const { vm, wfId } = await provision(env, { vm: { name: `bench${n}`, nic: NIC, firmware: FIRMWARE }, n, workflow: { image: 'httpd' } });
  const wf = await env.waitWorkflow(wfId, (w) => w.state === 'running', 300_000, vm);
  const at = (state: string) => { const e = wf.events.find((x: any) => x.kind === 'state' && x.state === state); return e ? Date.parse(e.at) : undefined; };
  const m: Milestones = {
    start: vm.startedAt,
    nicOpen: lineAt(vm, /\(open\)/),
    dhcpOk: lineAt(vm, /Configuring \(net0.*ok/) ?? lineAt(vm, /net0: \d+\.\d+\.\d+\.\d+\//),
    script: at('booting'),
    initrdDone: lineAt(vm, /artifacts\/initramfs\.\.\..*\bok\b/) ?? lineAt(vm, /Linux version/),
    initStart: consoleLineAt(vm, /Run \/init as init process/),
    // agent online: the server took the hello; the agent's own steps from its console lines, which arrive as they
    // happen (its events reach the server a little later), the server's events where no line shows
    agentOnline: at('agent-online'),
    streaming: consoleLineAt(vm, /ironboot\[[\d.]+\]: state streaming/) ?? at('streaming'),
    verifying: consoleLineAt(vm, /ironboot\[[\d.]+\]: state verifying/) ?? at('verifying'),
    verified: consoleLineAt(vm, /ironboot\[[\d.]+\]: step stream done/),   // verified (and grown); mount follows
    mounted: consoleLineAt(vm, /ironboot\[[\d.]+\]: state mounted/) ?? at('mounted'),
    running: consoleLineAt(vm, /ironboot\[[\d.]+\]: state running/) ?? at('running'),
  };
  await vm.stop();
  // the machine is gone: its workflow ends as an operator retiring it would end it, so the next run's machine is not
  // sent to it for disk chunks (a gone peer costs PEER_CONNECT_TIMEOUT_MS per chunk window: p2p-peer-gone.test.ts)
  await env.api('POST', `/workflows/${wfId}/cancel`);
  return m;
}

/** The reference lab, from a copy of its scripts with this bench's namespace and addresses. */
async function referenceRun(n: number): Promise<Milestones> {
  const dir = mkdtempSync(join(tmpdir(), 'ibl-bench-ref-'));
  try {
    const src = join(dir, 'src');
    cpSync(REF_SRC, src, { recursive: true });
    spawnSync('chmod', ['-R', 'u+w', src]);
    const ns = `ibl${process.pid % 100000}r`;
    const env = readFileSync(join(src, 'lab.env'), 'utf8')
      .replace(/^NS=.*$/m, `NS=${ns}`)
      .replace(/^LAB=.*$/m, `LAB=${join(dir, 'lab')}`)
      .replaceAll('10.77.0.', '10.77.33.');
    writeFileSync(join(src, 'lab.env'), env.replace(/^KVER=.*$/m, `KVER=${findKernel().version}`));
    sameAccel(src);
    const name = `ref-${n}`;
    // asynchronously: the daemon of the ironboot lab keeps writing its log to our pipes meanwhile
    const r = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      const p = spawn('bash', ['-c', `cd ${src} && timeout 300 ./run-lab.sh stream >/dev/null 2>&1; cat ${join(dir, 'lab', 'run')}/lab-stream.timings.txt`],
        { env: { ...process.env, LAB: join(dir, 'lab') }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = ''; let stderr = '';
      p.stdout.on('data', (d) => { stdout += d; }); p.stderr.on('data', (d) => { stderr += d; });
      p.on('close', () => resolve({ stdout, stderr }));
    });
    const out = r.stdout;
    const t = (label: RegExp) => { const l = out.split('\n').find((x) => label.test(x)); const v = l ? Number(/\s(\d+\.\d+)\s/.exec(l.slice(40))?.[1]) : NaN; return Number.isFinite(v) ? v * 1000 : undefined; };
    const start = 0;
    if (!/t0 = QEMU start/.test(out)) throw new Error(`reference run ${name} failed:\n${out}\n${r.stderr}`);
    return {
      start, nicOpen: t(/^iPXE NIC open/), dhcpOk: t(/^iPXE "Configuring/), script: t(/^GET per-MAC script/),
      initrdDone: t(/^initrd download done/), initStart: t(/^\/init started/), agentOnline: t(/^network up/), streaming: t(/^network up/),
      // it does not verify what it wrote: verify is 0
      verifying: t(/^image written/), verified: t(/^image written/), mounted: t(/^disk mounted/), running: t(/^entrypoint running/),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    spawnSync('ip', ['netns', 'del', `ibl${process.pid % 100000}r`], { stdio: 'ignore' });
  }
}

/** The reference lab's VMs run on the accelerator ironboot's run on (its run-vm.sh says TCG). */
function sameAccel(src: string): void {
  const f = join(src, 'run-vm.sh');
  const text = readFileSync(f, 'utf8');
  const tcg = '-accel tcg -cpu "${CPU:-max}"';
  if (!text.includes(tcg)) throw new Error(`${f}: no "${tcg}" to set the accelerator in`);
  writeFileSync(f, text.replace(tcg, accelArgs(ACCEL.accel).join(' ')));
}

const fmt = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? '    –' : (ms / 1000).toFixed(2).padStart(6));
const median = (xs: number[]) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };

function phases(m: Milestones, list = PHASES): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [label, a, b] of list) if (m[a] !== undefined && m[b] !== undefined) out[label] = m[b]! - m[a]!;
  out.total = m.running !== undefined ? m.running - m.start! : NaN;
  return out;
}

/**
 * --install: a whole OS install, PXE → OS up from its own disk (the login prompt of the installed Debian), for
 * ironboot (test/e2e/lab-install.test.ts's flow: install workflow, after=reboot, second boot through the local-boot
 * script to GRUB on the disk) beside the reference lab streaming the same bootable disk (gzip, `dd` by its busybox
 * init) and then booting that disk alone in QEMU. Both install the same bytes and boot the same kernel.
 */
async function installBench(): Promise<void> {
  const { installAndBoot } = await import('../helpers/install-lab.ts');
  const { debianImage } = await import('../helpers/debian-image.ts');
  const { buildBootDisk } = await import('../../server/images/bootable.ts');
  const { findKernel } = await import('../../init/build/kernel.ts');
  const fw = FIRMWARE;
  const ours = await installAndBoot(fw, 33, (m) => console.error(m));
  let ref: { streamSeconds: number; bootSeconds: number } | null = null;
  if (existsSync(REF_SRC)) {
    const dir = mkdtempSync(join(tmpdir(), 'ibo-bench-ref-'));
    const ns = `ibo${process.pid % 100000}r`;
    try {
      // the same bootable disk ironboot installs, built here from the same image
      const img = await debianImage();
      const data = join(dir, 'data');
      const b = spawnSync(process.execPath, [join(import.meta.dirname, '../../server/cli/ironboot.mjs'), 'images', 'build', '--docker-archive', img.archive, '--data-dir', data, '--json'], { encoding: 'utf8' });
      if (b.status !== 0) throw new Error(`image build: ${b.stderr}`);
      const row = JSON.parse(b.stdout);
      const ext4 = join(data, 'images', `${row.id}.ext4`);
      mkdirSync(join(dir, 'disk'));
      const disk = await buildBootDisk({ imageId: row.id, imageName: row.name, ext4, rawSize: statSync(ext4).size, dir: join(dir, 'disk') });
      const src = join(dir, 'src');
      const lab = join(dir, 'lab');
      cpSync(REF_SRC, src, { recursive: true });
      spawnSync('chmod', ['-R', 'u+w', src]);
      const kver = findKernel().version;
      writeFileSync(join(src, 'lab.env'), readFileSync(join(src, 'lab.env'), 'utf8')
        .replace(/^NS=.*$/m, `NS=${ns}`).replace(/^LAB=.*$/m, `LAB=${lab}`).replace(/^KVER=.*$/m, `KVER=${kver}`).replaceAll('10.77.0.', '10.91.34.'));
      sameAccel(src);
      mkdirSync(join(lab, 'www', 'images'), { recursive: true });
      writeFileSync(join(lab, 'disk.img'), '');   // run-lab.sh then skips its own rootfs build
      spawnSync('bash', ['-c', `gzip -1 -c ${disk.file} > ${join(lab, 'www', 'images', 'bb-root.ext4.gz')} && truncate -s 1G ${join(lab, 'blank.img')}`]);
      const r = spawnSync('bash', ['-c', `cd ${src} && timeout 400 ./run-lab.sh stream >/dev/null 2>&1; cat ${join(lab, 'run')}/lab-stream.timings.txt`],
        { env: { ...process.env, LAB: lab, WAIT_MARK: 'LAB-MARK image-written', FETCH: '0', TMO: '360', ...(fw === 'uefi' ? { FW: 'uefi' } : {}) }, encoding: 'utf8' });
      const line = r.stdout.split('\n').find((x) => /^image written/.test(x));
      const streamSeconds = line ? Number(/\s(\d+\.\d+)\s/.exec(line.slice(40))?.[1]) : NaN;
      if (!Number.isFinite(streamSeconds)) throw new Error(`reference stream failed:\n${r.stdout}\n${r.stderr}`);
      // the written disk alone (no NIC): firmware → GRUB → Debian → login
      const written = join(lab, 'run', 'lab-stream.disk.img');
      const vars = join(dir, 'vars.fd');
      if (fw === 'uefi') cpSync('/usr/share/OVMF/OVMF_VARS_4M.fd', vars);
      const t0 = Date.now();
      const bootSeconds = await new Promise<number>((resolve, reject) => {
        const q = spawn('timeout', ['300', 'qemu-system-x86_64', ...accelArgs(ACCEL.accel), '-smp', '1', '-m', '768', '-nographic', '-no-reboot', '-nic', 'none',
          '-drive', `file=${written},if=virtio,format=raw`,
          ...(fw === 'uefi' ? ['-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd', '-drive', `if=pflash,format=raw,unit=1,file=${vars}`] : [])],
        { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        q.stdout.on('data', (d) => {
          out += d;
          if (/login:/.test(out)) { resolve((Date.now() - t0) / 1000); q.kill('SIGTERM'); }
        });
        q.on('close', () => reject(new Error(`the reference disk did not boot to a login prompt:\n${out.slice(-3000)}`)));
      });
      ref = { streamSeconds, bootSeconds };
    } finally {
      rmSync(dir, { recursive: true, force: true });
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
  }
  const refTotal = ref ? ref.streamSeconds + ref.bootSeconds : NaN;
  console.log(`\nOS install, PXE → OS up from its own disk (login prompt), ${fw}, ${ACCEL.accel.toUpperCase()}, seconds`);
  console.log('(reference: dnsmasq + python HTTP + busybox init dd-ing the same bootable disk (gzip), then that disk booted alone)\n');
  console.log(`${'phase'.padEnd(40)} ${'ironboot'.padStart(8)} ${'reference'.padStart(10)} ${'ratio'.padStart(7)}`);
  const row = (label: string, a: number, b: number) => console.log(`${label.padEnd(40)} ${a.toFixed(2).padStart(8)} ${(Number.isFinite(b) ? b.toFixed(2) : '–').padStart(10)} ${(Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '–').padStart(7)}`);
  row('PXE → disk written (+ first-boot data)', ours.installSeconds, ref?.streamSeconds ?? NaN);
  row('reboot → login prompt from the disk', ours.rebootToLoginSeconds, ref?.bootSeconds ?? NaN);
  row('total', ours.totalSeconds, refTotal);
}

const SEED_PHASES: [string, string, string][] = [
  ['kernel boot (to /init)', 'start', 'initStart'],
  ['/init → entrypoint', 'initStart', 'running'],
];

async function seedBoot(kernel: string, initrd: string, disk: string, dir: string, name: string): Promise<Milestones> {
  const vm = startVm({
    kernel, initrd, disks: [{ file: disk, bus: 'ahci' }], serialLog: join(dir, `${name}.log`), timeoutSec: 180, accel: ACCEL.accel,
    append: 'console=ttyS0,115200 panic=-1 root=/dev/sda entrypoint=/entry.sh ironboot.after=poweroff',
  });
  try {
    const start = vm.startedAt;
    await vm.waitFor(/Run \/init as init process/, 150_000);
    const initStart = Date.now();
    await vm.waitFor(/IBA-ENTRY uptime=/, 150_000);
    return { start, initStart, running: Date.now() };
  } finally {
    await vm.kill();
  }
}

/** The seed flow (`root=/dev/sda entrypoint=…`, no server): ironboot's initramfs beside the busybox-only one. */
async function seedBench(): Promise<{ ours: Record<string, number>[]; refs: Record<string, number>[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'ibb-seed-'));
  try {
    const art = join(await ensureArtifacts(), 'initramfs');
    const kernel = join(await ensureArtifacts(), 'vmlinuz');
    const ref = join(dir, 'reference.cpio.zst');
    referenceInitramfs(art, ref);
    console.error(`seed: initramfs ${(statSync(art).size / 1e6).toFixed(1)} MB, reference ${(statSync(ref).size / 1e6).toFixed(1)} MB`);
    const disk = join(dir, 'root.img');
    makeBusyboxRootfs(disk, { 'entry.sh': '#!/bin/sh\necho "IBA-ENTRY uptime=$(cut -d" " -f1 /proc/uptime)"\nsleep 600\n' });
    const ours: Record<string, number>[] = [];
    const refs: Record<string, number>[] = [];
    for (let i = 1; i <= RUNS; i++) {   // interleaved so host load hits both alike
      ours.push(phases(await seedBoot(kernel, art, disk, dir, `ironboot-${i}`), SEED_PHASES));
      refs.push(phases(await seedBoot(kernel, ref, disk, dir, `reference-${i}`), SEED_PHASES));
      console.error(`seed run ${i}/${RUNS}: ironboot ${fmt(ours.at(-1)!.total)} s, reference ${fmt(refs.at(-1)!.total)} s`);
    }
    return { ours, refs };
  } finally {
    if (process.env.IRONBOOT_E2E_KEEP) console.error(`seed: serial logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

function table(title: string, note: string, phaseList: [string, string, string][], ours: Record<string, number>[], refs: Record<string, number>[]): void {
  console.log(`\n${title}, ${ACCEL.accel.toUpperCase()}, median of ${RUNS} run(s), seconds`);
  console.log(`(${note})\n`);
  console.log(`${'phase'.padEnd(32)} ${'ironboot'.padStart(8)} ${'reference'.padStart(10)} ${'ratio'.padStart(7)}`);
  for (const label of [...phaseList.map((p) => p[0]), 'total']) {
    const a = median(ours.map((o) => o[label]));
    const b = median(refs.map((o) => o[label]));
    const ratio = Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '–';
    console.log(`${label.padEnd(32)} ${fmt(a).padStart(8)} ${fmt(b).padStart(10)} ${String(ratio).padStart(7)}`);
  }
}

async function main() {
  const why = labUnavailable();
  if (why) { console.error(`bench skipped: ${why}`); process.exit(0); }
  ACCEL = chooseAccel(join(await ensureArtifacts(), 'vmlinuz'));
  console.error(`# ${describeAccel(ACCEL)}`);
  if (args.includes('--install')) {
    await installBench();
    return;
  }
  let seed: Awaited<ReturnType<typeof seedBench>> | null = null;
  if (ONLY !== 'pxe') seed = await seedBench();
  const ours: Record<string, number>[] = [];
  const refs: Record<string, number>[] = [];
  if (ONLY !== 'seed') {
    const env = await LabEnv.start({ octet: 32 });
    try {
      await buildHttpdDisk(env);
      for (let i = 1; i <= RUNS; i++) {
        ours.push(phases(await ironbootRun(env, i)));
        if (existsSync(REF_SRC)) refs.push(phases(await referenceRun(i)));
        console.error(`run ${i}/${RUNS}: ironboot ${fmt(ours.at(-1)!.total)} s, reference ${fmt(refs.at(-1)?.total)} s`);
      }
    } finally {
      await env.destroy();
    }
  }
  console.log(`\n# ${describeAccel(ACCEL)}`);
  if (seed) {
    table('seed flow (root=/dev/sda entrypoint=…, no server), QEMU start → entrypoint, AHCI disk',
      'reference: busybox-only initramfs with the same kernel modules, shell /init: mount, coldplug, mount root, chroot', SEED_PHASES, seed.ours, seed.refs);
  }
  if (ours.length) {
    table(`PXE boot to entrypoint running, ${FIRMWARE} + ${NIC}`,
      'reference: dnsmasq + python HTTP + busybox shell init streaming a gzip ext4, no verify; its "agent online" = udhcpc done', PHASES, ours, refs);
  }
}

await main();
