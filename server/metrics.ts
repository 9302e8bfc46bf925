import { Registry, Histogram, collectDefaultMetrics } from 'prom-client';

/** One Prometheus registry per daemon; every service on the main thread registers its counters here. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ironboot_' });
  return registry;
}

/**
 * ironboot_event_loop_delay_seconds: how late a 10 ms timer on the main thread fires, as a cumulative histogram.
 * The default metrics' lag percentiles (ironboot_nodejs_eventloop_lag_p99_seconds) cover only the time since the
 * last scrape; buckets that only grow give the delay over any span (two scrapes: the difference), e.g. the p99
 * over a whole rack's boot. Returns the stop function.
 */
export function watchEventLoopDelay(registry: Registry, everyMs = 10): () => void {
  const h = new Histogram({
    name: 'ironboot_event_loop_delay_seconds', help: 'How late a timer on the main thread fired (sampled every 10 ms)', registers: [registry],
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5],
  });
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    h.observe(Math.max(0, now - last - everyMs) / 1000);
    last = now;
  }, everyMs);
  t.unref();
  return () => clearInterval(t);
}

/** Counters kept elsewhere (the DHCP thread's own registry), as Prometheus text, appended to the registry's. */
const sources = new WeakMap<Registry, (() => Promise<string>)[]>();

export function addMetricsSource(registry: Registry, text: () => Promise<string>): void {
  const list = sources.get(registry) ?? [];
  list.push(text);
  sources.set(registry, list);
}

/** What /metrics answers: the registry's metrics and those of every added source. */
export async function metricsText(registry: Registry): Promise<string> {
  const parts = [await registry.metrics(), ...await Promise.all((sources.get(registry) ?? []).map((f) => f().catch(() => '')))];
  return parts.filter((p) => p.trim()).map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('');
}

export type { Registry };
