/**
 * A flood of 256 spoofed read requests (256 source addresses that vanish right after sending, so nobody ever
 * answers the server) must not lock PXE out: once the flood's requests have gone two retransmission timeouts
 * unanswered, real clients (tftp-hpa, curl) take their slots and get their file. Before the limits, the 256
 * unanswered transfers held every slot for 6 tries each (minutes with a requested timeout of 255 s) and real clients
 * got "server busy". Requests younger than that are never evicted (a rack booting at once sends hundreds within one
 * round trip: test/integration/herd.test.ts); past the unanswered share they go unanswered, so clients retry.
 * Runs with the native loop and with the JS loop.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';

const run = promisify(execFile);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const skip = netnsUnavailable('curl', 'tftp');
const SERVER = '10.84.0.1';
const data = randomBytes(200 * 1024 + 7);
/** 256 addresses on the client's link that exist only while the flood is sent. */
const SPOOFED = Array.from({ length: 256 }, (_, i) => `10.84.${1 + (i >> 8)}.${(i & 0xff) || 255}`).map((a, i) => (i === 0 ? '10.84.2.1' : a));

let lab: Lab;
let srv: Namespace;
let cli: Namespace;
let vc = '';
let dir: string;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'ibt-flood-'));
  writeFileSync(join(dir, 'undionly.kpxe'), data);
  lab = await Lab.create('ibf');
  srv = lab.ns('srv');
  cli = lab.ns('cli');
  [, vc] = lab.veth(srv, `${SERVER}/16`, cli, '10.84.0.2/16');
});

after(async () => {
  await lab?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function startServer(transferLoop: 'auto' | 'js'): Promise<{ proc: ChildProcess; log: () => string }> {
  let log = '';
  const args = JSON.stringify({ host: SERVER, port: 69, roots: [dir], logLevel: 'debug', transferLoop });
  const proc = srv.spawn(process.execPath, ['--import', 'tsx', 'test/helpers/tftp-server-runner.ts', args], { cwd: process.cwd() });
  proc.stderr!.on('data', (c) => { log += c; });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 20000);
    proc.stdout!.once('data', () => { clearTimeout(t); resolve(); });
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`server exited ${code}: ${log}`)); });
  });
  return { proc, log: () => log };
}

const inCli = (cmd: string, args: string[]) => run('ip', ['netns', 'exec', cli.name, cmd, ...args], { timeout: 60000 });

for (const transferLoop of ['auto', 'js'] as const) {
  test(`${transferLoop === 'auto' ? 'native' : 'JS'} loop: after 256 spoofed requests, tftp-hpa and curl still get their file at once`, { skip }, async (t) => {
    const server = await startServer(transferLoop);
    t.after(() => { if (server.proc.pid && server.proc.exitCode === null) process.kill(server.proc.pid, 'SIGTERM'); });
    cli.exec('ip', ['-batch', '-'], { input: SPOOFED.map((a) => `addr add ${a}/32 dev ${vc}`).join('\n') + '\n' });
    const flood = await inCli(process.execPath, ['--import', 'tsx', 'test/helpers/tftp-flood-sender.ts', SERVER, '69', 'undionly.kpxe', ...SPOOFED]);
    assert.deepEqual(JSON.parse(flood.stdout), { sent: 256 });
    // the senders vanish: the server's answers to those addresses go nowhere from now on
    cli.exec('ip', ['-batch', '-'], { input: SPOOFED.map((a) => `addr del ${a}/32 dev ${vc}`).join('\n') + '\n' });
    // the flood's transfers have now gone unanswered for two timeouts (1 s each): they may be evicted
    await new Promise((r) => setTimeout(r, 2100));
    const started = Date.now();
    const hpa = join(dir, `hpa-${transferLoop}.out`);
    const got = await inCli('tftp', ['-m', 'binary', SERVER, '-c', 'get', 'undionly.kpxe', hpa]);
    assert.equal(got.stdout + got.stderr, '', 'tftp-hpa reported an error');
    assert.equal(sha256(readFileSync(hpa)), sha256(data));
    const curl = join(dir, `curl-${transferLoop}.out`);
    await inCli('curl', ['-sS', '--fail', '--max-time', '30', '--tftp-blksize', '1428', `tftp://${SERVER}/undionly.kpxe`, '-o', curl]);
    assert.equal(sha256(readFileSync(curl)), sha256(data));
    t.diagnostic(`both real clients done ${Date.now() - started} ms after the flood`);
    // whole lines only (the log is still being written)
    const lines = () => server.log().split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const real = lines().filter((e) => e.client?.startsWith('10.84.0.2:') && e.outcome);
    assert.equal(real.length >= 1, true, server.log().slice(-2000));
    for (const e of real) assert.ok(e.outcome === 'complete' || e.outcome === 'unconfirmed', JSON.stringify(e));
    assert.ok(!lines().some((e) => /tftp request refused/.test(e.msg ?? '')), 'a request was refused (busy)');
    // the first 128 spoofed requests (half the 256 slots) were let in; the other 128 came within their first
    // round, so they went unanswered (one warning per 10 s, not one per request); the real client evicted the oldest, by then two
    // seconds old; curl came when tftp-hpa's slot was answered and free again
    const evictions = lines().filter((e) => /unanswered requests hold their share of the slots/.test(e.msg ?? ''));
    assert.ok(evictions.length >= 1, `${evictions.length} evictions`);
    const dropped = lines().filter((e) => e.level === 40 && e.why === 'unanswered share full');
    assert.equal(dropped.length, 1, 'one warning (per 10 s) for the requests left unanswered');
    // said at warn level once (per 10 s), with the count, not once per request
    const warned = lines().filter((e) => e.level === 40 && /unanswered requests evicted/.test(e.msg ?? ''));
    assert.equal(warned.length, 1);
  });
}
