import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmodSync, mkdirSync, mkdtempSync, openSync, closeSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectFsType, FS_PROBE_BYTES } from '../../init/agent/steps/fstype.ts';
import { resolveUser } from '../../init/agent/steps/user.ts';
import { entrypointCommand, DEFAULT_PATH } from '../../init/agent/steps/run.ts';
import { linkIsUp, parseLease, prefixOf } from '../../init/agent/steps/net.ts';
import { COLDPLUG, COLDPLUG_SCRIPT, readModaliases } from '../../init/agent/steps/drivers.ts';
import { earlyMountScript } from '../../init/agent/steps/mounts.ts';
import { readInventory } from '../../init/agent/steps/inventory.ts';
import { diskIds } from '../../init/agent/steps/disk.ts';
import { EventReporter } from '../../init/agent/reporter.ts';
import { have } from '../helpers/netns.ts';

const quiet = { say: () => {}, warn: () => {} };

function head(file: string): Buffer {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(FS_PROBE_BYTES);
  const n = readSync(fd, b, 0, b.length, 0);
  closeSync(fd);
  return b.subarray(0, n);
}

test('filesystem detection from real superblocks', { skip: have('mke2fs') ? false : 'mke2fs is not installed' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-fs-'));
  try {
    for (const t of ['ext2', 'ext3', 'ext4']) {
      execFileSync('mke2fs', ['-q', '-F', '-t', t, join(dir, t), '8M']);
      assert.equal(detectFsType(head(join(dir, t))), t);
    }
    if (have('busybox')) {
      writeFileSync(join(dir, 'fat'), Buffer.alloc(8 << 20));
      execFileSync('busybox', ['mkdosfs', join(dir, 'fat')]);
      assert.equal(detectFsType(head(join(dir, 'fat'))), 'vfat');
    }
    assert.equal(detectFsType(Buffer.alloc(FS_PROBE_BYTES)), null);
    const xfs = Buffer.alloc(4096); xfs.write('XFSB', 0);
    assert.equal(detectFsType(xfs), 'xfs');
    const sq = Buffer.alloc(4096); sq.write('hsqs', 0);
    assert.equal(detectFsType(sq), 'squashfs');
    const ero = Buffer.alloc(4096); ero.writeUInt32LE(0xe0f5e1e2, 1024);
    assert.equal(detectFsType(ero), 'erofs');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n# comment\nnobody:x:65534:65534::/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\nstaff:x:50:\n';

test('User: name, uid, user:group, uid:gid, resolved in the image', () => {
  assert.deepEqual(resolveUser(null, PASSWD, GROUP), { uid: 0, gid: 0, home: '/root' });
  assert.deepEqual(resolveUser('www-data', PASSWD, GROUP), { uid: 33, gid: 33, home: '/var/www' });
  assert.deepEqual(resolveUser('33', PASSWD, GROUP), { uid: 33, gid: 33, home: '/var/www' });
  assert.deepEqual(resolveUser('www-data:staff', PASSWD, GROUP), { uid: 33, gid: 50, home: '/var/www' });
  assert.deepEqual(resolveUser('1234:5678', PASSWD, GROUP), { uid: 1234, gid: 5678, home: null });
  assert.deepEqual(resolveUser('1234', PASSWD, GROUP), { uid: 1234, gid: 1234, home: null });
  assert.throws(() => resolveUser('ghost', PASSWD, GROUP), /"ghost" is not in the image's \/etc\/passwd/);
  assert.throws(() => resolveUser('www-data:ghosts', PASSWD, GROUP), /group "ghosts"/);
});

test('the entrypoint runs through busybox nsenter: root, working dir, ids, env', () => {
  const c = entrypointCommand({ argv: ['nginx', '-g', 'daemon off;'], env: ['A=1', 'B=x=y'], workingDir: '/srv', user: 'www' }, { uid: 33, gid: 33, home: '/var/www' }, '/mnt');
  assert.equal(c.cmd, '/bin/busybox');
  assert.deepEqual(c.args, ['nsenter', '-r/mnt', '-w/mnt/srv', '-S', '33', '-G', '33', '-F', 'nginx', '-g', 'daemon off;']);
  assert.deepEqual(c.env, { A: '1', B: 'x=y', PATH: DEFAULT_PATH, HOME: '/var/www', TERM: 'linux' });
  const root = entrypointCommand({ argv: ['/x'], env: ['PATH=/opt/bin'], workingDir: null, user: null }, { uid: 0, gid: 0, home: '/root' }, '/mnt');
  assert.deepEqual(root.args, ['nsenter', '-r/mnt', '-w/mnt/', '-F', '/x']);
  assert.equal(root.env.PATH, '/opt/bin');
  assert.throws(() => entrypointCommand({ argv: [], env: [], workingDir: null, user: null }, { uid: 0, gid: 0, home: null }), /neither Entrypoint nor Cmd/);
});

test('the entrypoint command really chroots, changes directory and drops privileges', { skip: process.getuid?.() === 0 && have('busybox') ? false : 'needs root and busybox' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'iba-root-'));
  try {
    chmodSync(dir, 0o755); mkdirSync(join(dir, 'bin')); mkdirSync(join(dir, 'work'));
    execFileSync('cp', ['/usr/bin/busybox', join(dir, 'bin/busybox')]);
    for (const a of ['sh', 'id', 'pwd']) symlinkSync('busybox', join(dir, 'bin', a));
    const c = entrypointCommand({ argv: ['sh', '-c', 'echo "$(pwd) $(id -u):$(id -g) $GREETING"'], env: ['GREETING=hi', 'PATH=/bin'], workingDir: '/work', user: null },
      { uid: 1000, gid: 1001, home: null }, dir);
    const out = execFileSync('busybox', c.args, { env: c.env, encoding: 'utf8' });
    assert.equal(out.trim(), '/work 1000:1001 hi');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('udhcpc lease files and netmasks', () => {
  const l = parseLease('ip=10.0.0.5\nmask=24\nrouter=10.0.0.1 10.0.0.2\ndns=1.1.1.1 8.8.8.8\ndomain=lab\nhostname=\n');
  assert.equal(l.ip, '10.0.0.5');
  assert.equal(l.router, '10.0.0.1 10.0.0.2');
  assert.equal(l.hostname, '');
  assert.equal(prefixOf('24'), 24);
  assert.equal(prefixOf('255.255.254.0'), 23);
  assert.equal(prefixOf(undefined), 24);
});

test('inventory from /sys and /proc trees', async () => {
  const root = mkdtempSync(join(tmpdir(), 'iba-inv-'));
  try {
    const w = (p: string, s: string) => { mkdirSync(join(root, p, '..'), { recursive: true }); writeFileSync(join(root, p), s); };
    w('proc/cpuinfo', 'processor\t: 0\nmodel name\t: QEMU Virtual CPU\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU\n');
    w('proc/meminfo', 'MemTotal:        1000000 kB\n');
    w('proc/sys/kernel/osrelease', '6.1.0-56-amd64\n');
    w('sys/block/vda/size', '131072\n'); w('sys/block/vda/serial', 'disk-1\n'); w('sys/block/vda/queue/rotational', '0\n');
    w('sys/block/sda/size', '2048\n'); w('sys/block/sda/device/model', 'QEMU HARDDISK   \n'); w('sys/block/sda/queue/rotational', '1\n');
    w('sys/block/loop0/size', '100\n');
    w('sys/class/net/lo/address', '00:00:00:00:00:00\n');
    w('sys/class/net/eth0/address', '52:54:00:AA:BB:CC\n'); w('sys/class/net/eth0/carrier', '1\n'); w('sys/class/net/eth0/speed', '1000\n');
    mkdirSync(join(root, 'sys/class/net/eth0/device'), { recursive: true });
    mkdirSync(join(root, 'sys/bus/pci/drivers/virtio_net'), { recursive: true });
    symlinkSync(join(root, 'sys/bus/pci/drivers/virtio_net'), join(root, 'sys/class/net/eth0/device/driver'));
    w('sys/class/dmi/id/sys_vendor', 'QEMU\n'); w('sys/class/dmi/id/product_serial', 'S123\n');
    const inv = await readInventory(join(root, 'sys'), join(root, 'proc'));
    assert.deepEqual(inv.cpus, { count: 2, model: 'QEMU Virtual CPU' });
    assert.equal(inv.memoryBytes, 1000000 * 1024);
    assert.deepEqual(inv.disks, [
      { name: 'sda', sizeBytes: 2048 * 512, model: 'QEMU HARDDISK', serial: undefined, rotational: true },
      { name: 'vda', sizeBytes: 131072 * 512, model: undefined, serial: 'disk-1', rotational: false },
    ]);
    assert.deepEqual(inv.nics, [{ name: 'eth0', mac: '52:54:00:aa:bb:cc', driver: 'virtio_net', carrier: true, speedMbps: 1000 }]);
    assert.equal(inv.dmi?.vendor, 'QEMU');
    assert.equal(inv.dmi?.serial, 'S123');
    assert.equal(inv.firmware, 'bios');
    assert.equal(inv.kernel, '6.1.0-56-amd64');
    assert.deepEqual(await diskIds('vda', join(root, 'sys')), ['virtio-disk-1']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('reporter: batches events, retries a failing server, resolves final only once acknowledged', async (t) => {
  const bodies: Array<{ auth?: string; body: { workflowId: string; events: unknown[] } }> = [];
  let failures = 2;
  const srv = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => {
      if (failures-- > 0) { res.writeHead(503); res.end('busy'); return; }
      bodies.push({ auth: req.headers.authorization, body: JSON.parse(b) });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ accepted: 1, state: 'running' }));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }));
  const port = (srv.address() as AddressInfo).port;
  const rep = new EventReporter({ server: `http://127.0.0.1:${port}`, workflowId: 'wf', token: 'sekrit', console: quiet, batchDelayMs: 5, maxBackoffMs: 20 });
  rep.send({ state: 'streaming' });
  rep.send({ bytesDone: 1, bytesTotal: 10 });
  rep.send({ bytesDone: 5, bytesTotal: 10 });   // collapses into the previous progress event
  const ok = await rep.final({ state: 'succeeded', exitCode: 0 });
  assert.equal(ok, true);
  assert.equal(rep.pending, 0);
  const events = bodies.flatMap((b) => b.body.events) as Array<{ id?: string }>;
  assert.ok(events.every((e) => typeof e.id === 'string'), 'every event carries its id');
  assert.deepEqual(events.map(({ id: _id, ...e }) => e), [{ state: 'streaming' }, { bytesDone: 5, bytesTotal: 10 }, { state: 'succeeded', exitCode: 0 }]);
  assert.ok(bodies.every((b) => b.auth === 'Bearer sekrit' && b.body.workflowId === 'wf'));
  assert.equal(rep.serverState, 'running');
});

test('reporter: final gives up after maxAttempts when the server is unreachable', async () => {
  const rep = new EventReporter({ server: 'http://127.0.0.1:9', workflowId: 'wf', token: 't', console: quiet, maxBackoffMs: 5, timeoutMs: 500 });
  assert.equal(await rep.final({ state: 'failed', message: 'x' }, { maxAttempts: 2 }), false);
  assert.equal(rep.pending, 1);
});

test('reporter: a progress event sent while the previous batch is on the wire is not lost', async (t) => {
  const got: unknown[] = [];
  const srv = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => setTimeout(() => {
      got.push(...JSON.parse(b).events);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"accepted":1,"state":"streaming"}');
    }, 50));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }));
  const rep = new EventReporter({ server: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, workflowId: 'wf', token: 't', console: quiet, batchDelayMs: 1 });
  rep.send({ bytesDone: 1, bytesTotal: 10 });
  await new Promise((r) => setTimeout(r, 20));        // the first batch is now in flight
  rep.send({ bytesDone: 10, bytesTotal: 10 });
  await rep.final({ state: 'verifying' });
  assert.deepEqual((got as Array<{ id?: string }>).map(({ id: _id, ...e }) => e), [{ bytesDone: 1, bytesTotal: 10 }, { bytesDone: 10, bytesTotal: 10 }, { state: 'verifying' }]);
});

test('the scripts init runs before the agent (early mounts, coldplug) are valid shell and leave the coldplug result where the agent waits', () => {
  for (const script of [earlyMountScript(true), COLDPLUG_SCRIPT]) execFileSync('sh', ['-n', '-c', script]);
  assert.match(earlyMountScript(true), /^\[ -e \/proc\/self \] \|\| \{ mkdir -p \/proc && mount -t proc/);
  assert.ok(COLDPLUG_SCRIPT.includes(`mv ${COLDPLUG.done}.tmp ${COLDPLUG.done}`), 'the result appears at once (rename)');
  assert.ok(COLDPLUG_SCRIPT.includes(`> ${COLDPLUG.aliases}`));
  assert.match(COLDPLUG_SCRIPT, /modprobe -q -a \$all \$extra/);
  assert.match(COLDPLUG_SCRIPT, /ironboot\.modules=/);
});

test('linkIsUp reads IFF_UP from sysfs; readModaliases collects every device alias once', async () => {
  const root = mkdtempSync(join(tmpdir(), 'iba-sys-'));
  try {
    for (const [name, flags] of [['eth0', '0x1003'], ['eth1', '0x1002']]) {
      mkdirSync(join(root, 'class/net', name), { recursive: true });
      writeFileSync(join(root, 'class/net', name, 'flags'), `${flags}\n`);
    }
    assert.equal(await linkIsUp('eth0', root), true);
    assert.equal(await linkIsUp('eth1', root), false);
    assert.equal(await linkIsUp('eth9', root), false);
    for (const [bus, dev, alias] of [['pci', '0000:00:03.0', 'pci:v00001AF4d00001000'], ['virtio', 'virtio0', 'virtio:d00000001v00001AF4'], ['pci', '0000:00:04.0', 'pci:v00001AF4d00001000']]) {
      mkdirSync(join(root, 'bus', bus, 'devices', dev), { recursive: true });
      writeFileSync(join(root, 'bus', bus, 'devices', dev, 'modalias'), `${alias}\n`);
    }
    mkdirSync(join(root, 'bus/pci/devices/0000:00:05.0'));   // no modalias
    assert.deepEqual(await readModaliases(root), ['pci:v00001AF4d00001000', 'virtio:d00000001v00001AF4']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
