/**
 * Done-when 2 and 6: an entrypoint that prints and exits 0 gives `succeeded` with its output in the events, and
 * the machine's reboot (after=reboot) then boots from its local disk instead of provisioning again; one that
 * exits 3 gives `failed` with exit code 3. One lab, one machine, two workflows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabEnv, buildHttpdDisk, provision, stateEvents, logLines, labUnavailable, BOOT_FAILED } from '../helpers/lab-env.ts';

test('entrypoint exit 0 → succeeded with output, reboot boots the local disk; exit 3 → failed with code 3', { skip: labUnavailable(), timeout: 540_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 12 });
  t.after(() => env.destroy());
  await buildHttpdDisk(env);

  // --- exit 0, then the machine reboots (QEMU resets it: noReboot false) ---
  const first = await provision(env, {
    vm: { name: 'exit', noReboot: false }, n: 2,
    workflow: { image: 'httpd', after: 'reboot', entrypoint: ['/bin/sh', '-c', 'echo hello-from-the-entrypoint; echo to-stderr >&2; exit 0'] },
  });
  const ok = await env.waitWorkflow(first.wfId, (w) => w.state === 'succeeded', 240_000, first.vm);
  assert.equal(ok.exitCode, 0);
  assert.ok(logLines(ok).includes('hello-from-the-entrypoint'), `log events: ${JSON.stringify(logLines(ok))}`);
  assert.ok(logLines(ok).includes('to-stderr'), `log events: ${JSON.stringify(logLines(ok))}`);
  assert.deepEqual(stateEvents(ok).slice(-2), ['running', 'succeeded']);

  // done-when 6: after the reboot the firmware PXE-boots again, and ironboot's script boots the local disk
  const provisioned = first.vm.find(/ironboot: provisioning/);
  const kernelLoads = () => first.vm.lines.filter((l) => /artifacts\/vmlinuz/.test(l.text)).length;
  const loadsBefore = kernelLoads();
  const local = await first.vm.waitFor(/ironboot: .*booting from the local disk/, 120_000, { from: provisioned + 1 });
  assert.match(first.vm.joined(local), new RegExp(`workflow ${first.wfId} is succeeded`));
  await first.vm.waitFor(/Booting from SAN device 0x80/, 30_000, { from: local });
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(kernelLoads(), loadsBefore, 'the kernel was not downloaded again');
  assert.equal(first.vm.find(/ironboot: provisioning/, local), -1, 'no second provisioning script');
  const after = await env.workflow(first.wfId);
  assert.equal(after.state, 'succeeded', 'serving the local-boot script does not touch the finished workflow');
  const all = await env.api('GET', `/workflows?machine=${encodeURIComponent(first.mac)}`);
  assert.equal(all.length, 1);
  await first.vm.stop();

  // --- exit 3 on the same machine and disk ---
  const wf3 = await env.api('POST', '/workflows', { machine: first.mac, image: 'httpd', target: '/dev/vda', entrypoint: ['/bin/sh', '-c', 'echo about-to-fail; exit 3'] });
  const vm3 = env.startVm({ name: 'exit3', mac: first.mac, disk: env.diskOf('exit') });
  const failed = await env.waitWorkflow(wf3.id, (w) => w.state === 'failed', 240_000, vm3);
  assert.equal(failed.exitCode, 3);
  assert.match(failed.reason ?? '', /3/);
  assert.ok(stateEvents(failed).includes('running'), `the entrypoint ran: ${stateEvents(failed).join(' → ')}`);
  assert.ok(logLines(failed).includes('about-to-fail'));
  assert.equal(vm3.find(BOOT_FAILED), -1, vm3.tail());
});
