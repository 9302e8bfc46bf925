/**
 * The daemon's log never stops its event loop: with stdout a pipe nobody reads (a stalled journald or supervisor),
 * a synchronous write blocks as soon as the pipe's 64 KiB are full, and DHCP/TFTP with it. The logger writes
 * asynchronously, and every line still arrives once the reader catches up, also when the process exits; a reader
 * that stays behind costs a bounded buffer, not the daemon's memory: lines past it are dropped, and said so.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const logModule = fileURLToPath(new URL('../../server/log.ts', import.meta.url));

function logThroughStalledPipe(dir: string, lines: number, maxBufferBytes?: number): Promise<{ code: unknown; out: string[]; err: string }> {
  const alive = join(dir, 'alive');
  const script = `
    import { writeFileSync } from 'node:fs';
    import { createLogger } from ${JSON.stringify(logModule)};
    const log = createLogger('info', { pretty: false, maxBufferBytes: ${maxBufferBytes ?? 'undefined'} });
    for (let i = 0; i < ${lines}; i++) log.info({ i, pad: 'x'.repeat(64) }, 'line');
    setImmediate(() => writeFileSync(${JSON.stringify(alive)}, 'event loop alive'));`;
  // the pipe's reader reads nothing until the logging process's event loop has turned: a blocking write would
  // wait for the reader forever (the test then fails after 60 s), a non-blocking one lets it turn
  const child = spawn('sh', ['-c', `"${process.execPath}" --import tsx --input-type=module -e "$SCRIPT" | (while [ ! -e "${alive}" ]; do sleep 0.05; done; cat)`],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SCRIPT: script }, detached: true });
  const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, 60_000);
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, out: Buffer.concat(out).toString().split('\n').filter(Boolean), err });
  }));
}

test('a reader that stays behind costs a bounded buffer: lines past it are dropped and counted on stderr', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = await logThroughStalledPipe(dir, 20_000, 256 << 10); // 2.5 MB through a 256 KiB buffer
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.length < 20_000 / 4, `${r.out.length} lines arrived: the buffer was not bounded`);
  assert.ok(r.out.length > 1000, `${r.out.length} lines arrived`);
  assert.match(r.err, /ironboot: \d+ log line\(s\) dropped: the log's reader is 262144 bytes behind/);
});

test('a full stdout pipe does not block the event loop, and no line is lost', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ib-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const lines = 20_000; // ~2.5 MB: forty times what a pipe holds
  const r = await logThroughStalledPipe(dir, lines);
  assert.equal(r.code, 0, `the logging process was stuck behind its log writes (killed after 60 s):\n${r.err}`);
  const got = r.out;
  assert.equal(got.length, lines, 'every line arrived, flushed at exit');
  assert.equal(JSON.parse(got.at(-1)!).i, lines - 1);
});
