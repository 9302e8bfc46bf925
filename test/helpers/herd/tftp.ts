/**
 * The herd's TFTP client: a PXE ROM's read of the iPXE binary (blksize 1432 and tsize as iPXE's ROM asks,
 * lock-step ACKs), from the machine's own address, re-sending its last packet after 1 s of silence.
 */
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { decodePacket, encodeAck, encodeRequest } from '../../../server/tftp/packet.ts';

export interface TftpResult { bytes: number; sha256: string; retransmits: number; duplicates: number }

export async function tftpFetch(localAddress: string, server: string, file: string, o: { timeoutMs?: number; attempts?: number; port?: number } = {}): Promise<TftpResult> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(0, localAddress, () => resolve()); });
  const hash = createHash('sha256');
  let bytes = 0; let retransmits = 0; let duplicates = 0;
  try {
    return await new Promise<TftpResult>((resolve, reject) => {
      let last: { data: Buffer; port: number } = { data: encodeRequest('rrq', file, 'octet', { blksize: '1432', tsize: '0' }), port: o.port ?? 69 };
      let peerPort = -1; let blksize = 512; let expected = 1; let silent = 0;
      let timer: NodeJS.Timeout;
      const send = () => { sock.send(last.data, last.port, server); };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          if (++silent >= (o.attempts ?? 6)) return reject(new Error(`TFTP ${file}: no answer from ${server} at block ${expected}`));
          retransmits++;
          send();
          arm();
        }, o.timeoutMs ?? 1000);
      };
      sock.on('message', (raw, rinfo) => {
        if (peerPort < 0) peerPort = rinfo.port;
        if (rinfo.port !== peerPort) return;
        let p;
        try { p = decodePacket(raw); } catch { return; }
        silent = 0;
        if (p.op === 'error') { clearTimeout(timer); return reject(new Error(`TFTP ${file}: error ${p.code} ${p.message}`)); }
        if (p.op === 'oack') {
          blksize = Number(p.options.blksize ?? 512);
          last = { data: encodeAck(0), port: peerPort }; send(); arm();
          return;
        }
        if (p.op !== 'data') return;
        if (p.block !== (expected & 0xffff)) { duplicates++; return; }
        hash.update(p.data); bytes += p.data.length; expected++;
        last = { data: encodeAck(p.block), port: peerPort }; send();
        if (p.data.length < blksize) { clearTimeout(timer); resolve({ bytes, sha256: hash.digest('hex'), retransmits, duplicates }); } else arm();
      });
      send(); arm();
    });
  } finally {
    sock.close();
  }
}
