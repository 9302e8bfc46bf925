/**
 * Agent tokens: what a machine presents to the agent API and the image files, apart from the admin token.
 *
 *   boot token     minted per served provisioning script (so only the machine the script went to holds it), put in
 *                  the kernel command line, bound to the address the script went to when that address is known;
 *                  exchanged exactly once, by the agent's hello
 *   session token  minted by that hello, bound to the agent's source address and the workflow; events and images
 *
 * Only sha256 hashes are stored. A token is looked up by its hash (a preimage of a random 192-bit token cannot be
 * learnt from lookup timing) and the stored hash is then compared in constant time. Every token of a finished
 * workflow is refused: tokens expire with their workflow.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/index.ts';
import type { Workflow } from '../store/workflows.ts';
import type { AgentTokenRow } from '../store/agent-tokens.ts';
import { isFinal } from './states.ts';

export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

const newToken = (): string => randomBytes(24).toString('base64url');

/** An address as the socket reports it, without the IPv4-mapped IPv6 prefix (::ffff:10.0.0.5 → 10.0.0.5). */
export const plainAddress = (ip: string): string => ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');

/** Why a token was refused: an HTTP status, the field, and a message an operator can act on. */
export interface TokenRefusal {
  ok: false;
  status: 401 | 403 | 409;
  field: string;
  message: string;
  /** The refusal is worth an event on the workflow (a replayed hello, a token used from another address). */
  suspicious?: { workflowId: string; kind: 'replayed-boot-token' | 'wrong-address' };
}
export type TokenCheck<T> = ({ ok: true } & T) | TokenRefusal;

function lookup(store: Store, presented: string | undefined): AgentTokenRow | undefined {
  if (!presented) return undefined;
  const hash = hashToken(presented);
  const row = store.agentTokens.get(hash);
  if (!row) return undefined;
  // the row was found by this very hash; the constant-time compare keeps that true for any index behaviour
  return timingSafeEqual(Buffer.from(row.hash, 'hex'), Buffer.from(hash, 'hex')) ? row : undefined;
}

export const refuse = (status: TokenRefusal['status'], field: string, message: string, suspicious?: TokenRefusal['suspicious']): TokenRefusal =>
  ({ ok: false, status, field, message, suspicious });

export class AgentTokens {
  constructor(private store: Store) {}

  /**
   * A new boot token for a provisioning script; earlier unused boot tokens of the workflow stop working (the
   * machine runs the script it fetched last). `ip`: the address the script goes to, or null when it is not bound.
   */
  issueBoot(workflowId: string, ip: string | null): string {
    const token = newToken();
    this.store.tx(() => {
      this.store.agentTokens.supersede(workflowId, 'boot');
      this.store.agentTokens.insert({ hash: hashToken(token), workflowId, kind: 'boot', ip: ip && plainAddress(ip) });
    });
    return token;
  }

  /** Whether `presented` is an unused boot token of the workflow for `ip` (nothing changes; the hello still exchanges it). */
  peekBoot(presented: string | undefined, workflowId: string, ip: string): boolean {
    const row = lookup(this.store, presented);
    return !!row && row.workflowId === workflowId && row.kind === 'boot' && row.state === 'active' && (!row.ip || row.ip === plainAddress(ip));
  }

  /**
   * The hello: exchanges a boot token for a session token bound to `ip` and the workflow, in one transaction (the
   * boot token is used, earlier sessions are superseded, the new one is written). A used boot token is refused
   * with 409 (a replay), a token of another workflow or kind with 401, a hello from another address than the one
   * the script went to with 403.
   */
  exchangeBoot(presented: string | undefined, workflowId: string, ip: string,
    check?: (wf: Workflow) => TokenRefusal | null): TokenCheck<{ workflow: Workflow; session: string }> {
    const addr = plainAddress(ip);
    return this.store.tx((): TokenCheck<{ workflow: Workflow; session: string }> => {
      const row = lookup(this.store, presented);
      if (!row || row.workflowId !== workflowId) return refuse(401, 'authorization', 'missing or wrong workflow token');
      if (row.kind !== 'boot') return refuse(401, 'authorization', 'hello takes the boot token from the kernel command line, not a session token');
      const workflow = this.store.workflows.get(workflowId);
      if (!workflow) return refuse(401, 'authorization', 'missing or wrong workflow token');
      if (isFinal(workflow.state)) return refuse(409, 'workflowId', `workflow ${workflowId} is already ${workflow.state}; its tokens expired with it`);
      if (row.state === 'used') {
        return refuse(409, 'authorization', `this boot token was already exchanged at ${row.usedAt}; a boot token is single-use (reboot the machine through its boot script for a new one)`,
          { workflowId, kind: 'replayed-boot-token' });
      }
      if (row.state === 'superseded') return refuse(401, 'authorization', 'this boot token was superseded: the machine fetched a newer boot script');
      if (row.ip && row.ip !== addr) {
        return refuse(403, 'authorization', `this boot token was issued to ${row.ip}; hello came from ${addr}`, { workflowId, kind: 'wrong-address' });
      }
      const refused = check?.(workflow);
      if (refused) return refused;
      if (!this.store.agentTokens.markUsed(row.hash)) return refuse(409, 'authorization', 'this boot token was exchanged concurrently', { workflowId, kind: 'replayed-boot-token' });
      const session = newToken();
      this.store.agentTokens.supersede(workflowId, 'session');
      this.store.agentTokens.insert({ hash: hashToken(session), workflowId, kind: 'session', ip: addr });
      return { ok: true, workflow, session };
    });
  }

  /**
   * A session token presented from `ip`: its workflow, if the token is the workflow's current session, comes from
   * the address it was issued to, and the workflow is not finished. `workflowId`, when the request names one,
   * must be the token's.
   */
  checkSession(presented: string | undefined, ip: string, workflowId?: string,
    opts: { finished?: 'refuse' | 'retries-only' } = {}): TokenCheck<{ workflow: Workflow }> {
    const row = lookup(this.store, presented);
    if (!row || (workflowId !== undefined && row.workflowId !== workflowId)) return refuse(401, 'authorization', 'missing or wrong workflow token');
    if (row.kind !== 'session') return refuse(401, 'authorization', 'the boot token only serves the hello; use the session token it returned');
    if (row.state !== 'active') return refuse(401, 'authorization', 'this session token was superseded by a newer hello of the workflow');
    const addr = plainAddress(ip);
    if (row.ip !== addr) {
      return refuse(403, 'authorization', `this session token belongs to ${row.ip}; the request came from ${addr}`, { workflowId: row.workflowId, kind: 'wrong-address' });
    }
    const workflow = this.store.workflows.get(row.workflowId);
    if (!workflow) return refuse(401, 'authorization', 'missing or wrong workflow token');
    // 'retries-only': the caller (the events route) refuses every new event of a finished workflow itself and only
    // acknowledges a batch it already has, so a final report whose reply was lost can be retried
    if (isFinal(workflow.state) && opts.finished !== 'retries-only') return refuse(409, 'workflowId', `workflow ${workflow.id} is already ${workflow.state}; its tokens expired with it`);
    return { ok: true, workflow };
  }
}
