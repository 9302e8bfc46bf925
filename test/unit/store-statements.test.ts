import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openDb } from '../../server/store/db.ts';
import { tempDir } from '../helpers/daemon.ts';

test('the store compiles each SQL text once (repositories prepare per query)', (t) => {
  const dir = tempDir();
  const db = openDb(dir.path);
  t.after(() => { db.close(); dir.remove(); });
  const a = db.prepare('SELECT COUNT(*) AS n FROM events WHERE workflow_id = ?');
  assert.equal(db.prepare('SELECT COUNT(*) AS n FROM events WHERE workflow_id = ?'), a);
  assert.notEqual(db.prepare('SELECT COUNT(*) AS n FROM workflows'), a);
  assert.deepEqual(a.get('x'), { n: 0 });
  assert.deepEqual(a.get('y'), { n: 0 }, 'a cached statement runs again with new parameters');
});
