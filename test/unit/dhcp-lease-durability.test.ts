/**
 * Lease commits are durable against power loss: each DHCP lease commit syncs the WAL to disk before it returns
 * (synchronous=FULL for lease transactions), while other writes keep synchronous=NORMAL under WAL (synced at
 * checkpoints). Counted with strace on a real process: fsync/fdatasync calls per phase.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { have } from '../helpers/netns.ts';
import { tempDir, ROOT } from '../helpers/daemon.ts';

const run = promisify(execFile);

test('every lease commit is synced to disk; machine writes are not (WAL, NORMAL)', { skip: have('strace') ? false : 'strace is not installed' }, async (t) => {
  const dir = tempDir('ibt-durable-');
  t.after(dir.remove);
  const trace = join(dir.path, 'trace');
  await run('strace', ['-f', '-qq', '-o', trace, '-e', 'trace=fsync,fdatasync,access,faccessat,faccessat2',
    process.execPath, '--import', 'tsx', join(ROOT, 'test/helpers/lease-commit-child.ts'), join(dir.path, 'data')], { cwd: ROOT, timeout: 60000 });
  const lines = readFileSync(trace, 'utf8').split('\n');
  const at = (name: string) => lines.findIndex((l) => l.includes(`/ibt-marker-${name}`));
  const syncs = (from: number, to: number) => lines.slice(from, to).filter((l) => /\b(fsync|fdatasync)\(/.test(l)).length;
  assert.ok(at('start') >= 0 && at('machines') > at('start') && at('leases') > at('machines'), 'markers missing from the trace');
  assert.equal(syncs(at('start'), at('machines')), 0, '5 machine writes under synchronous=NORMAL sync nothing');
  assert.ok(syncs(at('machines'), at('leases')) >= 5, `5 lease commits synced ${syncs(at('machines'), at('leases'))} times`);
});
