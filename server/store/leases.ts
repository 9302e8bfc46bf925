import type { Db } from './db.ts';
import { sqliteOf, type SqliteDatabase } from './sql.ts';

/** offered: an OFFER's hold on the address (migrations/009_fleet.sql); an offered row past expires_at is free. */
export type LeaseState = 'offered' | 'bound' | 'released' | 'declined';

/** One DHCP pool address as persisted (full mode). Times are unix milliseconds. */
export interface PoolLease {
  address: string;
  mac: string | null;
  state: LeaseState;
  expiresAt: number;
  hostname: string | null;
  updatedAt: number;
  /** The daemon that wrote it last (DhcpLeases.writer), null for rows from before 009 or put() by hand. */
  writer?: string | null;
}

/**
 * A lease change that holds only if the row still allows it (several daemons share the table):
 * - claim: offered or bound for lease.mac; wins if the address has no row, or its row is this MAC's, released,
 *   or ran out. A won bind also gives back the MAC's other offered and bound addresses, a won offer its other offers.
 * - release / unoffer: only while the row is still this MAC's lease / this daemon's offer to it (a client that
 *   chose another daemon's OFFER of the same address keeps it).
 * - decline: quarantines the address unless someone else holds it (a live offer or lease of another MAC).
 */
export type LeaseWrite =
  | { kind: 'claim'; lease: PoolLease }
  | { kind: 'release'; address: string; mac: string; at: number }
  | { kind: 'unoffer'; address: string; mac: string; at: number }
  | { kind: 'decline'; address: string; mac: string; until: number; at: number };

interface Row { address: string; mac: string | null; state: LeaseState; expires_at: number; hostname: string | null; updated_at: number; writer: string | null }

const fromRow = (r: Row): PoolLease => ({
  address: r.address, mac: r.mac, state: r.state, expiresAt: Number(r.expires_at), hostname: r.hostname, updatedAt: Number(r.updated_at),
  writer: r.writer ?? null,
});

/**
 * The dhcp_leases table. Statements are prepared once (this is on the DHCP hot path: one write per ACK in
 * full mode). Lease commits (putDurably) run with synchronous=FULL: the WAL is synced before the commit returns,
 * so an ACKed lease survives a power loss (under WAL with NORMAL, as openDb sets for everything else, the last
 * commits before a power loss can be lost, and a client would then hold an address the pool hands out again).
 * On PostgreSQL a commit is durable when it returns as long as the server runs with synchronous_commit=on (its
 * default); there is nothing to switch per commit.
 */
export class LeaseRepository {
  private readonly upsertStmt;
  private readonly deleteStmt;
  private readonly allStmt;
  private readonly byMacStmt;
  private readonly byAddressStmt;
  private readonly syncLevel: number;
  private readonly sqlite: SqliteDatabase | null;
  private readonly claimStmt;
  private readonly giveBackStmt;
  private readonly releaseStmt;
  private readonly unofferStmt;
  private readonly declineStmt;
  private readonly changedStmt;

  constructor(private db: Db) {
    this.sqlite = sqliteOf(db);
    this.upsertStmt = db.prepare(`INSERT INTO dhcp_leases (address, mac, state, expires_at, hostname, updated_at, writer)
      VALUES (@address, @mac, @state, @expiresAt, @hostname, @updatedAt, @writer)
      ON CONFLICT(address) DO UPDATE SET mac=excluded.mac, state=excluded.state, expires_at=excluded.expires_at,
      hostname=excluded.hostname, updated_at=excluded.updated_at, writer=excluded.writer`);
    // Portable upsert (SQLite >= 3.24, PostgreSQL >= 9.5): the DO UPDATE's WHERE sees the row as committed by
    // whoever wrote it last (PostgreSQL locks the row and re-checks), so of two daemons claiming one address
    // exactly one changes the row. An offer never turns this MAC's live lease back into an offer.
    this.claimStmt = db.prepare(`INSERT INTO dhcp_leases (address, mac, state, expires_at, hostname, updated_at, writer)
      VALUES (@address, @mac, @state, @expiresAt, @hostname, @updatedAt, @writer)
      ON CONFLICT(address) DO UPDATE SET mac=excluded.mac, state=excluded.state, expires_at=excluded.expires_at,
      hostname=excluded.hostname, updated_at=excluded.updated_at, writer=excluded.writer
      WHERE (dhcp_leases.mac = excluded.mac OR dhcp_leases.state = 'released' OR dhcp_leases.expires_at <= excluded.updated_at)
        AND NOT (excluded.state = 'offered' AND dhcp_leases.state = 'bound' AND dhcp_leases.mac = excluded.mac
                 AND dhcp_leases.expires_at > excluded.updated_at)`);
    this.giveBackStmt = db.prepare(`UPDATE dhcp_leases SET state = 'released', expires_at = @at, updated_at = @at, writer = @writer
      WHERE mac = @mac AND address <> @address AND expires_at > @at
        AND (state = 'offered' OR (state = 'bound' AND @bound = 1))`);
    this.releaseStmt = db.prepare(`UPDATE dhcp_leases SET state = 'released', expires_at = @at, updated_at = @at, writer = @writer
      WHERE address = @address AND mac = @mac AND state IN ('bound', 'offered')`);
    this.unofferStmt = db.prepare(`UPDATE dhcp_leases SET expires_at = @at, updated_at = @at, writer = @writer
      WHERE address = @address AND mac = @mac AND state = 'offered' AND expires_at > @at AND writer = @writer`);
    this.declineStmt = db.prepare(`INSERT INTO dhcp_leases (address, mac, state, expires_at, hostname, updated_at, writer)
      VALUES (@address, NULL, 'declined', @until, NULL, @at, @writer)
      ON CONFLICT(address) DO UPDATE SET mac = NULL, state = 'declined', expires_at = excluded.expires_at, hostname = NULL,
      updated_at = excluded.updated_at, writer = excluded.writer
      WHERE dhcp_leases.mac IS NULL OR dhcp_leases.mac = @mac OR dhcp_leases.state NOT IN ('bound', 'offered')
        OR dhcp_leases.expires_at <= @at`);
    this.changedStmt = db.prepare('SELECT * FROM dhcp_leases WHERE updated_at > ? AND (writer IS NULL OR writer <> ?)');
    this.deleteStmt = db.prepare('DELETE FROM dhcp_leases WHERE address = ?');
    this.allStmt = db.prepare('SELECT * FROM dhcp_leases ORDER BY address');
    this.byMacStmt = db.prepare('SELECT * FROM dhcp_leases WHERE mac = ? ORDER BY updated_at DESC');
    this.byAddressStmt = db.prepare('SELECT * FROM dhcp_leases WHERE address = ?');
    this.syncLevel = this.sqlite ? Number(this.sqlite.pragma('synchronous', { simple: true })) : 2; // 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
  }

  /** Writes lease changes in one transaction that is on disk when this returns (synchronous=FULL for it). */
  putDurably(leases: PoolLease[]): void {
    if (!leases.length) return;
    const sqlite = this.sqlite;
    if (!sqlite) { if (leases.length === 1) this.put(leases[0]); else this.putMany(leases); return; }
    // db.pragma() each time, not a prepared statement: SQLite applies PRAGMA synchronous when it compiles it
    sqlite.pragma(`synchronous = ${Math.max(2, this.syncLevel)}`);
    try {
      if (leases.length === 1) this.put(leases[0]); else this.putMany(leases);
    } finally {
      sqlite.pragma(`synchronous = ${this.syncLevel}`);
    }
  }

  /**
   * Runs conditional lease changes in order, in one transaction, and says for each whether it took effect (see
   * LeaseWrite). durable: synced to disk before this returns (synchronous=FULL for it, as putDurably).
   */
  commit(writes: LeaseWrite[], writer: string, durable: boolean): boolean[] {
    if (!writes.length) return [];
    const run = () => this.db.transaction(() => writes.map((w) => this.runWrite(w, writer)))();
    const sqlite = this.sqlite;
    if (!durable || !sqlite) return run(); // PostgreSQL: durable at commit (synchronous_commit=on, see above)
    sqlite.pragma(`synchronous = ${Math.max(2, this.syncLevel)}`);
    try { return run(); } finally { sqlite.pragma(`synchronous = ${this.syncLevel}`); }
  }

  private runWrite(w: LeaseWrite, writer: string): boolean {
    switch (w.kind) {
      case 'claim': {
        const l = w.lease;
        const won = this.claimStmt.run({ ...l, writer }).changes > 0;
        if (won && l.mac) {
          this.giveBackStmt.run({ mac: l.mac, address: l.address, at: l.updatedAt, writer, bound: l.state === 'bound' ? 1 : 0 });
          return true;
        }
        if (won) return true;
        // not changed: still a win when the row is this MAC's live lease (an OFFER to a bound client keeps it)
        const cur = this.get(l.address);
        return !!cur && cur.mac === l.mac && cur.state === 'bound' && cur.expiresAt > l.updatedAt && l.state === 'offered';
      }
      case 'release': return this.releaseStmt.run({ address: w.address, mac: w.mac, at: w.at, writer }).changes > 0;
      case 'unoffer': return this.unofferStmt.run({ address: w.address, mac: w.mac, at: w.at, writer }).changes > 0;
      case 'decline': return this.declineStmt.run({ address: w.address, mac: w.mac, until: w.until, at: w.at, writer }).changes > 0;
    }
  }

  /** Rows written after `since` (unix ms) by any writer but `writer`: what other daemons changed. */
  changedSince(since: number, writer: string): PoolLease[] {
    return (this.changedStmt.all(since, writer) as Row[]).map(fromRow);
  }

  list(): PoolLease[] {
    return (this.allStmt.all() as Row[]).map(fromRow);
  }

  getByMac(mac: string): PoolLease[] {
    return (this.byMacStmt.all(mac) as Row[]).map(fromRow);
  }

  get(address: string): PoolLease | undefined {
    const r = this.byAddressStmt.get(address) as Row | undefined;
    return r && fromRow(r);
  }

  /** Writes the lease of one address (insert or replace). */
  put(lease: PoolLease): void {
    this.upsertStmt.run({ writer: null, ...lease });
  }

  delete(address: string): boolean {
    return this.deleteStmt.run(address).changes > 0;
  }

  /** Several changes in one transaction (e.g. a client moving from one address to another). */
  putMany(leases: PoolLease[]): void {
    this.db.transaction(() => { for (const l of leases) this.upsertStmt.run({ writer: null, ...l }); })();
  }
}
