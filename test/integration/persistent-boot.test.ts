/**
 * Persistent boot, the server's side: which script a persistent machine gets (pure decision and rendered script),
 * the check-in decision (pure), and POST /agent/v1/boot end to end through the app (hello hands out the disk token,
 * check-ins count boots as `boot` events on the succeeded workflow, refusals are recorded with their reason, a new
 * workflow supersedes the disk).
 */
import { AgentTokens } from '../../server/workflows/tokens.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inProcessApp, readyImage } from '../helpers/daemon.ts';
import { bootPlugin } from '../../server/http/routes/boot.ts';
import { chooseBootScript, loadBootTemplates, renderBootScript } from '../../server/boot/ipxe.ts';
import { decideCheckIn, sha256Hex } from '../../server/workflows/persistent.ts';
import type { Workflow } from '../../server/store/workflows.ts';
import type { Machine } from '../../server/store/machines.ts';
import type { Image } from '../../server/store/images.ts';
import type { WorkflowState } from '../../server/workflows/states.ts';

const MAC = '52:54:00:12:34:56';
const machine = { id: 1, mac: MAC, hostname: 'n1', ipv4: null, arch: 'auto', efiBinary: 'ipxe.efi', allowPxe: true, labels: {}, createdAt: '', updatedAt: '' } as Machine;
const wf = (state: WorkflowState, over: Partial<Workflow> = {}): Workflow => ({
  id: 'wf-1', machineId: 1, machineMac: MAC, imageId: 'img1', entrypoint: null, args: null, env: {}, kernelArgs: 'quiet',
  target: '/dev/vda', after: 'reboot', mode: 'persistent', token: 'provision-token', state, reason: null, exitCode: null,
  timeoutSeconds: 600, createdAt: '', updatedAt: '', startedAt: null, finishedAt: null, ...over,
});

test('boot decision: only a succeeded persistent latest workflow gets the persistent script; after=reboot alone does not', () => {
  assert.equal(chooseBootScript({ mac: MAC, machine, workflow: wf('succeeded') }).kind, 'persistent');
  assert.equal(chooseBootScript({ mac: MAC, machine, workflow: wf('succeeded', { mode: 'ephemeral', after: 'reboot' }) }).kind, 'local-boot');
  assert.equal(chooseBootScript({ mac: MAC, machine, workflow: wf('succeeded', { mode: 'install' }) }).kind, 'local-boot');
  for (const s of ['failed', 'cancelled', 'timed-out'] as const) assert.equal(chooseBootScript({ mac: MAC, machine, workflow: wf(s) }).kind, 'local-boot', s);
  for (const s of ['pending', 'booting', 'running'] as const) assert.equal(chooseBootScript({ mac: MAC, machine, workflow: wf(s) }).kind, 'provision', s);
  assert.equal(chooseBootScript({ mac: MAC, machine: { ...machine, allowPxe: false }, workflow: wf('succeeded') }).kind, 'local-boot');
});

test('persistent script: kernel + initramfs with a persistent-boot command line and no token', () => {
  const out = renderBootScript(loadBootTemplates(), { mac: MAC, machine, workflow: wf('succeeded'), image: { id: 'img1', name: 'web' } as Image }, { publicUrl: 'http://10.77.0.1:8080' });
  assert.equal(out.kind, 'persistent');
  assert.equal(out.workflowId, 'wf-1');
  const kernel = out.script.split('\n').find((l) => l.startsWith('kernel '));
  assert.equal(kernel, 'kernel http://10.77.0.1:8080/artifacts/vmlinuz initrd=initramfs console=tty0 console=ttyS0,115200 '
    + 'ironboot.server=http://10.77.0.1:8080 ironboot.workflow=wf-1 ironboot.boot=persistent ironboot.disk=/dev/vda '
    + 'ironboot.mac=52:54:00:12:34:56 panic=10 quiet || goto failed');
  assert.doesNotMatch(out.script, /provision-token|ironboot\.token/);
  assert.match(out.script, /^echo ironboot: persistent boot of 52:54:00:12:34:56: the disk of workflow wf-1 \(web\)/m);
});

test('decideCheckIn: token, machine, supersession, state, and the marker\'s workflow, machine and image digest', () => {
  const image = { id: 'img1', rawSha256: 'b'.repeat(64), rawSize: 100 } as Image;
  const marker = { workflowId: 'wf-1', imageId: 'img1', rawSha256: 'b'.repeat(64), rawSize: 100, mac: MAC, fsUuid: 'u', writtenAt: 't' };
  const base = { workflow: wf('succeeded'), latest: wf('succeeded'), image, mac: MAC, tokenOk: true, marker };
  assert.deepEqual(decideCheckIn(base), { ok: true });
  const no = (over: object) => decideCheckIn({ ...base, ...over }) as { ok: false; status: number; field: string; reason: string };
  assert.equal(no({ tokenOk: false }).status, 401);
  assert.equal(no({ mac: '52:54:00:00:00:09' }).status, 403);
  assert.match(no({ workflow: wf('succeeded', { mode: 'ephemeral' }), latest: undefined }).reason, /ephemeral, not persistent/);
  assert.match(no({ latest: wf('pending', { id: 'wf-2' }) }).reason, /superseded by workflow wf-2 \(pending\)/);
  assert.match(no({ workflow: wf('failed'), latest: wf('failed') }).reason, /is failed; only a succeeded/);
  assert.equal(no({ marker: undefined }).status, 400);
  assert.match(no({ marker: { ...marker, workflowId: 'wf-0' } }).reason, /names workflow wf-0/);
  assert.match(no({ marker: { ...marker, mac: '52:54:00:99:99:99' } }).reason, /written for 52:54:00:99:99:99/);
  const digest = no({ marker: { ...marker, rawSha256: 'e'.repeat(64) } });
  assert.equal(digest.field, 'marker');
  assert.match(digest.reason, /holds image img1 \(sha256 e{64}\), the workflow's image is img1 \(sha256 b{64}\)/);
  assert.match(no({ marker: { ...marker, rawSize: 99 } }).reason, /99 bytes/);
});

test('POST /agent/v1/boot: hello hands out the disk token, check-ins count boots, refusals are recorded, a reinstall supersedes', async (t) => {
  const ctx = await inProcessApp({ extra: { plugins: [{ plugin: bootPlugin(loadBootTemplates(), 'http://10.77.0.1:8080', undefined, { policy: { mode: 'none', dhcpLeases: false } }) }] } });
  t.after(() => ctx.close());
  ctx.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  ctx.store.machines.create({ mac: MAC, hostname: 'n1' });
  const bad = await ctx.app.inject({ method: 'POST', url: '/api/v1/workflows', headers: ctx.auth, payload: { machine: MAC, image: 'web', target: 'ram', mode: 'persistent' } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().field, 'target');
  const w = ctx.workflows.create({ mac: MAC, image: 'web', target: '/dev/vda', mode: 'persistent', after: 'reboot' });
  const bootToken = new AgentTokens(ctx.store).issueBoot(w.id, '127.0.0.1');
  const hello = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: { authorization: `Bearer ${bootToken}` }, payload: { workflowId: w.id, mac: MAC } });
  assert.equal(hello.statusCode, 200, hello.body);
  const token: string = hello.json().persistent.token;
  assert.ok(token.length >= 40);
  assert.equal(ctx.store.workflows.bootTokenSha256(w.id), sha256Hex(token), 'only the hash is kept');
  assert.doesNotMatch(JSON.stringify((await ctx.app.inject({ method: 'GET', url: `/api/v1/workflows/${w.id}`, headers: ctx.auth })).json()), new RegExp(token));

  const marker = { workflowId: w.id, imageId: 'img1', rawSha256: 'b'.repeat(64), rawSize: 33554432, mac: MAC, fsUuid: 'u', writtenAt: 't' };
  const boot = (body: object, tok: string | null = token) => ctx.app.inject({
    method: 'POST', url: '/agent/v1/boot', headers: tok ? { authorization: `Bearer ${tok}` } : {},
    payload: { workflowId: w.id, mac: MAC, ip: '10.0.0.5', device: '/dev/vda', ...body },
  });
  // before the workflow succeeded there is no persistent boot
  assert.equal((await boot({ phase: 'started', marker })).statusCode, 409);
  for (const s of ['streaming', 'verifying', 'mounted', 'running', 'succeeded'] as const) ctx.workflows.transition(w.id, s, s === 'succeeded' ? { exitCode: 0 } : {});
  const script = await ctx.app.inject({ method: 'GET', url: `/boot/${MAC}.ipxe` });
  assert.match(script.body, /ironboot\.boot=persistent ironboot\.disk=\/dev\/vda/);

  const b1 = await boot({ phase: 'started', marker });
  assert.equal(b1.statusCode, 200, b1.body);
  assert.equal(b1.json().boot, 1);
  assert.equal(b1.json().verified, true);
  assert.deepEqual(b1.json().spec.entrypoint, ['/bin/httpd']);
  assert.equal(b1.json().spec.persistent, undefined, 'a check-in never hands out a new token');
  assert.equal((await boot({ phase: 'exited', boot: 1, exitCode: 0 })).statusCode, 200);
  assert.equal((await boot({ phase: 'started', marker })).json().boot, 2);
  assert.equal(ctx.store.workflows.get(w.id)!.state, 'succeeded', 'the workflow stays succeeded');

  // wrong token, no token, another image on the disk
  const wrong = await boot({ phase: 'started', marker }, 'x'.repeat(43));
  assert.equal(wrong.statusCode, 401);
  assert.equal(wrong.json().field, 'authorization');
  assert.equal((await boot({ phase: 'exited', boot: 2, exitCode: 0 }, null)).statusCode, 401);
  const tampered = await boot({ phase: 'started', marker: { ...marker, rawSha256: 'e'.repeat(64) } });
  assert.equal(tampered.statusCode, 409);
  assert.match(tampered.json().message, /holds image img1 \(sha256 e{64}\)/);
  // the agent's own refusal (another machine's disk: no valid token) is recorded, marked unverified
  const refused = await boot({ phase: 'refused', reason: 'marker: /dev/vda holds workflow wf-x' }, 'y'.repeat(43));
  assert.equal(refused.statusCode, 200, refused.body);
  assert.equal(refused.json().verified, false);

  const boots = ctx.store.events.list(w.id).filter((e) => e.kind === 'boot').map((e) => [e.payload.phase, e.payload.boot ?? e.payload.verified]);
  // refused before success (verified), 2 boots, the wrong token (unverified), the tampered digest (verified), the agent's refusal
  assert.deepEqual(boots, [['refused', true], ['started', 1], ['exited', 1], ['started', 2], ['refused', false], ['refused', true], ['refused', false]]);
  const byServer = ctx.store.events.list(w.id).filter((e) => e.kind === 'boot' && e.payload.by === 'server')[2];
  assert.match(String(byServer.payload.reason), /sha256 e{64}/);

  // a reinstall: the new workflow decides; the old disk's check-in is refused, strangers' refusals are not recorded
  const w2 = ctx.workflows.create({ mac: MAC, image: 'web', target: '/dev/vda', mode: 'persistent' });
  assert.match((await ctx.app.inject({ method: 'GET', url: `/boot/${MAC}.ipxe` })).body, /ironboot\.token=/);
  const old = await boot({ phase: 'started', marker });
  assert.equal(old.statusCode, 409);
  assert.match(old.json().message, new RegExp(`superseded by workflow ${w2.id}`));
  assert.equal((await boot({ phase: 'refused', reason: 'spam' }, null)).statusCode, 401);
  const metrics = await ctx.app.inject({ method: 'GET', url: '/metrics' });
  assert.match(metrics.body, /ironboot_boot_scripts_total\{kind="persistent"\} 1/);
});
