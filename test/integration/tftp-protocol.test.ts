/**
 * Protocol behaviour with crafted packets (a dgram client on loopback): UEFI's tsize-then-abort, duplicate
 * ACKs, strays on a transfer port, traversal, write requests, fuzzing, a client that vanishes, caps.
 * Every test runs twice: files on disk through the native transfer loop, and with every transfer in JS.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createTftpServer, type TftpServer } from '../../server/tftp/server.ts';
import { encodeAck, encodeData, encodeError, encodeRequest } from '../../server/tftp/packet.ts';
import { RawTftpClient, rawFetch } from '../helpers/tftp-raw-client.ts';
import { have } from '../helpers/netns.ts';
import { nativeLoopUnavailable, nativeTransferLoop } from '../../server/tftp/native-transfer.ts';

const run = promisify(execFile);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const HOST = '127.0.0.1';

for (const transferLoop of ['auto', 'js'] as const) describe(transferLoop === 'auto' ? 'native loop' : 'JS loop', () => {
  let dir: string;
  const logLines: string[] = [];
  let server: TftpServer;
  let port: number;
  const registry = new Registry();
  const data = randomBytes(300000);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ibt-proto-'));
    mkdirSync(join(dir, 'root'));
    writeFileSync(join(dir, 'root', 'ipxe.efi'), data);
    writeFileSync(join(dir, 'secret'), 'outside the root');
    symlinkSync('../secret', join(dir, 'root', 'escape'));
    symlinkSync('/etc', join(dir, 'root', 'etc'));
    server = await createTftpServer({ log: pino({ level: process.env.IBT_LOG ? 'debug' : 'info' }, { write: (line: string) => { logLines.push(line); if (process.env.IBT_LOG) process.stderr.write(line); } }), registry, host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }], transferLoop });
    port = server.address().port;
    if (transferLoop === 'auto') assert.ok(nativeTransferLoop(), `the native transfer loop is not built: ${nativeLoopUnavailable()}`);
  });

  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function expectError(request: Buffer, code: number): Promise<string> {
    const c = await RawTftpClient.open();
    try {
      c.send(request, port);
      const r = await c.next(3000);
      assert.ok(r, 'no answer');
      assert.equal(r.packet.op, 'error', `expected ERROR ${code}, got ${r.packet.op}`);
      const p = r.packet as { code: number; message: string };
      assert.equal(p.code, code, p.message);
      return p.message;
    } finally { c.close(); }
  }

  test('UEFI: tsize-only request aborted with error 8 after the OACK, then the real windowed request', async () => {
    const c = await RawTftpClient.open();
    try {
      c.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { tsize: 0, blksize: 1468, windowsize: 4 }), port);
      const first = await c.next();
      assert.deepEqual(first?.packet, { op: 'oack', options: { tsize: String(data.length), blksize: '1468', windowsize: '4' } });
      c.send(encodeError(8, 'User aborted the transfer'), first!.from.port);
      // the second request, from the same client port, right after the abort
      const r = await rawFetch(HOST, port, 'ipxe.efi', { blksize: '1468', windowsize: '4' }, { client: c });
      assert.deepEqual(r.oack, { blksize: '1468', windowsize: '4' });
      assert.equal(sha256(r.data), sha256(data));
      assert.notEqual(r.serverPort, first!.from.port);
      // the aborted transfer stays quiet (no OACK retransmission after the abort)
      assert.deepEqual(await c.drain(1500), []);
      assert.match(await registry.metrics(), /ironboot_tftp_transfers_total\{outcome="aborted"\} 1/);
    } finally { c.close(); }
  });

  test("duplicate ACKs never cause duplicate DATA (Sorcerer's Apprentice)", async () => {
    const c = await RawTftpClient.open();
    try {
      c.send(encodeRequest('rrq', 'ipxe.efi', 'octet', {}), port);
      let blocks = 0;
      let dataPackets = 0;
      const chunks: Buffer[] = [];
      for (;;) {
        const r = await c.next(3000);
        assert.ok(r, `stalled after ${blocks} blocks`);
        if (r.packet.op !== 'data') continue;
        dataPackets++;
        if (r.packet.block === ((blocks + 1) & 0xffff)) {
          blocks++;
          chunks.push(Buffer.from(r.packet.data));
        }
        // every ACK three times
        for (let i = 0; i < 3; i++) c.send(encodeAck(r.packet.block), r.from.port);
        if (r.packet.data.length < 512) break;
      }
      assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
      assert.deepEqual(await c.drain(300), []);
      assert.equal(dataPackets, blocks, `${dataPackets} DATA packets for ${blocks} blocks`);
    } finally { c.close(); }
  });

  test('a stranger on a transfer port gets error 5 and does not disturb the transfer', async () => {
    const c = await RawTftpClient.open();
    const stranger = await RawTftpClient.open();
    try {
      c.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { blksize: 1024 }), port);
      const oack = await c.next();
      assert.equal(oack?.packet.op, 'oack');
      const tid = oack!.from.port;
      for (const p of [encodeError(0, 'go away'), encodeAck(0), encodeAck(5), Buffer.from([1]), encodeData(1, Buffer.alloc(3))]) {
        stranger.send(p, tid);
        const r = await stranger.next();
        assert.deepEqual(r?.packet, { op: 'error', code: 5, message: 'unknown transfer ID' });
      }
    } finally { c.close(); stranger.close(); }
    // a transfer that the real client finishes while a stranger keeps interfering
    const a = await RawTftpClient.open();
    const s2 = await RawTftpClient.open();
    try {
      a.send(encodeRequest('rrq', 'ipxe.efi', 'octet', {}), port);
      const chunks: Buffer[] = [];
      for (let block = 1; ; block++) {
        const r = await a.next(3000);
        assert.ok(r && r.packet.op === 'data', `no DATA ${block}`);
        if (r.packet.op !== 'data') break;
        assert.equal(r.packet.block, block & 0xffff);
        chunks.push(Buffer.from(r.packet.data));
        if (block % 50 === 1) s2.send(encodeError(8, 'stray abort'), r.from.port); // a stray ERROR must not abort it
        if (block % 50 === 2) s2.send(encodeAck(block + 5), r.from.port);
        a.send(encodeAck(r.packet.block), r.from.port);
        if (r.packet.data.length < 512) break;
      }
      assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
      const strayAnswers = await s2.drain(300);
      assert.ok(strayAnswers.length > 0 && strayAnswers.every((x) => x.packet.op === 'error' && x.packet.code === 5));
    } finally { a.close(); s2.close(); }
  });

  test('traversal attempts get error packets', async () => {
    for (const name of ['../secret', '../../../../etc/passwd', 'a/../../secret', '..\\secret', 'escape', 'etc/passwd']) {
      await expectError(encodeRequest('rrq', name, 'octet'), 2);
    }
    // absolute paths are mapped into the root: /etc/passwd is looked up as etc/passwd → the symlink is refused
    await expectError(encodeRequest('rrq', '/etc/passwd', 'octet'), 2);
    await expectError(encodeRequest('rrq', '/etc/shadow-nope', 'octet'), 1);
    if (have('tftp')) {
      const r = await run('tftp', [HOST, String(port), '-c', 'get', '../secret', join(dir, 'got')], { timeout: 30000 });
      assert.match(r.stdout, /Error code 2/);
      assert.ok(!existsSync(join(dir, 'got')) || (await import('node:fs')).readFileSync(join(dir, 'got')).length === 0);
    }
  });

  test('write requests get ERROR 2 and write nothing (raw WRQ, curl upload, tftp-hpa put)', async () => {
    assert.match(await expectError(encodeRequest('wrq', 'new.bin', 'octet'), 2), /read-only/);
    writeFileSync(join(dir, 'upload.bin'), 'payload');
    if (have('curl')) {
      await assert.rejects(run('curl', ['-sS', '--max-time', '10', '-T', join(dir, 'upload.bin'), `tftp://${HOST}:${port}/upload.bin`]));
    }
    if (have('tftp')) {
      const r = await run('tftp', [HOST, String(port), '-c', 'put', join(dir, 'upload.bin'), 'upload2.bin'], { timeout: 30000 });
      assert.match(r.stdout, /Error code 2/);
    }
    assert.ok(!existsSync(join(dir, 'root', 'upload.bin')) && !existsSync(join(dir, 'root', 'upload2.bin')));
  });

  test('malformed requests get ERROR 4; a bad mode is refused', async () => {
    await expectError(Buffer.from([0, 1, 0x61, 0x62]), 4); // no NUL
    await expectError(Buffer.concat([Buffer.from([0, 1]), Buffer.from('ipxe.efi\0')]), 4); // no mode
    await expectError(encodeRequest('rrq', 'ipxe.efi', 'mail'), 4);
  });

  test('fuzz: random and mutated packets to port 69 and to a transfer port leave the server answering', async () => {
    let x = 42;
    const rnd = (n: number) => ((x = (x * 1103515245 + 12345) % 2147483648) % n);
    const valid = [
      encodeRequest('rrq', 'ipxe.efi', 'octet', { blksize: 1468, tsize: 0, windowsize: 4, timeout: 1 }),
      encodeRequest('wrq', 'x', 'netascii'), encodeAck(1), encodeData(1, Buffer.alloc(20)), encodeError(8, 'abort'),
    ];
    const mutate = (): Buffer => {
      if (rnd(3) === 0) return randomBytes(rnd(600));
      const b = Buffer.from(valid[rnd(valid.length)]);
      const m = rnd(4);
      if (m === 0) return b.subarray(0, rnd(b.length + 1));
      if (m === 1) { for (let i = 0; i < 1 + rnd(4); i++) b[rnd(b.length)] = rnd(256); return b; }
      if (m === 2) return Buffer.concat([b, randomBytes(rnd(100))]);
      b.writeUInt16BE(rnd(8), 0);
      return b;
    };
    // a transfer in progress whose port gets fuzzed by a stranger and must finish intact
    const real = await RawTftpClient.open();
    const fuzzer = await RawTftpClient.open();
    const peerFuzzer = await RawTftpClient.open();
    try {
      real.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { blksize: 512 }), port);
      const oack = await real.next();
      assert.equal(oack?.packet.op, 'oack');
      const tid = oack!.from.port;
      // a second transfer, fuzzed by its own peer (anything may happen to it, but not to the server)
      peerFuzzer.send(encodeRequest('rrq', 'ipxe.efi', 'octet', {}), port);
      const first = await peerFuzzer.next();
      const tid2 = first!.from.port;
      // finish the real transfer by hand, fuzzing all the while
      real.send(encodeAck(0), tid);
      const chunks: Buffer[] = [];
      for (let block = 1; ; ) {
        for (let i = 0; i < 4; i++) {
          fuzzer.send(mutate(), port);
          fuzzer.send(mutate(), tid);
          peerFuzzer.send(mutate(), tid2);
        }
        const r = await real.next(3000);
        assert.ok(r, `transfer stalled at block ${block}`);
        if (r.packet.op !== 'data' || r.packet.block !== (block & 0xffff)) continue;
        chunks.push(Buffer.from(r.packet.data));
        real.send(encodeAck(r.packet.block), tid);
        block++;
        if (r.packet.data.length < 512) break;
      }
      assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
    } finally { real.close(); fuzzer.close(); peerFuzzer.close(); }
    // the server answers at once: the file, or "busy" while the fuzzer's own requests hold this address's slots
    const deadline = Date.now() + 15000;
    for (;;) {
      // a request may also drop while the request socket's queue is still full of the flood: ask again, as clients do
      const after = await rawFetch(HOST, port, 'ipxe.efi', { blksize: '1468' }).catch((err: Error) => ({ lost: err }));
      if ('lost' in after) { assert.match(after.lost.message, /no answer/); assert.ok(Date.now() < deadline, after.lost.message); continue; }
      if (!after.error) { assert.equal(sha256(after.data), sha256(data)); break; }
      assert.match(after.error.message, /server busy/);
      assert.ok(Date.now() < deadline, 'the fuzzer\'s transfers never freed their slots');
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(await registry.metrics(), /ironboot_tftp_bad_packets_total\{reason="unknown_tid"\} [1-9]/);
  });

  test('a client that vanishes frees its slot after the timeout; caps per client and in total', async (t) => {
    const capped = await createTftpServer({
      log: pino({ level: 'silent' }), registry: new Registry(), host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }],
      maxTransfersPerClient: 1, maxTransfers: 2, maxUnansweredTransfers: 3, maxRetries: 2, transferLoop,
    });
    t.after(() => capped.close());
    const cport = capped.address().port;
    const ghost = await RawTftpClient.open();
    ghost.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { timeout: 1, tsize: 0 }), cport);
    assert.equal((await ghost.next())?.packet.op, 'oack');
    ghost.close(); // vanishes
    const started = Date.now();
    const busy = await rawFetch(HOST, cport, 'ipxe.efi');
    assert.equal(busy.error?.code, 0);
    assert.match(busy.error!.message, /server busy: 1 transfers to 127.0.0.1 already \(limit 1\)/);
    const active = () => capped.activeTransfers;
    assert.equal(active(), 1);
    // the total cap (2): a second address gets a slot; a third gets no answer at all (an ERROR would end a PXE
    // boot), and its repeated request is served once a slot is free again
    const second = await RawTftpClient.open('127.0.0.2');
    t.after(() => second.close());
    second.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { timeout: 1 }), cport);
    assert.equal((await second.next())?.packet.op, 'oack');
    const third = await RawTftpClient.open('127.0.0.3');
    t.after(() => third.close());
    const thirdRrq = encodeRequest('rrq', 'ipxe.efi', 'octet', { tsize: '0' });
    third.send(thirdRrq, cport);
    assert.equal(await third.next(1500), null, 'a request past the total cap goes unanswered (the client retries), not refused');
    second.close(); // vanishes too
    // timeout 1 s × 3 tries: the slots are free again within a few seconds
    let ok = false;
    while (Date.now() - started < 10000) {
      await new Promise((r) => setTimeout(r, 500));
      if (active() === 0) { ok = true; break; }
    }
    assert.ok(ok, 'the vanished transfer still holds its slot');
    const freed = Date.now() - started;
    assert.ok(freed >= 2500, `slot freed after ${freed} ms, before the 3 tries of 1 s`);
    const r = await rawFetch(HOST, cport, 'ipxe.efi');
    assert.equal(sha256(r.data), sha256(data));
    // the client that went unanswered repeats its request, as firmware does, and is served now
    third.send(thirdRrq, cport);
    assert.equal((await third.next())?.packet.op, 'oack');
  });

  test('timeout option above 5 s is declined; a requester that never answers gets 3 sends, no ERROR, and its slot back', async (t) => {
    const c = await RawTftpClient.open();
    t.after(() => c.close());
    c.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { timeout: '255', tsize: '0' }), port);
    const first = await c.next();
    assert.deepEqual(first?.packet, { op: 'oack', options: { tsize: String(data.length) } }); // timeout left out: the server keeps 1 s
    // never answers: the OACK comes 3 times in all (1 s apart), not 6, and no ERROR follows
    const rest = await c.drain(4500);
    assert.deepEqual(rest.map((r) => r.packet.op), ['oack', 'oack']);
    const line = logLines.map((l) => JSON.parse(l)).find((e) => e.client === `127.0.0.1:${c.port}` && e.outcome);
    assert.equal(line?.outcome, 'timeout');
    assert.match(line.reason, /never answered \(the OACK sent 3 times\)/);
  });

  test('a transfer ends at its time limit whatever the client does (ERROR 0 to a slow client)', async (t) => {
    const limited = await createTftpServer({
      log: pino({ level: 'silent' }), registry: new Registry(), host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }],
      maxTransferMs: 1500, transferLoop,
    });
    t.after(() => limited.close());
    const c = await RawTftpClient.open();
    t.after(() => c.close());
    c.send(encodeRequest('rrq', 'ipxe.efi', 'octet'), limited.address().port);
    // a slowloris: ACKs every block, 300 ms later (the file has 586 blocks: 3 minutes at this pace)
    let acks = 0;
    let end: { code: number; message: string } | null = null;
    for (;;) {
      const r = await c.next(3000);
      assert.ok(r, 'silence before the time limit');
      assert.ok(acks < 20, 'still sending after 20 slow ACKs (6 s): no time limit');
      if (r.packet.op === 'error') { end = r.packet as { code: number; message: string }; break; }
      if (r.packet.op !== 'data') continue;
      await new Promise((res) => setTimeout(res, 300));
      c.send(encodeAck(r.packet.block), r.from.port);
      acks++;
    }
    assert.ok(acks >= 2, `${acks} ACKs`);
    assert.equal(end.code, 0);
    assert.match(end.message, /transfer time limit \(1500 ms\) reached at block \d+ of 586/);
    assert.equal(limited.activeTransfers, 0);
  });

  test('unanswered requests hold at most their share of the slots: a real client still gets its file (spoofed flood)', async (t) => {
    const capped = await createTftpServer({
      log: pino({ level: 'silent' }), registry: new Registry(), host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }],
      maxTransfers: 4, maxUnansweredTransfers: 2, transferLoop,
    });
    t.after(() => capped.close());
    const cport = capped.address().port;
    // four requesters that never answer (as spoofed source addresses never do) from four addresses: the first two
    // take the unanswered share; the other two come while those are still within two timeouts (1 s each), so
    // nothing is evicted and they get no answer at all (their clients would retry)
    for (let i = 2; i <= 5; i++) {
      const ghost = await RawTftpClient.open(`127.0.0.${i}`);
      t.after(() => ghost.close());
      ghost.send(encodeRequest('rrq', 'ipxe.efi', 'octet', { tsize: '0' }), cport);
      if (i <= 3) assert.equal((await ghost.next())?.packet.op, 'oack');
      else assert.equal(await ghost.next(300), null, `requester ${i}: no answer while the share is young`);
    }
    assert.equal(capped.activeTransfers, 2);
    // two timeouts later the unanswered ones may be evicted: a real client takes the oldest one's slot
    await new Promise((r) => setTimeout(r, 2000));
    const r = await rawFetch(HOST, cport, 'ipxe.efi', { blksize: '1428' });
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(sha256(r.data), sha256(data));
  });

  test('a requester that repeats its request is there: all retries and never evicted; one never heard again gets 3 sends', async (t) => {
    const srv = await createTftpServer({
      log: pino({ level: 'silent' }), registry: new Registry(), host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }],
      defaultTimeoutMs: 150, maxRetries: 5, maxTransfers: 4, maxUnansweredTransfers: 1, transferLoop,
    });
    t.after(() => srv.close());
    const port = srv.address().port;
    const count = async (c: RawTftpClient) => { let n = 0; while ((await c.next(600))?.packet.op === 'oack') n++; return n; };
    const quiet = await RawTftpClient.open('127.0.0.2');
    t.after(() => quiet.close());
    const slow = await RawTftpClient.open('127.0.0.3');
    t.after(() => slow.close());
    const rrq = encodeRequest('rrq', 'ipxe.efi', 'octet', { tsize: '0' });
    slow.send(rrq, port);
    assert.equal((await slow.next())?.packet.op, 'oack');
    slow.send(rrq, port); // the same request again (its client missed our answer, or is slow to take it in)
    // two timeouts later: the slow requester no longer counts as unanswered (it is there), so a new requester
    // takes the one unanswered slot without evicting it
    await new Promise((r) => setTimeout(r, 350));
    quiet.send(rrq, port);
    const [slowSends, quietSends] = await Promise.all([count(slow), count(quiet)]);
    assert.equal(1 + slowSends, 6, 'the repeated requester got the OACK maxRetries + 1 times, and kept its slot');
    assert.equal(quietSends, 3, 'a requester never heard from again gets 3 sends');
  });

  test('netascii: one file at most maxNetasciiBytes, all conversions within their memory budget', async (t) => {
    writeFileSync(join(dir, 'root', 'text.cfg'), 'line\n'.repeat(200)); // 1000 bytes
    const limited = await createTftpServer({
      log: pino({ level: 'silent' }), registry: new Registry(), host: HOST, port: 0, roots: [{ dir: join(dir, 'root') }],
      maxNetasciiBytes: 2000, netasciiBudgetBytes: 4000, transferLoop,
    });
    t.after(() => limited.close());
    const lport = limited.address().port;
    const big = await rawFetch(HOST, lport, 'ipxe.efi', {}, { mode: 'netascii' });
    assert.match(big.error?.message ?? '', /netascii mode is limited to 2000 bytes; use octet/);
    // one conversion (3 × 1000 bytes held) fits the budget of 4000, a second one at the same time does not
    const holder = await RawTftpClient.open('127.0.0.2');
    t.after(() => holder.close());
    holder.send(encodeRequest('rrq', 'text.cfg', 'netascii'), lport);
    assert.equal((await holder.next())?.packet.op, 'data');
    assert.equal(limited.netasciiBytesHeld, 3000);
    const second = await rawFetch(HOST, lport, 'text.cfg', {}, { mode: 'netascii' });
    assert.match(second.error?.message ?? '', /server busy: netascii conversions use their memory budget/);
    holder.close();
    // once the holder's transfer ends (it never answered: 3 sends of block 1), the budget is back
    const started = Date.now();
    while (limited.netasciiBytesHeld > 0 && Date.now() - started < 10000) await new Promise((r) => setTimeout(r, 200));
    assert.equal(limited.netasciiBytesHeld, 0);
    const ok = await rawFetch(HOST, lport, 'text.cfg', {}, { mode: 'netascii' });
    assert.equal(ok.data.toString(), 'line\r\n'.repeat(200));
  });

  test(`every finished transfer of a file on disk was logged once, by the ${transferLoop === 'auto' ? 'native' : 'JS'} loop`, () => {
    const ends = logLines.map((l) => JSON.parse(l)).filter((e) => e.file === 'ipxe.efi' && e.outcome);
    assert.ok(ends.length >= 5, `${ends.length} transfer log lines`);
    for (const e of ends) assert.equal(e.loop, transferLoop === 'auto' ? 'native' : 'js', JSON.stringify(e));
    assert.ok(ends.some((e) => e.outcome === 'complete' && e.bytes === data.length && e.size === data.length));
  });
});
