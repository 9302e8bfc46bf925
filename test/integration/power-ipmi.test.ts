/**
 * ironboot's own IPMI v2.0 lanplus client (server/power/ipmi) against a real BMC: OpenIPMI's ipmi_sim, whose
 * chassis control starts and stops a QEMU process (test/helpers/ipmi-sim.ts), with ipmitool as the reference
 * client on the same simulator. The machine is a QEMU that stays paused (-S: it runs no guest code, so it needs no
 * CPU and does not take the one-VM lock); what is checked is that power on/off/cycle really start and stop it and
 * that "next boot from network" reaches its -boot order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpmiClient } from '../../server/power/ipmi/client.ts';
import { IpmiError } from '../../server/power/ipmi/session.ts';
import { IpmiSim, ipmiSimUnavailable } from '../helpers/ipmi-sim.ts';
import { freePorts } from '../helpers/ports.ts';

const PAUSED_MACHINE = ['qemu-system-x86_64', '-S', '-accel', 'tcg', '-nographic', '-m', '32', '-nic', 'none', '-monitor', 'none'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const port = await freePorts(4); // the first test takes port, port + 1; the second port + 2, port + 3

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  for (let t = 0; t < ms; t += 100) { if (pred()) return; await sleep(100); }
  throw new Error(`timed out waiting for ${what}`);
}

test('IPMI client against ipmi_sim: status, PXE boot flag, on, cycle, off; ipmitool agrees', { skip: ipmiSimUnavailable(), timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ironboot-ipmi-'));
  const sim = await IpmiSim.start({ dir, port, vmPort: port + 1, username: 'admin', password: 'Pa55-w0rd', machine: PAUSED_MACHINE });
  t.after(async () => { await sim.stop(); rmSync(dir, { recursive: true, force: true }); });
  const c = new IpmiClient({ host: '127.0.0.1', port }, { username: 'admin', password: 'Pa55-w0rd' });

  assert.equal(await c.powerStatus(), 'off');
  assert.match(sim.ipmitool(['chassis', 'power', 'status']).stdout, /Chassis Power is off/);

  await c.setBootPxe();
  assert.equal(await c.bootDevice(), 'pxe');
  assert.match(sim.ipmitool(['chassis', 'bootparam', 'get', '5']).stdout, /Boot Device Selector : Force PXE/);

  await c.chassisControl('on');
  await until(() => sim.machinePid() !== null, 10_000, 'the QEMU process after power on');
  const first = sim.machinePid();
  assert.equal(await c.powerStatus(), 'on');
  assert.match(sim.ipmitool(['chassis', 'power', 'status']).stdout, /Chassis Power is on/);
  assert.match(sim.powerLog(), /power on, boot order n\n$/, 'the PXE boot flag made this power-on boot from the network');
  assert.notEqual(await c.bootDevice(), 'pxe', 'the boot flag held for one boot only');

  await c.chassisControl('cycle'); // ipmi_sim: off now, on again after a second
  await until(() => sim.machinePid() !== null && sim.machinePid() !== first, 15_000, 'a new QEMU process after the power cycle');
  assert.equal(await c.powerStatus(), 'on');
  assert.match(sim.powerLog(), /power off\n.*power on, boot order c\n$/);

  await c.chassisControl('off');
  await until(() => sim.machinePid() === null, 10_000, 'the QEMU process to stop');
  assert.equal(await c.powerStatus(), 'off');

  // a command the BMC refuses (chassis control "pulse diagnostic interrupt": ipmi_sim has none) comes back with its
  // completion code inside the encrypted session, and the next session works
  await assert.rejects(c.withSession(async (command) => {
    const r = await command(0x00, 0x02, [4]);
    if (r.completionCode !== 0) throw new IpmiError('command', `completion code 0x${r.completionCode.toString(16)}`);
  }), /completion code 0xcc/);
  assert.equal(await c.powerStatus(), 'off');

  // the reference client powers on; ours sees it
  assert.equal(sim.ipmitool(['chassis', 'power', 'on']).status, 0);
  await until(() => sim.machinePid() !== null, 10_000, 'QEMU after ipmitool power on');
  assert.equal(await c.powerStatus(), 'on');
  await c.chassisControl('off');
  await until(() => sim.machinePid() === null, 10_000, 'the QEMU process to stop');
});

test('IPMI client: a wrong password is refused at once with the reason; ipmitool refuses it too', { skip: ipmiSimUnavailable(), timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ironboot-ipmi-'));
  const p = port + 2;
  const sim = await IpmiSim.start({ dir, port: p, vmPort: p + 1, username: 'admin', password: 'right', machine: PAUSED_MACHINE });
  t.after(async () => { await sim.stop(); rmSync(dir, { recursive: true, force: true }); });
  const c = new IpmiClient({ host: '127.0.0.1', port: p }, { username: 'admin', password: 'wrong' });
  await assert.rejects(c.powerStatus(), (e: IpmiError) => e.kind === 'auth' && /wrong password for user "admin"/.test(e.message));
  const unknown = new IpmiClient({ host: '127.0.0.1', port: p }, { username: 'nobody', password: 'right' });
  await assert.rejects(unknown.powerStatus(), (e: IpmiError) => e.kind === 'auth');
  assert.notEqual(sim.ipmitool(['chassis', 'power', 'status'], 'wrong').status, 0);
  assert.equal(sim.machinePid(), null);
});

test('IPMI client: an unreachable BMC fails with the reason, and waiting for it does not block the event loop', { timeout: 60_000 }, async (t) => {
  // nothing listens: the kernel answers ICMP port unreachable, seen at once on the connected socket
  const closed = new IpmiClient({ host: '127.0.0.1', port: 9 }, { username: 'admin', password: 'x' }, { timeoutMs: 200 });
  await assert.rejects(closed.powerStatus(), (e: IpmiError) => e.kind === 'unreachable' && /127\.0\.0\.1:9/.test(e.message));

  // a black hole: a socket that reads and never answers — timeouts, resends with doubled waits, then the reason
  const hole = dgram.createSocket('udp4');
  let received = 0;
  hole.on('message', () => { received++; });
  await new Promise<void>((r) => hole.bind(0, '127.0.0.1', () => r()));
  t.after(() => hole.close());
  const c = new IpmiClient({ host: '127.0.0.1', port: hole.address().port }, { username: 'admin', password: 'x' }, { timeoutMs: 150, attempts: 3 });
  let ticks = 0;
  const ticker = setInterval(() => { ticks++; }, 20);
  const started = Date.now();
  await assert.rejects(c.powerStatus(), (e: IpmiError) => e.kind === 'timeout' && /after 3 tries/.test(e.message));
  clearInterval(ticker);
  const elapsed = Date.now() - started;
  assert.equal(received, 3, 'three sends of the first datagram');
  assert.ok(elapsed >= 150 + 300 + 600 - 50, `waits doubled: ${elapsed} ms`);
  assert.ok(ticks >= elapsed / 20 / 3, `the event loop kept running while waiting (${ticks} ticks in ${elapsed} ms)`);
});
