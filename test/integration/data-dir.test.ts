/** The data directory is created private, a wider one is reported, and a weak IRONBOOT_TOKEN is warned about at start. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnDaemon, tempDir } from '../helpers/daemon.ts';
import { ensurePrivateDataDir, weakTokenReason } from '../../server/data-dir.ts';

test('weakTokenReason: short or low-variety tokens are weak, generated ones are not', () => {
  assert.match(weakTokenReason('secret')!, /6 characters/);
  assert.match(weakTokenReason('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')!, /entropy/);
  assert.match(weakTokenReason('abababababababababababababab')!, /entropy/);
  assert.equal(weakTokenReason('Zx8f3Kq0Lw9pRt2VbN6mYc1HsJ4gTd7E'), null);
});

test('a wider data directory is reported', (t) => {
  const d = tempDir(); t.after(d.remove);
  const dir = join(d.path, 'shared');
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  assert.match(ensurePrivateDataDir(dir)!, /mode 0755.*chmod 700/);
});

test('ironboot serve creates its data directory 0700 and warns about a weak IRONBOOT_TOKEN', async (t) => {
  const d = tempDir(); t.after(d.remove);
  const dataDir = join(d.path, 'new', 'var');
  const daemon = await spawnDaemon(dataDir, [], { IRONBOOT_TOKEN: 'letmein' });
  t.after(() => daemon.stop());
  assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  await new Promise((r) => setTimeout(r, 200));
  assert.match(daemon.output(), /the admin token is weak: it is 7 characters long/);
  assert.ok(!daemon.output().includes('letmein'), 'the token itself is not logged');
});
