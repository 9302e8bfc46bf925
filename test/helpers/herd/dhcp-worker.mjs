// Entry of the herd's DHCP thread: a worker's entry is loaded before tsx could hook it, so register tsx here.
import { register } from 'tsx/esm/api';

register();
await import('./dhcp-worker.ts');
