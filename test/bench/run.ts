/**
 * `npm run bench`: runs every benchmark in test/bench/ one after the other (or the ones named:
 * `npm run bench -- dhcp tftp`). Each prints its own figures and ratios against the reference servers it
 * measures in the same run. Run by hand, as root, on an otherwise idle machine; never in CI.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const all = readdirSync(dir).filter((f) => f.endsWith('.ts') && f !== 'run.ts').map((f) => f.replace(/\.ts$/, '')).sort();
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : all;
let failed = 0;
for (const name of wanted) {
  if (!all.includes(name)) { console.error(`no benchmark "${name}" (have: ${all.join(', ')})`); failed++; continue; }
  console.log(`\n=== bench: ${name} ===`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(dir, `${name}.ts`)], { stdio: 'inherit' });
  if (r.status !== 0) { console.error(`bench ${name} exited with ${r.status}`); failed++; }
}
process.exit(failed ? 1 : 0);
