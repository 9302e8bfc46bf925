import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMac } from '../../server/mac.ts';

test('MAC notations', () => {
  for (const s of ['52:54:00:12:34:56', '52-54-00-12-34-56', '525400123456', '52:54:0:12:34:56', '5254.0012.3456', ' 52:54:00:12:34:56 ', '52:54:00:12:34:56'.toUpperCase()]) {
    assert.equal(parseMac(s), '52:54:00:12:34:56', s);
  }
  for (const s of ['', 'zz', '52:54:00:12:34', '52:54:00:12:34:56:78', '52545400123456', 'g2:54:00:12:34:56', '52:54-00:12:34:56x']) {
    assert.equal(parseMac(s), null, s);
  }
});
