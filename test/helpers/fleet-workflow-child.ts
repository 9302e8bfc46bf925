/**
 * One daemon's workflow side, for the several-daemons race test (test/unit/workflow-fleet.test.ts): its own
 * process and store connection (STORE: a SQLite data directory, or a postgres:// URL)
 * and a WorkflowService. On the line {"ids":[…],"to":STATE,"at":MS} from stdin it waits until the clock reads MS
 * (both daemons start together), then moves each workflow to STATE as fast as it can, and prints which it moved,
 * which were refused (409, with the message) and anything else thrown.
 *
 *   node --import tsx test/helpers/fleet-workflow-child.ts STORE
 */
import { createInterface } from 'node:readline';
import pino from 'pino';
import { openStore } from './fleet-store.ts';
import { WorkflowService, WorkflowError } from '../../server/workflows/service.ts';
import type { WorkflowState } from '../../server/workflows/states.ts';

const store = openStore(process.argv[2]);
const workflows = new WorkflowService(store, pino({ level: 'silent' }));
const rl = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: true }) + '\n');
rl.once('line', (line) => {
  const { ids, to, at } = JSON.parse(line) as { ids: string[]; to: WorkflowState; at: number };
  while (Date.now() < at) { /* spin: a timer would start the two daemons milliseconds apart */ }
  const won: string[] = [];
  const refused: { id: string; message: string }[] = [];
  const errors: { id: string; message: string }[] = [];
  for (const id of ids) {
    try {
      workflows.transition(id, to, { reason: `set by ${process.pid}` });
      won.push(id);
    } catch (err) {
      if (err instanceof WorkflowError && err.status === 409) refused.push({ id, message: err.message });
      else errors.push({ id, message: `${(err as Error).name}: ${(err as Error).message}` });
    }
  }
  process.stdout.write(JSON.stringify({ won, refused, errors }) + '\n');
  rl.close();
  store.close();
});
