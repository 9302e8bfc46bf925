/**
 * A rack at once: 50 simulated machines (test/helpers/herd) power on together against one real `ironboot serve`
 * (DHCP in reservation mode on a bridge in a namespace, TFTP, HTTP, the agent API). Each machine has its own
 * macvlan and reservation and boots over real sockets: DHCP → TFTP undionly.kpxe → DHCP (iPXE) → boot script,
 * kernel, initramfs → DHCP (agent) → hello → the container disk (sha256 checked) → events → succeeded.
 * Every workflow must reach succeeded and no DHCP request may go unanswered. Peer-to-peer fetching is on (64 KiB
 * chunks, so the small disk spans many): the machines take chunks from each other, and the server's container-disk
 * bytes (its own counter) stay well below N disks. A second herd runs with peers off: every machine takes and hashes
 * the whole disk. No timings are asserted (test/bench/herd.ts measures them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsUnavailable } from '../helpers/netns.ts';
import { Herd } from '../helpers/herd/index.ts';

const N = Number(process.env.IRONBOOT_HERD_N ?? 50);
const skip = netnsUnavailable('zstd', 'tc') || (process.env.CI_SKIP_HERD ? 'CI_SKIP_HERD set' : false);

test(`herd: ${N} machines provision at once against ironboot serve`, { skip, timeout: 300_000 }, async (t) => {
  const herd = await Herd.create(N);
  t.after(() => herd.destroy());
  // small stand-ins: the server serves them as its real artifacts and a container disk it builds itself
  const run = await herd.runIronboot({ kernelBytes: 1 << 20, initrdBytes: 2 << 20, diskPayloadBytes: 1 << 20 }, { serveArgs: ['--p2p-chunk-size', '65536'] });
  const s = run.summary;
  t.diagnostic(`span ${(s.spanMs / 1000).toFixed(2)} s, DHCP drops ${s.dhcpDrops}, TFTP retransmissions ${s.tftpRetransmits}, ` +
    `event-loop lag p99 max ${s.lagP99MaxMs?.toFixed(1)} ms, RSS max ${((s.rssMaxBytes ?? 0) / 2 ** 20).toFixed(0)} MiB; ` +
    `server egress / (N × disk) ${s.egressRatio.toFixed(3)}, disk p50/p99 ${s.phases.disk.p50.toFixed(0)}/${s.phases.disk.p99.toFixed(0)} ms, ` +
    `peer chunks refused ${s.badPeerChunks}`);
  assert.deepEqual(s.failed, [], `machines failed:\n${s.failed.map((f) => `${f.mac}: ${f.error}`).join('\n')}\n--- daemon (tail) ---\n${run.log.slice(-3000)}`);
  assert.equal(s.succeeded, N);
  assert.deepEqual(run.report.finalStates, { succeeded: N }, 'every workflow, as the API reports it');
  assert.equal(s.dhcpDrops, 0, 'every DHCP request answered without a retransmission');
  const disk = run.report.image!;
  assert.equal(run.report.results.reduce((n, r) => n + r.diskBytes, 0), N * disk.compressedSize, 'each machine got the whole disk');
  // what the daemon itself counted as sent: far less than a disk per machine, the rest came from peers
  assert.ok(s.egressRatio < 0.5, `server egress / (N × disk size) = ${s.egressRatio}`);
  assert.equal(s.peerDiskBytes + s.serverDiskBytesClient, N * disk.compressedSize);
  // the daemon's own counters agree: every workflow went through every state, none left active
  assert.match(run.report.daemonMetrics ?? '', /ironboot_nodejs_eventloop_lag_p99_seconds/);
});

test(`herd: ${N} machines with peer-to-peer off: every machine takes the whole disk from the server`, { skip, timeout: 300_000 }, async (t) => {
  const herd = await Herd.create(N);
  t.after(() => herd.destroy());
  const run = await herd.runIronboot({ kernelBytes: 1 << 20, initrdBytes: 2 << 20, diskPayloadBytes: 1 << 20 }, { serveArgs: ['--no-p2p'] });
  const s = run.summary;
  t.diagnostic(`span ${(s.spanMs / 1000).toFixed(2)} s, DHCP drops ${s.dhcpDrops}, lag p99 over the herd ${s.lagP99RunMs?.toFixed(1)} ms, ` +
    `group commits ${s.groupCommit?.jobs} requests in ${s.groupCommit?.groups} transactions`);
  assert.deepEqual(s.failed, [], `machines failed:\n${s.failed.map((f) => `${f.mac}: ${f.error}`).join('\n')}\n--- daemon (tail) ---\n${run.log.slice(-3000)}`);
  assert.deepEqual(run.report.finalStates, { succeeded: N });
  assert.equal(s.dhcpDrops, 0);
  const disk = run.report.image!;
  // the simulator's own HTTP client (test/helpers/herd/http.ts) hashed each machine's whole disk: the workflow's sha256
  assert.equal(run.report.results.reduce((n, r) => n + r.serverDiskBytes, 0), N * disk.compressedSize);
  assert.ok(Math.abs(s.egressRatio - 1) < 0.01, `the daemon's own counter: ${s.egressRatio} disks per machine`);
  assert.ok(s.lagP99RunMs !== null, 'the daemon exports ironboot_event_loop_delay_seconds');
  // every machine's boot script, hello and event batches went through the group commit, and a rack's requests
  // arriving together shared transactions (WorkflowService.commitSoon)
  assert.ok(s.groupCommit, 'the daemon exports ironboot_group_commit{s,_jobs}_total');
  assert.ok(s.groupCommit.jobs >= 3 * N, `${s.groupCommit.jobs} group-committed requests for ${N} machines`);
  assert.ok(s.groupCommit.groups < s.groupCommit.jobs, `${s.groupCommit.jobs} requests took ${s.groupCommit.groups} transactions`);
});
