// The image build's worker thread (index.ts starts it): TypeScript through tsx, as in the main thread.
import { register } from 'tsx/esm/api';

register();
await import('./build-worker.ts');
