/**
 * Power control through a real `ironboot serve` and its CLI, with a real BMC (ipmi_sim on loopback whose
 * chassis control starts and stops a paused QEMU, test/helpers/ipmi-sim.ts): a machine's bmc (password never
 * read back, 400 naming the field on bad input), `ironboot machines power MAC …`, each action an event of the
 * machine, a workflow with powerCycle setting PXE and power-cycling the machine itself, retries with backoff for an
 * unreachable BMC while the daemon keeps answering, no retry for a wrong password, and the polled power state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';
import { IpmiSim, ipmiSimUnavailable } from '../helpers/ipmi-sim.ts';
import { freePorts } from '../helpers/ports.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PAUSED_MACHINE = ['qemu-system-x86_64', '-S', '-accel', 'tcg', '-nographic', '-m', '32', '-nic', 'none', '-monitor', 'none'];
const PASSWORD = 'Secr3t-BMC-pw';

async function cli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('machines power through the API and CLI against ipmi_sim; powerCycle workflows; faults', { skip: ipmiSimUnavailable(), timeout: 180_000 }, async (t) => {
  // teardown in this order (t.after hooks run in the order they are added): the daemon, the BMC and its machine
  // (its chassis script and pid file live in dir), then dir
  const dir = tempDir();
  const cleanup: (() => unknown)[] = [];
  t.after(async () => { for (const f of cleanup.reverse()) await f(); dir.remove(); });
  mkdirSync(join(dir.path, 'data'));
  const s = Store.open(join(dir.path, 'data'));
  s.images.insert(readyImage({ id: 'img1', name: 'web' }));
  s.close();
  const port = await freePorts(2);
  mkdirSync(join(dir.path, 'bmc'));
  const sim = await IpmiSim.start({ dir: join(dir.path, 'bmc'), port, vmPort: port + 1, username: 'admin', password: PASSWORD, machine: PAUSED_MACHINE });
  cleanup.push(() => sim.stop());
  const d = await spawnDaemon(join(dir.path, 'data'), ['--power-poll-interval', '1']);
  cleanup.push(() => d.stop());
  const token = readFileSync(join(dir.path, 'data', 'admin-token'), 'utf8').trim();
  const env = { IRONBOOT_SERVER: d.url, IRONBOOT_TOKEN: token };
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${d.url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await r.text();
    return { status: r.status, text, body: text ? JSON.parse(text) : null };
  };
  const MAC = '52:54:00:00:11:01';

  // bad input: 400 naming the field, nothing written
  for (const [bmc, field] of [
    [{ url: 'http://127.0.0.1', username: 'a', password: 'b' }, 'bmc.url'],
    [{ url: 'ipmi://127.0.0.1:99999', username: 'a', password: 'b' }, 'bmc.url'],
    [{ url: 'ipmi://bad_host!', username: 'a', password: 'b' }, 'bmc.url'],
    [{ url: 'ipmi://127.0.0.1', username: 'a' }, 'bmc.password'],
    [{ url: 'ipmi://127.0.0.1', username: 'a', password: 'b', tlsInsecure: true }, 'bmc.tlsInsecure'],
  ] as const) {
    const r = await api('POST', '/machines', { mac: MAC, bmc });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.field, field, r.text);
  }
  assert.equal((await api('GET', `/machines/${MAC}`)).status, 404);

  // register with a BMC through the CLI (password from a file, not the command line)
  const pwFile = join(dir.path, 'bmc-password');
  writeFileSync(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
  let r = await cli(env, 'machines', 'add', MAC, '--bmc', `ipmi://127.0.0.1:${port}`, '--bmc-user', 'admin', '--bmc-password-file', pwFile);
  assert.equal(r.code, 0, r.stderr);
  const shown = await api('GET', `/machines/${MAC}`);
  assert.deepEqual(shown.body.bmc, { url: `ipmi://127.0.0.1:${port}`, username: 'admin', tlsInsecure: false, ca: null });

  // power actions through the CLI; the machine (the QEMU process) really follows
  r = await cli(env, 'machines', 'power', MAC, 'status');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /power is off/);
  r = await cli(env, 'machines', 'power', MAC, 'pxe');
  assert.match(r.stdout, /next boot from the network/);
  assert.match(sim.ipmitool(['chassis', 'bootparam', 'get', '5']).stdout, /Force PXE/);
  r = await cli(env, 'machines', 'power', MAC, 'cycle');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /was off: powered on/);
  assert.ok(sim.machinePid(), 'the BMC powered the machine on');
  assert.match(sim.powerLog(), /boot order n/);
  r = await cli(env, 'machines', 'power', MAC, 'off', '--json');
  assert.equal(JSON.parse(r.stdout).state, 'off');
  for (let i = 0; i < 50 && sim.machinePid(); i++) await sleep(100);
  assert.equal(sim.machinePid(), null);
  r = await cli(env, 'machines', 'power', MAC, 'reboot');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not a power action/);

  // each action is an event of the machine
  const power = await api('GET', `/machines/${MAC}/power`);
  assert.deepEqual(power.body.events.map((e: any) => `${e.action}:${e.outcome}`), ['status:ok', 'pxe:ok', 'cycle:ok', 'off:ok']);
  assert.equal(power.body.state, 'off');

  // polled power state: the reference client powers on behind ironboot's back; the poll sees it
  assert.equal(sim.ipmitool(['chassis', 'power', 'on']).status, 0);
  let polled = '';
  for (let i = 0; i < 100 && polled !== 'on'; i++) { await sleep(100); polled = (await api('GET', `/machines/${MAC}`)).body.power.state; }
  assert.equal(polled, 'on', 'the background poll recorded the new power state');
  r = await cli(env, 'machines', 'list');
  assert.match(r.stdout, /POWER/);
  assert.match(r.stdout, new RegExp(`${MAC}.*\\bon\\b`));
  assert.equal(sim.ipmitool(['chassis', 'power', 'off']).status, 0);
  for (let i = 0; i < 50 && sim.machinePid(); i++) await sleep(100);

  // a workflow with powerCycle: PXE, then power (on, since it is off), both recorded on the workflow
  const NO_BMC = '52:54:00:00:11:02';
  assert.equal((await api('POST', '/machines', { mac: NO_BMC })).status, 201);
  const refused = await api('POST', '/workflows', { machine: NO_BMC, image: 'web', target: '/dev/vda', powerCycle: true });
  assert.equal(refused.status, 400);
  assert.equal(refused.body.field, 'powerCycle');
  const before = sim.powerLog().split('\n').length;
  r = await cli(env, 'workflows', 'create', '--machine', MAC, '--image', 'web', '--target', '/dev/vda', '--power-cycle', '--json');
  assert.equal(r.code, 0, r.stderr);
  const wf = JSON.parse(r.stdout);
  assert.equal(wf.powerCycle, true);
  let events: any[] = [];
  for (let i = 0; i < 100 && events.filter((e) => e.kind === 'info').length < 2; i++) { await sleep(100); events = (await api('GET', `/workflows/${wf.id}`)).body.events; }
  assert.deepEqual(events.filter((e) => e.kind === 'info').map((e) => e.message), ['power pxe: next boot from the network', 'power cycle: was off: powered on']);
  assert.ok(sim.machinePid(), 'the workflow powered the machine on');
  assert.match(sim.powerLog().split('\n').slice(before - 1).join('\n'), /power on, boot order n/, 'from the network');
  const pe = (await api('GET', `/machines/${MAC}/power`)).body.events.slice(-2);
  assert.deepEqual(pe.map((e: any) => [e.action, e.workflowId]), [['pxe', wf.id], ['cycle', wf.id]]);

  // retry of a finished powerCycle workflow cycles again (the machine is on now: a real power cycle)
  await api('POST', `/workflows/${wf.id}/cancel`);
  const firstPid = sim.machinePid();
  const retried = await api('POST', `/workflows/${wf.id}/retry`);
  assert.equal(retried.status, 201, retried.text);
  assert.equal(retried.body.powerCycle, true);
  let cycled: any[] = [];
  for (let i = 0; i < 150 && cycled.length < 2; i++) { await sleep(100); cycled = (await api('GET', `/workflows/${retried.body.id}`)).body.events.filter((e: any) => e.kind === 'info'); }
  assert.equal(cycled[1]?.message, 'power cycle: power-cycled');
  for (let i = 0; i < 50 && (sim.machinePid() === firstPid || !sim.machinePid()); i++) await sleep(100);
  assert.ok(sim.machinePid() && sim.machinePid() !== firstPid, 'a new QEMU process after the cycle');
  await api('POST', `/workflows/${retried.body.id}/cancel`);

  // wrong password: retried once after the backoff (1 s), never more (more bad logins lock accounts), then 502
  // with the reason
  const WRONG = '52:54:00:00:11:03';
  assert.equal((await api('POST', '/machines', { mac: WRONG, bmc: { url: `ipmi://127.0.0.1:${port}`, username: 'admin', password: 'wrong' } })).status, 201);
  const wrongStarted = Date.now();
  const w = await api('POST', `/machines/${WRONG}/power/status`);
  assert.equal(w.status, 502);
  assert.equal(w.body.field, 'bmc');
  assert.match(w.body.message, /wrong password for user "admin" \(after 2 tries\)/);
  assert.ok(Date.now() - wrongStarted >= 1000, 'the second try came after the backoff');
  const wrongEvents = (await api('GET', `/machines/${WRONG}/power`)).body.events;
  assert.equal(wrongEvents.at(-1)?.payload?.attempts, 2, JSON.stringify(wrongEvents));

  // unreachable BMC: retried with backoff (1 s, 2 s), the daemon answering meanwhile; then 502 with the reason
  const DEAD = '52:54:00:00:11:04';
  assert.equal((await api('POST', '/machines', { mac: DEAD, bmc: { url: 'ipmi://127.0.0.1:9', username: 'admin', password: 'x' } })).status, 201);
  const started = Date.now();
  const pending = api('POST', `/machines/${DEAD}/power/on`);
  let answeredMeanwhile = 0;
  for (let i = 0; i < 5; i++) { await sleep(300); if ((await fetch(`${d.url}/healthz`)).status === 200) answeredMeanwhile++; }
  const dead = await pending;
  assert.equal(dead.status, 502);
  assert.match(dead.body.message, /ICMP port unreachable.*\(after 3 tries\)/);
  assert.ok(Date.now() - started >= 3000, 'backoff of 1 s then 2 s between the tries');
  assert.equal(answeredMeanwhile, 5, 'the daemon answered while the BMC was being retried');
  const deadEvents = (await api('GET', `/machines/${DEAD}/power`)).body.events;
  assert.equal(deadEvents.at(-1).outcome, 'failed');
  assert.equal(deadEvents.at(-1).payload.attempts, 3);

  // the password is in no read: machine get/list, power events, CLI output, and the daemon's log
  const reads = [
    (await api('GET', '/machines')).text, (await api('GET', `/machines/${MAC}`)).text, (await api('GET', `/machines/${MAC}/power`)).text,
    (await api('GET', `/workflows/${wf.id}`)).text, (await cli(env, 'machines', 'show', MAC)).stdout, (await cli(env, 'machines', 'list', '--json')).stdout,
    (await api('GET', `/machines/${WRONG}/power`)).text, d.output(),
  ];
  for (const text of reads) assert.ok(!text.includes(PASSWORD), `the BMC password leaked: ${text.slice(0, 300)}`);
  // PATCH without a password keeps the stored one
  assert.equal((await api('PATCH', `/machines/${MAC}`, { bmc: { url: `ipmi://127.0.0.1:${port}`, username: 'admin' } })).status, 200);
  assert.match((await cli(env, 'machines', 'power', MAC, 'status')).stdout, /power is on/);
});
