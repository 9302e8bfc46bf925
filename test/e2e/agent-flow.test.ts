/**
 * QEMU (TCG): the whole agent flow against a running `ironboot serve`, all inside a test network namespace
 * (bridge + tap; busybox udhcpd hands the VM its address, the daemon runs with --no-dhcp --no-tftp).
 *
 *   store: a machine, a ready container disk (busybox ext4 made with mke2fs -d, zstd) and a workflow
 *          (target /dev/vda, after: poweroff); the VM boots the built kernel + initramfs directly with
 *          ironboot.server= ironboot.workflow= ironboot.token= ironboot.mac= on its cmdline.
 *
 * Checks: hello, stream, verify, mount, run, exit code and log lines recorded as events in the store; the
 * VM powers off only after the final status reached the server; the disk holds a clean ext4 grown to the
 * disk's size (resize2fs). IBA_KEEP=1 keeps the serial log, the data dir and the disk in /tmp/iba-flow-*.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Store } from '../../server/store/index.ts';
import { AgentTokens } from '../../server/workflows/tokens.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { testArtifacts } from '../helpers/agent-artifacts.ts';
import { makeBusyboxRootfs } from '../helpers/agent-rootfs.ts';
import { Lab, netnsUnavailable, have } from '../helpers/netns.ts';
import { startVm, type Vm } from '../helpers/qemu.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const skip = netnsUnavailable('qemu-system-x86_64', 'mke2fs', 'zstd', 'busybox', 'e2fsck', 'debugfs')
  || (have('node') ? false : 'node is not on PATH');

const MAC = '52:54:00:83:00:10';
const MAC_RAM = '52:54:00:83:00:11';
const SUBNET = `10.83.${(process.pid % 200) + 20}`;
const SERVER_IP = `${SUBNET}.1`;
const DISK_BYTES = 64 << 20;

const RUN_SH = `#!/bin/sh
[ "$1" = fail ] && { echo "IBA-RUN failing with $2 greeting=$GREETING"; exit $2; }
echo "IBA-RUN args=$* cwd=$(pwd) uid=$(id -u) gid=$(id -g) greeting=$GREETING host=$(cat /etc/hostname) dns=$(grep -c nameserver /etc/resolv.conf)"
echo "IBA-ERR something on stderr" >&2
for i in 1 2 3; do echo "IBA-LINE $i"; done
exit 0
`;

let dir = '';
let lab: Lab | undefined;
const vms: Vm[] = [];
let dataDir: string;
let rawBuf: Buffer;
let art: Awaited<ReturnType<typeof testArtifacts>>;
const wfs: Record<string, { id: string; token: string }> = {};
let ns: ReturnType<Lab['ns']>;
const daemonLog: string[] = [];

after(async () => {
  for (const vm of vms) await vm.kill();
  await lab?.destroy();
  if (dir && !process.env.IBA_KEEP) rmSync(dir, { recursive: true, force: true });
});

function waitForLine(p: ChildProcess, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`daemon did not print ${re} within ${ms / 1000} s:\n${buf.slice(-3000)}`)), ms);
    const on = (d: Buffer) => { buf += d.toString(); if (re.test(buf)) { clearTimeout(t); resolve(); } };
    p.stdout!.on('data', on);
    p.stderr!.on('data', on);
    p.on('exit', (code) => { clearTimeout(t); reject(new Error(`daemon exited (${code}):\n${buf.slice(-3000)}`)); });
  });
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'iba-flow-'));
  art = await testArtifacts();

  // --- the container disk, as the image builder would leave it ---
  dataDir = join(dir, 'data');
  mkdirSync(join(dataDir, 'images'), { recursive: true });
  const id = `iba${createHash('sha256').update(String(process.pid) + Date.now()).digest('hex').slice(0, 12)}`;
  const raw = join(dataDir, 'images', `${id}.ext4`);
  makeBusyboxRootfs(raw, { 'app/run.sh': RUN_SH }, 24);
  execFileSync('zstd', ['-q', '-10', '-f', raw, '-o', `${raw}.zst`]);
  rawBuf = readFileSync(raw);
  const zst = readFileSync(`${raw}.zst`);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  const store = Store.open(dataDir);
  try {
    store.machines.create({ mac: MAC, hostname: 'iba-node1' });
    store.machines.create({ mac: MAC_RAM, hostname: 'iba-node2' });
    store.images.insert({
      id, name: `iba-test-${id}`, state: 'ready', format: 'ext4', rawSize: rawBuf.length, rawSha256: sha(rawBuf),
      compressedSize: zst.length, compressedSha256: sha(zst),
      config: { entrypoint: ['/app/run.sh'], cmd: ['hello', 'world'], env: ['GREETING=hi', 'PATH=/bin'], workingDir: '/app', user: 'app' },
    });
    const svc = new WorkflowService(store, pino({ level: 'silent' }));
    const wf = svc.create({ mac: MAC, image: id, target: '/dev/vda', after: 'poweroff' });
    // as the boot route does under --boot-script-auth none (udhcpd, not ironboot, picks the VM's address): a boot
    // token not bound to an address; the agent's hello exchanges it for a session token bound to the VM's address
    const tokens = new AgentTokens(store);
    wfs[MAC] = { id: wf.id, token: tokens.issueBoot(wf.id, null) };
    const wf2 = svc.create({ mac: MAC_RAM, image: id, target: 'ram', after: 'poweroff', args: ['fail', '3'], env: { GREETING: 'from-the-workflow' } });
    wfs[MAC_RAM] = { id: wf2.id, token: tokens.issueBoot(wf2.id, null) };
  } finally {
    store.close();
  }

  // --- the namespace: bridge + tap, udhcpd, the daemon ---
  lab = await Lab.create('iba');
  ns = lab.ns('flow');
  ns.ip('link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  ns.ip('addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0');
  ns.ip('link', 'set', 'br0', 'up');
  for (const tap of ['tap0', 'tap1']) {
    ns.ip('tuntap', 'add', 'dev', tap, 'mode', 'tap');
    ns.ip('link', 'set', tap, 'master', 'br0');
    ns.ip('link', 'set', tap, 'up');
  }
  const udhcpdConf = join(dir, 'udhcpd.conf');
  writeFileSync(join(dir, 'leases'), '');
  writeFileSync(udhcpdConf, [`interface br0`, `start ${SUBNET}.100`, `end ${SUBNET}.150`, `lease_file ${join(dir, 'leases')}`,
    `pidfile ${join(dir, 'udhcpd.pid')}`, `opt router ${SERVER_IP}`, `opt subnet 255.255.255.0`, `opt dns ${SERVER_IP}`, `opt lease 600`, ''].join('\n'));
  ns.spawn('busybox', ['udhcpd', '-f', udhcpdConf]);
  const daemon = ns.spawn('node', [join(ROOT, 'server/cli/ironboot.mjs'), 'serve', '--data-dir', dataDir,
    '--http-listen', `${SERVER_IP}:8080`, '--no-dhcp', '--no-tftp', '--no-build-artifacts', '--log-level', 'info'],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.stdout!.on('data', (d: Buffer) => daemonLog.push(d.toString()));
  daemon.stderr!.on('data', (d: Buffer) => daemonLog.push(d.toString()));
  await waitForLine(daemon, /serving HTTP/, 60_000);
});

test('full agent flow: hello, stream, verify, mount, run, exit code and logs in the store', { skip, timeout: 280_000 }, async () => {
  // --- the machine: a blank 64 MiB virtio disk ---
  const disk = join(dir, 'vda.img');
  const fd = openSync(disk, 'w'); ftruncateSync(fd, DISK_BYTES); closeSync(fd);
  const { id: workflowId, token } = wfs[MAC];
  const vm = startVm({
    kernel: art.kernel, initrd: art.initramfs, netns: ns.name, serialLog: join(dir, 'serial.log'), timeoutSec: 240,
    disks: [{ file: disk, bus: 'virtio' }], nics: [{ tap: 'tap0', mac: MAC }],
    append: `console=ttyS0,115200 panic=-1 ironboot.server=http://${SERVER_IP}:8080 ironboot.workflow=${workflowId} ironboot.token=${token} ironboot.mac=${MAC}`,
  });
  vms.push(vm);
  // Ends with poweroff; a failure drops to a shell (fail fast instead of waiting for the timeout).
  const code = await Promise.race([vm.exited, vm.waitFor(/FAILED in step|Kernel panic/, 230_000).then(() => 'failed', () => 'timeout')]);
  const serial = vm.output;
  assert.ok(code !== 'timeout' && code !== 'failed', `the VM did not power off (${code}); console:\n${serial.split('\n').slice(-40).join('\n')}`);
  assert.match(serial, /final status acknowledged by the server[\s\S]*poweroff now/, 'poweroff only after the final report was acknowledged');
  assert.match(serial, /IBA-RUN args=hello world cwd=\/app uid=1000 gid=1000 greeting=hi host=iba-node1 dns=1/);
  assert.match(serial, /sha256 ok/);

  // --- what the store recorded ---
  const s2 = Store.open(dataDir);
  try {
    const wf = s2.workflows.get(workflowId)!;
    assert.equal(wf.state, 'succeeded', `workflow state ${wf.state} (${wf.reason}); daemon log:\n${daemonLog.join('').slice(-2000)}`);
    assert.equal(wf.exitCode, 0);
    const events = s2.events.list(workflowId);
    const states = events.filter((e) => e.kind === 'state').map((e) => e.state);
    for (const st of ['agent-online', 'streaming', 'verifying', 'mounted', 'running', 'succeeded']) assert.ok(states.includes(st), `state ${st} recorded (${states.join(' → ')})`);
    assert.ok(states.indexOf('streaming') < states.indexOf('verifying') && states.indexOf('verifying') < states.indexOf('mounted')
      && states.indexOf('mounted') < states.indexOf('running') && states.indexOf('running') < states.indexOf('succeeded'), states.join(' → '));
    const online = events.find((e) => e.state === 'agent-online')!;
    const inv = (online.payload as { inventory?: { disks?: Array<{ name: string; sizeBytes: number }>; nics?: Array<{ mac: string; driver?: string }> } }).inventory;
    assert.ok(inv?.disks?.some((d) => d.name === 'vda' && d.sizeBytes === DISK_BYTES), 'inventory lists the disk');
    assert.ok(inv?.nics?.some((n) => n.mac === MAC && n.driver === 'virtio_net'), 'inventory lists the NIC and its driver');
    const progress = events.filter((e) => e.kind === 'progress');
    assert.ok(progress.some((e) => e.bytesDone === rawBuf.length && e.bytesTotal === rawBuf.length), 'progress reached the image size');
    const logs = events.filter((e) => e.kind === 'log').flatMap((e) => (e.payload as { lines: Array<{ stream: string; line: string }> }).lines);
    assert.ok(logs.some((l) => l.stream === 'stdout' && /IBA-RUN args=hello world/.test(l.line)));
    assert.ok(logs.some((l) => l.stream === 'stderr' && l.line === 'IBA-ERR something on stderr'));
    assert.deepEqual(logs.filter((l) => /^IBA-LINE/.test(l.line)).map((l) => l.line), ['IBA-LINE 1', 'IBA-LINE 2', 'IBA-LINE 3']);
    const final = events.find((e) => e.state === 'succeeded')!;
    assert.equal((final.payload as { exitCode?: number }).exitCode, 0);
  } finally {
    s2.close();
  }

  // --- the disk: a clean ext4, grown to the whole disk, with the image's files ---
  execFileSync('e2fsck', ['-fn', disk], { stdio: 'pipe' });
  const dump = execFileSync('dumpe2fs', ['-h', disk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const blocks = Number(/Block count:\s+(\d+)/.exec(dump)![1]) * Number(/Block size:\s+(\d+)/.exec(dump)![1]);
  assert.equal(blocks, DISK_BYTES, 'resize2fs grew the filesystem to the disk');
  assert.equal(execFileSync('debugfs', ['-R', 'cat /app/run.sh', disk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }), RUN_SH);
});

test('ram target, workflow overrides, a failing entrypoint: failed with its exit code, then a shell (no poweroff)', { skip, timeout: 240_000 }, async () => {
  const { id: workflowId, token } = wfs[MAC_RAM];
  const vm = startVm({
    kernel: art.kernel, initrd: art.initramfs, netns: ns.name, serialLog: join(dir, 'serial-ram.log'), timeoutSec: 200,
    nics: [{ tap: 'tap1', mac: MAC_RAM }],
    append: `console=ttyS0,115200 panic=-1 ironboot.server=http://${SERVER_IP}:8080 ironboot.workflow=${workflowId} ironboot.token=${token} ironboot.mac=${MAC_RAM}`,
  });
  vms.push(vm);
  await vm.waitFor(/starting a shell on the console/, 190_000);
  const serial = vm.output;
  assert.match(serial, /IBA-RUN failing with 3 greeting=from-the-workflow/);
  assert.match(serial, /\(ext4\) at \/mnt/);
  assert.match(serial, /FAILED in step run: entrypoint exited with code 3/);
  assert.doesNotMatch(serial, /poweroff now/);
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(vm.proc.exitCode, null, 'the machine stays up with a shell');
  const s = Store.open(dataDir);
  try {
    const wf = s.workflows.get(workflowId)!;
    assert.equal(wf.state, 'failed');
    assert.equal(wf.exitCode, 3);
    assert.match(wf.reason ?? '', /exited with code 3/);
    const states = s.events.list(workflowId).filter((e) => e.kind === 'state').map((e) => e.state);
    assert.deepEqual(states.slice(-5), ['streaming', 'verifying', 'mounted', 'running', 'failed']);
  } finally {
    s.close();
  }
});
