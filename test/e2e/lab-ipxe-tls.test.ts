/**
 * Issue 15, the iPXE side, in the QEMU lab: iPXE verifies the server.
 *
 * `ironboot artifacts ipxe --trust CA` builds iPXE from Debian's source package with HTTPS and a test CA as its only
 * trusted root (the CA is made once with openssl into the test cache and reused, so the build is cached too: it runs
 * once per CI machine). `ironboot serve --tls-cert` (a certificate that CA signed, RSA) serves it:
 *
 *   positive  a BIOS VM PXE-boots: its NIC's iPXE ROM gets undionly.kpxe over TFTP (not ironboot's iPXE: it chains),
 *             ironboot's iPXE asks DHCP again with option 77 "ironboot" and gets https://…:8443/boot/<mac>.ipxe; boot
 *             script, kernel and initramfs come over HTTPS (the daemon's request log shows them on the HTTPS
 *             listener, none on plain HTTP, which refuses them); the agent (CA in its initramfs) runs the workflow
 *             to `succeeded`
 *   negative  the daemon presents a certificate from ANOTHER CA: the daemon says so at start, iPXE refuses the
 *             connection (its certificate error on the console), and no boot script, kernel or initramfs is served
 *
 * Skips with the reason when the lab cannot run (not root, no QEMU) or iPXE cannot be built here (build tools
 * missing, the ipxe version unknown, or Debian's mirror does not have the source and nothing is cached).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabEnv, buildHttpdDisk, provision, logLines, labUnavailable, ensureArtifacts, CLI, ROOT } from '../helpers/lab-env.ts';
import { CACHE_DIR, artifactsKey } from '../helpers/agent-artifacts.ts';
import { buildArtifacts } from '../../init/build/index.ts';
import {
  DEBIAN_MIRROR, IPXE_SOURCE_PACKAGE, KNOWN_DSC_SHA256, cacheKey, dscName, installedIpxeVersion, missingBuildTools, parseDsc,
  parseTrustedCa, poolUrl, sha256Hex, verifyFile,
} from '../../server/boot/ipxe-build.ts';
import { readIpxeManifest } from '../../server/boot/ipxe-dir.ts';
import { macForName } from '../../server/lab/qemu.ts';

const IPXE_CACHE = join(CACHE_DIR, 'ipxe');
const CA_DIR = join(CACHE_DIR, 'ipxe-tls-ca');
const OCTET = (process.pid % 200) + 20;
const NET = '10.92';
const SERVER_IP = `${NET}.${OCTET}.1`;
/** iPXE's TLS refusing the server's certificate: chain not completed from the CA built in, or an untrusted root. */
const IPXE_REFUSED = /Invalid argument \(http:\/\/ipxe\.org\/1c2ee002\)|Permission denied|ipxe\.org\/0216e/;

function openssl(args: string[], cwd?: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** The test CA, made once (10 years) and kept in the test cache, so the iPXE build keyed by it is cached as well. */
function testCa(): { cert: string; key: string } {
  const cert = join(CA_DIR, 'ca.pem');
  const key = join(CA_DIR, 'ca.key');
  if (existsSync(cert) && existsSync(key)) return { cert, key };
  mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = mkdtempSync(join(CACHE_DIR, '.ipxe-tls-ca-'));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3650', '-subj', '/CN=ironboot test iPXE CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], tmp);
  try { renameSync(tmp, CA_DIR); } catch { rmSync(tmp, { recursive: true, force: true }); /* another run made it meanwhile */ }
  return { cert, key };
}

/** Why iPXE cannot be built here, or false: tools, version, and the source (cached, or on Debian's mirror). */
async function ipxeBuildUnavailable(): Promise<string | false> {
  if (spawnSync('openssl', ['version']).error) return 'openssl is not installed';
  const missing = missingBuildTools();
  if (missing.length) return `iPXE build tools missing: ${missing.join(', ')}`;
  const version = installedIpxeVersion();
  if (!version) return 'the ipxe package is not installed';
  const dscSha = KNOWN_DSC_SHA256[version];
  if (!dscSha) return `ipxe ${version} has no pinned .dsc sha256 in server/boot/ipxe-build.ts`;
  if (existsSync(join(CA_DIR, 'ca.pem'))) {
    const ca = parseTrustedCa(readFileSync(join(CA_DIR, 'ca.pem'), 'utf8'));
    if (readIpxeManifest(join(IPXE_CACHE, 'builds', cacheKey(version, dscSha, ca.sha256))).manifest) return false; // built before
  }
  const srcDir = join(IPXE_CACHE, 'source', version);
  let dscText: string;
  const dscFile = join(srcDir, dscName(IPXE_SOURCE_PACKAGE, version));
  if (existsSync(dscFile) && sha256Hex(readFileSync(dscFile)) === dscSha) {
    dscText = readFileSync(dscFile, 'utf8');
  } else {
    const url = poolUrl(DEBIAN_MIRROR, IPXE_SOURCE_PACKAGE, dscName(IPXE_SOURCE_PACKAGE, version));
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(20_000) });
      if (!r.ok) return `Debian's mirror answered ${r.status} for ${url}: the iPXE source cannot be fetched here`;
      dscText = await r.text();
    } catch (err) {
      return `no route to Debian's mirror (${url}): ${(err as Error).message}`;
    }
  }
  for (const f of parseDsc(dscText).files) {
    const cached = join(srcDir, f.name);
    if (existsSync(cached)) { try { verifyFile(cached, f); continue; } catch { /* fetched again by the build */ } }
    const url = poolUrl(DEBIAN_MIRROR, IPXE_SOURCE_PACKAGE, f.name);
    try {
      const r = await fetch(url, { method: 'HEAD', signal: AbortSignal.timeout(20_000) });
      if (!r.ok) return `Debian's mirror answered ${r.status} for ${url}: the iPXE source cannot be fetched here (and none is cached in ${srcDir})`;
    } catch (err) {
      return `no route to Debian's mirror (${url}): ${(err as Error).message}`;
    }
  }
  return false;
}

const labSkip = labUnavailable();
const skip = labSkip || await ipxeBuildUnavailable();

let ca = { cert: '', key: '' };
let runDir = '';
let ipxeDir = '';
let caArtifacts = '';
const timings: Record<string, number> = {};

/** A server certificate for the lab address, RSA (iPXE 1.0.0 does TLS only with RSA keys), signed by `signer`. */
function serverCert(name: string, signer: { cert: string; key: string }): { cert: string; key: string } {
  const key = join(runDir, `${name}.key`);
  const cert = join(runDir, `${name}.pem`);
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', `${name}.csr`, '-subj', `/CN=${SERVER_IP}`], runDir);
  writeFileSync(join(runDir, `${name}.ext`), `subjectAltName=IP:${SERVER_IP}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', signer.cert, '-CAkey', signer.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', `${name}.ext`], runDir);
  return { cert, key };
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    let stdout = '';
    p.stdout.on('data', (d) => { out += d; stdout += d; });
    p.stderr.on('data', (d) => { out += d; process.stderr.write(d); });
    p.on('close', (code) => resolve({ code, stdout, out }));
  });
}

before(async () => {
  if (skip) return;
  runDir = mkdtempSync(join(tmpdir(), 'ibt-ipxetls-'));
  ca = testCa();
  // --- iPXE with HTTPS and the test CA (cached in the test cache by source version and CA) ---
  ipxeDir = join(runDir, 'ipxe');
  let t0 = Date.now();
  const built = await run(process.execPath, [CLI, 'artifacts', 'ipxe', '--trust', ca.cert, '--out', ipxeDir, '--cache', IPXE_CACHE, '--json'], 1_800_000);
  timings.ipxeBuildSeconds = (Date.now() - t0) / 1000;
  assert.equal(built.code, 0, `ironboot artifacts ipxe failed:\n${built.out.slice(-4000)}`);
  const manifest = JSON.parse(built.stdout);
  timings.ipxeCompileSeconds = manifest.buildSeconds;
  timings.ipxeFromCache = manifest.cached ? 1 : 0;
  assert.equal(manifest.https, true);
  assert.deepEqual(Object.keys(manifest.binaries).sort(), ['ipxe.efi', 'snponly.efi', 'undionly.kpxe']);
  // --- kernel + an initramfs with the CA (the agent verifies the HTTPS side against it); cached the same way ---
  t0 = Date.now();
  const shared = await ensureArtifacts();
  caArtifacts = join(CACHE_DIR, `artifacts-${artifactsKey()}-ca-${sha256Hex(readFileSync(ca.cert)).slice(0, 12)}`);
  if (!existsSync(join(caArtifacts, 'initramfs'))) {
    const tmp = `${caArtifacts}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    await buildArtifacts({ outDir: tmp, caFile: ca.cert, zstdLevel: 3 });
    try { renameSync(tmp, caArtifacts); } catch { rmSync(tmp, { recursive: true, force: true }); }
  }
  assert.equal(createHash('sha256').update(readFileSync(join(caArtifacts, 'vmlinuz'))).digest('hex'),
    createHash('sha256').update(readFileSync(join(shared, 'vmlinuz'))).digest('hex'), 'the same kernel as the shared test build');
  timings.initramfsSeconds = (Date.now() - t0) / 1000;
});

/** Request-log lines of the daemon for a URL prefix (URL-decoded): which listener (protocol) took each. */
function requests(env: LabEnv, urlPrefix: string): { protocol: string; url: string; localPort: number }[] {
  const out: { protocol: string; url: string; localPort: number }[] = [];
  for (const line of env.daemonLog().split('\n')) {
    if (!line.includes('"incoming request"')) continue;
    try {
      const j = JSON.parse(line);
      // iPXE escapes the MAC's colons (/boot/52%3A54%3A…)
      const url = typeof j.req?.url === 'string' ? decodeURIComponent(j.req.url) : '';
      if (url.startsWith(urlPrefix)) out.push({ protocol: j.req.protocol, url, localPort: j.req.localPort });
    } catch { /* not JSON */ }
  }
  return out;
}

function serveArgs(cert: { cert: string; key: string }, agentCa: string): string[] {
  return ['--tls-cert', cert.cert, '--tls-key', cert.key, '--tls-ca', agentCa, '--https-listen', `${SERVER_IP}:8443`,
    '--ipxe-dir', ipxeDir, '--artifacts-dir', caArtifacts];
}

test('BIOS PXE → ironboot\'s iPXE fetches script, kernel and initramfs over HTTPS verified against the CA → succeeded', { skip, timeout: 900_000 }, async (t) => {
  const cert = serverCert('server', ca);
  const started = Date.now();
  const env = await LabEnv.start({ octet: OCTET, net: NET, nsPrefix: 'ibt-', apiCa: ca.cert, serveArgs: serveArgs(cert, ca.cert) });
  t.after(() => env.destroy());
  assert.match(env.daemonLog(), /"https":true[^\n]*iPXE: HTTPS with the built-in CA/);
  assert.doesNotMatch(env.daemonLog(), /iPXE will not boot/);
  await buildHttpdDisk(env);
  const { vm, wfId, mac } = await provision(env, {
    vm: { name: 'tls-bios', firmware: 'bios', nic: 'virtio', noReboot: true }, n: 1,
    workflow: { image: 'httpd', target: 'ram', after: 'poweroff', entrypoint: ['/bin/sh', '-c', 'echo ipxe-tls-entrypoint-ran; exit 0'] },
  });
  const bootStart = Date.now();
  const ok = await env.waitWorkflow(wfId, (w) => w.state === 'succeeded', 600_000, vm);
  timings.positiveBootSeconds = (Date.now() - bootStart) / 1000;
  assert.ok(logLines(ok).includes('ipxe-tls-entrypoint-ran'), JSON.stringify(logLines(ok)));

  const https = `https://${SERVER_IP}:8443`;
  // the NIC's ROM chained ironboot's undionly.kpxe from TFTP; ironboot's iPXE then went to the HTTPS side
  assert.ok(vm.find(/undionly\.kpxe/) >= 0, `no TFTP undionly.kpxe on the console:\n${vm.tail(60)}`);
  // Debian's ROM lists "Features: DNS HTTP iSCSI …" without HTTPS; ironboot's iPXE has it
  assert.ok(vm.find(/^Features:.*\bHTTPS\b/) >= 0, `no iPXE with HTTPS on the console:\n${vm.tail(60)}`);
  assert.ok(vm.find(new RegExp(`${https.replaceAll('.', '\\.')}/boot/`)) >= 0, `iPXE did not fetch the script over HTTPS:\n${vm.tail(60)}`);
  assert.ok(vm.find(new RegExp(`${https.replaceAll('.', '\\.')}/artifacts/vmlinuz`)) >= 0, `iPXE did not fetch the kernel over HTTPS:\n${vm.tail(60)}`);
  // the daemon's request log: script, kernel and initramfs on the HTTPS listener, nothing of theirs served over plain HTTP
  for (const path of [`/boot/${mac}.ipxe`, '/artifacts/vmlinuz', '/artifacts/initramfs']) {
    const seen = requests(env, path);
    assert.ok(seen.length >= 1, `no request for ${path} in the daemon log`);
    assert.ok(seen.every((r) => r.protocol === 'https' && r.localPort === 8443), `${path}: ${JSON.stringify(seen)}`);
  }
  assert.match(env.daemonLog(), /ironboot's iPXE \(HTTPS, the operator's CA\): boot script over HTTPS/, 'DHCP answered ironboot\'s iPXE with the HTTPS URL');
  assert.match(env.daemonLog(), /iPXE that is not ironboot's[^"]*: undionly\.kpxe over TFTP/, 'DHCP sent the NIC\'s ROM to ironboot\'s iPXE');
  timings.positiveTotalSeconds = (Date.now() - started) / 1000;
  t.diagnostic(`timings: ${JSON.stringify(timings)}`);
});

test('the daemon presents a certificate from another CA: iPXE refuses it, nothing is served', { skip, timeout: 900_000 }, async (t) => {
  const otherCa = { cert: join(runDir, 'other-ca.pem'), key: join(runDir, 'other-ca.key') };
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', otherCa.key, '-out', otherCa.cert, '-days', '2', '-subj', '/CN=someone else\'s CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  // the leaf alone: iPXE cannot complete the chain from the CA built in, and ironboot's iPXE fetches nothing from
  // ca.ipxe.org (empty CROSSCERT): "Invalid argument (http://ipxe.org/1c2ee002)"; "Permission denied (0216e…)" is
  // iPXE's word for an untrusted root, also accepted
  const cert = serverCert('foreign', otherCa);
  const started = Date.now();
  const env = await LabEnv.start({ octet: OCTET, net: NET, nsPrefix: 'ibt-', apiCa: otherCa.cert, serveArgs: serveArgs(cert, otherCa.cert) });
  t.after(() => env.destroy());
  assert.match(env.daemonLog(), /iPXE will not boot: --tls-cert \([^)]*issued by CN=someone else's CA\) does not lead to the CA built into iPXE/);
  // a registered machine without a workflow is enough: iPXE fails at the TLS handshake, before any script
  const mac = macForName(`${env.ns}/tls-refuse`);
  await env.registerMachine(mac, env.hostAddress(2));
  const vm = env.startVm({ name: 'tls-refuse', mac, firmware: 'bios', nic: 'virtio', noReboot: true });
  // iPXE's TLS refuses the certificate (seen in this lab: "Invalid argument (http://ipxe.org/1c2ee002)")
  // (an iPXE without HTTPS would say "Operation not supported (http://ipxe.org/3c092003)" instead: Debian's ROM does)
  const i = await vm.waitFor(IPXE_REFUSED, 300_000, { failOn: /Linux version|ironboot: provisioning|Operation not supported/ });
  t.diagnostic(`iPXE: ${vm.joined(i)}`);
  assert.ok(vm.find(new RegExp(`https://${SERVER_IP.replaceAll('.', '\\.')}:8443/boot/`)) >= 0, `iPXE tried the HTTPS script URL:\n${vm.tail(60)}`);
  await new Promise((r) => setTimeout(r, 5000));
  assert.deepEqual(requests(env, '/boot/'), [], 'no boot script was served');
  assert.deepEqual(requests(env, '/artifacts/'), [], 'no kernel or initramfs was served');
  assert.doesNotMatch(env.daemonLog(), /"msg":"boot script/, 'no boot script was served (no boot token minted)');
  timings.negativeTotalSeconds = (Date.now() - started) / 1000;
  t.diagnostic(`timings: ${JSON.stringify(timings)}`);
});
