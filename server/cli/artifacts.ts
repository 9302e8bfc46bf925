/** `ironboot artifacts build`: the kernel + initramfs machines boot. */
import { resolve, join } from 'node:path';
import { buildArtifacts, formatReport } from '../../init/build/index.ts';
import { parseArgs, str } from './args.ts';
import { CliError } from './client.ts';

export const ARTIFACTS_HELP = `ironboot artifacts build [--out DIR] [--kernel PATH] [--all-drivers] [--tls-ca FILE] [--json]
  Builds vmlinuz and initramfs into DIR (default: DATA_DIR/artifacts, DATA_DIR from --data-dir or IRONBOOT_DATA_DIR,
  else ./var). The kernel is the host's Debian linux-image-amd64 unless --kernel names one; --all-drivers includes
  every network and storage driver for real hardware; --tls-ca builds in the CA the agent verifies HTTPS against
  (the same file as ironboot serve --tls-ca).
`;

export async function artifactsCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const a = parseArgs(argv, { bool: ['all-drivers'], known: ['out', 'kernel', 'all-drivers', 'data-dir', 'tls-ca'] });
  if (a.positionals[0] !== 'build' || a.flags.help) {
    out(ARTIFACTS_HELP);
    return a.flags.help ? 0 : 2;
  }
  const dataDir = resolve(str(a.flags, 'data-dir') ?? process.env.IRONBOOT_DATA_DIR ?? './var');
  const outDir = resolve(str(a.flags, 'out') ?? join(dataDir, 'artifacts'));
  const started = Date.now();
  try {
    const r = await buildArtifacts({
      outDir, kernel: str(a.flags, 'kernel'), allDrivers: a.flags['all-drivers'] === true, caFile: str(a.flags, 'tls-ca') ?? null,
      log: (msg) => process.stderr.write(`artifacts: ${msg}\n`),
    });
    if (a.flags.json) out(JSON.stringify(r.report, null, 2) + '\n');
    else out(formatReport(r.report) + `\nwrote ${r.kernel} and ${r.initramfs} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  } catch (err) {
    throw new CliError(`artifacts build failed: ${(err as Error).message}`);
  }
}
