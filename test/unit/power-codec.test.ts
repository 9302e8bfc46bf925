/** The pure parts of power control: BMC URLs, the IPMI LAN message and RMCP+ packet codec, AES-CBC-128 payloads. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, createHmac } from 'node:crypto';
import { parseBmcUrl } from '../../server/power/bmc-url.ts';
import { checksum, encodeRequest, decodeResponse, encodeV20, decodePacket, encodeV15, IpmiDecodeError, encodeOpenSessionRequest, decodeOpenSessionResponse } from '../../server/power/ipmi/packet.ts';
import { encryptPayload, decryptPayload, deriveKeys, integrityCode } from '../../server/power/ipmi/crypto.ts';

test('BMC URLs: protocols, default ports, hosts; a sentence for what is wrong', () => {
  assert.deepEqual(parseBmcUrl('ipmi://10.0.0.5'), { protocol: 'ipmi', host: '10.0.0.5', port: 623 });
  assert.deepEqual(parseBmcUrl('ipmi://bmc-1.rack.example:6230'), { protocol: 'ipmi', host: 'bmc-1.rack.example', port: 6230 });
  assert.deepEqual(parseBmcUrl('redfish://10.0.0.6'), { protocol: 'redfish', host: '10.0.0.6', port: 443 });
  assert.deepEqual(parseBmcUrl('redfish://[fd00::6]:8443/'), { protocol: 'redfish', host: 'fd00::6', port: 8443 });
  for (const [bad, why] of [
    ['http://10.0.0.5', /not a BMC protocol/], ['ipmi://', /not a BMC URL/], ['ipmi://10.0.0.5:0', /outside/],
    ['ipmi://10.0.0.5:70000', /outside/], ['redfish://user:pw@host', /not a BMC URL/], ['ipmi://bad_host', /not an IP address or host name/],
    ['redfish://host/redfish/v1', /not a BMC URL/], ['ipmi://[10.0.0.1]', /not an IP address/],
  ] as const) {
    const r = parseBmcUrl(bad);
    assert.equal(typeof r, 'string', bad);
    assert.match(r as string, why, bad);
  }
});

test('IPMI LAN request: addresses, netFn/LUN, sequence and both checksums (IPMI v2.0 13.8)', () => {
  // Get Chassis Status (netFn chassis 0x00, cmd 0x01), rqSeq 1
  const b = encodeRequest({ netFn: 0x00, cmd: 0x01, seq: 1, data: Buffer.alloc(0) });
  assert.deepEqual([...b], [0x20, 0x00, 0xe0, 0x81, 0x04, 0x01, 0x7a]);
  // Set Session Privilege Level (netFn app 0x06 → 0x18), admin
  const p = encodeRequest({ netFn: 0x06, cmd: 0x3b, seq: 2, data: Buffer.from([4]) });
  assert.deepEqual([...p.subarray(0, 3)], [0x20, 0x18, 0xc8]);
  assert.equal(checksum(p.subarray(3)), 0, 'a checksummed part sums to zero');
  // a response: rqAddr, netFn|1 (response), cs, rsAddr, seq, cmd, completion code, data, cs
  const body = Buffer.from([0x20, 0x04, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00]);
  const head = Buffer.from([0x81, 0x04]);
  const resp = Buffer.concat([head, Buffer.from([checksum(head)]), body, Buffer.from([checksum(body)])]);
  const r = decodeResponse(resp);
  assert.equal(r.netFn, 0x01); assert.equal(r.seq, 1); assert.equal(r.cmd, 0x01); assert.equal(r.completionCode, 0);
  assert.deepEqual([...r.data], [0x01, 0x00, 0x00, 0x00]);
  resp[resp.length - 2] ^= 1;
  assert.throws(() => decodeResponse(resp), IpmiDecodeError);
});

test('RMCP+ packets: header fields, integrity pad to 4 bytes, AuthCode over the right bytes; decode splits them back', () => {
  const k1 = Buffer.alloc(20, 7);
  for (let len = 0; len < 9; len++) {
    const payload = Buffer.alloc(len, 0xab);
    const pkt = encodeV20({ encrypted: true, authenticated: true, payloadType: 0, sessionId: 0x11223344, sequence: 5 }, payload, (c) => integrityCode(k1, c));
    assert.deepEqual([...pkt.subarray(0, 4)], [0x06, 0x00, 0xff, 0x07], 'RMCP header');
    assert.equal(pkt[4], 0x06, 'auth type RMCP+'); assert.equal(pkt[5], 0xc0, 'encrypted + authenticated, payload IPMI');
    assert.equal(pkt.readUInt32LE(6), 0x11223344); assert.equal(pkt.readUInt32LE(10), 5); assert.equal(pkt.readUInt16LE(14), len);
    const covered = pkt.subarray(4, pkt.length - 12);
    assert.equal(covered.length % 4, 0, `session header + payload + pad + pad length + next header is a multiple of 4 (${len})`);
    assert.equal(covered[covered.length - 1], 0x07, 'next header');
    const padLen = covered[covered.length - 2];
    assert.ok(covered.subarray(12 + len, 12 + len + padLen).every((x) => x === 0xff));
    assert.deepEqual(pkt.subarray(pkt.length - 12), createHmac('sha1', k1).update(covered).digest().subarray(0, 12), 'HMAC-SHA1-96');
    const d = decodePacket(pkt, 12);
    assert.deepEqual(d.payload, payload); assert.deepEqual(d.covered, covered); assert.equal(d.header.sessionId, 0x11223344);
  }
  const plain = encodeV15(encodeRequest({ netFn: 6, cmd: 0x38, seq: 0, data: Buffer.from([0x8e, 4]) }));
  assert.equal(plain.length, 4 + 10 + 9);
  assert.equal(decodePacket(plain, 12).version, 1.5);
  assert.throws(() => decodePacket(Buffer.from([1, 2, 3]), 12), IpmiDecodeError);
  assert.throws(() => decodePacket(Buffer.from([0x06, 0, 0xff, 0x07, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0]), 12), IpmiDecodeError, 'length beyond the datagram');
});

test('Open Session request asks for cipher suite 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128); the response is read back', () => {
  const b = encodeOpenSessionRequest({ tag: 9, privilege: 4, consoleSessionId: 0xa1b2c3d4 });
  assert.equal(b.length, 32);
  assert.deepEqual([b[0], b[1], b.readUInt32LE(4)], [9, 4, 0xa1b2c3d4]);
  assert.deepEqual([...b.subarray(8, 16)], [0, 0, 0, 8, 1, 0, 0, 0]);
  assert.deepEqual([...b.subarray(16, 24)], [1, 0, 0, 8, 1, 0, 0, 0]);
  assert.deepEqual([...b.subarray(24, 32)], [2, 0, 0, 8, 1, 0, 0, 0]);
  const resp = Buffer.alloc(36);
  resp[0] = 9; resp[2] = 4; resp.writeUInt32LE(0xa1b2c3d4, 4); resp.writeUInt32LE(0x0badf00d, 8);
  b.subarray(8).copy(resp, 12);
  const r = decodeOpenSessionResponse(resp);
  assert.deepEqual([r.status, r.managedSessionId, r.authAlg, r.integrityAlg, r.confidentialityAlg], [0, 0x0badf00d, 1, 1, 1]);
  resp[1] = 0x0d;
  assert.equal(decodeOpenSessionResponse(resp.subarray(0, 8)).status, 0x0d, 'a refusal carries only its status');
});

test('AES-CBC-128 payloads: IV first, pad 1,2,…,n then n, whole blocks; decrypt checks the pad', () => {
  const { aesKey, k1, k2 } = deriveKeys(Buffer.alloc(20, 3));
  assert.deepEqual(k1, createHmac('sha1', Buffer.alloc(20, 3)).update(Buffer.alloc(20, 1)).digest());
  assert.deepEqual(aesKey, k2.subarray(0, 16));
  const iv = Buffer.alloc(16, 0x5a);
  for (let len = 0; len < 40; len++) {
    const data = Buffer.from(Array.from({ length: len }, (_, i) => i * 7));
    const enc = encryptPayload(aesKey, iv, data);
    assert.deepEqual(enc.subarray(0, 16), iv);
    assert.equal((enc.length - 16) % 16, 0);
    const d = createDecipheriv('aes-128-cbc', aesKey, iv); d.setAutoPadding(false);
    const raw = Buffer.concat([d.update(enc.subarray(16)), d.final()]);
    const n = raw[raw.length - 1];
    assert.deepEqual([...raw.subarray(len, len + n)], Array.from({ length: n }, (_, i) => i + 1));
    assert.deepEqual(decryptPayload(aesKey, enc), data);
  }
  const enc = encryptPayload(aesKey, iv, Buffer.from('hello'));
  assert.throws(() => decryptPayload(Buffer.alloc(16, 1), enc), /pad/);
  assert.throws(() => decryptPayload(aesKey, enc.subarray(0, 20)), /whole AES blocks/);
});
