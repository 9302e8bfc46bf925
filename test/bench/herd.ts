/**
 * A rack at once: N simulated machines (default 500; `HERD_N=…`) power on together, first against `ironboot serve`,
 * then against the reference stack — dnsmasq (DHCP reservations + TFTP), nginx (boot scripts, kernel, initramfs,
 * the same container-disk file) and test/helpers/herd/agent-standin.ts for /agent/v1, which the reference has no
 * equivalent of (an in-memory stand-in: it stores nothing) — on the same namespaces in the same run.
 * Prints the span from the first DISCOVER to the last acknowledged `succeeded`, p50/p99 per phase, DHCP drops,
 * TFTP retransmissions, HTTP and disk bytes/s, the daemon's RSS and event-loop lag, and ironboot/reference ratios.
 * Sizes: HERD_KERNEL_MB (4), HERD_INITRD_MB (8), HERD_DISK_PAYLOAD_MB (8, incompressible file in the image).
 *
 * ironboot runs twice: with peer-to-peer fetching off (--no-p2p: every machine gets the whole disk from the server,
 * as the reference does; the ratios against the reference are of this run) and on (chunks of HERD_P2P_CHUNK_KB,
 * default 512, from peers the tracker names, verified each). For both it prints server egress / (N × disk size),
 * counted from what the daemon itself says it sent (ironboot_image_bytes_sent_total), and the disk phase's
 * p50/p99. HERD_P2P=0 skips the peers-on run; HERD_P2P=only (peers on) or off-only runs that one alone, without the
 * reference, and prints the simulator's own event-loop delay: a late client is the simulator's doing, not the
 * daemon's. HERD_RUNNER_NODE_ARGS passes node flags to the simulator (e.g. --cpu-prof --cpu-prof-dir=DIR).
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Herd } from '../helpers/herd/index.ts';
import { PHASES } from '../helpers/herd/machine.ts';
import { netnsUnavailable, have } from '../helpers/netns.ts';
import type { StackRun } from '../helpers/herd/index.ts';

const N = Number(process.env.HERD_N ?? 500);
const MB = 1 << 20;
const sizes = {
  kernelBytes: Number(process.env.HERD_KERNEL_MB ?? 4) * MB,
  initrdBytes: Number(process.env.HERD_INITRD_MB ?? 8) * MB,
  diskPayloadBytes: Number(process.env.HERD_DISK_PAYLOAD_MB ?? 8) * MB,
};

const why = netnsUnavailable('dnsmasq', 'nginx', 'zstd', 'tc');
if (why) { console.log(`herd bench skipped: ${why}`); process.exit(0); }
void have;

function find(dir: string, name: string): string | null {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) { const f = find(p, name); if (f) return f; } else if (e.name === name) return p;
  }
  return null;
}

const fmt = (x: number | null | undefined, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const ratio = (a: number | null, b: number | null) => (a && b ? (a / b).toFixed(2) : '—');

function print(ib: StackRun, ref: StackRun): void {
  const a = ib.summary; const b = ref.summary;
  const row = (k: string, x: string, y: string, r: string) => console.log(`${k.padEnd(34)} ${x.padStart(12)} ${y.padStart(12)} ${r.padStart(8)}`);
  row('', 'ironboot', 'reference', 'ratio');
  row('machines succeeded', `${a.succeeded}/${a.machines}`, `${b.succeeded}/${b.machines}`, '');
  row('first DISCOVER → last succeeded (s)', fmt(a.spanMs / 1000, 2), fmt(b.spanMs / 1000, 2), ratio(a.spanMs, b.spanMs));
  for (const p of PHASES) {
    row(`  ${p} p50 / p99 (ms)`, `${fmt(a.phases[p].p50, 0)}/${fmt(a.phases[p].p99, 0)}`, `${fmt(b.phases[p].p50, 0)}/${fmt(b.phases[p].p99, 0)}`,
      ratio(a.phases[p].p99, b.phases[p].p99));
  }
  row('DHCP drops (retransmitted requests)', String(a.dhcpDrops), String(b.dhcpDrops), '');
  row('TFTP retransmissions / duplicates', `${a.tftpRetransmits}/${a.tftpDuplicates}`, `${b.tftpRetransmits}/${b.tftpDuplicates}`, '');
  row('HTTP MB/s (kernel…disk window)', fmt(a.httpBytesPerSecond / MB), fmt(b.httpBytesPerSecond / MB), ratio(a.httpBytesPerSecond, b.httpBytesPerSecond));
  row('disk MB/s under the herd', fmt(a.diskBytesPerSecond / MB), fmt(b.diskBytesPerSecond / MB), ratio(a.diskBytesPerSecond, b.diskBytesPerSecond));
  row('server RSS max (MiB)', fmt(ib.rss.maxBytes / MB, 0), fmt(ref.rss.maxBytes / MB, 0), ratio(ib.rss.maxBytes, ref.rss.maxBytes));
  row('event-loop lag p99, whole herd (ms)', fmt(a.lagP99RunMs), '—', '');
  row('event-loop lag p99, worst 0.5 s (ms)', fmt(a.lagP99MaxMs), '—', '');
  row('event-loop lag max (ms)', fmt(a.lagMaxMs), '—', '');
  if (a.groupCommit) row('agent/script requests per SQLite commit', `${fmt(a.groupCommit.jobs / Math.max(1, a.groupCommit.groups), 1)} (${a.groupCommit.jobs}/${a.groupCommit.groups})`, '—', '');
  row('server egress / (N × disk size)', fmt(a.egressRatio, 2), fmt(b.egressRatio, 2), '');
  for (const [name, s] of [['ironboot', a], ['reference', b]] as const) {
    for (const f of s.failed.slice(0, 5)) console.log(`${name} FAILED ${f.mac}: ${f.error}`);
  }
  const lags = ib.report.samples.map((x) => x.lagP99Seconds ?? 0).sort((x, y) => x - y);
  console.log(`ironboot event-loop lag p99 per 0.5 s sample: median ${fmt(lags[Math.floor(lags.length / 2)] * 1000)} ms over ${lags.length} samples`);
  console.log(`goals: 500 machines ${N >= 500 ? 'run' : `not run (N=${N})`}; no DHCP drop ${a.dhcpDrops === 0 ? 'met' : 'NOT met'}; no failed workflow `
    + `${a.failed.length === 0 && ib.report.finalStates.succeeded === N ? 'met' : 'NOT met'}; lag p99 < 50 ms over the herd ${(a.lagP99RunMs ?? Infinity) < 50 ? 'met' : 'NOT met'}, `
    + `in every 0.5 s ${(a.lagP99MaxMs ?? Infinity) < 50 ? 'met' : 'NOT met'}; `
    + `disk ≥ 90 % of nginx ${a.diskBytesPerSecond >= 0.9 * b.diskBytesPerSecond ? 'met' : 'NOT met'} (${fmt((100 * a.diskBytesPerSecond) / b.diskBytesPerSecond, 0)} %)`);
}

// sized for the rack, as the reference is (dnsmasq tftp-max=5000): at most half of --tftp-max-transfers (default
// 256) may be transfers whose client has not answered yet (the spoofing guard, server/tftp/server.ts), so N machines
// requesting at the same moment need 2 × N; with less, the rest are left unanswered and retry a second later
// HERD_SERVE_ARGS: more `ironboot serve` flags for every ironboot run (e.g. "--log-level warn")
const rackArgs = ['--tftp-max-transfers', String(Math.max(256, 2 * N)), ...(process.env.HERD_SERVE_ARGS ?? '').split(' ').filter(Boolean)];

const herd = await Herd.create(N);
try {
  console.log(`herd: ${N} machines; kernel ${sizes.kernelBytes / MB} MiB, initramfs ${sizes.initrdBytes / MB} MiB, disk payload ${sizes.diskPayloadBytes / MB} MiB; ironboot serve ${rackArgs.join(' ')}`);
  if (process.env.HERD_P2P === 'only' || process.env.HERD_P2P === 'off-only') {
    // one ironboot run alone (no reference, not the other mode): what a tuning change does
    const peers = process.env.HERD_P2P === 'only' ? 'on' : 'off';
    const chunk = Number(process.env.HERD_P2P_CHUNK_KB ?? 512) * 1024;
    const run = await herd.runIronboot(sizes, { serveArgs: [...(peers === 'on' ? ['--p2p-chunk-size', String(chunk)] : ['--no-p2p']), ...rackArgs] });
    const p = run.summary;
    console.log(`simulator's own event-loop delay: p99 ${fmt(run.report.runnerLag.p99Ms)} ms, max ${fmt(run.report.runnerLag.maxMs)} ms`);
    console.log(`peers ${peers} only: ${p.succeeded}/${p.machines}, egress ${fmt(p.egressRatio, 3)}, disk p50/p99 ${fmt(p.phases.disk.p50, 0)}/${fmt(p.phases.disk.p99, 0)} ms, `
      + `span ${fmt(p.spanMs / 1000, 2)} s, refused ${p.badPeerChunks} ${JSON.stringify(p.badPeerReasons)}, DHCP drops ${p.dhcpDrops}, TFTP retransmissions ${p.tftpRetransmits}, `
      + `lag p99 over the herd ${fmt(p.lagP99RunMs)} ms, worst 0.5 s ${fmt(p.lagP99MaxMs)} ms`
      + (p.groupCommit ? `, ${p.groupCommit.jobs} requests in ${p.groupCommit.groups} SQLite commits` : ''));
    for (const f of p.failed.slice(0, 5)) console.log(`peers ${peers} FAILED ${f.mac}: ${f.error}`);
    if (process.env.HERD_JSON) console.log(JSON.stringify({ ironboot: p, samples: run.report.samples }));
  } else {
  const ib = await herd.runIronboot(sizes, { serveArgs: ['--no-p2p', ...rackArgs] });
  const img = ib.report.image!;
  const file = find(join(herd.dir.path, 'data'), `${img.id}.ext4.zst`);
  if (!file) throw new Error('the built disk file is missing from the data dir');
  console.log(`container disk ${img.id}: ${(statSync(file).size / MB).toFixed(2)} MiB compressed, ${(img.rawSize / MB).toFixed(0)} MiB raw`);
  const ref = await herd.runReference(sizes, { ...img, file });
  print(ib, ref);
  let p2p: StackRun | null = null;
  if (process.env.HERD_P2P !== '0') {
    const chunk = Number(process.env.HERD_P2P_CHUNK_KB ?? 512) * 1024;
    p2p = await herd.runIronboot(sizes, { dataDir: 'data-p2p', serveArgs: ['--p2p-chunk-size', String(chunk), ...rackArgs] });
    const a = ib.summary; const p = p2p.summary; const r = ref.summary;
    const chunks = Math.ceil(img.compressedSize / chunk);
    console.log(`\npeer-to-peer fetching (${chunk / 1024} KiB chunks, ${chunks} per disk):`);
    const row = (k: string, ...v: string[]) => console.log(`${k.padEnd(34)} ${v.map((x) => x.padStart(12)).join(' ')}`);
    row('', 'peers on', 'peers off', 'reference');
    row('machines succeeded', `${p.succeeded}/${p.machines}`, `${a.succeeded}/${a.machines}`, `${r.succeeded}/${r.machines}`);
    row('server egress / (N × disk size)', fmt(p.egressRatio, 3), fmt(a.egressRatio, 3), fmt(r.egressRatio, 3));
    row('  disk p50 / p99 (ms)', `${fmt(p.phases.disk.p50, 0)}/${fmt(p.phases.disk.p99, 0)}`, `${fmt(a.phases.disk.p50, 0)}/${fmt(a.phases.disk.p99, 0)}`,
      `${fmt(r.phases.disk.p50, 0)}/${fmt(r.phases.disk.p99, 0)}`);
    row('first DISCOVER → last succeeded (s)', fmt(p.spanMs / 1000, 2), fmt(a.spanMs / 1000, 2), fmt(r.spanMs / 1000, 2));
    row('disk bytes from peers / server (MiB)', `${fmt(p.peerDiskBytes / MB, 0)}/${fmt(p.serverDiskBytesClient / MB, 0)}`, `0/${fmt(a.serverDiskBytesClient / MB, 0)}`, '');
    row('peer chunks refused (hash/error/late)', String(p.badPeerChunks), '', '');
    row('server RSS max (MiB)', fmt(p2p.rss.maxBytes / MB, 0), fmt(ib.rss.maxBytes / MB, 0), fmt(ref.rss.maxBytes / MB, 0));
    row('event-loop lag p99, whole herd (ms)', fmt(p.lagP99RunMs), fmt(a.lagP99RunMs), '—');
    row('event-loop lag p99, worst 0.5 s (ms)', fmt(p.lagP99MaxMs), fmt(a.lagP99MaxMs), '—');
    for (const f of p.failed.slice(0, 5)) console.log(`peers on FAILED ${f.mac}: ${f.error}`);
  }
  if (process.env.HERD_JSON) console.log(JSON.stringify({ ironboot: ib.summary, reference: ref.summary, p2p: p2p?.summary ?? null }));
  }
} finally {
  await herd.destroy();
}
