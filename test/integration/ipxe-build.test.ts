/**
 * `ironboot artifacts ipxe` (server/boot/ipxe-build.ts) end to end against a Debian mirror on loopback, without
 * compiling iPXE: the test builds a small Debian source package named ipxe (3.0 quilt, with dpkg-source -b) whose
 * Makefile stands in for iPXE's. Its "binaries" record what the build gave make (the TRUST fingerprint, CERT=, the
 * EMBED script, config/local/general.h) and whether Debian's patch was applied. Everything else is the real pipeline:
 * the download, the checks against the pinned .dsc sha256 and the .dsc's own checksums, dpkg-source -x, the
 * cache by (version, CA), the install by rename, and the errors (a changed tarball, a wrong .dsc, a 404, a failed
 * make, a bad CA) that leave nothing half-written. The real iPXE build runs in test/e2e/lab-ipxe-tls.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { tempDir, CLI } from '../helpers/daemon.ts';
import { buildIpxe, IpxeBuildError, sha256Hex, EMBEDDED_SCRIPT, missingBuildTools } from '../../server/boot/ipxe-build.ts';
import { IPXE_MANIFEST, readIpxeManifest } from '../../server/boot/ipxe-dir.ts';

const missing = ['openssl', 'dpkg-source', 'make', 'xz', 'tar'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
const skip = missing.length ? `missing: ${missing.join(', ')}` : false;
const VERSION = '0.1-1';
const ORIG = 'ipxe_0.1.orig.tar.xz';

let dir: ReturnType<typeof tempDir>;
let pool = '';           // the mirror's pool/main/i/ipxe
let server: http.Server;
let mirror = '';
let dscSha = '';
let ca = '';
const served: string[] = [];
const overrides = new Map<string, Buffer | number>(); // file → other bytes, or an HTTP status

const MAKEFILE = `COMMA := ,
ifdef IBT_FAIL_MAKE
$(error the build failed on purpose)
endif
define record
@mkdir -p $(dir $@)
@echo "  [BUILD] $@"
@{ echo "target=$@"; $(foreach c,$(subst $(COMMA), ,$(TRUST)),openssl x509 -in $(c) -noout -fingerprint -sha256;) echo "cert=$(CERT)"; echo "werror=$(NO_WERROR)"; cat $(EMBED); cat config/local/general.h; cat config/local/crypto.h; cat patched.txt; } > $@
endef
bin/%:
\t$(record)
bin-x86_64-efi/%:
\t$(record)
`;

function sh(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

before(async () => {
  if (skip) return;
  dir = tempDir('ibt-ipxebuild-');
  // --- a Debian source package "ipxe 0.1-1": orig tarball, Debian tarball with one quilt patch, .dsc ---
  const pkg = join(dir.path, 'pkg');
  const tree = join(pkg, 'ipxe-0.1');
  mkdirSync(join(tree, 'src'), { recursive: true });
  writeFileSync(join(tree, 'src', 'Makefile'), MAKEFILE);
  writeFileSync(join(tree, 'src', 'patched.txt'), 'orig\n');
  sh('tar', ['-cJf', ORIG, 'ipxe-0.1'], pkg);
  mkdirSync(join(tree, 'debian', 'source'), { recursive: true });
  mkdirSync(join(tree, 'debian', 'patches'), { recursive: true });
  writeFileSync(join(tree, 'debian', 'source', 'format'), '3.0 (quilt)\n');
  writeFileSync(join(tree, 'debian', 'control'), 'Source: ipxe\nMaintainer: T <t@example.org>\n\nPackage: ipxe\nArchitecture: all\nDescription: t\n t\n');
  writeFileSync(join(tree, 'debian', 'changelog'), 'ipxe (0.1-1) unstable; urgency=low\n\n  * t\n\n -- T <t@example.org>  Thu, 03 Dec 2026 00:00:00 +0000\n');
  writeFileSync(join(tree, 'debian', 'patches', 'mark.patch'), '--- a/src/patched.txt\n+++ b/src/patched.txt\n@@ -1 +1 @@\n-orig\n+patched by debian\n');
  writeFileSync(join(tree, 'debian', 'patches', 'series'), 'mark.patch\n');
  sh('dpkg-source', ['-b', 'ipxe-0.1'], pkg);
  pool = pkg;
  dscSha = sha256Hex(readFileSync(join(pkg, `ipxe_${VERSION}.dsc`)));
  // --- the mirror ---
  server = http.createServer((req, res) => {
    const m = /^\/debian\/pool\/main\/i\/ipxe\/([^/]+)$/.exec(req.url ?? '');
    const name = m ? decodeURIComponent(m[1]) : '';
    served.push(name);
    const o = overrides.get(name);
    if (typeof o === 'number') { res.writeHead(o).end(); return; }
    const path = join(pool, name);
    if (!m || !existsSync(path)) { res.writeHead(404).end(); return; }
    res.writeHead(200).end(o ?? readFileSync(path));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  mirror = `http://127.0.0.1:${(server.address() as { port: number }).port}/debian`;
  // --- the operator's CA ---
  ca = join(dir.path, 'ca.pem');
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir.path, 'ca.key'), '-out', ca, '-days', '2', '-subj', '/CN=ibt build CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir.path);
});

after(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  dir?.remove();
});

const opts = (over: Partial<Parameters<typeof buildIpxe>[0]> = {}) => ({
  trustFile: ca, outDir: join(dir.path, 'data', 'artifacts', 'ipxe'), cacheDir: join(dir.path, 'data', 'cache', 'ipxe'),
  mirror, version: VERSION, dscSha256: dscSha, jobs: 1, ...over,
});

async function fails(p: Promise<unknown>, field: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IpxeBuildError, String(err));
    assert.equal(err.field, field, err.message);
    assert.match(err.message, re);
    return true;
  });
}

test('build: downloads and checks the source, applies Debian\'s patch, gives make TRUST/CERT/EMBED and HTTPS on, installs with a manifest', { skip: skip || (missingBuildTools().length ? `build tools missing: ${missingBuildTools().join(', ')}` : false) }, async () => {
  const logs: string[] = [];
  const r = await buildIpxe(opts({ log: (m) => logs.push(m) }));
  assert.equal(r.cached, false);
  assert.deepEqual(served.sort(), [`ipxe_${VERSION}.debian.tar.xz`, `ipxe_${VERSION}.dsc`, ORIG].sort());
  const out = opts().outDir;
  assert.deepEqual(readdirSync(out).sort(), [IPXE_MANIFEST, 'ipxe.efi', 'snponly.efi', 'trusted-ca.pem', 'undionly.kpxe'].sort());
  const undi = readFileSync(join(out, 'undionly.kpxe'), 'utf8');
  const fp = new X509Certificate(readFileSync(ca)).fingerprint256;
  assert.match(undi, /^target=bin\/undionly\.kpxe$/m);
  assert.ok(undi.includes(`Fingerprint=${fp}`), `TRUST= is the operator's CA:\n${undi}`);
  assert.match(undi, /^cert=\/\S+\/trusted-ca-1\.pem$/m, 'CERT= the CA too');
  assert.match(undi, /^werror=1$/m);
  assert.ok(undi.includes(EMBEDDED_SCRIPT), 'EMBED= the script that sets option 77');
  assert.match(undi, /^#define DOWNLOAD_PROTO_HTTPS$/m, 'config/local/general.h turns HTTPS on');
  assert.match(undi, /^#define CROSSCERT ""$/m, 'config/local/crypto.h: no cross-signed certificates from ca.ipxe.org');
  assert.match(undi, /^patched by debian$/m, 'the Debian patch was applied');
  assert.match(readFileSync(join(out, 'ipxe.efi'), 'utf8'), /^target=bin-x86_64-efi\/ipxe\.efi$/m);
  const { manifest } = readIpxeManifest(out);
  assert.ok(manifest);
  assert.equal(manifest.https, true);
  assert.equal(manifest.source.version, VERSION);
  assert.equal(manifest.source.dscSha256, dscSha);
  assert.deepEqual(manifest.trust.map((t) => t.fingerprint256), [fp]);
  assert.equal(manifest.binaries['undionly.kpxe'].sha256, sha256Hex(readFileSync(join(out, 'undionly.kpxe'))));
  assert.ok(logs.some((l) => /source verified/.test(l)) && logs.some((l) => /compiling .* this takes minutes/.test(l)), logs.join('\n'));
  const work = readdirSync(join(opts().cacheDir, 'builds')).filter((n) => n.startsWith('.'));
  assert.deepEqual(work, [], 'no temporary build directory left');

  // --- the same CA again: nothing downloaded, nothing compiled ---
  served.length = 0;
  const again = await buildIpxe(opts());
  assert.equal(again.cached, true);
  assert.deepEqual(served, []);
  // --- the output directory removed: installed again from the cache entry ---
  rmSync(out, { recursive: true });
  const reinstalled = await buildIpxe(opts());
  assert.equal(reinstalled.cached, true);
  assert.deepEqual(served, []);
  assert.equal(readFileSync(join(out, 'undionly.kpxe'), 'utf8'), undi);
  // --- another CA: another cache entry, the source from the cache (no download) ---
  const ca2 = join(dir.path, 'ca2.pem');
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir.path, 'ca2.key'), '-out', ca2, '-days', '2', '-subj', '/CN=ibt second CA',
    '-addext', 'basicConstraints=critical,CA:TRUE'], dir.path);
  const both = join(dir.path, 'both.pem');
  writeFileSync(both, readFileSync(ca2, 'utf8') + readFileSync(ca, 'utf8'));
  const second = await buildIpxe(opts({ trustFile: both }));
  assert.equal(second.cached, false);
  assert.deepEqual(served, [], 'the verified source is reused');
  const withBoth = readFileSync(join(out, 'undionly.kpxe'), 'utf8');
  assert.ok(withBoth.includes(new X509Certificate(readFileSync(ca2)).fingerprint256) && withBoth.includes(fp), 'both roots fingerprinted: one TRUST= file each');
  assert.match(withBoth, /^cert=\/\S+\/trusted-ca-1\.pem,\/\S+\/trusted-ca-2\.pem$/m);
  assert.equal(readIpxeManifest(out).manifest?.trust.length, 2);
  assert.equal(readdirSync(join(opts().cacheDir, 'builds')).length, 2);
});

test('errors leave nothing half-written: a changed tarball, a wrong .dsc, a 404, a failed make, a bad CA', { skip }, async () => {
  const fresh = (name: string) => opts({ outDir: join(dir.path, name, 'ipxe'), cacheDir: join(dir.path, name, 'cache') });
  const nothingIn = (o: ReturnType<typeof fresh>) => {
    assert.equal(existsSync(o.outDir), false, 'no output directory');
    const builds = join(o.cacheDir, 'builds');
    assert.deepEqual(existsSync(builds) ? readdirSync(builds) : [], [], 'no cache entry, no work directory');
  };
  // a tarball that is not the one the .dsc names
  const orig = readFileSync(join(pool, ORIG));
  const changed = Buffer.from(orig); changed[changed.length - 1] ^= 1;
  overrides.set(ORIG, changed);
  let o = fresh('changed');
  await fails(buildIpxe(o), ORIG, /sha256 is [0-9a-f]{64}, the \.dsc says/);
  nothingIn(o);
  assert.equal(readdirSync(join(o.cacheDir, 'source', VERSION)).some((n) => n.startsWith(ORIG)), false, 'the bad download is not kept');
  overrides.delete(ORIG);
  // a .dsc whose sha256 is not the pinned/given one
  o = fresh('dsc');
  await fails(buildIpxe({ ...o, dscSha256: 'f'.repeat(64) }), 'dsc', /has sha256 [0-9a-f]{64}, want f{64} \(--dsc-sha256\)/);
  nothingIn(o);
  // the mirror does not have a file
  overrides.set(`ipxe_${VERSION}.debian.tar.xz`, 404);
  o = fresh('missing');
  await fails(buildIpxe(o), 'download', /ipxe_0\.1-1\.debian\.tar\.xz: the mirror answered 404/);
  nothingIn(o);
  overrides.clear();
  // make fails: the error carries its output; an earlier output directory stays as it was
  o = fresh('make');
  mkdirSync(o.outDir, { recursive: true });
  writeFileSync(join(o.outDir, 'undionly.kpxe'), 'the previous build');
  process.env.IBT_FAIL_MAKE = '1';
  try {
    await fails(buildIpxe(o), 'make', /failed \(exit 2\); last output:\n[\s\S]*the build failed on purpose/);
  } finally {
    delete process.env.IBT_FAIL_MAKE;
  }
  assert.equal(readFileSync(join(o.outDir, 'undionly.kpxe'), 'utf8'), 'the previous build');
  assert.deepEqual(readdirSync(join(o.cacheDir, 'builds')), [], 'the work directory is removed');
  // an unknown version without --dsc-sha256
  await fails(buildIpxe({ ...fresh('version'), dscSha256: undefined }), 'version', /ipxe 0\.1-1 is not one this recipe knows .* give --dsc-sha256/);
  // the CLI: a bad --trust is refused before anything is fetched, with the field and the reason
  served.length = 0;
  const key = join(dir.path, 'ca.key');
  const cli = spawnSync(process.execPath, [CLI, 'artifacts', 'ipxe', '--trust', key, '--out', join(dir.path, 'cli', 'ipxe'), '--cache', join(dir.path, 'cli', 'cache'),
    '--mirror', mirror, '--version', VERSION, '--dsc-sha256', dscSha], { encoding: 'utf8' });
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stderr, /ironboot: artifacts ipxe failed: trust: the file holds a private key/);
  assert.deepEqual(served, []);
  assert.equal(existsSync(join(dir.path, 'cli')), false);
  const noTrust = spawnSync(process.execPath, [CLI, 'artifacts', 'ipxe'], { encoding: 'utf8' });
  assert.equal(noTrust.status, 2);
  assert.match(noTrust.stderr, /--trust CA\.pem is required/);
});
