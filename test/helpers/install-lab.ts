/**
 * One bootable-OS install in the QEMU lab, checked end to end (test/e2e/lab-install.test.ts; timed by
 * test/bench/boot.ts --install): a Debian built by debootstrap is imported, installed with mode install and
 * after=reboot, and the VM started again on its disk boots it through GRUB to the login prompt of its hostname, on
 * the static address it was given.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { LabEnv, BOOT_FAILED, stateEvents, type LabVm } from './lab-env.ts';
import { debianImage } from './debian-image.ts';
import { macForName } from '../../server/lab/qemu.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@lab';

async function exited(vm: LabVm, timeoutMs: number): Promise<void> {
  for (let t = 0; t < timeoutMs; t += 250) {
    if (vm.exited) return;
    await sleep(250);
  }
  throw new Error(`VM ${vm.name} did not reboot (exit) within ${timeoutMs / 1000} s\n${vm.tail()}`);
}

const count = (s: string, re: RegExp) => (s.match(new RegExp(re.source, 'g')) ?? []).length;

export interface InstallTimings { firmware: string; imageSeconds: number; installSeconds: number; rebootToLoginSeconds: number; totalSeconds: number }

/** One machine: install, reboot from its own disk, check. Returns the timings (test/bench/boot.ts --install prints them). */
export async function installAndBoot(firmware: 'bios' | 'uefi', octet: number, log: (m: string) => void = () => {}, signal?: AbortSignal): Promise<InstallTimings> {
  const img = await debianImage(log);
  const env = await LabEnv.start({ octet, nsPrefix: 'ibo', net16: '10.91' });
  // a test that times out is not awaited to its end: tear the lab down when its signal fires
  const onAbort = () => { void env.destroy(); };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const t0 = Date.now();
    await env.api('POST', '/images', { name: 'debian-install', source: { type: 'docker-archive', path: img.archive } }, [200, 202]);
    let image: any;
    for (let t = 0; t < 180_000; t += 500) {
      image = await env.api('GET', '/images/debian-install', undefined, [200, 404]);
      if (image?.state === 'ready' || image?.state === 'failed') break;
      await sleep(500);
    }
    assert.equal(image?.state, 'ready', `image build: ${image?.error}`);
    const imageSeconds = (Date.now() - t0) / 1000;

    const name = `inst-${firmware}`;
    const mac = macForName(`${env.ns}/${name}`);
    const address = env.hostAddress(7);
    const hostname = `node-${firmware}`;
    await env.registerMachine(mac, address, { hostname, sshKeys: [KEY] });
    await env.api('PATCH', `/machines/${mac}`, { ipv4: { address, prefix: env.prefix, gateway: env.address, dns: [env.address] } });

    // bad input first: a too-small target is refused at creation, nothing is written
    const small = await env.request(`${env.address}:8080`, 'POST', '/api/v1/workflows',
      { machine: mac, image: 'debian-install', target: '/dev/vda', mode: 'install', targetSize: 64 << 20 }, { authorization: `Bearer ${env.token}` });
    assert.equal(small.status, 400, small.text);
    assert.equal(small.body.field, 'targetSize');

    const tInstall = Date.now();
    const wf = await env.api('POST', '/workflows', { machine: mac, image: 'debian-install', target: '/dev/vda', mode: 'install', after: 'reboot', kernelArgs: 'systemd.show_status=0' });
    const vm1 = env.startVm({ name, mac, firmware, diskBytes: 1 << 30, diskBoot: true, noReboot: true, memoryMb: 768 });
    const done = await env.waitWorkflow(wf.id, (w) => w.state === 'succeeded', 360_000, vm1);
    assert.deepEqual(stateEvents(done).filter((s) => ['streaming', 'verifying', 'mounted', 'running', 'succeeded'].includes(s)),
      ['streaming', 'verifying', 'mounted', 'running', 'succeeded']);
    const msgs = done.events.map((e: any) => e.message ?? '').join('\n');
    assert.match(msgs, /first-boot data written: .*\/etc\/hostname.*\/etc\/systemd\/network\/10-ironboot\.network.*\/var\/lib\/cloud\/seed\/nocloud\/meta-data.*\/root\/\.ssh\/authorized_keys/);
    assert.match(msgs, /installed image debian-install on \/dev\/vda \(kernel \/boot\/vmlinuz-/);
    await exited(vm1, 90_000);
    const installSeconds = (Date.now() - tInstall) / 1000;
    const daemonBefore = env.daemonLog().length;
    const kernelsBefore = count(env.daemonLog(), /\/artifacts\/vmlinuz/);
    assert.ok(kernelsBefore >= 1, 'the daemon\'s log shows the install boot fetching ironboot\'s kernel');

    // --- the second boot: from the machine's own disk ---
    const tBoot = Date.now();
    const vm2 = env.startVm({ name: `${name}-2`, mac, firmware, disk: env.diskOf(name), diskBoot: true, noReboot: true, memoryMb: 768 });
    // (a UEFI VM starts with fresh NVRAM here: OVMF finds the disk by its bootindex and boots \EFI\BOOT\BOOTX64.EFI)
    const local = await vm2.waitFor(/booting from the local disk/, 180_000, { failOn: BOOT_FAILED });
    // UEFI: iPXE's exit hands back to OVMF, which may try its other network boot options ("No more network devices")
    // before the disk; only a firmware with nothing left to boot, or a panic, ends this boot
    const diskBootFailed = /Kernel panic|No bootable device|Boot failed|ironboot: could not load the kernel/;
    await vm2.waitFor(/ironboot: booting \/boot\/vmlinuz-.* from the local disk/, 180_000, { from: local, failOn: diskBootFailed });
    const kernel = await vm2.waitFor(/Linux version \d+\.\d+\.\d+-\d+-amd64 \(debian-kernel@lists\.debian\.org\)/, 60_000, { failOn: diskBootFailed });
    assert.match(vm2.text(kernel), new RegExp(`Command line: .*root=PARTUUID=[0-9a-f-]{36} ro .*console=ttyS0.*systemd\\.show_status=0`), 'GRUB passed the workflow\'s kernel arguments');
    const daemonAtGrub = env.daemonLog().length;
    // getty's banner names the host; its prompt "HOST login: " has no newline, so it is read off the unfinished line
    await vm2.waitFor(new RegExp(`^Debian GNU/Linux 12 ${hostname} ttyS0`), 240_000, { from: kernel, failOn: /Kernel panic|emergency mode|Give root password/ });
    for (let t = 0; !vm2.text(kernel).includes(`${hostname} login:`); t += 100) {
      if (t > 30_000) throw new Error(`no "${hostname} login:" prompt after the banner\n${vm2.tail()}`);
      await sleep(100);
    }
    const rebootToLoginSeconds = (Date.now() - tBoot) / 1000;
    assert.equal(vm2.find(/ironboot: provisioning|ironboot\[\d/), -1, 'no provisioning, no agent on the second boot');

    // the static address networkd was given: ping from the lab namespace, the neighbour entry has the machine's MAC
    let pinged = false;
    for (let i = 0; i < 60 && !pinged; i++) {
      pinged = spawnSync('ip', ['netns', 'exec', env.ns, 'busybox', 'ping', '-c1', '-W1', address], { stdio: 'ignore' }).status === 0;
      if (!pinged) await sleep(1000);
    }
    assert.ok(pinged, `${address} answers ping\n${vm2.tail()}`);
    const neigh = spawnSync('ip', ['netns', 'exec', env.ns, 'ip', 'neigh', 'show', address], { encoding: 'utf8' }).stdout;
    assert.match(neigh, new RegExp(mac), neigh);
    const after = env.daemonLog().slice(daemonAtGrub);
    assert.equal(count(after, new RegExp(`dhcp: \\w+ from ${mac}`)), 0, 'Debian asked no DHCP: its address is the static one');
    assert.equal(count(env.daemonLog(), /\/artifacts\/vmlinuz/), kernelsBefore, 'the daemon served no second kernel');
    assert.match(env.daemonLog().slice(daemonBefore), /boot script local-boot/, 'the second netboot got the local-boot script');

    // the metadata route: the lab's own address is no machine
    const md = await env.request(`${env.address}:8080`, 'GET', '/2009-04-04/meta-data/instance-id');
    assert.equal(md.status, 404);
    const all = await env.api('GET', `/workflows?machine=${encodeURIComponent(mac)}`);
    assert.equal(all.length, 1);
    assert.equal(all[0].state, 'succeeded');
    log(`${firmware}: image ${imageSeconds.toFixed(1)} s, install (PXE → succeeded → reboot) ${installSeconds.toFixed(1)} s, reboot → login ${rebootToLoginSeconds.toFixed(1)} s`);
    return { firmware, imageSeconds, installSeconds, rebootToLoginSeconds, totalSeconds: installSeconds + rebootToLoginSeconds };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await env.destroy();
  }
}

