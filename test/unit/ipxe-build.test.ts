/**
 * `ironboot artifacts ipxe` (server/boot/ipxe-build.ts), the pure parts: Debian's .dsc (the real one of the installed
 * ipxe version, in test/unit/data), file checks against it, the operator's CA, the config header (run through the C
 * preprocessor the way iPXE's config/general.h includes it), the make command line and the cache key; and what the
 * daemon checks about its certificate against a built iPXE (server/boot/ipxe-dir.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  parseDsc, parseControlFields, unwrapClearsigned, dscName, poolUrl, verifyFile, sha256Hex, parseTrustedCa, localGeneralHeader,
  makeArgs, cacheKey, localCryptoHeader, KNOWN_DSC_SHA256, IpxeBuildError, EMBEDDED_SCRIPT, IPXE_TARGETS, LOCAL_CONFIG_MARK,
} from '../../server/boot/ipxe-build.ts';
import { ipxeTlsProblems, readIpxeManifest, chooseIpxeDir, IPXE_MANIFEST, DEBIAN_IPXE_DIR, IRONBOOT_IPXE_USER_CLASS, type IpxeManifest } from '../../server/boot/ipxe-dir.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const VERSION = '1.0.0+git-20190125.36a4c85-5.1';
const DSC = readFileSync(join(HERE, 'data', `ipxe_${VERSION}.dsc`));
const haveOpenssl = !spawnSync('openssl', ['version']).error;
const haveCpp = !spawnSync('cpp', ['--version']).error;

function fails(fn: () => unknown, field: string, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof IpxeBuildError, String(err));
    assert.equal(err.field, field);
    assert.match(err.message, re);
    return true;
  });
}

test('the pinned .dsc sha256 is the sha256 of Debian\'s .dsc of the installed version', () => {
  assert.equal(sha256Hex(DSC), KNOWN_DSC_SHA256[VERSION]);
});

test('parseDsc: Debian\'s ipxe .dsc → source, version, format and the two tarballs with size and sha256', () => {
  const d = parseDsc(DSC.toString('utf8'));
  assert.equal(d.source, 'ipxe');
  assert.equal(d.version, VERSION);
  assert.equal(d.format, '3.0 (quilt)');
  assert.deepEqual(d.files, [
    { sha256: '3ae46008c5f0910665569928e18d171b02bcb210e9fc191dc19dd0d9ae59ee42', size: 2542700, name: 'ipxe_1.0.0+git-20190125.36a4c85.orig.tar.xz' },
    { sha256: '6af4799853d710eb1c45bfc032bc2f49dbefae08ac2ff85f66e74eed38f44433', size: 8664, name: 'ipxe_1.0.0+git-20190125.36a4c85-5.1.debian.tar.xz' },
  ]);
});

test('parseDsc: the PGP wrapper is stripped, dash-escaping undone, continuation lines kept', () => {
  const body = unwrapClearsigned('-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSource: x\n- -dash\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n');
  assert.equal(body, 'Source: x\n-dash');
  const f = parseControlFields('Source: a\nFiles:\n one\n two\n\nOther: ignored\n');
  assert.equal(f.get('files'), '\none\ntwo');
  assert.equal(f.has('other'), false, 'only the first paragraph');
  fails(() => unwrapClearsigned('-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSource: x\n'), 'dsc', /without its signature/);
});

test('parseDsc refuses what it cannot trust: no checksums, a path in a name, a bad line, a duplicate, missing fields', () => {
  const base = 'Format: 3.0 (quilt)\nSource: ipxe\nVersion: 1.0-1\n';
  const sha = 'a'.repeat(64);
  fails(() => parseDsc(base), 'dsc', /no Checksums-sha256 field/);
  fails(() => parseDsc(`${base}Checksums-Sha256:\n ${sha} 10 ../etc/passwd\n`), 'dsc', /not a plain file name/);
  fails(() => parseDsc(`${base}Checksums-Sha256:\n ${sha} 10 sub/x.tar.xz\n`), 'dsc', /not a plain file name/);
  fails(() => parseDsc(`${base}Checksums-Sha256:\n ${sha.slice(1)} 10 x.tar.xz\n`), 'dsc', /not "SHA256 SIZE NAME"/);
  fails(() => parseDsc(`${base}Checksums-Sha256:\n ${sha} 10 x.tar.xz\n ${sha} 10 x.tar.xz\n`), 'dsc', /twice/);
  fails(() => parseDsc(`Format: 1.0\nVersion: 1\nChecksums-Sha256:\n ${sha} 1 a\n`), 'dsc', /no Source field/);
  fails(() => parseDsc(`Format: 1.0\nSource: Bad Name\nVersion: 1\n`), 'dsc', /not a package name/);
  fails(() => parseDsc(' leading continuation\n'), 'dsc', /continuation line before any field/);
});

test('dscName and poolUrl: the mirror layout (epoch dropped, lib* prefix, "+" kept)', () => {
  assert.equal(dscName('ipxe', VERSION), `ipxe_${VERSION}.dsc`);
  assert.equal(dscName('foo', '2:1.0-1'), 'foo_1.0-1.dsc');
  assert.equal(poolUrl('http://deb.debian.org/debian/', 'ipxe', `ipxe_${VERSION}.dsc`), `http://deb.debian.org/debian/pool/main/i/ipxe/ipxe_${VERSION}.dsc`);
  assert.equal(poolUrl('http://m/debian', 'libfoo', 'libfoo_1.dsc'), 'http://m/debian/pool/main/libf/libfoo/libfoo_1.dsc');
});

test('verifyFile: size and sha256 against the .dsc line, naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ibt-verify-'));
  try {
    const path = join(dir, 'x.tar.xz');
    writeFileSync(path, 'hello');
    const want = { name: 'x.tar.xz', size: 5, sha256: sha256Hex('hello') };
    verifyFile(path, want);
    fails(() => verifyFile(path, { ...want, size: 6 }), 'x.tar.xz', /is 5 bytes, the .dsc says 6/);
    writeFileSync(path, 'hellO');
    fails(() => verifyFile(path, want), 'x.tar.xz', /sha256 is [0-9a-f]{64}, the .dsc says/);
    fails(() => verifyFile(join(dir, 'absent'), want), 'x.tar.xz', /cannot read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- the operator's CA -------------------------------------------------------------------------------------

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, an RSA server certificate it signs, an EC one, and a second unrelated CA, in a temp dir. */
function pki(): { dir: string; ca: string; caKey: string; other: string; rsaCert: string; ecCert: string; otherCert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ibt-pki-'));
  const ca = (n: string) => openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.pem`, '-days', '2', '-subj', `/CN=${n}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  ca('ibt-ca'); ca('ibt-other-ca');
  const leaf = (name: string, key: string[], signer: string) => {
    openssl(['req', '-new', '-newkey', ...key, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=10.92.0.1'], dir);
    writeFileSync(join(dir, 'ext.cnf'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:10.92.0.1\n');
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.pem`, '-CAkey', `${signer}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'ext.cnf'], dir);
  };
  leaf('rsa', ['rsa:2048'], 'ibt-ca');
  leaf('ec', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'ibt-ca');
  leaf('foreign', ['rsa:2048'], 'ibt-other-ca');
  const p = (n: string) => join(dir, `${n}.pem`);
  return { dir, ca: p('ibt-ca'), caKey: join(dir, 'ibt-ca.key'), other: p('ibt-other-ca'), rsaCert: p('rsa'), ecCert: p('ec'), otherCert: p('foreign') };
}

test('parseTrustedCa: a CA passes (normalized PEM, fingerprint); a leaf, a key, garbage, nothing are refused with the reason', { skip: haveOpenssl ? false : 'openssl missing' }, () => {
  const k = pki();
  try {
    const text = readFileSync(k.ca, 'utf8');
    const ca = parseTrustedCa(`some comment\n${text.replace(/\n/g, '\r\n')}`);
    assert.equal(ca.certs.length, 1);
    assert.equal(ca.certs[0].subject, 'CN=ibt-ca');
    assert.match(ca.certs[0].fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.equal(ca.pem, text, 'normalized to the plain PEM block');
    assert.equal(parseTrustedCa(text).sha256, ca.sha256, 'the cache key does not depend on line endings or comments');
    const two = parseTrustedCa(text + readFileSync(k.other, 'utf8'));
    assert.equal(two.certs.length, 2, 'several roots');
    assert.deepEqual(two.pems, [text, readFileSync(k.other, 'utf8')]);
    fails(() => parseTrustedCa(readFileSync(k.rsaCert, 'utf8')), 'trust', /certificate 1 \(CN=10\.92\.0\.1\) is not a CA/);
    fails(() => parseTrustedCa(text + readFileSync(k.caKey, 'utf8')), 'trust', /holds a private key/);
    fails(() => parseTrustedCa('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), 'trust', /certificate 1 does not parse/);
    fails(() => parseTrustedCa('not a pem file'), 'trust', /no PEM certificate/);
    fails(() => parseTrustedCa(text, 'trust', new Date(Date.now() + 10 * 86400_000)), 'trust', /expired/);
  } finally {
    rmSync(k.dir, { recursive: true, force: true });
  }
});

// ---- config, make, cache key ---------------------------------------------------------------------------------

test('localGeneralHeader: HTTPS on after iPXE\'s own #undef (checked with the C preprocessor), Debian\'s content kept, idempotent', { skip: haveCpp ? false : 'cpp missing' }, () => {
  const h = localGeneralHeader();
  assert.ok(h.startsWith(LOCAL_CONFIG_MARK));
  const debian = '#define SOMETHING_DEBIAN\n';
  const both = localGeneralHeader(debian);
  assert.ok(both.startsWith(debian) && both.includes('#define DOWNLOAD_PROTO_HTTPS'));
  assert.equal(localGeneralHeader(both), both, 'a second run changes nothing');
  assert.equal(localGeneralHeader('#define X'), `#define X\n${h}`);
  // iPXE's config/general.h: `#undef DOWNLOAD_PROTO_HTTPS` … then `#include <config/local/general.h>` at its end
  const dir = mkdtempSync(join(tmpdir(), 'ibt-cpp-'));
  try {
    writeFileSync(join(dir, 'local.h'), both);
    writeFileSync(join(dir, 'general.h'), '#define DOWNLOAD_PROTO_HTTP\n#undef DOWNLOAD_PROTO_HTTPS\n#include "local.h"\n'
      + '#ifdef DOWNLOAD_PROTO_HTTPS\nhttps_on\n#else\nhttps_off\n#endif\n#ifdef SOMETHING_DEBIAN\ndebian_kept\n#endif\n');
    const r = spawnSync('cpp', ['-P', join(dir, 'general.h')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean), ['https_on', 'debian_kept']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('localCryptoHeader: CROSSCERT empty after iPXE\'s own default (checked with the C preprocessor), idempotent', { skip: haveCpp ? false : 'cpp missing' }, () => {
  const h = localCryptoHeader();
  assert.equal(localCryptoHeader(h), h);
  const dir = mkdtempSync(join(tmpdir(), 'ibt-cpp-'));
  try {
    writeFileSync(join(dir, 'local.h'), h);
    // iPXE's config/crypto.h: `#define CROSSCERT "http://ca.ipxe.org/auto"` … then `#include <config/local/crypto.h>`
    writeFileSync(join(dir, 'crypto.h'), '#define CROSSCERT "http://ca.ipxe.org/auto"\n#include "local.h"\nconst char crosscert_default[] = CROSSCERT;\n');
    const r = spawnSync('cpp', ['-P', join(dir, 'crypto.h')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /crosscert_default\[\] = "";/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('makeArgs: TRUST=, CERT= the CA, EMBED= the script, the three targets; a path iPXE\'s make cannot take is refused', () => {
  const a = makeArgs('/c/ipxe/src', ['/c/ca-1.pem'], '/c/ironboot.ipxe', 2);
  assert.deepEqual(a, ['-C', '/c/ipxe/src', '-j2', 'NO_WERROR=1', 'EXTRA_CFLAGS=-fcommon', 'V=0', 'TRUST=/c/ca-1.pem', 'CERT=/c/ca-1.pem', 'EMBED=/c/ironboot.ipxe',
    'bin/undionly.kpxe', 'bin-x86_64-efi/ipxe.efi', 'bin-x86_64-efi/snponly.efi']);
  // several roots: one file each (iPXE's make fingerprints only a file's first certificate), as lists
  assert.ok(makeArgs('/c', ['/c/ca-1.pem', '/c/ca-2.pem'], '/c/e', 1).includes('TRUST=/c/ca-1.pem,/c/ca-2.pem'));
  fails(() => makeArgs('/c', ['/my dir/ca.pem'], '/c/e', 1), 'cache', /space or comma/);
  fails(() => makeArgs('/c', ['/c/ca.pem'], '/a,b/e', 1), 'cache', /space or comma/);
  fails(() => makeArgs('/c', [], '/c/e', 1), 'trust', /no CA/);
  assert.deepEqual(IPXE_TARGETS.map((t) => t.name), ['undionly.kpxe', 'ipxe.efi', 'snponly.efi']);
  assert.match(EMBEDDED_SCRIPT, new RegExp(`^#!ipxe\\n[\\s\\S]*^set user-class ${IRONBOOT_IPXE_USER_CLASS}$\\n^autoboot$`, 'm'));
});

test('cacheKey: one entry per (version, .dsc, CA); stable', () => {
  const k = cacheKey(VERSION, 'a'.repeat(64), 'b'.repeat(64));
  assert.equal(k, cacheKey(VERSION, 'a'.repeat(64), 'b'.repeat(64)));
  assert.match(k, /^1\.0\.0\+git-20190125\.36a4c85-5\.1-[0-9a-f]{16}$/);
  assert.notEqual(k, cacheKey(VERSION, 'a'.repeat(64), 'c'.repeat(64)));
  assert.notEqual(k, cacheKey(VERSION, 'c'.repeat(64), 'b'.repeat(64)));
  assert.notEqual(k, cacheKey('1.0.0-1', 'a'.repeat(64), 'b'.repeat(64)));
  assert.equal(cacheKey('1:2/3', 'a', 'b').startsWith('1_2_3-'), true, 'no path separators in the entry name');
});

// ---- the daemon's side: picking the directory, checking the certificate against the built iPXE -------------------

function fakeBuiltDir(caPem: string): { dir: string; manifest: IpxeManifest } {
  const dir = mkdtempSync(join(tmpdir(), 'ibt-ipxedir-'));
  const ca = parseTrustedCa(caPem);
  writeFileSync(join(dir, 'undionly.kpxe'), 'x');
  writeFileSync(join(dir, 'trusted-ca.pem'), ca.pem);
  const manifest: IpxeManifest = {
    builder: 'test', recipe: 1, cacheKey: 'k', source: { package: 'ipxe', version: VERSION, dscSha256: '', mirror: '' }, https: true,
    userClass: IRONBOOT_IPXE_USER_CLASS, trust: ca.certs.map((c) => ({ subject: c.subject, fingerprint256: c.fingerprint256 })), trustPemSha256: ca.sha256,
    binaries: { 'undionly.kpxe': { size: 1, sha256: sha256Hex('x') } }, builtAt: '', buildSeconds: 0,
  };
  writeFileSync(join(dir, IPXE_MANIFEST), JSON.stringify(manifest));
  return { dir, manifest };
}

test('ipxeTlsProblems: a certificate the CA signed is fine; another CA\'s, or an EC key, is reported', { skip: haveOpenssl ? false : 'openssl missing' }, () => {
  const k = pki();
  try {
    const { dir, manifest } = fakeBuiltDir(readFileSync(k.ca, 'utf8'));
    assert.deepEqual(ipxeTlsProblems(manifest, dir, readFileSync(k.rsaCert, 'utf8')), []);
    assert.deepEqual(ipxeTlsProblems(manifest, dir, readFileSync(k.rsaCert, 'utf8') + readFileSync(k.ca, 'utf8')), [], 'a chain that includes the root');
    const foreign = ipxeTlsProblems(manifest, dir, readFileSync(k.otherCert, 'utf8'));
    assert.equal(foreign.length, 1);
    assert.match(foreign[0], /issued by CN=ibt-other-ca\) does not lead to the CA built into iPXE \(CN=ibt-ca\)/);
    const ec = ipxeTlsProblems(manifest, dir, readFileSync(k.ecCert, 'utf8'));
    assert.equal(ec.length, 1);
    assert.match(ec[0], /key is EC: .* only with RSA keys/);
    assert.match(ipxeTlsProblems(manifest, dir, 'nothing')[0], /no PEM certificate/);
    rmSync(dir, { recursive: true, force: true });
  } finally {
    rmSync(k.dir, { recursive: true, force: true });
  }
});

test('chooseIpxeDir/readIpxeManifest: --ipxe-dir wins; else ARTIFACTS_DIR/ipxe with a manifest; else Debian\'s; a broken manifest is reported', { skip: haveOpenssl ? false : 'openssl missing' }, () => {
  const k = pki();
  const artifacts = mkdtempSync(join(tmpdir(), 'ibt-artifacts-'));
  try {
    assert.deepEqual(chooseIpxeDir(null, artifacts).dir, DEBIAN_IPXE_DIR);
    assert.deepEqual(chooseIpxeDir('/x', artifacts).dir, '/x');
    const { dir } = fakeBuiltDir(readFileSync(k.ca, 'utf8'));
    spawnSync('mv', [dir, join(artifacts, 'ipxe')]);
    assert.equal(chooseIpxeDir(null, artifacts).dir, join(artifacts, 'ipxe'));
    assert.equal(readIpxeManifest(join(artifacts, 'ipxe')).manifest?.https, true);
    assert.deepEqual(readIpxeManifest(artifacts), { manifest: null }, 'no manifest: not a built iPXE');
    rmSync(join(artifacts, 'ipxe', 'undionly.kpxe'));
    assert.match(readIpxeManifest(join(artifacts, 'ipxe')).problem ?? '', /undionly\.kpxe missing beside it/);
    writeFileSync(join(artifacts, 'ipxe', IPXE_MANIFEST), '{');
    assert.match(readIpxeManifest(join(artifacts, 'ipxe')).problem ?? '', /JSON|Unexpected/);
  } finally {
    rmSync(k.dir, { recursive: true, force: true });
    rmSync(artifacts, { recursive: true, force: true });
  }
});
