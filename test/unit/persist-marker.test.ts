/**
 * The persistent-boot marker: the codec (pure), the disk checks, and the agent's step writing and finding it on a real
 * ext4 image file (mkfs.ext4; e2fsck -fn proves the filesystem is untouched by the marker). A reinstall's stream
 * over a marked disk leaves no marker behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { checkDisk, decodeMarker, encodeMarker, extUuid, MARKER_BYTES, MarkerError, type DiskMarker } from '../../init/agent/steps/marker.ts';
import { DiskRefused, findPersistentDisk, markDisk } from '../../init/agent/steps/persist.ts';
import { HEAD_BYTES, streamDisk } from '../../init/agent/steps/stream.ts';
import { parseAgentConfig } from '../../init/agent/cmdline.ts';
import type { WorkflowSpec } from '../../server/agent/api.ts';

const MARKER: DiskMarker = {
  workflowId: '6f1c1a52-3d5e-4b8f-9a63-0c2b6f0d4e11', imageId: 'a1b2c3d4e5f6', rawSha256: 'ab'.repeat(32), rawSize: 268435456,
  mac: '52:54:00:12:34:56', fsUuid: '0b5e1c2d-1111-4222-8333-944455556666', writtenAt: '2026-12-03T01:02:03.000Z', token: 'T'.repeat(43),
};

const have = (c: string) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;
const noE2fs = have('mkfs.ext4') && have('e2fsck') ? false : 'needs e2fsprogs (mkfs.ext4, e2fsck)';

/** A disk head with an ext superblock of the given UUID behind the marker sector. */
function head(marker: Buffer | null, uuid = MARKER.fsUuid): Buffer {
  const b = Buffer.alloc(4096);
  if (marker) marker.copy(b, 0);
  b.writeUInt16LE(0xef53, 1080);
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(b, 1024 + 0x68);
  return b;
}

test('marker codec: round trip in one 512-byte sector with a checksum', () => {
  const s = encodeMarker(MARKER);
  assert.equal(s.length, MARKER_BYTES);
  assert.equal(s.toString('latin1', 0, 16), 'ironboot-disk-v1');
  assert.deepEqual(decodeMarker(s), { ok: true, marker: MARKER });
  assert.deepEqual(decodeMarker(Buffer.concat([s, Buffer.alloc(1024, 7)])), { ok: true, marker: MARKER }, 'bytes after the sector do not matter');
});

test('marker codec: absent, damaged (any flipped byte), torn between two markers, missing fields, oversized', () => {
  assert.deepEqual(decodeMarker(Buffer.alloc(512)).ok, false);
  assert.equal((decodeMarker(Buffer.alloc(512)) as { problem: string }).problem, 'absent');
  assert.equal((decodeMarker(Buffer.alloc(100)) as { problem: string }).problem, 'absent');
  const s = encodeMarker(MARKER);
  for (const at of [16, 40, 200, 479, 480, 511]) {
    const bad = Buffer.from(s); bad[at] ^= 0x01;
    const r = decodeMarker(bad);
    assert.equal(r.ok, false, `byte ${at}`);
    assert.equal((r as { problem: string }).problem, 'damaged', `byte ${at}`);
  }
  // a torn write: the first half of a new marker over the second half of the old one
  const other = encodeMarker({ ...MARKER, workflowId: '00000000-0000-4000-8000-000000000000', writtenAt: '2027-01-01T00:00:00.000Z' });
  const torn = Buffer.concat([other.subarray(0, 256), s.subarray(256)]);
  assert.match((decodeMarker(torn) as { reason: string }).reason, /damaged/);
  assert.throws(() => encodeMarker({ ...MARKER, imageId: 'x'.repeat(400) }), MarkerError);
});

test('checkDisk: runs only its own workflow, machine and filesystem, and says what it found', () => {
  const want = { workflowId: MARKER.workflowId, mac: MARKER.mac };
  const s = encodeMarker(MARKER);
  assert.deepEqual(checkDisk(head(s), want, '/dev/vda'), { ok: true, marker: MARKER });
  const none = checkDisk(head(null), want, '/dev/vda');
  assert.equal(none.ok, false);
  assert.match((none as { reason: string }).reason, /^\/dev\/vda: no ironboot marker/);
  const other = checkDisk(head(encodeMarker({ ...MARKER, workflowId: 'wf-other', mac: '52:54:00:99:99:99' })), want, '/dev/vda');
  assert.match((other as { reason: string }).reason, /\/dev\/vda holds workflow wf-other \(image a1b2c3d4e5f6, written for 52:54:00:99:99:99 at .*\), not this machine's workflow 6f1c1a52/);
  assert.equal((other as { marker: DiskMarker }).marker.workflowId, 'wf-other');
  const moved = checkDisk(head(s), { ...want, mac: '52:54:00:00:00:01' });
  assert.match((moved as { reason: string }).reason, /written for machine 52:54:00:12:34:56, this machine is 52:54:00:00:00:01/);
  const reformatted = checkDisk(head(s, '99999999-9999-4999-8999-999999999999'), want);
  assert.match((reformatted as { reason: string }).reason, /filesystem UUID is 99999999-.*the marker recorded 0b5e1c2d-.*reformatted/);
  const noFs = Buffer.from(head(s)); noFs.writeUInt16LE(0, 1080);
  assert.match((checkDisk(noFs, want) as { reason: string }).reason, /no ext filesystem behind it/);
});

function spec(token: string): WorkflowSpec {
  return {
    workflowId: MARKER.workflowId, machine: { mac: MARKER.mac, hostname: null },
    image: { id: 'img9', name: 'web', format: 'ext4', url: '', rawUrl: '', compressedSize: 1, compressedSha256: 'c', rawSize: 4 << 20, rawSha256: 'd'.repeat(64) },
    target: '/dev/vda', after: 'reboot', mode: 'persistent', entrypoint: ['/bin/true'], cmd: [], env: [], workingDir: null, user: null, dns: [],
    persistent: { token },
  };
}

const cfgFor = (disk: string, workflowId = MARKER.workflowId) =>
  parseAgentConfig(`ironboot.server=http://s ironboot.workflow=${workflowId} ironboot.boot=persistent ironboot.disk=${disk}`);

test('markDisk + findPersistentDisk on a real ext4 image: the marker sits in the unused first sector, e2fsck stays clean', { skip: noE2fs }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-marker-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const img = join(dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(0));
  assert.equal(spawnSync('mkfs.ext4', ['-q', '-F', '-E', 'root_owner=0:0', img, '8M']).status, 0);
  const before = readFileSync(img);
  const uuid = extUuid(before);
  assert.match(uuid ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-/);
  const m = await markDisk(spec('tok-'.repeat(11)), img, MARKER.mac, () => new Date('2026-12-03T01:00:00Z'));
  assert.equal(m.fsUuid, uuid);
  assert.equal(m.token, 'tok-'.repeat(11));
  const after = readFileSync(img);
  assert.ok(after.subarray(512).equals(before.subarray(512)), 'nothing but the first sector changed');
  const fsck = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);

  const found = await findPersistentDisk(cfgFor(img), MARKER.mac);
  assert.equal(found.device, img);
  assert.deepEqual(found.marker, m);
  // another workflow's boot, or another machine, is refused with the marker it found
  await assert.rejects(findPersistentDisk(cfgFor(img, 'wf-new'), MARKER.mac), (e: unknown) =>
    e instanceof DiskRefused && /holds workflow 6f1c1a52.*not this machine's workflow wf-new/.test(e.message) && e.marker?.workflowId === MARKER.workflowId);
  await assert.rejects(findPersistentDisk(cfgFor(img), '52:54:00:00:00:02'), /written for machine 52:54:00:12:34:56/);
  // marking twice (a repeated hello) replaces the marker; a disk with no ext filesystem is not marked
  await markDisk(spec('tok2'.repeat(11)), img, MARKER.mac);
  assert.equal((await findPersistentDisk(cfgFor(img), MARKER.mac)).marker.token, 'tok2'.repeat(11));
  const blank = join(dir, 'blank.img');
  writeFileSync(blank, Buffer.alloc(1 << 20));
  await assert.rejects(markDisk(spec('x'.repeat(20)), blank, MARKER.mac), /holds no ext filesystem/);
  await assert.rejects(markDisk({ ...spec('x'), persistent: undefined }, img, MARKER.mac), /no persistent-boot token/);
  await assert.rejects(findPersistentDisk(cfgFor(blank), MARKER.mac), /no ironboot marker/);
});

test('a reinstall streamed over a marked disk leaves no marker (the first block is rewritten)', { skip: noE2fs || (have('zstd') ? false : 'needs zstd') }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-marker-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const img = join(dir, 'new.ext4');
  writeFileSync(img, Buffer.alloc(0));
  assert.equal(spawnSync('mkfs.ext4', ['-q', '-F', img, '4M']).status, 0);
  assert.equal(spawnSync('zstd', ['-q', '-f', img, '-o', `${img}.zst`]).status, 0);
  const raw = readFileSync(img);
  const zst = readFileSync(`${img}.zst`);
  // the target: a disk holding a marked older install
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(0));
  assert.equal(spawnSync('mkfs.ext4', ['-q', '-F', disk, '4M']).status, 0);
  await markDisk(spec('old-token-'.repeat(3)), disk, MARKER.mac);
  assert.ok(decodeMarker(readFileSync(disk)).ok);
  const server = http.createServer((_req, res) => { res.writeHead(200, { 'content-length': zst.length }); res.end(zst); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  // a block device gets zeroed first; an image file is truncated: either way the old sector cannot survive
  await streamDisk({ url: `http://127.0.0.1:${port}/x`, rawSize: raw.length, rawSha256: createHash('sha256').update(raw).digest('hex'), target: disk, zstd: 'zstd' });
  const fd = openSync(disk, 'r'); const s = Buffer.alloc(512); readSync(fd, s, 0, 512, 0); closeSync(fd);
  assert.equal((decodeMarker(s) as { problem: string }).problem, 'absent');
  // on a block device nothing is truncated: without zeroing, the writer seeks over zeros, but it zeroes the first
  // HEAD_BYTES before writing, so the marker sector reads as the image's (zeros in every ext image)
  assert.ok(HEAD_BYTES >= 4096, `the writer zeroes at least the first block (${HEAD_BYTES})`);
  assert.ok(raw.subarray(0, 512).every((b) => b === 0), 'an ext image starts with an empty sector');
});
