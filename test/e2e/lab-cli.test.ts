/**
 * `ironboot lab up / exec / vm / status / console / down`: the operator's lab. A VM on it is answered by
 * ironboot's DHCP with its per-MAC script URL; `lab down` leaves no namespace, process or state behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labCommand } from '../../server/lab/index.ts';
import { namespaceExists, ip } from '../../server/lab/netns.ts';
import { labUnavailable, qemuLock } from '../helpers/lab-env.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('lab up → vm → console → down', { skip: labUnavailable(), timeout: 240_000 }, async (t) => {
  const ns = `ibl${process.pid % 100000}c`;
  const stateDir = mkdtempSync(join(tmpdir(), `${ns}-`));
  const base = ['--name', ns, '--state-dir', stateDir];
  let output = '';
  const out = (s: string) => { output += s; };
  const releaseQemu = await qemuLock();
  t.after(async () => {
    if (namespaceExists(ns)) { await labCommand(['down', ...base], () => {}); if (namespaceExists(ns)) ip('netns', 'del', ns); }
    rmSync(stateDir, { recursive: true, force: true });
    await releaseQemu();
  });

  assert.equal(await labCommand(['up', ...base, '--subnet', '10.77.16.1/24', '--taps', '2', '--', '--no-build-artifacts'], out), 0, output);
  assert.ok(namespaceExists(ns));
  assert.match(ip('-n', ns, '-br', 'addr', 'show', 'br0'), /10\.77\.16\.1\/24/);
  assert.match(ip('-n', ns, '-br', 'link'), /tap1/);
  const state = JSON.parse(readFileSync(join(stateDir, 'lab.json'), 'utf8'));
  assert.ok(alive(state.pids.serve) && alive(state.pids.ra));
  assert.equal(await labCommand(['up', ...base], () => {}), 1, 'a second up is refused');

  const mac = '52:54:00:77:16:01';
  assert.equal(await labCommand(['exec', ...base, '--', 'ironboot', 'machines', 'add', mac, '--ip', '10.77.16.51/24'], out), 0);
  assert.equal(await labCommand(['vm', 'vm1', ...base, '--mac', mac, '--disk', '64M'], out), 0, output);
  const vm = JSON.parse(readFileSync(join(stateDir, 'lab.json'), 'utf8')).vms.vm1;
  let serial = '';
  // until the whole Filename line is there (the console is read while QEMU is still writing it)
  for (let i = 0; i < 600 && !/Filename: [^\r\n]*[\r\n]/.test(serial); i++) {
    await sleep(200);
    serial = '';
    await labCommand(['console', 'vm1', ...base, '--no-follow'], (s) => { serial += s; });
  }
  // ironboot's DHCP answered the registered MAC with the reserved address and its per-MAC script URL
  assert.match(serial, /net0: 10\.77\.16\.51\//, serial.slice(-2000));
  assert.match(serial, /Filename: http:\/\/10\.77\.16\.1:8080\/boot\/52:54:00:77:16:01\.ipxe/, serial.slice(-2000));

  let status = '';
  assert.equal(await labCommand(['status', ...base], (s) => { status += s; }), 0);
  assert.match(status, /ironboot serve\s+running/);
  assert.match(status, /vm vm1\s+running\s+52:54:00:77:16:01/);

  output = '';
  assert.equal(await labCommand(['down', ...base], out), 0);
  assert.match(output, /stopped VM vm1/);
  assert.match(output, /stopped ironboot serve/);
  assert.ok(!namespaceExists(ns), 'namespace deleted');
  for (const pid of [vm.pid, state.pids.serve, state.pids.ra]) assert.ok(!alive(pid), `pid ${pid} is gone`);
  assert.ok(!existsSync(join(stateDir, 'lab.json')));
  let st = '';
  assert.equal(await labCommand(['status', ...base], (s) => { st += s; }), 3);
  assert.match(st, /down/);
});
