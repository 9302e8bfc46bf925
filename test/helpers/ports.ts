/**
 * Free loopback ports for test peers that need a fixed port number (ipmi_sim, the Redfish simulator): `count`
 * consecutive ports, each free for both UDP and TCP on 127.0.0.1 when checked, from a random base (two test files
 * running at once never share one by arithmetic on their PIDs). The peer binds them right after; a port taken in
 * between makes that peer fail to start, loudly.
 */
import dgram from 'node:dgram';
import net from 'node:net';

const udpFree = (port: number) => new Promise<boolean>((resolve) => {
  const s = dgram.createSocket('udp4');
  s.once('error', () => { s.close(); resolve(false); });
  s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
});

const tcpFree = (port: number) => new Promise<boolean>((resolve) => {
  const s = net.createServer();
  s.once('error', () => resolve(false));
  s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
});

export async function freePorts(count = 1): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20000 + Math.floor(Math.random() * (60000 - 20000 - count));
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = (await udpFree(p)) && (await tcpFree(p));
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free loopback ports found`);
}
