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
  lagP99MaxMs: number | null;
  lagMaxMs: number | null;
  rssMaxBytes: number | null;
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
    rssMaxBytes: rss.length ? Math.max(...rss) : null,
  };
}
