// The PostgreSQL connection's worker thread (driver.ts starts it): TypeScript through tsx, as in the main thread.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
