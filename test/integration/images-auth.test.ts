/**
 * Registry authentication as Docker Hub and GHCR do it: the real docker-registry with `auth: token` sends a
 * Bearer challenge; a token service on 127.0.0.1 (written here, like auth.docker.io) issues ES256 JWTs with an
 * x5c header that the registry verifies against its root certificate. Pulls with credentials from the
 * environment and from a Docker config.json; anonymous and wrong credentials are refused with a clear error.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createPrivateKey, sign, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Store } from '../../server/store/index.ts';
import { createImageService, type ImageService } from '../../server/images/index.ts';
import { TestRegistry, buildImage, registryUnavailable, freePort } from '../helpers/images-oci.ts';
import { cat } from '../helpers/images-disk.ts';

const skip = registryUnavailable() || (spawnSync('openssl', ['version']).error ? 'openssl missing' : false);
const USER = 'ibi-user';
const PASS = 'ibi-secret';

let work: string;
let reg: TestRegistry;
let tokens: Server;
let tokens2: Server;
/** A second registry whose token realm is on another host (127.0.0.2). */
let reg2: TestRegistry;
/** Every Authorization the token services saw: host (of the realm) and header ('' when anonymous). */
const seen: { host: string; authz: string }[] = [];
const basicSeen = () => seen.filter((s) => s.authz.startsWith('Basic'));
let store: Store;
let svc: ImageService;
let issued = 0;

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

function jwt(keyPem: string, certDer: Buffer, claims: Record<string, unknown>): string {
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] }));
  const payload = b64url(JSON.stringify(claims));
  const sig = sign('sha256', Buffer.from(`${header}.${payload}`), { key: createPrivateKey(keyPem), dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${b64url(sig)}`;
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'ibi-auth-'));
  const key = join(work, 'key.pem');
  const cert = join(work, 'cert.pem');
  const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=ibi-token-issuer'], { encoding: 'utf8' });
  assert.equal(gen.status, 0, gen.stderr);
  const der = spawnSync('openssl', ['x509', '-in', cert, '-outform', 'DER']).stdout;
  const keyPem = readFileSync(key, 'utf8');
  const tport = await freePort();
  tokens = createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    const authz = req.headers.authorization ?? '';
    seen.push({ host: req.headers.host ?? '', authz });
    const anonymous = !authz;
    const ok = authz === `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;
    if (!anonymous && !ok) { res.writeHead(401).end('{"details":"incorrect username or password"}'); return; }
    const access = (u.searchParams.getAll('scope')).flatMap((s) => {
      const [type, name, actions] = s.split(':');
      // anonymous: nothing (a private registry); with credentials: what was asked
      return anonymous ? [] : [{ type, name, actions: actions.split(',') }];
    });
    const now = Math.floor(Date.now() / 1000);
    issued++;
    const token = jwt(keyPem, der, { iss: 'ibi-issuer', sub: anonymous ? '' : USER, aud: u.searchParams.get('service'), exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
  });
  await new Promise<void>((r) => tokens.listen(tport, '127.0.0.1', r));
  tokens2 = createServer((req, res) => tokens.emit('request', req, res));
  await new Promise<void>((r) => tokens2.listen(tport, '127.0.0.2', r));
  reg = new TestRegistry(`auth:
  token:
    realm: http://127.0.0.1:${tport}/token
    service: ibi-registry
    issuer: ibi-issuer
    rootcertbundle: ${cert}
`);
  await reg.start();
  const pushToken = jwt(keyPem, der, { iss: 'ibi-issuer', sub: USER, aud: 'ibi-registry', exp: Math.floor(Date.now() / 1000) + 300, nbf: 0, iat: 0, jti: randomUUID(), access: [{ type: 'repository', name: 'private/app', actions: ['pull', 'push'] }] });
  reg.authorization = `Bearer ${pushToken}`;
  await reg.push('private/app', '1', buildImage({ layers: [[{ path: 'secret', content: 'only with a token' }]] }));
  reg2 = new TestRegistry(`auth:
  token:
    realm: http://127.0.0.2:${tport}/token
    service: ibi-registry
    issuer: ibi-issuer
    rootcertbundle: ${cert}
`);
  await reg2.start();
  reg2.authorization = reg.authorization;
  await reg2.push('private/app', '2', buildImage({ layers: [[{ path: 'secret', content: 'registry two' }]] }));
  store = Store.open(join(work, 'data'));
  svc = createImageService({ store, log: pino({ level: 'silent' }), registry: new Registry(), dataDir: join(work, 'data') });
});

after(async () => {
  if (skip) return;
  store?.close();
  await reg?.destroy();
  await reg2?.destroy();
  await new Promise((r) => tokens?.close(r));
  await new Promise((r) => tokens2?.close(r));
  rmSync(work, { recursive: true, force: true });
});

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  return fn().finally(() => { for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; } });
}

const noCreds = { IRONBOOT_REGISTRY_USERNAME: undefined, IRONBOOT_REGISTRY_PASSWORD: undefined, IRONBOOT_REGISTRY_HOST: undefined,
  IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH: undefined, IRONBOOT_REGISTRY_AUTH_HOSTS: undefined, DOCKER_CONFIG: undefined, REGISTRY_AUTH_FILE: undefined, HOME: '/nonexistent', XDG_RUNTIME_DIR: undefined };

test('anonymous pull from a token-protected repository is refused with a clear error', { skip }, async () => {
  await withEnv(noCreds, async () => {
    const before = issued;
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true }),
      /access to private\/app on 127\.0\.0\.1:\d+ denied \(401\): the repository does not exist or needs credentials/);
    assert.equal(issued, before + 1, 'an (anonymous) token was asked for');
  });
});

test('bearer token with credentials from the environment (for that host, plain HTTP allowed by the operator)', { skip }, async () => {
  await withEnv({ ...noCreds, IRONBOOT_REGISTRY_USERNAME: USER, IRONBOOT_REGISTRY_PASSWORD: PASS, IRONBOOT_REGISTRY_HOST: reg.host, IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH: '1' }, async () => {
    const img = await svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true });
    assert.equal(cat(svc.filePath(img.id, 'raw'), '/secret').toString(), 'only with a token');
  });
});

test('bearer token with credentials from a Docker config.json; wrong ones are refused', { skip }, async () => {
  const dir = join(work, 'docker');
  mkdirSync(dir, { recursive: true });
  const write = (pw: string) => writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: Buffer.from(`${USER}:${pw}`).toString('base64') } } }));
  write(PASS);
  store.images.list().forEach((i) => { store.images.delete(i.id); svc.removeFiles(i.id); });
  await withEnv({ ...noCreds, DOCKER_CONFIG: dir, IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH: '1' }, async () => {
    const img = await svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true });
    assert.equal(img.state, 'ready');
    write('wrong');
    store.images.delete(img.id);
    svc.removeFiles(img.id);
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true }), /token service 127\.0\.0\.1:\d+ refused a pull token .*check the credentials/);
  });
});

const drop = () => store.images.list().forEach((i) => { store.images.delete(i.id); svc.removeFiles(i.id); });

test('environment credentials go to the one registry IRONBOOT_REGISTRY_HOST names, never to another', { skip }, async () => {
  drop();
  const env = { ...noCreds, IRONBOOT_REGISTRY_USERNAME: USER, IRONBOOT_REGISTRY_PASSWORD: PASS, IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH: '1', IRONBOOT_REGISTRY_AUTH_HOSTS: '127.0.0.2' };
  seen.length = 0;
  // for registry one: registry two (a second registry on loopback) gets an anonymous token request, no password
  await withEnv({ ...env, IRONBOOT_REGISTRY_HOST: reg.host }, async () => {
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg2.host}/private/app:2`, insecure: true }),
      new RegExp(`denied \\(401\\): .*credentials are for ${reg.host.replace(/\./g, '\\.')}, not ${reg2.host.replace(/\./g, '\\.')}`));
  });
  assert.deepEqual(basicSeen(), [], 'no Basic credentials sent for registry two');
  assert.ok(seen.some((s) => s.host.startsWith('127.0.0.2:') && s.authz === ''), 'registry two\'s token service was asked anonymously');
  // no host named: the environment's credentials apply nowhere
  await withEnv(env, async () => {
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true }), /IRONBOOT_REGISTRY_HOST is not/);
  });
  assert.deepEqual(basicSeen(), []);
  // and for registry two they work
  await withEnv({ ...env, IRONBOOT_REGISTRY_HOST: reg2.host }, async () => {
    const img = await svc.build({ type: 'registry', ref: `${reg2.host}/private/app:2`, insecure: true });
    assert.equal(cat(svc.filePath(img.id, 'raw'), '/secret').toString(), 'registry two');
  });
  assert.ok(basicSeen().length > 0 && basicSeen().every((s) => s.host.startsWith('127.0.0.2:')), 'Basic only to registry two\'s token service');
});

test('Basic credentials never go over plain HTTP or to a token realm on another host unless the operator allows it', { skip }, async () => {
  drop();
  seen.length = 0;
  const env = { ...noCreds, IRONBOOT_REGISTRY_USERNAME: USER, IRONBOOT_REGISTRY_PASSWORD: PASS };
  await withEnv({ ...env, IRONBOOT_REGISTRY_HOST: reg.host }, async () => {
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg.host}/private/app:1`, insecure: true }),
      /not sending the credentials for 127\.0\.0\.1:\d+ over plain HTTP to 127\.0\.0\.1:\d+; set IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH=1/);
  });
  await withEnv({ ...env, IRONBOOT_REGISTRY_HOST: reg2.host, IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH: '1' }, async () => {
    await assert.rejects(svc.build({ type: 'registry', ref: `${reg2.host}/private/app:2`, insecure: true }),
      /not sending the credentials for 127\.0\.0\.1:\d+ to the token service 127\.0\.0\.2:\d+ \(another host\); name it in IRONBOOT_REGISTRY_AUTH_HOSTS/);
  });
  assert.deepEqual(basicSeen(), [], 'nothing was sent');
});
