/**
 * TFTP throughput: ironboot vs tftpd-hpa vs dnsmasq, measured in the same run, on the loopback of a private
 * network namespace (dnsmasq's TFTP only listens on port 69).
 *
 *   node --import tsx test/bench/tftp.ts [--mb 30] [--runs 3] [--pin CPU]
 *
 * --pin runs every server and client on one CPU (taskset): on small VMs a cross-CPU wake-up per packet costs
 * more than the protocol, and the scheduler's placement then decides the lock-step figures.
 *
 * Settings: curl with blksize 512 and 1468 (lock-step; curl also asks tsize), atftp with windowsize 16 at
 * blksize 1468 and 65464 (tftpd-hpa and dnsmasq ignore windowsize, so theirs is lock-step). Prints the median
 * MB/s (MB = 10^6 bytes) of each server and ironboot's ratio to the fastest reference.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';

const run = promisify(execFile);
const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const MB = arg('mb', 30);
const RUNS = arg('runs', 3);
const PIN = arg('pin', -1);
/** The command, pinned to the --pin CPU when given. */
const pinned = (cmd: string, args: string[]): [string, string[]] => (PIN >= 0 ? ['taskset', ['-c', String(PIN), cmd, ...args]] : [cmd, args]);

const why = netnsUnavailable('curl', 'atftp', 'in.tftpd', 'dnsmasq');
if (why) {
  console.log(`skipped: ${why}`);
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'ibt-bench-'));
chmodSync(dir, 0o755); // tftpd-hpa and dnsmasq drop privileges to nobody
writeFileSync(join(dir, 'bench.bin'), randomBytes(MB * 1_000_000), { mode: 0o644 });
const lab = await Lab.create('ibt');
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => { void lab.destroy().finally(() => { rmSync(dir, { recursive: true, force: true }); process.exit(130); }); });
}

function waitForLine(p: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp, what: string): Promise<void> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${seen}`)), 20000);
    p[stream]!.on('data', (c) => { seen += c; if (pattern.test(seen)) { clearTimeout(t); resolve(); } });
    p.once('exit', (code) => { clearTimeout(t); reject(new Error(`${what} exited ${code}: ${seen}`)); });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

try {
  const ns: Namespace = lab.ns('bench');
  // tftpd-hpa resolves its bind address with AI_ADDRCONFIG, which ignores loopback: give the namespace an
  // IPv4 address on a veth pair of its own (both ends inside it; nothing leaves the namespace)
  lab.veth(ns, '10.82.255.1/30', ns, null);
  const servers: Record<string, number> = { ironboot: 2069, 'tftpd-hpa': 1069, dnsmasq: 69 };

  const ours = ns.spawn(...pinned(process.execPath, ['--import', 'tsx', 'test/helpers/tftp-server-runner.ts',
    JSON.stringify({ host: '127.0.0.1', port: servers.ironboot, roots: [dir], logLevel: 'warn' })]), { cwd: process.cwd() });
  await waitForLine(ours, 'stdout', /"port"/, 'ironboot tftp');
  ns.spawn(...pinned('in.tftpd', ['-L', '-a', `127.0.0.1:${servers['tftpd-hpa']}`, '-s', dir]));
  ns.spawn(...pinned('dnsmasq', ['--keep-in-foreground', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--port=0',
    '--enable-tftp', `--tftp-root=${dir}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--pid-file=', '--log-facility=-']));
  await sleep(1000);

  interface Setting { label: string; cmd: (port: number) => [string, string[]] }
  const settings: Setting[] = [
    { label: 'curl blksize 512', cmd: (port) => ['curl', ['-sS', '--fail', '--max-time', '300', '--tftp-blksize', '512', `tftp://127.0.0.1:${port}/bench.bin`, '-o', '/dev/null']] },
    { label: 'curl blksize 1468', cmd: (port) => ['curl', ['-sS', '--fail', '--max-time', '300', '--tftp-blksize', '1468', `tftp://127.0.0.1:${port}/bench.bin`, '-o', '/dev/null']] },
    { label: 'atftp blksize 1468 windowsize 16', cmd: (port) => ['atftp', ['--option', 'blksize 1468', '--option', 'windowsize 16', '-g', '-r', 'bench.bin', '-l', '/dev/null', '127.0.0.1', String(port)]] },
    { label: 'atftp blksize 65464 windowsize 16', cmd: (port) => ['atftp', ['--option', 'blksize 65464', '--option', 'windowsize 16', '-g', '-r', 'bench.bin', '-l', '/dev/null', '127.0.0.1', String(port)]] },
  ];

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`TFTP throughput, ${MB} MB file, loopback in a private namespace, median of ${RUNS} runs (MB/s)${PIN >= 0 ? `, all on CPU ${PIN}` : ''}\n`);
  console.log(['setting'.padEnd(36), ...Object.keys(servers).map((s) => s.padStart(11)), 'ratio'.padStart(8)].join(''));
  for (const s of settings) {
    const rates: Record<string, number> = {};
    for (const [name, port] of Object.entries(servers)) {
      const samples: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const [cmd, args] = pinned(...s.cmd(port));
        const t0 = process.hrtime.bigint();
        try {
          await run('ip', ['netns', 'exec', ns.name, cmd, ...args], { timeout: 300000 });
          samples.push(MB / (Number(process.hrtime.bigint() - t0) / 1e9));
          process.stderr.write(`  ${s.label} ${name}: ${samples.at(-1)!.toFixed(1)} MB/s\n`);
        } catch (err) {
          console.error(`${name} ${s.label}: ${(err as Error).message.split('\n').slice(0, 2).join(' ')}`);
          samples.push(0);
        }
      }
      rates[name] = median(samples);
    }
    const best = Math.max(rates['tftpd-hpa'], rates.dnsmasq);
    console.log([s.label.padEnd(36), ...Object.keys(servers).map((n) => rates[n].toFixed(1).padStart(11)),
      (best > 0 ? (rates.ironboot / best).toFixed(2) : '-').padStart(8)].join(''));
  }
  console.log('\nratio = ironboot / fastest reference; windowsize is ignored by tftpd-hpa and dnsmasq (lock-step there).');
} finally {
  await lab.destroy();
  rmSync(dir, { recursive: true, force: true });
}
