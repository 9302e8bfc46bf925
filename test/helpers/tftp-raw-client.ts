/**
 * A small TFTP client over a plain dgram socket, for tests that must craft packets real clients never send
 * (UEFI's tsize-then-abort, duplicate ACKs, strays, vanishing mid-transfer) and for the benchmark's windowed
 * transfers. Not part of the server.
 *
 * As a command (used inside namespaces):
 *   node --import tsx test/helpers/tftp-raw-client.ts HOST PORT FILE '{"blksize":"65464"}'
 * prints {"oack":…,"bytes":…,"sha256":…} on stdout.
 */
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { decodePacket, encodeAck, encodeRequest, type DecodedPacket } from '../../server/tftp/packet.ts';

export interface Received { packet: DecodedPacket; from: { address: string; port: number }; raw: Buffer }

export class RawTftpClient {
  readonly socket: dgram.Socket;
  private inbox: Received[] = [];
  private waiter: ((r: Received) => void) | null = null;

  private constructor(socket: dgram.Socket) {
    this.socket = socket;
    socket.on('message', (raw, rinfo) => {
      const r = { packet: decodePacket(raw), from: { address: rinfo.address, port: rinfo.port }, raw };
      if (this.waiter) { const w = this.waiter; this.waiter = null; w(r); } else this.inbox.push(r);
    });
  }

  static async open(host = '127.0.0.1'): Promise<RawTftpClient> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, host, resolve));
    return new RawTftpClient(socket);
  }

  get port(): number { return this.socket.address().port; }

  private pending = 0;
  private closeWhenSent = false;

  send(buf: Buffer, port: number, host = '127.0.0.1'): void {
    this.pending++;
    this.socket.send(buf, port, host, () => {
      if (--this.pending === 0 && this.closeWhenSent) this.close();
    });
  }

  /** The next datagram, or null after `ms` of silence. */
  next(ms = 2000): Promise<Received | null> {
    const r = this.inbox.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.waiter = null; resolve(null); }, ms);
      this.waiter = (x) => { clearTimeout(t); resolve(x); };
    });
  }

  /** Everything that arrives within `ms`. */
  async drain(ms: number): Promise<Received[]> {
    const out: Received[] = [];
    const end = Date.now() + ms;
    for (;;) {
      const left = end - Date.now();
      if (left <= 0) return out;
      const r = await this.next(left);
      if (!r) return out;
      out.push(r);
    }
  }

  /** Closes the socket once what was sent has left (a close right after send() would cancel it). */
  close(): void {
    if (this.pending > 0) { this.closeWhenSent = true; return; }
    try { this.socket.close(); } catch { /* closed */ }
  }
}

export interface FetchResult {
  data: Buffer;
  oack: Record<string, string> | null;
  /** DATA packets received per wire block number (to spot duplicate sends). */
  dataPackets: number;
  serverPort: number;
  error?: { code: number; message: string };
}

/**
 * Fetches a file: RRQ with `options`, ACK 0 after an OACK, then ACK the last in-order block of each window
 * (windowsize from the OACK, else 1). Gives up after `idleMs` of silence.
 */
export async function rawFetch(host: string, port: number, file: string, options: Record<string, string> = {},
  opts: { idleMs?: number; mode?: string; client?: RawTftpClient } = {}): Promise<FetchResult> {
  const client = opts.client ?? (await RawTftpClient.open(host === '127.0.0.1' ? '127.0.0.1' : '0.0.0.0'));
  try {
    client.send(encodeRequest('rrq', file, opts.mode ?? 'octet', options), port, host);
    const chunks: Buffer[] = [];
    let oack: Record<string, string> | null = null;
    let blksize = 512;
    let windowsize = 1;
    let expected = 1; // absolute
    let inWindow = 0;
    let dataPackets = 0;
    let serverPort = -1;
    for (;;) {
      const r = await client.next(opts.idleMs ?? 3000);
      if (!r) throw new Error(`no answer from ${host}:${port} for ${file} (block ${expected})`);
      if (serverPort < 0) serverPort = r.from.port;
      if (r.from.port !== serverPort) continue;
      const p = r.packet;
      if (p.op === 'error') return { data: Buffer.concat(chunks), oack, dataPackets, serverPort, error: { code: p.code, message: p.message } };
      if (p.op === 'oack') {
        oack = p.options;
        blksize = Number(p.options.blksize ?? 512);
        windowsize = Number(p.options.windowsize ?? 1);
        client.send(encodeAck(0), serverPort, host);
        continue;
      }
      if (p.op !== 'data') continue;
      dataPackets++;
      if (p.block !== (expected & 0xffff)) {
        // out of order: ACK the last good block (RFC 7440)
        client.send(encodeAck((expected - 1) & 0xffff), serverPort, host);
        inWindow = 0;
        continue;
      }
      chunks.push(Buffer.from(p.data));
      expected++;
      inWindow++;
      const last = p.data.length < blksize;
      if (last || inWindow >= windowsize) {
        client.send(encodeAck(p.block), serverPort, host);
        inWindow = 0;
      }
      if (last) return { data: Buffer.concat(chunks), oack, dataPackets, serverPort };
    }
  } finally {
    if (!opts.client) client.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [host, port, file, options] = process.argv.slice(2);
  const r = await rawFetch(host, Number(port), file, JSON.parse(options ?? '{}'));
  process.stdout.write(JSON.stringify({ oack: r.oack, bytes: r.data.length, sha256: createHash('sha256').update(r.data).digest('hex'), error: r.error }) + '\n');
}
