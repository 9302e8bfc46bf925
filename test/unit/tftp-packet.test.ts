import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodePacket, decodeNetascii, encodeAck, encodeData, encodeError, encodeNetascii, encodeOack, encodeRequest, parseMode,
} from '../../server/tftp/packet.ts';

const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

test('RRQ with options decodes; names are lower-cased, values kept, order kept', () => {
  const p = decodePacket(bytes([0, 1], 'undionly.kpxe\0', 'OCTET\0', 'BlkSize\0', '1432\0', 'tsize\0', '0\0'));
  assert.deepEqual(p, { op: 'rrq', filename: 'undionly.kpxe', mode: 'octet', options: { blksize: '1432', tsize: '0' } });
  assert.deepEqual(Object.keys((p as { options: object }).options), ['blksize', 'tsize']);
});

test('request round-trips through encodeRequest; WRQ is recognised', () => {
  assert.deepEqual(decodePacket(encodeRequest('wrq', 'x/y', 'netascii', { windowsize: 4 })),
    { op: 'wrq', filename: 'x/y', mode: 'netascii', options: { windowsize: '4' } });
});

test('trailing NUL padding after options is tolerated; a lone option name is dropped', () => {
  assert.deepEqual(decodePacket(bytes([0, 1], 'f\0octet\0tsize\0', '0\0', [0, 0])),
    { op: 'rrq', filename: 'f', mode: 'octet', options: { tsize: '0' } });
  assert.deepEqual(decodePacket(bytes([0, 1], 'f\0octet\0tsize\0')), { op: 'rrq', filename: 'f', mode: 'octet', options: {} });
});

test('malformed packets come back as values, never throw', () => {
  const cases: Buffer[] = [
    Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 1]), bytes([0, 1], 'file'), bytes([0, 1], 'file\0'),
    bytes([0, 1], '\0octet\0'), bytes([0, 1], 'f\0octet\0\0x\0'), Buffer.from([0, 3, 0]), Buffer.from([0, 4, 1]),
    Buffer.from([0, 5, 0]), Buffer.from([0, 9, 0, 0]), Buffer.from([0xff, 0xff]), bytes([0, 6], 'blksize'),
  ];
  for (const c of cases) {
    const p = decodePacket(c);
    assert.equal(p.op, 'malformed', `expected malformed for ${c.toString('hex')}`);
    assert.equal(typeof (p as { reason: string }).reason, 'string');
  }
});

test('random bytes never throw', () => {
  for (let i = 0; i < 20000; i++) {
    const b = Buffer.alloc(Math.floor(Math.random() * 40));
    for (let j = 0; j < b.length; j++) b[j] = Math.random() < 0.3 ? 0 : Math.floor(Math.random() * 256);
    if (b.length >= 2 && Math.random() < 0.7) b.writeUInt16BE(1 + Math.floor(Math.random() * 6), 0);
    decodePacket(b);
  }
});

test('DATA block numbers are taken modulo 65536 (rollover to 0)', () => {
  assert.deepEqual(decodePacket(encodeData(65535, Buffer.from('a'))), { op: 'data', block: 65535, data: Buffer.from('a') });
  assert.equal((decodePacket(encodeData(65536, Buffer.alloc(0))) as { block: number }).block, 0);
  assert.equal((decodePacket(encodeData(65537 + 65536, Buffer.alloc(0))) as { block: number }).block, 1);
  assert.deepEqual(encodeData(3, Buffer.from('xyz')), Buffer.from([0, 3, 0, 3, 0x78, 0x79, 0x7a]));
});

test('ACK, ERROR and OACK encode and decode', () => {
  assert.deepEqual(encodeAck(65536 + 7), Buffer.from([0, 4, 0, 7]));
  assert.deepEqual(decodePacket(Buffer.from([0, 4, 0, 7, 0, 0])), { op: 'ack', block: 7 }); // padding tolerated
  assert.deepEqual(encodeError(8, 'abort'), bytes([0, 5, 0, 8], 'abort\0'));
  assert.deepEqual(decodePacket(encodeError(5, 'unknown transfer ID')), { op: 'error', code: 5, message: 'unknown transfer ID' });
  assert.deepEqual(decodePacket(Buffer.from([0, 5, 0, 1])), { op: 'error', code: 1, message: '' });
  assert.deepEqual(encodeOack({ blksize: 1468, tsize: '10' }), bytes([0, 6], 'blksize\0', '1468\0', 'tsize\0', '10\0'));
  assert.deepEqual(decodePacket(encodeOack({ windowsize: 4 })), { op: 'oack', options: { windowsize: '4' } });
});

test('modes: octet/binary and netascii/ascii; mail is refused', () => {
  assert.equal(parseMode('OCTET'), 'octet');
  assert.equal(parseMode('binary'), 'octet');
  assert.equal(parseMode('NetAscii'), 'netascii');
  assert.equal(parseMode('mail'), null);
});

test('netascii: LF → CR LF, CR → CR NUL, and back', () => {
  const text = Buffer.from('a\nb\rc\r\nd');
  const wire = encodeNetascii(text);
  assert.deepEqual(wire, Buffer.from('a\r\nb\r\0c\r\0\r\nd', 'latin1'));
  assert.deepEqual(decodeNetascii(wire), text);
  assert.deepEqual(encodeNetascii(Buffer.from('plain')), Buffer.from('plain'));
});
