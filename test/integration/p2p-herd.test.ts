/**
 * Peer-to-peer disk fetching over real sockets: four simulated machines (test/helpers/herd) boot one after the
 * other against a real `ironboot serve` (peer-to-peer on by default, 64 KiB chunks), each serving its verified
 * chunks on its own address. The second machine's peer server corrupts every chunk it serves. The first machine
 * fetches everything from the server, the second from the first. The third is sent to the idle second one, finds
 * the sha256 wrong, fetches those chunks from the server, reports the peer, and is never sent there again; the
 * fourth never sees it. Every disk still verifies (the whole stream's sha256), and the daemon's own counter shows
 * the server sent far less than four disks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsUnavailable } from '../helpers/netns.ts';
import { Herd } from '../helpers/herd/index.ts';
import { metricSum } from '../helpers/herd/stats.ts';

const skip = netnsUnavailable('zstd');

test('p2p: later machines fetch the disk from peers; a corrupt peer is caught by its hash, reported and dropped', { skip, timeout: 300_000 }, async (t) => {
  const herd = await Herd.create(4);
  t.after(() => herd.destroy());
  const [first, bad] = herd.machines;
  const run = await herd.runIronboot({ kernelBytes: 64 << 10, initrdBytes: 64 << 10, diskPayloadBytes: 1 << 20 }, {
    serveArgs: ['--p2p-chunk-size', '65536', '--log-level', 'debug'],
    runner: { sequential: true, holdEntrypoints: true, corruptPeers: [bad.mac] },
  });
  const s = run.summary;
  assert.deepEqual(s.failed, [], `machines failed:\n${s.failed.map((f) => `${f.mac}: ${f.error}`).join('\n')}\n--- daemon (tail) ---\n${run.log.slice(-3000)}`);
  assert.deepEqual(run.report.finalStates, { succeeded: 4 });
  const disk = run.report.image!;
  const [r0, r1, r2, r3] = run.report.results;
  const chunks = Math.ceil(disk.compressedSize / 65536);
  const peerOf = (m: { ip: string }) => `${m.ip}:7480`;
  t.diagnostic(`disk ${disk.compressedSize} bytes, ${chunks} chunks; server bytes per machine ${[r0, r1, r2, r3].map((r) => r.serverDiskBytes).join(', ')}; ` +
    `peer bytes ${[r0, r1, r2, r3].map((r) => r.peerDiskBytes).join(', ')}; refused ${JSON.stringify(r2.badPeers)}; egress ratio ${s.egressRatio.toFixed(2)}`);
  assert.ok(chunks >= 8, `the disk spans several chunks (${chunks})`);
  // the first machine had nobody to ask; the second took (nearly) everything from the first
  assert.equal(r0.serverDiskBytes, disk.compressedSize);
  assert.ok(r1.serverDiskBytes < disk.compressedSize * 0.25, `the server sent the second machine ${r1.serverDiskBytes} of ${disk.compressedSize} bytes`);
  assert.ok(r1.chunkSources.filter((p) => p === peerOf(first)).length >= chunks * 0.75);
  // the third was sent to the corrupt second one: the hash caught it, the server served those chunks, the peer was reported
  assert.ok(r2.badPeers.length >= 1, 'the corrupt chunks were refused');
  assert.ok(r2.badPeers.every((b) => b.peer === peerOf(bad) && b.reason === 'hash'), JSON.stringify(r2.badPeers));
  assert.ok(!r2.chunkSources.includes(peerOf(bad)), 'no chunk of the corrupt peer was used');
  // tried only for the chunks already in flight when the first one failed (the agent's window of 8), then never again
  assert.ok(r2.badPeers.length <= 8, `the corrupt peer was tried ${r2.badPeers.length} times`);
  assert.ok(r2.serverDiskBytes < disk.compressedSize * 0.5, `the server sent the third machine ${r2.serverDiskBytes} of ${disk.compressedSize} bytes`);
  assert.equal(r3.badPeers.length, 0);
  assert.ok(!r3.chunkSources.includes(peerOf(bad)));
  assert.ok(r3.serverDiskBytes < disk.compressedSize * 0.25, `the server sent the fourth machine ${r3.serverDiskBytes} of ${disk.compressedSize} bytes`);
  // the daemon's own counters: far less than three disks left the server, and it counted the report
  const sent = metricSum(run.report.daemonMetrics ?? '', 'ironboot_image_bytes_sent_total', 'kind="zst"')!;
  assert.ok(sent < 1.5 * disk.compressedSize, `server sent ${sent} bytes for 4 × ${disk.compressedSize}`);
  assert.ok(metricSum(run.report.daemonMetrics ?? '', 'ironboot_p2p_bad_peer_reports_total')! >= 1);
  assert.ok(metricSum(run.report.daemonMetrics ?? '', 'ironboot_p2p_chunks_assigned_total', 'source="peer"')! >= chunks * 0.75);
  assert.match(run.log, /peer .* reported bad \(hash\)/);
});
