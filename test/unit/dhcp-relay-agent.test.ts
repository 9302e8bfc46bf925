import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRelayAgentInfo, encodeRelayAgentInfo, describeRelayAgentInfo } from '../../server/dhcp/relay-agent.ts';

test('option 82 codec: sub-options in order, circuit and remote id found, round trip byte for byte', () => {
  // as ISC dhcrelay -a sends it: circuit id = interface name, remote id = the relay's address bytes... and a vendor one
  const bytes = Buffer.from([1, 5, ...Buffer.from('ibrr2'), 2, 4, 10, 81, 22, 1, 9, 6, 0, 0, 0x0d, 0xe9, 1, 0xaa]);
  const d = decodeRelayAgentInfo(bytes);
  assert.ok(d.ok);
  if (!d.ok) return;
  assert.deepEqual(d.info.subOptions.map((s) => s.code), [1, 2, 9]);
  assert.equal(d.info.circuitId?.toString(), 'ibrr2');
  assert.deepEqual(d.info.remoteId, Buffer.from([10, 81, 22, 1]));
  assert.deepEqual(encodeRelayAgentInfo(d.info.subOptions), bytes);
  assert.deepEqual(describeRelayAgentInfo(d.info), { circuitId: 'ibrr2', remoteId: '0a511601' });
  const noIds = decodeRelayAgentInfo(Buffer.from([5, 4, 10, 0, 0, 0]));
  assert.ok(noIds.ok && noIds.info.circuitId === null && noIds.info.remoteId === null);
});

test('option 82 codec: malformed input is a value with the reason, never a throw', () => {
  const cases: [number[], RegExp][] = [
    [[], /empty/],
    [[1], /sub-option 1 at byte 0 has no length/],
    [[1, 0], /sub-option 1 has length 0/],
    [[1, 2, 0x41], /claims 2 bytes, 1 left/],
    [[1, 1, 0x41, 2], /sub-option 2 at byte 3 has no length/],
  ];
  for (const [b, re] of cases) {
    const d = decodeRelayAgentInfo(Buffer.from(b));
    assert.equal(d.ok, false);
    assert.match(!d.ok ? d.reason : '', re);
  }
  assert.throws(() => encodeRelayAgentInfo([{ code: 1, data: Buffer.alloc(0) }]), RangeError);
  assert.throws(() => encodeRelayAgentInfo([{ code: 1, data: Buffer.alloc(200) }, { code: 2, data: Buffer.alloc(100) }]), /at most 255/);
});
