/**
 * iPXE boot scripts: which script a machine gets (pure) and rendering the operator-editable templates in
 * templates/ipxe/ for it.
 *
 *   unknown MAC                          → unknown.ipxe     (says so, pauses, exits; never a 404)
 *   registered, active workflow          → provision.ipxe   (kernel + initramfs + cmdline, retries, undionly fallback)
 *   registered, latest workflow persistent + succeeded → persistent.ipxe (kernel + initramfs, agent runs the disk it wrote)
 *   registered, no workflow / finished / PXE disabled → local-boot.ipxe (sanboot 0x80 on BIOS, exit on UEFI)
 *
 * Templates are Mustache (logic-less: operator input must not run code) with HTML escaping off. They are checked
 * once, when the daemon starts (loadBootTemplates): a template that does not parse, names a variable that does not
 * exist (a typo would silently render as nothing) or does not render to an `#!ipxe` script is refused with the
 * file and the problem.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Mustache from 'mustache';
import type { Machine } from '../store/machines.ts';
import type { Workflow } from '../store/workflows.ts';
import type { Image } from '../store/images.ts';
import type { Store } from '../store/index.ts';
import { macHyphen } from '../mac.ts';
import { isFinal } from '../workflows/states.ts';
import { bootsPersistently } from '../workflows/persistent.ts';
import { DEFAULT_CONSOLES, kernelCmdline, oneLine, persistentCmdline } from './cmdline.ts';

export type BootScriptKind = 'provision' | 'persistent' | 'local-boot' | 'unknown';

export const BOOT_TEMPLATE_FILES: Record<BootScriptKind, string> = {
  provision: 'provision.ipxe',
  persistent: 'persistent.ipxe',
  'local-boot': 'local-boot.ipxe',
  unknown: 'unknown.ipxe',
};

/** templates/ipxe/ of this source tree. */
export const DEFAULT_TEMPLATES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../templates/ipxe');

export interface BootTemplates {
  dir: string;
  sources: Record<BootScriptKind, string>;
}

export class BootTemplateError extends Error {
  constructor(readonly file: string, readonly problem: string) {
    super(`boot template ${file}: ${problem}`);
    this.name = 'BootTemplateError';
  }
}

type View = Record<string, string | number>;

const COMMON_SAMPLE: View = {
  mac: '52:54:00:12:34:56', macHyphen: '52-54-00-12-34-56', hostname: 'node-1', serverUrl: 'http://192.0.2.1:8080',
};

/** Every variable a template may use, with sample values for the start-up check. */
const SAMPLE_VIEWS: Record<BootScriptKind, View> = {
  provision: {
    ...COMMON_SAMPLE, workflowId: '00000000-0000-4000-8000-000000000000', imageName: 'sample',
    kernelUrl: 'http://192.0.2.1:8080/artifacts/vmlinuz', initrdUrl: 'http://192.0.2.1:8080/artifacts/initramfs',
    initrdName: 'initramfs', cmdline: 'initrd=initramfs console=ttyS0,115200 ironboot.server=http://192.0.2.1:8080',
    token: 'sample-token', kernelArgs: '', maxAttempts: 3, retryDelaySeconds: 5,
  },
  persistent: {
    ...COMMON_SAMPLE, workflowId: '00000000-0000-4000-8000-000000000000', imageName: 'sample',
    kernelUrl: 'http://192.0.2.1:8080/artifacts/vmlinuz', initrdUrl: 'http://192.0.2.1:8080/artifacts/initramfs',
    initrdName: 'initramfs', cmdline: 'initrd=initramfs console=ttyS0,115200 ironboot.boot=persistent ironboot.disk=/dev/sda',
    kernelArgs: '', maxAttempts: 3, retryDelaySeconds: 5,
  },
  'local-boot': { ...COMMON_SAMPLE, reason: 'no active workflow', workflowId: '', state: '' },
  unknown: { mac: COMMON_SAMPLE.mac, macHyphen: COMMON_SAMPLE.macHyphen, serverUrl: COMMON_SAMPLE.serverUrl, pauseSeconds: 10 },
};

/** A provisioning template that never passes the token cannot boot anything: the agent could not say hello. */
const REQUIRED: Partial<Record<BootScriptKind, string[][]>> = {
  provision: [['cmdline', 'token']],
  persistent: [['cmdline']],
};

/** Templates added after operators may have copied the directory: a directory without them uses the built-in one. */
const OPTIONAL_IN_OPERATOR_DIR: ReadonlySet<BootScriptKind> = new Set(['persistent']);

const escapeNothing = (s: unknown): string => String(s);

function lineOf(source: string, index: number): number {
  return source.slice(0, index).split('\n').length;
}

type Token = [string, string, number, number, Token[]?, ...unknown[]];

/** Variable names a parsed template uses, with the line of each (sections included). */
function usedNames(tokens: Token[], source: string, out: { name: string; line: number; type: string }[] = []) {
  for (const t of tokens) {
    const [type, value, start] = t;
    if (type === 'name' || type === '&' || type === '{' || type === '#' || type === '^') {
      out.push({ name: value, line: lineOf(source, start), type });
    } else if (type === '>') {
      out.push({ name: value, line: lineOf(source, start), type });
    }
    if ((type === '#' || type === '^') && Array.isArray(t[4])) usedNames(t[4], source, out);
  }
  return out;
}

/** Parses and test-renders one template; throws BootTemplateError naming the file and the problem. */
export function checkBootTemplate(kind: BootScriptKind, file: string, source: string): void {
  let tokens: Token[];
  try {
    tokens = Mustache.parse(source) as unknown as Token[];
  } catch (err) {
    throw new BootTemplateError(file, (err as Error).message);
  }
  const known = Object.keys(SAMPLE_VIEWS[kind]);
  const names = usedNames(tokens, source);
  for (const n of names) {
    if (n.type === '>') throw new BootTemplateError(file, `line ${n.line}: partials ({{> ${n.name}}}) are not supported`);
    const top = n.name.split('.')[0];
    if (n.name !== '.' && !known.includes(top)) {
      throw new BootTemplateError(file, `line ${n.line}: unknown variable {{${n.name}}} (known: ${known.join(', ')})`);
    }
  }
  for (const anyOf of REQUIRED[kind] ?? []) {
    if (!names.some((n) => anyOf.includes(n.name))) {
      throw new BootTemplateError(file, `must use {{${anyOf.join('}} or {{')}}}: without it the agent cannot find its workflow`);
    }
  }
  let out: string;
  try {
    out = Mustache.render(source, SAMPLE_VIEWS[kind], {}, { escape: escapeNothing });
  } catch (err) {
    throw new BootTemplateError(file, `rendering with sample data failed: ${(err as Error).message}`);
  }
  if (!out.startsWith('#!ipxe')) {
    throw new BootTemplateError(file, 'does not start with "#!ipxe" (iPXE would refuse it as an unknown image format)');
  }
}

/** Reads and checks templates/ipxe/{provision,local-boot,unknown}.ipxe from dir. Call once at daemon start. */
export function loadBootTemplates(dir: string = DEFAULT_TEMPLATES_DIR): BootTemplates {
  const sources = {} as Record<BootScriptKind, string>;
  for (const [kind, name] of Object.entries(BOOT_TEMPLATE_FILES) as [BootScriptKind, string][]) {
    let file = join(dir, name);
    if (OPTIONAL_IN_OPERATOR_DIR.has(kind) && !existsSync(file)) file = join(DEFAULT_TEMPLATES_DIR, name);
    let source: string;
    try {
      source = readFileSync(file, 'utf8');
    } catch (err) {
      throw new BootTemplateError(file, `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    checkBootTemplate(kind, file, source);
    sources[kind] = source;
  }
  return { dir, sources };
}

/** What the server knows about the MAC in the URL. */
export interface BootTarget {
  mac: string;
  machine?: Machine;
  /** The machine's active workflow, else its latest one (finished), else none. */
  workflow?: Workflow;
  image?: Image;
}

/** What a boot script is rendered for: the machine, its active workflow else its latest one, and that image. */
export function bootTargetFor(store: Store, mac: string): BootTarget {
  const machine = store.machines.getByMac(mac);
  if (!machine) return { mac };
  const workflow = store.workflows.activeForMachine(machine.id) ?? store.workflows.latestForMachine(machine.id);
  return { mac, machine, workflow, image: workflow ? store.images.get(workflow.imageId) : undefined };
}

export interface BootDecision {
  kind: BootScriptKind;
  reason: string;
}

/** Which script a machine gets (pure). */
export function chooseBootScript(t: BootTarget): BootDecision {
  if (!t.machine) return { kind: 'unknown', reason: 'not a registered machine' };
  if (!t.machine.allowPxe) return { kind: 'local-boot', reason: 'network boot is disabled for this machine (allowPxe=false)' };
  if (!t.workflow) return { kind: 'local-boot', reason: 'no workflow' };
  if (bootsPersistently(t.workflow)) {
    return { kind: 'persistent', reason: `workflow ${t.workflow.id} is persistent and succeeded: run its disk (${t.workflow.target}) again` };
  }
  if (isFinal(t.workflow.state)) return { kind: 'local-boot', reason: `workflow ${t.workflow.id} is ${t.workflow.state}` };
  return { kind: 'provision', reason: `workflow ${t.workflow.id} is ${t.workflow.state}` };
}

export interface BootScriptOptions {
  /** Base URL machines reach the HTTP side at, without a trailing slash. */
  publicUrl: string;
  /** ironboot.server= for the agent (the HTTPS side when TLS is on); default publicUrl. */
  agentUrl?: string;
  /** Download attempts before giving up (then undionly on BIOS, then reboot). */
  maxAttempts?: number;
  retryDelaySeconds?: number;
  /** Kernel panic=: reboot after this many seconds. */
  panicSeconds?: number;
  /** unknown.ipxe: pause before leaving the network boot. */
  pauseSeconds?: number;
  consoles?: string[];
}

export interface RenderedBootScript extends BootDecision {
  script: string;
  workflowId: string | null;
}

/**
 * Renders the script for one machine. A provisioning script needs the boot token minted for it
 * (server/workflows/tokens.ts); `refused` replaces it by a script without a token that says why.
 */
export function renderBootScript(templates: BootTemplates, target: BootTarget, opts: BootScriptOptions,
  auth: { bootToken: string } | { refused: string } = { refused: 'no boot token was issued' }): RenderedBootScript {
  const decision = chooseBootScript(target);
  if (decision.kind === 'provision' && 'refused' in auth) {
    return { ...decision, script: renderRefusedScript(target.mac, auth.refused, opts.pauseSeconds ?? 10), workflowId: target.workflow!.id };
  }
  const serverUrl = opts.publicUrl.replace(/\/+$/, '');
  const common: View = {
    mac: target.mac, macHyphen: macHyphen(target.mac), hostname: oneLine(target.machine?.hostname ?? ''), serverUrl,
  };
  let view: View;
  let workflowId: string | null = null;
  switch (decision.kind) {
    case 'unknown':
      view = { mac: common.mac, macHyphen: common.macHyphen, serverUrl, pauseSeconds: opts.pauseSeconds ?? 10 };
      break;
    case 'local-boot':
      view = { ...common, reason: decision.reason, workflowId: target.workflow?.id ?? '', state: target.workflow?.state ?? '' };
      break;
    case 'provision': {
      const wf = target.workflow!;
      workflowId = wf.id;
      const initrdName = 'initramfs';
      view = {
        ...common, workflowId: wf.id, imageName: oneLine(target.image?.name ?? wf.imageId),
        kernelUrl: `${serverUrl}/artifacts/vmlinuz`, initrdUrl: `${serverUrl}/artifacts/${initrdName}`, initrdName,
        cmdline: kernelCmdline({
          serverUrl: (opts.agentUrl ?? serverUrl).replace(/\/+$/, ''), workflowId: wf.id, token: (auth as { bootToken: string }).bootToken, mac: target.mac, kernelArgs: wf.kernelArgs, initrdName,
          panicSeconds: opts.panicSeconds ?? 10, consoles: opts.consoles ?? DEFAULT_CONSOLES,
        }),
        token: (auth as { bootToken: string }).bootToken, kernelArgs: oneLine(wf.kernelArgs),
        maxAttempts: opts.maxAttempts ?? 3, retryDelaySeconds: opts.retryDelaySeconds ?? 5,
      };
      break;
    }
    case 'persistent': {
      const wf = target.workflow!;
      workflowId = wf.id;
      const initrdName = 'initramfs';
      view = {
        ...common, workflowId: wf.id, imageName: oneLine(target.image?.name ?? wf.imageId),
        kernelUrl: `${serverUrl}/artifacts/vmlinuz`, initrdUrl: `${serverUrl}/artifacts/${initrdName}`, initrdName,
        cmdline: persistentCmdline({
          serverUrl, workflowId: wf.id, mac: target.mac, disk: wf.target, kernelArgs: wf.kernelArgs, initrdName,
          panicSeconds: opts.panicSeconds ?? 10, consoles: opts.consoles ?? DEFAULT_CONSOLES,
        }),
        kernelArgs: oneLine(wf.kernelArgs),
        maxAttempts: opts.maxAttempts ?? 3, retryDelaySeconds: opts.retryDelaySeconds ?? 5,
      };
      break;
    }
  }
  const script = Mustache.render(templates.sources[decision.kind], view, {}, { escape: escapeNothing });
  return { ...decision, script, workflowId };
}

/** iPXE expands ${…} in echo: a reason never carries a setting reference or a line break into the script. */
const echoSafe = (s: string): string => oneLine(s).replace(/[$]/g, '');

/**
 * The script a machine gets when its provisioning script is refused (it would carry a boot token): no token, the
 * reason on the console, a pause to read it, then back to the firmware. Never a 404, which would leave iPXE in
 * its shell.
 */
export function renderRefusedScript(mac: string, reason: string, pauseSeconds = 10): string {
  return '#!ipxe\n'
    + `echo ironboot: the provisioning script for ${echoSafe(mac)} is not served to this address\n`
    + `echo ironboot: ${echoSafe(reason)}\n`
    + `echo ironboot: leaving the network boot in ${pauseSeconds} s\n`
    + `sleep ${pauseSeconds}\n`
    + 'exit 1\n';
}
