/** Figures of one herd run (pure): span, per-phase p50/p99, drops, retransmissions, bytes/s, lag. */
import { PHASES, type Phase } from './machine.ts';
import type { RunnerReport } from './runner.ts';

export const quantile = (xs: number[], q: number): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
};

export interface HerdSummary {
  machines: number;
  succeeded: number;
  failed: { mac: string; error: string }[];
  /** First DISCOVER to the last acknowledged `succeeded` (ms). */
  spanMs: number;
  phases: Record<Phase, { p50: number; p99: number }>;
  dhcpDrops: number;
  tftpRetransmits: number;
  tftpDuplicates: number;
  httpBytes: number;
  /** HTTP bytes over the time any HTTP download was under way (first kernel GET to last disk byte). */
  httpBytesPerSecond: number;
  /** Disk bytes over the time from the first disk GET to the last disk byte. */
  diskBytesPerSecond: number;
  /** The worst per-scrape p99 (scrapes every ~0.5 s): the strictest reading of "lag p99". */
  lagP99MaxMs: number | null;
  lagMaxMs: number | null;
  /** The p99 of the event-loop delay over the whole herd (ironboot_event_loop_delay_seconds, end minus start). */
  lagP99RunMs: number | null;
  rssMaxBytes: number | null;
  /** The daemon's group commits during the herd (ironboot_group_commit{s,_jobs}_total, end minus start); null without them. */
  groupCommit: { groups: number; jobs: number } | null;
  /**
   * Container-disk bytes the server sent over N × the compressed disk's size: from the daemon's own counter
   * (ironboot_image_bytes_sent_total) when it has one, else what the machines got from the server (the reference).
   */
  egressRatio: number;
  /** Disk bytes the machines got from peers, from the server (client side), and peer chunks refused. */
  peerDiskBytes: number;
  serverDiskBytesClient: number;
  badPeerChunks: number;
  /** Peer chunks refused, by reason (hash, error, slow). */
  badPeerReasons: Record<string, number>;
}

/** Sum of a Prometheus counter's samples whose labels match `labels` (e.g. kind="zst"). */
export function metricSum(text: string, name: string, labels = ''): number | null {
  let sum: number | null = null;
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? ([\\d.eE+-]+)$`, 'gm'))) {
    if (labels && !(m[1] ?? '').includes(labels)) continue;
    sum = (sum ?? 0) + Number(m[2]);
  }
  return sum;
}

/** How much a counter grew between two scrapes (`before` null: from zero); null when `after` lacks it. */
export function counterBetween(before: string | null | undefined, after: string | null | undefined, name: string): number | null {
  const end = after ? metricSum(after, name) : null;
  return end === null ? null : end - ((before ? metricSum(before, name) : null) ?? 0);
}

/** A Prometheus histogram's cumulative buckets (le → count) in `text`. */
export function histogramBuckets(text: string, name: string): Map<number, number> {
  const b = new Map<number, number>();
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} ([\\d.eE+-]+)$`, 'gm'))) b.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]));
  return b;
}

/**
 * The q-quantile of the observations between two scrapes of one histogram, as Prometheus' histogram_quantile
 * computes it (linear within the bucket it falls in); null without observations.
 */
export function quantileBetween(before: string | null, after: string, name: string, q: number): number | null {
  const a = histogramBuckets(after, name);
  const b = before ? histogramBuckets(before, name) : new Map<number, number>();
  const les = [...a.keys()].sort((x, y) => x - y);
  const count = (le: number) => (a.get(le) ?? 0) - (b.get(le) ?? 0);
  const total = les.length ? count(les[les.length - 1]) : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0; let below = 0;
  for (const le of les) {
    const c = count(le);
    if (c >= rank) return le === Infinity ? lower : lower + ((le - lower) * (rank - below)) / Math.max(1, c - below);
    lower = le; below = c;
  }
  return lower;
}

export function summarize(r: RunnerReport): HerdSummary {
  const ok = r.results.filter((x) => x.ok);
  const phases = {} as HerdSummary['phases'];
  for (const p of PHASES) {
    const d = ok.map((x) => x.phases[p]).filter(Boolean).map((v) => v![1] - v![0]);
    phases[p] = { p50: quantile(d, 0.5), p99: quantile(d, 0.99) };
  }
  const starts = r.results.map((x) => x.phases['dhcp-pxe']?.[0]).filter((v): v is number => v !== undefined);
  const ends = r.results.map((x) => x.phases.report?.[1]).filter((v): v is number => v !== undefined);
  const span = (from: Phase, to: Phase) => {
    const a = ok.map((x) => x.phases[from]?.[0]).filter((v): v is number => v !== undefined);
    const b = ok.map((x) => x.phases[to]?.[1]).filter((v): v is number => v !== undefined);
    return a.length && b.length ? (Math.max(...b) - Math.min(...a)) / 1000 : NaN;
  };
  const httpBytes = r.results.reduce((n, x) => n + x.httpBytes, 0);
  const diskBytes = r.results.reduce((n, x) => n + x.diskBytes, 0);
  const lags = r.samples.map((s) => s.lagP99Seconds).filter((v): v is number => v !== null);
  const maxes = r.samples.map((s) => s.lagMaxSeconds).filter((v): v is number => v !== null);
  const rss = r.samples.map((s) => s.rssBytes).filter((v): v is number => v !== null);
  return {
    machines: r.results.length, succeeded: ok.length,
    failed: r.results.filter((x) => !x.ok).map((x) => ({ mac: x.mac, error: x.error ?? '' })),
    spanMs: starts.length && ends.length ? Math.max(...ends) - Math.min(...starts) : NaN,
    phases,
    dhcpDrops: r.results.reduce((n, x) => n + x.dhcpRetransmits, 0),
    tftpRetransmits: r.results.reduce((n, x) => n + x.tftpRetransmits, 0),
    tftpDuplicates: r.results.reduce((n, x) => n + x.tftpDuplicates, 0),
    httpBytes,
    httpBytesPerSecond: httpBytes / span('kernel', 'disk'),
    diskBytesPerSecond: diskBytes / span('disk', 'disk'),
    lagP99MaxMs: lags.length ? Math.max(...lags) * 1000 : null,
    lagMaxMs: maxes.length ? Math.max(...maxes) * 1000 : null,
    lagP99RunMs: (() => {
      const v = r.daemonMetrics ? quantileBetween(r.daemonMetricsAtStart ?? null, r.daemonMetrics, 'ironboot_event_loop_delay_seconds', 0.99) : null;
      return v === null ? null : v * 1000;
    })(),
    rssMaxBytes: rss.length ? Math.max(...rss) : null,
    groupCommit: (() => {
      const groups = counterBetween(r.daemonMetricsAtStart, r.daemonMetrics, 'ironboot_group_commits_total');
      const jobs = counterBetween(r.daemonMetricsAtStart, r.daemonMetrics, 'ironboot_group_commit_jobs_total');
      return groups === null || jobs === null ? null : { groups, jobs };
    })(),
    egressRatio: (() => {
      const size = r.image?.compressedSize ?? (ok[0] ? ok[0].diskBytes : 0);
      const daemon = r.daemonMetrics ? metricSum(r.daemonMetrics, 'ironboot_image_bytes_sent_total', 'kind="zst"') : null;
      const sent = daemon ?? r.results.reduce((n, x) => n + x.serverDiskBytes, 0);
      return size ? sent / (r.results.length * size) : NaN;
    })(),
    peerDiskBytes: r.results.reduce((n, x) => n + x.peerDiskBytes, 0),
    serverDiskBytesClient: r.results.reduce((n, x) => n + x.serverDiskBytes, 0),
    badPeerChunks: r.results.reduce((n, x) => n + x.badPeers.length, 0),
    badPeerReasons: r.results.flatMap((x) => x.badPeers).reduce<Record<string, number>>((o, b) => { o[b.reason] = (o[b.reason] ?? 0) + 1; return o; }, {}),
  };
}
