/**
 * `ironboot lab`: a private provisioning network on one Linux machine (root), to try everything on.
 *
 *   lab up      namespace + bridge (server address) + taps, an IPv6 RA sender (saves iPXE ~13 s), and
 *               `ironboot serve` inside it with DHCP, TFTP and HTTP bound to the bridge
 *   lab vm      a QEMU VM (TCG) on a free tap, PXE first, serial console to a log file, in the background
 *   lab console follow a VM's serial log        lab stop NAME   stop one VM
 *   lab exec    run a command inside the lab (the API is only reachable there), IRONBOOT_SERVER/TOKEN set
 *   lab status  what runs                       lab down        stop what the lab started, delete the namespace
 *
 * State (pids, VMs, logs, disks, the daemon's data dir) lives in STATE_DIR (default /var/tmp/ironboot-lab/NAME).
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync, closeSync, openSync, readSync, truncateSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, str, type ParsedArgs } from '../cli/args.ts';
import { parseMac } from '../mac.ts';
import {
  LabError, createLabNetwork, ip, namespaceExists, namespacePids, parseSubnet, pidInNamespace, spawnInNamespace, stopInNamespace,
} from './netns.ts';
import { OVMF_VARS, QEMU_BINARY, macForName, parseSize, qemuArgs, type LabFirmware, type LabNic } from './qemu.ts';
import { chooseAccel, describeAccel } from './accel.ts';
import { findKernel } from '../../init/build/kernel.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CLI_PATH = resolve(HERE, '../cli/ironboot.mjs');
export const RA_SENDER = join(HERE, 'ra-sender.py');

export const LAB_HELP = `ironboot lab — a private QEMU provisioning lab (needs root)

  ironboot lab up [--name NS] [--subnet 10.77.0.1/24] [--taps N] [--data-dir D] [--state-dir S] [-- SERVE FLAGS...]
  ironboot lab vm NAME [--mac M] [--nic virtio|e1000] [--firmware bios|uefi] [--disk SIZE] [--memory MB] [--fresh] [--no-reboot]
  ironboot lab console NAME [--no-follow]
  ironboot lab stop NAME
  ironboot lab exec -- COMMAND [ARGS...]     e.g. ironboot lab exec -- ironboot machines add 52:54:00:12:34:56 ...
  ironboot lab status
  ironboot lab down

Every subcommand takes --name NS (default iblab) and --state-dir S (default /var/tmp/ironboot-lab/NS).
`;

export interface LabVm {
  name: string;
  pid: number;
  mac: string;
  tap: string;
  nic: LabNic;
  firmware: LabFirmware;
  disk: string;
  log: string;
  startedAt: string;
}

export interface LabState {
  ns: string;
  bridge: string;
  address: string;
  prefix: number;
  taps: string[];
  stateDir: string;
  dataDir: string;
  ownDataDir: boolean;
  publicUrl: string;
  token: string;
  pids: { serve: number; ra: number | null };
  vms: Record<string, LabVm>;
}

type Out = (s: string) => void;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function stateDirOf(a: ParsedArgs, ns: string): string {
  return resolve(str(a.flags, 'state-dir') ?? process.env.IRONBOOT_LAB_DIR ?? join('/var/tmp/ironboot-lab', ns));
}

function loadState(dir: string, ns: string): LabState {
  const file = join(dir, 'lab.json');
  if (!existsSync(file) || !namespaceExists(ns)) throw new LabError(`lab ${ns} is not up (ironboot lab up --name ${ns})`);
  return JSON.parse(readFileSync(file, 'utf8')) as LabState;
}

function saveState(s: LabState): void {
  writeFileSync(join(s.stateDir, 'lab.json'), JSON.stringify(s, null, 2) + '\n');
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new LabError('ironboot lab needs root (network namespaces, taps, QEMU on a tap)');
}

function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Waits until the daemon's log says it serves HTTP (or it exits). */
async function waitForDaemon(pid: number, log: string, ns: string, timeoutMs: number): Promise<void> {
  for (let t = 0; t < timeoutMs; t += 200) {
    const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
    if (/ironboot serving HTTP/.test(text)) return;
    if (!pidInNamespace(pid, ns)) throw new LabError(`ironboot serve exited during start; its log (${log}):\n${text.split('\n').slice(-15).join('\n')}`);
    await sleep(200);
  }
  throw new LabError(`ironboot serve did not report serving HTTP within ${timeoutMs / 1000} s; see ${log}`);
}

async function up(a: ParsedArgs, ns: string, out: Out): Promise<number> {
  requireRoot();
  const { address, prefix } = parseSubnet(str(a.flags, 'subnet') ?? '10.77.0.1/24');
  const nTaps = Number(str(a.flags, 'taps') ?? 4);
  if (!Number.isInteger(nTaps) || nTaps < 1 || nTaps > 64) throw new LabError('--taps must be 1-64');
  const stateDir = stateDirOf(a, ns);
  if (existsSync(join(stateDir, 'lab.json')) && namespaceExists(ns)) throw new LabError(`lab ${ns} is already up (ironboot lab down --name ${ns} first)`);
  const ownDataDir = str(a.flags, 'data-dir') === undefined;
  const dataDir = resolve(str(a.flags, 'data-dir') ?? join(stateDir, 'data'));
  mkdirSync(join(stateDir, 'vms'), { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  const taps = Array.from({ length: nTaps }, (_, i) => `tap${i}`);
  const publicUrl = `http://${address}:8080`;
  const tokenFile = join(dataDir, 'admin-token');
  const token = existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : (await import('node:crypto')).randomBytes(24).toString('base64url');
  if (!existsSync(tokenFile)) writeFileSync(tokenFile, token + '\n', { mode: 0o600 });

  createLabNetwork({ ns, bridge: 'br0', address, prefix, taps });
  const state: LabState = {
    ns, bridge: 'br0', address, prefix, taps, stateDir, dataDir, ownDataDir, publicUrl, token, pids: { serve: 0, ra: null }, vms: {},
  };
  try {
    if (haveCommand('python3')) {
      state.pids.ra = spawnInNamespace(ns, 'python3', [RA_SENDER, 'br0'], join(stateDir, 'ra.log'));
    } else {
      out('warning: python3 not found: no IPv6 router advertisements, iPXE will wait ~13 s for IPv6 on every boot\n');
    }
    const serveLog = join(stateDir, 'serve.log');
    writeFileSync(serveLog, '');
    state.pids.serve = spawnInNamespace(ns, process.execPath, [CLI_PATH, 'serve', '--data-dir', dataDir,
      '--dhcp-interface', 'br0', '--http-listen', `${address}:8080`, '--tftp-listen', `${address}:69`, '--public-url', publicUrl,
      ...a.rest], serveLog, { ...process.env, IRONBOOT_TOKEN: token, CI: '1' });
    saveState(state);
    await waitForDaemon(state.pids.serve, serveLog, ns, Number(process.env.IRONBOOT_LAB_START_TIMEOUT ?? 600) * 1000);
  } catch (err) {
    saveState(state);
    await down(a, ns, () => {});
    throw err;
  }
  out(`lab ${ns} is up: bridge br0 ${address}/${prefix}, taps ${taps.join(' ')}\n`
    + `  ironboot serve (pid ${state.pids.serve}) at ${publicUrl}, log ${join(stateDir, 'serve.log')}\n`
    + `  data dir ${dataDir}\n\n`
    + `next:\n  ironboot lab vm vm1                      # prints the VM's MAC\n`
    + `  ironboot lab exec --name ${ns} -- ironboot machines add MAC --ip ${address.replace(/\.\d+$/, '.50')}/${prefix}\n`
    + `  ironboot lab console vm1\n`);
  return 0;
}

async function down(a: ParsedArgs, ns: string, out: Out): Promise<number> {
  requireRoot();
  const stateDir = stateDirOf(a, ns);
  const file = join(stateDir, 'lab.json');
  const state: LabState | null = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
  if (!state && !namespaceExists(ns)) { out(`lab ${ns} is not up\n`); return 0; }
  if (state && namespaceExists(ns)) {
    // what the lab started, by PID, each checked to be inside our namespace: VMs first, then the daemon, the RA sender
    for (const vm of Object.values(state.vms)) {
      if (await stopInNamespace(vm.pid, ns)) out(`stopped VM ${vm.name} (pid ${vm.pid})\n`);
    }
    if (state.pids.serve && await stopInNamespace(state.pids.serve, ns, 10000)) out(`stopped ironboot serve (pid ${state.pids.serve})\n`);
    if (state.pids.ra && await stopInNamespace(state.pids.ra, ns)) out(`stopped the RA sender (pid ${state.pids.ra})\n`);
  }
  if (namespaceExists(ns)) {
    // anything else still inside can only have been started in the lab (lab exec): it would keep the namespace alive
    for (const pid of namespacePids(ns)) {
      const comm = (() => { try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return '?'; } })();
      if (await stopInNamespace(pid, ns, 2000)) out(`stopped leftover process ${pid} (${comm}) inside ${ns}\n`);
    }
    ip('netns', 'del', ns);
    out(`deleted network namespace ${ns} (bridge, taps)\n`);
  }
  if (state) {
    // only what up/vm created: a --state-dir given by the operator may hold other things
    for (const f of ['lab.json', 'vms', 'serve.log', 'ra.log', ...(state.ownDataDir ? ['data'] : [])]) {
      rmSync(join(state.stateDir, f), { recursive: true, force: true });
    }
    try { rmdirSync(state.stateDir); } catch { /* not empty: keep */ }
    out(`removed ${state.stateDir}${state.ownDataDir ? '' : ` (kept the data dir ${state.dataDir})`}\n`);
  }
  return 0;
}

function vmAlive(vm: LabVm, ns: string): boolean {
  return pidInNamespace(vm.pid, ns);
}

async function vm(a: ParsedArgs, ns: string, out: Out): Promise<number> {
  requireRoot();
  const name = a.positionals[1];
  if (!name || !/^[\w.-]{1,40}$/.test(name)) throw new LabError('lab vm NAME: a name of letters, digits, ".", "_" or "-"');
  const state = loadState(stateDirOf(a, ns), ns);
  const existing = state.vms[name];
  if (existing && vmAlive(existing, ns)) throw new LabError(`VM ${name} is running (pid ${existing.pid}); ironboot lab stop ${name} first`);
  const macIn = str(a.flags, 'mac');
  const mac = macIn ? parseMac(macIn) : existing?.mac ?? macForName(`${ns}/${name}`);
  if (!mac) throw new LabError(`--mac "${macIn}" is not a MAC address`);
  const nic = (str(a.flags, 'nic') ?? existing?.nic ?? 'virtio') as LabNic;
  if (nic !== 'virtio' && nic !== 'e1000') throw new LabError('--nic must be virtio or e1000');
  const firmware = (str(a.flags, 'firmware') ?? existing?.firmware ?? 'bios') as LabFirmware;
  if (firmware !== 'bios' && firmware !== 'uefi') throw new LabError('--firmware must be bios or uefi');
  const diskSize = parseSize(str(a.flags, 'disk') ?? '4G');
  if (!diskSize || diskSize < (1 << 20)) throw new LabError('--disk SIZE: e.g. 4G or 512M');
  const memoryMb = Number(str(a.flags, 'memory') ?? 1024);
  if (!Number.isInteger(memoryMb) || memoryMb < 512) throw new LabError('--memory MB: at least 512 (the initramfs unpacks into RAM)');
  const used = new Set(Object.values(state.vms).filter((v) => v.name !== name && vmAlive(v, ns)).map((v) => v.tap));
  const tap = state.taps.find((t) => !used.has(t));
  if (!tap) throw new LabError(`all ${state.taps.length} taps are in use; stop a VM or lab up with more --taps`);

  const dir = join(state.stateDir, 'vms');
  const disk = join(dir, `${name}.disk`);
  if (a.flags.fresh === true || !existsSync(disk)) { writeFileSync(disk, ''); truncateSync(disk, diskSize); }
  const vars = join(dir, `${name}.vars.fd`);
  if (firmware === 'uefi' && (a.flags.fresh === true || !existsSync(vars))) copyFileSync(OVMF_VARS, vars);
  const log = join(dir, `${name}.log`);
  // the accelerator: KVM when it boots the machines' kernel on this host, else TCG (accel.ts); said on the console
  const labKernel = join(state.dataDir, 'artifacts', 'vmlinuz');
  const accel = chooseAccel(existsSync(labKernel) ? labKernel : findKernel().path);
  const args = qemuArgs({ tap, mac, nic, firmware, disk, memoryMb, ovmfVars: vars, noReboot: a.flags['no-reboot'] === true, accel: accel.accel });
  writeFileSync(log, `# ironboot lab vm ${name} mac=${mac} nic=${nic} firmware=${firmware} tap=${tap} started ${new Date().toISOString()}\n# ${describeAccel(accel)}\n# ${QEMU_BINARY} ${args.join(' ')}\n`, { flag: a.flags.fresh === true ? 'w' : 'a' });
  const pid = spawnInNamespace(ns, QEMU_BINARY, args, log);
  state.vms[name] = { name, pid, mac, tap, nic, firmware, disk, log, startedAt: new Date().toISOString() };
  saveState(state);
  out(`VM ${name}: mac ${mac}, ${nic} on ${tap}, ${firmware}, disk ${disk} (${diskSize} bytes), pid ${pid}\n`
    + `  ${describeAccel(accel)}\n  serial console: ironboot lab console ${name}   (log ${log})\n`);
  return 0;
}

async function stop(a: ParsedArgs, ns: string, out: Out): Promise<number> {
  requireRoot();
  const state = loadState(stateDirOf(a, ns), ns);
  const name = a.positionals[1];
  const v = name ? state.vms[name] : undefined;
  if (!v) throw new LabError(`no VM ${name ?? '(name missing)'} in lab ${ns}`);
  out(await stopInNamespace(v.pid, ns) ? `stopped VM ${name}\n` : `VM ${name} was not running\n`);
  return 0;
}

async function consoleCmd(a: ParsedArgs, ns: string, out: Out): Promise<number> {
  const state = loadState(stateDirOf(a, ns), ns);
  const name = a.positionals[1];
  const v = name ? state.vms[name] : undefined;
  if (!v) throw new LabError(`no VM ${name ?? '(name missing)'} in lab ${ns}`);
  let pos = 0;
  const drain = () => {
    const size = statSync(v.log).size;
    if (size < pos) pos = 0;
    if (size === pos) return;
    const fd = openSync(v.log, 'r');
    try {
      const buf = Buffer.alloc(size - pos);
      readSync(fd, buf, 0, buf.length, pos);
      pos = size;
      out(buf.toString('utf8').replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1bc/g, ''));
    } finally { closeSync(fd); }
  };
  drain();
  if (a.flags.follow === false) return 0;
  let stopped = false;
  const onSig = () => { stopped = true; };
  process.once('SIGINT', onSig);
  try {
    while (!stopped) {
      await sleep(250);
      drain();
      if (!vmAlive(v, ns)) { drain(); out(`\n[lab] VM ${name} is not running\n`); break; }
    }
  } finally {
    process.removeListener('SIGINT', onSig);
  }
  return 0;
}

async function execCmd(a: ParsedArgs, ns: string): Promise<number> {
  requireRoot();
  const state = loadState(stateDirOf(a, ns), ns);
  const cmd = a.rest.length ? a.rest : a.positionals.slice(1);
  if (!cmd.length) throw new LabError('lab exec -- COMMAND [ARGS...]');
  // `ironboot` inside the lab means this very CLI
  const [bin, ...args] = cmd[0] === 'ironboot' ? [process.execPath, CLI_PATH, ...cmd.slice(1)] : cmd;
  const child = spawn('ip', ['netns', 'exec', ns, bin, ...args], {
    stdio: 'inherit', env: { ...process.env, IRONBOOT_SERVER: state.publicUrl, IRONBOOT_TOKEN: state.token },
  });
  return await new Promise<number>((res) => child.once('exit', (code, sig) => res(code ?? (sig ? 128 : 1))));
}

function status(a: ParsedArgs, ns: string, out: Out): number {
  const dir = stateDirOf(a, ns);
  if (!existsSync(join(dir, 'lab.json')) || !namespaceExists(ns)) { out(`lab ${ns}: down\n`); return 3; }
  const s = loadState(dir, ns);
  const st = (pid: number | null) => (pid && pidInNamespace(pid, ns) ? `running (pid ${pid})` : 'not running');
  out(`lab ${ns}: up — bridge ${s.bridge} ${s.address}/${s.prefix}, state ${s.stateDir}\n`
    + `  ironboot serve  ${st(s.pids.serve)}  ${s.publicUrl}  log ${join(s.stateDir, 'serve.log')}\n`
    + `  RA sender       ${st(s.pids.ra)}\n`);
  for (const v of Object.values(s.vms)) {
    out(`  vm ${v.name.padEnd(12)} ${vmAlive(v, ns) ? 'running' : 'stopped'}  ${v.mac}  ${v.nic}/${v.firmware}  ${v.tap}  ${v.log}\n`);
  }
  return 0;
}

/** Entry point of `ironboot lab ...`; returns the exit code. */
export async function labCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const a = parseArgs(argv, { bool: ['fresh', 'no-reboot', 'follow'] });
  const sub = a.positionals[0];
  if (!sub || a.flags.help === true) { out(LAB_HELP); return sub ? 0 : 2; }
  const ns = str(a.flags, 'name') ?? 'iblab';
  if (!/^[\w-]{1,15}$/.test(ns)) { out(`ironboot lab: --name "${ns}" must be 1-15 letters, digits, "_" or "-"\n`); return 2; }
  try {
    switch (sub) {
      case 'up': return await up(a, ns, out);
      case 'down': return await down(a, ns, out);
      case 'vm': return await vm(a, ns, out);
      case 'stop': return await stop(a, ns, out);
      case 'console': return await consoleCmd(a, ns, out);
      case 'exec': return await execCmd(a, ns);
      case 'status': return status(a, ns, out);
      default: out(`ironboot lab: unknown subcommand "${sub}"\n\n${LAB_HELP}`); return 2;
    }
  } catch (err) {
    if (err instanceof LabError) { process.stderr.write(`ironboot lab: ${err.message}\n`); return 1; }
    throw err;
  }
}
