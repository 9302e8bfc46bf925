/**
 * The herd simulator, for test/integration/herd.test.ts and test/bench/herd.ts:
 *
 *   const herd = await Herd.create(n)          // namespaces: srv (br0 10.91.0.1/16) and rack (n macvlans)
 *   const r = await herd.runIronboot(opts)     // a real `ironboot serve` on br0 (DHCP, TFTP, HTTP) + the herd
 *   const q = await herd.runReference(r, opts) // dnsmasq (DHCP+TFTP) + nginx (HTTP) + the agent-API stand-in
 *   await herd.destroy()                       // always (t.after / finally)
 *
 * Each machine has its own macvlan in the rack namespace (its own MAC; its reserved address as a /32 with a
 * policy route, so every packet of that machine leaves through its own interface), and test/helpers/herd/
 * machine.ts boots it over real sockets. Traffic stays between the two namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, copyFileSync, existsSync, appendFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, sh, type Namespace } from '../netns.ts';
import { tempDir } from '../daemon.ts';
import { buildImage, busyboxLayer, writeOciLayout, type TarSpec } from '../images-oci.ts';
import type { MachineSpec } from './machine.ts';
import type { RunnerConfig, RunnerReport } from './runner.ts';
import { summarize, type HerdSummary } from './stats.ts';
import { REPLY_IFACE } from './dhcp.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(ROOT, 'server', 'cli', 'ironboot.mjs');
const RUNNER = join(ROOT, 'test', 'helpers', 'herd', 'runner.ts');
const STANDIN = join(ROOT, 'test', 'helpers', 'herd', 'agent-standin.ts');
export const SERVER_IP = '10.91.0.1';
const PREFIX = 16;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface HerdSizes { kernelBytes: number; initrdBytes: number; diskPayloadBytes: number }

export interface StackRun { report: RunnerReport; summary: HerdSummary; rss: { maxBytes: number; samples: number[] }; log: string }

export const machineAddress = (i: number): string => `10.91.${1 + Math.floor(i / 200)}.${10 + (i % 200)}`;
export const machineMac = (i: number): string => `02:91:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

/** Resident set of a process and its children (/proc), in bytes. */
function rssOf(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try { total += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024; } catch { /* gone */ }
  }
  return total;
}
function childPids(pid: number): number[] {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
    return [pid, ...kids.flatMap(childPids)];
  } catch { return [pid]; }
}

export class Herd {
  readonly machines: MachineSpec[];
  readonly dir = tempDir('ironboot-herd-');
  private constructor(readonly lab: Lab, readonly srv: Namespace, readonly rack: Namespace, n: number) {
    this.machines = Array.from({ length: n }, (_, i) => ({ mac: machineMac(i), ip: machineAddress(i), iface: `m${i}`, prefix: PREFIX }));
  }

  static async create(n: number): Promise<Herd> {
    const lab = await Lab.create('ibh');
    try {
      const srv = lab.ns('srv');
      const rack = lab.ns('rack');
      const herd = new Herd(lab, srv, rack, n);
      srv.ip('link', 'add', 'br0', 'type', 'bridge');
      srv.ip('addr', 'add', `${SERVER_IP}/${PREFIX}`, 'dev', 'br0');
      srv.ip('link', 'set', 'br0', 'up');
      lab.veth(srv, null, rack, null, ['port0', 'up0']);
      srv.ip('link', 'set', 'port0', 'master', 'br0');
      for (const [k, v] of [['all.arp_ignore', '1'], ['default.arp_ignore', '1'], ['all.arp_announce', '2'], ['default.arp_announce', '2'],
        ['all.rp_filter', '0'], ['default.rp_filter', '0']]) rack.exec('sysctl', ['-qw', `net.ipv4.conf.${k}=${v}`]);
      // the runner's own address (API calls before the herd starts); machines use theirs
      rack.ip('addr', 'add', `10.91.255.254/${PREFIX}`, 'dev', 'up0');
      const batch = herd.machines.flatMap((m, i) => [
        `link add link up0 name ${m.iface} address ${m.mac} type macvlan mode bridge`,
        `addr add ${m.ip}/32 dev ${m.iface}`,
        `link set ${m.iface} up`,
        `route add 10.91.0.0/${PREFIX} dev ${m.iface} src ${m.ip} table ${1000 + i}`,
        `rule add from ${m.ip} table ${1000 + i} pref ${1000 + i}`,
      ]).join('\n') + '\n';
      writeFileSync(join(herd.dir.path, 'rack.batch'), batch);
      sh('ip', ['-n', rack.name, '-batch', join(herd.dir.path, 'rack.batch')]);
      herd.steerDhcp();
      return herd;
    } catch (e) {
      await lab.destroy();
      throw e;
    }
  }

  /**
   * DHCP without the macvlans' broadcast fan-out. A broadcast sent from a bridge-mode macvlan is copied to every
   * sibling (in the sender's context), and one arriving on the parent is copied to every macvlan (by a kernel
   * worker): at 500 machines each DISCOVER and each reply became 500 packets for the simulator's two cores to
   * process, the server's cores with them, and none of those copies is something a rack's NICs do in software.
   * So, with tc (clsact, u32, mirred; no eBPF needed):
   *   - each machine's UDP to port 67 leaves its macvlan straight out of the uplink (egress redirect): the same
   *     frame, the machine's MAC as its source, reaching the server and no sibling;
   *   - UDP to port 68 arriving on the uplink is redirected, before the macvlans see it, into `dhr0` (one end of a
   *     veth pair of its own), where the runner's one reply listener reads every reply once.
   * Other broadcasts (ARP) and all unicast (peers fetching from peers) go through the macvlans as before.
   */
  private steerDhcp(): void {
    this.rack.ip('link', 'add', REPLY_IFACE, 'type', 'veth', 'peer', 'name', `${REPLY_IFACE}p`);
    this.rack.ip('addr', 'add', '10.92.0.1/32', 'dev', REPLY_IFACE);
    this.rack.ip('link', 'set', REPLY_IFACE, 'up');
    this.rack.ip('link', 'set', `${REPLY_IFACE}p`, 'up');
    const udpTo = (port: number) => `protocol ip prio 1 u32 match ip protocol 17 0xff match ip dport ${port} 0xffff`;
    const batch = ['qdisc add dev up0 clsact', `filter add dev up0 ingress ${udpTo(68)} action mirred ingress redirect dev ${REPLY_IFACE}`,
      ...this.machines.flatMap((m) => [`qdisc add dev ${m.iface} clsact`, `filter add dev ${m.iface} egress ${udpTo(67)} action mirred egress redirect dev up0`]),
    ].join('\n') + '\n';
    writeFileSync(join(this.dir.path, 'rack.tc'), batch);
    sh('ip', ['netns', 'exec', this.rack.name, 'tc', '-batch', join(this.dir.path, 'rack.tc')]);
  }

  /** Stand-in kernel and initramfs (random bytes: the server serves them as its artifacts) and the tiny OCI layout. */
  prepare(sizes: HerdSizes): { artifacts: string; oci: string } {
    const artifacts = join(this.dir.path, 'artifacts');
    const oci = join(this.dir.path, 'oci');
    if (existsSync(oci)) return { artifacts, oci };
    mkdirSync(artifacts, { recursive: true });
    writeFileSync(join(artifacts, 'vmlinuz'), randomBytes(sizes.kernelBytes));
    writeFileSync(join(artifacts, 'initramfs'), randomBytes(sizes.initrdBytes));
    const layer: TarSpec[] = [...busyboxLayer(), { path: 'srv/', type: 'dir' },
      ...(sizes.diskPayloadBytes ? [{ path: 'srv/payload.bin', content: randomBytes(sizes.diskPayloadBytes) }] : [])];
    writeOciLayout(oci, buildImage({ layers: [layer], config: { Entrypoint: ['/bin/sh', '-c', 'echo up'], Env: ['PATH=/bin'] } }));
    return { artifacts, oci };
  }

  private async runner(cfg: RunnerConfig, label: string): Promise<RunnerReport> {
    const file = join(this.dir.path, `${label}.runner.json`);
    writeFileSync(file, JSON.stringify(cfg));
    // the simulator at a lower priority (nice 10; HERD_NICE): in a rack the clients are other machines, and here they
    // share the server's 2 cores. Both stacks meet the same niced simulator.
    const nice = process.env.HERD_NICE ?? '10';
    // HERD_RUNNER_NODE_ARGS: node flags for the simulator (e.g. "--cpu-prof --cpu-prof-dir=/tmp/herd-prof")
    const nodeArgs = (process.env.HERD_RUNNER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const p = this.rack.spawn('nice', ['-n', nice, process.execPath, ...nodeArgs, '--import', 'tsx', RUNNER, file], { cwd: ROOT });
    let out = ''; let err = '';
    p.stdout!.on('data', (d) => { out += d; });
    p.stderr!.on('data', (d) => { err += d; if (process.env.HERD_LOG) appendFileSync(process.env.HERD_LOG, d); });
    const code = await new Promise<number | null>((r) => p.on('close', r));
    if (code !== 0) throw new Error(`herd runner (${label}) exited with ${code}:\n${err.slice(-3000)}`);
    return JSON.parse(out.trim().split('\n').pop()!) as RunnerReport;
  }

  private sampleRss(pids: () => number[]): { stop(): { maxBytes: number; samples: number[] } } {
    const samples: number[] = [];
    const t = setInterval(() => samples.push(rssOf(pids())), 500);
    return { stop: () => { clearInterval(t); return { maxBytes: Math.max(0, ...samples), samples }; } };
  }

  private async waitFor(p: ChildProcess, out: () => string, re: RegExp, what: string): Promise<void> {
    for (let t = 0; t < 60_000; t += 100) {
      if (re.test(out())) return;
      if (p.exitCode !== null) throw new Error(`${what} exited with ${p.exitCode}:\n${out().slice(-3000)}`);
      await sleep(100);
    }
    throw new Error(`${what} did not start:\n${out().slice(-3000)}`);
  }

  /** A real `ironboot serve` (DHCP on br0 in reservation mode, TFTP, HTTP) and the herd against it. */
  async runIronboot(sizes: HerdSizes, o: { serveArgs?: string[]; env?: NodeJS.ProcessEnv; nodeArgs?: string[];
    runner?: Pick<RunnerConfig, 'sequential' | 'holdEntrypoints' | 'corruptPeers'>;
    /** The daemon's data directory under the herd's (default "data"): a second run on the same herd needs its own. */
    dataDir?: string } = {}): Promise<StackRun> {
    const { artifacts, oci } = this.prepare(sizes);
    const token = randomBytes(18).toString('base64url');
    const url = `http://${SERVER_IP}:8080`;
    // HERD_SERVE_NODE_ARGS: node flags for the daemon (e.g. "--cpu-prof --cpu-prof-dir=/tmp/serve-prof")
    const nodeArgs = o.nodeArgs ?? (process.env.HERD_SERVE_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const serve = this.srv.spawn(process.execPath, [...nodeArgs, CLI, 'serve', '--data-dir', join(this.dir.path, o.dataDir ?? 'data'), '--dhcp-interface', 'br0',
      '--http-listen', `${SERVER_IP}:8080`, '--tftp-listen', `${SERVER_IP}:69`, '--public-url', url,
      '--artifacts-dir', artifacts, '--no-build-artifacts', ...(o.serveArgs ?? [])],
    { env: { ...process.env, IRONBOOT_TOKEN: token, CI: '1', ...o.env } });
    let log = '';
    // HERD_LOG=FILE keeps the daemon's whole log (the run itself keeps its last 200 kB)
    const keep = (d: Buffer) => { log = (log + d).slice(-200_000); if (process.env.HERD_LOG) appendFileSync(process.env.HERD_LOG, d); };
    serve.stdout!.on('data', keep);
    serve.stderr!.on('data', keep);
    try {
      await this.waitFor(serve, () => log, /ironboot serving HTTP/, 'ironboot serve');
      const rss = this.sampleRss(() => [serve.pid!]);
      const report = await this.runner({
        machines: this.machines, metricsUrl: `${url}/metrics`, ...o.runner,
        api: { url, token, ociLayout: oci, imageName: 'herd' },
      }, 'ironboot').catch((e: Error) => {
        throw new Error(`${e.message}\n--- ironboot serve (exit ${serve.exitCode ?? serve.signalCode ?? 'running'}; tail) ---\n${log.slice(-4000)}`);
      });
      return { report, summary: summarize(report), rss: rss.stop(), log };
    } finally {
      serve.kill('SIGTERM');
      await new Promise((r) => { if (serve.exitCode !== null) r(null); else { serve.once('exit', r); setTimeout(r, 5000); } });
    }
  }

  /**
   * The reference stack on the same bridge: dnsmasq (DHCP reservations + TFTP of the same undionly.kpxe), nginx
   * (the same boot scripts, artifacts and disk file ironboot served), and agent-standin.ts for /agent/v1, which
   * neither has. `image`: the disk ironboot built (its file is copied into nginx's root).
   */
  async runReference(sizes: HerdSizes, image: { id: string; compressedSize: number; rawSize: number; compressedSha256: string; file: string }): Promise<StackRun> {
    const { artifacts } = this.prepare(sizes);
    const work = join(this.dir.path, 'ref');
    const www = join(work, 'www');
    for (const d of ['boot', 'artifacts', 'images']) mkdirSync(join(www, d), { recursive: true });
    copyFileSync(join(artifacts, 'vmlinuz'), join(www, 'artifacts', 'vmlinuz'));
    copyFileSync(join(artifacts, 'initramfs'), join(www, 'artifacts', 'initramfs'));
    copyFileSync(image.file, join(www, 'images', `${image.id}.ext4.zst`));
    const specs: Record<string, unknown> = {};
    const hosts: string[] = [];
    this.machines.forEach((m, i) => {
      const wf = `ref-${i}`;
      const token = randomBytes(12).toString('hex');
      writeFileSync(join(www, 'boot', `${m.mac}.ipxe`), `#!ipxe\nkernel http://${SERVER_IP}/artifacts/vmlinuz initrd=initramfs console=ttyS0 `
        + `ironboot.server=http://${SERVER_IP}:8081 ironboot.workflow=${wf} ironboot.token=${token} ironboot.mac=${m.mac}\n`
        + `initrd http://${SERVER_IP}/artifacts/initramfs\nboot\n`);
      specs[wf] = {
        workflowId: wf, machine: { mac: m.mac, hostname: null },
        image: { id: image.id, name: 'herd', format: 'ext4', url: `http://${SERVER_IP}/images/${image.id}.ext4.zst`, rawUrl: '',
          compressedSize: image.compressedSize, compressedSha256: image.compressedSha256, rawSize: image.rawSize, rawSha256: '' },
        target: '/dev/vda', after: 'wait', mode: 'ephemeral', entrypoint: ['/bin/sh'], cmd: [], env: [], workingDir: null, user: null, dns: [],
      };
      hosts.push(`dhcp-host=${m.mac},${m.ip},set:m${i}`, `dhcp-boot=tag:ipxe,tag:m${i},http://${SERVER_IP}/boot/${m.mac}.ipxe`);
    });
    writeFileSync(join(work, 'specs.json'), JSON.stringify(specs));
    writeFileSync(join(work, 'dnsmasq.conf'), [
      'port=0', 'interface=br0', 'bind-interfaces', `dhcp-range=10.91.0.0,static,255.255.0.0`, 'dhcp-broadcast',
      'dhcp-userclass=set:ipxe,iPXE', `dhcp-boot=tag:!ipxe,undionly.kpxe,,${SERVER_IP}`, 'enable-tftp', 'tftp-root=/usr/lib/ipxe',
      'tftp-max=5000', `dhcp-leasefile=${join(work, 'leases')}`, 'dhcp-lease-max=10000', ...hosts, '',
    ].join('\n'));
    writeFileSync(join(work, 'nginx.conf'), `user root; worker_processes 2; daemon off; pid ${work}/nginx.pid; error_log ${work}/nginx-error.log;
events { worker_connections 8192; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000; default_type application/octet-stream;
  server { listen ${SERVER_IP}:80; root ${www}; } }
`);
    const procs: ChildProcess[] = [];
    let log = '';
    const start = (cmd: string, args: string[], opts = {}) => {
      const p = this.srv.spawn(cmd, args, opts);
      p.stdout!.on('data', (d) => { log = (log + d).slice(-100_000); });
      p.stderr!.on('data', (d) => { log = (log + d).slice(-100_000); });
      procs.push(p);
      return p;
    };
    try {
      const dns = start('dnsmasq', ['-k', '-C', join(work, 'dnsmasq.conf'), '--user=root', `--pid-file=${join(work, 'dnsmasq.pid')}`, '--log-facility=-']);
      const ng = start('nginx', ['-c', join(work, 'nginx.conf')]);
      const sa = start(process.execPath, ['--import', 'tsx', STANDIN, SERVER_IP, '8081', join(work, 'specs.json')], { cwd: ROOT });
      await this.waitFor(sa, () => log, /agent stand-in listening/, 'agent stand-in');
      await this.waitFor(dns, () => log, /DHCP, IP range|TFTP root/, 'dnsmasq');
      await sleep(300);
      if (ng.exitCode !== null) throw new Error(`nginx exited: ${log}`);
      const rss = this.sampleRss(() => [...childPids(dns.pid!), ...childPids(ng.pid!)]);
      const report = await this.runner({ machines: this.machines }, 'reference');
      return { report, summary: summarize(report), rss: rss.stop(), log };
    } finally {
      for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
      await Promise.all(procs.map((p) => new Promise((r) => { if (p.exitCode !== null) r(null); else { p.once('exit', r); setTimeout(r, 5000); } })));
    }
  }

  async destroy(): Promise<void> {
    await this.lab.destroy();
    this.dir.remove();
  }
}
