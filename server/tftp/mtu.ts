/**
 * Largest TFTP block that fits the path to a client: the MTU of the interface the kernel routes to the
 * client through, minus IP + UDP + TFTP headers. The route is the kernel's own choice: a connected UDP
 * socket (connect sends nothing) reports the local address it would use; that address names the interface,
 * whose MTU is in /sys/class/net/<if>/mtu.
 */
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';

/** When the interface cannot be found: an Ethernet MTU of 1500. */
export const FALLBACK_MTU = 1500;

export async function localAddressTowards(address: string, port: number): Promise<string | null> {
  const family = address.includes(':') ? 'udp6' : 'udp4';
  const probe = dgram.createSocket(family);
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.connect(port || 9, address, () => resolve());
    });
    return probe.address().address;
  } catch {
    return null;
  } finally {
    try { probe.close(); } catch { /* closed */ }
  }
}

export async function interfaceMtu(localAddress: string): Promise<number | null> {
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (!addrs?.some((a) => a.address === localAddress)) continue;
    try {
      const mtu = Number((await readFile(`/sys/class/net/${name}/mtu`, 'utf8')).trim());
      if (Number.isInteger(mtu) && mtu > 0) return mtu;
    } catch { /* not Linux or interface gone */ }
  }
  return null;
}

/** Headers in front of a TFTP block: IPv4 20 (IPv6 40) + UDP 8 + TFTP 4. */
export const headerBytes = (address: string): number => (address.includes(':') ? 52 : 32);

export async function maxBlksizeTowards(address: string, port: number): Promise<number> {
  const local = await localAddressTowards(address, port);
  const mtu = (local && (await interfaceMtu(local))) || FALLBACK_MTU;
  return mtu - headerBytes(address);
}
