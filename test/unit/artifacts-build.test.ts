/**
 * The artifacts builder end to end on the host's real inputs (Debian kernel, busybox-static, node, zstd):
 * the initramfs layout, the report, and reproducibility (a second build gives the same bytes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildArtifacts, formatReport, CA_STAMP, decompressInitramfs, initramfsCompressionFor, onPath, requestedCompression } from '../../init/build/index.ts';
import { readCpio } from '../../init/build/cpio.ts';
import { findKernel } from '../../init/build/kernel.ts';
import { librariesOf } from '../../init/build/ldd.ts';
import { testArtifacts } from '../helpers/agent-artifacts.ts';
import { have } from '../helpers/netns.ts';

const skip = (() => {
  for (const c of ['zstd', 'lz4', 'depmod', 'strip', 'ldd', 'busybox']) if (!have(c)) return `${c} is not installed`;
  try { findKernel(); } catch (e) { return (e as Error).message; }
  return false;
})();

test('the initramfs: busybox init as PID 1, the agent, node with its libraries, tools, modules', { skip, timeout: 240_000 }, async () => {
  const art = await testArtifacts();
  // lz4's legacy frame by default (the host kernel has RD_LZ4): the kernel unpacks it faster than zstd
  assert.deepEqual([...readFileSync(art.initramfs).subarray(0, 4)], [0x02, 0x21, 0x4c, 0x18]);
  assert.equal(art.report.initramfs.compression, 'lz4 -l -9');
  const cpio = decompressInitramfs(art.initramfs);
  const recs = new Map(readCpio(cpio).map((r) => [r.name, r]));
  const k = findKernel();
  const link = (p: string) => recs.get(p)?.data.toString();
  assert.equal(link('init'), 'bin/busybox');
  assert.equal(recs.get('init')!.mode & 0o170000, 0o120000);
  assert.deepEqual(recs.get('dev/console')!.rdev, [5, 1]);
  assert.match(recs.get('etc/inittab')!.data.toString(), /^::respawn:\/lib\/ironboot\/bin\/node \/lib\/ironboot\/agent\.mjs$/m);
  assert.match(recs.get('lib/ironboot/agent.mjs')!.data.toString(), /ironboot init agent/);
  assert.match(recs.get('lib/ironboot/udhcpc.script')!.data.toString(), /lease\.\$interface/);
  for (const tool of ['node', 'zstd', 'resize2fs', 'blkdiscard']) assert.ok(recs.get(`lib/ironboot/bin/${tool}`)!.size > 0, tool);
  for (const lib of [...librariesOf(process.execPath), ...librariesOf('/usr/bin/zstd')]) assert.ok(recs.has(lib.slice(1)), `${lib} is shipped`);
  assert.ok(recs.get('lib/ironboot/bin/node')!.size < readFileSync(process.execPath).length, 'node is stripped');
  for (const a of ['modprobe', 'udhcpc', 'mount', 'nsenter', 'sh', 'cttyhack']) assert.equal(link(`bin/${a}`), 'busybox');
  const mdir = `lib/modules/${k.version}`;
  for (const f of ['modules.dep', 'modules.alias', 'modules.dep.bin', 'modules.builtin']) assert.ok(recs.has(`${mdir}/${f}`), f);
  assert.match(recs.get(`${mdir}/modules.dep`)!.data.toString(), /virtio_net\.ko: .*net_failover\.ko/);
  assert.ok([...recs.values()].every((r) => r.uid === 0 && r.gid === 0 && r.mtime === 0));
  // the report
  const r = art.report;
  assert.equal(r.kernelVersion, k.version);
  assert.equal(r.initramfs.bytes, readFileSync(art.initramfs).length);
  assert.equal(r.initramfs.entries, recs.size);
  assert.ok(r.groups.node.bytes > 50e6 && r.groups.modules.files > 50);
  assert.match(formatReport(r), /initramfs .* MB +\(lz4 -l -9/);
});

test('same inputs, same bytes: a second build is identical', { skip, timeout: 240_000 }, async () => {
  const art = await testArtifacts();
  const dir = mkdtempSync(join(tmpdir(), 'iba-art-'));
  try {
    const again = await buildArtifacts({ outDir: dir });
    const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
    assert.equal(sha(again.initramfs), sha(art.initramfs));
    assert.equal(sha(again.kernel), sha(art.kernel));
    assert.equal(again.report.initramfs.sha256, sha(art.initramfs));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--tls-ca: the operator CA goes in as /etc/ironboot/ca.pem (the agent verifies HTTPS against it), with a stamp', { skip, timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-art-ca-'));
  try {
    const ca = join(dir, 'ca.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca.key'),
      '-out', ca, '-days', '1', '-subj', '/CN=iba-ca'], { stdio: 'ignore' });
    const out = join(dir, 'out');
    // zstd at level 1 (quick; and the other format the builder writes)
    const r = await buildArtifacts({ outDir: out, caFile: ca, compression: 'zstd', zstdLevel: 1 });
    assert.equal(r.report.initramfs.compression, 'zstd -1');
    assert.deepEqual([...readFileSync(r.initramfs).subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd]);
    const recs = new Map(readCpio(decompressInitramfs(r.initramfs)).map((x) => [x.name, x]));
    assert.deepEqual(recs.get('etc/ironboot/ca.pem')!.data, readFileSync(ca));
    assert.equal(readFileSync(join(out, CA_STAMP), 'utf8').trim(), createHash('sha256').update(readFileSync(ca)).digest('hex'));
    await assert.rejects(buildArtifacts({ outDir: out, caFile: join(dir, 'ca.key'), compression: 'zstd', zstdLevel: 1 }), /holds no PEM certificate/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('initramfs compression follows the kernel: lz4 when its config has RD_LZ4, else zstd, else a clear error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-rd-'));
  try {
    const kernel = join(dir, 'vmlinuz-9.9.9-test');
    const config = (lines: string) => writeFileSync(join(dir, 'config-9.9.9-test'), lines);
    const said: string[] = [];
    config('CONFIG_RD_LZ4=y\nCONFIG_RD_ZSTD=y\n');
    assert.equal(initramfsCompressionFor(kernel, '9.9.9-test', 'lz4', (m) => said.push(m)), 'lz4');
    config('# CONFIG_RD_LZ4 is not set\nCONFIG_RD_ZSTD=y\n');
    assert.equal(initramfsCompressionFor(kernel, '9.9.9-test', 'lz4', (m) => said.push(m)), 'zstd');
    assert.match(said.join('\n'), /cannot unpack a lz4 initramfs \(no CONFIG_RD_LZ4 in .*config-9\.9\.9-test\): using zstd/);
    config('CONFIG_RD_GZIP=y\n');
    assert.throws(() => initramfsCompressionFor(kernel, '9.9.9-test', 'lz4', () => {}), /unpacks neither lz4 nor zstd/);
    rmSync(join(dir, 'config-9.9.9-test'));
    assert.equal(initramfsCompressionFor(kernel, '9.9.9-test', 'zstd', () => {}), 'zstd', 'no config to read: as asked');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the default compression is lz4 where the lz4 tool is installed, else zstd with a log line; an explicit choice stands', () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-path-'));
  try {
    writeFileSync(join(dir, 'lz4'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(dir, 'notexec'), '', { mode: 0o644 });
    assert.equal(onPath('lz4', `/nonexistent:${dir}`), true);
    assert.equal(onPath('notexec', dir), false, 'not executable');
    assert.equal(onPath('lz4', '/nonexistent'), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const said: string[] = [];
  assert.equal(requestedCompression(undefined, true, (m) => said.push(m)), 'lz4');
  assert.equal(said.length, 0, 'nothing to say');
  assert.equal(requestedCompression(undefined, false, (m) => said.push(m)), 'zstd');
  assert.match(said[0], /lz4 is not installed \(Debian package lz4\): compressing the initramfs with zstd/);
  assert.equal(requestedCompression('lz4', false, () => {}), 'lz4', 'asked for: compress() says what is missing');
  assert.equal(requestedCompression('zstd', true, () => {}), 'zstd');
});
