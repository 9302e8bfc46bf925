/**
 * The peer tracker: which agent fetches which chunk of a disk file from whom (pure decisions; the clock is given).
 *
 * Per file (named by its sha256) it keeps its holders: agents that serve chunks (workflow id, ADDRESS:PORT), the
 * chunks each has verified (`have`) and the ones it is fetching right now (`coming`, from the moment it asked for
 * their sources). A chunk's source is, in this order: a holder that has it, a holder that is fetching it (its peer
 * server answers once the chunk is verified, so a herd that starts at once forms a tree instead of N server
 * downloads), or null, the server. Rules:
 *
 *   - never the asker itself (by workflow and by address), never a holder reported bad for this file;
 *   - a holder serves at most `maxUploadsPerHolder` askers at once (an asker fetches its small window of chunks from
 *     it); an assignment ends when the asker reports the chunk held, reports the peer bad, leaves, or after
 *     `assignmentTtlMs`;
 *   - a holder still fetching a chunk is handed out only while the chain behind it is short (`maxChainDepth` hops
 *     to a holder that has it or to the server): each hop adds one chunk's store-and-forward time;
 *   - a chunk asked for again (the first source failed) goes only to holders that already have it: a source that
 *     is itself still fetching could be waiting on the asker, and the server is always there;
 *   - holders leave when their workflow ends (drop) or a peer got a chunk from them whose sha256 is wrong (banned for
 *     that file: proof of bad data); a holder reported for an error or for being late is only suspended for
 *     `suspendMs` (congestion is no proof, and banning every slow holder of an overloaded rack sends it all back
 *     to the server);
 *   - everything is bounded: files tracked, holders per file, chunks per query.
 */

export interface TrackerLimits {
  maxFiles: number;
  maxHoldersPerFile: number;
  maxUploadsPerHolder: number;
  /** An assignment (and a holder's `coming` claim) not settled within this long is forgotten. */
  assignmentTtlMs: number;
  /** Most chunks per assign() call. */
  maxQuery: number;
  /** Most peers banned per file (the oldest ban goes first). */
  maxBannedPerFile: number;
  /** How long a holder reported for an error or lateness is not handed out. */
  suspendMs: number;
  /** Most hops of holders that are still fetching a chunk, behind the one handed out (0: only holders that have it). */
  maxChainDepth: number;
}

export const DEFAULT_TRACKER_LIMITS: TrackerLimits = {
  maxFiles: 64, maxHoldersPerFile: 4096, maxUploadsPerHolder: 4, assignmentTtlMs: 30_000, maxQuery: 32, maxBannedPerFile: 1024, maxChainDepth: 3, suspendMs: 30_000,
};

export type Why = 'has-it' | 'fetching-it' | 'no-holder' | 'holders-busy' | 'retry-no-holder' | 'not-tracked';

export interface Decision { chunk: number; peer: string | null; holder: string | null; why: Why }

interface Holder {
  id: string;
  addr: string | null;
  have: Uint8Array;
  /** chunk → until (ms) and depth (hops of still-fetching holders before a source that has it): held soon. */
  coming: Map<number, { until: number; depth: number }>;
  /** asker → (chunk → until, ms): the assignments this holder is serving. */
  uploads: Map<string, Map<number, number>>;
  /** No assignment in `uploads` ends before this (ms): until then counting them needs no sweep. */
  uploadsSweepAt: number;
  /** chunk → holder id (or null: the server), what this agent was sent to, so a report can release it. */
  sources: Map<number, string | null>;
  seen: number;
  /** When this holder was last handed out (ties go to the longest idle one, so load spreads). */
  lastAssigned: number;
  /** Not handed out before this (ms): reported for an error or lateness. */
  suspendedUntil: number;
}

interface FileState {
  chunkCount: number;
  holders: Map<string, Holder>;
  banned: Set<string>;
  lastUsed: number;
}

export class PeerTracker {
  private files = new Map<string, FileState>();
  readonly limits: TrackerLimits;
  constructor(limits: Partial<TrackerLimits> = {}, private now: () => number = Date.now) {
    this.limits = { ...DEFAULT_TRACKER_LIMITS, ...limits };
  }

  /** Starts tracking a file (its chunk count from the manifest); the least recently used file goes past maxFiles. */
  track(file: string, chunkCount: number): void {
    const f = this.files.get(file);
    if (f) { f.lastUsed = this.now(); return; }
    if (this.files.size >= this.limits.maxFiles) {
      let oldest: string | null = null; let t = Infinity;
      for (const [k, v] of this.files) if (v.lastUsed < t) { t = v.lastUsed; oldest = k; }
      if (oldest) this.files.delete(oldest);
    }
    this.files.set(file, { chunkCount, holders: new Map(), banned: new Set(), lastUsed: this.now() });
  }

  isTracked(file: string): boolean { return this.files.has(file); }

  /** The agent `id` (at `addr`, or null when it serves nobody), creating it while the file has room. */
  private holder(f: FileState, id: string, addr: string | null): Holder | null {
    let h = f.holders.get(id);
    if (h) {
      if (addr && !h.addr && !f.banned.has(addr)) h.addr = addr;
      h.seen = this.now();
      return h;
    }
    if (f.holders.size >= this.limits.maxHoldersPerFile) return null;
    h = { id, addr: addr && !f.banned.has(addr) ? addr : null, have: new Uint8Array(f.chunkCount), coming: new Map(), uploads: new Map(), uploadsSweepAt: Infinity, sources: new Map(), seen: this.now(), lastAssigned: 0, suspendedUntil: 0 };
    f.holders.set(id, h);
    return h;
  }

  /**
   * The askers this holder serves now (expired assignments forgotten). Asked for every candidate holder of every
   * chunk of every query (500 holders × 8 chunks a query in a rack), so the sweep runs only once an assignment
   * can have expired.
   */
  private liveUploads(h: Holder, t: number): number {
    if (t < h.uploadsSweepAt) return h.uploads.size;
    let next = Infinity;
    for (const [asker, chunks] of h.uploads) {
      for (const [c, until] of chunks) if (until <= t) chunks.delete(c); else if (until < next) next = until;
      if (!chunks.size) h.uploads.delete(asker);
    }
    h.uploadsSweepAt = next;
    return h.uploads.size;
  }

  private release(f: FileState, asker: Holder, chunk: number): void {
    const src = asker.sources.get(chunk);
    asker.sources.delete(chunk);
    const ups = src ? f.holders.get(src)?.uploads : undefined;
    const mine = ups?.get(asker.id);
    if (mine) { mine.delete(chunk); if (!mine.size) ups!.delete(asker.id); }
  }

  /**
   * Sources for chunks [from, from+count) of `file` for agent `asker` (serving at `askerAddr`, or null). Each
   * decision is final until the asker reports: it may be logged as it is.
   */
  assign(file: string, asker: string, askerAddr: string | null, from: number, count: number): Decision[] {
    const f = this.files.get(file);
    const t = this.now();
    const n = Math.max(0, Math.min(count, this.limits.maxQuery));
    if (!f) return Array.from({ length: n }, (_, i) => ({ chunk: from + i, peer: null, holder: null, why: 'not-tracked' as const }));
    f.lastUsed = t;
    const me = this.holder(f, asker, askerAddr);
    const out: Decision[] = [];
    for (let chunk = from; chunk < Math.min(from + n, f.chunkCount); chunk++) {
      const retry = !!me && (me.sources.has(chunk) || me.coming.has(chunk));
      if (me) this.release(f, me, chunk);
      let best: Holder | null = null; let bestRank = Infinity; let bestIdle = Infinity; let busy = false;
      for (const h of f.holders.values()) {
        if (h === me || !h.addr || h.addr === askerAddr || f.banned.has(h.addr) || h.suspendedUntil > t) continue;
        const has = h.have[chunk] === 1;
        const c = h.coming.get(chunk);
        const fetching = !has && c !== undefined && c.until > t && c.depth < this.limits.maxChainDepth;
        if (!has && !fetching) continue;
        if (retry && !has) continue;
        const load = this.liveUploads(h, t);
        const already = h.uploads.has(asker);
        if (load >= this.limits.maxUploadsPerHolder && !already) { busy = true; continue; }
        // a holder that has the chunk beats one still fetching it; then one already serving this asker (no new
        // upload slot), then the least loaded, then the longest idle
        const rank = (has ? 0 : 1000 * (1 + c!.depth)) + (already ? 0 : 100) + load;
        if (rank < bestRank || (rank === bestRank && h.lastAssigned < bestIdle)) { best = h; bestRank = rank; bestIdle = h.lastAssigned; }
      }
      if (best) {
        const ups = best.uploads.get(asker) ?? new Map<number, number>();
        ups.set(chunk, t + this.limits.assignmentTtlMs);
        best.uploads.set(asker, ups);
        best.uploadsSweepAt = Math.min(best.uploadsSweepAt, t + this.limits.assignmentTtlMs);
        best.lastAssigned = t;
        if (me) me.sources.set(chunk, best.id);
        out.push({ chunk, peer: best.addr, holder: best.id, why: best.have[chunk] === 1 ? 'has-it' : 'fetching-it' });
      } else {
        if (me) me.sources.set(chunk, null);
        out.push({ chunk, peer: null, holder: null, why: retry ? 'retry-no-holder' : busy ? 'holders-busy' : 'no-holder' });
      }
      if (me?.addr && me.have[chunk] !== 1) {
        const depth = best && best.have[chunk] !== 1 ? best.coming.get(chunk)!.depth + 1 : 0;
        me.coming.set(chunk, { until: t + this.limits.assignmentTtlMs, depth });
      }
    }
    return out;
  }

  /** The agent verified these chunks: it holds them (when it serves) and its assignments for them end. */
  report(file: string, id: string, addr: string | null, have: number[]): number {
    const f = this.files.get(file);
    if (!f) return 0;
    const h = this.holder(f, id, addr);
    if (!h) return 0;
    let n = 0;
    for (const c of have) {
      if (!Number.isInteger(c) || c < 0 || c >= f.chunkCount) continue;
      this.release(f, h, c);
      h.coming.delete(c);
      if (h.addr) h.have[c] = 1;
      n++;
    }
    return n;
  }

  /**
   * `reporter` got a chunk whose sha256 is wrong from the peer at `peerAddr` (reason hash: that peer is never handed
   * out for this file again and its assignments end), or an error or nothing in time (suspended for suspendMs).
   * Only a peer the reporter was actually sent to for that chunk can be reported, so an agent cannot knock out
   * holders it never dealt with. Returns what happened to the holder, or null when the report was ignored.
   */
  reportBad(file: string, reporter: string, peerAddr: string, chunk: number, reason: 'hash' | 'error' | 'slow' = 'hash'): { holder: string; action: 'banned' | 'suspended' } | null {
    const f = this.files.get(file);
    const me = f?.holders.get(reporter);
    if (!f || !me) return null;
    const src = me.sources.get(chunk);
    const h = src ? f.holders.get(src) : undefined;
    if (!h || h.addr !== peerAddr) return null;
    this.release(f, me, chunk);
    if (reason !== 'hash') {
      h.suspendedUntil = this.now() + this.limits.suspendMs;
      return { holder: h.id, action: 'suspended' };
    }
    if (f.banned.size >= this.limits.maxBannedPerFile) f.banned.delete(f.banned.values().next().value!);
    f.banned.add(peerAddr);
    this.removeHolder(f, h.id);
    return { holder: h.id, action: 'banned' };
  }

  private removeHolder(f: FileState, id: string): void {
    const h = f.holders.get(id);
    if (!h) return;
    for (const c of h.sources.keys()) this.release(f, h, c);
    f.holders.delete(id);
  }

  /** The agent's workflow ended: it serves nobody any more, and what it was sent to is released. */
  drop(id: string): number {
    let n = 0;
    for (const f of this.files.values()) if (f.holders.has(id)) { this.removeHolder(f, id); n++; }
    return n;
  }

  /** Numbers for /metrics and logs. */
  stats(): { files: number; holders: number; banned: number } {
    let holders = 0; let banned = 0;
    for (const f of this.files.values()) { holders += [...f.holders.values()].filter((h) => h.addr).length; banned += f.banned.size; }
    return { files: this.files.size, holders, banned };
  }
}
