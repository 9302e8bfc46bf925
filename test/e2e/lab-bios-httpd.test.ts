/**
 * Done-when 1: BIOS PXE boot with virtio-net — firmware PXE (the NIC's iPXE ROM) → ironboot DHCP → per-MAC iPXE
 * script → kernel + initramfs → agent → the busybox httpd container disk (built from an OCI image pulled from a
 * registry inside the lab) streamed to the VM's disk → running; the test fetches the page from the VM's address.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabEnv, buildHttpdDisk, provision, stateEvents, labUnavailable, HTTPD_PAGE, BOOT_FAILED } from '../helpers/lab-env.ts';

test('BIOS + virtio-net: the httpd container disk runs and serves its page', { skip: labUnavailable(), timeout: 420_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 11 });
  t.after(() => env.destroy());
  await buildHttpdDisk(env);
  const { vm, wfId, address } = await provision(env, { vm: { name: 'bios', nic: 'virtio', firmware: 'bios' }, n: 1, workflow: { image: 'httpd' } });

  const wf = await env.waitWorkflow(wfId, (w) => w.state === 'running', 240_000, vm);
  assert.equal(stateEvents(wf)[0], 'pending');
  for (const s of ['booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running']) {
    assert.ok(stateEvents(wf).includes(s), `state ${s} in ${stateEvents(wf).join(' → ')}`);
  }
  // the chain really went through ironboot's script and kernel, on the serial console
  assert.ok(vm.find(/ironboot: provisioning/) >= 0, vm.tail());
  assert.ok(vm.find(/Linux version/) >= 0, vm.tail());
  assert.equal(vm.find(BOOT_FAILED), -1, vm.tail());

  let page: { status: number; text: string } = { status: 0, text: '' };
  for (let i = 0; i < 20 && page.status !== 200; i++) {
    page = await env.request(`${address}:80`, 'GET', '/').catch((e) => ({ status: 0, text: String(e) }));
    if (page.status !== 200) await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(page.status, 200, page.text);
  assert.equal(page.text, HTTPD_PAGE);
});
