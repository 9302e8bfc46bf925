/**
 * The herd itself, run inside the rack namespace (`node --import tsx runner.ts CONFIG.json`): sets up the server
 * side through its API when asked (machines with reservations, the image, one workflow each), powers every machine
 * on at once, samples the daemon's /metrics while they boot, checks every workflow's final state through the API,
 * and prints one JSON report on stdout.
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { bootMachine, peerServers, type MachineSpec, type MachineResult } from './machine.ts';

export interface RunnerConfig {
  machines: MachineSpec[];
  /** ironboot: its REST API (register machines, build the image, create workflows, read final states). */
  api?: { url: string; token: string; ociLayout: string; imageName: string };
  /** Sampled every 500 ms while the herd boots (ironboot's Prometheus endpoint). */
  metricsUrl?: string;
  /** One machine after the other (each starts when the one before has its disk) instead of all at once. */
  sequential?: boolean;
  /** Entrypoints keep running (and agents serving chunks) until every machine has its disk. */
  holdEntrypoints?: boolean;
  /** MACs whose peer server corrupts every chunk it serves. */
  corruptPeers?: string[];
}

export interface MetricsSample { t: number; rssBytes: number | null; lagP99Seconds: number | null; lagMaxSeconds: number | null }

export interface RunnerReport {
  results: MachineResult[];
  wallMs: number;
  samples: MetricsSample[];
  finalStates: Record<string, number>;
  image: { id: string; compressedSize: number; compressedSha256: string; rawSize: number } | null;
  daemonMetrics: string | null;
  /** The daemon's /metrics just before the herd started. */
  daemonMetricsAtStart: string | null;
  /** The simulator's own event-loop delay while the herd booted (ms): a late client is the simulator's doing. */
  runnerLag: { p99Ms: number; maxMs: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function api<T = any>(c: NonNullable<RunnerConfig['api']>, method: string, path: string, body?: unknown, ok = [200, 201, 202]): Promise<T> {
  const r = await fetch(`${c.url}/api/v1${path}`, {
    method, headers: { authorization: `Bearer ${c.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!ok.includes(r.status)) throw new Error(`${method} ${path} → ${r.status}: ${text}`);
  return (text ? JSON.parse(text) : null) as T;
}

const metric = (text: string, name: string): number | null => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.eE+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
};

export async function runHerdInNamespace(cfg: RunnerConfig): Promise<RunnerReport> {
  let image: RunnerReport['image'] = null;
  const wfIds: string[] = [];
  if (cfg.api) {
    const c = cfg.api;
    await api(c, 'POST', '/images', { name: c.imageName, source: { type: 'oci-layout', path: c.ociLayout, ref: 'latest' } });
    for (let i = 0; ; i++) {
      const img = await api(c, 'GET', `/images/${c.imageName}`, undefined, [200, 404]);
      if (img?.state === 'ready') { image = { id: img.id, compressedSize: img.compressedSize, compressedSha256: img.compressedSha256, rawSize: img.rawSize }; break; }
      if (img?.state === 'failed' || i > 600) throw new Error(`image build: ${JSON.stringify(img)}`);
      await sleep(200);
    }
    for (const m of cfg.machines) {
      await api(c, 'POST', '/machines', { mac: m.mac, ipv4: { address: m.ip, prefix: m.prefix } });
      wfIds.push((await api(c, 'POST', '/workflows', { machine: m.mac, image: c.imageName, target: '/dev/vda', after: 'wait' })).id);
    }
  }
  const samples: MetricsSample[] = [];
  let sampling = true;
  // prom-client resets its event-loop histogram at each scrape: one scrape now, so the samples cover the herd only
  // and the daemon's cumulative histograms as they were before the herd (the difference at the end covers the herd)
  const daemonMetricsAtStart = cfg.metricsUrl ? await fetch(cfg.metricsUrl).then((r) => r.text()).catch(() => null) : null;
  const t0 = performance.now();
  const runnerLag = monitorEventLoopDelay({ resolution: 10 });
  runnerLag.enable();
  const sampler = (async () => {
    if (!cfg.metricsUrl) return;
    while (sampling) {
      try {
        const text = await (await fetch(cfg.metricsUrl)).text();
        samples.push({
          t: performance.now() - t0, rssBytes: metric(text, 'ironboot_process_resident_memory_bytes'),
          lagP99Seconds: metric(text, 'ironboot_nodejs_eventloop_lag_p99_seconds'), lagMaxSeconds: metric(text, 'ironboot_nodejs_eventloop_lag_max_seconds'),
        });
      } catch { /* the next sample */ }
      await sleep(500);
    }
  })();
  let release = () => {};
  const allHaveDisks = new Promise<void>((r) => { release = r; });
  let settled = 0;
  // a machine's disk phase ended (verified or failed), or its flow ended before it: once all have, entrypoints end
  const settle = () => { if (++settled === cfg.machines.length) release(); };
  const boot = (m: MachineSpec, diskDone: () => void): Promise<MachineResult> => {
    let once = false;
    const done = () => { if (!once) { once = true; settle(); diskDone(); } };
    return bootMachine(m, t0, {
      corruptPeer: cfg.corruptPeers?.includes(m.mac), entrypointUntil: cfg.holdEntrypoints ? allHaveDisks : undefined, onDiskDone: done,
    }).finally(done);
  };
  let results: MachineResult[];
  if (cfg.sequential) {
    // the next machine starts once this one's disk is verified (its entrypoint may still be running)
    const runs: Promise<MachineResult>[] = [];
    for (const m of cfg.machines) {
      let diskDone = () => {};
      const disk = new Promise<void>((r) => { diskDone = r; });
      runs.push(boot(m, diskDone));
      await disk;
    }
    results = await Promise.all(runs);
  } else {
    results = await Promise.all(cfg.machines.map((m) => boot(m, () => {})));
  }
  release();
  await Promise.all(peerServers.splice(0).map((p) => p.close()));
  const wallMs = performance.now() - t0;
  runnerLag.disable();
  sampling = false;
  await sampler;
  // the daemon's counters as the herd left them (before the 500 API reads below, which are not part of it)
  const daemonMetrics = cfg.metricsUrl ? await fetch(cfg.metricsUrl).then((r) => r.text()).catch(() => null) : null;
  const finalStates: Record<string, number> = {};
  if (cfg.api) {
    for (const id of wfIds) {
      const wf = await api(cfg.api, 'GET', `/workflows/${id}`);
      finalStates[wf.state] = (finalStates[wf.state] ?? 0) + 1;
    }
  } else {
    for (const r of results) finalStates[r.serverState ?? 'unknown'] = (finalStates[r.serverState ?? 'unknown'] ?? 0) + 1;
  }
  return { results, wallMs, samples, finalStates, image, daemonMetrics, daemonMetricsAtStart, runnerLag: { p99Ms: runnerLag.percentile(99) / 1e6, maxMs: runnerLag.max / 1e6 } };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8')) as RunnerConfig;
  const report = await runHerdInNamespace(cfg);
  process.stdout.write(JSON.stringify(report) + '\n');
}
