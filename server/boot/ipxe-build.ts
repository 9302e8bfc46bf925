/**
 * `ironboot artifacts ipxe --trust CA.pem`: iPXE that fetches over HTTPS and trusts only the operator's CA.
 *
 * Debian's ipxe package is built without DOWNLOAD_PROTO_HTTPS, and iPXE takes its trusted roots only at build time
 * (TRUST=), so this builds iPXE from Debian's own source package of the installed version:
 *
 *   1. the .dsc from the Debian mirror (pool/main/i/ipxe/), checked against the sha256 this file pins for the version
 *      (KNOWN_DSC_SHA256; another version needs the operator to give it: --dsc-sha256)
 *   2. the tarballs the .dsc names, each checked against its Checksums-Sha256 line (size and sha256)
 *   3. `dpkg-source -x`: unpacks and applies the Debian patches (3.0 quilt)
 *   4. config/local/general.h gets `#define DOWNLOAD_PROTO_HTTPS`; config/local/crypto.h an empty CROSSCERT (no
 *      downloads of cross-signed certificates from ca.ipxe.org)
 *   5. `make -C src NO_WERROR=1 EXTRA_CFLAGS=-fcommon TRUST=ca-1.pem,… CERT=ca-1.pem,… EMBED=ironboot.ipxe bin/undionly.kpxe bin-x86_64-efi/ipxe.efi
 *      bin-x86_64-efi/snponly.efi` (TRUST: the only roots iPXE accepts; CERT: the CA built in, so the server need not
 *      send it; EMBED: `set user-class ironboot` then iPXE's usual autoboot, so the DHCP server can tell this iPXE from
 *      a NIC's own iPXE ROM, which may have HTTPS but trusts other roots)
 *   6. binaries + ironboot-ipxe.json (source, CA fingerprints, sizes, sha256) into a cache entry keyed by
 *      (source version, .dsc sha256, CA sha256, recipe), then copied into the output directory
 *
 * Every step writes into a temporary directory that is renamed into place at the end: a failed or interrupted build
 * leaves nothing half-written (neither in the cache nor in the output directory). The daemon picks the output up
 * (server/boot/ipxe-dir.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, copyFileSync, writeFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, join } from 'node:path';
import { IPXE_MANIFEST, IRONBOOT_IPXE_USER_CLASS, readIpxeManifest, type IpxeManifest } from './ipxe-dir.ts';

export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const IPXE_SOURCE_PACKAGE = 'ipxe';

/**
 * The sha256 of Debian's .dsc for each ipxe version this recipe was written for. The .dsc carries the checksums of
 * the tarballs, so this one value anchors the whole source. (Also in bookworm's Sources index.)
 */
export const KNOWN_DSC_SHA256: Readonly<Record<string, string>> = {
  '1.0.0+git-20190125.36a4c85-5.1': '9ef3e5f462b675e7a475d9f0e49b8c990e9cce41eda44ab9a7469416f04e6502',
};

/** Bumped when the build steps change, so an older cache entry is not reused. */
export const RECIPE_VERSION = 1;

/** What is built: make target → served name. */
export const IPXE_TARGETS: ReadonlyArray<{ target: string; name: string }> = [
  { target: 'bin/undionly.kpxe', name: 'undionly.kpxe' },
  { target: 'bin-x86_64-efi/ipxe.efi', name: 'ipxe.efi' },
  { target: 'bin-x86_64-efi/snponly.efi', name: 'snponly.efi' },
];

/**
 * Debian packages the build needs (also in deploy/setup.sh DEB_IPXE). Fewer than the source package's Build-Depends,
 * which also cover the ISO/USB images: for these three targets the host tools are zbin (liblzma) and elf2efi
 * (<elf.h>, from libc6-dev with gcc); make runs perl and openssl (the TRUST= fingerprints).
 */
export const IPXE_BUILD_DEPENDS = ['gcc', 'binutils', 'make', 'perl', 'liblzma-dev', 'dpkg-dev', 'xz-utils', 'openssl'];
const TOOLS: Record<string, string> = { gcc: 'gcc', ld: 'binutils', make: 'make', perl: 'perl', 'dpkg-source': 'dpkg-dev', xz: 'xz-utils', openssl: 'openssl' };

/** A build input or step that failed: `field` names what (trust, dsc, a tarball, make), `message` why. */
export class IpxeBuildError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'IpxeBuildError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The .dsc (pure)

export interface DscFile { name: string; size: number; sha256: string }
export interface Dsc { source: string; version: string; format: string; files: DscFile[] }

/** The RFC 822-style fields of a Debian control paragraph; continuation lines are kept, joined with "\n". */
export function parseControlFields(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | null = null;
  for (const line of text.split(/\r?\n/)) {
    if (line === '') { if (fields.size) break; continue; }
    if (/^[ \t]/.test(line)) {
      if (!last) throw new IpxeBuildError('dsc', `continuation line before any field: ${JSON.stringify(line.slice(0, 60))}`);
      fields.set(last, `${fields.get(last)}\n${line.trim()}`);
      continue;
    }
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(.*)$/.exec(line);
    if (!m) throw new IpxeBuildError('dsc', `not a field: ${JSON.stringify(line.slice(0, 60))}`);
    last = m[1].toLowerCase();
    fields.set(last, m[2].trim());
  }
  return fields;
}

/** Strips an OpenPGP clearsign wrapper (the signature is not checked here: the .dsc's sha256 is). */
export function unwrapClearsigned(text: string): string {
  if (!text.startsWith('-----BEGIN PGP SIGNED MESSAGE-----')) return text;
  const body = text.split(/\r?\n/);
  let i = 1;
  while (i < body.length && body[i] !== '') i++; // armor headers (Hash: …) up to the blank line
  const end = body.findIndex((l) => l === '-----BEGIN PGP SIGNATURE-----');
  if (end < 0) throw new IpxeBuildError('dsc', 'clearsigned message without its signature block');
  return body.slice(i + 1, end).map((l) => l.replace(/^- /, '')).join('\n');
}

/** A Debian source control file (.dsc) → the package, version and the files with their size and sha256. */
export function parseDsc(text: string): Dsc {
  const f = parseControlFields(unwrapClearsigned(text));
  const need = (k: string) => {
    const v = f.get(k);
    if (!v) throw new IpxeBuildError('dsc', `no ${k[0].toUpperCase()}${k.slice(1)} field`);
    return v;
  };
  const source = need('source');
  const version = need('version');
  const format = need('format');
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(source)) throw new IpxeBuildError('dsc', `Source "${source}" is not a package name`);
  if (!/^[0-9A-Za-z.+~:-]+$/.test(version)) throw new IpxeBuildError('dsc', `Version "${version}" is not a Debian version`);
  const lines = need('checksums-sha256').split('\n').map((l) => l.trim()).filter(Boolean);
  const files = lines.map((l) => {
    const m = /^([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(l);
    if (!m) throw new IpxeBuildError('dsc', `Checksums-Sha256 line is not "SHA256 SIZE NAME": ${JSON.stringify(l)}`);
    const name = m[3];
    if (name.includes('/') || name.startsWith('.') || !/^[A-Za-z0-9+._~-]+$/.test(name)) {
      throw new IpxeBuildError('dsc', `Checksums-Sha256 names "${name}": not a plain file name`);
    }
    return { sha256: m[1], size: Number(m[2]), name };
  });
  if (!files.length) throw new IpxeBuildError('dsc', 'Checksums-Sha256 lists no files');
  if (new Set(files.map((x) => x.name)).size !== files.length) throw new IpxeBuildError('dsc', 'Checksums-Sha256 names a file twice');
  return { source, version, format, files };
}

/** The .dsc file name of a source version (the epoch is not part of file names). */
export function dscName(source: string, version: string): string {
  return `${source}_${version.replace(/^\d+:/, '')}.dsc`;
}

/** pool/main/<prefix>/<source>/<file> on a Debian mirror (prefix: "libx" for lib* packages, else the first letter). */
export function poolUrl(mirror: string, source: string, file: string): string {
  const prefix = source.startsWith('lib') ? source.slice(0, 4) : source[0];
  return `${mirror.replace(/\/+$/, '')}/pool/main/${prefix}/${source}/${encodeURIComponent(file).replace(/%2B/gi, '+')}`;
}

export const sha256Hex = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** Checks a file against its .dsc line; throws naming the file and what differs. */
export function verifyFile(path: string, want: DscFile): void {
  let size: number;
  try { size = statSync(path).size; } catch (err) { throw new IpxeBuildError(want.name, `cannot read ${path}: ${(err as Error).message}`); }
  if (size !== want.size) throw new IpxeBuildError(want.name, `is ${size} bytes, the .dsc says ${want.size}`);
  const got = sha256Hex(readFileSync(path));
  if (got !== want.sha256) throw new IpxeBuildError(want.name, `sha256 is ${got}, the .dsc says ${want.sha256}`);
}

// ---------------------------------------------------------------------------------------------------------------
// The trusted CA (pure)

export interface TrustedCa {
  /** The certificates as PEM, normalized (one block each). */
  pem: string;
  /** Each certificate's PEM (one TRUST=/CERT= file each). */
  pems: string[];
  certs: { subject: string; fingerprint256: string; notAfter: string }[];
  /** sha256 of the normalized PEM: part of the cache key. */
  sha256: string;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/**
 * Checks the operator's CA file: one or more PEM certificates, each parseable, each a CA (basicConstraints CA:TRUE)
 * and valid now; no private key. Errors name the field ("trust") and the certificate.
 */
export function parseTrustedCa(text: string, field = 'trust', now = new Date()): TrustedCa {
  const blocks = [...text.matchAll(PEM_BLOCK)];
  if (blocks.some((b) => /PRIVATE KEY/.test(b[1]))) {
    throw new IpxeBuildError(field, 'the file holds a private key: give only the CA certificate (the key stays with the CA)');
  }
  const certBlocks = blocks.filter((b) => b[1] === 'CERTIFICATE' || b[1] === 'TRUSTED CERTIFICATE');
  if (!certBlocks.length) throw new IpxeBuildError(field, 'no PEM certificate in the file (want "-----BEGIN CERTIFICATE-----")');
  const certs: TrustedCa['certs'] = [];
  const pems: string[] = [];
  certBlocks.forEach((b, i) => {
    const what = `certificate ${i + 1}`;
    if (b[1] !== 'CERTIFICATE') throw new IpxeBuildError(field, `${what} is an OpenSSL TRUSTED CERTIFICATE; give a plain CERTIFICATE`);
    const pem = `-----BEGIN CERTIFICATE-----\n${b[2].replace(/\s+/g, '').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
    let x: X509Certificate;
    try { x = new X509Certificate(pem); } catch (err) { throw new IpxeBuildError(field, `${what} does not parse: ${(err as Error).message}`); }
    const subject = x.subject.replace(/\n/g, ', ');
    if (!x.ca) throw new IpxeBuildError(field, `${what} (${subject}) is not a CA (basicConstraints CA:FALSE or missing): give the CA that signs --tls-cert`);
    if (new Date(x.validTo) < now) throw new IpxeBuildError(field, `${what} (${subject}) expired on ${x.validTo}`);
    if (new Date(x.validFrom) > now) throw new IpxeBuildError(field, `${what} (${subject}) is valid only from ${x.validFrom}`);
    certs.push({ subject, fingerprint256: x.fingerprint256, notAfter: new Date(x.validTo).toISOString() });
    pems.push(pem);
  });
  const pem = pems.join('');
  return { pem, pems, certs, sha256: sha256Hex(pem) };
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration and cache key (pure)

export const LOCAL_CONFIG_MARK = '/* ironboot artifacts ipxe: */';

/** config/local/general.h: what the source already has there (Debian's patches may add one), plus HTTPS on. */
export function localGeneralHeader(existing = ''): string {
  if (existing.includes(LOCAL_CONFIG_MARK)) return existing;
  const head = existing && !existing.endsWith('\n') ? `${existing}\n` : existing;
  return `${head}${LOCAL_CONFIG_MARK}\n/* HTTPS (TLS) downloads; the trusted roots are the operator's CA (make TRUST=) */\n#undef DOWNLOAD_PROTO_HTTPS\n#define DOWNLOAD_PROTO_HTTPS\n`;
}

/** The embedded script: identify as ironboot's iPXE (DHCP option 77), then boot the way iPXE does without a script. */
export const EMBEDDED_SCRIPT = `#!ipxe
# ironboot artifacts ipxe: option 77 tells ironboot's DHCP that this iPXE has HTTPS and the operator's CA
set user-class ${IRONBOOT_IPXE_USER_CLASS}
autoboot
`;

/**
 * config/local/crypto.h: no cross-signed certificates from ca.ipxe.org (iPXE's default CROSSCERT). The operator's
 * CA is built in (CERT=), so nothing is missing from a good chain, and ironboot's iPXE talks only to ironboot: a
 * chain that does not lead to the CA fails at once instead of a lookup of ca.ipxe.org.
 */
export function localCryptoHeader(existing = ''): string {
  if (existing.includes(LOCAL_CONFIG_MARK)) return existing;
  const head = existing && !existing.endsWith('\n') ? `${existing}\n` : existing;
  return `${head}${LOCAL_CONFIG_MARK}\n/* no cross-signed certificates from ca.ipxe.org: the operator's CA is built in (make CERT=) */\n#undef CROSSCERT\n#define CROSSCERT ""\n`;
}

/**
 * The make command line (arguments after `make`). One file per CA certificate: iPXE's make takes the fingerprint of
 * each TRUST= file with `openssl x509`, which reads only a file's first certificate; TRUST= and CERT= are lists.
 */
export function makeArgs(srcDir: string, caFiles: string[], embedFile: string, jobs: number): string[] {
  if (!caFiles.length) throw new IpxeBuildError('trust', 'no CA certificate');
  for (const [what, p] of [...caFiles.map((f) => ['CA', f]), ['embedded script', embedFile]]) {
    if (/[\s,]/.test(p)) throw new IpxeBuildError('cache', `the build's copy of the ${what} lies at a path with a space or comma (${p}); iPXE's make cannot take it: choose another --cache`);
  }
  const list = caFiles.join(',');
  // -fcommon: iPXE of 2019 relies on common symbols, which GCC 10 and later no longer make by default
  return ['-C', srcDir, `-j${jobs}`, 'NO_WERROR=1', 'EXTRA_CFLAGS=-fcommon', 'V=0', `TRUST=${list}`, `CERT=${list}`, `EMBED=${embedFile}`, ...IPXE_TARGETS.map((t) => t.target)];
}

/** Cache entry name for a (source version, .dsc, CA, recipe). */
export function cacheKey(version: string, dscSha256: string, caSha256: string): string {
  const h = sha256Hex(JSON.stringify({ version, dscSha256, caSha256, recipe: RECIPE_VERSION, targets: IPXE_TARGETS.map((t) => t.target), embed: EMBEDDED_SCRIPT, header: localGeneralHeader(), crypto: localCryptoHeader() }));
  return `${version.replace(/[^A-Za-z0-9.+~-]/g, '_')}-${h.slice(0, 16)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// The build (I/O)

export interface IpxeBuildOptions {
  /** The operator's CA (PEM file). */
  trustFile: string;
  /** Where the binaries and ironboot-ipxe.json land (the daemon's iPXE directory). */
  outDir: string;
  /** Downloads and finished builds (DATA_DIR/cache/ipxe). */
  cacheDir: string;
  /** Debian mirror (default deb.debian.org). */
  mirror?: string;
  /** Source version (default: the installed ipxe package's). */
  version?: string;
  /** sha256 of the .dsc when the version is not in KNOWN_DSC_SHA256. */
  dscSha256?: string;
  jobs?: number;
  log?: (msg: string) => void;
}

export interface IpxeBuildResult {
  manifest: IpxeManifest;
  outDir: string;
  /** True when a cache entry was used (no download, no compile). */
  cached: boolean;
  seconds: number;
}

/** The installed ipxe package's version (dpkg-query), or null. */
export function installedIpxeVersion(): string | null {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', IPXE_SOURCE_PACKAGE], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/** The tools the build runs that are missing, with the Debian package of each. */
export function missingBuildTools(): string[] {
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0) missing.push(`${tool} (${pkg})`);
  }
  for (const [header, pkg] of [['/usr/include/lzma.h', 'liblzma-dev'], ['/usr/include/elf.h', 'libc6-dev']]) {
    if (!existsSync(header) && !existsSync(header.replace('/usr/include/', '/usr/include/x86_64-linux-gnu/'))) missing.push(`${basename(header)} (${pkg})`);
  }
  return missing;
}

/** GET url into dest (via dest.part), at most maxBytes; returns the bytes' sha256. */
async function download(url: string, dest: string, maxBytes: number): Promise<{ size: number; sha256: string }> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(300_000) });
  } catch (err) {
    throw new IpxeBuildError('download', `${url}: ${(err as Error).cause ? ((err as Error).cause as Error).message : (err as Error).message}`);
  }
  if (!res.ok || !res.body) throw new IpxeBuildError('download', `${url}: the mirror answered ${res.status} ${res.statusText}`.trim());
  const part = `${dest}.part`;
  const hash = createHash('sha256');
  let size = 0;
  const out = createWriteStream(part);
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > maxBytes) throw new IpxeBuildError('download', `${url}: larger than ${maxBytes} bytes`);
      hash.update(chunk);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  } catch (err) {
    out.destroy();
    rmSync(part, { force: true });
    throw err;
  }
  renameSync(part, dest);
  return { size, sha256: hash.digest('hex') };
}

/** Runs a command; its output goes to onLine line by line; rejects with the last lines on failure. */
function run(cmd: string, args: string[], opts: { cwd?: string; field: string; onLine?: (line: string) => void }): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    let rest = '';
    const take = (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) {
        tail.push(l);
        if (tail.length > 40) tail.shift();
        opts.onLine?.(l);
      }
    };
    p.stdout.on('data', take);
    p.stderr.on('data', take);
    p.on('error', (err) => reject(new IpxeBuildError(opts.field, `${cmd}: ${err.message}`)));
    p.on('close', (code, signal) => {
      if (rest) tail.push(rest);
      if (code === 0) resolve();
      else reject(new IpxeBuildError(opts.field, `${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}); last output:\n${tail.join('\n')}`));
    });
  });
}

/** Copies the entry's files into outDir through a temporary sibling directory and a rename. */
function installInto(entryDir: string, outDir: string): void {
  const parent = join(outDir, '..');
  mkdirSync(parent, { recursive: true });
  const tmp = mkdtempSync(join(parent, `.${basename(outDir)}.new-`));
  try {
    for (const name of readdirSync(entryDir)) copyFileSync(join(entryDir, name), join(tmp, name));
    if (existsSync(outDir)) {
      const old = `${tmp}.old`;
      renameSync(outDir, old);
      renameSync(tmp, outDir);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, outDir);
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Builds (or takes from the cache) iPXE with HTTPS and the operator's CA, into opts.outDir. */
export async function buildIpxe(opts: IpxeBuildOptions): Promise<IpxeBuildResult> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const mirror = opts.mirror ?? DEBIAN_MIRROR;

  let caText: string;
  try { caText = readFileSync(opts.trustFile, 'utf8'); } catch (err) { throw new IpxeBuildError('trust', `cannot read ${opts.trustFile}: ${(err as Error).message}`); }
  const ca = parseTrustedCa(caText);

  const version = opts.version ?? installedIpxeVersion();
  if (!version) throw new IpxeBuildError('version', 'the ipxe package is not installed (apt-get install ipxe) and no --version was given');
  const pinned = KNOWN_DSC_SHA256[version];
  if (opts.dscSha256 && !/^[0-9a-f]{64}$/.test(opts.dscSha256)) throw new IpxeBuildError('dsc-sha256', `"${opts.dscSha256}" is not 64 hex digits`);
  const dscSha256 = opts.dscSha256 ?? pinned;
  if (!dscSha256) {
    throw new IpxeBuildError('version', `ipxe ${version} is not one this recipe knows (${Object.keys(KNOWN_DSC_SHA256).join(', ')}); `
      + 'give --dsc-sha256 with the sha256 of its .dsc (from the Sources index of your Debian release) to build it');
  }
  const key = cacheKey(version, dscSha256, ca.sha256);
  const entryDir = join(opts.cacheDir, 'builds', key);

  const current = readIpxeManifest(opts.outDir);
  if (current.manifest?.cacheKey === key) {
    log(`iPXE ${version} with this CA is already in ${opts.outDir}`);
    return { manifest: current.manifest, outDir: opts.outDir, cached: true, seconds: (Date.now() - started) / 1000 };
  }
  const cachedEntry = readIpxeManifest(entryDir);
  if (cachedEntry.manifest?.cacheKey === key) {
    log(`iPXE ${version} with this CA is cached (${entryDir}); installing into ${opts.outDir}`);
    installInto(entryDir, opts.outDir);
    return { manifest: cachedEntry.manifest, outDir: opts.outDir, cached: true, seconds: (Date.now() - started) / 1000 };
  }

  const missing = missingBuildTools();
  if (missing.length) throw new IpxeBuildError('build-depends', `missing: ${missing.join(', ')} (apt-get install ${IPXE_BUILD_DEPENDS.join(' ')})`);

  // --- source: .dsc pinned by sha256, tarballs by the .dsc ---
  const srcDir = join(opts.cacheDir, 'source', version.replace(/[^A-Za-z0-9.+~-]/g, '_'));
  mkdirSync(srcDir, { recursive: true });
  const dscFile = join(srcDir, dscName(IPXE_SOURCE_PACKAGE, version));
  if (!existsSync(dscFile) || sha256Hex(readFileSync(dscFile)) !== dscSha256) {
    const url = poolUrl(mirror, IPXE_SOURCE_PACKAGE, basename(dscFile));
    log(`downloading ${url}`);
    const got = await download(url, `${dscFile}.unverified`, 1 << 20);
    if (got.sha256 !== dscSha256) {
      rmSync(`${dscFile}.unverified`, { force: true });
      throw new IpxeBuildError('dsc', `${url} has sha256 ${got.sha256}, want ${dscSha256}${pinned && !opts.dscSha256 ? ' (pinned for this version)' : ' (--dsc-sha256)'}`);
    }
    renameSync(`${dscFile}.unverified`, dscFile);
  }
  const dsc = parseDsc(readFileSync(dscFile, 'utf8'));
  if (dsc.source !== IPXE_SOURCE_PACKAGE || dsc.version !== version) {
    throw new IpxeBuildError('dsc', `is ${dsc.source} ${dsc.version}, want ${IPXE_SOURCE_PACKAGE} ${version}`);
  }
  for (const f of dsc.files) {
    const path = join(srcDir, f.name);
    if (existsSync(path)) {
      try { verifyFile(path, f); continue; } catch { rmSync(path, { force: true }); /* a stale or broken copy: fetch again */ }
    }
    const url = poolUrl(mirror, IPXE_SOURCE_PACKAGE, f.name);
    log(`downloading ${url} (${(f.size / 1048576).toFixed(1)} MiB)`);
    await download(url, `${path}.unverified`, f.size + 1);
    try { verifyFile(`${path}.unverified`, f); } catch (err) { rmSync(`${path}.unverified`, { force: true }); throw err; }
    renameSync(`${path}.unverified`, path);
  }
  log(`source verified: ${dsc.files.map((f) => `${f.name} sha256:${f.sha256.slice(0, 12)}…`).join(', ')}`);

  // --- unpack, patch, configure, compile: all in a temporary directory ---
  mkdirSync(join(opts.cacheDir, 'builds'), { recursive: true });
  const work = mkdtempSync(join(opts.cacheDir, 'builds', `.${key}.work-`));
  try {
    const tree = join(work, 'ipxe');
    log('unpacking and applying the Debian patches (dpkg-source -x)');
    // the tarballs were checked against the .dsc, and the .dsc against its pinned sha256 (dpkg-source checks again)
    await run('dpkg-source', ['-x', dscFile, tree], { cwd: work, field: 'dpkg-source' });
    const src = join(tree, 'src');
    if (!existsSync(join(src, 'Makefile'))) throw new IpxeBuildError('dsc', `the unpacked source has no src/Makefile (${tree})`);
    const header = join(src, 'config', 'local', 'general.h');
    mkdirSync(join(src, 'config', 'local'), { recursive: true });
    writeFileSync(header, localGeneralHeader(existsSync(header) ? readFileSync(header, 'utf8') : ''));
    const crypto = join(src, 'config', 'local', 'crypto.h');
    writeFileSync(crypto, localCryptoHeader(existsSync(crypto) ? readFileSync(crypto, 'utf8') : ''));
    const caFiles = ca.pems.map((pem, i) => {
      const f = join(work, `trusted-ca-${i + 1}.pem`);
      writeFileSync(f, pem);
      return f;
    });
    const embed = join(work, 'ironboot.ipxe');
    writeFileSync(embed, EMBEDDED_SCRIPT);
    const jobs = opts.jobs ?? Math.max(1, cpus().length);
    log(`compiling ${IPXE_TARGETS.map((t) => t.target).join(', ')} with HTTPS, TRUST= and CERT= the CA (${ca.certs.map((c) => c.subject).join('; ')}), ${jobs} jobs — this takes minutes`);
    let steps = 0;
    let lastReport = Date.now();
    const compileStart = Date.now();
    await run('make', makeArgs(src, caFiles, embed, jobs), {
      field: 'make',
      onLine: (line) => {
        if (/^\s*\[[A-Z]+\]/.test(line)) steps++;
        if (Date.now() - lastReport >= 15_000) {
          lastReport = Date.now();
          log(`compiling… ${steps} steps, ${Math.round((Date.now() - compileStart) / 1000)} s`);
        }
      },
    });
    const entryTmp = join(work, 'entry');
    mkdirSync(entryTmp);
    const binaries: IpxeManifest['binaries'] = {};
    for (const t of IPXE_TARGETS) {
      const built = join(src, t.target);
      if (!existsSync(built) || statSync(built).size === 0) throw new IpxeBuildError('make', `did not produce ${t.target}`);
      copyFileSync(built, join(entryTmp, t.name));
      const bytes = readFileSync(built);
      binaries[t.name] = { size: bytes.length, sha256: sha256Hex(bytes) };
    }
    writeFileSync(join(entryTmp, 'trusted-ca.pem'), ca.pem);
    const manifest: IpxeManifest = {
      builder: 'ironboot artifacts ipxe', recipe: RECIPE_VERSION, cacheKey: key,
      source: { package: IPXE_SOURCE_PACKAGE, version, dscSha256, mirror },
      https: true, userClass: IRONBOOT_IPXE_USER_CLASS,
      trust: ca.certs.map((c) => ({ subject: c.subject, fingerprint256: c.fingerprint256 })),
      trustPemSha256: ca.sha256,
      binaries, builtAt: new Date().toISOString(), buildSeconds: Math.round((Date.now() - compileStart) / 1000),
    };
    writeFileSync(join(entryTmp, IPXE_MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
    rmSync(entryDir, { recursive: true, force: true });
    renameSync(entryTmp, entryDir);
    log(`built in ${manifest.buildSeconds} s; cached as ${entryDir}`);
    installInto(entryDir, opts.outDir);
    return { manifest, outDir: opts.outDir, cached: false, seconds: (Date.now() - started) / 1000 };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
