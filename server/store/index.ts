import { openDb, openPostgres, type Db } from './db.ts';
import { dialectOf, sqliteOf, type Dialect, type SqliteDatabase } from './sql.ts';
import { isPostgresUrl } from './postgres/driver.ts';
import { MachineRepository } from './machines.ts';
import { ImageRepository } from './images.ts';
import { WorkflowRepository } from './workflows.ts';
import { EventRepository } from './events.ts';
import { LeaseRepository } from './leases.ts';
import { MachineEventRepository } from './machine-events.ts';
import { AgentTokenRepository } from './agent-tokens.ts';
import { AgentEventRepository } from './agent-events.ts';

/** Where the store lives: null (default) for SQLite in the data directory, or a postgres:// / postgresql:// URL. */
export type StoreUrl = string | null;

/**
 * Moves when the machines table may have changed (MachineLookup in server/dhcp/leases.ts drops its cache then).
 * own: SQLite's total_changes() (rows written through this connection, lease rows included: a writer of its own
 * rows re-reads it after them); others: SQLite's data_version (commits through other connections). PostgreSQL:
 * own is 0 and others is the machines change counter (migrations/postgres/001_initial.sql), bumped by every
 * connection's statements on machines, this one's too.
 */
export interface ChangeMarker { own: number; others: number }

/** The one store: a database (SQLite or PostgreSQL) and a repository per table. */
export class Store {
  readonly machines: MachineRepository;
  readonly images: ImageRepository;
  readonly workflows: WorkflowRepository;
  readonly events: EventRepository;
  readonly leases: LeaseRepository;
  readonly machineEvents: MachineEventRepository;
  readonly agentTokens: AgentTokenRepository;
  readonly agentEvents: AgentEventRepository;
  readonly dialect: Dialect;
  /** The better-sqlite3 handle on SQLite (pragmas, the WAL checkpointer); null on PostgreSQL. */
  readonly sqlite: SqliteDatabase | null;
  private readonly ownStmt;
  private readonly othersStmt;

  constructor(readonly db: Db) {
    this.dialect = dialectOf(db);
    this.sqlite = sqliteOf(db);
    this.machines = new MachineRepository(db);
    this.images = new ImageRepository(db);
    this.workflows = new WorkflowRepository(db);
    this.events = new EventRepository(db);
    this.leases = new LeaseRepository(db);
    this.machineEvents = new MachineEventRepository(db);
    this.agentTokens = new AgentTokenRepository(db);
    this.agentEvents = new AgentEventRepository(db);
    if (this.sqlite) {
      this.ownStmt = this.sqlite.prepare('SELECT total_changes()').pluck();
      this.othersStmt = this.sqlite.prepare('PRAGMA data_version').pluck();
    } else {
      this.ownStmt = null;
      this.othersStmt = db.prepare("SELECT n FROM change_counters WHERE name = 'machines'").pluck();
    }
  }

  /** Opens the store: SQLite in dataDir, or the PostgreSQL database at `url` (migrated either way). */
  static open(dataDir: string, opts: { url?: StoreUrl } = {}): Store {
    if (opts.url) {
      if (!isPostgresUrl(opts.url)) throw new Error(`--store ${opts.url}: not a postgres:// or postgresql:// URL`);
      return new Store(openPostgres(opts.url));
    }
    return new Store(openDb(dataDir));
  }

  /** Runs fn in one transaction: all of it is written, or none. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /** See ChangeMarker. One statement each on SQLite (~0.1 µs and ~4 µs), one round trip on PostgreSQL. */
  changeMarker(): ChangeMarker {
    return { own: this.ownChanges(), others: this.othersStmt.get() as number };
  }

  /** ChangeMarker.own alone (after a write of one's own rows); free on PostgreSQL. */
  ownChanges(): number {
    return this.ownStmt ? this.ownStmt.get() as number : 0;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

export type { Db };
