/**
 * mode install through the API: validation at creation (an image without a kernel or initrd, target ram, a target
 * too small for the bootable disk), machines' sshKeys (validated, shown), the hello's spec (the bootable disk and the
 * first-boot files), /install/<id>.disk.zst's auth, and the EC2-style metadata route (source address + the MAC the
 * neighbour table holds for it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inProcessApp, readyImage, bootTokenFor, silentLog, tempDir } from '../helpers/daemon.ts';
import imageFilesRoutes from '../../server/http/routes/image-files.ts';
import { createBootDiskService, GRUB_DIRS } from '../../server/images/bootable.ts';
import metadataRoutes, { parseArpTable } from '../../server/http/routes/metadata.ts';
import { createHash } from 'node:crypto';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example';
const skip = !existsSync(join(GRUB_DIRS.efi, 'moddep.lst')) || spawnSync('bash', ['-c', 'command -v mkfs.vfat && command -v mcopy && command -v sfdisk']).status !== 0
  ? 'GRUB, dosfstools, mtools or sfdisk missing (deploy/setup.sh)' : false;

function ext4(path: string, files: Record<string, string>) {
  const root = `${path}.d`;
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  for (const [p, c] of Object.entries(files)) { mkdirSync(join(root, p, '..'), { recursive: true }); writeFileSync(join(root, p), c); }
  const r = spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'ironboot', '-d', root, path, '8M'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  rmSync(root, { recursive: true, force: true });
  const sha = createHash('sha256').update(spawnSync('cat', [path], { maxBuffer: 64 << 20 }).stdout).digest('hex');
  return { rawSize: statSync(path).size, rawSha256: sha };
}

test('install workflows: validation, sshKeys, the hello spec, /install files, EC2 metadata by address and MAC', { skip }, async () => {
  const arp = new Map<string, string>();
  const dir = tempDir();
  const imagesDir = join(dir.path, 'images');
  mkdirSync(imagesDir, { recursive: true });
  const bootDisks = createBootDiskService({ imagesDir, ext4Path: (id) => join(imagesDir, `${id}.ext4`), log: silentLog() });
  const imageService = { filePath: (id: string, kind: string) => join(imagesDir, `${id}.ext4${kind === 'zst' ? '.zst' : ''}`), removeFiles() {} };
  const ctx = await inProcessApp({ dataDir: dir.path, extra: { plugins: [
    { plugin: async (a, d) => metadataRoutes(a as never, { ...d, neighbours: (ip: string) => arp.get(ip) ?? null } as never) },
    { plugin: async (a, d) => imageFilesRoutes(a, { ...d, imageService: imageService as never, bootDisks }) },
  ] } });
  const { app, store, auth, workflows } = ctx;
  try {
    workflows.bootDisks = bootDisks;
    const good = ext4(join(imagesDir, 'aaaa0001.ext4'), { 'boot/vmlinuz-6.1.0-9-amd64': 'k', 'boot/initrd.img-6.1.0-9-amd64': 'i', 'etc/fstab': '' });
    const bare = ext4(join(imagesDir, 'bbbb0002.ext4'), { 'etc/hostname': 'x\n' });
    const nokernel = ext4(join(imagesDir, 'cccc0003.ext4'), { 'boot/vmlinuz-6.1.0-9-amd64': 'k' });
    store.images.insert(readyImage({ id: 'aaaa0001', name: 'debian-boot', format: 'ext4', ...good }));
    store.images.insert(readyImage({ id: 'bbbb0002', name: 'no-kernel', format: 'ext4', ...bare }));
    store.images.insert(readyImage({ id: 'cccc0003', name: 'no-initrd', format: 'ext4', ...nokernel }));

    // --- sshKeys on machines ---
    const bad = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: auth, payload: { mac: '52:54:00:91:00:01', sshKeys: [KEY, 'ssh-ed25519 AAAAB3NzaC1yc2E= x'] } });
    assert.equal(bad.statusCode, 400, bad.body);
    assert.equal(bad.json().field, 'sshKeys[1]');
    assert.match(bad.json().message, /does not hold a ssh-ed25519 key/);
    const nl = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: auth, payload: { mac: '52:54:00:91:00:01', sshKeys: [`${KEY}\nssh-rsa x`] } });
    assert.equal(nl.json().field, 'sshKeys[0]');
    assert.equal(store.machines.getByMac('52:54:00:91:00:01'), undefined, 'nothing written');
    const m = await app.inject({ method: 'POST', url: '/api/v1/machines', headers: auth, payload: {
      mac: '52:54:00:91:00:01', hostname: 'node-1.lab', sshKeys: [KEY], ipv4: { address: '10.91.3.21', prefix: 24, gateway: '10.91.3.1', dns: ['10.91.3.1'] },
    } });
    assert.equal(m.statusCode, 201, m.body);
    assert.deepEqual(m.json().sshKeys, [KEY]);
    const shown = await app.inject({ method: 'GET', url: '/api/v1/machines/52-54-00-91-00-01', headers: auth });
    assert.deepEqual(shown.json().sshKeys, [KEY]);

    // --- validation at creation ---
    const create = (over: Record<string, unknown>) => app.inject({ method: 'POST', url: '/api/v1/workflows', headers: auth,
      payload: { machine: '52:54:00:91:00:01', image: 'debian-boot', target: '/dev/vda', mode: 'install', after: 'reboot', ...over } });
    let r = await create({ image: 'no-kernel' });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().field, 'image');
    assert.match(r.json().message, /no-kernel cannot boot on its own: .*carries no kernel/);
    r = await create({ image: 'no-initrd' });
    assert.equal(r.json().field, 'image');
    assert.match(r.json().message, /vmlinuz-6\.1\.0-9-amd64 but no \/boot\/initrd\.img-6\.1\.0-9-amd64/);
    r = await create({ target: 'ram' });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().field, 'target');
    r = await create({ targetSize: 64 << 20 });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().field, 'targetSize');
    assert.match(r.json().message, /bootable disk of image debian-boot is \d+ bytes; a target of 67108864 bytes cannot hold it/);
    assert.equal(store.workflows.list().length, 0, 'no workflow was written');

    r = await create({ kernelArgs: "quiet ironboot.x='y'" });
    assert.equal(r.statusCode, 201, r.body);
    const wf = r.json();

    // --- hello: the spec names the bootable disk and the first-boot files ---
    const token = bootTokenFor(store, wf.id, '127.0.0.1');
    const hello = await app.inject({ method: 'POST', url: '/agent/v1/hello', headers: { authorization: `Bearer ${token}` }, payload: { workflowId: wf.id, mac: '52:54:00:91:00:01' } });
    assert.equal(hello.statusCode, 200, hello.body);
    const spec = hello.json();
    const disk = bootDisks.get('aaaa0001')!;
    assert.ok(disk, 'built');
    assert.match(spec.image.url, /\/install\/aaaa0001\.disk\.zst$/);
    assert.equal(spec.image.format, 'disk');
    assert.equal(spec.image.rawSize, disk.rawSize);
    assert.equal(spec.image.rawSha256, disk.rawSha256);
    assert.equal(spec.install.rootPartition, 3);
    assert.equal(spec.install.rootPartUuid, disk.layout.partGuids.root);
    const files = new Map<string, any>(spec.install.files.map((f: any) => [f.path, f]));
    assert.equal(files.get('/etc/hostname').content, 'node-1\n');
    assert.match(files.get('/etc/systemd/network/10-ironboot.network').content, /MACAddress=52:54:00:91:00:01[\s\S]*Address=10\.91\.3\.21\/24[\s\S]*Gateway=10\.91\.3\.1[\s\S]*DNS=10\.91\.3\.1/);
    assert.equal(files.get('/root/.ssh/authorized_keys').content, `${KEY}\n`);
    assert.equal(files.get('/root/.ssh/authorized_keys').mode, 0o600);
    assert.match(files.get('/var/lib/cloud/seed/nocloud/meta-data').content, /"instance-id": "i-[0-9a-f]{17}"/);
    assert.match(files.get('/var/lib/cloud/seed/nocloud/user-data').content, /^#cloud-config\n[\s\S]*ssh_authorized_keys/);
    assert.match(files.get('/var/lib/cloud/seed/nocloud/network-config').content, /"10\.91\.3\.21\/24"/);
    assert.equal(files.get('/etc/ironboot/grub.cfg').content.split('\n')[1], `set ironboot_args='quiet ironboot.x='\\''y'\\'''`);

    // --- /install/<id>.disk.zst: the session token of this workflow, or the admin token ---
    const sess = { authorization: `Bearer ${spec.sessionToken}` };
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const dl = await fetch(`${url}/install/aaaa0001.disk.zst`, { headers: sess });
    assert.equal(dl.status, 200);
    assert.equal(createHash('sha256').update(Buffer.from(await dl.arrayBuffer())).digest('hex'), disk.compressedSha256);
    assert.equal((await fetch(`${url}/install/aaaa0001.disk.zst`)).status, 401);
    assert.equal((await fetch(`${url}/install/bbbb0002.disk.zst`, { headers: sess })).status, 403);
    const head = await fetch(`${url}/install/aaaa0001.disk`, { headers: { ...auth, range: 'bytes=0-511' } });
    assert.equal(head.status, 206);
    assert.equal(Buffer.from(await head.arrayBuffer()).readUInt16LE(510), 0xaa55, 'the MBR');

    // --- metadata: unknown until the install succeeded, then only to the machine's address with its MAC ---
    const md = (path: string, ip: string) => app.inject({ method: 'GET', url: path, remoteAddress: ip });
    arp.set('10.91.3.21', '52:54:00:91:00:01');
    assert.equal((await md('/2009-04-04/meta-data/instance-id', '10.91.3.21')).statusCode, 404, 'the install has not succeeded yet');
    for (const s of ['streaming', 'verifying', 'mounted', 'running', 'succeeded'] as const) workflows.transition(wf.id, s);
    const id = await md('/2009-04-04/meta-data/instance-id', '10.91.3.21');
    assert.equal(id.statusCode, 200);
    assert.match(id.body, /^i-[0-9a-f]{17}$/);
    assert.equal(id.body, JSON.parse(files.get('/var/lib/cloud/seed/nocloud/meta-data').content)['instance-id'], 'the seed and the metadata agree');
    assert.deepEqual((await md('/2009-04-04/meta-data/', '10.91.3.21')).body.split('\n').sort(), ['hostname', 'instance-id', 'local-hostname', 'local-ipv4', 'mac', 'public-keys/']);
    assert.equal((await md('/2009-04-04/meta-data/local-ipv4', '10.91.3.21')).body, '10.91.3.21');
    assert.equal((await md('/2009-04-04/meta-data/hostname', '10.91.3.21')).body, 'node-1.lab');
    assert.equal((await md('/2009-04-04/meta-data/public-keys/', '10.91.3.21')).body, '0=ops@example');
    assert.equal((await md('/2009-04-04/meta-data/public-keys/0/openssh-key', '10.91.3.21')).body, KEY);
    assert.match((await md('/2009-04-04/user-data', '10.91.3.21')).body, /^#cloud-config/);
    assert.equal((await md('/latest/meta-data/instance-id', '10.91.3.21')).body, id.body);
    // another address, no neighbour entry, or another MAC on the machine's address: 404
    assert.equal((await md('/2009-04-04/meta-data/instance-id', '10.91.3.99')).statusCode, 404);
    arp.delete('10.91.3.21');
    assert.equal((await md('/2009-04-04/meta-data/instance-id', '10.91.3.21')).statusCode, 404);
    arp.set('10.91.3.21', '52:54:00:91:00:99');
    const spoof = await md('/2009-04-04/user-data', '10.91.3.21');
    assert.equal(spoof.statusCode, 404);
    assert.doesNotMatch(spoof.body, /ssh|52:54:00:91:00:01/);
  } finally {
    await ctx.close();
    dir.remove();
  }
});

test('parseArpTable: complete entries only', () => {
  const t = parseArpTable(`IP address       HW type     Flags       HW address            Mask     Device
10.91.3.21       0x1         0x2         52:54:00:91:00:01     *        br0
10.91.3.22       0x1         0x0         00:00:00:00:00:00     *        br0
10.91.3.23       0x1         0x6         52:54:00:91:00:03     *        br0
`);
  assert.deepEqual([...t], [['10.91.3.21', '52:54:00:91:00:01'], ['10.91.3.23', '52:54:00:91:00:03']]);
});
