/**
 * Kernel + initramfs for the agent's QEMU tests, built once per set of inputs and cached under
 * /tmp/ironboot-test-cache/artifacts-<hash> (the hash covers the agent and builder sources, the agent API,
 * esbuild's version and the host binaries that go in), so test files share one build.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildArtifacts, type ArtifactsReport } from '../../init/build/index.ts';
import { findKernel } from '../../init/build/kernel.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CACHE_DIR = process.env.IRONBOOT_TEST_CACHE ?? '/tmp/ironboot-test-cache';

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]).sort();
}

export function artifactsKey(): string {
  const h = createHash('sha256');
  for (const f of [...files(join(ROOT, 'init')), join(ROOT, 'server/agent/api.ts'), join(ROOT, 'node_modules/esbuild/package.json')]) {
    h.update(f).update(readFileSync(f));
  }
  const k = findKernel();
  for (const p of [k.path, `${k.modulesDir}/modules.dep`, process.execPath, '/usr/bin/busybox', '/usr/bin/zstd', '/usr/bin/lz4']) {
    const s = existsSync(p) ? statSync(p) : null;
    h.update(`${p}:${s?.size}:${s?.mtimeMs}`);
  }
  return h.digest('hex').slice(0, 16);
}

export async function testArtifacts(log: (m: string) => void = () => {}): Promise<{ kernel: string; initramfs: string; report: ArtifactsReport }> {
  const dir = join(CACHE_DIR, `artifacts-${artifactsKey()}`);
  const reportFile = join(dir, 'report.json');
  if (existsSync(reportFile)) {
    return { kernel: join(dir, 'vmlinuz'), initramfs: join(dir, 'initramfs'), report: JSON.parse(readFileSync(reportFile, 'utf8')) };
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const r = await buildArtifacts({ outDir: tmp, log });
  try { renameSync(tmp, dir); } catch { rmSync(tmp, { recursive: true, force: true }); /* another test file won the race */ }
  return { kernel: join(dir, 'vmlinuz'), initramfs: join(dir, 'initramfs'), report: { ...r.report, kernel: { ...r.report.kernel, file: join(dir, 'vmlinuz') }, initramfs: { ...r.report.initramfs, file: join(dir, 'initramfs') } } };
}
