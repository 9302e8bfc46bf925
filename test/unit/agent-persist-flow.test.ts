/**
 * The agent's state machine for persistent boot (init/agent/main.ts with fake steps): a provisioning of a persistent
 * workflow marks the disk after verify and before mount; a later boot finds and checks the disk, checks in, mounts,
 * runs and reports; a refused disk (locally or by the server) is never mounted or run and the reason is reported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentEvent, WorkflowSpec } from '../../server/agent/api.ts';
import { parseAgentConfig, type After } from '../../init/agent/cmdline.ts';
import { runAgent, type AgentSteps, type PersistSteps, type Reporter, type Step } from '../../init/agent/main.ts';
import type { DiskMarker } from '../../init/agent/steps/marker.ts';
import { DiskRefused } from '../../init/agent/steps/persist.ts';

const SPEC: WorkflowSpec = {
  workflowId: 'wf1', machine: { mac: '52:54:00:00:00:01', hostname: 'node1' },
  image: { id: 'img', name: 'nginx', format: 'ext4', url: 'http://s/images/img.ext4.zst', rawUrl: 'http://s/images/img.ext4',
    compressedSize: 10, compressedSha256: 'c', rawSize: 100, rawSha256: 'r' },
  target: '/dev/vda', after: 'reboot', mode: 'persistent', entrypoint: ['/usr/sbin/nginx'], cmd: [],
  env: [], workingDir: null, user: null, dns: [], persistent: { token: 'disk-token-0123456789' },
};
const MARKER: DiskMarker = { workflowId: 'wf1', imageId: 'img', rawSha256: 'r', rawSize: 100, mac: '52:54:00:00:00:01', fsUuid: 'u', writtenAt: 't', token: 'disk-token-0123456789' };
const PERSISTENT = 'ironboot.server=http://s ironboot.workflow=wf1 ironboot.boot=persistent ironboot.disk=/dev/vda';

function harness(over: Partial<AgentSteps> = {}, pover: Partial<PersistSteps> = {}) {
  const calls: string[] = [];
  const sent: AgentEvent[] = [];
  const reports: Array<Record<string, unknown>> = [];
  const steps: AgentSteps = {
    mounts: async () => { calls.push('mounts'); },
    drivers: async () => { calls.push('drivers'); },
    net: async () => { calls.push('net'); return { iface: 'eth0', mac: '52:54:00:00:00:01', ip: '10.0.0.5', prefix: 24, router: null, dns: [], hostname: null, domain: null }; },
    hello: async () => { calls.push('hello'); return SPEC; },
    stream: async (_s, _c, hooks) => { calls.push('stream'); hooks.verifying(); return { device: '/dev/vda' }; },
    rootDevice: async () => { throw new Error('not in these flows'); },
    mount: async (dev) => { calls.push(`mount:${dev}`); return { fsType: 'ext4' }; },
    run: async (spec) => { calls.push(`run:${spec.argv.join(' ')}`); return 0; },
    after: async (a: After) => { calls.push(`after:${a}`); },
    ...over,
  };
  const persist: PersistSteps = {
    markDisk: async (spec, dev) => { calls.push(`mark:${dev}:${spec.persistent?.token}`); },
    findDisk: async (cfg) => { calls.push(`find:${cfg.persistentDisk}`); return { device: '/dev/vda', marker: MARKER }; },
    checkIn: async (_c, _n, f) => { calls.push(`check-in:${f.marker.token}`); return { boot: 4, spec: { ...SPEC, persistent: undefined } }; },
    report: async (_c, _n, found, r) => { calls.push(`report:${r.phase}`); reports.push({ ...r, marker: found?.marker?.workflowId ?? null }); return true; },
    ...pover,
  };
  const reporter: Reporter = { send: (e) => { sent.push(e); }, final: async (e) => { calls.push(`final:${e.state}`); return true; } };
  const said: string[] = [];
  const con = { say: (m: string) => said.push(m), warn: (m: string) => said.push(`WARN ${m}`) };
  const seen: Step[] = [];
  return { steps, persist, reporter, calls, sent, reports, said, con, seen };
}

test('cmdline: ironboot.boot=persistent with server, workflow and disk selects the persistent flow (no token needed)', () => {
  const c = parseAgentConfig(PERSISTENT);
  assert.equal(c.mode, 'persistent');
  assert.equal(c.persistentDisk, '/dev/vda');
  assert.deepEqual(c.warnings, []);
  const missing = parseAgentConfig('ironboot.server=http://s ironboot.workflow=wf1 ironboot.boot=persistent');
  assert.equal(missing.mode, 'none');
  assert.match(missing.warnings.join(' '), /persistent boot needs ironboot\.disk/);
  assert.equal(parseAgentConfig('ironboot.server=http://s ironboot.workflow=wf1 ironboot.token=t').persistentDisk, null);
  assert.equal(parseAgentConfig('root=/dev/sda entrypoint=/usr/sbin/nginx').mode, 'seed', 'the seed flow is unchanged');
});

test('provisioning a persistent workflow: the marker is written after verify and before mount, and reported', async () => {
  const h = harness();
  const out = await runAgent({ cfg: parseAgentConfig('ironboot.server=http://s ironboot.workflow=wf1 ironboot.token=t'), steps: h.steps, persist: h.persist, reporter: h.reporter, console: h.con, onStep: (s) => h.seen.push(s) });
  assert.equal(out.ok, true);
  assert.deepEqual(h.calls, ['mounts', 'drivers', 'net', 'hello', 'stream', 'mark:/dev/vda:disk-token-0123456789', 'mount:/dev/vda', 'run:/usr/sbin/nginx', 'final:succeeded', 'after:reboot']);
  assert.ok(h.seen.indexOf('mark') > h.seen.indexOf('stream') && h.seen.indexOf('mark') < h.seen.indexOf('mount'));
  assert.ok(h.sent.some((e) => /persistent-boot marker written to \/dev\/vda/.test(e.message ?? '')));
  // an ephemeral workflow is never marked
  const e = harness({ hello: async () => ({ ...SPEC, mode: 'ephemeral', persistent: undefined }) });
  await runAgent({ cfg: parseAgentConfig('ironboot.server=http://s ironboot.workflow=wf1 ironboot.token=t'), steps: e.steps, persist: e.persist, reporter: e.reporter, console: e.con });
  assert.ok(!e.calls.some((c) => c.startsWith('mark:')));
  // a marker that cannot be written fails the workflow before anything mounts
  const f = harness({}, { markDisk: async () => { throw new Error('short write'); } });
  const o = await runAgent({ cfg: parseAgentConfig('ironboot.server=http://s ironboot.workflow=wf1 ironboot.token=t'), steps: f.steps, persist: f.persist, reporter: f.reporter, console: f.con });
  assert.equal(o.step, 'mark');
  assert.ok(!f.calls.some((c) => c.startsWith('mount:')));
  assert.deepEqual(f.calls.slice(-2), ['final:failed', 'after:shell']);
});

test('persistent boot: find + check the disk, check in with the marker token, mount, run, report exited, then after', async () => {
  const h = harness();
  const out = await runAgent({ cfg: parseAgentConfig(PERSISTENT), steps: h.steps, persist: h.persist, reporter: null, console: h.con, onStep: (s) => h.seen.push(s) });
  assert.deepEqual(out, { ok: true, step: 'run', exitCode: 0, reason: null });
  assert.deepEqual(h.calls, ['mounts', 'drivers', 'net', 'find:/dev/vda', 'check-in:disk-token-0123456789', 'mount:/dev/vda', 'run:/usr/sbin/nginx', 'report:exited', 'after:reboot']);
  assert.deepEqual(h.reports, [{ phase: 'exited', boot: 4, exitCode: 0, marker: 'wf1' }]);
  assert.ok(!h.calls.includes('hello') && !h.calls.includes('stream'), 'no hello, no stream');
  assert.deepEqual(h.seen, ['mounts', 'drivers', 'net', 'marker', 'check-in', 'mount', 'run', 'report', 'after']);
  // a failing entrypoint is reported with its code, then a shell
  const f = harness({ run: async () => 2 });
  const o = await runAgent({ cfg: parseAgentConfig(PERSISTENT), steps: f.steps, persist: f.persist, reporter: null, console: f.con });
  assert.equal(o.exitCode, 2);
  assert.deepEqual(f.reports[0], { phase: 'exited', boot: 4, exitCode: 2, marker: 'wf1' });
  assert.equal(f.calls[f.calls.length - 1], 'after:shell');
});

test('a disk refused locally is never mounted: refused reported with the reason and the marker found, then a shell', async () => {
  const other = { ...MARKER, workflowId: 'wf-other' };
  const h = harness({}, { findDisk: async () => { throw new DiskRefused('/dev/vda holds workflow wf-other (…), not this machine\'s workflow wf1', other); } });
  const out = await runAgent({ cfg: parseAgentConfig(PERSISTENT), steps: h.steps, persist: h.persist, reporter: null, console: h.con });
  assert.equal(out.ok, false);
  assert.equal(out.step, 'marker');
  assert.ok(!h.calls.some((c) => /^(check-in|mount:|run:)/.test(c)), h.calls.join(' '));
  assert.equal(h.reports.length, 1);
  assert.equal(h.reports[0].phase, 'refused');
  assert.match(String(h.reports[0].reason), /^marker: \/dev\/vda holds workflow wf-other/);
  assert.equal(h.reports[0].marker, 'wf-other', 'the marker it found goes with the report');
  assert.ok(h.said.some((s) => /WARN persistent boot: step marker failed: .*the disk was not run/.test(s)));
  assert.equal(h.calls[h.calls.length - 1], 'after:shell');
});

test('a disk the server refuses is never mounted either', async () => {
  const h = harness({}, { checkIn: async () => { throw new DiskRefused('the server refused this disk (HTTP 409): the disk holds image img (sha256 e…)'); } });
  const out = await runAgent({ cfg: parseAgentConfig(PERSISTENT), steps: h.steps, persist: h.persist, reporter: null, console: h.con });
  assert.equal(out.step, 'check-in');
  assert.ok(!h.calls.some((c) => /^(mount:|run:)/.test(c)));
  assert.match(String(h.reports[0].reason), /^check-in: the server refused this disk \(HTTP 409\)/);
  assert.equal(h.calls[h.calls.length - 1], 'after:shell');
});
