/**
 * DHCP runs on a thread of its own inside `ironboot serve`: with the daemon's main thread held (no event-loop turn
 * for 6 s, as a long synchronous job would), a real udhcpc still gets its reserved address within its 3 tries, 1 s
 * apart; the main thread was still held when the lease came. On the main thread (IRONBOOT_DHCP_THREAD=0) the same
 * client gets nothing. The thread's counters are in /metrics, a start failure is the daemon's start failure, and a
 * thread that dies is started again.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { runUdhcpc, setMac, tempDir, ensureNativeAddon } from '../helpers/dhcp-lab.ts';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { loadServeConfig } from '../../server/config.ts';
import { startDhcpThread } from '../../server/dhcp/thread.ts';
import { metricsText } from '../../server/metrics.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUNNER = join(ROOT, 'test', 'helpers', 'daemon-block-runner.ts');
const skip = netnsUnavailable('busybox');
const MAC = '52:54:00:8a:00:10';
let lab: Lab | null = null;
after(async () => { if (lab) await lab.destroy(); });

async function serve(srv: Namespace, dataDir: string, env: NodeJS.ProcessEnv) {
  const p = srv.spawn(process.execPath, ['--import', 'tsx', RUNNER, '--data-dir', dataDir, '--dhcp-interface', 'vsrv',
    '--http-listen', '10.88.0.1:18080', '--no-tftp', '--no-build-artifacts'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = ''; let err = '';
  p.stdout!.on('data', (d) => { out += d; });
  p.stderr!.on('data', (d) => { err += d; });
  for (let i = 0; i < 300 && !out.includes('READY'); i++) {
    if (p.exitCode !== null) throw new Error(`the daemon exited: ${err.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(out.includes('READY'), err.slice(-2000));
  return {
    out: () => out, err: () => err,
    block: (ms: number) => p.stdin!.write(`block ${ms}\n`),
    stop: async () => { p.kill('SIGTERM'); await new Promise((r) => { if (p.exitCode !== null) r(null); else p.once('exit', r); }); },
  };
}

test('DHCP answers while the daemon\'s main thread is held; on the main thread it would not', { skip, timeout: 120_000 }, async () => {
  ensureNativeAddon();
  lab = await Lab.create('ibq');
  const srv = lab.ns('srv');
  const cli = lab.ns('cli');
  lab.veth(srv, '10.88.0.1/24', cli, null, ['vsrv', 'vcli']);
  setMac(cli, 'vcli', MAC);
  for (const [mode, env] of [['thread', {}], ['main thread', { IRONBOOT_DHCP_THREAD: '0' }]] as const) {
    const dataDir = join(tempDir('dhcp-thread'), 'data');
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const s = Store.open(dataDir);
    s.machines.create({ mac: MAC, hostname: 'held', ipv4: { address: '10.88.0.20', prefix: 24, dns: [] } });
    s.close();
    const d = await serve(srv, dataDir, env);
    try {
      d.block(6000);
      await new Promise((r) => setTimeout(r, 200)); // the line is read and the main thread held
      const r = await runUdhcpc(cli, 'vcli', [], { tries: 3 });
      const heldAtLease = !d.out().includes('UNBLOCKED');
      if (mode === 'thread') {
        assert.equal(r.bound?.ip, '10.88.0.20', `no lease while the main thread was held:\n${r.log}\n${d.err().slice(-2000)}`);
        assert.ok(heldAtLease, 'the main thread was still held when the lease came');
        for (let i = 0; i < 100 && !d.out().includes('UNBLOCKED'); i++) await new Promise((res) => setTimeout(res, 100));
        const metrics = spawnSync('ip', ['netns', 'exec', srv.name, 'curl', '-sS', 'http://10.88.0.1:18080/metrics'], { encoding: 'utf8' }).stdout;
        assert.match(metrics, /^ironboot_dhcp_requests_total\{type="discover",outcome="offer"\} [1-9]/m, 'the DHCP thread\'s counters');
        assert.match(metrics, /^ironboot_nodejs_eventloop_lag_seconds /m, 'and the main thread\'s');
      } else {
        assert.equal(r.bound, null, 'on the main thread, DHCP waits for the held thread');
        assert.ok(heldAtLease);
      }
    } finally {
      await d.stop();
    }
  }
});

test('a DHCP start failure on its thread is the daemon\'s start failure, with the reason', { skip, timeout: 60_000 }, async () => {
  const dataDir = join(tempDir('dhcp-thread'), 'data');
  const r = spawnSync(process.execPath, [join(ROOT, 'server', 'cli', 'ironboot.mjs'), 'serve', '--data-dir', dataDir, '--dhcp-interface', 'nosuch9',
    '--http-listen', '127.0.0.1:0', '--no-tftp', '--no-build-artifacts'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, CI: '1' } });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /--dhcp-interface nosuch9: no such interface/);
});

test('a DHCP thread that dies is started again, says so, and its counters come from the new one', { skip: netnsUnavailable(), timeout: 60_000 }, async (t) => {
  ensureNativeAddon();
  const dataDir = join(tempDir('dhcp-thread'), 'data');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // loopback only, on a port of its own: nothing leaves the host
  const config = loadServeConfig(['--data-dir', dataDir, '--dhcp-interface', 'lo', '--dhcp-port', '16767', '--no-tftp'], {});
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => { lines.push(l); } });
  const registry = new Registry();
  const dhcp = await startDhcpThread({ config, httpPort: 18080, log, registry });
  t.after(() => dhcp.close());
  const started = () => lines.filter((l) => /"msg":"dhcp: started"/.test(l)).length;
  assert.equal(started(), 1);
  const first = dhcp.thread();
  await first.terminate();
  for (let i = 0; i < 100 && (started() < 2 || dhcp.thread() === first); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(lines.some((l) => /the DHCP thread exited; starting it again/.test(l)), lines.join(''));
  assert.equal(started(), 2, 'the new thread started the DHCP service');
  assert.notEqual(dhcp.thread().threadId, first.threadId);
  assert.match(await metricsText(registry), /^# TYPE ironboot_dhcp_requests_total counter$/m);
});
