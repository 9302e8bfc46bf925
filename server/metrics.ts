import { Registry, collectDefaultMetrics } from 'prom-client';

/** One Prometheus registry per daemon; every service on the main thread registers its counters here. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ironboot_' });
  return registry;
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
