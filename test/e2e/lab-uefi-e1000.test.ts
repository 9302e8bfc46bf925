/**
 * Done-when 5: UEFI boot (OVMF from Debian's ovmf package) with an e1000 NIC reaches `running` as in the BIOS
 * test, and the page is fetched from the VM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { LabEnv, buildHttpdDisk, provision, stateEvents, labUnavailable, HTTPD_PAGE } from '../helpers/lab-env.ts';
import { OVMF_CODE } from '../../server/lab/qemu.ts';

const skip = labUnavailable() || (existsSync(OVMF_CODE) ? false : `${OVMF_CODE} missing (apt-get install ovmf)`);

test('UEFI (OVMF) + e1000: the httpd container disk reaches running', { skip, timeout: 480_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 15 });
  t.after(() => env.destroy());
  await buildHttpdDisk(env);
  const { vm, wfId, address } = await provision(env, { vm: { name: 'uefi', nic: 'e1000', firmware: 'uefi' }, n: 5, workflow: { image: 'httpd' } });
  const wf = await env.waitWorkflow(wfId, (w) => w.state === 'running', 300_000, vm);
  assert.ok(stateEvents(wf).includes('verifying'));
  assert.ok(vm.find(/ironboot: provisioning .*efi firmware/) >= 0, vm.tail());
  assert.ok(vm.find(/EFI stub: Loaded initrd from command line option/) >= 0, vm.tail());
  let page = { status: 0, text: '' };
  for (let i = 0; i < 20 && page.status !== 200; i++) {
    page = await env.request(`${address}:80`, 'GET', '/').catch((e) => ({ status: 0, text: String(e) }));
    if (page.status !== 200) await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(page.status, 200, page.text);
  assert.equal(page.text, HTTPD_PAGE);
});
