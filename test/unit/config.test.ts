import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadServeConfig, SERVE_SETTINGS } from '../../server/config.ts';
import { tempDir, ROOT } from '../helpers/daemon.ts';
import { readFileSync } from 'node:fs';

test('defaults are the safe ones', () => {
  const c = loadServeConfig([], {});
  assert.equal(c.dhcpMode, 'reservation');
  // no address: the provisioning interfaces' addresses and loopback (server/listen.ts), not every interface
  assert.deepEqual(c.httpListen, { host: null, port: 8080 });
  assert.deepEqual(c.tftpListen, { host: null, port: 69 });
  assert.deepEqual(loadServeConfig(['--http-listen', '0.0.0.0:80', '--tftp-listen', '[::]:69'], {}).httpListen, { host: '0.0.0.0', port: 80 });
  assert.deepEqual(loadServeConfig(['--tftp-listen', '[::]:69'], {}).tftpListen, { host: '::', port: 69 });
  assert.deepEqual(loadServeConfig(['--http-listen', '9090'], {}).httpListen, { host: null, port: 9090 });
  assert.equal(c.dhcpPoolUnknown, false);
  assert.match(c.dataDir, /\/var$/);
});

test('flag beats environment beats file', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const file = join(dir.path, 'c.json');
  writeFileSync(file, JSON.stringify({ httpListen: '127.0.0.1:1', dhcpMode: 'proxy', dhcpInterfaces: ['a', 'b'], tftp: false }));
  let c = loadServeConfig(['--config', file], {});
  assert.deepEqual(c.httpListen, { host: '127.0.0.1', port: 1 });
  assert.equal(c.dhcpMode, 'proxy');
  assert.deepEqual(c.dhcpInterfaces, ['a', 'b']);
  assert.equal(c.tftp, false);
  c = loadServeConfig(['--config', file], { IRONBOOT_HTTP_LISTEN: '127.0.0.1:2', IRONBOOT_DHCP_INTERFACE: 'x,y' });
  assert.deepEqual(c.httpListen, { host: '127.0.0.1', port: 2 });
  assert.deepEqual(c.dhcpInterfaces, ['x', 'y']);
  c = loadServeConfig(['--config', file, '--http-listen=127.0.0.1:3', '--dhcp-interface', 'z', '--tftp'], { IRONBOOT_HTTP_LISTEN: '127.0.0.1:2' });
  assert.deepEqual(c.httpListen, { host: '127.0.0.1', port: 3 });
  assert.deepEqual(c.dhcpInterfaces, ['z']);
  assert.equal(c.tftp, true);
  writeFileSync(file, JSON.stringify({ httpListn: 'x' }));
  assert.throws(() => loadServeConfig(['--config', file], {}), /httpListn: unknown key/);
});

test('the example config documents every setting and loads', () => {
  const example = JSON.parse(readFileSync(join(ROOT, 'deploy', 'ironboot.example.json'), 'utf8'));
  const doc = readFileSync(join(ROOT, 'deploy', 'ironboot.example.md'), 'utf8');
  for (const s of SERVE_SETTINGS) {
    assert.ok(s.key in example, `example has ${s.key}`);
    assert.ok(doc.includes(`\`${s.key}\``) || doc.includes(`\`${s.key}\`,`), `documented: ${s.key}`);
  }
  loadServeConfig(['--config', join(ROOT, 'deploy', 'ironboot.example.json')], {});
});

test('boot script auth and TLS settings: defaults, flags, environment, file, errors', () => {
  const d = loadServeConfig([], {});
  assert.equal(d.bootScriptAuth, 'ip', 'the safe default: a token only to a known address');
  assert.equal(d.tls, null);
  assert.deepEqual(d.httpsListen, { host: null, port: 8443 });
  assert.equal(loadServeConfig(['--boot-script-auth', 'none'], {}).bootScriptAuth, 'none');
  assert.equal(loadServeConfig([], { IRONBOOT_BOOT_SCRIPT_AUTH: 'none' }).bootScriptAuth, 'none');
  assert.throws(() => loadServeConfig(['--boot-script-auth', 'mac'], {}), /boot-script-auth: "mac" is not one of ip, none/);
  const t = loadServeConfig(['--tls-cert', '/x/c.pem', '--tls-key', '/x/k.pem', '--tls-ca', '/x/ca.pem', '--https-listen', '127.0.0.1:9443'], {});
  assert.deepEqual(t.tls, { cert: '/x/c.pem', key: '/x/k.pem', ca: '/x/ca.pem' });
  assert.deepEqual(t.httpsListen, { host: '127.0.0.1', port: 9443 });
  assert.throws(() => loadServeConfig(['--tls-cert', '/x/c.pem'], {}), /tls-key: HTTPS needs both/);
  assert.throws(() => loadServeConfig(['--tls-ca', '/x/ca.pem'], {}), /tls-ca: .*no HTTPS side/);
  assert.throws(() => loadServeConfig(['--tls-cert', 'c', '--tls-key', 'k', '--public-https-url', 'http://x'], {}), /not an https URL/);
});

test('--store: SQLite in the data directory by default; postgres:// and postgresql:// URLs (socket directory too); others refused', () => {
  assert.equal(loadServeConfig([], {}).store, null);
  assert.equal(loadServeConfig(['--store', 'postgres://ib:pw@db:5432/ib'], {}).store, 'postgres://ib:pw@db:5432/ib');
  assert.equal(loadServeConfig([], { IRONBOOT_STORE: 'postgresql://ib@/ib?host=/run/postgresql' }).store, 'postgresql://ib@/ib?host=/run/postgresql');
  assert.throws(() => loadServeConfig(['--store', 'mysql://ib:pw@db/ib'], {}), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match((e as Error).message, /^store: "mysql:\/\/ib:\*\*\*@db\/ib" is not a postgres/);
    return true;
  });
});
