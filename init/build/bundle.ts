/** The agent as one file: esbuild bundles init/agent/index.ts (and the agent API schemas it imports). */
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

export const AGENT_ENTRY = fileURLToPath(new URL('../agent/index.ts', import.meta.url));

export async function bundleAgent(entry = AGENT_ENTRY): Promise<Buffer> {
  const r = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    minify: false,
    legalComments: 'none',
    logLevel: 'silent',
    banner: { js: '// ironboot init agent (bundled; source: init/agent/)' },
  });
  return Buffer.from(r.outputFiles[0].contents);
}
