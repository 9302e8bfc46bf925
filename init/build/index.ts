/**
 * `ironboot artifacts build`: the kernel and the initramfs the machines boot.
 *
 *   vmlinuz     the host's Debian kernel (or --kernel PATH)
 *   initramfs   newc cpio (our writer, reproducible) compressed with lz4 (legacy frame, the kernel's RD_LZ4) or zstd:
 *                 /init → busybox (init: PID 1, reaps orphans, respawns the agent from /etc/inittab)
 *                 busybox-static + applet links, node (stripped) + exactly the libraries ldd reports,
 *                 zstd, resize2fs, blkdiscard (util-linux, for BLKZEROOUT) + their libraries,
 *                 the bundled agent, kernel modules (closure over modules.dep, depmod'ed)
 *   report.json sizes and contents
 *
 * Same inputs → same bytes (sorted entries, fixed mtime/uid/gid, deterministic lz4 and zstd).
 *
 * Why lz4 by default: the kernel unpacks the whole initramfs (128 MB, 86 MB of it node) before /init runs, and lz4
 * decompresses several times faster than zstd. Measured in test/bench/boot.ts under TCG (one run each): kernel
 * boot to /init 7.20 → 6.13 s on the PXE path (7.12 → 6.42 s seed) for a 53.3 MB file instead of 39.0 MB, whose
 * download grew 0.68 → 1.00 s; PXE to entrypoint 14.71 → 14.08 s. zstd stays for kernels built without RD_LZ4.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, realpathSync, renameSync, rmSync, statSync, writeFileSync, copyFileSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { UDHCPC_SCRIPT } from '../agent/steps/net.ts';
import { COLDPLUG, COLDPLUG_SCRIPT } from '../agent/steps/drivers.ts';
import { EARLY_MOUNTS, earlyMountScript } from '../agent/steps/mounts.ts';
import { bundleAgent } from './bundle.ts';
import { cpioChunks, normaliseEntries, type CpioEntry } from './cpio.ts';
import { findKernel } from './kernel.ts';
import { librariesOf } from './ldd.ts';
import { ALL_DRIVER_EXCLUDES, ALL_DRIVER_PREFIXES, DEFAULT_MODULES, moduleClosure, moduleName, parseModulesDep } from './modules.ts';

export interface BuildOptions {
  outDir: string;
  kernel?: string;
  allDrivers?: boolean;
  log?: (msg: string) => void;
  /**
   * How the initramfs is compressed: 'lz4' or 'zstd'. Unset: lz4, or zstd where the lz4 tool is not installed or the
   * kernel's config says it has no RD_LZ4 (requestedCompression, initramfsCompressionFor).
   */
  compression?: InitramfsCompression;
  /** zstd level (default DEFAULT_ZSTD_LEVEL). */
  zstdLevel?: number;
  /** Host binaries (defaults: the Debian packages' paths). */
  busybox?: string;
  node?: string;
  extraModules?: string[];
  /** The operator's CA (PEM): built in as /etc/ironboot/ca.pem, which the agent verifies HTTPS against (init/agent/tls.ts). */
  caFile?: string | null;
}

/** Next to the artifacts: the sha256 of the CA built into the initramfs (absent: none), so serve can tell a stale build. */
export const CA_STAMP = 'initramfs.ca-sha256';

export interface ArtifactsReport {
  kernelVersion: string;
  kernelSource: string;
  kernel: { file: string; bytes: number; sha256: string };
  initramfs: { file: string; bytes: number; sha256: string; uncompressedBytes: number; entries: number; compression: string };
  groups: Record<string, { files: number; bytes: number }>;
  modules: string[];
  missingModules: string[];
  allDrivers: boolean;
  seconds: { total: number; compress: number };
}

export const INITTAB = `# ironboot: busybox init is PID 1 (reaps orphans); it respawns the agent if the agent dies.
# The early mounts first (init waits for them), then the coldplug beside the agent: drivers load while node starts.
::sysinit:/bin/sh ${EARLY_MOUNTS}
::once:/bin/sh ${COLDPLUG.script}
::respawn:/lib/ironboot/bin/node /lib/ironboot/agent.mjs
::ctrlaltdel:/bin/busybox reboot -f
::shutdown:/bin/busybox sync
`;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function findBinary(candidates: string[], what: string, pkg: string): string {
  for (const c of candidates) if (existsSync(c)) return realpathSync(c);
  throw new Error(`${what} not found (${candidates.join(', ')}): install the Debian package ${pkg}`);
}

function stripped(path: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'ironboot-strip-'));
  try {
    const out = join(dir, 'bin');
    execFileSync('strip', ['--strip-all', '-o', out, path], { stdio: ['ignore', 'ignore', 'pipe'] });
    return readFileSync(out);
  } catch (e) {
    throw new Error(`strip ${path} failed (install binutils): ${(e as Error).message}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export type InitramfsCompression = 'lz4' | 'zstd';

/** zstd's level when none is given (19 is ~10x slower for ~12 % less: init/README.md). */
const DEFAULT_ZSTD_LEVEL = 12;

/** The command line that compresses an initramfs: lz4's legacy frame (-l) is the only lz4 format the kernel unpacks. */
function compressor(c: InitramfsCompression, zstdLevel: number): { cmd: string; args: string[]; label: string; pkg: string } {
  return c === 'lz4'
    ? { cmd: 'lz4', args: ['-q', '-l', '-9', '-c'], label: 'lz4 -l -9', pkg: 'lz4' }
    : { cmd: 'zstd', args: ['-q', `-${zstdLevel}`, '-T0', '-c'], label: `zstd -${zstdLevel}`, pkg: 'zstd' };
}

const LZ4_LEGACY_MAGIC = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** How an initramfs this builder wrote is compressed, told by its magic. */
export function initramfsCompressionOf(file: string): InitramfsCompression {
  const head = Buffer.alloc(4);
  const fd = openSync(file, 'r');
  try { readSync(fd, head, 0, 4, 0); } finally { closeSync(fd); }
  if (head.equals(LZ4_LEGACY_MAGIC)) return 'lz4';
  if (head.equals(ZSTD_MAGIC)) return 'zstd';
  throw new Error(`${file}: neither an lz4 (legacy) nor a zstd initramfs (magic ${head.toString('hex')})`);
}

/** The cpio inside an initramfs this builder wrote. */
export function decompressInitramfs(file: string): Buffer {
  return execFileSync(initramfsCompressionOf(file), ['-d', '-c', file], { maxBuffer: 1 << 30 });
}

/** An initramfs of `cpio` compressed as `c` (what the builder does, for others that write one: the boot bench's reference). */
export function compressInitramfs(cpio: Buffer, c: InitramfsCompression): Buffer {
  const how = compressor(c, DEFAULT_ZSTD_LEVEL);
  return execFileSync(how.cmd, how.args, { input: cpio, maxBuffer: 1 << 30 });
}

/** Whether `cmd` is an executable file in one of PATH's directories. */
export function onPath(cmd: string, path = process.env.PATH ?? ''): boolean {
  return path.split(':').filter(Boolean).some((d) => {
    try { const s = statSync(join(d, cmd)); return s.isFile() && (s.mode & 0o111) !== 0; } catch { return false; }
  });
}

/**
 * What was asked for, or lz4 by default; the default falls back to zstd (with a log line) where lz4 is not installed,
 * so a machine set up before lz4 was the default still builds. An explicit lz4 without the tool is compress()'s error.
 */
export function requestedCompression(asked: InitramfsCompression | undefined, lz4Installed: boolean, log: (m: string) => void): InitramfsCompression {
  if (asked) return asked;
  if (lz4Installed) return 'lz4';
  log('lz4 is not installed (Debian package lz4): compressing the initramfs with zstd, which the kernel unpacks more slowly');
  return 'zstd';
}

/**
 * The compression to use for this kernel: lz4 unless the kernel's config (/boot/config-VERSION next to it, when there
 * is one) says it cannot unpack lz4 (then zstd, if it can).
 */
export function initramfsCompressionFor(kernelPath: string, version: string, wanted: InitramfsCompression, log: (m: string) => void): InitramfsCompression {
  const config = [join(dirname(kernelPath), `config-${version}`), `/boot/config-${version}`].find((f) => existsSync(f));
  if (!config) return wanted;
  const text = readFileSync(config, 'utf8');
  const has = (c: InitramfsCompression) => new RegExp(`^CONFIG_RD_${c.toUpperCase()}=y`, 'm').test(text);
  if (has(wanted)) return wanted;
  const other: InitramfsCompression = wanted === 'lz4' ? 'zstd' : 'lz4';
  if (has(other)) { log(`kernel ${version} cannot unpack a ${wanted} initramfs (no CONFIG_RD_${wanted.toUpperCase()} in ${config}): using ${other}`); return other; }
  throw new Error(`kernel ${version} unpacks neither lz4 nor zstd initramfs images (${config}: no CONFIG_RD_LZ4 or CONFIG_RD_ZSTD)`);
}

function compress(chunks: Iterable<Buffer>, how: { cmd: string; args: string[]; pkg: string }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const z = spawn(how.cmd, how.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    z.stdout.on('data', (d: Buffer) => out.push(d));
    z.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    z.on('error', (e) => reject(new Error(`${how.cmd}: ${e.message} (install the Debian package ${how.pkg})`)));
    z.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${how.cmd} exited ${code}: ${err}`))));
    z.stdin.on('error', () => {});
    const it = chunks[Symbol.iterator]();
    const pump = () => {
      for (;;) {
        const n = it.next();
        if (n.done) { z.stdin.end(); return; }
        if (!z.stdin.write(n.value)) { z.stdin.once('drain', pump); return; }
      }
    };
    pump();
  });
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) out.push(...walk(p)); else out.push(p);
  }
  return out;
}

export async function buildArtifacts(opts: BuildOptions): Promise<{ kernel: string; initramfs: string; report: ArtifactsReport }> {
  const t0 = Date.now();
  const log = opts.log ?? (() => {});
  const k = findKernel({ kernel: opts.kernel });
  log(`kernel ${k.path} (${k.version})`);
  const entries: CpioEntry[] = [];
  const group = new Map<string, string>();        // path → report group
  const add = (e: CpioEntry, g: string) => { entries.push(e); group.set(e.path.replace(/^\/+/, ''), g); };
  const addFile = (path: string, data: Buffer, mode: number, g: string) => add({ path, type: 'file', mode, data }, g);

  // --- skeleton ---
  for (const d of ['bin', 'dev', 'etc', 'lib', 'lib64', 'mnt', 'proc', 'root', 'run', 'sys', 'tmp', 'usr', 'var', 'lib/ironboot/bin']) {
    add({ path: d, type: 'dir', mode: d === 'tmp' ? 0o1777 : d === 'root' ? 0o700 : 0o755 }, 'skeleton');
  }
  add({ path: 'sbin', type: 'symlink', target: 'bin' }, 'skeleton');
  add({ path: 'usr/bin', type: 'symlink', target: '../bin' }, 'skeleton');
  add({ path: 'usr/sbin', type: 'symlink', target: '../bin' }, 'skeleton');
  add({ path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 }, 'skeleton');
  add({ path: 'dev/null', type: 'char', mode: 0o666, major: 1, minor: 3 }, 'skeleton');
  addFile('etc/inittab', Buffer.from(INITTAB), 0o644, 'etc');
  addFile('etc/passwd', Buffer.from('root:x:0:0:root:/root:/bin/sh\n'), 0o644, 'etc');
  addFile('etc/group', Buffer.from('root:x:0:\n'), 0o644, 'etc');
  addFile('etc/profile', Buffer.from('export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/lib/ironboot/bin\nexport PS1="ironboot# "\n'), 0o644, 'etc');
  addFile('etc/hostname', Buffer.from('ironboot\n'), 0o644, 'etc');
  let caPem: Buffer | null = null;
  if (opts.caFile) {
    caPem = readFileSync(opts.caFile);
    if (!/-----BEGIN CERTIFICATE-----/.test(caPem.toString('latin1'))) throw new Error(`${opts.caFile} holds no PEM certificate`);
    add({ path: 'etc/ironboot', type: 'dir', mode: 0o755 }, 'etc');
    addFile('etc/ironboot/ca.pem', caPem, 0o644, 'etc');
  }

  // --- busybox-static: PID 1 (/init → busybox init) and the applets ---
  const busybox = findBinary(opts.busybox ? [opts.busybox] : ['/usr/bin/busybox', '/bin/busybox'], 'busybox', 'busybox-static');
  if (librariesOf(busybox).length) throw new Error(`${busybox} is not statically linked: install busybox-static`);
  addFile('bin/busybox', readFileSync(busybox), 0o755, 'busybox');
  const applets = execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox' && !a.includes('/'));
  for (const a of applets) add({ path: `bin/${a}`, type: 'symlink', target: 'busybox' }, 'busybox');
  add({ path: 'init', type: 'symlink', target: 'bin/busybox' }, 'busybox');

  // --- node, zstd, resize2fs, blkdiscard and exactly their libraries ---
  const node = findBinary(opts.node ? [opts.node] : [process.execPath, '/usr/bin/node'], 'node', 'nodejs');
  const tools: Array<[string, string, boolean]> = [
    ['node', node, true],
    ['zstd', findBinary(['/usr/bin/zstd'], 'zstd', 'zstd'), false],
    ['resize2fs', findBinary(['/usr/sbin/resize2fs', '/sbin/resize2fs'], 'resize2fs', 'e2fsprogs'), false],
    ['blkdiscard', findBinary(['/usr/sbin/blkdiscard', '/sbin/blkdiscard'], 'blkdiscard', 'util-linux'), false],
  ];
  const libs = new Set<string>();
  for (const [name, path, strip] of tools) {
    log(`${name}: ${path}${strip ? ' (stripping)' : ''}`);
    addFile(`lib/ironboot/bin/${name}`, strip ? stripped(path) : readFileSync(path), 0o755, name === 'node' ? 'node' : 'tools');
    for (const l of librariesOf(path)) libs.add(l);
  }
  add({ path: 'bin/node', type: 'symlink', target: '../lib/ironboot/bin/node' }, 'node');
  add({ path: 'bin/zstd', type: 'symlink', target: '../lib/ironboot/bin/zstd' }, 'tools');
  add({ path: 'bin/resize2fs', type: 'symlink', target: '../lib/ironboot/bin/resize2fs' }, 'tools');
  for (const l of [...libs].sort()) addFile(l, readFileSync(realpathSync(l)), 0o755, 'libs');

  // --- the agent ---
  const agent = await bundleAgent();
  addFile('lib/ironboot/agent.mjs', agent, 0o644, 'agent');
  addFile('lib/ironboot/udhcpc.script', Buffer.from(UDHCPC_SCRIPT), 0o755, 'agent');
  addFile(EARLY_MOUNTS.slice(1), Buffer.from(`#!/bin/sh\n# ironboot: the early mounts, run by init before the agent and the coldplug\n${earlyMountScript(true)}`), 0o755, 'agent');
  addFile(COLDPLUG.script.slice(1), Buffer.from(COLDPLUG_SCRIPT), 0o755, 'agent');

  // --- kernel modules: the closure over modules.dep, then depmod in a staging tree ---
  const index = parseModulesDep(readFileSync(`${k.modulesDir}/modules.dep`, 'utf8'));
  const names = [...DEFAULT_MODULES, ...(opts.extraModules ?? [])];
  const { paths, missing } = moduleClosure(index, names, opts.allDrivers ? ALL_DRIVER_PREFIXES : [], ALL_DRIVER_EXCLUDES);
  if (missing.length) log(`not modules of ${k.version} (built in or absent): ${missing.join(', ')}`);
  const stage = mkdtempSync(join(tmpdir(), 'ironboot-modules-'));
  try {
    const mdir = join(stage, 'lib/modules', k.version);
    for (const p of paths) {
      mkdirSync(dirname(join(mdir, p)), { recursive: true });
      copyFileSync(join(k.modulesDir, p), join(mdir, p));
    }
    for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      if (existsSync(join(k.modulesDir, f))) copyFileSync(join(k.modulesDir, f), join(mdir, f));
    }
    execFileSync('depmod', ['-b', stage, k.version], { stdio: ['ignore', 'ignore', 'pipe'] });
    for (const f of walk(mdir)) addFile(join('lib/modules', k.version, relative(mdir, f)), readFileSync(f), 0o644, 'modules');
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  log(`${paths.length} module files${opts.allDrivers ? ' (all network and storage drivers)' : ''}`);

  // --- archive, compress, write ---
  const normalised = normaliseEntries(entries);
  const uncompressed = [...cpioChunks(normalised)].reduce((n, b) => n + b.length, 0);
  const asked = requestedCompression(opts.compression, onPath('lz4'), log);
  const how = compressor(initramfsCompressionFor(k.path, k.version, asked, log), opts.zstdLevel ?? DEFAULT_ZSTD_LEVEL);
  const tc = Date.now();
  const initramfs = await compress(cpioChunks(normalised), how);
  const compressSeconds = (Date.now() - tc) / 1000;
  log(`initramfs: ${normalised.length} entries, ${(uncompressed / 1e6).toFixed(1)} MB → ${(initramfs.length / 1e6).toFixed(1)} MB (${how.label}, ${compressSeconds.toFixed(1)} s)`);

  mkdirSync(opts.outDir, { recursive: true });
  const kernelBytes = readFileSync(k.path);
  const out = { kernel: join(opts.outDir, 'vmlinuz'), initramfs: join(opts.outDir, 'initramfs') };
  const writeAtomic = (p: string, b: Buffer) => { writeFileSync(`${p}.tmp`, b); renameSync(`${p}.tmp`, p); };
  writeAtomic(out.kernel, kernelBytes);
  writeAtomic(out.initramfs, initramfs);
  if (caPem) writeAtomic(join(opts.outDir, CA_STAMP), Buffer.from(sha256(caPem) + '\n'));
  else rmSync(join(opts.outDir, CA_STAMP), { force: true });

  const groups: ArtifactsReport['groups'] = {};
  for (const e of normalised) {
    if (e.type !== 'file') continue;
    const g = group.get(e.path) ?? 'other';
    groups[g] ??= { files: 0, bytes: 0 };
    groups[g].files++;
    groups[g].bytes += e.data.length;
  }
  const report: ArtifactsReport = {
    kernelVersion: k.version,
    kernelSource: k.path,
    kernel: { file: out.kernel, bytes: kernelBytes.length, sha256: sha256(kernelBytes) },
    initramfs: { file: out.initramfs, bytes: initramfs.length, sha256: sha256(initramfs), uncompressedBytes: uncompressed, entries: normalised.length, compression: how.label },
    groups,
    modules: paths.map(moduleName),
    missingModules: missing,
    allDrivers: !!opts.allDrivers,
    seconds: { total: (Date.now() - t0) / 1000, compress: compressSeconds },
  };
  writeAtomic(join(opts.outDir, 'report.json'), Buffer.from(JSON.stringify(report, null, 2) + '\n'));
  return { ...out, report };
}

/** A human summary of the report (for the CLI). */
export function formatReport(r: ArtifactsReport): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const lines = [
    `kernel     ${r.kernel.file}  ${mb(r.kernel.bytes)}  (${r.kernelVersion} from ${r.kernelSource})`,
    `initramfs  ${r.initramfs.file}  ${mb(r.initramfs.bytes)}  (${r.initramfs.compression}, ${mb(r.initramfs.uncompressedBytes)} unpacked, ${r.initramfs.entries} entries)`,
    ...Object.entries(r.groups).sort((a, b) => b[1].bytes - a[1].bytes).map(([g, v]) => `  ${g.padEnd(9)} ${mb(v.bytes).padStart(9)}  ${v.files} files`),
    `modules    ${r.modules.length}${r.allDrivers ? ' (all network and storage drivers)' : ''}${r.missingModules.length ? `; not in this kernel: ${r.missingModules.join(', ')}` : ''}`,
    `built in   ${r.seconds.total.toFixed(1)} s (compression ${r.seconds.compress.toFixed(1)} s)`,
  ];
  return lines.join('\n');
}
