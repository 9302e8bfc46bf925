/**
 * TFTP sockets: the request socket (port 69) and one fresh ephemeral socket per transfer.
 *
 * - Read requests only; a write request gets ERROR 2. Malformed datagrams are counted, logged at debug and
 *   dropped (a malformed request gets ERROR 4); nothing a peer sends can throw out of a handler.
 * - Every packet on a transfer socket is checked against the client's address AND port: a stray sender gets
 *   ERROR 5 "unknown transfer ID" and the transfer goes on undisturbed.
 * - Caps on concurrent transfers per client address and in total; a vanished client's transfer ends after
 *   its retransmission tries and frees the slot.
 * - Spoofed requests (the source address is not the sender's, so nobody ever answers): a transfer whose client
 *   has answered nothing yet gets 3 sends, not 6, and the client's timeout option is honoured up to 5 s only.
 *   Such unanswered transfers may hold at most `maxUnansweredTransfers` slots (default half of them); past that
 *   a new request takes the slot of the oldest unanswered one (as a SYN cache drops its oldest half-open entry),
 *   so a flood from many addresses delays a real client by nothing more than its first round trip.
 * - Every transfer ends after `maxTransferMs` (default 10 min) whatever the client does, and netascii
 *   conversions (in memory) are limited per file (1 MiB) and in total (16 MiB).
 * - The decisions live in session.ts (one transfer's state machine); what is served in files.ts.
 * - Files on disk in octet mode go through the native transfer loop (native-transfer.ts: a thread per
 *   transfer, a window per sendmmsg) when it is built; everything else through `Transfer` below.
 */
import dgram from 'node:dgram';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import {
  decodePacket, encodeData, encodeError, encodeOack, parseMode, TFTP_ERROR,
  type RequestPacket,
} from './packet.ts';
import { DEFAULT_MAX_UNANSWERED_RETRIES, negotiateOptions, TransferSession, type SessionAction, type TransferOutcome } from './session.ts';
import { FileSource, openRequestedFile, TftpFileError, type ByteSource, type ServedRoot, type TftpVirtualFiles } from './files.ts';
import { localAddressTowards, maxBlksizeTowards } from './mtu.ts';
import { NativeTransfer, nativeLoopUnavailable, nativeTransferLoop, type NativeTransferResult } from './native-transfer.ts';

export interface TftpServerOptions {
  log: Logger;
  registry: Registry;
  /** Address to listen on; `hosts` (several addresses, one request socket each, same port) wins when given. */
  host: string;
  hosts?: string[];
  port: number;
  /** Disk roots in lookup order. */
  roots: ServedRoot[];
  virtualFiles?: TftpVirtualFiles;
  /** Concurrent transfers in total (default 256) and per client address (default 16). */
  maxTransfers?: number;
  maxTransfersPerClient?: number;
  /** Retransmission timeout when the client asks for none (default 1000 ms). */
  defaultTimeoutMs?: number;
  /** Timeouts in a row before a transfer is given up (default 5, i.e. 6 tries). */
  maxRetries?: number;
  /** The same while the client has answered nothing (default 2, i.e. 3 tries). */
  maxUnansweredRetries?: number;
  /** Slots transfers whose client has answered nothing may hold (default half of maxTransfers). */
  maxUnansweredTransfers?: number;
  /** Longest a transfer may last, whatever the client does (default 600 000 ms). */
  maxTransferMs?: number;
  /** Largest timeout option accepted, in seconds (default 5). */
  maxTimeoutSeconds?: number;
  /** Largest netascii file (default 1 MiB) and the memory all netascii conversions may hold (default 16 MiB). */
  maxNetasciiBytes?: number;
  netasciiBudgetBytes?: number;
  /** Largest window granted, in blocks (default 64) and in bytes (default 64 KiB, at least one block). */
  maxWindowsize?: number;
  maxWindowBytes?: number;
  /** Largest block granted; by default found from the MTU of the path to each client. */
  maxBlksize?: (client: { address: string; port: number }) => Promise<number> | number;
  /** 'auto' (default): files on disk through the native loop when it is built; 'js': every transfer in JS. */
  transferLoop?: 'auto' | 'js';
}

export interface TftpMetrics {
  requests: Counter<'kind'>;
  transfers: Counter<'outcome'>;
  sentBytes: Counter;
  retransmittedBlocks: Counter;
  badPackets: Counter<'reason'>;
  duration: Histogram<'outcome'>;
  active: Gauge;
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function tftpMetrics(registry: Registry): TftpMetrics {
  const registers = [registry];
  return {
    requests: metric(registry, 'ironboot_tftp_requests_total', () => new Counter({
      name: 'ironboot_tftp_requests_total', help: 'TFTP requests received on the request port, by kind (rrq, wrq, malformed, other)', labelNames: ['kind'] as const, registers })),
    transfers: metric(registry, 'ironboot_tftp_transfers_total', () => new Counter({
      name: 'ironboot_tftp_transfers_total', help: 'TFTP read requests by outcome (complete, unconfirmed, aborted, timeout, failed, refused, not_found, busy)', labelNames: ['outcome'] as const, registers })),
    sentBytes: metric(registry, 'ironboot_tftp_sent_bytes_total', () => new Counter({
      name: 'ironboot_tftp_sent_bytes_total', help: 'TFTP DATA payload bytes sent, retransmissions included', registers })),
    retransmittedBlocks: metric(registry, 'ironboot_tftp_retransmitted_blocks_total', () => new Counter({
      name: 'ironboot_tftp_retransmitted_blocks_total', help: 'TFTP DATA blocks sent again after a timeout or a reported gap', registers })),
    badPackets: metric(registry, 'ironboot_tftp_bad_packets_total', () => new Counter({
      name: 'ironboot_tftp_bad_packets_total', help: 'TFTP datagrams dropped: malformed, unknown_tid (wrong sender), unexpected (valid but out of place); those on a native transfer port are counted when it ends', labelNames: ['reason'] as const, registers })),
    duration: metric(registry, 'ironboot_tftp_transfer_duration_seconds', () => new Histogram({
      name: 'ironboot_tftp_transfer_duration_seconds', help: 'TFTP transfer time from request to the end', labelNames: ['outcome'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers })),
    active: metric(registry, 'ironboot_tftp_active_transfers', () => new Gauge({
      name: 'ironboot_tftp_active_transfers', help: 'TFTP transfers in progress', registers })),
  };
}

type Peer = { address: string; port: number };

/** One slot of the caps: a request from the moment it is accepted, then its transfer. */
interface Slot { readonly peer: Peer; transfer: ActiveTransfer | null; evicted: boolean; readonly acceptedAt: number }

/** IP literals only: resolve synchronously so a send goes straight to the kernel (no DNS round trip). */
const literalLookup = ((address: string, _family: unknown, cb: (err: Error | null, address: string, family: number) => void) =>
  cb(null, address, address.includes(':') ? 6 : 4)) as unknown as dgram.SocketOptions['lookup'];

const socketType = (host: string): dgram.SocketType => (host.includes(':') ? 'udp6' : 'udp4');

interface TransferInfo {
  file: string;
  /** Local address the request came in on. */
  local: string;
  origin: string;
  mac: string | null;
  mode: string;
  requested: Record<string, string>;
}

/** What the server keeps of a running transfer, whichever loop carries it. */
interface ActiveTransfer {
  readonly peer: Peer;
  readonly requestBytes: Buffer;
  /** True once the client answered anything (then a repeated request is a new one). */
  readonly progressed: boolean;
  /** The requester sent its request again before answering: it is there (never evicted, all its retries). */
  requestRepeated(): void;
  readonly repeated: boolean;
  /** Ends the transfer without telling the client (server shutdown). */
  abort(): void;
  /** Ends a transfer whose client never answered, to give its slot to a new request. */
  evict(): void;
  /** True once the transfer was told to end (evicted or aborted) but may still hold its slot. */
  readonly ending: boolean;
}

interface TransferEnd {
  loop: 'js' | 'native';
  client: string;
  info: TransferInfo;
  blksize: number;
  windowsize: number;
  size: number;
  bytes: number;
  startedAt: bigint;
  retransmitted: number;
  outcome: TransferOutcome;
  reason: string;
}

/** The one log line and the metrics of a finished transfer. */
function reportEnd(log: Logger, metrics: TftpMetrics, e: TransferEnd): void {
  const ms = Number(process.hrtime.bigint() - e.startedAt) / 1e6;
  metrics.transfers.inc({ outcome: e.outcome });
  metrics.duration.observe({ outcome: e.outcome }, ms / 1000);
  const entry = {
    client: e.client, file: e.info.file, origin: e.info.origin, mac: e.info.mac ?? undefined, mode: e.info.mode,
    options: e.info.requested, loop: e.loop, blksize: e.blksize, windowsize: e.windowsize,
    size: e.size, bytes: e.bytes, ms: Math.round(ms * 10) / 10, retransmitted: e.retransmitted, outcome: e.outcome, reason: e.reason,
  };
  if (e.outcome === 'complete' || e.outcome === 'unconfirmed' || e.outcome === 'aborted') log.info(entry, `tftp ${e.info.file} to ${e.client}: ${e.outcome}`);
  else log.warn(entry, `tftp ${e.info.file} to ${e.client}: ${e.outcome}`);
}

/** One read transfer in JS: its socket, timer and byte source around a TransferSession. */
class Transfer implements ActiveTransfer {
  readonly startedAt = process.hrtime.bigint();
  private readonly timer: NodeJS.Timeout;
  private readonly lifetime: NodeJS.Timeout;
  private readonly cache = new Map<number, Buffer>(); // absolute block → DATA packet, for retransmission
  private queue: number[] = [];
  private queueHead = 0;
  private pumping = false;
  private finished = false;
  /** True once the client answered anything (then a repeated request is a new one). */
  progressed = false;
  private oackPacket: Buffer | null = null;
  /** An ERROR to send to the client; when the transfer ends, the socket closes once it has left. */
  private pendingError: Buffer | null = null;

  constructor(
    readonly peer: Peer,
    readonly requestBytes: Buffer,
    private readonly socket: dgram.Socket,
    private readonly session: TransferSession,
    private readonly source: ByteSource,
    private readonly timeoutMs: number,
    private readonly maxTransferMs: number,
    readonly info: TransferInfo,
    private readonly metrics: TftpMetrics,
    private readonly log: Logger,
    private readonly onEnd: (t: Transfer) => void,
  ) {
    this.timer = setTimeout(() => this.safely(() => this.run(this.session.timeout())), timeoutMs);
    this.timer.unref();
    this.lifetime = setTimeout(() => this.safely(() => this.run(this.session.expire(maxTransferMs))), maxTransferMs);
    this.lifetime.unref();
    socket.on('message', (msg, rinfo) => this.safely(() => this.onMessage(msg, rinfo)));
    socket.on('error', (err) => this.log.debug({ err, client: this.client }, 'tftp transfer socket error'));
  }

  get client(): string { return `${this.peer.address}:${this.peer.port}`; }

  begin(): void { this.run(this.session.start()); }

  /** Ends the transfer without telling the client (server shutdown). */
  abort(): void { this.end('failed', 'server closing'); }

  evict(): void { this.end('timeout', 'evicted: the client never answered, and a new request needed the slot'); }

  requestRepeated(): void { this.session.requestRepeated = true; }

  get repeated(): boolean { return this.session.requestRepeated; }

  get ending(): boolean { return this.finished; }

  private safely(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.log.error({ err, client: this.client }, 'tftp transfer failed unexpectedly');
      if (!this.finished) this.end('failed', (err as Error).message);
    }
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (rinfo.address !== this.peer.address || rinfo.port !== this.peer.port) {
      this.metrics.badPackets.inc({ reason: 'unknown_tid' });
      this.log.debug({ from: `${rinfo.address}:${rinfo.port}`, client: this.client }, 'tftp packet from a stranger on a transfer port');
      this.socket.send(encodeError(TFTP_ERROR.unknownTransferId, 'unknown transfer ID'), rinfo.port, rinfo.address);
      return;
    }
    if (this.finished) return;
    // the hot path: an ACK (opcode 4), read without building a packet object
    if (msg.length >= 4 && msg[0] === 0 && msg[1] === 4) {
      this.onAck(msg.readUInt16BE(2));
      return;
    }
    const packet = decodePacket(msg);
    if (packet.op === 'error') {
      this.progressed = true;
      this.run(this.session.peerError(packet.code, packet.message));
    } else {
      this.metrics.badPackets.inc({ reason: packet.op === 'malformed' ? 'malformed' : 'unexpected' });
      this.log.debug({ client: this.client, op: packet.op, reason: 'reason' in packet ? packet.reason : undefined }, 'tftp packet ignored on a transfer port');
    }
  }

  private onAck(block: number): void {
    this.progressed = true;
    const before = this.session.acked;
    const actions = this.session.ack(block);
    const acked = this.session.acked;
    if (acked > before) {
      for (const b of this.cache.keys()) if (b <= acked) this.cache.delete(b); else break;
      this.source.release(acked * this.session.params.blksize);
    }
    this.run(actions);
  }

  private run(actions: SessionAction[]): void {
    let sent = false;
    for (const a of actions) {
      switch (a.type) {
        case 'send-oack':
          this.oackPacket ??= encodeOack(a.options);
          this.socket.send(this.oackPacket, this.peer.port, this.peer.address);
          sent = true;
          break;
        case 'send-data':
          this.sendBlocks(a.first, a.last);
          sent = true;
          break;
        case 'send-error':
          this.pendingError = encodeError(a.code, a.message);
          break;
        case 'finish':
          this.end(a.outcome, a.reason);
          return;
      }
    }
    if (this.pendingError) {
      this.socket.send(this.pendingError, this.peer.port, this.peer.address);
      this.pendingError = null;
    }
    if (sent) this.timer.refresh();
  }

  /** Sends blocks first..last now if their bytes are buffered; the rest goes to the queue that pump() reads for. */
  private sendBlocks(first: number, last: number): void {
    let b = first;
    if (!this.pumping) {
      const { blksize, size } = this.session.params;
      let sentBytes = 0;
      for (; b <= last; b++) {
        let packet = this.cache.get(b);
        if (packet) this.metrics.retransmittedBlocks.inc();
        else {
          const pos = (b - 1) * blksize;
          const data = this.source.peek(pos, Math.min(blksize, size - pos));
          if (!data) break;
          packet = encodeData(b, data);
          this.cache.set(b, packet);
        }
        sentBytes += packet.length - 4;
        this.socket.send(packet, this.peer.port, this.peer.address);
      }
      if (sentBytes) this.metrics.sentBytes.inc(sentBytes);
    }
    if (b > last) return;
    for (; b <= last; b++) this.queue.push(b);
    if (!this.pumping) void this.pump();
  }

  /** Sends queued blocks in order; reads from the source only when the bytes are not buffered yet. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const { blksize, size } = this.session.params;
    let sentBytes = 0;
    try {
      while (this.queueHead < this.queue.length) {
        const block = this.queue[this.queueHead++];
        if (block <= this.session.acked) continue;
        let packet = this.cache.get(block);
        if (!packet) {
          const pos = (block - 1) * blksize;
          const len = Math.min(blksize, size - pos);
          const data = this.source.peek(pos, len) ?? (await this.source.read(pos, len));
          if (this.finished) return;
          packet = encodeData(block, data);
          this.cache.set(block, packet);
        } else {
          this.metrics.retransmittedBlocks.inc();
        }
        sentBytes += packet.length - 4;
        this.socket.send(packet, this.peer.port, this.peer.address);
      }
      this.queue = [];
      this.queueHead = 0;
    } catch (err) {
      if (!this.finished) this.run(this.session.fail(`read error: ${(err as Error).message}`));
    } finally {
      this.pumping = false;
      this.metrics.sentBytes.inc(sentBytes);
    }
  }

  private end(outcome: TransferOutcome, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.session.done = true;
    clearTimeout(this.timer);
    clearTimeout(this.lifetime);
    this.cache.clear();
    const closeSocket = () => { try { this.socket.close(); } catch { /* closed */ } };
    if (this.pendingError) {
      // the ERROR must leave before the socket closes
      this.socket.send(this.pendingError, this.peer.port, this.peer.address, closeSocket);
      this.pendingError = null;
    } else closeSocket();
    void this.source.close().catch(() => {});
    const s = this.session;
    reportEnd(this.log, this.metrics, {
      loop: 'js', client: this.client, info: this.info, blksize: s.params.blksize, windowsize: s.params.windowsize,
      size: s.params.size, bytes: s.bytesAcked, startedAt: this.startedAt, retransmitted: s.retransmitted, outcome, reason,
    });
    this.onEnd(this);
  }
}

export class TftpServer {
  private sockets: dgram.Socket[] = [];
  private readonly transfers = new Set<ActiveTransfer>();
  private readonly byEndpoint = new Map<string, ActiveTransfer>();
  /** Slots held per client address, including requests still opening their file. */
  private readonly perClient = new Map<string, number>();
  private slotsInUse = 0;
  /** Every slot held, oldest first: requests still opening their file (no transfer yet) and transfers. */
  private readonly slots = new Set<Slot>();
  private netasciiHeld = 0;
  private evictions = 0;
  private evictionsLoggedAt = -Infinity;
  private busyDropped = 0;
  private busyLoggedAt = 0;
  private readonly metrics: TftpMetrics;
  private readonly log: Logger;
  private closing = false;

  constructor(private readonly opts: TftpServerOptions) {
    this.metrics = tftpMetrics(opts.registry);
    this.log = opts.log;
  }

  get activeTransfers(): number { return this.transfers.size; }

  /** Bytes held by netascii conversions now (for tests). */
  get netasciiBytesHeld(): number { return this.netasciiHeld; }

  async listen(): Promise<void> {
    if ((this.opts.transferLoop ?? 'auto') === 'auto' && !nativeTransferLoop()) {
      this.log.warn(`tftp native transfer loop unavailable, every transfer runs in JS (slower): ${nativeLoopUnavailable()}`);
    }
    const hosts = this.opts.hosts?.length ? this.opts.hosts : [this.opts.host];
    let port = this.opts.port;
    try {
      for (const host of hosts) {
        const socket = dgram.createSocket({ type: socketType(host), lookup: literalLookup });
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.bind(port, host, () => { socket.off('error', reject); resolve(); });
        });
        port = socket.address().port; // the next addresses take the same port (when 0 was asked)
        const local = socket.address().address;
        socket.on('error', (err) => this.log.warn({ err, local }, 'tftp request socket error'));
        socket.on('message', (msg, rinfo) => {
          this.onRequest(msg, rinfo, socket).catch((err) => this.log.error({ err, client: `${rinfo.address}:${rinfo.port}` }, 'tftp request failed unexpectedly'));
        });
        this.sockets.push(socket);
      }
    } catch (err) {
      for (const s of this.sockets) s.close();
      this.sockets = [];
      throw err;
    }
    this.log.info({ addresses: this.sockets.map((s) => s.address().address), port, roots: this.opts.roots.map((r) => r.dir) }, 'tftp listening');
  }

  /** The first request socket's address (all of them share the port). */
  address(): { address: string; port: number } {
    if (!this.sockets.length) throw new Error('tftp server is not listening');
    const a = this.sockets[0].address();
    return { address: a.address, port: a.port };
  }

  addresses(): { address: string; port: number }[] {
    return this.sockets.map((s) => { const a = s.address(); return { address: a.address, port: a.port }; });
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const t of [...this.transfers]) t.abort();
    const socks = this.sockets;
    this.sockets = [];
    await Promise.all(socks.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  private replyError(via: dgram.Socket, to: Peer, code: number, message: string): void {
    if (!this.closing) via.send(encodeError(code, message), to.port, to.address);
  }

  private async onRequest(msg: Buffer, rinfo: dgram.RemoteInfo, via: dgram.Socket): Promise<void> {
    const peer: Peer = { address: rinfo.address, port: rinfo.port };
    const packet = decodePacket(msg);
    if (packet.op === 'malformed') {
      this.metrics.requests.inc({ kind: 'malformed' });
      this.metrics.badPackets.inc({ reason: 'malformed' });
      this.log.debug({ client: `${peer.address}:${peer.port}`, reason: packet.reason }, 'tftp malformed packet dropped');
      const opcode = msg.length >= 2 ? msg.readUInt16BE(0) : 0;
      if (opcode === 1 || opcode === 2) this.replyError(via, peer, TFTP_ERROR.illegalOperation, `malformed request: ${packet.reason}`);
      return;
    }
    if (packet.op === 'wrq') {
      this.metrics.requests.inc({ kind: 'wrq' });
      this.metrics.transfers.inc({ outcome: 'refused' });
      this.log.info({ client: `${peer.address}:${peer.port}`, file: packet.filename }, 'tftp write request refused');
      this.replyError(via, peer, TFTP_ERROR.accessViolation, 'this server is read-only: write requests are refused');
      return;
    }
    if (packet.op !== 'rrq') {
      this.metrics.requests.inc({ kind: 'other' });
      this.metrics.badPackets.inc({ reason: 'unexpected' });
      this.log.debug({ client: `${peer.address}:${peer.port}`, op: packet.op }, 'tftp non-request packet on the request port dropped');
      return;
    }
    this.metrics.requests.inc({ kind: 'rrq' });
    this.log.debug({ client: `${peer.address}:${peer.port}`, file: packet.filename, options: packet.options }, 'tftp read request');
    await this.startRead(packet, msg, peer, via);
  }

  /**
   * The address the client sent its request to: the request socket's own, or (a wildcard socket) the address the
   * kernel answers the client from.
   */
  private async localAddressFor(via: dgram.Socket, peer: Peer): Promise<string> {
    const bound = via.address().address;
    if (bound !== '0.0.0.0' && bound !== '::') return bound;
    return (await localAddressTowards(peer.address, peer.port)) ?? bound;
  }

  /**
   * Makes room for a new request when unanswered slots (requests still opening their file, transfers whose client
   * has gone unanswered for two retransmission timeouts (its first send and its resend). A real client answers
   * within a round trip, a busy one within a timeout; one that has not answered either send was spoofed or is gone.
   * Younger ones stay: a rack powering on sends hundreds of real requests within a round trip of each other, and
   * evicting those would end every one of them in turn (an evicted client's ACKs go nowhere: its boot fails).
   * Returns false when the share is full of such young ones: the new request then goes unanswered, so its client
   * repeats it (as PXE ROMs do) once the share has room.
   */
  private evictUnanswered(maxUnanswered: number): boolean {
    let unanswered = 0;
    let oldest: Slot | null = null;
    for (const slot of this.slots) { // insertion order: oldest first
      if (slot.transfer && (slot.transfer.progressed || slot.transfer.repeated || slot.transfer.ending)) continue;
      unanswered++;
      oldest ??= slot;
    }
    if (unanswered < maxUnanswered || !oldest) return true;
    if (Date.now() - oldest.acceptedAt < 2 * (this.opts.defaultTimeoutMs ?? 1000)) return false;
    this.log.debug({ client: `${oldest.peer.address}:${oldest.peer.port}`, unanswered, limit: maxUnanswered },
      'tftp: unanswered requests hold their share of the slots; the oldest one ends to make room');
    // a flood must not become a log flood: one warning per 10 s with the count
    this.evictions++;
    const t = Date.now();
    if (t - this.evictionsLoggedAt >= 10_000) {
      this.log.warn({ evicted: this.evictions, unanswered, limit: maxUnanswered },
        `tftp: ${this.evictions} unanswered requests evicted to make room for new ones (spoofed requests, or clients that vanish?)`);
      this.evictions = 0;
      this.evictionsLoggedAt = t;
    }
    this.freeSlot(oldest);
    oldest.evicted = true;
    oldest.transfer?.evict(); // a request still opening its file sees `evicted` and stops
    return true;
  }

  private async startRead(request: RequestPacket, raw: Buffer, peer: Peer, via: dgram.Socket): Promise<void> {
    const endpoint = `${peer.address}:${peer.port}`;
    const existing = this.byEndpoint.get(endpoint);
    if (existing && !existing.progressed && existing.requestBytes.equals(raw)) {
      // the client repeated its request before our first answer reached it (or before it could take it in): that
      // transfer answers it, and the client, there after all, gets all its retries and keeps its slot
      existing.requestRepeated();
      this.log.debug({ client: endpoint, file: request.filename }, 'tftp repeated request: the transfer under way answers it');
      return;
    }
    const mode = parseMode(request.mode);
    if (!mode) {
      this.metrics.transfers.inc({ outcome: 'refused' });
      this.replyError(via, peer, TFTP_ERROR.illegalOperation, `transfer mode "${request.mode}" is not supported (octet, netascii)`);
      return;
    }
    const maxTotal = this.opts.maxTransfers ?? 256;
    const maxPerClient = this.opts.maxTransfersPerClient ?? 16;
    const held = this.perClient.get(peer.address) ?? 0;
    if (held >= maxPerClient) {
      this.metrics.transfers.inc({ outcome: 'busy' });
      const why = `${held} transfers to ${peer.address} already (limit ${maxPerClient})`;
      this.log.warn({ client: endpoint, file: request.filename }, `tftp request refused: ${why}`);
      this.replyError(via, peer, TFTP_ERROR.notDefined, `server busy: ${why}; try again later`);
      return;
    }
    const room = this.evictUnanswered(this.opts.maxUnansweredTransfers ?? Math.max(1, Math.floor(maxTotal / 2)));
    if (this.slotsInUse >= maxTotal || !room) {
      // Every slot is in use (a rack powering on at once), or the unanswered share is full of requests still
      // within their first round: no answer, so the client repeats its request after its timeout, as PXE ROMs and
      // iPXE do, and gets a slot once transfers end. An ERROR would end its boot: firmware does not retry after
      // one. One warning per 10 s with the count, not a line per request.
      this.metrics.transfers.inc({ outcome: 'busy' });
      this.busyDropped++;
      const t = Date.now();
      if (t - this.busyLoggedAt >= 10_000) {
        this.log.warn({ dropped: this.busyDropped, limit: maxTotal, inUse: this.slotsInUse, why: room ? 'all slots busy' : 'unanswered share full' },
          `tftp: ${this.busyDropped} requests left unanswered so their clients retry: ${room ? `all ${maxTotal} transfer slots busy (--tftp-max-transfers to raise it)` : `the ${Math.max(1, Math.floor(maxTotal / 2))} slots for clients that have not answered yet are full (a rack booting at once, or spoofed requests; half of --tftp-max-transfers may be unanswered, so for N machines powering on together set it to 2 × N)`}`);
        this.busyDropped = 0;
        this.busyLoggedAt = t;
      }
      return;
    }
    // hold the slot from now on, so concurrent requests cannot overshoot the caps while files open
    const slot: Slot = { peer, transfer: null, evicted: false, acceptedAt: Date.now() };
    this.slots.add(slot);
    this.slotsInUse++;
    this.perClient.set(peer.address, held + 1);
    const evicted = () => {
      if (slot.evicted) this.log.debug({ client: endpoint, file: request.filename }, 'tftp request evicted before its transfer began');
      return slot.evicted;
    };
    let slotHandedOver = false;
    let source: ByteSource | null = null;
    let netasciiBytes = 0;
    const maxTransferMs = this.opts.maxTransferMs ?? 600_000;
    try {
      const local = await this.localAddressFor(via, peer);
      const budget = this.opts.netasciiBudgetBytes ?? 16 << 20;
      const opened = await openRequestedFile(request.filename, mode, peer, {
        roots: this.opts.roots, virtualFiles: this.opts.virtualFiles, local, maxNetasciiBytes: this.opts.maxNetasciiBytes,
        netasciiBudget: {
          reserve: (n) => { if (this.netasciiHeld + n > budget) return false; this.netasciiHeld += n; return true; },
          release: (n) => { this.netasciiHeld -= n; },
        },
      });
      source = opened.source;
      netasciiBytes = opened.netasciiBytes;
      if (evicted()) return;
      const maxBlksize = 'blksize' in request.options
        ? await (this.opts.maxBlksize ?? ((c: Peer) => maxBlksizeTowards(c.address, c.port)))(peer)
        : 512;
      if (evicted()) return;
      const negotiated = negotiateOptions(request.options, source.size, {
        maxBlksize,
        maxWindowsize: this.opts.maxWindowsize ?? 64,
        maxWindowBytes: this.opts.maxWindowBytes,
        defaultTimeoutMs: this.opts.defaultTimeoutMs ?? 1000,
        maxTimeoutSeconds: this.opts.maxTimeoutSeconds,
      });
      const session = new TransferSession({
        size: source.size, blksize: negotiated.blksize, windowsize: negotiated.windowsize, oack: negotiated.oack,
        maxRetries: this.opts.maxRetries ?? 5, maxUnansweredRetries: this.opts.maxUnansweredRetries,
      });
      const info: TransferInfo = { file: opened.name, local, origin: opened.origin, mac: opened.mac, mode, requested: request.options };
      const bindHost = via.address().address;
      const loop = (this.opts.transferLoop ?? 'auto') === 'auto' && source instanceof FileSource && mode === 'octet' ? nativeTransferLoop() : null;
      if (loop && source instanceof FileSource) {
        if (this.closing) throw new Error('server closing');
        const size = source.size;
        const transfer: NativeTransfer = new NativeTransfer(loop, peer, raw, {
          fd: source.fd, size: source.size, host: bindHost, client: peer.address, clientPort: peer.port,
          blksize: negotiated.blksize, windowsize: negotiated.windowsize, timeoutMs: negotiated.timeoutMs,
          maxRetries: this.opts.maxRetries ?? 5, maxUnansweredRetries: this.opts.maxUnansweredRetries ?? DEFAULT_MAX_UNANSWERED_RETRIES,
          maxTransferMs, oack: negotiated.oack ? encodeOack(negotiated.oack) : null,
        }, (r) => this.endNative(transfer, slot, endpoint, info, negotiated.blksize, negotiated.windowsize, size, r));
        slot.transfer = transfer;
        slotHandedOver = true;
        void source.close().catch(() => {}); // the loop reads its own duplicate of the descriptor
        source = null;
        this.track(transfer, endpoint);
        return;
      }
      const socket = dgram.createSocket({ type: socketType(bindHost), lookup: literalLookup });
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, bindHost, () => { socket.off('error', reject); resolve(); });
      });
      if (this.closing) {
        socket.close();
        throw new Error('server closing');
      }
      if (evicted()) { socket.close(); return; }
      const held = netasciiBytes;
      const transfer = new Transfer(peer, raw, socket, session, source, negotiated.timeoutMs, maxTransferMs, info,
        this.metrics, this.log, (t) => { this.netasciiHeld -= held; this.release(t, slot, endpoint); });
      slot.transfer = transfer;
      slotHandedOver = true;
      netasciiBytes = 0;
      this.track(transfer, endpoint);
      transfer.begin();
    } catch (err) {
      if (source) void source.close().catch(() => {});
      if (err instanceof TftpFileError) {
        const busy = err.message.startsWith('server busy');
        this.metrics.transfers.inc({ outcome: err.code === TFTP_ERROR.fileNotFound ? 'not_found' : busy ? 'busy' : 'refused' });
        this.log.info({ client: endpoint, file: request.filename, code: err.code }, `tftp request refused: ${err.message}`);
        this.replyError(via, peer, err.code, err.message);
      } else {
        this.metrics.transfers.inc({ outcome: 'failed' });
        this.log.error({ err, client: endpoint, file: request.filename }, 'tftp request failed');
        this.replyError(via, peer, TFTP_ERROR.notDefined, `server error: ${(err as Error).message}`);
      }
    } finally {
      this.netasciiHeld -= netasciiBytes;
      if (!slotHandedOver) this.freeSlot(slot);
    }
  }

  private track(t: ActiveTransfer, endpoint: string): void {
    this.transfers.add(t);
    this.byEndpoint.set(endpoint, t);
    this.metrics.active.set(this.transfers.size);
  }

  private endNative(t: NativeTransfer, slot: Slot, endpoint: string, info: TransferInfo, blksize: number, windowsize: number, size: number, r: NativeTransferResult): void {
    try {
      this.reportNative(t, endpoint, info, blksize, windowsize, size, r);
    } catch (err) {
      this.log.error({ err, client: endpoint }, 'tftp transfer report failed');
    } finally {
      this.release(t, slot, endpoint);
    }
  }

  private reportNative(t: NativeTransfer, endpoint: string, info: TransferInfo, blksize: number, windowsize: number, size: number, r: NativeTransferResult): void {
    this.metrics.sentBytes.inc(r.bytesSent);
    this.metrics.retransmittedBlocks.inc(r.retransmitted);
    if (r.strays) this.metrics.badPackets.inc({ reason: 'unknown_tid' }, r.strays);
    if (r.malformed) this.metrics.badPackets.inc({ reason: 'malformed' }, r.malformed);
    if (r.unexpected) this.metrics.badPackets.inc({ reason: 'unexpected' }, r.unexpected);
    reportEnd(this.log, this.metrics, {
      loop: 'native', client: endpoint, info, blksize, windowsize, size, bytes: Math.min(r.acked * blksize, size),
      startedAt: t.startedAt, retransmitted: r.retransmitted, outcome: r.outcome, reason: r.reason,
    });
  }

  private release(t: ActiveTransfer, slot: Slot, endpoint: string): void {
    this.transfers.delete(t);
    if (this.byEndpoint.get(endpoint) === t) this.byEndpoint.delete(endpoint);
    this.freeSlot(slot);
    this.metrics.active.set(this.transfers.size);
  }

  /** Gives a slot back (once: a slot evicted earlier is not counted again when its transfer ends). */
  private freeSlot(slot: Slot): void {
    if (!this.slots.delete(slot)) return;
    const address = slot.peer.address;
    this.slotsInUse--;
    const n = (this.perClient.get(address) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(address);
    else this.perClient.set(address, n);
  }
}

export async function createTftpServer(opts: TftpServerOptions): Promise<TftpServer> {
  const server = new TftpServer(opts);
  await server.listen();
  return server;
}
