import { Registry, collectDefaultMetrics } from 'prom-client';

/** One Prometheus registry per daemon; every service registers its counters here. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ironboot_' });
  return registry;
}

export type { Registry };
