/**
 * ironboot's Redfish client (server/power/redfish) against a Redfish BMC written around a real QEMU process and
 * its QMP socket (test/helpers/redfish-sim.ts), over HTTPS on loopback with a self-signed certificate. The QEMU
 * stays paused (-S: no guest code, no CPU, so no one-VM lock); power actions really start, reset and stop it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedfishClient } from '../../server/power/redfish/client.ts';
import { PowerError } from '../../server/power/driver.ts';
import { RedfishSim } from '../helpers/redfish-sim.ts';
import { freePorts } from '../helpers/ports.ts';

const PAUSED_MACHINE = ['qemu-system-x86_64', '-S', '-accel', 'tcg', '-nographic', '-m', '32', '-nic', 'none', '-monitor', 'none'];
const creds = { username: 'root', password: 'calvin-2' };

test('Redfish client: power on, PXE once, cycle, off against a QMP-backed BMC; self-signed certificates only when allowed', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ironboot-redfish-'));
  const port = await freePorts(1);
  const sim = await RedfishSim.start({ dir, port, ...creds, machine: PAUSED_MACHINE });
  t.after(async () => { await sim.stop(); rmSync(dir, { recursive: true, force: true }); });
  const target = { host: '127.0.0.1', port };

  // safe default: the self-signed certificate does not verify, and no credentials went out
  const strict = new RedfishClient(target, creds);
  await assert.rejects(strict.status(), (e: PowerError) => e.kind === 'tls' && /bmc\.ca/.test(e.message) && /bmc\.tlsInsecure/.test(e.message));
  assert.equal(sim.requests.length, 0, 'nothing reached the BMC before the certificate verified');

  // the BMC's certificate as this BMC's CA
  const c = new RedfishClient(target, creds, { ca: sim.cert });
  assert.equal(await c.status(), 'off');
  await c.bootPxe({ efi: false });
  assert.deepEqual(sim.bootOverride, { target: 'Pxe', enabled: 'Once' });
  await c.cycle(); // off: cycle means on
  await c.on();    // already on: stays the same process
  const first = sim.machinePid();
  assert.ok(first, 'QEMU runs after power on');
  assert.equal(await c.status(), 'on');
  assert.deepEqual(sim.powerLog, ['on n'], 'the PXE override was used by that power-on');
  assert.deepEqual(sim.bootOverride, { target: 'None', enabled: 'Disabled' }, 'and only by that one');
  await c.cycle();
  assert.ok(sim.machinePid() && sim.machinePid() !== first, 'a power cycle made a new QEMU process');
  assert.deepEqual(sim.powerLog, ['on n', 'off', 'on c']);
  await c.off();
  assert.equal(sim.machinePid(), null);
  assert.equal(await c.status(), 'off');

  // sessions: every call logged in and out; no request after login went unauthenticated
  const resources = sim.requests.filter((r) => !r.path.startsWith('/redfish/v1/SessionService'));
  assert.ok(resources.length > 0 && resources.every((r) => r.authenticated));
  assert.ok(sim.requests.some((r) => r.method === 'DELETE' && r.path.startsWith('/redfish/v1/SessionService/Sessions/')));

  // an explicit per-BMC "accept its self-signed certificate"; basic auth
  const insecure = new RedfishClient(target, creds, { tlsInsecure: true, auth: 'basic' });
  assert.equal(await insecure.status(), 'off');

  // wrong password: refused with the reason
  const wrong = new RedfishClient(target, { ...creds, password: 'nope' }, { ca: sim.cert });
  await assert.rejects(wrong.status(), (e: PowerError) => e.kind === 'auth' && /wrong user name or password/.test(e.message));
  const wrongBasic = new RedfishClient(target, { ...creds, password: 'nope' }, { ca: sim.cert, auth: 'basic' });
  await assert.rejects(wrongBasic.on(), (e: PowerError) => e.kind === 'auth');
  assert.equal(sim.machinePid(), null);

  // nothing listening: unreachable, not a hang
  const dead = new RedfishClient({ host: '127.0.0.1', port: 9 }, creds, { ca: sim.cert, timeoutMs: 2000 });
  await assert.rejects(dead.status(), (e: PowerError) => e.kind === 'unreachable' && e.retryable);
});

test('a machine with a Redfish BMC through the daemon: its certificate refused by default, accepted with bmc.ca or bmc.tlsInsecure', { timeout: 120_000 }, async (t) => {
  const { spawnDaemon, tempDir } = await import('../helpers/daemon.ts');
  const { readFileSync } = await import('node:fs');
  const dir = tempDir(); t.after(dir.remove);
  const port = await freePorts(1);
  const sim = await RedfishSim.start({ dir: dir.path, port, ...creds, machine: PAUSED_MACHINE });
  t.after(() => sim.stop());
  const d = await spawnDaemon(join(dir.path, 'data'), ['--power-poll-interval', '0']);
  t.after(() => d.stop());
  const token = readFileSync(join(dir.path, 'data', 'admin-token'), 'utf8').trim();
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${d.url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };
  const MAC = '52:54:00:00:22:01';
  const url = `redfish://127.0.0.1:${port}`;
  assert.equal((await api('POST', '/machines', { mac: MAC, bmc: { url, ...creds, ca: 'not a certificate' } })).body.field, 'bmc.ca');
  assert.equal((await api('POST', '/machines', { mac: MAC, bmc: { url, ...creds } })).status, 201);

  const refused = await api('POST', `/machines/${MAC}/power/status`);
  assert.equal(refused.status, 502);
  assert.match(refused.body.message, /does not verify.*bmc\.ca.*bmc\.tlsInsecure/);
  assert.equal(sim.requests.length, 0);

  assert.equal((await api('PATCH', `/machines/${MAC}`, { bmc: { url, username: creds.username, ca: sim.cert } })).status, 200);
  const on = await api('POST', `/machines/${MAC}/power/cycle`);
  assert.equal(on.status, 200, JSON.stringify(on.body));
  assert.equal(on.body.message, 'was off: powered on');
  assert.ok(sim.machinePid());
  assert.equal((await api('POST', `/machines/${MAC}/power/pxe`)).status, 200);
  assert.deepEqual(sim.bootOverride, { target: 'Pxe', enabled: 'Once' });

  assert.equal((await api('PATCH', `/machines/${MAC}`, { bmc: { url, username: creds.username, tlsInsecure: true } })).status, 200);
  const machine = (await api('GET', `/machines/${MAC}`)).body;
  assert.deepEqual(machine.bmc, { url, username: creds.username, tlsInsecure: true, ca: null });
  assert.equal((await api('POST', `/machines/${MAC}/power/off`)).body.state, 'off');
  assert.equal(sim.machinePid(), null);
  assert.deepEqual((await api('GET', `/machines/${MAC}/power`)).body.events.map((e: any) => `${e.action}:${e.outcome}`), ['status:failed', 'cycle:ok', 'pxe:ok', 'off:ok']);
});
