/**
 * Sends COUNT random, truncated and mutated DHCP packets to TARGET:67 and BCAST:67 (run inside the test's
 * client namespace):  node --import tsx test/helpers/dhcp-fuzz-sender.ts TARGET BCAST COUNT SEED
 * Prints {"sent":N,"errors":M}.
 */
import dgram from 'node:dgram';
import { qemuBiosIpxeDiscover, buildRequest } from './dhcp-packets.ts';

const [target, bcast, countArg, seedArg] = process.argv.slice(2);
const count = Number(countArg);
let seed = Number(seedArg) || 1;
const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
const int = (n: number): number => Math.floor(rnd() * n);

const randomMac = (): string => Array.from({ length: 6 }, () => int(256).toString(16).padStart(2, '0')).join('');
function valid(): Buffer {
  if (int(2)) return qemuBiosIpxeDiscover(randomMac(), int(2 ** 31));
  return buildRequest({ mac: randomMac(), type: 1 + int(9), xid: int(2 ** 31), vendorClass: int(2) ? 'PXEClient:Arch:00007:UNDI:003000' : undefined,
    arch: int(2) ? int(20) : undefined, userClass: int(3) === 0 ? 'iPXE' : undefined, requested: int(2) ? `10.81.41.${int(256)}` : undefined,
    serverId: int(2) ? '10.81.41.1' : undefined });
}
function packet(i: number): Buffer {
  switch (i % 5) {
    case 0: return Buffer.from(Array.from({ length: int(700) }, () => int(256)));             // noise
    case 1: { const v = valid(); return v.subarray(0, int(v.length)); }                      // truncated
    case 2: { const v = Buffer.from(valid()); for (let k = 0; k < 1 + int(10); k++) v[int(v.length)] = int(256); return v; } // mutated anywhere
    case 3: { const v = Buffer.from(valid()); for (let k = 0; k < 1 + int(6); k++) v[240 + int(v.length - 240)] = int(256); return v; } // mutated options
    default: { // option lengths pointing past the end, overload flags, giant option chains
      const v = Buffer.from(valid());
      const at = 240 + int(Math.max(1, v.length - 241));
      v[at] = [52, 43, 175, 55, 77, 93, 60, 255, 0][int(9)]; v[at + 1] = int(256);
      return v;
    }
  }
}

const sock = dgram.createSocket('udp4');
let sent = 0;
let errors = 0;
sock.bind(0, () => {
  sock.setBroadcast(true);
  let i = 0;
  const burst = () => {
    const end = Math.min(count, i + 200);
    for (; i < end; i++) {
      sock.send(packet(i), 67, i % 4 === 0 ? bcast : target, (err) => { if (err) errors++; else sent++; });
    }
    if (i < count) setTimeout(burst, 2);
    else setTimeout(() => { process.stdout.write(JSON.stringify({ sent, errors }) + '\n'); sock.close(); }, 500);
  };
  burst();
});
