/**
 * One read transfer's state machine (pure: no sockets, no clocks, no file access).
 *
 * Events in: start(), ack(wire block), timeout(), peerError(). Actions out: send the OACK, send DATA blocks
 * `first..last` (absolute block numbers: 1, 2, … past 65535; the wire carries them modulo 65536, so the
 * block after 65535 is 0 as tftp-hpa and curl expect), send an ERROR, finish. The socket layer turns
 * blocks into bytes and restarts its retransmission timer whenever actions contain a send.
 *
 * Options: RFC 2347 negotiation, 2348 blksize, 2349 tsize and timeout, 7440 windowsize (negotiateOptions).
 *
 * Retransmission: only a timeout resends what is outstanding, and only `maxRetries` times in a row.
 * An ACK that does not move the window forward never causes a send (no Sorcerer's Apprentice), with one
 * bounded exception for windows (RFC 7440 §4): after an ACK for a block inside the window (the client saw a
 * gap) the next repeat of that same ACK resends the window's missing tail once.
 */

/** RFC 2348: blksize is 8..65464. */
export const MAX_BLKSIZE = 65464;
export const MIN_BLKSIZE = 8;
export const DEFAULT_BLKSIZE = 512;
export const DEFAULT_MAX_WINDOW_BYTES = 65536;
/**
 * Largest retransmission timeout a client may ask for (RFC 2349 allows 1..255 s). Six tries of 255 s would hold a
 * slot for 25 minutes per request; a larger request is left out of the OACK, so the client falls back to its
 * default and the server to its own (RFC 2349: the server may decline the option).
 */
export const MAX_TIMEOUT_SECONDS = 5;
/** Retries while the client has not answered anything yet (a spoofed request never will): 3 sends, then the end. */
export const DEFAULT_MAX_UNANSWERED_RETRIES = 2;

export interface NegotiationLimits {
  /** Largest block that fits the path MTU (MTU − 32 bytes of IP + UDP + TFTP headers). */
  maxBlksize: number;
  /** Largest window this server grants (RFC 7440 allows up to 65535). */
  maxWindowsize: number;
  /**
   * Largest window in bytes (at least one block): a window of big blocks overflows the client's socket
   * buffer (16 × 64 KiB does with Linux defaults) and every window then waits for a timeout.
   */
  maxWindowBytes?: number;
  /** Retransmission timeout when the client does not ask for one. */
  defaultTimeoutMs: number;
  /** Largest timeout option accepted, in seconds (default MAX_TIMEOUT_SECONDS). */
  maxTimeoutSeconds?: number;
}

export interface NegotiatedOptions {
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /** Options acknowledged in the OACK, in the client's order; null when there is nothing to acknowledge. */
  oack: Record<string, string> | null;
}

const integer = (v: string | undefined): number | null => (v !== undefined && /^\d{1,10}$/.test(v.trim()) ? Number(v.trim()) : null);

/**
 * Which of the requested options the server accepts, and with which values. Unknown or invalid options are
 * left out of the OACK (RFC 2347), never an error.
 */
export function negotiateOptions(requested: Record<string, string>, size: number, limits: NegotiationLimits): NegotiatedOptions {
  const oack: Record<string, string> = {};
  let blksize = DEFAULT_BLKSIZE;
  let windowsize = 1;
  let timeoutMs = limits.defaultTimeoutMs;
  for (const [name, value] of Object.entries(requested)) {
    const n = integer(value);
    switch (name) {
      case 'blksize':
        if (n !== null && n >= MIN_BLKSIZE) {
          blksize = Math.min(n, MAX_BLKSIZE, Math.max(MIN_BLKSIZE, limits.maxBlksize));
          oack.blksize = String(blksize);
        }
        break;
      case 'tsize':
        if (n !== null) oack.tsize = String(size);
        break;
      case 'timeout':
        if (n !== null && n >= 1 && n <= Math.min(255, limits.maxTimeoutSeconds ?? MAX_TIMEOUT_SECONDS)) {
          timeoutMs = n * 1000;
          oack.timeout = String(n);
        }
        break;
      case 'windowsize':
        if (n !== null && n >= 1 && n <= 65535) {
          windowsize = Math.min(n, Math.max(1, limits.maxWindowsize));
          oack.windowsize = ''; // filled in below, once the block size is known
        }
        break;
      default:
        break;
    }
  }
  if ('windowsize' in oack) {
    windowsize = Math.max(1, Math.min(windowsize, Math.floor((limits.maxWindowBytes ?? DEFAULT_MAX_WINDOW_BYTES) / blksize)));
    oack.windowsize = String(windowsize);
  }
  return { blksize, windowsize, timeoutMs, oack: Object.keys(oack).length > 0 ? oack : null };
}

/**
 * `unconfirmed`: every block went out but the final ACK never came back. RFC 1350's lost last ACK: the
 * client most likely has the whole file (it does not retransmit its last ACK), so this is not a timeout.
 */
export type TransferOutcome = 'complete' | 'unconfirmed' | 'aborted' | 'timeout' | 'failed';

export type SessionAction =
  | { type: 'send-oack'; options: Record<string, string> }
  | { type: 'send-data'; first: number; last: number }
  | { type: 'send-error'; code: number; message: string }
  | { type: 'finish'; outcome: TransferOutcome; reason: string };

export interface SessionParams {
  /** Bytes to send (after netascii conversion). */
  size: number;
  blksize: number;
  windowsize: number;
  oack: Record<string, string> | null;
  /** Timeouts in a row before giving up. */
  maxRetries: number;
  /** Timeouts in a row before giving up while the client has not answered anything (default 2). */
  maxUnansweredRetries?: number;
}

export class TransferSession {
  readonly totalBlocks: number;
  /** Highest absolute block acknowledged (0: none; with an OACK, ACK 0 acknowledges the OACK). */
  acked = 0;
  /** Highest absolute block sent. */
  sent = 0;
  /** Timeouts in a row without progress. */
  retries = 0;
  /** Total blocks sent again (after a timeout or a gap). */
  retransmitted = 0;
  done = false;
  /** The client answered something (an ACK or an ERROR): it is not a spoofed or vanished requester. */
  answered = false;
  /**
   * The requester sent its request again while we waited for its first answer: it is there but slow, or our OACK
   * or first block was lost. It then gets every retry a client that answered gets (maxRetries), not the few a
   * requester that was never heard from again gets.
   */
  requestRepeated = false;
  private oackPending: boolean;
  /** An ACK inside the window left blocks acked+1..sent possibly lost; its repeat resends them once. */
  private gapAt = -1;

  constructor(readonly params: SessionParams) {
    this.totalBlocks = Math.floor(params.size / params.blksize) + 1;
    this.oackPending = params.oack !== null;
  }

  start(): SessionAction[] {
    if (this.params.oack) return [{ type: 'send-oack', options: this.params.oack }];
    return this.sendNew();
  }

  /** Block number on the wire (16 bits) → absolute block number at or below `sent`. */
  absoluteBlock(wire: number): number {
    return this.sent - (((this.sent & 0xffff) - wire) & 0xffff);
  }

  ack(wire: number): SessionAction[] {
    if (this.done) return [];
    this.answered = true;
    if (this.oackPending) {
      if (wire !== 0) return []; // not an answer to the OACK: ignore, the timer resends it
      this.oackPending = false;
      this.retries = 0;
      return this.sendNew();
    }
    const block = this.absoluteBlock(wire);
    if (block <= this.acked) {
      // Duplicate or old ACK: never a send, except the one-time repair of a gap the client reported.
      if (block === this.acked && this.gapAt === block && this.sent > block) {
        this.gapAt = -1;
        this.retransmitted += this.sent - block;
        return [{ type: 'send-data', first: block + 1, last: this.sent }];
      }
      return [];
    }
    this.acked = block;
    this.retries = 0;
    if (block === this.totalBlocks) return this.finish('complete', 'all blocks acknowledged');
    this.gapAt = block < this.sent ? block : -1;
    return this.sendNew();
  }

  timeout(): SessionAction[] {
    if (this.done) return [];
    this.retries++;
    const limit = this.answered || this.requestRepeated ? this.params.maxRetries
      : Math.min(this.params.maxRetries, this.params.maxUnansweredRetries ?? DEFAULT_MAX_UNANSWERED_RETRIES);
    if (this.retries > limit) {
      const what = this.oackPending ? 'the OACK' : `block ${this.acked + 1}`;
      if (!this.oackPending && this.sent === this.totalBlocks) {
        return this.finish('unconfirmed', `every block sent, no ACK for block ${this.acked + 1}..${this.totalBlocks} after ${limit + 1} tries (the client's final ACK was lost, or it left)`);
      }
      // no ERROR to a requester that never answered: it may be a spoofed address, and silence reflects nothing
      if (!this.answered) return this.finish('timeout', `the client never answered (${what} sent ${limit + 1} times): a vanished or spoofed requester`);
      return [
        { type: 'send-error', code: 0, message: `timed out waiting for the ACK of ${what}` },
        ...this.finish('timeout', `no ACK for ${what} after ${this.params.maxRetries + 1} tries`),
      ];
    }
    if (this.oackPending) return [{ type: 'send-oack', options: this.params.oack! }];
    this.gapAt = -1;
    if (this.sent <= this.acked) return this.sendNew();
    this.retransmitted += this.sent - this.acked;
    return [{ type: 'send-data', first: this.acked + 1, last: this.sent }];
  }

  /** The client sent an ERROR (for example error 8 after a tsize-only OACK, as UEFI firmware does). */
  peerError(code: number, message: string): SessionAction[] {
    if (this.done) return [];
    this.answered = true;
    return this.finish('aborted', `client sent error ${code}: ${message}`);
  }

  /** A local failure (file read error): tell the client and stop. */
  fail(message: string): SessionAction[] {
    if (this.done) return [];
    return [{ type: 'send-error', code: 0, message }, ...this.finish('failed', message)];
  }

  /** The transfer ran past its time limit: tell the client and stop. */
  expire(limitMs: number): SessionAction[] {
    if (this.done) return [];
    const why = `transfer time limit (${limitMs} ms) reached at block ${this.acked} of ${this.totalBlocks}`;
    return [{ type: 'send-error', code: 0, message: why }, ...this.finish('timeout', why)];
  }

  /** Bytes of the file covered by acknowledged blocks. */
  get bytesAcked(): number {
    return Math.min(this.acked * this.params.blksize, this.params.size);
  }

  private sendNew(): SessionAction[] {
    const last = Math.min(this.acked + this.params.windowsize, this.totalBlocks);
    const first = this.sent + 1;
    if (first > last) return [];
    this.sent = last;
    return [{ type: 'send-data', first, last }];
  }

  private finish(outcome: TransferOutcome, reason: string): SessionAction[] {
    this.done = true;
    return [{ type: 'finish', outcome, reason }];
  }
}
