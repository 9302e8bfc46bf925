/**
 * Sends one TFTP read request from each of many source addresses and never answers (what a flood of spoofed
 * requests looks like to the server). Run inside a test's namespace, where the addresses exist only while it runs:
 *
 *   node --import tsx test/helpers/tftp-flood-sender.ts SERVER PORT FILE ADDR...
 *
 * Prints {"sent": N} once every request has left.
 */
import dgram from 'node:dgram';
import { encodeRequest } from '../../server/tftp/packet.ts';

const [server, port, file, ...sources] = process.argv.slice(2);
const request = encodeRequest('rrq', file, 'octet', { blksize: '1428', tsize: '0' });
let sent = 0;
await Promise.all(sources.map(async (address) => {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, address, () => resolve()); });
  await new Promise<void>((resolve, reject) => s.send(request, Number(port), server, (err) => (err ? reject(err) : resolve())));
  sent++;
  s.close();
}));
process.stdout.write(JSON.stringify({ sent }) + '\n');
