/**
 * Test helpers for the daemon: a temporary data directory, an in-process app with a real Store, and a real
 * `ironboot serve` child process on loopback.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Store } from '../../server/store/index.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { buildApp, type AppDeps } from '../../server/http/app.ts';
import { AgentTokens } from '../../server/workflows/tokens.ts';
import { createMetricsRegistry } from '../../server/metrics.ts';
import type { ImageInput } from '../../server/store/images.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'server', 'cli', 'ironboot.mjs');

export function tempDir(prefix = 'ironboot-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export const silentLog = () => pino({ level: 'silent' });

/** A ready image row, as the container-disk builder would leave it. */
export function readyImage(over: Partial<ImageInput> = {}): ImageInput {
  return {
    id: over.id ?? randomBytes(6).toString('hex'), name: over.name ?? 'busybox-httpd', source: 'registry.local/busybox:1',
    digest: 'sha256:' + 'a'.repeat(64), state: 'ready', rawSize: 33554432, rawSha256: 'b'.repeat(64),
    compressedSize: 1200000, compressedSha256: 'c'.repeat(64),
    config: { entrypoint: ['/bin/httpd'], cmd: ['-f', '-p', '80'], env: ['PATH=/bin'], workingDir: '/', user: null },
    ...over,
  };
}

/** With `store` (e.g. one of test/helpers/stores.ts's backends), the app runs on it; else on SQLite in dataDir. */
export async function inProcessApp(opts: { dataDir?: string; extra?: Partial<AppDeps>; store?: Store } = {}) {
  const dir = opts.dataDir ? null : tempDir();
  const dataDir = opts.dataDir ?? dir!.path;
  const store = opts.store ?? Store.open(dataDir);
  const log = silentLog();
  const workflows = new WorkflowService(store, log);
  const adminToken = 'test-admin-token';
  const app = await buildApp({
    store, workflows, log, registry: createMetricsRegistry(), adminToken, artifactsDir: join(dataDir, 'artifacts'), version: 'test',
    ...opts.extra,
  });
  await app.ready();
  return {
    app, store, workflows, adminToken, dataDir,
    auth: { authorization: `Bearer ${adminToken}` },
    async close() { await app.close(); store.close(); dir?.remove(); },
  };
}

/** Starts `ironboot serve` as a child process on 127.0.0.1 with an ephemeral port; resolves once it listens. */
export async function spawnDaemon(dataDir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ proc: ChildProcess; url: string; output: () => string; stop(): Promise<number | null> }> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0', '--no-dhcp', '--no-tftp',
    '--no-build-artifacts', ...args], { env: { ...process.env, CI: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in 30 s:\n${out}`)), 30000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /"http":"([\d.]+:\d+)"/.exec(out);
      if (m) { clearTimeout(timer); resolve(`http://${m[1]}`); }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`daemon exited with ${code}:\n${out}`)); });
  });
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return {
    proc, url, output: () => out,
    stop: () => new Promise((resolve) => {
      if (proc.exitCode !== null) return resolve(proc.exitCode);
      proc.once('exit', (code) => resolve(code));
      proc.kill('SIGTERM');
    }),
  };
}

/**
 * An agent's session token for a workflow, as a real hello would get it: a boot token minted for `ip` (as a served
 * provisioning script does) and exchanged once (server/workflows/tokens.ts). Moves no state.
 */
export function agentSession(store: Store, workflowId: string, ip = '127.0.0.1'): string {
  const tokens = new AgentTokens(store);
  const r = tokens.exchangeBoot(tokens.issueBoot(workflowId, ip), workflowId, ip);
  if (!r.ok) throw new Error(`agentSession: ${r.message}`);
  return r.session;
}

/** A boot token for a workflow, as a provisioning script served to `ip` carries it. */
export const bootTokenFor = (store: Store, workflowId: string, ip = '127.0.0.1'): string => new AgentTokens(store).issueBoot(workflowId, ip);
