/**
 * Addresses for DHCP clients: reservations (machines.ipv4) and, in full mode, the dynamic pool, persisted in
 * dhcp_leases. The store is the authority: several daemons may serve one pool from one store (README "Several
 * daemons"). Every offer and bind is a conditional claim on the address's row (LeaseRepository.commit), written
 * before the reply leaves; a claim another daemon won is reported (Claim.lost) and the reply is decided again
 * (server/dhcp/batch.ts: the ACK becomes a NAK, the OFFER another address). Binds, releases and declines are
 * durable (synchronous=FULL: an ACKed lease survives a power loss).
 *
 * The pool is mirrored in memory so that choosing an address is cheap; before a choice the mirror takes in the rows
 * other daemons changed (by updated_at, own rows skipped by writer), so offers avoid addresses held elsewhere.
 *
 * Bounded state: per-MAC entries (byMac, offers, the DECLINE rate limit) are pruned once a minute; a pool with
 * no free address is not scanned again until an address can have become free (an expiry, a release, a machine
 * change); a MAC may DECLINE at most `maxDeclinesPerMac` addresses per quarantine period; the pool lease of a
 * machine deleted from the store is released (unless unknown MACs get pool leases too).
 */
import { randomUUID } from 'node:crypto';
import type { Machine } from '../store/machines.ts';
import type { Store } from '../store/index.ts';
import { LeaseRepository, type LeaseWrite, type PoolLease } from '../store/leases.ts';
import { ipToInt, intToIp, prefixToMask } from '../ipv4.ts';
import type { AddressBinding, LeaseAction } from './decide.ts';
import type { DhcpMode } from '../config.ts';

/** Where a request came from: the serving interface's addresses, or the relay's giaddr. */
export interface Link {
  /** Addresses (with prefix) of the serving interface; empty is allowed (no direct subnet). */
  interfaceAddresses: { address: string; prefix: number }[];
  /** giaddr of a relayed request, else null. */
  relay: string | null;
}

export interface LeasePolicy {
  mode: DhcpMode;
  pool: { start: string; end: string } | null;
  /** Prefix of the pool's subnet. */
  poolPrefix: number;
  poolUnknown: boolean;
  leaseSeconds: number;
  router: string | null;
  dns: string[];
  /** Addresses never handed out from the pool (the server's own, for example). */
  exclude?: string[];
  /** How long an OFFER holds a pool address (ms). */
  offerHoldMs?: number;
  /** How long a DECLINEd address stays out of the pool (ms). */
  declineQuarantineMs?: number;
  /** DECLINEs honoured per MAC within one quarantine period (default 3); more are ignored. */
  maxDeclinesPerMac?: number;
}

export interface Resolution { binding: AddressBinding | null; why: string }

/** An offer or bind waiting for flush(); `lost` once flush() found the address held by someone else. */
export class Claim {
  lost = false;
  constructor(readonly address: string, readonly mac: string, readonly state: 'offered' | 'bound') {}
}

/**
 * How far back (ms) the mirror re-reads rows of other daemons behind the newest it has seen: a transaction that
 * stamped its rows earlier but committed later, and clocks of daemons that differ by up to this much.
 */
export const FOREIGN_ROW_WINDOW_MS = 5000;
/**
 * How often (ms) the mirror reads what other daemons changed: the read costs the rows of that window, and a pick
 * that misses a change only costs a lost claim (decided again), never a wrong reply.
 */
export const FOREIGN_SYNC_EVERY_MS = 100;

interface PoolEntry { mac: string | null; state: 'offered' | 'bound' | 'released' | 'declined'; expiresAt: number; hostname: string | null }

/** Longest common prefix of the pool's ends, at most /24 (a guess used when no interface holds the pool). */
export function guessPoolPrefix(start: string, end: string): number {
  const x = (ipToInt(start) ^ ipToInt(end)) >>> 0;
  const common = x === 0 ? 32 : Math.clz32(x);
  return Math.min(common, 24);
}

/**
 * store.machines.getByMac on the hot path: answers from memory while the database is unchanged. Checked per
 * packet: store.changeMarker() (SQLite: total_changes(), any write through this connection, ~0.1 µs, and
 * data_version, commits through other connections: the daemon's main thread, whose API writes machines while DHCP
 * runs on its own thread, or a CLI on the same file, ~4 µs; PostgreSQL: the machines change counter, one round
 * trip), so a machine added through the API is answered from its very next packet.
 */
export class MachineLookup {
  private readonly cache = new Map<string, Machine | null>();
  private readonly reservedCache = new Map<string, string | null>();
  private readonly reservedStmt;
  /** Increases whenever the cached machines were dropped (the store changed): a pool found full may not be now. */
  generation = 0;
  private changes = -1;
  private dataVersion = -1;
  constructor(private store: Store) {
    this.reservedStmt = store.db.prepare('SELECT mac FROM machines WHERE ipv4_address = ?').pluck();
  }

  /** Call right after a write of our own (lease rows): it does not invalidate the machine cache. */
  ownWrite(): void { this.changes = this.store.ownChanges(); }

  private refresh(): void {
    const { own: changes, others: v } = this.store.changeMarker();
    if (changes !== this.changes) { this.clear(); this.changes = changes; }
    if (v !== this.dataVersion) { this.clear(); this.dataVersion = v; }
  }

  private clear(): void { this.cache.clear(); this.reservedCache.clear(); this.generation++; }

  /** Checks the store for changes now (the cache is dropped if there were any). */
  check(): void { this.refresh(); }

  /** MAC of the machine that has this address reserved, or null. */
  reservedBy(address: string): string | null {
    this.refresh();
    let mac = this.reservedCache.get(address);
    if (mac === undefined) {
      mac = (this.reservedStmt.get(address) as string | undefined) ?? null;
      if (this.reservedCache.size > 200_000) this.reservedCache.clear();
      this.reservedCache.set(address, mac);
    }
    return mac;
  }

  byMac(mac: string): Machine | null {
    this.refresh();
    let m = this.cache.get(mac);
    if (m === undefined) {
      m = this.store.machines.getByMac(mac) ?? null;
      if (this.cache.size > 200_000) this.cache.clear();
      this.cache.set(mac, m);
    }
    return m;
  }
}

/** ipToInt, memoized (the same few addresses are parsed for every packet). */
const ipCache = new Map<string, number>();
function ipInt(ip: string): number {
  let n = ipCache.get(ip);
  if (n === undefined) {
    n = ipToInt(ip);
    if (ipCache.size > 100_000) ipCache.clear();
    ipCache.set(ip, n);
  }
  return n;
}
function onSubnet(a: string, b: string, prefix: number): boolean {
  const m = prefixToMask(prefix);
  return ((ipInt(a) & m) >>> 0) === ((ipInt(b) & m) >>> 0);
}

/** A DECLINE the rate limit refused (the lease layer's answer; the handler logs it). */
export class DeclineRefused extends Error {
  constructor(message: string) { super(message); this.name = 'DeclineRefused'; }
}

export class DhcpLeases {
  readonly repo: LeaseRepository;
  /** Machines by MAC, cached while the store is unchanged (shared with the request handler). */
  readonly machines: MachineLookup;
  private readonly start: number;
  private readonly end: number;
  private readonly entries = new Map<number, PoolEntry>();
  private readonly byMac = new Map<string, number>();
  private cursor: number;
  private readonly offerHoldMs: number;
  private readonly quarantineMs: number;
  private readonly excluded: Set<number>;
  /** Lease changes made in memory, not yet written (see flush), in order, and the claims among them. */
  private pending: LeaseWrite[] = [];
  private pendingClaims: (Claim | null)[] = [];
  /** Addresses with a pending change: the mirror is newer than the store there. */
  private readonly pendingAddresses = new Set<string>();
  /** This daemon's mark on the rows it writes (dhcp_leases.writer). */
  readonly writer: string;
  /** Newest updated_at seen on a row of another daemon, and when the mirror last looked. */
  private foreignSeen = 0;
  private foreignSyncAt = -Infinity;
  /** Claims other daemons won against this one (for tests and /metrics). */
  claimsLost = 0;
  private readonly maxDeclines: number;
  /** DECLINE times per MAC within the quarantine period (the rate limit). */
  private readonly declines = new Map<string, number[]>();
  /** After a scan found the pool full: until when that holds, and for which state of the pool and the store. */
  private fullUntil = 0;
  private fullAt = { pool: -1, machines: -1 };
  /** Increases when an address goes back to the pool (release, unoffer, moved lease, prune, orphan release). */
  private poolGeneration = 0;
  private lastPrune: number;
  private machinesSeen = -1;
  private lastOrphanCheck = -Infinity;
  private readonly orphansStmt;
  /** Addresses examined by pick() scans (for tests and the benchmark: a full pool must not cost a scan per request). */
  scanned = 0;

  constructor(private store: Store, private policy: LeasePolicy, private now: () => number = Date.now, writer: string = randomUUID()) {
    this.writer = writer;
    this.repo = store.leases;
    this.machines = new MachineLookup(store);
    this.start = policy.pool ? ipToInt(policy.pool.start) : 0;
    this.end = policy.pool ? ipToInt(policy.pool.end) : -1;
    if (policy.pool && this.end < this.start) throw new Error(`dhcp-pool: ${policy.pool.start} is after ${policy.pool.end}`);
    this.cursor = this.start;
    this.offerHoldMs = policy.offerHoldMs ?? 30_000;
    this.quarantineMs = policy.declineQuarantineMs ?? 600_000;
    this.excluded = new Set((policy.exclude ?? []).map(ipToInt));
    this.maxDeclines = policy.maxDeclinesPerMac ?? 3;
    this.lastPrune = now();
    this.orphansStmt = store.db.prepare(`SELECT address, mac FROM dhcp_leases WHERE state = 'bound' AND mac IS NOT NULL
      AND mac NOT IN (SELECT mac FROM machines)`);
    for (const l of this.repo.list()) {
      const n = ipToInt(l.address);
      if (l.writer !== this.writer) this.foreignSeen = Math.max(this.foreignSeen, l.updatedAt);
      this.entries.set(n, { mac: l.mac, state: l.state, expiresAt: l.expiresAt, hostname: l.hostname });
      if (l.mac && l.state !== 'declined') {
        const prev = this.byMac.get(l.mac);
        if (prev === undefined || this.entries.get(prev)!.state !== 'bound') this.byMac.set(l.mac, n);
      }
    }
  }

  /** Persisted pool leases (for the API / tests). */
  list(): PoolLease[] { this.flush(); return this.repo.list(); }

  /** Whether lease changes wait for flush(). */
  get dirty(): boolean { return this.pending.length > 0; }

  private queue(w: LeaseWrite, claim: Claim | null = null): void {
    this.pending.push(w);
    this.pendingClaims.push(claim);
    this.pendingAddresses.add(w.kind === 'claim' ? w.lease.address : w.address);
  }

  /**
   * Writes the pending lease changes in one transaction (group commit), each conditional on the row (see
   * LeaseWrite). The server calls it before sending the replies of a batch, so no reply leaves before its claim
   * is in the store. Returns the claims that lost (another daemon holds the address; the mirror now knows who).
   * Throws if the store cannot be written (then nothing of the batch was written, and its claims count as lost).
   */
  flush(): Claim[] {
    if (!this.pending.length) return [];
    const writes = this.pending;
    const claims = this.pendingClaims;
    this.pending = [];
    this.pendingClaims = [];
    this.pendingAddresses.clear();
    const durable = writes.some((w) => w.kind !== 'unoffer' && !(w.kind === 'claim' && w.lease.state === 'offered'));
    let took: boolean[];
    try {
      took = this.repo.commit(writes, this.writer, durable);
    } catch (err) {
      for (const c of claims) if (c) c.lost = true;
      try { this.resync(writes); } catch { /* the store is unreadable too: the mirror is corrected at the next flush */ }
      throw err;
    }
    this.machines.ownWrite();
    const lost: Claim[] = [];
    const refused: LeaseWrite[] = [];
    for (let i = 0; i < writes.length; i++) {
      if (took[i]) continue;
      refused.push(writes[i]);
      const c = claims[i];
      if (c) { c.lost = true; lost.push(c); }
    }
    this.claimsLost += lost.length;
    if (refused.length) this.resync(refused);
    if (lost.length) this.foreignSyncAt = -Infinity; // the requests decided again see all the others did
    return lost;
  }

  /** The mirror takes the stored rows of these addresses (after changes the store refused, or could not write). */
  private resync(writes: LeaseWrite[]): void {
    for (const w of writes) {
      const address = w.kind === 'claim' ? w.lease.address : w.address;
      const row = this.repo.get(address);
      if (row) this.absorb(row);
      else { this.entries.delete(ipInt(address)); this.poolGeneration++; }
    }
  }

  /** A row as stored by whoever wrote it last, into the mirror. */
  private absorb(row: PoolLease): void {
    const n = ipInt(row.address);
    if (!this.inPool(n)) return;
    const cur = this.entries.get(n);
    if (cur && cur.mac === row.mac && cur.state === row.state && cur.expiresAt === row.expiresAt) return;
    if (cur?.mac && cur.mac !== row.mac && this.byMac.get(cur.mac) === n) this.byMac.delete(cur.mac);
    this.entries.set(n, { mac: row.mac, state: row.state, expiresAt: row.expiresAt, hostname: row.hostname });
    if (row.mac && (row.state === 'bound' || row.state === 'offered') && row.expiresAt > this.now()) this.byMac.set(row.mac, n);
    this.poolGeneration++; // the full-pool shortcut is re-checked against what others did
  }

  /**
   * Takes in the rows other daemons changed since the newest one seen (less the window for late commits and
   * clocks), at most every FOREIGN_SYNC_EVERY_MS.
   */
  private syncForeign(): void {
    const t = this.now();
    if (t - this.foreignSyncAt < FOREIGN_SYNC_EVERY_MS && t >= this.foreignSyncAt) return;
    this.foreignSyncAt = t;
    for (const row of this.repo.changedSince(this.foreignSeen - FOREIGN_ROW_WINDOW_MS, this.writer)) {
      if (row.updatedAt > this.foreignSeen) this.foreignSeen = row.updatedAt;
      if (!this.pendingAddresses.has(row.address)) this.absorb(row);
    }
  }

  /**
   * Drops per-MAC state that no longer holds anything: expired offers, byMac entries pointing at an address now
   * someone else's, DECLINE times past the quarantine. Runs at most once a minute, from resolve().
   */
  prune(): void {
    const now = this.now();
    this.lastPrune = now;
    for (const [n, e] of this.entries) {
      if (e.state === 'offered' && e.expiresAt <= now) { this.entries.delete(n); this.poolGeneration++; }
    }
    for (const [mac, n] of this.byMac) {
      const e = this.entries.get(n);
      if (!e || e.mac !== mac || (e.state !== 'bound' && e.expiresAt <= now - this.quarantineMs)) this.byMac.delete(mac);
    }
    for (const [mac, times] of this.declines) {
      const live = times.filter((t) => t > now - this.quarantineMs);
      if (live.length) this.declines.set(mac, live); else this.declines.delete(mac);
    }
  }

  /** Sizes of the per-MAC state (for tests). */
  get stateSizes(): { entries: number; byMac: number; declines: number } {
    return { entries: this.entries.size, byMac: this.byMac.size, declines: this.declines.size };
  }

  /**
   * Pool leases of machines deleted from the store go back to the pool (when the pool serves registered machines
   * only: such a MAC gets no lease any more). Checked when the store changed.
   */
  private releaseOrphans(): void {
    this.machines.check();
    if (this.machines.generation === this.machinesSeen) return;
    const t = this.now();
    if (t - this.lastOrphanCheck < 1000) return; // the store changes with every agent event: at most once a second
    this.lastOrphanCheck = t;
    this.machinesSeen = this.machines.generation;
    if (this.policy.poolUnknown || this.policy.mode !== 'full') return;
    this.flush();
    const now = this.now();
    for (const { address, mac } of this.orphansStmt.all() as { address: string; mac: string }[]) {
      const n = ipInt(address);
      const e = this.entries.get(n);
      if (!e || e.mac !== mac || e.state !== 'bound') continue;
      this.entries.set(n, { ...e, state: 'released', expiresAt: now });
      if (this.byMac.get(mac) === n) this.byMac.delete(mac);
      this.queue({ kind: 'release', address, mac, at: now });
      this.poolGeneration++;
    }
    for (const [n, e] of this.entries) { // offers to a deleted machine
      if (e.state === 'offered' && e.mac && this.machines.byMac(e.mac) === null) { this.entries.delete(n); this.byMac.delete(e.mac); this.poolGeneration++; }
    }
    this.flush();
  }

  /**
   * The address this MAC may have on this link: its reservation if that lies on the link, else (full mode) its
   * pool lease, its previous pool address, the address it asks for if free, or the next free one.
   */
  resolve(mac: string, machine: Machine | null, link: Link, preferred: string | null = null): Resolution {
    if (this.policy.mode === 'full') {
      this.releaseOrphans();
      if (this.now() - this.lastPrune >= 60_000) this.prune();
    }
    const res = machine?.ipv4;
    if (res) {
      if (this.onLink(res.address, res.prefix, link)) {
        return {
          binding: {
            address: res.address, prefix: res.prefix, router: res.gateway ?? null, dns: res.dns ?? [],
            domain: res.domain ?? null, hostname: machine.hostname, leaseSeconds: res.leaseSeconds ?? this.policy.leaseSeconds,
            source: 'reservation',
          },
          why: 'reservation',
        };
      }
      if (this.policy.mode !== 'full') return { binding: null, why: `reservation ${res.address}/${res.prefix} is not on this link (${describeLink(link)})` };
    }
    if (this.policy.mode !== 'full') {
      return { binding: null, why: machine ? 'registered but no IPv4 reservation (reservation mode)' : 'unknown MAC (reservation mode)' };
    }
    if (!machine && !this.policy.poolUnknown) return { binding: null, why: 'unknown MAC and dhcp-pool-unknown is off' };
    if (!this.policy.pool) return { binding: null, why: 'no dhcp-pool configured' };
    if (!this.onLink(this.policy.pool.start, this.policy.poolPrefix, link)) {
      return { binding: null, why: `pool ${this.policy.pool.start}-${this.policy.pool.end} is not on this link (${describeLink(link)})` };
    }
    this.syncForeign();
    const address = this.pick(mac, preferred);
    if (address === null) return { binding: null, why: 'pool exhausted' };
    return {
      binding: {
        address: intToIp(address), prefix: this.policy.poolPrefix, router: this.policy.router, dns: this.policy.dns,
        domain: null, hostname: machine?.hostname ?? null, leaseSeconds: this.policy.leaseSeconds, source: 'pool',
      },
      why: 'pool',
    };
  }

  /**
   * Applies a decision's lease action (pool addresses only; reservations need no state) to the mirror and queues
   * its write. An offer or bind returns its Claim: the reply may leave only if the claim is not lost at flush().
   */
  apply(mac: string, action: LeaseAction, hostname: string | null = null): Claim | null {
    if (action.kind === 'none') return null;
    const n = ipInt(action.address);
    if (!this.inPool(n)) return null;
    const now = this.now();
    const cur = this.entries.get(n);
    switch (action.kind) {
      case 'offer': {
        if (cur?.state === 'bound' && cur.mac === mac && cur.expiresAt > now) return null; // keep the lease as is
        const expiresAt = now + this.offerHoldMs;
        this.entries.set(n, { mac, state: 'offered', expiresAt, hostname });
        this.byMac.set(mac, n);
        this.advance(n);
        const claim = new Claim(action.address, mac, 'offered');
        this.queue({ kind: 'claim', lease: { address: action.address, mac, state: 'offered', expiresAt, hostname, updatedAt: now } }, claim);
        return claim;
      }
      case 'unoffer':
        if (cur?.state === 'offered' && cur.mac === mac) {
          this.entries.delete(n);
          this.poolGeneration++;
          this.queue({ kind: 'unoffer', address: action.address, mac, at: now });
        }
        return null;
      case 'bind': {
        const prev = this.byMac.get(mac);
        if (prev !== undefined && prev !== n) {
          // the store gives the MAC's other addresses back when this claim wins (LeaseWrite 'claim')
          const old = this.entries.get(prev);
          if (old && old.mac === mac && (old.state === 'bound' || old.state === 'offered')) {
            this.poolGeneration++;
            this.entries.set(prev, { ...old, state: 'released', expiresAt: now });
          }
        }
        const expiresAt = now + action.leaseSeconds * 1000;
        this.entries.set(n, { mac, state: 'bound', expiresAt, hostname });
        this.byMac.set(mac, n);
        this.advance(n);
        const claim = new Claim(action.address, mac, 'bound');
        this.queue({ kind: 'claim', lease: { address: action.address, mac, state: 'bound', expiresAt, hostname, updatedAt: now } }, claim);
        return claim;
      }
      case 'release':
        if (!cur || cur.mac !== mac) return null;
        this.poolGeneration++;
        this.entries.set(n, { ...cur, state: 'released', expiresAt: now });
        this.queue({ kind: 'release', address: action.address, mac, at: now });
        return null;
      case 'decline': {
        if (cur && cur.mac !== mac && cur.state === 'bound' && cur.expiresAt > now) return null; // someone else's live lease
        // rate limit: a client declining address after address would take the pool out of service
        const recent = (this.declines.get(mac) ?? []).filter((t) => t > now - this.quarantineMs);
        if (recent.length >= this.maxDeclines) {
          this.declines.set(mac, recent);
          throw new DeclineRefused(`${mac} declined ${recent.length} addresses within ${this.quarantineMs / 1000} s already (limit ${this.maxDeclines}): ${action.address} is not quarantined`);
        }
        recent.push(now);
        this.declines.set(mac, recent);
        this.entries.set(n, { mac: null, state: 'declined', expiresAt: now + this.quarantineMs, hostname: null });
        if (this.byMac.get(mac) === n) this.byMac.delete(mac);
        this.queue({ kind: 'decline', address: action.address, mac, until: now + this.quarantineMs, at: now });
        return null;
      }
    }
  }

  /** Next fit continues after the last address handed out. */
  private advance(n: number): void { this.cursor = n + 1 > this.end ? this.start : n + 1; }

  private inPool(n: number): boolean { return n >= this.start && n <= this.end; }

  private onLink(address: string, prefix: number, link: Link): boolean {
    if (link.relay) return onSubnet(address, link.relay, prefix);
    return link.interfaceAddresses.some((a) => onSubnet(address, a.address, a.prefix));
  }

  /** Whether n can go to mac now. */
  private usableBy(n: number, mac: string, now: number): boolean {
    if (!this.inPool(n) || this.excluded.has(n)) return false;
    const e = this.entries.get(n);
    if (e && e.mac !== mac && e.expiresAt > now && e.state !== 'released') return false; // offered/bound/declined
    if (e && e.state === 'declined' && e.expiresAt > now) return false;
    const owner = this.machines.reservedBy(intToIp(n));
    return owner === null || owner === mac;
  }

  private pick(mac: string, preferred: string | null): number | null {
    const now = this.now();
    const mine = this.byMac.get(mac);
    if (mine !== undefined && this.usableBy(mine, mac, now)) return mine;
    if (preferred) {
      let p: number | null = null;
      try { p = ipToInt(preferred); } catch { /* not an address */ }
      if (p !== null && this.usableBy(p, mac, now)) {
        const e = this.entries.get(p);
        if (!e || e.mac === mac || e.expiresAt <= now || e.state === 'released') return p;
      }
    }
    // A pool found full stays full until an address can have become free: the earliest expiry among the
    // addresses that blocked, an address given back, or a change of the machines (reservations).
    if (now < this.fullUntil && this.fullAt.pool === this.poolGeneration && this.fullAt.machines === this.machines.generation) return null;
    // Next fit: first address never used or whose lease ran out, then previously released ones.
    const size = this.end - this.start + 1;
    let fallback: number | null = null;
    let nextFree = Infinity;
    for (let i = 0; i < size; i++) {
      const n = this.start + ((this.cursor - this.start + i) % size);
      this.scanned++;
      const e = this.entries.get(n);
      if (e && e.state === 'released' && e.mac !== mac) {
        if (fallback === null && this.usableBy(n, mac, now)) fallback = n;
        continue;
      }
      if (this.usableBy(n, mac, now)) return n;
      if (e && e.expiresAt > now && e.state !== 'released') nextFree = Math.min(nextFree, e.expiresAt);
    }
    if (fallback === null) {
      this.fullUntil = nextFree;
      this.fullAt = { pool: this.poolGeneration, machines: this.machines.generation };
    }
    return fallback;
  }
}

function describeLink(link: Link): string {
  if (link.relay) return `relay ${link.relay}`;
  return link.interfaceAddresses.map((a) => `${a.address}/${a.prefix}`).join(', ') || 'no IPv4 address';
}
