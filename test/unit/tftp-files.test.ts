import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import {
  FileSource, ipxeRoot, openInsideRoot, openRequestedFile, resolveRequestName, StreamSource, TftpFileError, type TftpFileRequest,
} from '../../server/tftp/files.ts';
import { open } from 'node:fs/promises';

const client = { address: '127.0.0.1', port: 1234 };

test('request names: leading slashes and "." dropped, MAC directory stripped in every form', () => {
  assert.deepEqual(resolveRequestName('/undionly.kpxe'), { name: 'undionly.kpxe', segments: ['undionly.kpxe'], mac: null });
  assert.deepEqual(resolveRequestName('./a//b'), { name: 'a/b', segments: ['a', 'b'], mac: null });
  for (const dir of ['52-54-00-12-34-56', '52:54:00:12:34:56', '525400123456', '01-52-54-00-12-34-56', '52-54-00-AB-CD-EF']) {
    const r = resolveRequestName(`${dir}/undionly.kpxe`);
    assert.ok(!('error' in r));
    assert.equal(r.name, 'undionly.kpxe');
    assert.match(r.mac!, /^52:54:00:(12:34:56|ab:cd:ef)$/);
  }
  // a MAC alone is a file name, not a directory
  assert.deepEqual(resolveRequestName('525400123456'), { name: '525400123456', segments: ['525400123456'], mac: null });
});

test('request names: traversal, backslashes, NUL and control characters are refused with error 2', () => {
  for (const bad of ['../etc/passwd', 'a/../../etc/passwd', '/../etc/shadow', '..', 'a\\..\\b', 'C:\\boot.ini', 'a\0b', 'a\nb']) {
    const r = resolveRequestName(bad);
    assert.ok('error' in r, bad);
    assert.equal(r.error.code, 2, bad);
  }
  const empty = resolveRequestName('/');
  assert.ok('error' in empty && empty.error.code === 1);
});

test('disk roots: symlinks inside are followed, symlinks leaving the root are refused, only regular files', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ibt-files-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'root');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'sub', 'f.txt'), 'inside');
  writeFileSync(join(base, 'secret'), 'outside');
  symlinkSync('sub/f.txt', join(root, 'link-in'));
  symlinkSync('../secret', join(root, 'link-out'));
  symlinkSync('/etc', join(root, 'etc'));
  const inside = await openInsideRoot({ dir: root }, ['link-in']);
  assert.equal(inside?.size, 6);
  await inside?.handle.close();
  await assert.rejects(openInsideRoot({ dir: root }, ['link-out']), (e: TftpFileError) => e.code === 2);
  await assert.rejects(openInsideRoot({ dir: root }, ['etc', 'passwd']), (e: TftpFileError) => e.code === 2);
  await assert.rejects(openInsideRoot({ dir: root }, ['sub']), (e: TftpFileError) => e.code === 1);
  assert.equal(await openInsideRoot({ dir: root }, ['missing']), null);
  // an explicitly allowed target outside (Debian's /usr/lib/ipxe/ipxe.efi → /boot/ipxe.efi)
  const allowed = await openInsideRoot({ dir: root, allowOutside: new Set([join(base, 'secret')]) }, ['link-out']);
  assert.equal(allowed?.size, 7);
  await allowed?.handle.close();
});

test('ipxeRoot allows the well-known binaries that Debian links out of /usr/lib/ipxe, nothing else', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ibt-ipxe-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  mkdirSync(join(base, 'lib'));
  mkdirSync(join(base, 'boot'));
  writeFileSync(join(base, 'boot', 'ipxe.efi'), 'efi');
  writeFileSync(join(base, 'boot', 'other'), 'other');
  symlinkSync(join(base, 'boot', 'ipxe.efi'), join(base, 'lib', 'ipxe.efi'));
  symlinkSync(join(base, 'boot', 'other'), join(base, 'lib', 'other'));
  const root = await ipxeRoot(join(base, 'lib'));
  const f = await openInsideRoot(root, ['ipxe.efi']);
  assert.equal(f?.size, 3);
  await f?.handle.close();
  await assert.rejects(openInsideRoot(root, ['other']), (e: TftpFileError) => e.code === 2);
});

test('lookup order: virtual files first (with the MAC), then the roots; netascii is converted', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ibt-lookup-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  mkdirSync(join(base, 'a'));
  mkdirSync(join(base, 'b'));
  writeFileSync(join(base, 'a', 'one'), 'A1');
  writeFileSync(join(base, 'b', 'one'), 'B1');
  writeFileSync(join(base, 'b', 'two'), 'l1\nl2\n');
  const asked: TftpFileRequest[] = [];
  const virtualFiles = {
    lookup: (r: TftpFileRequest) => { asked.push(r); return r.name === 'boot.ipxe' ? { data: Buffer.from(`#!ipxe ${r.mac}`) } : null; },
  };
  const opts = { roots: [{ dir: join(base, 'a') }, { dir: join(base, 'b') }], virtualFiles };
  const v = await openRequestedFile('52-54-00-00-00-01/boot.ipxe', 'octet', client, opts);
  assert.equal(v.origin, 'virtual');
  assert.equal((await v.source.read(0, 100)).toString(), '#!ipxe 52:54:00:00:00:01');
  assert.deepEqual(asked[0], { name: 'boot.ipxe', mac: '52:54:00:00:00:01', client, local: '' });
  const one = await openRequestedFile('one', 'octet', client, opts);
  assert.equal((await one.source.read(0, 10)).toString(), 'A1');
  await one.source.close();
  const two = await openRequestedFile('/two', 'netascii', client, opts);
  assert.equal(two.source.size, 8);
  assert.equal((await two.source.read(0, 10)).toString(), 'l1\r\nl2\r\n');
  await assert.rejects(openRequestedFile('three', 'octet', client, opts), (e: TftpFileError) => e.code === 1);
});

test('FileSource reads across 1 MiB chunks and releases what is behind', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ibt-src-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const data = randomBytes(3 * 1048576 + 77);
  writeFileSync(join(base, 'f'), data);
  const src = new FileSource(await open(join(base, 'f')), data.length);
  const out: Buffer[] = [];
  for (let pos = 0; pos < data.length; pos += 1468) {
    const len = Math.min(1468, data.length - pos);
    out.push(Buffer.from(src.peek(pos, len) ?? (await src.read(pos, len))));
    src.release(pos);
  }
  assert.ok(Buffer.concat(out).equals(data));
  await src.close();
});

test('StreamSource serves a stream of declared size, also after stepping back inside the window', async () => {
  const data = randomBytes(200000);
  const src = new StreamSource(Readable.from([data.subarray(0, 70000), data.subarray(70000)]), data.length);
  const a = await src.read(0, 65464);
  const b = await src.read(65464, 65464);
  assert.ok(Buffer.concat([a, b]).equals(data.subarray(0, 130928)));
  src.release(65464);
  assert.ok((await src.read(65464, 10)).equals(data.subarray(65464, 65474)));
  assert.ok((await src.read(199990, 100)).equals(data.subarray(199990)));
  const short = new StreamSource(Readable.from([Buffer.alloc(10)]), 20);
  await assert.rejects(short.read(0, 20), /stream ended after 10 of 20 bytes/);
});
