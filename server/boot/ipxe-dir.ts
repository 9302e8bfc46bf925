/**
 * The iPXE directory the daemon serves (TFTP, /ipxe/ over HTTP) and what it knows about it.
 *
 * `ironboot artifacts ipxe --trust CA.pem` (server/boot/ipxe-build.ts) writes its binaries with ironboot-ipxe.json
 * into ARTIFACTS_DIR/ipxe. `ironboot serve` uses that directory when --ipxe-dir is not given and the manifest is there,
 * else Debian's /usr/lib/ipxe. With a manifest that says HTTPS and the daemon's --tls-cert, iPXE is sent to the HTTPS
 * side (boot script, kernel, initramfs); `ipxeTlsCheck` tells the operator at start when iPXE would refuse the
 * certificate (not signed by the CA built in, or a key type the 2019 iPXE cannot use).
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const IPXE_MANIFEST = 'ironboot-ipxe.json';
/** Option 77 (user class) of ironboot's iPXE build: its embedded script sets it before DHCP (server/dhcp/decide.ts). */
export const IRONBOOT_IPXE_USER_CLASS = 'ironboot';
export const DEBIAN_IPXE_DIR = '/usr/lib/ipxe';

export interface IpxeManifest {
  builder: string;
  recipe: number;
  cacheKey: string;
  source: { package: string; version: string; dscSha256: string; mirror: string };
  /** Built with DOWNLOAD_PROTO_HTTPS. */
  https: boolean;
  /** Option 77 its embedded script sends. */
  userClass: string;
  /** The roots iPXE trusts (TRUST=), with their SHA-256 fingerprints (colon hex, as node prints them). */
  trust: { subject: string; fingerprint256: string }[];
  trustPemSha256: string;
  binaries: Record<string, { size: number; sha256: string }>;
  builtAt: string;
  buildSeconds: number;
}

/** ironboot-ipxe.json of dir: null when there is none; `problem` when there is one that cannot be used. */
export function readIpxeManifest(dir: string): { manifest: IpxeManifest | null; problem?: string } {
  const path = join(dir, IPXE_MANIFEST);
  if (!existsSync(path)) return { manifest: null };
  let m: IpxeManifest;
  try { m = JSON.parse(readFileSync(path, 'utf8')); } catch (err) { return { manifest: null, problem: `${path}: ${(err as Error).message}` }; }
  if (!m || typeof m !== 'object' || typeof m.cacheKey !== 'string' || typeof m.https !== 'boolean' || !Array.isArray(m.trust) || typeof m.binaries !== 'object') {
    return { manifest: null, problem: `${path}: not an ironboot iPXE manifest` };
  }
  const absent = Object.keys(m.binaries).filter((n) => !existsSync(join(dir, n)));
  if (absent.length) return { manifest: null, problem: `${path}: ${absent.join(', ')} missing beside it` };
  return { manifest: m };
}

/** The iPXE directory: --ipxe-dir, else ARTIFACTS_DIR/ipxe when a built iPXE is there, else Debian's. */
export function chooseIpxeDir(explicit: string | null, artifactsDir: string): { dir: string; why: string } {
  if (explicit) return { dir: explicit, why: '--ipxe-dir' };
  const built = join(artifactsDir, 'ipxe');
  if (existsSync(join(built, IPXE_MANIFEST))) return { dir: built, why: `built by ironboot artifacts ipxe (${IPXE_MANIFEST})` };
  return { dir: DEBIAN_IPXE_DIR, why: 'Debian\'s ipxe package (no HTTPS)' };
}

/** PEM certificates of a chain file, in order. */
export function pemCertificates(pem: string): X509Certificate[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)].map((m) => new X509Certificate(m[0]));
}

/**
 * Problems iPXE would have with the daemon's certificate (empty: none found): the chain (--tls-cert) must lead to one
 * of the trusted roots; iPXE 1.0.0 (2019) speaks only RSA key exchange, so the key must be RSA.
 */
export function ipxeTlsProblems(manifest: IpxeManifest, ipxeDir: string, certChainPem: string): string[] {
  const problems: string[] = [];
  let chain: X509Certificate[];
  try { chain = pemCertificates(certChainPem); } catch (err) { return [`--tls-cert does not parse: ${(err as Error).message}`]; }
  if (!chain.length) return ['--tls-cert holds no PEM certificate'];
  const leaf = chain[0];
  if (leaf.publicKey.asymmetricKeyType !== 'rsa') {
    problems.push(`the certificate's key is ${leaf.publicKey.asymmetricKeyType?.toUpperCase()}: this iPXE (${manifest.source.version}) does TLS only with RSA keys (TLS_RSA_WITH_AES_*); use an RSA key (openssl req -newkey rsa:2048)`);
  }
  const trusted = new Set(manifest.trust.map((t) => t.fingerprint256));
  const roots: X509Certificate[] = [];
  try { roots.push(...pemCertificates(readFileSync(join(ipxeDir, 'trusted-ca.pem'), 'utf8'))); } catch { /* no copy */ }
  // walk the chain: each certificate is either trusted, or issued by the next one (or by a trusted root)
  let ok = false;
  for (let i = 0; i < chain.length && !ok; i++) {
    const c = chain[i];
    if (trusted.has(c.fingerprint256)) { ok = true; break; }
    const root = roots.find((r) => trusted.has(r.fingerprint256) && c.checkIssued(r) && c.verify(r.publicKey));
    if (root) { ok = true; break; }
    const next = chain[i + 1];
    if (!next || !c.checkIssued(next) || !c.verify(next.publicKey)) break;
  }
  if (!ok) {
    problems.push(`--tls-cert (${leaf.subject.replace(/\n/g, ', ')}, issued by ${leaf.issuer.replace(/\n/g, ', ')}) does not lead to the CA built into iPXE `
      + `(${manifest.trust.map((t) => t.subject).join('; ')}): iPXE will refuse it; rebuild with ironboot artifacts ipxe --trust THE-CA.pem`);
  }
  return problems;
}
