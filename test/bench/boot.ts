/**
 * Benchmark: time from VM start to the entrypoint running, phase by phase, for ironboot beside the reference
 * lab (dnsmasq + python HTTP + a busybox shell init, from ../shared/lab, run from a copy) in the same run.
 * By hand, as root:  node --import tsx test/bench/boot.ts [--runs N] [--firmware bios|uefi] [--nic virtio|e1000]
 *
 * ironboot phases come from the serial console (host-timestamped lines) and the workflow's events (the server's
 * clock, the same host clock): firmware → DHCP → iPXE script → kernel + initramfs → agent online → stream →
 * verify → mount → run. The reference streams a gzip'ed ext4 image to a blank disk the same way (its `stream`
 * mode), so both write a container disk before running httpd.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabEnv, buildHttpdDisk, provision, labUnavailable, type LabVm } from '../helpers/lab-env.ts';
import type { LabFirmware, LabNic } from '../../server/lab/qemu.ts';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : def; };
const RUNS = Number(opt('runs', '1'));
const FIRMWARE = opt('firmware', 'bios') as LabFirmware;
const NIC = opt('nic', 'virtio') as LabNic;
const REF_SRC = opt('reference', '/work/shared/lab');

type Milestones = Record<string, number | undefined>;

const PHASES: [string, string, string][] = [
  ['firmware + iPXE ROM init', 'start', 'nicOpen'],
  ['DHCP (iPXE)', 'nicOpen', 'dhcpOk'],
  ['iPXE script', 'dhcpOk', 'script'],
  ['kernel + initramfs download', 'script', 'initrdDone'],
  ['kernel boot → agent online', 'initrdDone', 'agentOnline'],
  ['hello → stream start', 'agentOnline', 'streaming'],
  ['stream (write disk)', 'streaming', 'verifying'],
  ['verify + mount', 'verifying', 'mounted'],
  ['run (entrypoint up)', 'mounted', 'running'],
];

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
    initrdDone: lineAt(vm, /artifacts\/initramfs\.\.\. ?ok/) ?? lineAt(vm, /Linux version/),
    agentOnline: at('agent-online'), streaming: at('streaming'), verifying: at('verifying'), mounted: at('mounted'), running: at('running'),
  };
  await vm.stop();
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
    writeFileSync(join(src, 'lab.env'), env);
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
      initrdDone: t(/^initrd download done/), agentOnline: t(/^network up/), streaming: t(/^network up/),
      verifying: t(/^image written/), mounted: t(/^disk mounted/), running: t(/^entrypoint running/),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    spawnSync('ip', ['netns', 'del', `ibl${process.pid % 100000}r`], { stdio: 'ignore' });
  }
}

const fmt = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? '    –' : (ms / 1000).toFixed(2).padStart(6));
const median = (xs: number[]) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };

function phases(m: Milestones): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [label, a, b] of PHASES) if (m[a] !== undefined && m[b] !== undefined) out[label] = m[b]! - m[a]!;
  out.total = m.running !== undefined ? m.running - m.start! : NaN;
  return out;
}

async function main() {
  const why = labUnavailable();
  if (why) { console.error(`bench skipped: ${why}`); process.exit(0); }
  const ours: Record<string, number>[] = [];
  const refs: Record<string, number>[] = [];
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
  console.log(`\nboot to entrypoint running, ${FIRMWARE} + ${NIC}, TCG, median of ${RUNS} run(s), seconds`);
  console.log(`(reference: dnsmasq + python HTTP + busybox shell init streaming a gzip ext4; its "agent online" = udhcpc done)\n`);
  console.log(`${'phase'.padEnd(32)} ${'ironboot'.padStart(8)} ${'reference'.padStart(10)} ${'ratio'.padStart(7)}`);
  for (const label of [...PHASES.map((p) => p[0]), 'total']) {
    const a = median(ours.map((o) => o[label]));
    const b = median(refs.map((o) => o[label]));
    const ratio = Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '–';
    console.log(`${label.padEnd(32)} ${fmt(a).padStart(8)} ${fmt(b).padStart(10)} ${String(ratio).padStart(7)}`);
  }
}

await main();
