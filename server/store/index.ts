import { openDb, type Db } from './db.ts';
import { MachineRepository } from './machines.ts';
import { ImageRepository } from './images.ts';
import { WorkflowRepository } from './workflows.ts';
import { EventRepository } from './events.ts';
import { LeaseRepository } from './leases.ts';
import { MachineEventRepository } from './machine-events.ts';
import { AgentTokenRepository } from './agent-tokens.ts';
import { AgentEventRepository } from './agent-events.ts';

/** The one store: a SQLite database and a repository per table. */
export class Store {
  readonly machines: MachineRepository;
  readonly images: ImageRepository;
  readonly workflows: WorkflowRepository;
  readonly events: EventRepository;
  readonly leases: LeaseRepository;
  readonly machineEvents: MachineEventRepository;
  readonly agentTokens: AgentTokenRepository;
  readonly agentEvents: AgentEventRepository;

  constructor(readonly db: Db) {
    this.machines = new MachineRepository(db);
    this.images = new ImageRepository(db);
    this.workflows = new WorkflowRepository(db);
    this.events = new EventRepository(db);
    this.leases = new LeaseRepository(db);
    this.machineEvents = new MachineEventRepository(db);
    this.agentTokens = new AgentTokenRepository(db);
    this.agentEvents = new AgentEventRepository(db);
  }

  static open(dataDir: string): Store {
    return new Store(openDb(dataDir));
  }

  /** Runs fn in one transaction: all of it is written, or none. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

export type { Db };
