import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeStores } from '../helpers/stores.ts';

describeStores('prepared statements', (backend) => {
  test('the store compiles each SQL text once (repositories prepare per query)', (t) => {
    const db = backend.open(t).store.db;
    const a = db.prepare('SELECT COUNT(*) AS n FROM events WHERE workflow_id = ?');
    assert.equal(db.prepare('SELECT COUNT(*) AS n FROM events WHERE workflow_id = ?'), a);
    assert.notEqual(db.prepare('SELECT COUNT(*) AS n FROM workflows'), a);
    assert.deepEqual(a.get('x'), { n: 0 });
    assert.deepEqual(a.get('y'), { n: 0 }, 'a cached statement runs again with new parameters');
  });
});
