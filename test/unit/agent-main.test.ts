import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentEvent, WorkflowSpec } from '../../server/agent/api.ts';
import { parseAgentConfig, type After } from '../../init/agent/cmdline.ts';
import { runAgent, runSpecFromWorkflow, type AgentSteps, type Reporter, type Step } from '../../init/agent/main.ts';

const SPEC: WorkflowSpec = {
  workflowId: 'wf1', machine: { mac: '52:54:00:00:00:01', hostname: 'node1' },
  image: { id: 'img', name: 'nginx', format: 'ext4', url: 'http://s/images/img.ext4.zst', rawUrl: 'http://s/images/img.ext4',
    compressedSize: 10, compressedSha256: 'c', rawSize: 100, rawSha256: 'r' },
  target: '/dev/sda', after: 'reboot', mode: 'ephemeral', entrypoint: ['/docker-entrypoint.sh'], cmd: ['nginx', '-g', 'daemon off;'],
  env: ['A=1'], workingDir: '/srv', user: 'www', dns: ['10.0.0.53'],
};

const SERVER_CMDLINE = 'ironboot.server=http://s ironboot.workflow=wf1 ironboot.token=t';

function harness(over: Partial<AgentSteps> = {}, opts: { acked?: boolean } = {}) {
  const calls: string[] = [];
  const sent: AgentEvent[] = [];
  const finals: Array<{ e: AgentEvent; max?: number }> = [];
  const steps: AgentSteps = {
    mounts: async () => { calls.push('mounts'); },
    drivers: async () => { calls.push('drivers'); },
    net: async () => { calls.push('net'); return { iface: 'eth0', mac: '52:54:00:00:00:01', ip: '10.0.0.5', prefix: 24, router: '10.0.0.1', dns: ['10.0.0.1'], hostname: 'dhcp-name', domain: 'lab' }; },
    hello: async () => { calls.push('hello'); return SPEC; },
    stream: async (_s, _c, hooks) => { calls.push('stream'); for (let i = 0; i <= 100; i += 10) hooks.progress(i, 100); hooks.verifying(); return { device: '/dev/sda' }; },
    rootDevice: async (cfg) => { calls.push(`root:${cfg.root}`); return cfg.root!; },
    mount: async (dev, o) => { calls.push(`mount:${dev}:${o.fsType}:${o.hostname}:${o.dns.join(',')}`); return { fsType: 'ext4' }; },
    run: async (spec, onLine) => { calls.push(`run:${spec.argv.join(' ')}`); onLine({ stream: 'stdout', line: 'hello' }); onLine({ stream: 'stderr', line: 'oops' }); return 0; },
    after: async (a: After) => { calls.push(`after:${a}`); },
    ...over,
  };
  const reporter: Reporter = {
    send: (e) => { sent.push(e); },
    final: async (e, o) => { calls.push(`final:${e.state}`); finals.push({ e, max: o?.maxAttempts }); return opts.acked ?? true; },
  };
  const said: string[] = [];
  const con = { say: (m: string) => said.push(m), warn: (m: string) => said.push(`WARN ${m}`) };
  const stepsSeen: Step[] = [];
  return { steps, reporter, calls, sent, finals, said, con, stepsSeen };
}

test('server flow: steps in order, states reported, after only once the final status was acknowledged', async () => {
  const h = harness();
  const out = await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con, onStep: (s) => h.stepsSeen.push(s), progressIntervalMs: 0 });
  assert.deepEqual(out, { ok: true, step: 'run', exitCode: 0, reason: null });
  assert.deepEqual(h.calls, ['mounts', 'drivers', 'net', 'hello', 'stream', 'mount:/dev/sda:ext4:node1:10.0.0.53',
    'run:/docker-entrypoint.sh nginx -g daemon off;', 'final:succeeded', 'after:reboot']);
  assert.deepEqual(h.sent.filter((e) => e.state).map((e) => e.state), ['streaming', 'verifying', 'mounted', 'running']);
  assert.deepEqual(h.finals[0].e, { state: 'succeeded', exitCode: 0, message: 'entrypoint exited with code 0' });
  assert.equal(h.finals[0].max, undefined, 'the final success report is retried until it is acknowledged');
  const progress = h.sent.filter((e) => e.bytesDone !== undefined && !e.state);
  assert.equal(progress[progress.length - 1].bytesDone, 100);
  assert.deepEqual(h.sent.flatMap((e) => e.log ?? []), [{ stream: 'stdout', line: 'hello' }, { stream: 'stderr', line: 'oops' }]);
  assert.deepEqual(h.stepsSeen, ['mounts', 'drivers', 'net', 'hello', 'stream', 'mount', 'run', 'report', 'after']);
});

test('progress events are throttled to the interval but the last one always goes out', async () => {
  const h = harness();
  let t = 0;
  await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con, progressIntervalMs: 250, now: () => t });
  const progress = h.sent.filter((e) => e.bytesDone !== undefined && !e.state).map((e) => e.bytesDone);
  assert.deepEqual(progress, [100], 'with a frozen clock only the final progress event is sent');
  t = 0;
});

test('a non-zero exit code is a failure: failed reported with the code, then a shell instead of the after action', async () => {
  const h = harness({ run: async () => 3 });
  const out = await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con });
  assert.equal(out.ok, false);
  assert.equal(out.exitCode, 3);
  assert.deepEqual(h.finals[0].e, { state: 'failed', exitCode: 3, message: 'entrypoint exited with code 3' });
  assert.equal(h.calls[h.calls.length - 1], 'after:shell');
});

test('a checksum failure never mounts: failed event with the reason, console message, shell', async () => {
  const h = harness({ stream: async () => { throw new Error('sha256 mismatch: expected r, got x'); } });
  const out = await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con });
  assert.equal(out.step, 'stream');
  assert.ok(!h.calls.some((c) => c.startsWith('mount:') || c.startsWith('run:')), 'nothing mounted or run');
  assert.equal(h.finals[0].e.state, 'failed');
  assert.match(h.finals[0].e.message!, /^stream: sha256 mismatch/);
  assert.equal(h.finals[0].max, 5, 'a failure report is tried a bounded number of times');
  assert.ok(h.said.some((m) => /FAILED in step stream: sha256 mismatch/.test(m)));
  assert.equal(h.calls[h.calls.length - 1], 'after:shell');
});

test('a failure the server cannot hear about still ends in a shell with a console message', async () => {
  const h = harness({ hello: async () => { throw new Error('cannot reach http://s/agent/v1/hello: ECONNREFUSED'); } }, { acked: false });
  const out = await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con });
  assert.equal(out.step, 'hello');
  assert.ok(h.said.some((m) => /could not report the failure/.test(m)));
  assert.equal(h.calls[h.calls.length - 1], 'after:shell');
});

test('seed flow: no server, network best effort, root device, mount, entrypoint, after (default shell)', async () => {
  const h = harness({ net: async () => { throw new Error('no Ethernet interface found'); } });
  const out = await runAgent({ cfg: parseAgentConfig('root=/dev/sda entrypoint=/usr/sbin/nginx'), steps: h.steps, reporter: null, console: h.con });
  assert.equal(out.ok, true);
  assert.deepEqual(h.calls, ['mounts', 'drivers', 'root:/dev/sda', 'mount:/dev/sda:null:null:', 'run:/usr/sbin/nginx', 'after:shell']);
  assert.ok(h.said.some((m) => /no network \(carrying on without\)/.test(m)));
});

test('seed flow honours ironboot.after and ironboot.net=0', async () => {
  const h = harness();
  await runAgent({ cfg: parseAgentConfig('root=/dev/vda entrypoint=/x ironboot.after=poweroff ironboot.net=0'), steps: h.steps, reporter: null, console: h.con });
  assert.ok(!h.calls.includes('net'));
  assert.equal(h.calls[h.calls.length - 1], 'after:poweroff');
});

test('no flow configured: a warning and a shell', async () => {
  const h = harness();
  const out = await runAgent({ cfg: parseAgentConfig('console=ttyS0'), steps: h.steps, reporter: null, console: h.con });
  assert.equal(out.ok, false);
  assert.deepEqual(h.calls, ['mounts', 'after:shell']);
});

test('runSpecFromWorkflow joins Entrypoint and Cmd', () => {
  assert.deepEqual(runSpecFromWorkflow(SPEC), { argv: ['/docker-entrypoint.sh', 'nginx', '-g', 'daemon off;'], env: ['A=1'], workingDir: '/srv', user: 'www' });
});

test('a final success the server refuses is shown as a failure: console, a best-effort failed report, a shell', async () => {
  const h = harness({}, { acked: false });
  const out = await runAgent({ cfg: parseAgentConfig(SERVER_CMDLINE), steps: h.steps, reporter: h.reporter, console: h.con, progressIntervalMs: 0 });
  assert.equal(out.ok, false);
  assert.equal(out.step, 'report');
  assert.match(out.reason!, /server refused the final report \(succeeded\)/);
  assert.deepEqual(h.finals.map((f) => f.e.state), ['succeeded', 'failed']);
  assert.equal(h.finals[1].max, 3, 'the failure report after a refusal is best effort');
  assert.ok(h.said.some((m) => /^WARN the server refused the final report/.test(m)), h.said.join('\n'));
  assert.ok(h.said.some((m) => /^WARN FAILED in step report/.test(m)));
  assert.equal(h.calls[h.calls.length - 1], 'after:shell', 'not the workflow\'s after action (reboot)');
});
