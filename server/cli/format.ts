/** Human output for the CLI: aligned tables and key/value blocks. */

export function table(rows: Record<string, unknown>[], columns: [header: string, get: (r: Record<string, unknown>) => unknown][]): string {
  const cells = rows.map((r) => columns.map(([, get]) => fmt(get(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === vals.length - 1 ? v : v.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(columns.map(([h]) => h)), ...cells.map(line)].join('\n') + '\n';
}

export function fmt(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (Array.isArray(v)) return v.length ? v.map(fmt).join(' ') : '-';
  if (typeof v === 'object') {
    const e = Object.entries(v as Record<string, unknown>);
    return e.length ? e.map(([k, x]) => `${k}=${fmt(x)}`).join(',') : '-';
  }
  return String(v);
}

export function keyValues(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj);
  const w = Math.max(...keys.map((k) => k.length));
  return keys.map((k) => `${(k + ':').padEnd(w + 1)}  ${fmt(obj[k])}`).join('\n') + '\n';
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return `${i ? x.toFixed(1) : x} ${u[i]}`;
}
