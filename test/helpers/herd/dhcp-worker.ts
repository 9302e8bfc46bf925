/**
 * The herd's DHCP exchanges on a thread of their own: the main thread is busy hashing hundreds of HTTP downloads,
 * and a reply listener that is read late loses datagrams once its socket buffer (rmem_max) is full — losses of
 * the simulator, not of the server under test. Messages: {id, iface, mac, flavour, replyIface} → {id, lease | error}.
 */
import { parentPort } from 'node:worker_threads';
import { dhcpExchange, type DhcpFlavour } from './dhcp.ts';

parentPort!.on('message', (m: { id: number; iface: string; mac: string; flavour: DhcpFlavour; replyIface: string }) => {
  dhcpExchange(m.iface, m.mac, m.flavour, { replyIface: m.replyIface }).then(
    (lease) => parentPort!.postMessage({ id: m.id, lease }),
    (e: Error) => parentPort!.postMessage({ id: m.id, error: e.message }),
  );
});
