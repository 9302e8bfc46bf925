/**
 * TLS (issue 15): `ironboot serve --tls-cert --tls-key --tls-ca` on loopback, with a CA, a server certificate and a
 * second, unrelated CA made here with openssl.
 *
 *   curl --cacert CA accepts the HTTPS side, curl with the wrong CA (or none) refuses it
 *   plain HTTP keeps only what iPXE fetches (boot scripts, artifacts, health); the API, the agent and the images
 *   answer 403 there; the boot script points the agent at the HTTPS side
 *   the agent's own HTTP client (init/agent/reporter.ts postJson, with init/agent/tls.ts) says hello over HTTPS
 *   with the operator CA and refuses the server with the wrong one
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';
import { WorkflowService } from '../../server/workflows/service.ts';
import { postJson } from '../../init/agent/reporter.ts';
import { trustOperatorCa } from '../../init/agent/tls.ts';

const skip = spawnSync('openssl', ['version']).error || spawnSync('curl', ['--version']).error ? 'openssl or curl missing' : false;
const ADMIN = randomBytes(18).toString('base64url');
const MAC = '52:54:00:87:00:01';

let dir: ReturnType<typeof tempDir>;
let daemon: Awaited<ReturnType<typeof spawnDaemon>>;
let httpsUrl = '';
let workflowId = '';
const pki = { ca: '', wrongCa: '', cert: '', key: '' };

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA (key + self-signed cert) named cn in dir. */
function makeCa(cn: string): { cert: string; key: string } {
  const key = join(dir.path, `${cn}.key`);
  const cert = join(dir.path, `${cn}.pem`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { cert, key };
}

function curl(args: string[]): { code: number | null; status: string; stderr: string } {
  const r = spawnSync('curl', ['-s', '-S', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10', ...args], { encoding: 'utf8' });
  return { code: r.status, status: r.stdout, stderr: r.stderr };
}

before(async () => {
  if (skip) return;
  dir = tempDir('ib-tls-');
  const ca = makeCa('ironboot-test-ca');
  pki.ca = ca.cert;
  pki.wrongCa = makeCa('someone-elses-ca').cert;
  pki.key = join(dir.path, 'server.key');
  const csr = join(dir.path, 'server.csr');
  pki.cert = join(dir.path, 'server.pem');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', pki.key, '-out', csr, '-subj', '/CN=ironboot']);
  const ext = join(dir.path, 'server.ext');
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', pki.cert, '-days', '2', '-extfile', ext]);
  // a machine on loopback (its reserved address: --boot-script-auth ip) with a workflow
  const store = Store.open(join(dir.path, 'data'));
  try {
    store.machines.create({ mac: MAC, ipv4: { address: '127.0.0.1', prefix: 8, dns: [] } });
    store.images.insert(readyImage({ id: 'tlsimg', name: 'tls' }));
    workflowId = new WorkflowService(store, pino({ level: 'silent' })).create({ mac: MAC, image: 'tls', target: 'ram' }).id;
  } finally {
    store.close();
  }
  daemon = await spawnDaemon(join(dir.path, 'data'), ['--tls-cert', pki.cert, '--tls-key', pki.key, '--tls-ca', pki.ca, '--https-listen', '127.0.0.1:0'],
    { IRONBOOT_TOKEN: ADMIN });
  const m = /"https":"([\d.]+:\d+)"/.exec(daemon.output());
  assert.ok(m, daemon.output());
  httpsUrl = `https://${m[1]}`;
});

after(async () => {
  await daemon?.stop();
  dir?.remove();
});

test('curl with the operator CA accepts the HTTPS side; the wrong CA and no CA are refused', { skip }, () => {
  const ok = curl(['--cacert', pki.ca, `${httpsUrl}/healthz`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.status, '200');
  const wrong = curl(['--cacert', pki.wrongCa, `${httpsUrl}/healthz`]);
  assert.equal(wrong.code, 60, `curl exit 60 (peer certificate cannot be authenticated): ${wrong.stderr}`);
  const none = curl([`${httpsUrl}/healthz`]);
  assert.equal(none.code, 60, none.stderr);
  const api = curl(['--cacert', pki.ca, '-H', `authorization: Bearer ${ADMIN}`, `${httpsUrl}/api/v1/machines`]);
  assert.equal(api.status, '200', 'the API is served over HTTPS');
});

test('plain HTTP keeps what iPXE fetches only; the boot script sends the agent to the HTTPS side', { skip }, async () => {
  for (const p of ['/api/v1/machines', '/agent/v1/hello', '/images/abc.ext4.zst', '/metrics']) {
    const r = await fetch(`${daemon.url}${p}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.status, 403, p);
    assert.match((await r.json() as { message: string }).message, new RegExp(`over HTTPS only: ${httpsUrl.replaceAll('.', '\\.')}`));
  }
  assert.equal((await fetch(`${daemon.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${daemon.url}/artifacts/vmlinuz`)).status, 404, 'artifacts are on plain HTTP (none built here)');
});

test('the agent\'s HTTP client: hello over HTTPS with the operator CA from the initramfs; the wrong CA is refused', { skip }, async () => {
  // the script over plain HTTP, as iPXE fetches it: kernel and initramfs over HTTP, the agent sent to HTTPS
  const script = await (await fetch(`${daemon.url}/boot/${MAC}.ipxe`)).text();
  const kernel = script.split('\n').find((l) => l.startsWith('kernel '))!;
  assert.ok(kernel.startsWith(`kernel ${daemon.url}/artifacts/vmlinuz `), script);
  assert.match(kernel, new RegExp(` ironboot\\.server=${httpsUrl.replaceAll('.', '\\.')} `));
  const bootToken = /ironboot\.token=(\S+)/.exec(kernel)![1];

  // the wrong CA in the initramfs: the agent refuses the server
  const wrongAgent = new https.Agent();
  assert.equal(trustOperatorCa(pki.wrongCa, wrongAgent), pki.wrongCa);
  await assert.rejects(requestWith(wrongAgent, `${httpsUrl}/healthz`), /unable to verify|self[- ]signed|certificate/i);
  assert.equal(trustOperatorCa(join(dir.path, 'no-such-ca.pem')), null, 'no CA file: nothing changes');
  // the operator's CA on the global agent, as the agent does at start: hello (postJson) and the image download use it
  assert.equal(trustOperatorCa(pki.ca), pki.ca);
  const hello = await postJson(`${httpsUrl}/agent/v1/hello`, bootToken, { workflowId, mac: MAC }, 5000);
  assert.equal(hello.status, 200, hello.body);
  const spec = JSON.parse(hello.body);
  assert.ok(spec.sessionToken);
  assert.equal(spec.image.url, `${httpsUrl}/images/tlsimg.ext4.zst`, 'the image comes from the HTTPS side');
  const events = await postJson(`${httpsUrl}/agent/v1/events`, spec.sessionToken, { workflowId, events: [{ message: 'over TLS' }] }, 5000);
  assert.equal(events.status, 200, events.body);
  https.globalAgent.destroy();
});

function requestWith(agent: https.Agent, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { agent }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', reject);
  });
}
