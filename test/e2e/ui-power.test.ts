/**
 * Power control on the web page, in a real browser (chromium through playwright-core) against a real daemon and a
 * real BMC (ipmi_sim on loopback powering a paused QEMU, test/helpers/ipmi-sim.ts): the machine's power state is
 * shown, its buttons drive the BMC, and the action's outcome appears in the page's log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { spawnDaemon, tempDir } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';
import { IpmiSim, ipmiSimUnavailable } from '../helpers/ipmi-sim.ts';
import { freePorts } from '../helpers/ports.ts';

const CHROMIUM = '/usr/bin/chromium';
declare const document: { querySelector(selector: string): { textContent: string | null } | null };
const PAUSED_MACHINE = ['qemu-system-x86_64', '-S', '-accel', 'tcg', '-nographic', '-m', '32', '-nic', 'none', '-monitor', 'none'];

test('the web page shows a machine\'s power state and its buttons drive the BMC', { skip: (!existsSync(CHROMIUM) && 'chromium is not installed') || ipmiSimUnavailable(), timeout: 90_000 }, async (t) => {
  // teardown in this order (t.after hooks run in the order they are added): the daemon, the BMC and its machine
  // (its chassis script and pid file live in dir), then dir
  const dir = tempDir();
  const cleanup: (() => unknown)[] = [];
  t.after(async () => { for (const f of cleanup.reverse()) await f(); dir.remove(); });
  const port = await freePorts(2);
  mkdirSync(join(dir.path, 'bmc'));
  const sim = await IpmiSim.start({ dir: join(dir.path, 'bmc'), port, vmPort: port + 1, username: 'admin', password: 'ui-bmc', machine: PAUSED_MACHINE });
  cleanup.push(() => sim.stop());
  mkdirSync(join(dir.path, 'data'));
  const s = Store.open(join(dir.path, 'data'));
  s.machines.create({ mac: '52:54:00:12:34:57', hostname: 'node-p', bmc: { url: `ipmi://127.0.0.1:${port}`, username: 'admin', password: 'ui-bmc' } });
  s.close();
  const d = await spawnDaemon(join(dir.path, 'data'), ['--power-poll-interval', '0'], { IRONBOOT_TOKEN: 'ui-power-token' });
  cleanup.push(() => d.stop());

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${d.url}/#token=ui-power-token`);
  await page.waitForSelector('button[data-power="status"]');
  assert.match(await page.textContent('#machines') ?? '', /node-p-yes\?\s/, 'state not known yet');

  await page.click('button[data-power="status"]');
  await page.waitForFunction(() => document.querySelector('#log')!.textContent!.includes('power is off'));
  await page.waitForFunction(() => /node-p-yesoff\s/.test(document.querySelector('#machines')!.textContent!));

  await page.click('button[data-power="on"]');
  await page.waitForFunction(() => document.querySelector('#log')!.textContent!.includes('powered on'));
  assert.ok(sim.machinePid(), 'the BMC started the machine');
  await page.waitForFunction(() => /node-p-yeson\s/.test(document.querySelector('#machines')!.textContent!));

  await page.click('button[data-power="off"]');
  await page.waitForFunction(() => document.querySelector('#log')!.textContent!.includes('powered off'));
  for (let i = 0; i < 50 && sim.machinePid(); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(sim.machinePid(), null);
  assert.deepEqual(errors, []);
});
