import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';

const run = promisify(execFile);

async function cli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('the CLI drives a real daemon: machines, images, workflows, watch; and the data survives a restart', async (t) => {
  const dir = tempDir(); t.after(dir.remove);
  let d = await spawnDaemon(dir.path);
  t.after(() => d.stop());
  const tokenFile = join(dir.path, 'admin-token');
  assert.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the generated token is private');
  const token = readFileSync(tokenFile, 'utf8').trim();
  assert.match(d.output(), new RegExp(token), 'printed once at first start');
  const env = { IRONBOOT_SERVER: d.url, IRONBOOT_TOKEN: token };

  const health = await fetch(`${d.url}/healthz`);
  assert.equal(health.status, 200);

  let r = await cli(env, 'machines', 'add', '52-54-00-12-34-56', '--hostname', 'node-1', '--ip', '10.77.0.21/24', '--gateway', '10.77.0.1', '--dns', '10.77.0.1', '--label', 'rack=r1');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /added 52:54:00:12:34:56 \(node-1\)/);
  r = await cli(env, 'machines', 'add', '52:54:00:12:34:56');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /409 Conflict: a machine with MAC 52:54:00:12:34:56 already exists/);
  r = await cli(env, 'machines', 'add', 'nonsense');
  assert.match(r.stderr, /400 Bad Request: "nonsense" is not a MAC address/);
  r = await cli(env, 'machines', 'list');
  assert.match(r.stdout, /^MAC\s+HOSTNAME\s+IPV4\s+PXE/m);
  assert.match(r.stdout, /52:54:00:12:34:56\s+node-1\s+10\.77\.0\.21\/24\s+yes/);
  r = await cli(env, 'machines', 'list', '--label', 'rack=r9', '--json');
  assert.deepEqual(JSON.parse(r.stdout), []);
  r = await cli(env, 'machines', 'set', '525400123456', '--no-pxe');
  assert.match(r.stdout, /allowPxe:\s+false/);
  r = await cli(env, 'machines', 'show', '52:54:00:12:34:56', '--json');
  assert.equal(JSON.parse(r.stdout).allowPxe, false);

  // an image row, as the container-disk builder leaves it (written while the daemon runs: WAL allows it)
  const s = Store.open(dir.path);
  s.images.insert(readyImage({ id: 'img1', name: 'web' }));
  s.close();
  r = await cli(env, 'images', 'list');
  assert.match(r.stdout, /img1\s+web\s+ready/);
  r = await cli(env, 'images', 'show', 'web', '--json');
  assert.equal(JSON.parse(r.stdout).id, 'img1');

  r = await cli(env, 'workflows', 'create', '--machine', '52:54:00:12:34:56', '--image', 'web', '--target', '/dev/vda', '--env', 'A=1', '--json', '--', '-f', '-p', '80');
  assert.equal(r.code, 0, r.stderr);
  const wf = JSON.parse(r.stdout);
  assert.deepEqual(wf.args, ['-f', '-p', '80']);
  r = await cli(env, 'workflows', 'list', '--machine', '52-54-00-12-34-56');
  assert.match(r.stdout, new RegExp(`${wf.id}\\s+52:54:00:12:34:56\\s+img1\\s+pending`));

  // watch follows the live stream until the workflow ends
  const watching = cli(env, 'workflows', 'watch', wf.id);
  await new Promise((res) => setTimeout(res, 1500));
  r = await cli(env, 'workflows', 'cancel', wf.id);
  assert.match(r.stdout, /cancelled/);
  const w = await watching;
  assert.equal(w.code, 1, 'watch exits non-zero for a workflow that did not succeed');
  assert.match(w.stdout, /pending\s+created for image web/);
  assert.match(w.stdout, /cancelled\s+cancelled by operator/);
  r = await cli(env, 'workflows', 'retry', wf.id);
  assert.match(r.stdout, /retrying as/);
  r = await cli(env, 'workflows', 'show', wf.id);
  assert.match(r.stdout, /state:\s+cancelled/);

  r = await cli({ ...env, IRONBOOT_TOKEN: 'wrong' }, 'machines', 'list');
  assert.match(r.stderr, /401 Unauthorized/);
  r = await cli({ IRONBOOT_SERVER: 'http://127.0.0.1:1', IRONBOOT_TOKEN: 'x' }, 'machines', 'list');
  assert.match(r.stderr, /cannot reach ironboot at http:\/\/127\.0\.0\.1:1/);

  // restart: same data directory, same token, same rows
  assert.equal(await d.stop(), 0, 'SIGTERM shuts down cleanly');
  d = await spawnDaemon(dir.path);
  assert.doesNotMatch(d.output(), new RegExp(token), 'the token is printed only when generated');
  const env2 = { IRONBOOT_SERVER: d.url, IRONBOOT_TOKEN: token };
  r = await cli(env2, 'machines', 'show', '52:54:00:12:34:56', '--json');
  assert.equal(JSON.parse(r.stdout).hostname, 'node-1');
  r = await cli(env2, 'workflows', 'list', '--json');
  assert.equal(JSON.parse(r.stdout).length, 2);
});

test('serve refuses bad settings with the setting and the reason', async () => {
  const dir = tempDir();
  try {
    let r = await cli({}, 'serve', '--data-dir', dir.path, '--dhcp-mode', 'sometimes');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /dhcp-mode: "sometimes" is not one of reservation, proxy, full/);
    r = await cli({}, 'serve', '--data-dir', dir.path, '--frobnicate');
    assert.match(r.stderr, /--frobnicate: unknown flag/);
    r = await cli({}, 'serve', '--data-dir', dir.path, '--dhcp-mode', 'full');
    assert.match(r.stderr, /dhcp-pool: full mode needs a pool/);
    r = await cli({ IRONBOOT_HTTP_LISTEN: '127.0.0.1:99999' }, 'serve', '--data-dir', dir.path);
    assert.match(r.stderr, /http-listen: port 99999 out of range/);
    r = await cli({}, 'nope');
    assert.equal(r.code, 2);
  } finally {
    dir.remove();
  }
});

test('serve refuses a database from a newer ironboot', async () => {
  const dir = tempDir();
  try {
    const s = Store.open(dir.path);
    s.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, ?, ?)').run('future', 'now');
    s.close();
    const r = await cli({}, 'serve', '--data-dir', dir.path, '--http-listen', '127.0.0.1:0', '--no-dhcp', '--no-tftp');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /schema version 999.*written by a newer ironboot/);
  } finally {
    dir.remove();
  }
});

test('SIGTERM shuts the daemon down cleanly while a live event stream is open', { timeout: 30_000 }, async (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const d = await spawnDaemon(dir.path, [], { IRONBOOT_TOKEN: 'tok' });
  t.after(() => d.stop());
  const res = await fetch(`${d.url}/api/v1/events/stream`, { headers: { authorization: 'Bearer tok' } });
  const reader = res.body!.getReader();
  await reader.read(); // the stream's opening comment: it is live
  const ended = (async () => { for (;;) { const { done } = await reader.read(); if (done) return true; } })();
  assert.equal(await d.stop(), 0, 'exit code 0 (without the fix it waits for the client forever)');
  assert.equal(await ended, true, 'the server ended the stream');
});
