/**
 * A burst of DHCP requests and their replies (group commit): requests are handled as they arrive, the burst's
 * lease changes are written in one transaction by `commit()`, and only then do the replies leave. A reply whose
 * lease claim lost (another daemon on the same store took the address meanwhile) is never sent: its request is
 * decided again against the mirror, which now knows the holder, so an ACK becomes a NAK and an OFFER offers
 * another address; that new reply is committed in turn (at most `maxRounds` decisions per request; beyond, the
 * request goes unanswered and the client retries). Socket-free: server.ts feeds it and sends what settle() returns.
 */
import type { Outgoing, RequestHandler, RequestMeta } from './handle.ts';

interface Entry<T> { data: Buffer; meta: RequestMeta; out: Outgoing; tag: T; round: number }

export class ReplyBatch<T> {
  private queue: Entry<T>[] = [];

  constructor(private handler: RequestHandler, private commit: () => void, private maxRounds = 3) {}

  get size(): number { return this.queue.length; }

  /** Handles one request; its reply (if any) waits for settle(). Throws what the handler throws. */
  add(data: Buffer, meta: RequestMeta, tag: T): Outgoing | null {
    const out = this.handler(data, meta);
    if (out) this.queue.push({ data, meta, out, tag, round: 1 });
    return out;
  }

  /**
   * Commits the burst's lease changes and returns the replies that may leave. If a commit throws, the replies it
   * held do not leave (their clients retry) and `error` says why; replies committed before it still leave.
   */
  settle(): { replies: { out: Outgoing; tag: T }[]; error: unknown } {
    const replies: { out: Outgoing; tag: T }[] = [];
    let round = this.queue;
    this.queue = [];
    for (;;) {
      try {
        this.commit();
      } catch (error) {
        return { replies, error };
      }
      const again: Entry<T>[] = [];
      for (const e of round) {
        if (!e.out.claim?.lost) { replies.push({ out: e.out, tag: e.tag }); continue; }
        if (e.round >= this.maxRounds) continue;
        let out: Outgoing | null;
        try { out = this.handler(e.data, { ...e.meta, again: e.round }); } catch { continue; } // as a first decision that throws: unanswered
        if (out) again.push({ ...e, out, round: e.round + 1 });
      }
      if (!again.length) return { replies, error: null };
      round = again;
    }
  }
}
