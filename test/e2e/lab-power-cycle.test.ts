/**
 * Issue 11 end to end: a lab VM that is powered off gets a BMC (OpenIPMI's ipmi_sim inside the lab namespace,
 * whose chassis control starts and stops the VM's QEMU process, wired back through ipmi-bmc-extern). A workflow
 * created with powerCycle: true makes ironboot set the next boot to PXE and power the machine on over IPMI v2.0
 * lanplus; nobody touches the VM: it PXE-boots from ironboot, streams the busybox httpd disk and reaches running.
 * Then a power off through the API stops the QEMU process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { LabEnv, buildHttpdDisk, stateEvents, labUnavailable, HTTPD_PAGE } from '../helpers/lab-env.ts';
import { IpmiSim, ipmiSimUnavailable } from '../helpers/ipmi-sim.ts';
import { qemuArgs, macForName, QEMU_BINARY } from '../../server/lab/qemu.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('powerCycle: the BMC powers a powered-off VM on, it PXE-boots from ironboot and runs its disk', { skip: labUnavailable() || ipmiSimUnavailable(), timeout: 600_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 18 });
  let sim: IpmiSim | undefined;
  t.after(async () => { await sim?.stop(); await env.destroy(); });
  await buildHttpdDisk(env);

  const mac = macForName(`${env.ns}/power`);
  const disk = join(env.dir, 'power.disk');
  writeFileSync(disk, '');
  spawnSync('truncate', ['-s', String(256 << 20), disk]);
  // the machine's QEMU, as the lab runs it, but started by the BMC: its -boot order comes from the IPMI boot flags
  const args = qemuArgs({ tap: 'tap0', mac, nic: 'virtio', firmware: 'bios', disk, memoryMb: 1024, noReboot: true });
  const boot = args.indexOf('-boot');
  args.splice(boot, 2);
  const bmcDir = join(env.dir, 'bmc');
  mkdirSync(bmcDir);
  sim = await IpmiSim.start({
    dir: bmcDir, port: 623, vmPort: 9002, username: 'ironboot', password: 'lab-bmc-pw', exec: ['ip', 'netns', 'exec', env.ns],
    machine: ['timeout', '600', QEMU_BINARY, ...args],
  });
  assert.equal(sim.machinePid(), null, 'the VM starts powered off');

  await env.registerMachine(mac, env.hostAddress(1), { bmc: { url: 'ipmi://127.0.0.1:623', username: 'ironboot', password: 'lab-bmc-pw' } });
  const wf = await env.api('POST', '/workflows', { machine: mac, image: 'httpd', target: '/dev/vda', powerCycle: true });

  let done: any;
  try {
    done = await env.waitWorkflow(wf.id, (w) => w.state === 'running', 300_000);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- BMC power log ---\n${sim.powerLog()}\n--- VM console (tail) ---\n${sim.console().split('\n').slice(-30).join('\n')}`);
  }
  for (const s of ['pending', 'booting', 'agent-online', 'streaming', 'running']) assert.ok(stateEvents(done).includes(s), `${s} in ${stateEvents(done).join(' → ')}`);
  const info = done.events.filter((e: any) => e.kind === 'info').map((e: any) => e.message);
  assert.deepEqual(info.slice(0, 2), ['power pxe: next boot from the network', 'power cycle: was off: powered on']);
  assert.match(sim.powerLog(), /^\S+ power on, boot order n\n$/, 'one power-on, by the BMC, booting from the network');
  assert.match(sim.console(), /ironboot: provisioning/, 'the VM ran ironboot\'s iPXE script');

  let page = { status: 0, text: '' };
  for (let i = 0; i < 20 && page.status !== 200; i++) {
    page = await env.request(`${env.hostAddress(1)}:80`, 'GET', '/').catch((e) => ({ status: 0, text: String(e) }));
    if (page.status !== 200) await sleep(500);
  }
  assert.equal(page.text, HTTPD_PAGE);

  // power off through the API: the BMC stops the QEMU process
  const off = await env.api('POST', `/machines/${mac}/power/off`);
  assert.equal(off.state, 'off');
  for (let i = 0; i < 100 && sim.machinePid(); i++) await sleep(100);
  assert.equal(sim.machinePid(), null);
  const st = await env.api('POST', `/machines/${mac}/power/status`);
  assert.equal(st.state, 'off');
});
