/**
 * Real TFTP clients (tftp-hpa, atftp, curl) against ironboot's TFTP service on loopback, with and without
 * each option; every byte checked with sha256. Includes a >100 MB file at 512-byte blocks (block rollover).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { Registry } from 'prom-client';
import { loadServeConfig } from '../../server/config.ts';
import { startTftpService } from '../../server/tftp/index.ts';
import { have } from '../helpers/netns.ts';

const run = promisify(execFile);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const missing = ['tftp', 'atftp', 'curl'].find((c) => !have(c));
const skip = missing ? `${missing} is not installed` : false;

let dir: string;
let out: string;
let service: Awaited<ReturnType<typeof startTftpService>>;
let port: number;
const registry = new Registry();
const files: Record<string, Buffer> = {};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ibt-clients-'));
  out = join(dir, 'out');
  mkdirSync(out);
  mkdirSync(join(dir, 'artifacts', 'debian'), { recursive: true });
  const add = (name: string, data: Buffer) => { files[name] = data; writeFileSync(join(dir, 'artifacts', name), data); };
  add('small.bin', randomBytes(3000));
  add('exact.bin', randomBytes(512 * 8)); // an exact multiple: the last block is empty
  add('empty.bin', Buffer.alloc(0));
  add('medium.bin', randomBytes(3 * 1048576 + 11));
  add('debian/vmlinuz', randomBytes(200000));
  add('text.txt', Buffer.from('#!ipxe\necho hello\r\nbare\rcr\n'.repeat(300)));
  const config = loadServeConfig(['--tftp-listen', '127.0.0.1:0', '--ipxe-dir', '/usr/lib/ipxe'], {});
  service = await startTftpService({
    log: pino({ level: 'warn' }), registry, config, artifactsDir: join(dir, 'artifacts'),
    virtualFiles: { lookup: ({ name, mac }) => (name === 'boot.ipxe' && mac ? { data: Buffer.from(`#!ipxe\nchain http://10.82.0.1/boot/${mac}.ipxe\n`) } : null) },
  });
  port = service.address().port;
});

after(async () => {
  await service?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function curl(file: string, args: string[]): Promise<Buffer> {
  const dest = join(out, `curl-${Math.random().toString(36).slice(2)}`);
  await run('curl', ['-sS', '--fail', '--max-time', '120', ...args, `tftp://127.0.0.1:${port}/${file}`, '-o', dest]);
  return readFileSync(dest);
}

async function atftp(file: string, options: string[]): Promise<Buffer> {
  const dest = join(out, `atftp-${Math.random().toString(36).slice(2)}`);
  await run('atftp', [...options.flatMap((o) => ['--option', o]), '-g', '-r', file, '-l', dest, '127.0.0.1', String(port)], { timeout: 60000 });
  return readFileSync(dest);
}

async function tftpHpa(file: string, mode: 'binary' | 'ascii'): Promise<Buffer> {
  const dest = join(out, `hpa-${Math.random().toString(36).slice(2)}`);
  await run('tftp', ['-m', mode, '127.0.0.1', String(port), '-c', 'get', file, dest], { timeout: 60000 });
  return readFileSync(dest);
}

test('tftp-hpa (RFC 1350, no options): octet', { skip }, async () => {
  for (const name of ['small.bin', 'exact.bin', 'empty.bin', 'medium.bin', 'debian/vmlinuz']) {
    assert.equal(sha256(await tftpHpa(name, 'binary')), sha256(files[name]), name);
  }
});

test('tftp-hpa: netascii mode round-trips text (LF → CR LF on the wire and back)', { skip }, async () => {
  assert.equal((await tftpHpa('text.txt', 'ascii')).toString(), files['text.txt'].toString());
});

test('atftp: without options, and with blksize, tsize, timeout, windowsize alone and together', { skip }, async () => {
  const sets = [
    [],
    ['blksize 1468'],
    ['blksize 8'],
    ['blksize 65464'],
    ['tsize enable'],
    ['timeout 2'],
    ['windowsize 4'],
    ['windowsize 16', 'blksize 1468'],
    ['blksize 1432', 'tsize enable', 'timeout 1', 'windowsize 8'],
  ];
  for (const opts of sets) {
    const name = opts.includes('blksize 8') ? 'small.bin' : 'medium.bin';
    assert.equal(sha256(await atftp(name, opts)), sha256(files[name]), `atftp ${opts.join(', ')}`);
  }
  assert.equal(sha256(await atftp('exact.bin', ['windowsize 4'])), sha256(files['exact.bin']));
  assert.equal((await atftp('empty.bin', ['windowsize 4', 'tsize enable'])).length, 0);
});

test('curl: --tftp-no-options and --tftp-blksize 8 … 65464', { skip }, async () => {
  assert.equal(sha256(await curl('medium.bin', ['--tftp-no-options'])), sha256(files['medium.bin']));
  for (const b of ['8', '512', '1432', '1468', '8192', '65464']) {
    const name = b === '8' ? 'small.bin' : 'medium.bin';
    assert.equal(sha256(await curl(name, ['--tftp-blksize', b])), sha256(files[name]), `blksize ${b}`);
  }
  assert.equal(sha256(await curl('exact.bin', ['--tftp-blksize', '512'])), sha256(files['exact.bin']));
});

test("Debian's iPXE binaries, also behind a MAC directory and the /usr/lib/ipxe/ipxe.efi → /boot symlink", { skip: skip || (!have('curl') && 'no curl') }, async (t) => {
  for (const [req, disk] of [
    ['undionly.kpxe', '/usr/lib/ipxe/undionly.kpxe'],
    ['52-54-00-12-34-56/undionly.kpxe', '/usr/lib/ipxe/undionly.kpxe'],
    ['/snponly.efi', '/usr/lib/ipxe/snponly.efi'],
    ['ipxe.efi', '/boot/ipxe.efi'],
  ]) {
    let want: Buffer;
    try { want = readFileSync(disk); } catch { t.diagnostic(`${disk} missing (Debian package ipxe)`); continue; }
    assert.equal(sha256(await curl(req, ['--tftp-blksize', '1432'])), sha256(want), req);
  }
});

test('a virtual per-MAC file (colon form too) comes from the provider', { skip }, async () => {
  assert.equal((await curl('52:54:00:aa:bb:cc/boot.ipxe', [])).toString(), '#!ipxe\nchain http://10.82.0.1/boot/52:54:00:aa:bb:cc.ipxe\n');
  assert.equal((await atftp('52-54-00-aa-bb-cd/boot.ipxe', [])).toString(), '#!ipxe\nchain http://10.82.0.1/boot/52:54:00:aa:bb:cd.ipxe\n');
});

test('a missing file is an error packet for each client', { skip }, async () => {
  await assert.rejects(curl('nope.bin', []), (e: { code: number }) => e.code === 68); // CURLE_TFTP_NOTFOUND
  await assert.rejects(atftp('nope.bin', []));
  // tftp-hpa exits 0 and reports the ERROR packet on stdout
  const hpa = await run('tftp', ['127.0.0.1', String(port), '-c', 'get', 'nope.bin', join(out, 'nope')], { timeout: 30000 });
  assert.match(hpa.stdout, /Error code 1: file not found: nope.bin/);
});

test('a 101 MiB file at 512-byte blocks (block numbers roll over three times), every byte checked', { skip }, async () => {
  const big = join(dir, 'artifacts', 'initrd.img');
  const hash = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    const ws = createWriteStream(big);
    ws.on('error', reject);
    let left = 101;
    const chunk = () => {
      while (left > 0) {
        const part = randomBytes(1048576);
        hash.update(part);
        left--;
        if (!ws.write(part)) { ws.once('drain', chunk); return; }
      }
      ws.end(resolve);
    };
    chunk();
  });
  const want = hash.digest('hex');
  const got = await curl('initrd.img', ['--tftp-blksize', '512']);
  assert.equal(got.length, 101 * 1048576);
  assert.equal(sha256(got), want);
  rmSync(big);
});

test('transfers are counted in the registry', { skip }, async () => {
  const text = await registry.metrics();
  assert.match(text, /ironboot_tftp_transfers_total\{outcome="complete"\} [1-9]/);
  assert.match(text, /ironboot_tftp_transfers_total\{outcome="not_found"\} 3/);
  assert.match(text, /ironboot_tftp_sent_bytes_total [1-9]/);
});
