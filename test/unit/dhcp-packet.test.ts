import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeDhcpPacket, parseDhcpPacket, encodeDhcpPacket, decodeSubOptions, encodeSubOptions, userClasses, clientArches,
  clientMac, messageType, optIp, optString, optU16, replySkeleton, DhcpDecodeError, Opt, MessageType,
  type DhcpPacket,
} from '../../server/dhcp/packet.ts';
import { header, opt, qemuBiosIpxeDiscover } from '../helpers/dhcp-packets.ts';


test('decodes a PXE BIOS DISCOVER from the iPXE ROM, keeping every option', () => {
  const p = parseDhcpPacket(qemuBiosIpxeDiscover());
  assert.equal(messageType(p), MessageType.DISCOVER);
  assert.equal(clientMac(p), '52:54:00:77:10:10');
  assert.equal(p.xid, 0x7c1f2e01);
  assert.equal(optString(p, Opt.VENDOR_CLASS), 'PXEClient:Arch:00000:UNDI:002001');
  assert.deepEqual(userClasses(p), ['iPXE']);
  assert.deepEqual(clientArches(p), [0]);
  assert.equal(optU16(p, Opt.MAX_MESSAGE_SIZE), 1472);
  assert.ok(p.options.get(Opt.PARAMETER_LIST)!.includes(150));
  const ipxe = decodeSubOptions(p.options.get(Opt.IPXE_ENCAP)!);
  assert.deepEqual([...ipxe.get(177)!], [1, 0x1a, 0xf4, 0x10, 0x00]);
  assert.equal(p.options.get(97)!.length, 17);
  assert.deepEqual([...p.options.get(94)!], [1, 2, 1]);
  assert.deepEqual([...p.options.keys()], [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]);
});

test('encode → decode round trip keeps header fields and options, unknown ones as bytes', () => {
  const p: DhcpPacket = {
    ...replySkeleton(parseDhcpPacket(qemuBiosIpxeDiscover())),
    yiaddr: '10.81.0.10', siaddr: '10.81.0.1', giaddr: '10.81.9.1', hops: 1, file: 'undionly.kpxe', sname: 'srv',
    flags: 0x8000,
  };
  p.options.set(Opt.MESSAGE_TYPE, Buffer.from([MessageType.OFFER]));
  p.options.set(Opt.SERVER_ID, Buffer.from([10, 81, 0, 1]));
  p.options.set(224, Buffer.from('private-bytes'));
  p.options.set(Opt.IPXE_ENCAP, encodeSubOptions([[176, [1]]]));
  const bytes = encodeDhcpPacket(p);
  assert.ok(bytes.length >= 300);
  assert.equal(bytes[240], 53, 'option 53 comes first');
  const q = parseDhcpPacket(bytes);
  for (const k of ['op', 'xid', 'flags', 'yiaddr', 'siaddr', 'giaddr', 'hops', 'file', 'sname'] as const) assert.equal(q[k], p[k], k);
  assert.deepEqual(q.chaddr, p.chaddr);
  assert.deepEqual([...q.options.entries()], [...p.options.entries()]);
  assert.deepEqual([...decodeSubOptions(q.options.get(175)!)], [[176, Buffer.from([1])]]);
});

test('RFC 3396: a long option is split on encode and concatenated on decode', () => {
  const p = replySkeleton(parseDhcpPacket(qemuBiosIpxeDiscover()));
  const long = Buffer.from(Array.from({ length: 600 }, (_, i) => i & 255));
  p.options.set(Opt.MESSAGE_TYPE, Buffer.from([MessageType.ACK]));
  p.options.set(120, long);
  const bytes = encodeDhcpPacket(p, { maxSize: 1472 });
  // three instances of option 120: 255 + 255 + 90
  let count = 0;
  for (let i = 240; i < bytes.length && bytes[i] !== 255;) { if (bytes[i] === 120) count++; i += bytes[i] === 0 ? 1 : 2 + bytes[i + 1]; }
  assert.equal(count, 3);
  assert.deepEqual(parseDhcpPacket(bytes).options.get(120), long);
  // two instances written by someone else, not adjacent
  const raw = Buffer.concat([header(), opt(53, [1]), opt(81, 'abc'), opt(12, 'x'), opt(81, 'def'), Buffer.from([255])]);
  assert.equal(parseDhcpPacket(raw).options.get(81)!.toString(), 'abcdef');
});

test('option overload: options carried in file and sname are decoded, and the encoder overflows into them', () => {
  const b = Buffer.concat([header(), opt(53, [3]), opt(52, [3]), Buffer.from([255])]);
  opt(12, 'from-file').copy(b, 108); b[108 + 11] = 255;
  opt(15, 'from.sname').copy(b, 44); b[44 + 12] = 255;
  const p = parseDhcpPacket(b);
  assert.equal(optString(p, 12), 'from-file');
  assert.equal(optString(p, 15), 'from.sname');
  assert.equal(p.file, '');
  assert.equal(p.sname, '');
  assert.ok(!p.options.has(52));

  const big = replySkeleton(p);
  big.options.set(53, Buffer.from([5]));
  for (let c = 200; c < 203; c++) big.options.set(c, Buffer.alloc(100, c));
  big.options.set(203, Buffer.alloc(60, 7));
  const bytes = encodeDhcpPacket(big); // 576 max: options do not fit in the options field alone
  assert.ok(bytes.length <= 576 - 28, `${bytes.length} bytes`);
  assert.ok(bytes.subarray(240).includes(52), 'option 52 present');
  assert.deepEqual([...parseDhcpPacket(bytes).options.entries()].sort(), [...big.options.entries()].sort());
});

test('pad options, a missing End at the end of the buffer and bytes after End are tolerated', () => {
  const p = parseDhcpPacket(Buffer.concat([header(), Buffer.from([0, 0]), opt(53, [1]), Buffer.from([0]), opt(50, [10, 81, 0, 9])]));
  assert.equal(messageType(p), 1);
  assert.equal(optIp(p, 50), '10.81.0.9');
  const q = parseDhcpPacket(Buffer.concat([header(), opt(53, [1]), Buffer.from([255, 12, 200, 1])]));
  assert.deepEqual([...q.options.keys()], [53]);
});

test('user class 77: raw "iPXE" and RFC 3004 length-prefixed both read as iPXE', () => {
  const raw = parseDhcpPacket(Buffer.concat([header(), opt(53, [1]), opt(77, 'iPXE'), Buffer.from([255])]));
  const rfc = parseDhcpPacket(Buffer.concat([header(), opt(53, [1]), opt(77, [4, ...Buffer.from('iPXE'), 3, ...Buffer.from('foo')]), Buffer.from([255])]));
  assert.ok(userClasses(raw).includes('iPXE'));
  assert.ok(userClasses(rfc).includes('iPXE'));
  assert.ok(userClasses(rfc).includes('foo'));
});

test('sub-options (43, 175): encode/decode with End, truncated tail ignored', () => {
  const v = encodeSubOptions([[6, [8]], [176, [1]]]);
  assert.deepEqual([...v], [6, 1, 8, 176, 1, 1, 255]);
  assert.deepEqual([...decodeSubOptions(v).keys()], [6, 176]);
  assert.deepEqual([...decodeSubOptions(Buffer.from([0, 6, 1, 8, 9, 5, 1])).keys()], [6]);
});

const malformed: [string, Buffer, DhcpDecodeError['reason']][] = [
  ['empty', Buffer.alloc(0), 'too-short'],
  ['truncated header', qemuBiosIpxeDiscover().subarray(0, 200), 'too-short'],
  ['no cookie', Buffer.concat([Buffer.alloc(240, 0).fill(1, 0, 1), Buffer.from([53, 1, 1, 255])]), 'bad-cookie'],
  ['bad op', (() => { const b = qemuBiosIpxeDiscover(); b[0] = 7; return b; })(), 'bad-op'],
  ['hlen 17', (() => { const b = qemuBiosIpxeDiscover(); b[2] = 17; return b; })(), 'bad-hlen'],
  ['option runs past the end', Buffer.concat([header(), opt(53, [1]), Buffer.from([60, 40, 65, 66])]), 'option-truncated'],
  ['option without length byte', Buffer.concat([header(), opt(53, [1]), Buffer.from([60])]), 'option-truncated'],
  ['truncated mid-options (real DISCOVER cut)', qemuBiosIpxeDiscover().subarray(0, 262), 'option-truncated'],
  ['bad overload value', Buffer.concat([header(), opt(53, [1]), opt(52, [9]), Buffer.from([255])]), 'bad-overload'],
  ['overloaded file with a truncated option', (() => {
    const b = Buffer.concat([header(), opt(53, [1]), opt(52, [1]), Buffer.from([255])]); b[108] = 12; b[109] = 200; return b;
  })(), 'option-truncated'],
];
for (const [name, bytes, reason] of malformed) {
  test(`malformed input → DhcpDecodeError value, no throw: ${name}`, () => {
    const r = decodeDhcpPacket(bytes);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.ok(r.error instanceof DhcpDecodeError);
      assert.equal(r.error.reason, reason);
    }
    assert.throws(() => parseDhcpPacket(bytes), DhcpDecodeError);
  });
}

test('decodeDhcpPacket never throws on random, truncated and mutated input', () => {
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  const base = qemuBiosIpxeDiscover();
  let ok = 0;
  for (let i = 0; i < 20000; i++) {
    let b: Buffer;
    const k = i % 3;
    if (k === 0) b = Buffer.from(Array.from({ length: Math.floor(rnd() * 600) }, () => Math.floor(rnd() * 256)));
    else if (k === 1) b = base.subarray(0, Math.floor(rnd() * base.length));
    else { b = Buffer.from(base); for (let j = 0; j < 1 + rnd() * 8; j++) b[240 + Math.floor(rnd() * (b.length - 240))] = Math.floor(rnd() * 256); }
    const r = decodeDhcpPacket(b);
    if (r.ok) { ok++; encodeDhcpPacket({ ...r.packet }, { maxSize: 1472 }); }
  }
  assert.ok(ok > 1000, `some mutated packets still decode (${ok})`);
});
