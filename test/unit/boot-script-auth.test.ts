import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideBootScriptAuth, type BootScriptAuthInput } from '../../server/boot/script-auth.ts';

const base: BootScriptAuthInput = { mac: '52:54:00:00:00:01', sourceIp: '10.0.0.5', dhcpLeases: false, mode: 'ip', reservedIp: null, leasedIps: [] };

test('who gets a provisioning script (it carries a boot token): table', () => {
  const cases: [Partial<BootScriptAuthInput>, boolean, string | null, string, RegExp][] = [
    // ironboot leases the addresses: only its lease or reservation, whatever --boot-script-auth says
    [{ dhcpLeases: true, reservedIp: '10.0.0.5' }, true, '10.0.0.5', 'dhcp-lease', /reserved/],
    [{ dhcpLeases: true, leasedIps: ['10.0.0.5'] }, true, '10.0.0.5', 'dhcp-lease', /leased/],
    [{ dhcpLeases: true, reservedIp: '10.0.0.9' }, false, null, 'dhcp-lease', /10\.0\.0\.5 is not the address of .* \(10\.0\.0\.9\)/],
    [{ dhcpLeases: true, mode: 'none', reservedIp: '10.0.0.9' }, false, null, 'dhcp-lease', /not the address/],
    [{ dhcpLeases: true, mode: 'none' }, false, null, 'dhcp-lease', /no lease or reservation/],
    // otherwise --boot-script-auth ip: the reserved address
    [{ reservedIp: '10.0.0.5' }, true, '10.0.0.5', 'reserved-ip', /reserved/],
    [{ reservedIp: '10.0.0.6' }, false, null, 'reserved-ip', /not the address/],
    [{}, false, null, 'reserved-ip', /no reserved address .*--ip .*--boot-script-auth none/],
    // --boot-script-auth none: anyone, the token not bound to an address
    [{ mode: 'none' }, true, null, 'none', /any address/],
    [{ mode: 'none', reservedIp: '10.0.0.6' }, true, null, 'none', /any address/],
  ];
  for (const [over, allow, bindIp, rule, reason] of cases) {
    const d = decideBootScriptAuth({ ...base, ...over });
    const name = JSON.stringify(over);
    assert.equal(d.allow, allow, name);
    assert.equal(d.bindIp, bindIp, name);
    assert.equal(d.rule, rule, name);
    assert.match(d.reason, reason, name);
  }
});
