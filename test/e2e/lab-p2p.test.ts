/**
 * Peer-to-peer disk fetching with real machines: two QEMU VMs PXE-boot in the lab one after the other. The first
 * streams the httpd container disk from the server and keeps running it, serving its verified chunks on port 7480;
 * the second streams mostly from the first (its agent's console says how many chunks came from peers), and the
 * daemon's own counter shows far less than two disks left the server. Both disks verify and both httpds serve.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabEnv, buildHttpdDisk, provision, labUnavailable, HTTPD_PAGE, BOOT_FAILED } from '../helpers/lab-env.ts';

const CHUNKS = /chunks: (\d+) from peers \((\d+) bytes\), (\d+) from the server \((\d+) bytes\)/;

test('two VMs: the second streams its disk mostly from the first', { skip: labUnavailable(), timeout: 900_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 23, serveArgs: ['--p2p-chunk-size', '65536'] });
  t.after(() => env.destroy());
  const img = await buildHttpdDisk(env);
  const first = await provision(env, { vm: { name: 'p2p-a', nic: 'virtio', firmware: 'bios' }, n: 1, workflow: { image: 'httpd' } });
  await env.waitWorkflow(first.wfId, (w) => w.state === 'running', 360_000, first.vm);
  const a = first.vm.text().match(CHUNKS);
  assert.ok(a, `the first agent fetched by chunks:\n${first.vm.tail()}`);
  assert.equal(Number(a[1]), 0, 'nobody had the disk before the first machine');

  const second = await provision(env, { vm: { name: 'p2p-b', nic: 'virtio', firmware: 'bios' }, n: 2, workflow: { image: 'httpd' } });
  await env.waitWorkflow(second.wfId, (w) => w.state === 'running', 360_000, second.vm);
  const b = second.vm.text().match(CHUNKS);
  assert.ok(b, second.vm.tail());
  const [peerChunks, peerBytes, serverChunks, serverBytes] = b.slice(1).map(Number);
  t.diagnostic(`second VM: ${peerChunks} chunks (${peerBytes} bytes) from the first, ${serverChunks} (${serverBytes} bytes) from the server; disk ${img.compressedSize} bytes`);
  assert.ok(peerChunks > 0 && peerBytes >= 0.75 * img.compressedSize, `most of the disk came from the first VM (${peerBytes} of ${img.compressedSize})`);
  assert.ok(serverBytes < 0.25 * img.compressedSize);
  for (const vm of [first.vm, second.vm]) assert.equal(vm.find(BOOT_FAILED), -1, vm.tail());

  const metrics = await env.request(`${env.address}:8080`, 'GET', '/metrics');
  const sent = Number(/^ironboot_image_bytes_sent_total\{kind="zst"\} (\d+)/m.exec(metrics.text)?.[1] ?? NaN);
  assert.ok(sent < 1.5 * img.compressedSize, `the server sent ${sent} bytes for two disks of ${img.compressedSize}`);
  for (const address of [first.address, second.address]) {
    let page = { status: 0, text: '' };
    for (let i = 0; i < 20 && page.status !== 200; i++) {
      page = await env.request(`${address}:80`, 'GET', '/').catch((e) => ({ status: 0, text: String(e) }));
      if (page.status !== 200) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(page.text, HTTPD_PAGE);
  }
});
