// The WAL checkpointer's worker thread (checkpointer.ts starts it): TypeScript through tsx, as in the main thread.
import { register } from 'tsx/esm/api';

register();
await import('./checkpoint-worker.ts');
