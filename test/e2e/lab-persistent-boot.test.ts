/**
 * Issue 10 part 1: persistent (diskful) boot in the QEMU lab. One machine is provisioned with `mode: persistent`,
 * `after: reboot` (QEMU runs with -no-reboot, so the reboot ends the VM), and the test power-cycles it twice by starting
 * QEMU again on the same disk file: each time the machine netboots ironboot's kernel + initramfs, the agent checks the
 * marker on the disk, checks in, and runs the entrypoint from that disk (a counter the entrypoint keeps on the disk goes
 * 1 → 2 → 3), while the container disk is streamed only once (ironboot_image_bytes_sent_total). Then the disk's marker
 * is replaced by another machine's (as if the disk had been moved between machines): the boot is refused, the
 * entrypoint does not run, and the machine reports why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { openSync, readSync, writeSync, closeSync } from 'node:fs';
import { LabEnv, buildHttpdDisk, provision, logLines, labUnavailable, BOOT_FAILED, type LabVm } from '../helpers/lab-env.ts';
import { decodeMarker, encodeMarker } from '../../init/agent/steps/marker.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ENTRYPOINT = ['/bin/sh', '-c', 'n=$(cat /boots 2>/dev/null || echo 0); n=$((n+1)); echo $n > /boots; /bin/busybox sync; echo persistent-entrypoint-run=$n'];

async function exited(vm: LabVm, timeoutMs: number): Promise<void> {
  for (let t = 0; t < timeoutMs; t += 250) {
    if (vm.exited) return;
    await sleep(250);
  }
  throw new Error(`VM ${vm.name} did not reboot (exit) within ${timeoutMs / 1000} s\n${vm.tail()}`);
}

const bootEvents = (wf: any) => (wf.events ?? []).filter((e: any) => e.kind === 'boot');

test('persistent boot: provision once, power-cycle twice, the entrypoint runs from the local disk each time; a foreign marker is refused', { skip: labUnavailable(), timeout: 900_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 19 });
  t.after(() => env.destroy());
  const image = await buildHttpdDisk(env);
  const imageBytes = async (): Promise<number> => {
    const r = await env.request(`${env.address}:8080`, 'GET', '/metrics');
    const m = /^ironboot_image_bytes_sent_total\{kind="zst"\} (\d+)/m.exec(r.text);
    return m ? Number(m[1]) : 0;
  };
  assert.equal(await imageBytes(), 0);

  // --- provisioning: stream, verify, marker, entrypoint (run 1), reboot ---
  const first = await provision(env, {
    vm: { name: 'p1', noReboot: true }, n: 3,
    workflow: { image: 'httpd', after: 'reboot', mode: 'persistent', entrypoint: ENTRYPOINT },
  });
  const ok = await env.waitWorkflow(first.wfId, (w) => w.state === 'succeeded', 300_000, first.vm);
  assert.ok(logLines(ok).includes('persistent-entrypoint-run=1'), JSON.stringify(logLines(ok)));
  assert.ok(ok.events.some((e: any) => /persistent-boot marker written to \/dev\/vda/.test(e.message ?? '')), 'the marker was written');
  await exited(first.vm, 60_000);
  const streamed = await imageBytes();
  assert.equal(streamed, image.compressedSize, 'the compressed disk was sent once, whole');
  const disk = env.diskOf('p1');

  // --- two power cycles: each boot runs the entrypoint from the disk, nothing is streamed ---
  for (const run of [2, 3]) {
    const vm = env.startVm({ name: `p${run}`, mac: first.mac, disk });
    const script = await vm.waitFor(/ironboot: persistent boot of/, 180_000, { failOn: BOOT_FAILED });
    await vm.waitFor(new RegExp(`persistent-entrypoint-run=${run}\\b`), 240_000, { failOn: new RegExp(`persistent boot: step|${BOOT_FAILED.source}`) });
    assert.ok(vm.text(script).replace(/\n/g, '').includes(`the disk of workflow ${first.wfId}`), 'the persistent script names the workflow (iPXE wraps at 80 columns)');
    await exited(vm, 60_000);   // after=reboot: the machine reboots again
    const wf = await env.workflow(first.wfId);
    assert.equal(wf.state, 'succeeded', 'the workflow stays succeeded');
    const boots = bootEvents(wf);
    assert.deepEqual(boots.map((e: any) => `${e.payload.phase}:${e.payload.boot}`).slice(-2), [`started:${run - 1}`, `exited:${run - 1}`]);
    assert.equal(boots[boots.length - 1].payload.exitCode, 0);
    assert.equal(vm.find(/ironboot: provisioning/), -1, 'no provisioning script');
    assert.equal(await imageBytes(), streamed, `boot ${run}: no image bytes sent`);
  }
  const all = await env.api('GET', `/workflows?machine=${encodeURIComponent(first.mac)}`);
  assert.equal(all.length, 1, 'still one workflow');

  // --- another machine's disk: a valid marker of another workflow and MAC ---
  const fd = openSync(disk, 'r+');
  const sector = Buffer.alloc(512);
  readSync(fd, sector, 0, 512, 0);
  const mine = decodeMarker(sector);
  assert.ok(mine.ok, 'the disk carries the marker');
  const otherWf = randomUUID();
  writeSync(fd, encodeMarker({ ...mine.marker, workflowId: otherWf, mac: '52:54:00:99:99:99', token: randomBytes(32).toString('base64url') }), 0, 512, 0);
  closeSync(fd);
  const vm4 = env.startVm({ name: 'p4', mac: first.mac, disk });
  await vm4.waitFor(new RegExp(`persistent boot: step marker failed: .*${otherWf.slice(0, 8)}`), 240_000, { failOn: BOOT_FAILED });
  await vm4.waitFor(/reported to .*: refused/, 60_000);
  const wf = await env.workflow(first.wfId);
  const refused = bootEvents(wf).filter((e: any) => e.payload.phase === 'refused');
  assert.equal(refused.length, 1, JSON.stringify(bootEvents(wf)));
  assert.match(refused[0].payload.reason, new RegExp(`holds workflow ${otherWf}.*written for 52:54:00:99:99:99`));
  assert.equal(refused[0].payload.verified, false, 'another disk\'s token does not authenticate this workflow');
  assert.equal(vm4.find(/persistent-entrypoint-run=/), -1, 'the entrypoint did not run');
  assert.equal(vm4.find(/mounted \/dev\/vda/), -1, 'the disk was not mounted');
  assert.equal(bootEvents(wf).filter((e: any) => e.payload.phase === 'started').length, 2);
  assert.equal(wf.state, 'succeeded');
  assert.equal(await imageBytes(), streamed);
});
