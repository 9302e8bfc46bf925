import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asImageError } from '../../server/images/build.ts';

const withCode = (code: string, message: string, path?: string) => Object.assign(new Error(message), { code, path });

test('a build failure becomes an error the operator can act on, naming where the space ran out', () => {
  assert.match(asImageError(withCode('ENOSPC', 'write failed', '/data/images/x'), '/data/images').message, /^disk full: no space left in \/data\/images while/);
  assert.match(asImageError(withCode('SQLITE_FULL', 'database or disk is full'), '/data/images').message, /^disk full: no space left in \/data\/images/);
  const pg = asImageError(withCode('53100', 'could not extend file "base/16384/2619": No space left on device'), '/data/images').message;
  assert.match(pg, /^disk full: the PostgreSQL store has no space left/);
  assert.doesNotMatch(pg, /\/data\/images/, 'not this daemon\'s data dir');
  assert.match(asImageError(new Error('boom'), '/d').message, /^image build failed: boom$/);
});
