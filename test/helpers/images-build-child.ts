/**
 * Runs `images build` (the CLI command) in a child process and prints what it left in the data dir:
 *   node --import tsx test/helpers/images-build-child.ts DATA_DIR [build args…]
 * Last line: @@REPORT {"error", "files", "rows"}. Used for disk-full (inside unshare -m), unprivileged and kill tests.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { imagesBuildCommand } from '../../server/cli/images-build.ts';
import { Store } from '../../server/store/index.ts';

const [dataDir, ...args] = process.argv.slice(2);
let error: string | null = null;
let output = '';
try {
  await imagesBuildCommand([...args, '--data-dir', dataDir, '--json'], (s) => { output += s; });
} catch (err) {
  error = (err as Error).message;
}
let files: string[] = [];
try { files = readdirSync(join(dataDir, 'images')); } catch { /* none */ }
const store = Store.open(dataDir);
const rows = store.images.list().map((r) => ({ id: r.id, state: r.state, error: r.error }));
store.close();
process.stdout.write(`\n@@REPORT ${JSON.stringify({ error, files, rows, image: output ? JSON.parse(output) : null, uid: process.getuid?.() })}\n`);
