/**
 * Read transfers of files on disk through the native transfer loop (native/transfer_loop.cc): a thread per
 * transfer with its own UDP socket, a window per sendmmsg(2) and a pread(2) per window, taking the same
 * decisions as TransferSession (session.ts). Virtual files, streams and netascii stay on the JS loop
 * (server.ts `Transfer`); so does everything when the addon is not built (deploy/build-native.sh builds it).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon, type LoadedAddon } from '../native-addon.ts';
import type { TransferOutcome } from './session.ts';

export interface NativeStartOptions {
  /** An open file descriptor of the file (the loop reads a duplicate; the caller may close its own). */
  fd: number;
  size: number;
  /** Local address to send from (the request socket's), port chosen by the kernel. */
  host: string;
  client: string;
  clientPort: number;
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  maxRetries: number;
  /** Timeouts in a row before giving up while the client has answered nothing. */
  maxUnansweredRetries: number;
  /** Longest the transfer may last (then ERROR 0 and the end, outcome timeout). */
  maxTransferMs: number;
  /** The OACK packet to send first, or null. */
  oack: Buffer | null;
}

export interface NativeTransferResult {
  outcome: TransferOutcome;
  reason: string;
  /** Highest absolute block acknowledged, and sent. */
  acked: number;
  sent: number;
  retransmitted: number;
  /** DATA payload bytes sent, retransmissions included. */
  bytesSent: number;
  /** Datagrams from other endpoints (answered with ERROR 5), malformed ones, and valid but out-of-place ones. */
  strays: number;
  malformed: number;
  unexpected: number;
  localPort: number;
}

interface Addon {
  start(opts: NativeStartOptions & { state: Buffer }, done: (r: NativeTransferResult) => void): unknown;
  /** why: 1 = server closing (outcome failed), 2 = evicted (outcome timeout, nothing sent). */
  cancel(handle: unknown, why?: number): void;
}

let loaded: LoadedAddon<Addon> | undefined;

/** The addon, or null (with the reason in nativeLoopUnavailable()) when it is not built or does not load. */
export function nativeTransferLoop(): Addon | null {
  loaded ??= loadAddon<Addon>(join(dirname(fileURLToPath(import.meta.url)), 'native'), 'ironboot_tftp_native');
  return loaded.addon;
}

export function nativeLoopUnavailable(): string { return loaded?.why ?? ''; }

/** One transfer running in the native loop. */
export class NativeTransfer {
  readonly startedAt = process.hrtime.bigint();
  private readonly state = new Uint32Array(new SharedArrayBuffer(8)); // [0] answered (native), [1] request repeated (here)
  private readonly handle: unknown;
  private finished = false;
  private cancelled = false;

  constructor(
    private readonly loop: Addon,
    readonly peer: { address: string; port: number },
    /** The request that started it (a repeat of it before any answer is ignored). */
    readonly requestBytes: Buffer,
    opts: NativeStartOptions,
    onDone: (r: NativeTransferResult) => void,
  ) {
    this.handle = loop.start({ ...opts, state: Buffer.from(this.state.buffer) }, (r) => {
      this.finished = true;
      onDone(r);
    });
  }

  /** True once the client answered anything (then a repeated request is a new one). */
  get progressed(): boolean { return Atomics.load(this.state, 0) === 1; }

  /** The requester repeated its request before answering: it is there (see TransferSession.requestRepeated). */
  requestRepeated(): void { Atomics.store(this.state, 1, 1); }

  get repeated(): boolean { return Atomics.load(this.state, 1) === 1; }

  /** Ends the transfer without telling the client (server shutdown); the result follows within 50 ms. */
  abort(): void {
    if (!this.finished) this.loop.cancel(this.handle, 1);
    this.cancelled = true;
  }

  get ending(): boolean { return this.finished || this.cancelled; }

  /** Ends a transfer whose client never answered (its slot goes to a new request); the result follows within 50 ms. */
  evict(): void {
    if (!this.finished && !this.cancelled) this.loop.cancel(this.handle, 2);
    this.cancelled = true;
  }
}
