import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/daemon.ts';
import { have } from '../helpers/netns.ts';

const unit = join(ROOT, 'deploy', 'ironboot.service');

test('the systemd unit passes systemd-analyze verify', { skip: !have('systemd-analyze') && 'systemd-analyze not installed' }, () => {
  let out = '';
  try {
    out = execFileSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr: string; stdout: string };
    // verify also checks that ExecStart's binary exists; everything else it prints is a real problem
    const problems = (e.stderr + e.stdout).split('\n').filter((l) => l.trim() && !/Command .* is not executable|is not executable: No such file/.test(l));
    assert.deepEqual(problems, []);
  }
  assert.doesNotMatch(out, /Unknown (key|section)/);
});

test('the unit runs as a dedicated user with only the capabilities it needs, hardened', () => {
  const text = readFileSync(unit, 'utf8');
  const get = (k: string) => [...text.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1]);
  assert.deepEqual(get('User'), ['ironboot']);
  assert.deepEqual(get('CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE CAP_NET_RAW']);
  for (const k of ['ProtectSystem', 'PrivateTmp', 'NoNewPrivileges', 'ProtectHome', 'ProtectKernelModules']) assert.ok(get(k).length, k);
});
