/**
 * DHCP benchmark: perfdhcp (Kea, acting as a relay with giaddr set) against ironboot and against dnsmasq in the
 * same run, in network namespaces. Prints DORA leases per second and drops side by side.
 *
 *   node --import tsx test/bench/dhcp.ts [--seconds 10] [--clients 2000]
 *
 * Scenarios: reservation mode (every client has a reservation) vs dnsmasq with leases in memory, at 2,000 and
 * 4,000 DORA/s; full mode (pool, every lease persisted) vs dnsmasq with its lease file, at 300 and 3,000/s.
 * Needs root, perfdhcp (Debian kea-admin), dnsmasq (dnsmasq-base), and the DHCP native addon.
 */
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { startDhcpRunner, tempDir, metricValue, type RunningServer } from '../helpers/dhcp-lab.ts';
import { intToIp, ipToInt } from '../../server/ipv4.ts';

const arg = (name: string, def: number): number => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : def; };
const SECONDS = arg('seconds', 10);
const CLIENTS = arg('clients', 2000);
const SERVER = '10.81.48.1';
const RELAY = '10.81.48.2';
const FIRST = ipToInt('10.81.50.1');

interface PerfResult { rate: number; discoversSent: number; offers: number; acks: number; leasesPerSecond: number; dropPercent: number }

function runPerfdhcp(ns: Namespace, rate: number): Promise<PerfResult> {
  return new Promise((resolve, reject) => {
    const p = ns.spawn('perfdhcp', ['-4', '-r', String(rate), '-p', String(SECONDS), '-R', String(CLIENTS), '-l', RELAY, SERVER]);
    let out = '';
    p.stdout!.on('data', (d) => { out += d; });
    p.stderr!.on('data', (d) => { out += d; });
    p.once('exit', () => {
      const section = (name: string) => out.slice(out.indexOf(`Statistics for: ${name}`));
      const num = (s: string, key: string) => Number(new RegExp(`${key}: (\\d+)`).exec(s)?.[1] ?? NaN);
      const doS = section('DISCOVER-OFFER');
      const raS = section('REQUEST-ACK');
      const discoversSent = num(doS, 'sent packets');
      const offers = num(doS, 'received packets');
      const acks = num(raS, 'received packets');
      if (Number.isNaN(discoversSent)) return reject(new Error(`perfdhcp output not understood:\n${out}`));
      resolve({ rate, discoversSent, offers, acks, leasesPerSecond: acks / SECONDS, dropPercent: discoversSent ? 100 * (1 - acks / discoversSent) : 100 });
    });
  });
}

function startDnsmasq(ns: Namespace, dir: string, leaseFile: boolean): Promise<ChildProcess> {
  const args = ['--no-daemon', '--conf-file=/dev/null', '--user=root', '--group=root', '--port=0', '--interface=ibbs', '--bind-interfaces',
    `--dhcp-range=${intToIp(FIRST)},${intToIp(FIRST + 3500)},255.255.240.0,1h`, '--dhcp-authoritative', '--no-ping',
    `--pid-file=${join(dir, 'dnsmasq.pid')}`, `--dhcp-lease-max=100000`, '--quiet-dhcp'];
  args.push(leaseFile ? `--dhcp-leasefile=${join(dir, `dnsmasq-${Date.now()}.leases`)}` : '--leasefile-ro');
  const p = ns.spawn('dnsmasq', args);
  p.stderr!.on('data', () => {});
  return new Promise((r) => setTimeout(() => r(p), 500));
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((r) => { p.once('exit', () => r()); p.kill('SIGTERM'); });
}

const fmt = (r: PerfResult) => `${r.leasesPerSecond.toFixed(0).padStart(6)} leases/s  ${r.dropPercent.toFixed(2).padStart(6)} % drops  (sent ${r.discoversSent}, offers ${r.offers}, acks ${r.acks})`;

async function main(): Promise<void> {
  const why = netnsUnavailable('perfdhcp', 'dnsmasq');
  if (why) { console.log(`skipped: ${why}`); return; }
  const lab = await Lab.create('ibd');
  const rows: [string, string, PerfResult][] = [];
  try {
    const srv = lab.ns('bsrv');
    const perf = lab.ns('bperf');
    lab.veth(srv, `${SERVER}/20`, perf, `${RELAY}/20`, ['ibbs', 'ibbp']);
    const dir = tempDir('bench');
    // perfdhcp's MACs are 00:0c:01:02:03:04 + [0, CLIENTS)
    const base = 0x000c01020304;
    const machines = Array.from({ length: CLIENTS }, (_, k) => ({
      mac: (base + k).toString(16).padStart(12, '0').match(/../g)!.join(':'),
      ipv4: { address: intToIp(FIRST + k), prefix: 20, gateway: SERVER, dns: [SERVER] },
    }));

    const ironboot = async (label: string, args: string[], data: string, rate: number, list = machines) => {
      let s: RunningServer | null = null;
      try {
        s = await startDhcpRunner(srv, { dataDir: join(dir, data), machines: list, args: ['--dhcp-interface', 'ibbs', '--log-level', 'warn', ...args] });
        const r = await runPerfdhcp(perf, rate);
        const m = await s.metrics();
        rows.push([label, 'ironboot', r]);
        console.log(`${label.padEnd(34)} ironboot  ${fmt(r)}  [acks counted by ironboot: ${metricValue(m, 'ironboot_dhcp_requests_total', { outcome: 'ack' })}]`);
      } finally { if (s) await s.stop(); }
    };
    const dnsmasq = async (label: string, leaseFile: boolean, rate: number) => {
      const d = await startDnsmasq(srv, dir, leaseFile);
      try {
        const r = await runPerfdhcp(perf, rate);
        rows.push([label, 'dnsmasq', r]);
        console.log(`${label.padEnd(34)} dnsmasq   ${fmt(r)}`);
      } finally { await stop(d); }
    };

    console.log(`perfdhcp, ${SECONDS} s per run, ${CLIENTS} simulated clients, relay ${RELAY} -> server ${SERVER}`);
    for (const rate of [2000, 4000]) {
      await dnsmasq(`@${rate}/s, dnsmasq leases in memory`, false, rate);
      await ironboot(`@${rate}/s, reservation mode`, [], 'res', rate);
    }
    for (const rate of [300, 4000]) {
      await dnsmasq(`@${rate}/s, dnsmasq lease file`, true, rate);
      await ironboot(`@${rate}/s, full mode (persisted)`, ['--dhcp-mode', 'full', '--dhcp-pool', `${intToIp(FIRST)}-${intToIp(FIRST + 3500)}`, '--dhcp-pool-unknown'], `full${rate}`, rate, []);
    }
    const get = (label: string, who: string) => rows.find(([l, w]) => l === label && w === who)?.[2];
    console.log('\nsummary (same run):');
    for (const rate of [2000, 4000]) {
      const a = get(`@${rate}/s, reservation mode`, 'ironboot')!; const b = get(`@${rate}/s, dnsmasq leases in memory`, 'dnsmasq')!;
      console.log(`  reservation @${rate}/s: ironboot ${a.leasesPerSecond.toFixed(0)}/s ${a.dropPercent.toFixed(2)} % drops vs dnsmasq (memory) ${b.leasesPerSecond.toFixed(0)}/s ${b.dropPercent.toFixed(2)} % drops; ratio ${(a.leasesPerSecond / b.leasesPerSecond).toFixed(2)}`);
    }
    const f = get('@4000/s, full mode (persisted)', 'ironboot')!;
    const dl = get('@300/s, dnsmasq lease file', 'dnsmasq')!; const dh = get('@4000/s, dnsmasq lease file', 'dnsmasq')!;
    const dnsmasqFileRate = Math.max(dl.leasesPerSecond, dh.leasesPerSecond);
    console.log(`  full @4000/s: ironboot ${f.leasesPerSecond.toFixed(0)} persisted leases/s ${f.dropPercent.toFixed(2)} % drops vs dnsmasq with lease file best ${dnsmasqFileRate.toFixed(0)}/s (@300: ${dl.dropPercent.toFixed(2)} %, @4000: ${dh.dropPercent.toFixed(2)} % drops); ratio ${(f.leasesPerSecond / dnsmasqFileRate).toFixed(1)}x`);
  } finally {
    await lab.destroy();
  }
}

await main();
