/**
 * Issue 15, the iPXE side, without QEMU: `ironboot serve --tls-cert …` with a built iPXE in DATA_DIR/artifacts/ipxe
 * (what `ironboot artifacts ipxe --trust CA.pem` leaves there: binaries + ironboot-ipxe.json; here the manifest is
 * written by the test for a CA made with openssl, and the "binaries" are random bytes: only the daemon is under test).
 *
 *   the daemon picks the directory up by itself and says iPXE goes over HTTPS; TFTP and /ipxe/ serve its bytes
 *   plain HTTP then keeps only the iPXE binaries and health: boot scripts, kernel and initramfs are refused (403)
 *   over HTTPS the boot script is served with the address binding (reserved address → token; another → refused) and
 *     every URL in it (kernel, initrd, agent) is https
 *   a file above the sendfile(2) threshold arrives whole over HTTPS (sendfile would bypass TLS)
 *   the HTTPS side completes a TLS 1.2 handshake with each cipher suite iPXE 1.0.0 (2019) offers (RSA key exchange,
 *     AES-CBC), checked with openssl s_client
 *   a --tls-cert from another CA, or with an EC key, is reported at start as one iPXE will refuse
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import pino from 'pino';
import { spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { parseTrustedCa, sha256Hex } from '../../server/boot/ipxe-build.ts';
import { IPXE_MANIFEST, IRONBOOT_IPXE_USER_CLASS, type IpxeManifest } from '../../server/boot/ipxe-dir.ts';

const skip = spawnSync('openssl', ['version']).error || spawnSync('curl', ['--version']).error ? 'openssl or curl missing' : false;
const ADMIN = randomBytes(18).toString('base64url');
const MAC = '52:54:00:92:00:01';      // reserved at 127.0.0.1: gets the provisioning script
const OTHER = '52:54:00:92:00:02';    // reserved at 127.0.0.2: a request from 127.0.0.1 is refused
const UNDI = randomBytes(70_000);
const INITRAMFS = randomBytes(20 << 20);   // above SENDFILE_MIN (16 MiB): the size that goes through sendfile(2) on plain HTTP
const EFI = randomBytes(90_000);

let dir: ReturnType<typeof tempDir>;
let daemon: Awaited<ReturnType<typeof spawnDaemon>>;
let httpsUrl = '';
let tftpPort = 0;
const pki = { ca: '', caKey: '', other: '', cert: '', key: '', foreignCert: '', foreignKey: '', ecCert: '', ecKey: '' };

function openssl(args: string[], input?: string): string {
  const r = spawnSync('openssl', args, { encoding: 'utf8', input, timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

function makeCa(name: string): { cert: string; key: string } {
  const key = join(dir.path, `${name}.key`);
  const cert = join(dir.path, `${name}.pem`);
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { cert, key };
}

function makeServerCert(name: string, ca: { cert: string; key: string }, keyAlg: string[]): { cert: string; key: string } {
  const key = join(dir.path, `${name}.key`);
  const csr = join(dir.path, `${name}.csr`);
  const cert = join(dir.path, `${name}.pem`);
  openssl(['req', '-new', '-newkey', ...keyAlg, '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1']);
  const ext = join(dir.path, `${name}.ext`);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { cert, key };
}

/** What `ironboot artifacts ipxe` leaves in its output directory, for this CA. */
function builtIpxeDir(outDir: string, caFile: string): void {
  mkdirSync(outDir, { recursive: true });
  const ca = parseTrustedCa(readFileSync(caFile, 'utf8'));
  writeFileSync(join(outDir, 'undionly.kpxe'), UNDI);
  writeFileSync(join(outDir, 'ipxe.efi'), EFI);
  writeFileSync(join(outDir, 'trusted-ca.pem'), ca.pem);
  const manifest: IpxeManifest = {
    builder: 'ironboot artifacts ipxe', recipe: 1, cacheKey: 'test', https: true, userClass: IRONBOOT_IPXE_USER_CLASS,
    source: { package: 'ipxe', version: '1.0.0+git-20190125.36a4c85-5.1', dscSha256: '', mirror: '' },
    trust: ca.certs.map((c) => ({ subject: c.subject, fingerprint256: c.fingerprint256 })), trustPemSha256: ca.sha256,
    binaries: { 'undionly.kpxe': { size: UNDI.length, sha256: sha256Hex(UNDI) }, 'ipxe.efi': { size: EFI.length, sha256: sha256Hex(EFI) } },
    builtAt: new Date().toISOString(), buildSeconds: 0,
  };
  writeFileSync(join(outDir, IPXE_MANIFEST), JSON.stringify(manifest, null, 2));
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function seed(dataDir: string): void {
  const store = Store.open(dataDir);
  try {
    store.machines.create({ mac: MAC, ipv4: { address: '127.0.0.1', prefix: 8, dns: [] } });
    store.machines.create({ mac: OTHER, ipv4: { address: '127.0.0.2', prefix: 8, dns: [] } });
    store.images.insert(readyImage({ id: 'ipxetls', name: 'ipxetls' }));
    const wf = new WorkflowService(store, pino({ level: 'silent' }));
    wf.create({ mac: MAC, image: 'ipxetls', target: 'ram' });
    wf.create({ mac: OTHER, image: 'ipxetls', target: 'ram' });
  } finally {
    store.close();
  }
}

before(async () => {
  if (skip) return;
  dir = tempDir('ibt-ipxetls-');
  const ca = makeCa('ibt-ca');
  const other = makeCa('ibt-other-ca');
  Object.assign(pki, { ca: ca.cert, caKey: ca.key, other: other.cert });
  const server = makeServerCert('server', ca, ['rsa:2048']);
  const foreign = makeServerCert('foreign', other, ['rsa:2048']);
  const ec = makeServerCert('ec', ca, ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  Object.assign(pki, { cert: server.cert, key: server.key, foreignCert: foreign.cert, foreignKey: foreign.key, ecCert: ec.cert, ecKey: ec.key });
  const dataDir = join(dir.path, 'data');
  seed(dataDir);
  builtIpxeDir(join(dataDir, 'artifacts', 'ipxe'), ca.cert);
  writeFileSync(join(dataDir, 'artifacts', 'initramfs'), INITRAMFS);
  tftpPort = await freeUdpPort();
  daemon = await spawnDaemon(dataDir, ['--tls-cert', pki.cert, '--tls-key', pki.key, '--tls-ca', pki.ca, '--https-listen', '127.0.0.1:0',
    '--tftp', '--tftp-listen', `127.0.0.1:${tftpPort}`], { IRONBOOT_TOKEN: ADMIN });
  const m = /"https":"([\d.]+:\d+)"/.exec(daemon.output());
  assert.ok(m, daemon.output());
  httpsUrl = `https://${m[1]}`;
  for (let i = 0; i < 100 && !/ironboot serving TFTP/.test(daemon.output()); i++) await new Promise((r) => setTimeout(r, 100));
});

after(async () => {
  await daemon?.stop();
  dir?.remove();
});

const curl = (args: string[]) => spawnSync('curl', ['-s', '-S', '--max-time', '10', ...args], { encoding: 'buffer', maxBuffer: 1 << 26 });

test('the daemon serves the built iPXE from DATA_DIR/artifacts/ipxe (TFTP and /ipxe/) and says iPXE goes over HTTPS', { skip }, async () => {
  const out = daemon.output();
  assert.match(out, /"https":true[^\n]*iPXE: HTTPS with the built-in CA/, out);
  assert.match(out, new RegExp(`"ipxeDir":"${join(dir.path, 'data', 'artifacts', 'ipxe').replaceAll('.', '\\.')}"`));
  assert.doesNotMatch(out, /iPXE will not boot/, 'the certificate is signed by the CA built in, with an RSA key');
  const tftp = curl([`tftp://127.0.0.1:${tftpPort}/undionly.kpxe`]);
  assert.equal(tftp.status, 0, tftp.stderr.toString());
  assert.equal(sha256Hex(tftp.stdout), sha256Hex(UNDI), 'TFTP serves the built undionly.kpxe, not Debian\'s');
  const efi = await fetch(`${daemon.url}/ipxe/ipxe.efi`);
  assert.equal(efi.status, 200, 'plain HTTP keeps the iPXE binaries (UEFI HTTP boot loads them before any TLS)');
  assert.equal(sha256Hex(Buffer.from(await efi.arrayBuffer())), sha256Hex(EFI));
});

test('plain HTTP refuses boot scripts, kernel and initramfs: with the verifying iPXE they go over HTTPS only', { skip }, async () => {
  for (const p of [`/boot/${MAC}.ipxe`, '/boot/boot.ipxe', '/artifacts/vmlinuz', '/artifacts/initramfs']) {
    const r = await fetch(`${daemon.url}${p}`);
    assert.equal(r.status, 403, p);
    assert.match((await r.json() as { message: string }).message, /over HTTPS only/);
  }
  assert.equal((await fetch(`${daemon.url}/healthz`)).status, 200);
});

test('over HTTPS: the boot script keeps iPXE on HTTPS (kernel, initrd, agent) and the address binding holds', { skip }, async () => {
  const mine = curl(['--cacert', pki.ca, `${httpsUrl}/boot/${MAC}.ipxe`]);
  assert.equal(mine.status, 0, mine.stderr.toString());
  const script = mine.stdout.toString();
  const kernel = script.split('\n').find((l) => l.startsWith('kernel '));
  assert.ok(kernel, script);
  assert.ok(kernel.startsWith(`kernel ${httpsUrl}/artifacts/vmlinuz `), kernel);
  assert.match(kernel, new RegExp(` ironboot\\.server=${httpsUrl.replaceAll('.', '\\.')}( |$)`));
  assert.match(kernel, /ironboot\.token=\S+/, 'the machine\'s own address gets the boot token');
  assert.ok(script.split('\n').some((l) => l.startsWith(`initrd ${httpsUrl}/artifacts/initramfs`)), script);
  assert.doesNotMatch(script, /http:\/\//, 'nothing in the script is plain HTTP');
  const entry = curl(['--cacert', pki.ca, `${httpsUrl}/boot/boot.ipxe`]).stdout.toString();
  assert.match(entry, new RegExp(`chain --autofree ${httpsUrl.replaceAll('.', '\\.')}/boot/\\$\\{mac\\}\\.ipxe`), entry);
  // OTHER is reserved at 127.0.0.2: a request from 127.0.0.1 gets a script without a token that says why
  const refused = curl(['--cacert', pki.ca, `${httpsUrl}/boot/${OTHER}.ipxe`]).stdout.toString();
  assert.doesNotMatch(refused, /ironboot\.token=/, refused);
  assert.match(refused, /127\.0\.0\.2/, refused);
  for (let i = 0; i < 50 && !/provisioning script refused/.test(daemon.output()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(daemon.output(), /"from":"127\.0\.0\.1","via":"https"[^\n]*provisioning script refused/);
});

test('a large artifact (initramfs, over 16 MiB) arrives whole over HTTPS: never sendfile(2) under TLS', { skip }, () => {
  const r = curl(['--cacert', pki.ca, '-H', 'connection: keep-alive', `${httpsUrl}/artifacts/initramfs`]);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(r.stdout.length, INITRAMFS.length);
  assert.equal(sha256Hex(r.stdout), sha256Hex(INITRAMFS));
  // a range of it too (iPXE and the agent resume with Range)
  const part = curl(['--cacert', pki.ca, '-r', `${17 << 20}-`, `${httpsUrl}/artifacts/initramfs`]);
  assert.equal(sha256Hex(part.stdout), sha256Hex(INITRAMFS.subarray(17 << 20)));
});

test('the HTTPS side speaks each cipher suite iPXE 1.0.0 (2019) offers: TLS 1.2, RSA key exchange, AES-CBC', { skip }, () => {
  const host = httpsUrl.slice('https://'.length);
  for (const cipher of ['AES128-SHA256', 'AES256-SHA256', 'AES128-SHA', 'AES256-SHA']) {
    const r = spawnSync('openssl', ['s_client', '-connect', host, '-tls1_2', '-cipher', cipher, '-CAfile', pki.ca, '-verify_return_error', '-brief'],
      { encoding: 'utf8', input: 'Q\n', timeout: 20_000 });
    const text = r.stdout + r.stderr;
    assert.match(text, new RegExp(`Ciphersuite: ${cipher}\\b`), `${cipher}:\n${text}`);
    assert.match(text, /Verification: OK/, text);
  }
});

test('a --tls-cert from another CA, or with an EC key, is reported at start: iPXE would refuse it', { skip }, async () => {
  for (const [cert, key, re] of [
    [pki.foreignCert, pki.foreignKey, /iPXE will not boot: --tls-cert \(CN=127\.0\.0\.1, issued by CN=ibt-other-ca\) does not lead to the CA built into iPXE \(CN=ibt-ca\)/],
    [pki.ecCert, pki.ecKey, /iPXE will not boot: the certificate's key is EC/],
  ] as const) {
    const d = await spawnDaemon(join(dir.path, 'data'), ['--tls-cert', cert, '--tls-key', key, '--https-listen', '127.0.0.1:0'], { IRONBOOT_TOKEN: ADMIN });
    try {
      assert.match(d.output(), re, d.output());
    } finally {
      await d.stop();
    }
  }
});
