/**
 * Workflow states and the transitions between them (pure).
 *
 *   pending → booting → agent-online → streaming → verifying → mounted → running → succeeded | failed
 *   any active state → failed | timed-out | cancelled
 */

export const WORKFLOW_STATES = [
  'pending', 'booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running',
  'succeeded', 'failed', 'timed-out', 'cancelled',
] as const;
export type WorkflowState = (typeof WORKFLOW_STATES)[number];

export const FINAL_STATES: ReadonlySet<WorkflowState> = new Set(['succeeded', 'failed', 'timed-out', 'cancelled']);
export const isFinal = (s: WorkflowState): boolean => FINAL_STATES.has(s);

const ORDER: WorkflowState[] = ['pending', 'booting', 'agent-online', 'streaming', 'verifying', 'mounted', 'running'];

/**
 * Whether a workflow may go from `from` to `to`. Forward moves along the boot may skip steps (a machine that
 * re-fetches its script, or an agent that says hello without the script having been served through us).
 * `booting` (a boot script served: no credentials needed to ask for one) is reached only from pending or booting,
 * so a fetch never pushes a workflow that is further along back; `agent-online` may repeat (a machine that
 * reboots mid-way says hello again with a fresh boot token); final states are final.
 */
export function canTransition(from: WorkflowState, to: WorkflowState): boolean {
  if (isFinal(from)) return false;
  if (to === 'failed' || to === 'timed-out' || to === 'cancelled') return true;
  if (to === 'succeeded') return from === 'running';
  const a = ORDER.indexOf(from);
  const b = ORDER.indexOf(to);
  if (b < 0) return false;
  if (to === 'booting') return from === 'pending' || from === 'booting';
  if (to === 'agent-online') return true; // a reboot restarts the boot
  return b > a;
}
