/**
 * Serving a machine's boot script, the same way over HTTP (/boot/<mac>.ipxe) and TFTP (boot.ipxe): choose the
 * script, and for a provisioning script check who asks (script-auth.ts), mint its boot token, and move the
 * workflow to `booting` (only from pending/booting). Every decision is logged with the MAC and the address.
 */
import type { Logger } from 'pino';
import type { Store } from '../store/index.ts';
import type { WorkflowService } from '../workflows/service.ts';
import { AgentTokens, plainAddress } from '../workflows/tokens.ts';
import { bootTargetFor, chooseBootScript, renderBootScript, type BootScriptOptions, type BootTemplates, type RenderedBootScript } from './ipxe.ts';
import { decideBootScriptAuth, type BootScriptAuth, type BootScriptAuthDecision } from './script-auth.ts';

export interface BootScriptPolicy {
  /** --boot-script-auth: used when ironboot does not lease the addresses itself. */
  mode: BootScriptAuth;
  /** Whether ironboot's DHCP hands out the addresses (reservation or full mode, serving an interface). */
  dhcpLeases: boolean;
}

export interface BootScriptRequest {
  mac: string;
  sourceIp: string;
  via: 'http' | 'https' | 'tftp';
  userAgent?: string | null;
  /** Where the script points iPXE (kernel, initramfs) and the agent (ironboot.server=). */
  urls: Pick<BootScriptOptions, 'publicUrl' | 'agentUrl'>;
}

export interface ServedBootScript extends RenderedBootScript {
  auth: BootScriptAuthDecision | null;
}

export function createBootScriptServer(deps: {
  store: Store; workflows: WorkflowService; log: Logger; templates: BootTemplates; policy: BootScriptPolicy;
  script?: Omit<BootScriptOptions, 'publicUrl' | 'agentUrl'>; now?: () => number;
}) {
  const { store, workflows, log, templates, policy } = deps;
  const tokens = new AgentTokens(store);
  const now = deps.now ?? Date.now;

  return function serveBootScript(r: BootScriptRequest): ServedBootScript {
    const source = plainAddress(r.sourceIp);
    const target = bootTargetFor(store, r.mac);
    const choice = chooseBootScript(target);
    const opts: BootScriptOptions = { ...deps.script, ...r.urls };
    if (choice.kind !== 'provision') {
      const out = renderBootScript(templates, target, opts);
      log.info({ mac: r.mac, kind: out.kind, workflow: out.workflowId, from: source, via: r.via, reason: out.reason }, `boot script ${out.kind}`);
      return { ...out, auth: null };
    }
    const wf = target.workflow!;
    const auth = decideBootScriptAuth({
      mac: r.mac, sourceIp: source, dhcpLeases: policy.dhcpLeases, mode: policy.mode,
      reservedIp: target.machine?.ipv4?.address ?? null,
      leasedIps: store.leases.getByMac(r.mac).filter((l) => l.state === 'bound' && l.expiresAt > now()).map((l) => l.address),
    });
    if (!auth.allow) {
      log.warn({ mac: r.mac, workflow: wf.id, from: source, via: r.via, rule: auth.rule, reason: auth.reason },
        'provisioning script refused: it carries a boot token and this address is not the machine\'s; a script without a token was served');
      return { ...renderBootScript(templates, target, opts, { refused: auth.reason }), auth };
    }
    const bootToken = tokens.issueBoot(wf.id, auth.bindIp);
    const out = renderBootScript(templates, target, opts, { bootToken });
    log.info({ mac: r.mac, workflow: wf.id, from: source, via: r.via, rule: auth.rule, boundTo: auth.bindIp, reason: auth.reason },
      'boot script provision: served with a new boot token');
    const moved = workflows.tryTransition(wf.id, 'booting', {
      message: `iPXE script served to ${source} over ${r.via}`,
      payload: { ip: source, via: r.via, userAgent: r.userAgent ?? null },
    });
    if (!moved) log.info({ mac: r.mac, workflow: wf.id, state: wf.state }, `workflow stays ${wf.state}: a served script moves only pending/booting workflows to booting`);
    return { ...out, auth };
  };
}

export type BootScriptServer = ReturnType<typeof createBootScriptServer>;
