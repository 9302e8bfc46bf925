/**
 * A relay agent stand-in for tests that must see what a relay gets back (run inside the relay's namespace):
 *
 *   node --import tsx test/helpers/dhcp-relay-sender.ts SERVER GIADDR MAC OPTION82_HEX|-
 *
 * Sends a relayed DISCOVER (giaddr GIADDR, hops 1, option 82 from hex unless "-", as the last option) from port 67
 * to SERVER:67, waits 2 s for the server's answer on port 67 and prints {"reply": HEX or null}.
 */
import dgram from 'node:dgram';
import { header, opt } from './dhcp-packets.ts';

const [server, giaddr, mac, agentHex] = process.argv.slice(2);
const parts = [header(mac.replaceAll(':', ''), 0x5eed0082, 0, { giaddr, hops: 1 }), opt(53, [1]), opt(55, [1, 3, 6, 67])];
if (agentHex !== '-') parts.push(opt(82, Buffer.from(agentHex, 'hex')));
parts.push(Buffer.from([255]));
const request = Buffer.concat(parts);
const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
let reply: string | null = null;
sock.on('message', (msg) => { if (msg[0] === 2 && msg.readUInt32BE(4) === 0x5eed0082) reply = msg.toString('hex'); });
sock.bind(67, '0.0.0.0', () => {
  sock.send(request, 67, server, () => {
    setTimeout(() => { process.stdout.write(JSON.stringify({ reply }) + '\n'); sock.close(); }, 2000);
  });
});
