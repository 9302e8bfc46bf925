/**
 * Done-when 4: a container disk corrupted on the server (same size, valid zstd, one byte changed in the raw
 * image) fails at `verifying` with a clear reason, and nothing is mounted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { LabEnv, buildHttpdDisk, provision, stateEvents, diskFiles, labUnavailable } from '../helpers/lab-env.ts';

/** Flips one byte in the middle of the raw image; the .zst is re-compressed so the stream itself stays valid. */
function corrupt(files: string[]): void {
  for (const f of files) {
    const zst = f.endsWith('.zst');
    const raw = zst ? spawnSync('zstd', ['-d', '-c', '-q', f], { maxBuffer: 1 << 30 }).stdout : readFileSync(f);
    if (!raw?.length) throw new Error(`cannot read ${f}`);
    raw[Math.floor(raw.length / 2)] ^= 0x5a;
    const bytes = zst ? spawnSync('zstd', ['-c', '-q', '-3'], { input: raw, maxBuffer: 1 << 30 }).stdout : raw;
    writeFileSync(`${f}.corrupt`, bytes);
    renameSync(`${f}.corrupt`, f);
  }
}

test('a corrupted container disk fails verifying with a clear reason and is not mounted', { skip: labUnavailable(), timeout: 420_000 }, async (t) => {
  const env = await LabEnv.start({ octet: 14 });
  t.after(() => env.destroy());
  const img = await buildHttpdDisk(env);
  const files = diskFiles(env, img.id);
  assert.ok(files.some((f) => f.endsWith('.zst')), `container disk files of ${img.id} in ${env.dataDir}: ${files.join(', ')}`);
  corrupt(files);

  const { vm, wfId } = await provision(env, { vm: { name: 'corrupt' }, n: 4, workflow: { image: 'httpd' } });
  const wf = await env.waitWorkflow(wfId, (w) => w.state === 'failed', 240_000, vm);
  const states = stateEvents(wf);
  assert.equal(states[states.length - 2], 'verifying', `failed from verifying: ${states.join(' → ')}`);
  assert.ok(!states.includes('mounted') && !states.includes('running'), states.join(' → '));
  assert.match(wf.reason ?? '', /sha256|checksum/i);
  assert.match(wf.reason ?? '', new RegExp(img.rawSha256));
});
