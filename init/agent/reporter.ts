/**
 * Reports to the server: POST /agent/v1/events with the workflow token. Events are queued and sent in
 * batches a few times a second; a failed send keeps them queued and retries with backoff. Progress events
 * that pile up while the server is unreachable collapse into the latest one.
 *
 * Delivery rules (so the final status is never lost):
 * - every event carries an id (unique per agent run): the server writes it once, so a batch retried after a
 *   lost reply is not duplicated;
 * - a batch stays below `maxBatchBytes` (well under the server's body limit); an event too big on its own is
 *   split (log lines) or cut (a long message);
 * - a 413 splits the batch in halves (one event: it is cut further) instead of dropping it;
 * - the final event goes alone, after everything queued before it;
 * - a refused final event (a 4xx other than 408/413/429, e.g. 409 because the workflow was cancelled meanwhile)
 *   is not "delivered": `final()` resolves false and says so on the console.
 */
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import type { AgentEvent, EventBatch, EventBatchReply } from '../../server/agent/api.ts';
import { AGENT_API_PREFIX, AGENT_EVENTS_BODY_LIMIT } from '../../server/agent/api.ts';
import type { Reporter } from './main.ts';
import type { Console } from './sys.ts';
import { sleep } from './sys.ts';

export interface HttpReply { status: number; body: string }
export type PostJson = (url: string, token: string, body: unknown, timeoutMs: number) => Promise<HttpReply>;

/**
 * POST a JSON body with the bearer token. node:http rather than fetch: undici's first use costs seconds of
 * JS compilation under emulation, and the agent only needs plain HTTP/1.1 (https when the URL says so).
 */
export const postJson: PostJson = (url, token, body, timeoutMs) => new Promise((resolve, reject) => {
  const data = Buffer.from(JSON.stringify(body));
  const mod = url.startsWith('https:') ? https : http;
  const req = mod.request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': data.length, authorization: `Bearer ${token}` },
    timeout: timeoutMs,
  }, (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    res.on('error', reject);
  });
  req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
  req.on('error', reject);
  req.end(data);
});

const isProgressOnly = (e: AgentEvent): boolean =>
  e.bytesDone !== undefined && e.state === undefined && e.log === undefined && e.message === undefined;

/** Default cap of one request's JSON body: an eighth of the server's limit. */
export const DEFAULT_MAX_BATCH_BYTES = AGENT_EVENTS_BODY_LIMIT / 8;
const MAX_BATCH_EVENTS = 1000;
const ENVELOPE_BYTES = 200;

const jsonBytes = (e: AgentEvent): number => Buffer.byteLength(JSON.stringify(e)) + 1;

function cutText(s: string, maxBytes: number): string {
  const b = Buffer.from(s);
  if (b.length <= maxBytes) return s;
  const keep = Math.max(0, maxBytes - 40);
  return `${b.subarray(0, keep).toString('utf8').replace(/\uFFFD$/, '')}… [${b.length - keep} bytes cut]`;
}

/**
 * An event whose JSON is at most `maxBytes`, as one or more events (pure): log lines are spread over several
 * events, a line or message too long on its own is cut with a marker saying how much.
 */
export function fitEvent(e: AgentEvent, maxBytes: number): AgentEvent[] {
  if (jsonBytes(e) <= maxBytes) return [e];
  const base: AgentEvent = { ...e };
  if (base.message !== undefined) base.message = cutText(base.message, Math.floor(maxBytes / 4));
  if (base.payload !== undefined && Buffer.byteLength(JSON.stringify(base.payload)) > maxBytes / 4) {
    base.payload = { cut: `payload of ${Buffer.byteLength(JSON.stringify(base.payload))} bytes left out (too big for one report)` };
  }
  if (!e.log?.length) return [base];
  // the first event keeps the state/message/progress fields, the rest carry only lines
  const lineMax = Math.floor(maxBytes / 2);
  const lines = e.log.map((l) => ({ stream: l.stream, line: cutText(l.line, lineMax) }));
  const out: AgentEvent[] = [];
  let cur: AgentEvent = { ...base, log: [] };
  let size = jsonBytes(cur);
  for (const l of lines) {
    const b = Buffer.byteLength(JSON.stringify(l)) + 1;
    if (cur.log!.length && size + b > maxBytes) {
      out.push(cur);
      cur = { log: [] };
      size = jsonBytes(cur);
    }
    cur.log!.push(l);
    size += b;
  }
  out.push(cur);
  return out;
}

type PostResult = 'ok' | 'retry' | 'refused' | 'too-large';

export class EventReporter implements Reporter {
  private queue: AgentEvent[] = [];
  private sending: Promise<boolean> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  /** How many events at the head of the queue are in the request being sent. */
  private inflight = 0;
  /** Set after a 413: the next batches hold at most this many events. */
  private batchEvents = MAX_BATCH_EVENTS;
  private readonly runId = randomBytes(6).toString('base64url');
  private nextId = 0;
  /** The final event while final() waits for it. */
  private finalEvent: AgentEvent | null = null;
  /** Why the server refused the final event (null: not refused). */
  finalRefusal: string | null = null;
  /** The workflow state the server answered last. */
  serverState: string | null = null;

  constructor(private o: {
    /** The bearer token, or how to get the current one (the session token once hello exchanged the boot token). */
    server: string; workflowId: string; token: string | (() => string); console: Console;
    post?: PostJson; batchDelayMs?: number; timeoutMs?: number; maxBackoffMs?: number;
    /** Most bytes of JSON in one request (default: an eighth of the server's body limit). */
    maxBatchBytes?: number;
  }) {}

  private get maxBatchBytes(): number { return this.o.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES; }

  private withId(e: AgentEvent): AgentEvent {
    if (e.id !== undefined) return e;
    const { id: _none, ...rest } = e;
    return { id: `${this.runId}-${++this.nextId}`, ...rest };
  }

  send(e: AgentEvent): void {
    this.enqueue(e);
    this.schedule(this.o.batchDelayMs ?? 200);
  }

  /** Queues `e` (split to fit a batch); returns the last queued part. */
  private enqueue(e: AgentEvent): AgentEvent {
    // Collapse into the last queued progress event, unless that one is part of the batch on the wire.
    const last = this.queue.length > this.inflight ? this.queue[this.queue.length - 1] : undefined;
    if (last && last !== this.finalEvent && isProgressOnly(e) && isProgressOnly(last)) {
      const ev = this.withId(e);
      this.queue[this.queue.length - 1] = ev;
      return ev;
    }
    let ev = e;
    for (const part of fitEvent(e, this.maxBatchBytes - ENVELOPE_BYTES)) this.queue.push(ev = this.withId(part));
    return ev;
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush().then((ok) => {
        if (this.queue.length) this.schedule(ok ? 0 : this.backoff());
      });
    }, ms);
  }

  private backoff(): number {
    return Math.min(this.o.maxBackoffMs ?? 10_000, 250 * 2 ** Math.min(this.failures, 10));
  }

  /** The next request: events from the head within the byte and count caps; the final event always alone. */
  private nextBatch(): AgentEvent[] {
    if (this.queue[0] === this.finalEvent) return [this.queue[0]];
    const out: AgentEvent[] = [];
    let bytes = ENVELOPE_BYTES;
    for (const e of this.queue) {
      if (e === this.finalEvent || out.length >= this.batchEvents) break;
      const b = jsonBytes(e);
      if (out.length && bytes + b > this.maxBatchBytes) break;
      out.push(e);
      bytes += b;
    }
    return out;
  }

  /**
   * Sends one batch from the head of the queue (one request at a time). Resolves true when the queue was empty
   * or the batch was settled (acknowledged, refused, or split after a 413), false when it must be retried later.
   */
  flush(): Promise<boolean> {
    if (this.sending) return this.sending.then(() => this.flush());
    if (!this.queue.length) return Promise.resolve(true);
    const batch = this.nextBatch();
    this.inflight = batch.length;
    this.sending = this.post(batch).then((r) => {
      if (r === 'retry') {
        this.failures++;
        // a proxy that resets big requests instead of answering 413: retry with smaller batches too
        if (batch.length > 1) this.batchEvents = Math.max(1, Math.ceil(batch.length / 2));
        return false;
      }
      this.failures = 0;
      if (r === 'too-large') {
        if (batch.length > 1) {
          this.batchEvents = Math.max(1, Math.ceil(batch.length / 2));
          this.o.console.warn(`server said 413 for ${batch.length} events; sending at most ${this.batchEvents} per request`);
        } else {
          const bytes = jsonBytes(batch[0]);
          const parts = fitEvent(batch[0], Math.floor(bytes / 2));
          if (bytes < 1024 || jsonBytes(parts[0]) >= bytes) {
            this.o.console.warn(`server said 413 for one event of ${bytes} bytes that cannot be cut further; dropped`);
            this.settle(batch, 'HTTP 413 for an event that cannot be cut further');
          } else {
            // the server never stored the event (413), so its first part keeps the id, the others get new ones
            const parts2 = parts.map((p, i) => {
              const { id: _old, ...rest } = p;
              return i === 0 ? { ...rest, id: batch[0].id } : this.withId(rest);
            });
            this.queue.splice(0, 1, ...parts2);
            if (this.finalEvent === batch[0]) this.finalEvent = parts2[parts2.length - 1];
          }
        }
        return true;
      }
      if (r === 'refused') this.settle(batch, this.lastRefusal);
      else this.settle(batch, null);
      if (this.batchEvents < MAX_BATCH_EVENTS) this.batchEvents = Math.min(MAX_BATCH_EVENTS, this.batchEvents * 2);
      return true;
    }).finally(() => { this.sending = null; this.inflight = 0; });
    return this.sending;
  }

  /** Removes a settled batch from the queue; a refusal of the final event is remembered. */
  private settle(batch: AgentEvent[], refusal: string | null): void {
    this.queue.splice(0, batch.length);
    if (refusal && this.finalEvent && batch.includes(this.finalEvent)) this.finalRefusal = refusal;
  }

  private lastRefusal = '';

  private async post(events: AgentEvent[]): Promise<PostResult> {
    const body: EventBatch = { workflowId: this.o.workflowId, events };
    try {
      const token = typeof this.o.token === 'function' ? this.o.token() : this.o.token;
      const r = await (this.o.post ?? postJson)(`${this.o.server}${AGENT_API_PREFIX}/events`, token, body, this.o.timeoutMs ?? 10_000);
      if (r.status >= 200 && r.status < 300) {
        try { this.serverState = (JSON.parse(r.body) as EventBatchReply).state ?? null; } catch { /* no body */ }
        return 'ok';
      }
      if (r.status === 413) return 'too-large';
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        // The server refuses these events (bad token, workflow finished, …): retrying cannot help.
        this.lastRefusal = `HTTP ${r.status} ${r.body.slice(0, 300)}`;
        const isFinal = this.finalEvent !== null && events.includes(this.finalEvent);
        this.o.console.warn(`server refused ${isFinal ? `the final report (${this.finalEvent!.state})` : `${events.length} event(s)`}: ${this.lastRefusal}`);
        return 'refused';
      }
      this.o.console.warn(`events not delivered: HTTP ${r.status}; will retry`);
      return 'retry';
    } catch (e) {
      if (this.failures === 0 || this.failures % 10 === 0) this.o.console.warn(`events not delivered (${(e as Error).message}); will retry`);
      return 'retry';
    }
  }

  /**
   * Sends `e` after everything queued before it, alone in its request, and resolves true once the server
   * acknowledged it; false when the server refused it (see `finalRefusal`) or `maxAttempts` sends failed.
   */
  async final(e: AgentEvent, opts: { maxAttempts?: number } = {}): Promise<boolean> {
    this.finalRefusal = null;
    this.finalEvent = this.enqueue(e);
    const max = opts.maxAttempts ?? Infinity;
    try {
      for (let attempt = 1; ;) {
        if (this.timer) { clearTimeout(this.timer); this.timer = null; }
        const settled = await this.flush();
        if (this.finalEvent === null || !this.queue.includes(this.finalEvent)) return this.finalRefusal === null;
        if (settled) continue;
        if (attempt++ >= max) return false;
        await sleep(this.backoff());
      }
    } finally {
      this.finalEvent = null;
    }
  }

  /** Events still waiting to be delivered. */
  get pending(): number { return this.queue.length; }
}
