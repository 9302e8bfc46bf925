/**
 * One end-to-end lab for a test: its own network namespace (bridge + taps, `ibl<pid>…`, 10.77.<octet>.0/24),
 * the IPv6 RA sender, a real `ironboot serve` child inside it (DHCP on br0, TFTP, HTTP; prebuilt artifacts
 * from a shared cache), Debian's docker-registry inside it holding the test's OCI image, and QEMU VMs on the taps.
 * The test reaches the API (and a VM's web server) through a Unix-socket forwarder running inside the namespace,
 * so nothing links the namespace to the host's network. destroy() stops every process it started (by PID,
 * checked to be inside the namespace) and deletes the namespace; call it from t.after / finally.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLabNetwork, namespaceExists, namespacePids, pidInNamespace, stopInNamespace, ip } from '../../server/lab/netns.ts';
import { qemuArgs, macForName, OVMF_VARS, QEMU_BINARY, type LabFirmware, type LabNic } from '../../server/lab/qemu.ts';
import { buildImage, type TarSpec } from './images-oci.ts';
import { acquireQemuLock } from './qemu-lock.ts';
import { testArtifacts } from './agent-artifacts.ts';
import { testAccel } from './qemu.ts';

/** One VM at a time across the run's test files (test/helpers/qemu-lock.ts). */
export const qemuLock = acquireQemuLock;

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** IRONBOOT_E2E_CLI: another entry point (developing the tests against a work-in-progress tree); default the CLI. */
export const CLI = process.env.IRONBOOT_E2E_CLI ?? join(ROOT, 'server', 'cli', 'ironboot.mjs');
const RA_SENDER = join(ROOT, 'server', 'lab', 'ra-sender.py');
const FORWARDER = join(ROOT, 'test', 'helpers', 'lab-forward.ts');
const REGISTRY_BIN = '/usr/bin/docker-registry';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Reason to skip a QEMU lab test, or false. */
export function labUnavailable(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, taps)';
  for (const c of ['ip', QEMU_BINARY, 'python3', 'zstd']) if (!have(c)) return `${c} is not installed`;
  if (!existsSync(REGISTRY_BIN)) return `${REGISTRY_BIN} is missing (apt-get install docker-registry)`;
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// Artifacts: the kernel + initramfs, built once per source state and shared with the agent's QEMU tests
// (test/helpers/agent-artifacts.ts caches them under /tmp/ironboot-test-cache/artifacts-<hash>).

/** Directory holding `vmlinuz` and `initramfs` (IRONBOOT_E2E_ARTIFACTS overrides with a prebuilt directory). */
export async function ensureArtifacts(): Promise<string> {
  if (process.env.IRONBOOT_E2E_ARTIFACTS) return process.env.IRONBOOT_E2E_ARTIFACTS;
  const { kernel, initramfs } = await testArtifacts();
  if (dirname(kernel) !== dirname(initramfs) || !kernel.endsWith('/vmlinuz') || !initramfs.endsWith('/initramfs')) {
    throw new Error(`testArtifacts() gave ${kernel} and ${initramfs}; ironboot serve needs DIR/vmlinuz and DIR/initramfs`);
  }
  return dirname(kernel);
}

// ---------------------------------------------------------------------------------------------------------------

export interface SerialLine { t: number; text: string }

/** One QEMU VM inside the lab; its serial console is kept in memory (host-timestamped lines) and in a file. */
export class LabVm {
  readonly lines: SerialLine[] = [];
  readonly startedAt = Date.now();
  private partial = '';
  exited: { code: number | null; signal: string | null } | null = null;

  constructor(readonly name: string, readonly mac: string, readonly proc: ChildProcess, readonly logFile: string, private ns: string) {
    const onData = (d: Buffer) => {
      const text = (this.partial + d.toString('latin1')).replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>c]/g, '');
      const parts = text.split(/\r?\n/);
      this.partial = parts.pop() ?? '';
      const now = Date.now();
      for (const p of parts) {
        const line = p.split('\r').filter((s) => s.trim()).pop() ?? '';
        if (!line.trim()) continue;
        this.lines.push({ t: now, text: line });
        appendFileSync(logFile, `${(now / 1000).toFixed(3)} ${line}\n`);
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code, signal) => { this.exited = { code, signal }; });
  }

  text(from = 0): string {
    return this.lines.slice(from).map((l) => l.text).join('\n') + (this.partial ? `\n${this.partial}` : '');
  }

  /** Line i joined with the next one: iPXE wraps its console at 80 columns, so a message may span two lines. */
  joined(i: number): string {
    const a = this.lines[i]?.text ?? '';
    const b = this.lines[i + 1]?.text;
    return b !== undefined && a.length >= 79 ? a + b : a;
  }

  /** Index of the first line (at or after `from`) matching re (or starting a match wrapped onto the next line), or -1. */
  find(re: RegExp, from = 0): number {
    for (let i = from; i < this.lines.length; i++) if (re.test(this.joined(i))) return i;
    return -1;
  }

  /** Resolves with the matching line's index; rejects on timeout, VM exit, or a `failOn` match, with the console tail. */
  async waitFor(re: RegExp, timeoutMs: number, opts: { from?: number; failOn?: RegExp } = {}): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.find(re, opts.from ?? 0);
      if (i >= 0) return i;
      if (opts.failOn) {
        const j = this.find(opts.failOn, opts.from ?? 0);
        if (j >= 0) throw new Error(`VM ${this.name}: "${this.lines[j].text}" while waiting for ${re}\n--- serial (tail) ---\n${this.tail()}`);
      }
      if (this.exited) throw new Error(`VM ${this.name} exited (${JSON.stringify(this.exited)}) while waiting for ${re}\n--- serial (tail) ---\n${this.tail()}`);
      if (Date.now() > deadline) throw new Error(`VM ${this.name}: no ${re} within ${timeoutMs / 1000} s\n--- serial (tail) ---\n${this.tail()}`);
      await sleep(100);
    }
  }

  tail(n = 40): string {
    return this.lines.slice(-n).map((l) => `+${((l.t - this.startedAt) / 1000).toFixed(2)}s ${l.text}`).join('\n');
  }

  async stop(): Promise<void> {
    if (this.exited || !this.proc.pid) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    if (pidInNamespace(this.proc.pid, this.ns)) this.proc.kill('SIGTERM');
    await Promise.race([done, sleep(5000)]);
    if (!this.exited && this.proc.pid && pidInNamespace(this.proc.pid, this.ns)) this.proc.kill('SIGKILL');
    await Promise.race([done, sleep(2000)]);
  }
}

export interface VmOptions {
  name: string;
  mac?: string;
  nic?: LabNic;
  firmware?: LabFirmware;
  /** Size of the blank disk (bytes); 0: none. Default 256 MiB. */
  diskBytes?: number;
  /** Reuse this disk file (a reboot of the same machine). */
  disk?: string;
  memoryMb?: number;
  noReboot?: boolean;
  /** Plain firmware PXE (no NIC option ROM): UEFI then fetches ipxe.efi by TFTP. */
  noRom?: boolean;
  /** The disk gets bootindex=2 (after the NIC): the firmware falls through to it when the network boot exits. */
  diskBoot?: boolean;
}

export interface ApiReply<T = any> { status: number; body: T; text: string; headers: http.IncomingHttpHeaders }

let labCounter = 0;

export class LabEnv {
  readonly procs: ChildProcess[] = [];
  readonly vms: LabVm[] = [];
  private daemonOut = '';
  private tapsUsed = 0;
  private releaseQemu: (() => Promise<void>) | null = null;
  readonly token = randomBytes(18).toString('base64url');
  readonly socket: string;
  readonly url: string;
  readonly dataDir: string;

  /** With --tls-cert: the CA the API is verified against (the API is then on the HTTPS side, :8443). */
  apiCa: string | null = null;

  private constructor(readonly ns: string, readonly address: string, readonly prefix: number, readonly dir: string, readonly artifactsDir: string) {
    this.socket = join(dir, 'fwd.sock');
    this.url = `http://${address}:8080`;
    this.dataDir = join(dir, 'data');
  }

  /**
   * Namespace + bridge + RA sender + forwarder + `ironboot serve`. `octet` picks 10.77.<octet>.0/24 (`net`, or its
   * alias `net16`: another /16 than 10.77; `nsPrefix` another namespace prefix than "ibl"); `apiCa`: the daemon runs
   * with --tls-cert and the API is reached over HTTPS (:8443), verified against this CA.
   */
  static async start(opts: {
    octet: number; serveArgs?: string[]; net?: string; net16?: string; nsPrefix?: string; apiCa?: string;
    /** The caller holds the QEMU lock for several labs at once (one test, several daemons): do not take it. */
    qemuLockHeld?: boolean;
    /** Runs after the namespace exists and before `ironboot serve` starts (links to other namespaces, say). */
    beforeServe?: (env: LabEnv) => Promise<void> | void;
    /** More environment for `ironboot serve`. */
    serveEnv?: NodeJS.ProcessEnv;
  }): Promise<LabEnv> {
    const artifactsDir = await ensureArtifacts();
    // one QEMU test at a time across the run's test files (test/helpers/qemu-lock.ts): held until destroy()
    const releaseQemu = opts.qemuLockHeld ? null : await qemuLock();
    const ns = `${opts.nsPrefix ?? 'ibl'}${process.pid % 100000}${(labCounter++).toString(36)}`;
    const address = `${opts.net ?? opts.net16 ?? '10.77'}.${opts.octet}.1`;
    const dir = mkdtempSync(join(tmpdir(), `${ns}-`));
    const env = new LabEnv(ns, address, 24, dir, artifactsDir);
    env.apiCa = opts.apiCa ?? null;
    env.releaseQemu = releaseQemu;
    try {
      createLabNetwork({ ns, bridge: 'br0', address, prefix: 24, taps: ['tap0', 'tap1', 'tap2'] });
      env.spawn('python3', [RA_SENDER, 'br0']);
      const fwd = env.spawn(process.execPath, ['--import', 'tsx', FORWARDER, env.socket], { cwd: ROOT });
      await opts.beforeServe?.(env);
      const serve = env.spawn(process.execPath, [CLI, 'serve', '--data-dir', env.dataDir, '--dhcp-interface', 'br0',
        '--http-listen', `${address}:8080`, '--tftp-listen', `${address}:69`, '--public-url', env.url,
        '--artifacts-dir', artifactsDir, '--no-build-artifacts', '--log-level', 'debug', ...(opts.serveArgs ?? [])],
        { env: { ...process.env, IRONBOOT_TOKEN: env.token, CI: '1', ...(opts.serveEnv ?? {}) } });
      const capture = (d: Buffer) => { env.daemonOut += d.toString(); };
      serve.stdout!.on('data', capture);
      serve.stderr!.on('data', capture);
      await env.until(() => /ironboot serving HTTP/.test(env.daemonOut), 60_000, () => `ironboot serve did not start:\n${env.daemonOut}`, serve);
      await env.until(() => existsSync(env.socket), 20_000, () => 'the forwarder did not start', fwd);
      return env;
    } catch (err) {
      await env.destroy();
      throw err;
    }
  }

  spawn(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    p.stdout!.resume(); p.stderr!.resume();
    this.procs.push(p);
    return p;
  }

  private async until(pred: () => boolean, timeoutMs: number, why: () => string, proc?: ChildProcess): Promise<void> {
    for (let t = 0; t < timeoutMs; t += 100) {
      if (pred()) return;
      if (proc && proc.exitCode !== null) throw new Error(`exited with ${proc.exitCode}: ${why()}`);
      await sleep(100);
    }
    throw new Error(why());
  }

  daemonLog(): string { return this.daemonOut; }

  /** An HTTP request to HOST:PORT inside the namespace, through the forwarder. */
  request(target: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiReply> {
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.socket, method, path,
        headers: {
          'x-forward-to': target, ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}), ...headers,
        },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try { parsed = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode ?? 0, body: parsed, text, headers: res.headers });
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${target}${path}: timeout`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** The daemon's REST API (admin token). Throws with the reply on an unexpected status. */
  async api<T = any>(method: string, path: string, body?: unknown, expect: number[] = [200, 201]): Promise<T> {
    const r = this.apiCa
      ? await this.request(`${this.address}:8443`, method, `/api/v1${path}`, body, { authorization: `Bearer ${this.token}`, 'x-forward-ca': this.apiCa })
      : await this.request(`${this.address}:8080`, method, `/api/v1${path}`, body, { authorization: `Bearer ${this.token}` });
    if (!expect.includes(r.status)) throw new Error(`${method} /api/v1${path} → ${r.status}: ${r.text}`);
    return r.body as T;
  }

  /** Runs the `ironboot` CLI inside the namespace against this daemon (asynchronously: the daemon's pipes keep flowing). */
  cli(args: string[], timeoutMs = 300_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const p = spawn('ip', ['netns', 'exec', this.ns, process.execPath, CLI, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, env: { ...process.env, IRONBOOT_SERVER: this.url, IRONBOOT_TOKEN: this.token },
      });
      let stdout = ''; let stderr = '';
      p.stdout!.on('data', (d) => { stdout += d; }); p.stderr!.on('data', (d) => { stderr += d; });
      p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  }

  /** A free address of the lab subnet for machine n (10.77.x.50+n). */
  hostAddress(n: number): string { return this.address.replace(/\.1$/, `.${50 + n}`); }

  async registerMachine(mac: string, address: string, extra: Record<string, unknown> = {}): Promise<void> {
    await this.api('POST', '/machines', { mac, ipv4: { address, prefix: this.prefix }, ...extra });
  }

  async workflow(id: string): Promise<any> {
    return this.api('GET', `/workflows/${id}`);
  }

  /** Polls the workflow until pred holds; fails early when it reaches a final state pred does not accept. */
  async waitWorkflow(id: string, pred: (wf: any) => boolean, timeoutMs: number, vm?: LabVm): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    let wf: any;
    for (;;) {
      wf = await this.workflow(id);
      if (pred(wf)) return wf;
      const final = ['succeeded', 'failed', 'timed-out', 'cancelled'].includes(wf.state);
      const panicked = vm ? vm.find(/Kernel panic/) >= 0 : false;
      if (final || panicked || Date.now() > deadline || vm?.exited) {
        throw new Error(`workflow ${id} is ${wf.state}${wf.reason ? ` (${wf.reason})` : ''}${final ? '' : ` after ${timeoutMs / 1000} s`}`
          + `\nevents:\n${(wf.events ?? []).map((e: any) => `  ${e.at} ${e.kind} ${e.state ?? ''} ${e.message ?? ''}`).join('\n')}`
          + (vm ? `\n--- serial (tail) ---\n${vm.tail()}` : '') + `\n--- daemon (tail) ---\n${this.daemonOut.split('\n').slice(-20).join('\n')}`);
      }
      await sleep(500);
    }
  }

  startVm(o: VmOptions): LabVm {
    const mac = o.mac ?? macForName(`${this.ns}/${o.name}`);
    const tap = `tap${this.tapsUsed++ % 3}`;
    let disk: string | null = o.disk ?? null;
    if (!disk && o.diskBytes !== 0) {
      disk = join(this.dir, `${o.name}.disk`);
      writeFileSync(disk, '');
      spawnSync('truncate', ['-s', String(o.diskBytes ?? 256 << 20), disk]);
    }
    let vars: string | undefined;
    if (o.firmware === 'uefi') {
      vars = join(this.dir, `${o.name}.vars.fd`);
      if (!existsSync(vars)) writeFileSync(vars, readFileSync(OVMF_VARS));
    }
    const args = qemuArgs({ tap, mac, nic: o.nic ?? 'virtio', firmware: o.firmware ?? 'bios', disk, memoryMb: o.memoryMb ?? 1024, ovmfVars: vars, noReboot: o.noReboot ?? true, noRom: o.noRom, diskBoot: o.diskBoot, accel: testAccel(join(this.artifactsDir, 'vmlinuz')) });
    const proc = this.spawn('timeout', ['600', QEMU_BINARY, ...args]);
    proc.stdout!.removeAllListeners('data'); proc.stderr!.removeAllListeners('data');
    const vm = new LabVm(o.name, mac, proc, join(this.dir, `${o.name}.serial.log`), this.ns);
    this.vms.push(vm);
    return vm;
  }

  /** Disk file of a VM started with startVm (for a reboot with the same disk). */
  diskOf(name: string): string { return join(this.dir, `${name}.disk`); }

  async destroy(): Promise<void> {
    for (const vm of this.vms) await vm.stop().catch(() => {});
    for (const p of [...this.procs].reverse()) {
      if (p.exitCode === null && p.signalCode === null && p.pid) await stopInNamespace(p.pid, this.ns, 5000);
    }
    if (namespaceExists(this.ns)) {
      for (const pid of namespacePids(this.ns)) await stopInNamespace(pid, this.ns, 1000);
      try { ip('netns', 'del', this.ns); } catch { /* gone */ }
    }
    if (!process.env.IRONBOOT_E2E_KEEP) rmSync(this.dir, { recursive: true, force: true });
    const release = this.releaseQemu;
    this.releaseQemu = null;
    await release?.();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The container image of the tests: busybox httpd, pushed to a docker-registry inside the namespace.

export const HTTPD_PAGE = 'hello from an ironboot container disk\n';

export function httpdImageLayer(): TarSpec[] {
  const bin = readFileSync('/bin/busybox');
  const applets = ['sh', 'httpd', 'echo', 'cat', 'sleep', 'ls', 'mkdir', 'hostname', 'ip', 'uname'];
  return [
    { path: 'bin/', type: 'dir' }, { path: 'bin/busybox', content: bin, mode: 0o755 },
    ...applets.map((a) => ({ path: `bin/${a}`, type: 'symlink' as const, linkname: 'busybox' })),
    { path: 'etc/', type: 'dir' }, { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'www/', type: 'dir' }, { path: 'www/index.html', content: HTTPD_PAGE },
    { path: 'tmp/', type: 'dir', mode: 0o1777 }, { path: 'proc/', type: 'dir' }, { path: 'sys/', type: 'dir' }, { path: 'dev/', type: 'dir' },
  ];
}

/**
 * Starts docker-registry inside the namespace on 127.0.0.1:5000, pushes the busybox httpd image as
 * `127.0.0.1:5000/lab/httpd:1`, and builds it into a container disk named `name` through the API
 * (POST /api/v1/images, plain-HTTP registry). Resolves with the image row once it is ready.
 */
export async function buildHttpdDisk(env: LabEnv, name = 'httpd'): Promise<any> {
  const regDir = join(env.dir, 'registry');
  mkdirSync(regDir, { recursive: true });
  const cfg = join(regDir, 'config.yml');
  writeFileSync(cfg, `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(regDir, 'storage')}\nhttp:\n  addr: 127.0.0.1:5000\n`);
  env.spawn(REGISTRY_BIN, ['serve', cfg]);
  const reg = '127.0.0.1:5000';
  for (let i = 0; ; i++) {
    const r = await env.request(reg, 'GET', '/v2/').catch(() => ({ status: 0 }));
    if (r.status === 200) break;
    if (i > 100) throw new Error('docker-registry did not start inside the namespace');
    await sleep(100);
  }
  const image = buildImage({
    layers: [httpdImageLayer()],
    config: { Entrypoint: ['/bin/httpd', '-f', '-p', '80', '-h', '/www'], Env: ['PATH=/bin'], WorkingDir: '/' },
  });
  for (const blob of [image.config, ...image.layers]) {
    const start = await env.request(reg, 'POST', '/v2/lab/httpd/blobs/uploads/');
    if (start.status !== 202) throw new Error(`registry upload start: ${start.status} ${start.text}`);
    const loc = new URL(String(start.headers.location), `http://${reg}`);
    loc.searchParams.set('digest', blob.digest);
    const put = await env.request(reg, 'PUT', loc.pathname + loc.search, blob.bytes, { 'content-type': 'application/octet-stream' });
    if (put.status !== 201) throw new Error(`registry blob ${blob.digest}: ${put.status} ${put.text}`);
  }
  const m = await env.request(reg, 'PUT', '/v2/lab/httpd/manifests/1', image.manifest.bytes, { 'content-type': image.manifest.mediaType });
  if (m.status !== 201) throw new Error(`registry manifest: ${m.status} ${m.text}`);

  // the REST API of server/http/routes/api/image-builds.ts (the CLI's `images build` drives the same)
  await env.api('POST', '/images', { name, source: { type: 'registry', ref: `${reg}/lab/httpd:1`, insecure: true } }, [200, 202]);
  for (let t = 0; t < 180_000; t += 500) {
    const img = await env.api('GET', `/images/${name}`, undefined, [200, 404]);
    if (img?.state === 'ready') return img;
    if (img?.state === 'failed') throw new Error(`image build failed: ${img.error}`);
    await sleep(500);
  }
  throw new Error('the image did not become ready within 180 s');
}

/** Files of a container disk in the daemon's data dir (the compressed one first). */
export function diskFiles(env: LabEnv, imageId: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.startsWith(imageId) && statSync(p).size > 0 && !/\.(json|tmp|part)$/.test(e.name)) out.push(p);
    }
  };
  walk(env.dataDir);
  return out.sort((a, b) => Number(b.endsWith('.zst')) - Number(a.endsWith('.zst')));
}

// ---------------------------------------------------------------------------------------------------------------

/** The state events of a workflow, in order. */
export const stateEvents = (wf: any): string[] => (wf.events ?? []).filter((e: any) => e.kind === 'state').map((e: any) => e.state);

/** Entrypoint output lines recorded in a workflow's log events. */
export const logLines = (wf: any): string[] => (wf.events ?? []).filter((e: any) => e.kind === 'log')
  .flatMap((e: any) => (e.payload?.lines ?? []).map((l: any) => l.line) as string[]);

/** Kernel panics, iPXE giving up, firmware with nothing to boot: a provisioning boot that cannot go on. */
export const BOOT_FAILED = /Kernel panic|No more network devices|No bootable device|ironboot: could not load the kernel/;

/** Registers a machine (reserved address), creates its workflow and starts its VM. */
export async function provision(env: LabEnv, o: { vm: VmOptions; n: number; workflow: Record<string, unknown> }): Promise<{ vm: LabVm; wfId: string; mac: string; address: string }> {
  const mac = o.vm.mac ?? macForName(`${env.ns}/${o.vm.name}`);
  const address = env.hostAddress(o.n);
  await env.registerMachine(mac, address);
  const wf = await env.api('POST', '/workflows', { machine: mac, target: '/dev/vda', ...o.workflow });
  const vm = env.startVm({ ...o.vm, mac });
  return { vm, wfId: wf.id, mac, address };
}
