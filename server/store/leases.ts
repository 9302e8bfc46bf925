import type { Db } from './db.ts';
import { sqliteOf, type SqliteDatabase } from './sql.ts';

export type LeaseState = 'bound' | 'released' | 'declined';

/** One DHCP pool address as persisted (full mode). Times are unix milliseconds. */
export interface PoolLease {
  address: string;
  mac: string | null;
  state: LeaseState;
  expiresAt: number;
  hostname: string | null;
  updatedAt: number;
}

interface Row { address: string; mac: string | null; state: LeaseState; expires_at: number; hostname: string | null; updated_at: number }

const fromRow = (r: Row): PoolLease => ({
  address: r.address, mac: r.mac, state: r.state, expiresAt: r.expires_at, hostname: r.hostname, updatedAt: r.updated_at,
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

  constructor(private db: Db) {
    this.sqlite = sqliteOf(db);
    this.upsertStmt = db.prepare(`INSERT INTO dhcp_leases (address, mac, state, expires_at, hostname, updated_at)
      VALUES (@address, @mac, @state, @expiresAt, @hostname, @updatedAt)
      ON CONFLICT(address) DO UPDATE SET mac=excluded.mac, state=excluded.state, expires_at=excluded.expires_at,
      hostname=excluded.hostname, updated_at=excluded.updated_at`);
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
    if (!sqlite) { if (leases.length === 1) this.upsertStmt.run(leases[0]); else this.putMany(leases); return; }
    // db.pragma() each time, not a prepared statement: SQLite applies PRAGMA synchronous when it compiles it
    sqlite.pragma(`synchronous = ${Math.max(2, this.syncLevel)}`);
    try {
      if (leases.length === 1) this.upsertStmt.run(leases[0]); else this.putMany(leases);
    } finally {
      sqlite.pragma(`synchronous = ${this.syncLevel}`);
    }
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
    this.upsertStmt.run(lease);
  }

  delete(address: string): boolean {
    return this.deleteStmt.run(address).changes > 0;
  }

  /** Several changes in one transaction (e.g. a client moving from one address to another). */
  putMany(leases: PoolLease[]): void {
    this.db.transaction(() => { for (const l of leases) this.upsertStmt.run(l); })();
  }
}
