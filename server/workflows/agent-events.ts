/**
 * What the server does with one batch of agent events (POST /agent/v1/events): the whole batch is one
 * transaction (a refused event midway writes nothing of it), events the server already has (by the agent's id)
 * are acknowledged and not written again, nothing is accepted once the workflow is final, and a workflow's
 * output (log, progress, info events) is capped in count and bytes: the first event over the cap is replaced
 * by one marker event and later output is dropped. State changes are never capped, so the final state lands.
 */
import type { AgentEvent } from '../agent/api.ts';
import type { Store } from '../store/index.ts';
import type { AgentEventUsage } from '../store/agent-events.ts';
import type { Workflow } from '../store/workflows.ts';
import { isFinal } from './states.ts';
import { WorkflowError, type WorkflowService } from './service.ts';

export interface AgentEventLimits {
  /** Output events (log, progress, info) stored per workflow. */
  maxEvents: number;
  /** Bytes of output (log lines, messages) stored per workflow. */
  maxBytes: number;
}

export const DEFAULT_AGENT_EVENT_LIMITS: AgentEventLimits = { maxEvents: 50_000, maxBytes: 64 << 20 };

export interface BatchResult { accepted: number; state: string; duplicates: number; dropped: number }

type LogLine = NonNullable<AgentEvent['log']>[number];

const lineBytes = (l: LogLine) => Buffer.byteLength(l.line) + 16;
const textBytes = (s: string | undefined | null) => (s ? Buffer.byteLength(s) : 0);

/** A batch is idempotent only for events that carry an id: which of them are new (also within the batch). */
function freshEvents(store: Store, wf: Workflow, events: AgentEvent[]): AgentEvent[] {
  const ids = events.map((e) => e.id).filter((id): id is string => id !== undefined);
  const seen = store.agentEvents.seen(wf.id, ids);
  const out: AgentEvent[] = [];
  for (const e of events) {
    if (e.id !== undefined) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
    }
    out.push(e);
  }
  return out;
}

/**
 * `workflow`: as the caller read it inside the transaction this batch joins (the events route reads it when it
 * checks the session token), so it is not read twice.
 */
export function applyAgentBatch(store: Store, workflows: WorkflowService, workflow: Workflow, events: AgentEvent[],
  limits: AgentEventLimits = DEFAULT_AGENT_EVENT_LIMITS): BatchResult {
  return workflows.batch(() => {
    let wf = workflow;
    const fresh = freshEvents(store, wf, events);
    const duplicates = events.length - fresh.length;
    if (isFinal(wf.state)) {
      // A repeat of the final state itself (an agent without event ids retrying) is harmless; anything else is refused.
      const news = fresh.filter((e) => !(e.state === wf!.state && !e.log?.length));
      if (news.length) throw new WorkflowError(409, 'state', `workflow ${wf.id} is already ${wf.state}; it accepts no more events`);
      return { accepted: events.length, state: wf.state, duplicates, dropped: 0 };
    }
    const usage = store.agentEvents.usage(wf.id);
    const before = usage.dropped;
    for (const ev of fresh) {
      wf = applyOne(workflows, ev, wf, usage, limits);
      if (ev.id !== undefined) store.agentEvents.remember(wf.id, ev.id);
    }
    store.agentEvents.setUsage(wf.id, usage);
    return { accepted: events.length, state: wf.state, duplicates, dropped: usage.dropped - before };
  });
}

/** Takes room for an output event of `bytes`; false when the cap is reached (the marker is written once). */
function take(workflows: WorkflowService, wf: Workflow, usage: AgentEventUsage, limits: AgentEventLimits, bytes: number): boolean {
  if (!usage.truncated && usage.events + 1 <= limits.maxEvents && usage.bytes + bytes <= limits.maxBytes) {
    usage.events++;
    usage.bytes += bytes;
    return true;
  }
  truncate(workflows, wf, usage, limits);
  usage.dropped++;
  return false;
}

function truncate(workflows: WorkflowService, wf: Workflow, usage: AgentEventUsage, limits: AgentEventLimits): void {
  if (usage.truncated) return;
  usage.truncated = true;
  workflows.record({
    workflowId: wf.id, kind: 'info', state: wf.state,
    message: `output truncated: this workflow reached its cap of ${limits.maxEvents} events or ${limits.maxBytes} bytes of agent output; later log lines, progress and info events are dropped (state changes still count)`,
    payload: { truncated: true, maxEvents: limits.maxEvents, maxBytes: limits.maxBytes, events: usage.events, bytes: usage.bytes },
  });
}

function applyOne(workflows: WorkflowService, ev: AgentEvent, wf: Workflow, usage: AgentEventUsage, limits: AgentEventLimits): Workflow {
  if (isFinal(wf.state) && ev.state !== wf.state) {
    throw new WorkflowError(409, 'state', `workflow ${wf.id} became ${wf.state} earlier in this batch; it accepts no more events`);
  }
  if (ev.log?.length) {
    // as many lines as still fit; the rest is cut at the marker
    let lines = ev.log;
    let bytes = lines.reduce((n, l) => n + lineBytes(l), 0);
    const room = limits.maxBytes - usage.bytes;
    if (!usage.truncated && bytes > room && usage.events < limits.maxEvents) {
      let n = 0; let b = 0;
      while (n < lines.length && b + lineBytes(lines[n]) <= room) b += lineBytes(lines[n++]);
      lines = lines.slice(0, n); bytes = b;
    }
    if (lines.length && take(workflows, wf, usage, limits, bytes)) {
      workflows.record({ workflowId: wf.id, kind: 'log', message: lines.map((l) => l.line).join('\n').slice(0, 4000), payload: { lines } });
    }
    if (lines.length < ev.log.length) { truncate(workflows, wf, usage, limits); if (!lines.length) usage.dropped++; }
  }
  if (ev.bytesDone !== undefined && !ev.state && take(workflows, wf, usage, limits, 64 + textBytes(ev.message))) {
    workflows.record({ workflowId: wf.id, kind: 'progress', state: wf.state, bytesDone: ev.bytesDone, bytesTotal: ev.bytesTotal ?? null, message: ev.message ?? null });
  }
  if (ev.state) {
    if (ev.state === wf.state) return wf; // a retried report: already there
    if (isFinal(wf.state)) throw new WorkflowError(409, 'state', `workflow ${wf.id} is already ${wf.state}; it accepts no more events`);
    let to = ev.state;
    if (to === 'succeeded' && ev.exitCode !== undefined && ev.exitCode !== 0) to = 'failed';
    const reason = to === 'failed' ? (ev.message ?? (ev.exitCode !== undefined ? `entrypoint exited with code ${ev.exitCode}` : 'agent reported failure')) : undefined;
    return workflows.transition(wf.id, to, {
      message: ev.message, reason, exitCode: ev.exitCode,
      payload: { ...(ev.payload ?? {}), ...(ev.bytesDone !== undefined ? { bytesDone: ev.bytesDone, bytesTotal: ev.bytesTotal } : {}) },
    }, wf);
  }
  if (!ev.log?.length && ev.bytesDone === undefined && take(workflows, wf, usage, limits, 64 + textBytes(ev.message) + textBytes(JSON.stringify(ev.payload ?? {})))) {
    workflows.record({ workflowId: wf.id, kind: 'info', state: wf.state, message: ev.message ?? null, payload: ev.payload ?? {} });
  }
  return wf;
}
