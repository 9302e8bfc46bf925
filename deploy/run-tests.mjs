// Runs the whole test suite with node's own test runner, in one process tree so the closing summary counts
// every test. Unit and integration files run two at a time (2 cores); the QEMU files take their turn one by one
// inside their own file through a lock (test/helpers/qemu-lock), so they never fight over the CPU.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const groups = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'integration', 'e2e'];
const files = [];
const walk = (dir) => {
  let entries = [];
  try { entries = readdirSync(dir); } catch { return; }
  for (const e of entries.sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (e.endsWith('.test.ts')) files.push(p);
  }
};
for (const g of groups) walk(join(root, 'test', g));
if (!files.length) { console.error('no test files found'); process.exit(1); }
const args = ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env: { ...process.env, IRONBOOT_TEST: '1' } });
process.exit(r.status ?? 1);
