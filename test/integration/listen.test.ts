/**
 * Where `ironboot serve` listens, checked from network namespaces with curl and a TFTP client:
 * - by default HTTP and TFTP answer on the --dhcp-interface addresses and loopback (127.0.0.1 and ::1), not on the
 *   host's other interfaces;
 * - without --dhcp-interface (the README's `npm start`) `curl localhost:8080/healthz` and the web page still work;
 * - 0.0.0.0 is allowed when the operator says so, and warned about;
 * - the TFTP boot.ipxe without --public-url points at the address the request came in on, not 0.0.0.0.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { Lab, netnsUnavailable, type Namespace } from '../helpers/netns.ts';
import { CLI, tempDir } from '../helpers/daemon.ts';
import { listenHosts } from '../../server/listen.ts';

const run = promisify(execFile);
const skip = netnsUnavailable('curl');

test('listenHosts: an explicit address alone; by default the provisioning addresses, then loopback', () => {
  assert.deepEqual(listenHosts({ host: '10.0.0.1', port: 80 }, ['10.1.0.1'], ['127.0.0.1']), ['10.0.0.1']);
  assert.deepEqual(listenHosts({ host: '0.0.0.0', port: 80 }, ['10.1.0.1'], ['127.0.0.1']), ['0.0.0.0']);
  assert.deepEqual(listenHosts({ host: null, port: 80 }, ['10.1.0.1', '10.2.0.1'], ['127.0.0.1', '::1']), ['10.1.0.1', '10.2.0.1', '127.0.0.1', '::1']);
  assert.deepEqual(listenHosts({ host: null, port: 80 }, ['127.0.0.1'], ['127.0.0.1', '::1']), ['127.0.0.1', '::1']);
  assert.deepEqual(listenHosts({ host: null, port: 80 }, [], ['127.0.0.1']), ['127.0.0.1']);
});

let lab: Lab;
let srv: Namespace;
let cli: Namespace;
let oth: Namespace;
let prov = '';
const dirs: { remove(): void }[] = [];

before(() => {
  if (skip) return;
  return Lab.create('ibl').then((l) => {
    lab = l;
    srv = lab.ns('srv');
    cli = lab.ns('cli');
    oth = lab.ns('oth');
    [prov] = lab.veth(srv, '10.85.0.1/24', cli, '10.85.0.2/24');
    lab.veth(srv, '10.86.0.1/24', oth, '10.86.0.2/24');
  });
});

after(async () => {
  await lab?.destroy();
  for (const d of dirs) d.remove();
});

async function serve(args: string[]): Promise<{ proc: ChildProcess; out: () => string; stop(): Promise<void> }> {
  const dir = tempDir('ibt-listen-');
  dirs.push(dir);
  let out = '';
  const proc = srv.spawn(process.execPath, [CLI, 'serve', '--data-dir', dir.path, '--no-build-artifacts', ...args], { env: { ...process.env, CI: '1' } });
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`daemon did not start:\n${out}`)), 30000);
    const ready = args.includes('--no-tftp') ? /ironboot serving HTTP/ : /ironboot serving TFTP/; // TFTP starts last
    const check = () => { if (ready.test(out)) { clearTimeout(t); resolve(); } };
    proc.stdout!.on('data', check);
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`daemon exited ${code}:\n${out}`)); });
  });
  return {
    proc, out: () => out,
    stop: () => new Promise<void>((resolve) => {
      if (proc.exitCode !== null) return resolve();
      proc.once('exit', () => resolve());
      process.kill(proc.pid!, 'SIGTERM');
    }),
  };
}

/** curl in a namespace: the body, or the curl exit code (7 = connection refused, 28 = timed out). */
async function curl(ns: Namespace, url: string, extra: string[] = []): Promise<{ code: number; body: string }> {
  try {
    const r = await run('ip', ['netns', 'exec', ns.name, 'curl', '-sS', '--fail', '--max-time', '4', ...extra, url], { timeout: 20000 });
    return { code: 0, body: r.stdout };
  } catch (err) {
    return { code: (err as { code?: number }).code ?? -1, body: '' };
  }
}

test('default: HTTP and TFTP on the --dhcp-interface address and loopback only; boot.ipxe names the address asked', { skip }, async (t) => {
  const d = await serve(['--dhcp-interface', prov]);
  t.after(() => d.stop());
  assert.doesNotMatch(d.out(), /listens on ALL interfaces/);
  assert.equal((await curl(cli, 'http://10.85.0.1:8080/healthz')).code, 0, d.out());
  assert.equal((await curl(srv, 'http://127.0.0.1:8080/healthz')).code, 0);
  assert.equal((await curl(srv, 'http://[::1]:8080/healthz')).code, 0);
  assert.equal((await curl(srv, 'http://localhost:8080/healthz')).code, 0);
  // the other interface of the server: nothing listens there
  assert.equal((await curl(oth, 'http://10.86.0.1:8080/healthz')).code, 7);
  // TFTP: the virtual boot.ipxe over the provisioning address names that address (no --public-url)
  const script = await curl(cli, 'tftp://10.85.0.1/52-54-00-00-00-99/boot.ipxe');
  assert.equal(script.code, 0, d.out());
  assert.match(script.body, /not registered with http:\/\/10\.85\.0\.1:8080/);
  assert.doesNotMatch(script.body, /0\.0\.0\.0/);
  const local = await curl(srv, 'tftp://127.0.0.1/52-54-00-00-00-99/boot.ipxe');
  assert.match(local.body, /not registered with http:\/\/127\.0\.0\.1:8080/);
  // and no TFTP on the other interface (curl times out waiting for an answer)
  assert.notEqual((await curl(oth, 'tftp://10.86.0.1/52-54-00-00-00-99/boot.ipxe', ['--connect-timeout', '2'])).code, 0);
});

test('without --dhcp-interface (npm start): localhost answers /healthz and the web page; nothing else', { skip }, async (t) => {
  const d = await serve([]);
  t.after(() => d.stop());
  assert.match(d.out(), /HTTP listens on loopback only: no --dhcp-interface/);
  assert.equal((await curl(srv, 'http://localhost:8080/healthz')).code, 0);
  const page = await curl(srv, 'http://localhost:8080/');
  assert.equal(page.code, 0);
  assert.match(page.body, /<html/i);
  assert.equal((await curl(cli, 'http://10.85.0.1:8080/healthz')).code, 7);
});

test('0.0.0.0 when the operator asks for it, with a loud warning', { skip }, async (t) => {
  const d = await serve(['--http-listen', '0.0.0.0:8080', '--tftp-listen', '0.0.0.0:69', '--no-dhcp']);
  t.after(() => d.stop());
  const warnings = d.out().split('\n').filter((l) => /listens on ALL interfaces/.test(l)).map((l) => JSON.parse(l));
  assert.deepEqual(warnings.map((w) => [w.level, w.service]), [[40, 'HTTP'], [40, 'TFTP']]);
  assert.equal((await curl(oth, 'http://10.86.0.1:8080/healthz')).code, 0);
  // a wildcard TFTP socket: boot.ipxe names the address the kernel answers the client from
  const script = await curl(oth, 'tftp://10.86.0.1/52-54-00-00-00-99/boot.ipxe');
  assert.match(script.body, /not registered with http:\/\/10\.86\.0\.1:8080/);
});
