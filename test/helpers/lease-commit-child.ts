/**
 * For the lease durability test (run under strace): in a fresh data directory, 5 machine writes (synchronous=NORMAL,
 * as everything else), then 5 DHCP lease commits (full mode, DhcpLeases.flush), each phase ended by a marker
 * syscall (access("/ibt-marker-…")) so the trace can be split by phase.
 *
 *   strace -f -e trace=fsync,fdatasync,access,faccessat,faccessat2 node --import tsx test/helpers/lease-commit-child.ts DIR
 */
import { accessSync } from 'node:fs';
import { Store } from '../../server/store/index.ts';
import { DhcpLeases } from '../../server/dhcp/leases.ts';

const marker = (name: string) => { try { accessSync(`/ibt-marker-${name}`); } catch { /* absent: only the syscall matters */ } };
const store = Store.open(process.argv[2]);
const leases = new DhcpLeases(store, {
  mode: 'full', pool: { start: '10.88.0.10', end: '10.88.0.50' }, poolPrefix: 24, poolUnknown: true, leaseSeconds: 600, router: null, dns: [],
});
const link = { interfaceAddresses: [{ address: '10.88.0.1', prefix: 24 }], relay: null };
marker('start');
for (let i = 0; i < 5; i++) store.machines.create({ mac: `52:54:00:88:00:${(i + 1).toString(16).padStart(2, '0')}` });
marker('machines');
for (let i = 0; i < 5; i++) {
  const mac = `52:54:00:88:01:${(i + 1).toString(16).padStart(2, '0')}`;
  const b = leases.resolve(mac, null, link).binding!;
  leases.apply(mac, { kind: 'bind', address: b.address, leaseSeconds: 600 });
  leases.flush();
}
marker('leases');
store.close();
