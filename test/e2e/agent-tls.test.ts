/**
 * QEMU (TCG), one VM: the agent over HTTPS (issue 15). `ironboot serve --tls-cert --tls-key --tls-ca` in a test
 * namespace with a CA and a server certificate made here with openssl; the initramfs is built with that CA
 * (/etc/ironboot/ca.pem); the VM boots it directly with ironboot.server=https://… and a boot token. The agent's
 * hello, events and the image download all go over HTTPS, verified against the CA; the workflow succeeds.
 * (A wrong CA is refused by the same client code in test/integration/tls.test.ts, without a second VM.)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Store } from '../../server/store/index.ts';
import { AgentTokens } from '../../server/workflows/tokens.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { buildArtifacts } from '../../init/build/index.ts';
import { testArtifacts } from '../helpers/agent-artifacts.ts';
import { makeBusyboxRootfs } from '../helpers/agent-rootfs.ts';
import { acquireQemuLock } from '../helpers/qemu-lock.ts';
import { Lab, netnsUnavailable, have } from '../helpers/netns.ts';
import { startVm, type Vm } from '../helpers/qemu.ts';
import { CLI, ROOT } from '../helpers/daemon.ts';

const skip = netnsUnavailable('qemu-system-x86_64', 'mke2fs', 'zstd', 'busybox', 'openssl')
  || (have('node') ? false : 'node is not on PATH');

const MAC = '52:54:00:84:00:10';
const SUBNET = `10.84.${(process.pid % 200) + 20}`;
const SERVER_IP = `${SUBNET}.1`;

let dir = '';
let lab: Lab | undefined;
let vm: Vm | undefined;
let releaseQemu: (() => Promise<void>) | undefined;
let workflowId = '';
let bootToken = '';
let initramfs = '';
let kernel = '';
let nsName = '';
const daemonLog: string[] = [];

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

function waitForLine(p: ChildProcess, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`daemon did not print ${re} within ${ms / 1000} s:\n${daemonLog.join('').slice(-3000)}`)), ms);
    const on = () => { if (re.test(daemonLog.join(''))) { clearTimeout(t); resolve(); } };
    p.stdout!.on('data', on);
    p.stderr!.on('data', on);
    p.on('exit', (code) => { clearTimeout(t); reject(new Error(`daemon exited (${code}):\n${daemonLog.join('').slice(-3000)}`)); });
  });
}

after(async () => {
  await vm?.kill();
  await lab?.destroy();
  await releaseQemu?.();
  if (dir && !process.env.IBA_KEEP) rmSync(dir, { recursive: true, force: true });
});

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'iba-tls-'));
  // --- the operator's PKI: a CA, and the server's certificate for its address ---
  const ca = join(dir, 'ca.pem');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', ca,
    '-days', '2', '-subj', '/CN=iba-tls-ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.csr'), '-subj', '/CN=ironboot']);
  writeFileSync(join(dir, 'server.ext'), `subjectAltName=IP:${SERVER_IP}\nextendedKeyUsage=serverAuth\n`);
  openssl(['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', ca, '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', join(dir, 'server.pem'),
    '-days', '2', '-extfile', join(dir, 'server.ext')]);

  // --- the initramfs with that CA (the kernel is the shared test build's) ---
  kernel = (await testArtifacts()).kernel;
  const art = await buildArtifacts({ outDir: join(dir, 'artifacts'), caFile: ca, zstdLevel: 3 });
  initramfs = art.initramfs;

  // --- a container disk and a workflow ---
  const dataDir = join(dir, 'data');
  mkdirSync(join(dataDir, 'images'), { recursive: true });
  const id = `ibtls${createHash('sha256').update(String(process.pid) + Date.now()).digest('hex').slice(0, 10)}`;
  const raw = join(dataDir, 'images', `${id}.ext4`);
  makeBusyboxRootfs(raw, { 'app/run.sh': '#!/bin/sh\necho "IBA-TLS-RUN ok"\nexit 0\n' }, 16);
  execFileSync('zstd', ['-q', '-10', '-f', raw, '-o', `${raw}.zst`]);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const rawBuf = readFileSync(raw);
  const zst = readFileSync(`${raw}.zst`);
  const store = Store.open(dataDir);
  try {
    store.machines.create({ mac: MAC, hostname: 'iba-tls' });
    store.images.insert({
      id, name: `iba-tls-${id}`, state: 'ready', format: 'ext4', rawSize: rawBuf.length, rawSha256: sha(rawBuf),
      compressedSize: zst.length, compressedSha256: sha(zst),
      config: { entrypoint: ['/app/run.sh'], cmd: [], env: ['PATH=/bin'], workingDir: '/app', user: null },
    });
    workflowId = new WorkflowService(store, pino({ level: 'silent' })).create({ mac: MAC, image: id, target: 'ram', after: 'poweroff' }).id;
    bootToken = new AgentTokens(store).issueBoot(workflowId, null); // udhcpd, not ironboot, picks the VM's address
  } finally {
    store.close();
  }

  // --- the namespace: bridge + tap, udhcpd, the daemon with TLS ---
  releaseQemu = await acquireQemuLock();
  lab = await Lab.create('ibs');
  const ns = lab.ns('tls');
  nsName = ns.name;
  ns.ip('link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
  ns.ip('addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0');
  ns.ip('link', 'set', 'br0', 'up');
  ns.ip('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
  ns.ip('link', 'set', 'tap0', 'master', 'br0');
  ns.ip('link', 'set', 'tap0', 'up');
  const conf = join(dir, 'udhcpd.conf');
  writeFileSync(join(dir, 'leases'), '');
  writeFileSync(conf, [`interface br0`, `start ${SUBNET}.100`, `end ${SUBNET}.150`, `lease_file ${join(dir, 'leases')}`,
    `pidfile ${join(dir, 'udhcpd.pid')}`, `opt router ${SERVER_IP}`, `opt subnet 255.255.255.0`, `opt lease 600`, ''].join('\n'));
  ns.spawn('busybox', ['udhcpd', '-f', conf]);
  const daemon = ns.spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--http-listen', `${SERVER_IP}:8080`,
    '--https-listen', `${SERVER_IP}:8443`, '--tls-cert', join(dir, 'server.pem'), '--tls-key', join(dir, 'server.key'), '--tls-ca', ca,
    '--artifacts-dir', join(dir, 'artifacts'), '--no-dhcp', '--no-tftp', '--no-build-artifacts', '--log-level', 'info'],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.stdout!.on('data', (d: Buffer) => daemonLog.push(d.toString()));
  daemon.stderr!.on('data', (d: Buffer) => daemonLog.push(d.toString()));
  await waitForLine(daemon, /serving HTTP.*HTTPS|"https":/, 60_000);
});

test('the agent in a VM: hello, events and the image over HTTPS verified against the CA in its initramfs', { skip, timeout: 280_000 }, async () => {
  vm = startVm({
    kernel, initrd: initramfs, netns: nsName, serialLog: join(dir, 'serial.log'), timeoutSec: 240,
    nics: [{ tap: 'tap0', mac: MAC }],
    append: `console=ttyS0,115200 panic=-1 ironboot.server=https://${SERVER_IP}:8443 ironboot.workflow=${workflowId} ironboot.token=${bootToken} ironboot.mac=${MAC}`,
  });
  const code = await Promise.race([vm.exited, vm.waitFor(/FAILED in step|Kernel panic/, 230_000).then(() => 'failed', () => 'timeout')]);
  const serial = vm.output;
  assert.ok(code !== 'timeout' && code !== 'failed', `the VM did not power off (${code}); console:\n${serial.split('\n').slice(-40).join('\n')}`);
  assert.match(serial, /HTTPS: verifying the server against the operator's CA \/etc\/ironboot\/ca\.pem/);
  assert.match(serial, new RegExp(`https://${SERVER_IP.replaceAll('.', '\\.')}:8443/images/\\S+\\.ext4\\.zst`), 'the image came over HTTPS');
  assert.match(serial, /IBA-TLS-RUN ok/);
  assert.match(serial, /final status acknowledged by the server/);
  const s = Store.open(join(dir, 'data'));
  try {
    const wf = s.workflows.get(workflowId)!;
    assert.equal(wf.state, 'succeeded', `${wf.state} (${wf.reason}); daemon log:\n${daemonLog.join('').slice(-2000)}`);
  } finally {
    s.close();
  }
});
