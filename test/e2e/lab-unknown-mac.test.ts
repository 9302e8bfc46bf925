/**
 * Done-when 3: a MAC that is not registered gets no DHCP answer (reservation mode) and never boots ironboot's
 * kernel. A registered machine on the same lab is served, so the silence is about the MAC, not a dead server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabEnv, labUnavailable } from '../helpers/lab-env.ts';

test('an unregistered MAC gets no DHCP answer and never boots the kernel', { skip: labUnavailable(), timeout: 300_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 13 });
  t.after(() => env.destroy());

  const stranger = env.startVm({ name: 'stranger', mac: '52:54:00:77:13:99', diskBytes: 0 });
  // iPXE's DHCP gives up ("No configuration methods succeeded"), then the ROM hands back to the BIOS
  await stranger.waitFor(/No more network devices|No bootable device|Booting from Hard Disk|No configuration methods succeeded/, 150_000);
  const configuring = stranger.find(/Configuring \(net0/);
  assert.ok(configuring >= 0, stranger.tail());
  // ("Configuring … ok" alone is IPv6 from the lab's router advertisement; a DHCPv4 answer prints the address)
  assert.doesNotMatch(stranger.text(configuring), /net0: \d+\.\d+\.\d+\.\d+\//, 'iPXE got an IPv4 address by DHCP');
  assert.equal(stranger.find(/Filename: |ironboot:|Linux version|artifacts\/vmlinuz/), -1, stranger.tail());
  await stranger.stop();

  // the same lab answers a registered machine at once (it reaches ironboot's script, which needs no kernel here)
  await env.registerMachine('52:54:00:77:13:01', env.hostAddress(1));
  const known = env.startVm({ name: 'known', mac: '52:54:00:77:13:01', diskBytes: 0 });
  await known.waitFor(/ironboot: .*booting from the local disk/, 90_000);
  assert.match(known.text(), new RegExp(`net0: ${env.hostAddress(1).replaceAll('.', '\\.')}/`));
});
