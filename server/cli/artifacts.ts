/** `ironboot artifacts build`: the kernel + initramfs machines boot; `ironboot artifacts ipxe`: iPXE with HTTPS and a CA. */
import { resolve, join } from 'node:path';
import { buildArtifacts, formatReport } from '../../init/build/index.ts';
import { buildIpxe, IpxeBuildError, DEBIAN_MIRROR } from '../boot/ipxe-build.ts';
import { parseArgs, str } from './args.ts';
import { CliError } from './client.ts';

export const ARTIFACTS_HELP = `ironboot artifacts build [--out DIR] [--kernel PATH] [--all-drivers] [--tls-ca FILE] [--initramfs-compression lz4|zstd] [--json]
  Builds vmlinuz and initramfs into DIR (default: DATA_DIR/artifacts, DATA_DIR from --data-dir or IRONBOOT_DATA_DIR,
  else ./var). The kernel is the host's Debian linux-image-amd64 unless --kernel names one; --all-drivers includes
  every network and storage driver for real hardware; --tls-ca builds in the CA the agent verifies HTTPS against
  (the same file as ironboot serve --tls-ca). The initramfs is lz4-compressed (the kernel unpacks it faster than
  zstd) unless the lz4 tool is missing, the kernel's config lacks RD_LZ4, or --initramfs-compression zstd asks for
  the smaller file.

ironboot artifacts ipxe --trust CA.pem [--out DIR] [--cache DIR] [--mirror URL] [--version V] [--dsc-sha256 HEX] [--jobs N] [--json]
  Builds iPXE (undionly.kpxe, ipxe.efi, snponly.efi) from Debian's source package of the installed ipxe version with
  HTTPS on and CA.pem as the only trusted root (TRUST=, CERT=), into DIR (default DATA_DIR/artifacts/ipxe, which
  ironboot serve then serves instead of /usr/lib/ipxe). The source (--mirror, default ${DEBIAN_MIRROR}) is checked
  against the .dsc's sha256 (pinned for known versions, else --dsc-sha256) and the .dsc's checksums. Builds are cached
  in --cache (default DATA_DIR/cache/ipxe) by source version and CA: the same CA again takes no time.
  Needs: apt-get install gcc binutils make perl liblzma-dev dpkg-dev xz-utils openssl
`;

export async function artifactsCommand(argv: string[], out: (s: string) => void): Promise<number> {
  if (argv[0] === 'ipxe') return ipxeCommand(argv.slice(1), out);
  const a = parseArgs(argv, { bool: ['all-drivers'], known: ['out', 'kernel', 'all-drivers', 'data-dir', 'tls-ca', 'initramfs-compression'] });
  if (a.positionals[0] !== 'build' || a.flags.help) {
    out(ARTIFACTS_HELP);
    return a.flags.help ? 0 : 2;
  }
  const dataDir = resolve(str(a.flags, 'data-dir') ?? process.env.IRONBOOT_DATA_DIR ?? './var');
  const outDir = resolve(str(a.flags, 'out') ?? join(dataDir, 'artifacts'));
  const compression = str(a.flags, 'initramfs-compression');
  if (compression !== undefined && compression !== 'lz4' && compression !== 'zstd') throw new CliError(`--initramfs-compression ${compression}: want lz4 or zstd`, 2);
  const started = Date.now();
  try {
    const r = await buildArtifacts({
      outDir, kernel: str(a.flags, 'kernel'), allDrivers: a.flags['all-drivers'] === true, caFile: str(a.flags, 'tls-ca') ?? null, compression,
      log: (msg) => process.stderr.write(`artifacts: ${msg}\n`),
    });
    if (a.flags.json) out(JSON.stringify(r.report, null, 2) + '\n');
    else out(formatReport(r.report) + `\nwrote ${r.kernel} and ${r.initramfs} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  } catch (err) {
    throw new CliError(`artifacts build failed: ${(err as Error).message}`);
  }
}

async function ipxeCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const a = parseArgs(argv, { known: ['trust', 'out', 'cache', 'mirror', 'version', 'dsc-sha256', 'jobs'] });
  if (a.flags.help) { out(ARTIFACTS_HELP); return 0; }
  if (a.positionals.length) throw new CliError(`ironboot artifacts ipxe takes no arguments (got ${a.positionals.join(' ')})\n\n${ARTIFACTS_HELP}`);
  const trust = str(a.flags, 'trust');
  if (!trust) throw new CliError(`--trust CA.pem is required: the CA that signs ironboot serve's --tls-cert\n\n${ARTIFACTS_HELP}`, 2);
  const jobsFlag = str(a.flags, 'jobs');
  const jobs = jobsFlag === undefined ? undefined : Number(jobsFlag);
  if (jobs !== undefined && !(Number.isInteger(jobs) && jobs >= 1 && jobs <= 256)) throw new CliError(`--jobs ${jobsFlag}: want an integer 1-256`, 2);
  const dataDir = resolve(str(a.flags, 'data-dir') ?? process.env.IRONBOOT_DATA_DIR ?? './var');
  try {
    const r = await buildIpxe({
      trustFile: resolve(trust), outDir: resolve(str(a.flags, 'out') ?? join(dataDir, 'artifacts', 'ipxe')),
      cacheDir: resolve(str(a.flags, 'cache') ?? join(dataDir, 'cache', 'ipxe')), mirror: str(a.flags, 'mirror'),
      version: str(a.flags, 'version'), dscSha256: str(a.flags, 'dsc-sha256'), jobs,
      log: (msg) => process.stderr.write(`ipxe: ${msg}\n`),
    });
    if (a.flags.json) { out(JSON.stringify({ ...r.manifest, outDir: r.outDir, cached: r.cached, seconds: r.seconds }, null, 2) + '\n'); return 0; }
    const m = r.manifest;
    out([
      `iPXE ${m.source.version} with HTTPS, trusting ${m.trust.map((t) => `${t.subject} (SHA-256 ${t.fingerprint256})`).join('; ')}`,
      ...Object.entries(m.binaries).map(([n, b]) => `  ${join(r.outDir, n)}  ${b.size} bytes  sha256:${b.sha256}`),
      r.cached ? `  (from the cache, ${r.seconds.toFixed(1)} s; compiled in ${m.buildSeconds} s on ${m.builtAt})` : `  built in ${r.seconds.toFixed(1)} s`,
      `ironboot serve serves ${r.outDir} (with --tls-cert signed by this CA, iPXE fetches over HTTPS)`,
    ].join('\n') + '\n');
    return 0;
  } catch (err) {
    if (err instanceof IpxeBuildError) throw new CliError(`artifacts ipxe failed: ${err.message}`);
    throw err;
  }
}
