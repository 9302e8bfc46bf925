// The DHCP thread (thread.ts starts it): TypeScript through tsx, as in the main thread.
import { register } from 'tsx/esm/api';

register();
await import('./thread-main.ts');
