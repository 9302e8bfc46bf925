/**
 * Short-lived tickets for the live event stream. EventSource cannot send an Authorization header, so the web
 * page asks for a ticket (POST /api/v1/events/ticket, with the admin token) and opens
 * /api/v1/events/stream?ticket=… : the admin token itself never appears in a URL, and a ticket that lands in
 * a proxy log is useless a minute later. A ticket opens streams only, and only until it expires.
 */
import { randomBytes } from 'node:crypto';

export const STREAM_TICKET_TTL_MS = 60_000;
const MAX_TICKETS = 10_000;

export class StreamTickets {
  private tickets = new Map<string, number>();

  constructor(private ttlMs = STREAM_TICKET_TTL_MS, private now: () => number = Date.now) {}

  issue(): { ticket: string; expiresAt: string } {
    this.prune();
    if (this.tickets.size >= MAX_TICKETS) this.tickets.delete(this.tickets.keys().next().value!);
    const ticket = randomBytes(24).toString('base64url');
    const expires = this.now() + this.ttlMs;
    this.tickets.set(ticket, expires);
    return { ticket, expiresAt: new Date(expires).toISOString() };
  }

  valid(ticket: string | undefined): boolean {
    if (!ticket) return false;
    const exp = this.tickets.get(ticket);
    if (exp === undefined) return false;
    if (exp <= this.now()) { this.tickets.delete(ticket); return false; }
    return true;
  }

  private prune(): void {
    const t = this.now();
    for (const [k, exp] of this.tickets) if (exp <= t) this.tickets.delete(k);
  }
}
