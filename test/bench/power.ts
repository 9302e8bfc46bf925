/**
 * Power control latency against a real BMC (ipmi_sim on loopback, test/helpers/ipmi-sim.ts): ironboot's own
 * IPMI v2.0 lanplus client (a whole session per call: auth caps, Open Session, RAKP 1–4, privilege, command, close)
 * against ipmitool -I lanplus -C 3 doing the same command, measured in the same run. Also: many status calls to
 * one BMC at once from one event loop (the daemon's poll and API requests share it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { IpmiClient } from '../../server/power/ipmi/client.ts';
import { IpmiSim } from '../helpers/ipmi-sim.ts';

const N = Number(process.env.POWER_BENCH_N ?? 50);
const dir = mkdtempSync(join(tmpdir(), 'ironboot-bench-power-'));
const port = 24000 + (process.pid % 20000);
const sim = await IpmiSim.start({ dir, port, vmPort: port + 1, username: 'admin', password: 'bench', machine: ['true'] });
try {
  const c = new IpmiClient({ host: '127.0.0.1', port }, { username: 'admin', password: 'bench' });
  const ipmitool = () => new Promise<void>((resolve, reject) => {
    const p = spawn('ipmitool', ['-I', 'lanplus', '-C', '3', '-H', '127.0.0.1', '-p', String(port), '-U', 'admin', '-P', 'bench', 'chassis', 'power', 'status'], { stdio: 'ignore' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`ipmitool exited ${code}`))));
  });
  const time = async (fn: () => Promise<unknown>) => { const t = process.hrtime.bigint(); for (let i = 0; i < N; i++) await fn(); return Number(process.hrtime.bigint() - t) / 1e6 / N; };
  await c.powerStatus(); await ipmitool(); // warm
  const ours = await time(() => c.powerStatus());
  const ref = await time(ipmitool);
  console.log(`power status, one session per call, ${N} calls: ironboot ${ours.toFixed(2)} ms/call, ipmitool ${ref.toFixed(2)} ms/call (ratio ironboot/ipmitool ${(ours / ref).toFixed(2)})`);
  const t0 = process.hrtime.bigint();
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => c.powerStatus()));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`8 concurrent sessions to one BMC: ${results.filter((r) => r.status === 'fulfilled').length}/8 answered in ${ms.toFixed(1)} ms`);
} finally {
  await sim.stop();
  rmSync(dir, { recursive: true, force: true });
}
