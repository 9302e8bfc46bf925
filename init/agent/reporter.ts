/**
 * Reports to the server: POST /agent/v1/events with the workflow token. Events are queued and sent in
 * batches a few times a second; a failed send keeps them queued and retries with backoff. Progress events
 * that pile up while the server is unreachable collapse into the latest one. `final()` resolves once the
 * server acknowledged everything up to and including the final event.
 */
import http from 'node:http';
import https from 'node:https';
import type { AgentEvent, EventBatch, EventBatchReply } from '../../server/agent/api.ts';
import { AGENT_API_PREFIX } from '../../server/agent/api.ts';
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

export class EventReporter implements Reporter {
  private queue: AgentEvent[] = [];
  private sending: Promise<boolean> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  /** How many events at the head of the queue are in the request being sent. */
  private inflight = 0;
  /** The workflow state the server answered last. */
  serverState: string | null = null;

  constructor(private o: {
    /** The bearer token, or how to get the current one (the session token once hello exchanged the boot token). */
    server: string; workflowId: string; token: string | (() => string); console: Console;
    post?: PostJson; batchDelayMs?: number; timeoutMs?: number; maxBackoffMs?: number;
  }) {}

  send(e: AgentEvent): void {
    // Collapse into the last queued progress event, unless that one is part of the batch on the wire.
    const last = this.queue.length > this.inflight ? this.queue[this.queue.length - 1] : undefined;
    if (last && isProgressOnly(e) && isProgressOnly(last)) this.queue[this.queue.length - 1] = e;
    else this.queue.push(e);
    this.schedule(this.o.batchDelayMs ?? 200);
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush().then((ok) => {
        if (!ok && this.queue.length) this.schedule(this.backoff());
      });
    }, ms);
  }

  private backoff(): number {
    return Math.min(this.o.maxBackoffMs ?? 10_000, 250 * 2 ** Math.min(this.failures, 10));
  }

  /** Sends what is queued (one request at a time). Resolves true when the queue was empty or is now sent. */
  flush(): Promise<boolean> {
    if (this.sending) return this.sending.then(() => this.flush());
    if (!this.queue.length) return Promise.resolve(true);
    const batch = this.queue.slice(0, 1000);
    this.inflight = batch.length;
    this.sending = this.post(batch).then((ok) => {
      if (ok) { this.queue.splice(0, batch.length); this.failures = 0; } else this.failures++;
      return ok;
    }).finally(() => { this.sending = null; this.inflight = 0; });
    return this.sending;
  }

  private async post(events: AgentEvent[]): Promise<boolean> {
    const body: EventBatch = { workflowId: this.o.workflowId, events };
    try {
      const token = typeof this.o.token === 'function' ? this.o.token() : this.o.token;
      const r = await (this.o.post ?? postJson)(`${this.o.server}${AGENT_API_PREFIX}/events`, token, body, this.o.timeoutMs ?? 10_000);
      if (r.status >= 200 && r.status < 300) {
        try { this.serverState = (JSON.parse(r.body) as EventBatchReply).state ?? null; } catch { /* no body */ }
        return true;
      }
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        // The server refuses these events (bad token, workflow finished, …): retrying cannot help.
        this.o.console.warn(`server refused ${events.length} event(s): HTTP ${r.status} ${r.body.slice(0, 300)}`);
        return true;
      }
      this.o.console.warn(`events not delivered: HTTP ${r.status}; will retry`);
      return false;
    } catch (e) {
      if (this.failures === 0 || this.failures % 10 === 0) this.o.console.warn(`events not delivered (${(e as Error).message}); will retry`);
      return false;
    }
  }

  async final(e: AgentEvent, opts: { maxAttempts?: number } = {}): Promise<boolean> {
    this.send(e);
    const max = opts.maxAttempts ?? Infinity;
    for (let attempt = 1; ; attempt++) {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; }
      if (await this.flush() && !this.queue.length) return true;
      if (attempt >= max) return false;
      await sleep(this.backoff());
    }
  }

  /** Events still waiting to be delivered. */
  get pending(): number { return this.queue.length; }
}
