/**
 * Workflow events of every daemon on one PostgreSQL, for the live stream (README "Several daemons").
 *
 * A daemon that appends an event also runs `pg_notify('ironboot_events', …)` in the same transaction (announce(),
 * called by WorkflowService): PostgreSQL delivers a notification on commit only, so a refused batch announces
 * nothing. Every daemon LISTENs on a connection of its own (async `pg`, apart from the store's worker), skips its
 * own announcements (its daemon id is in the payload), and emits the others' events on WorkflowService.events as
 * 'remote', in the order they were committed. The payload holds the whole event when it fits (PostgreSQL's limit
 * is 8000 bytes), else only its id, and the listener reads the event on its own connection.
 *
 * Own events go out as 'event' (what this daemon did: the power service acts on those); others' as 'remote' (views
 * such as the event stream show both, nothing acts twice). When the LISTEN connection breaks it is opened again
 * (backoff up to 5 s) and the events committed meanwhile are read from the table: every id above the highest seen,
 * less CATCH_UP_BACK ids for transactions that took their id before and committed after it; ids already emitted are
 * skipped. SQLite has one daemon per file for the stream: nothing of this runs there.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Store } from '../store/index.ts';
import type { WorkflowEvent, EventKind } from '../store/events.ts';
import type { WorkflowService } from './service.ts';

export const FLEET_CHANNEL = 'ironboot_events';
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; larger events travel by id. */
export const NOTIFY_MAX_BYTES = 7999;
/** Ids below the highest seen that a catch-up reads again (ids taken by transactions still open at the time). */
export const CATCH_UP_BACK = 200;
/** Event ids remembered as emitted, for catch-ups (the newest this many). */
const SEEN_MAX = 20_000;

/** What travels on the channel: the daemon that committed it, and the event or its id. */
type Announcement = { d: string; e: WorkflowEvent } | { d: string; id: number };

interface EventRow {
  id: number | string; workflow_id: string; seq: number | string; at: string | Date; kind: string; state: string | null;
  message: string | null; bytes_done: number | string | null; bytes_total: number | string | null; payload: string | Record<string, unknown>;
}

const num = (v: number | string | null): number | null => (v === null ? null : Number(v));
function eventFromRow(r: EventRow): WorkflowEvent {
  return {
    id: Number(r.id), workflowId: r.workflow_id, seq: Number(r.seq), at: r.at instanceof Date ? r.at.toISOString() : r.at,
    kind: r.kind as EventKind, state: r.state, message: r.message, bytesDone: num(r.bytes_done), bytesTotal: num(r.bytes_total),
    payload: typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload,
  };
}

/** The payload announcing one event (the event itself when it fits). */
export function announcement(daemon: string, ev: WorkflowEvent): string {
  const whole = JSON.stringify({ d: daemon, e: ev } satisfies Announcement);
  return Buffer.byteLength(whole) <= NOTIFY_MAX_BYTES ? whole : JSON.stringify({ d: daemon, id: ev.id } satisfies Announcement);
}

export interface FleetEventsOptions {
  /** The store's PostgreSQL URL (the listener opens its own connection with it). */
  url: string;
  store: Store;
  workflows: WorkflowService;
  log: Logger;
  /** Reconnect delays grow from this to 5 s (ms). */
  retryMs?: number;
}

export class FleetEvents {
  /** This daemon's mark on its announcements. */
  readonly daemon = randomUUID();
  private client: pg.Client | null = null;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  private retryMs: number;
  /** Highest event id emitted (own or others'), and the recently emitted ids. */
  private highest = 0;
  private readonly seen = new Set<number>();
  /** Announcements are handled one after the other (one may need a read), so their order holds. */
  private chain: Promise<void> = Promise.resolve();
  /** Connections opened (for tests: a reconnect shows here). */
  connects = 0;
  private readonly onLocal = (ev: WorkflowEvent) => this.mark(ev.id);

  constructor(private opts: FleetEventsOptions) {
    this.retryMs = opts.retryMs ?? 200;
  }

  /**
   * Inside the transaction that appended `ev`: queues its notification, sent by PostgreSQL on commit. Throws (and
   * so refuses the change) if the store cannot queue it.
   */
  announce(ev: WorkflowEvent): void {
    this.opts.store.db.prepare('SELECT pg_notify(?, ?) AS n').get(FLEET_CHANNEL, announcement(this.daemon, ev));
  }

  /** Opens the LISTEN connection; resolves once it listens (then announcements of others are emitted). */
  async start(): Promise<void> {
    this.opts.workflows.events.on('event', this.onLocal);
    await this.connect(false);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.workflows.events.off('event', this.onLocal);
    if (this.retry) clearTimeout(this.retry);
    const c = this.client;
    this.client = null;
    if (c) await c.end().catch(() => {});
    await this.chain;
  }

  /** Breaks the LISTEN connection as a network failure would (for tests: the listener must come back and catch up). */
  async dropConnection(): Promise<void> {
    const c = this.client;
    if (!c) return;
    const pid = (c as unknown as { processID?: number }).processID;
    const admin = new pg.Client({ connectionString: this.opts.url });
    await admin.connect();
    try { await admin.query('SELECT pg_terminate_backend($1)', [pid]); } finally { await admin.end(); }
  }

  private mark(id: number): void {
    if (id > this.highest) this.highest = id;
    this.seen.add(id);
    if (this.seen.size > SEEN_MAX) {
      const drop = this.seen.size - SEEN_MAX;
      let i = 0;
      for (const old of this.seen) { if (i++ >= drop) break; this.seen.delete(old); }
    }
  }

  private emit(ev: WorkflowEvent): void {
    if (this.seen.has(ev.id)) return;
    this.mark(ev.id);
    this.opts.workflows.events.emit('remote', ev);
  }

  private async connect(catchUp: boolean): Promise<void> {
    const client = new pg.Client({ connectionString: this.opts.url, application_name: `ironboot-listen-${this.daemon.slice(0, 8)}` });
    client.on('notification', (n) => {
      if (n.channel !== FLEET_CHANNEL || !n.payload) return;
      const payload = n.payload;
      this.chain = this.chain.then(() => this.onAnnouncement(client, payload)).catch((err) => this.opts.log.warn({ err }, 'fleet events: an announcement could not be read'));
    });
    const broken = (err?: Error) => {
      if (this.client !== client) return;
      this.client = null;
      client.end().catch(() => {});
      if (this.stopped) return;
      this.opts.log.warn({ err: err?.message }, `fleet events: the LISTEN connection broke; opening it again in ${this.retryMs} ms`);
      this.scheduleReconnect();
    };
    client.on('error', broken);
    client.on('end', () => broken());
    try {
      await client.connect();
      await client.query(`LISTEN ${FLEET_CHANNEL}`);
    } catch (err) {
      client.end().catch(() => {});
      if (!catchUp) throw err;
      this.opts.log.warn({ err: (err as Error).message }, 'fleet events: cannot LISTEN yet');
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) { await client.end().catch(() => {}); return; }
    this.client = client;
    this.connects++;
    this.retryMs = this.opts.retryMs ?? 200;
    if (!catchUp) {
      this.highest = Math.max(this.highest, await this.maxId(client));
      this.opts.log.info({ daemon: this.daemon, channel: FLEET_CHANNEL }, 'fleet events: listening for the events of other daemons');
      return;
    }
    // what was committed while nobody listened, in the order the announcements would have come
    this.chain = this.chain.then(async () => {
      const from = Math.max(0, this.highest - CATCH_UP_BACK);
      const { rows } = await client.query<EventRow>('SELECT * FROM events WHERE id > $1 ORDER BY id', [from]);
      let n = 0;
      for (const r of rows) { const ev = eventFromRow(r); if (!this.seen.has(ev.id)) { this.emit(ev); n++; } }
      this.opts.log.info({ caughtUp: n, from }, 'fleet events: listening again');
    }).catch((err) => this.opts.log.warn({ err }, 'fleet events: catch-up failed'));
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retry) return;
    const wait = this.retryMs;
    this.retryMs = Math.min(5000, this.retryMs * 2);
    this.retry = setTimeout(() => { this.retry = null; void this.connect(true); }, wait);
    this.retry.unref();
  }

  private async maxId(client: pg.Client): Promise<number> {
    const { rows } = await client.query<{ m: string | number | null }>('SELECT MAX(id) AS m FROM events');
    return Number(rows[0]?.m ?? 0);
  }

  private async onAnnouncement(client: pg.Client, payload: string): Promise<void> {
    const a = JSON.parse(payload) as Announcement;
    if (a.d === this.daemon) return;
    if ('e' in a) { this.emit(a.e); return; }
    if (this.seen.has(a.id)) return;
    const { rows } = await client.query<EventRow>('SELECT * FROM events WHERE id = $1', [a.id]);
    if (rows[0]) this.emit(eventFromRow(rows[0]));
  }
}
