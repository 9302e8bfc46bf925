/**
 * IPMI v2.0 lanplus over UDP: the socket side of session.ts. One session per call (open, commands, close),
 * every wait bounded (per-datagram timeout, a few resends), nothing synchronous: a dead BMC costs a timer,
 * never the event loop. ICMP port-unreachable surfaces as an 'unreachable' IpmiError at once (connected socket).
 */
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';
import { RmcpPlusSession, IpmiError, NetFn, Cmd, ccText, type SessionCredentials } from './session.ts';
import { IpmiDecodeError, type IpmiResponse } from './packet.ts';

export interface IpmiTarget { host: string; port: number }
export interface IpmiClientOptions {
  /** Wait for one reply (default 1000 ms); doubled on each resend. */
  timeoutMs?: number;
  /** Sends per datagram before giving up (default 3). */
  attempts?: number;
}

export type ChassisControl = 'off' | 'on' | 'cycle' | 'reset' | 'soft';
const CONTROL_CODE: Record<ChassisControl, number> = { off: 0, on: 1, cycle: 2, reset: 3, soft: 5 };

/** A socket bound to one BMC, yielding datagrams to whoever waits. */
class BmcSocket {
  private sock: dgram.Socket;
  private queue: Buffer[] = [];
  private waiter: ((b: Buffer | Error) => void) | null = null;
  private failure: Error | null = null;

  private constructor(sock: dgram.Socket, private target: IpmiTarget) {
    this.sock = sock;
    sock.on('message', (m) => {
      if (this.waiter) { const w = this.waiter; this.waiter = null; w(m); } else if (this.queue.length < 64) this.queue.push(m);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const e = err.code === 'ECONNREFUSED'
        ? new IpmiError('unreachable', `${target.host}:${target.port} refused the datagram (ICMP port unreachable): nothing listens there`)
        : new IpmiError('unreachable', `${target.host}:${target.port}: ${err.code ?? err.message}`);
      this.failure = e;
      if (this.waiter) { const w = this.waiter; this.waiter = null; w(e); }
    });
  }

  static async open(target: IpmiTarget): Promise<BmcSocket> {
    const sock = dgram.createSocket(isIPv6(target.host) ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(target.port, target.host, () => { sock.off('error', reject); resolve(); });
    }).catch((err: NodeJS.ErrnoException) => {
      sock.close();
      throw new IpmiError('unreachable', `cannot reach ${target.host}:${target.port}: ${err.code ?? err.message}`);
    });
    return new BmcSocket(sock, target);
  }

  send(b: Buffer): void {
    if (this.failure) throw this.failure;
    this.sock.send(b);
  }

  /** The next datagram, or null when `ms` pass first. */
  receive(ms: number): Promise<Buffer | null> {
    if (this.failure) return Promise.reject(this.failure);
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null; resolve(null); }, ms);
      this.waiter = (b) => { clearTimeout(timer); if (b instanceof Error) reject(b); else resolve(b); };
    });
  }

  close(): void { try { this.sock.close(); } catch { /* closed */ } }
}

export class IpmiClient {
  private timeoutMs: number;
  private attempts: number;

  constructor(readonly target: IpmiTarget, private creds: SessionCredentials, opts: IpmiClientOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.attempts = opts.attempts ?? 3;
  }

  /** Opens a session, runs fn with a command function, closes the session (also when fn throws). */
  async withSession<T>(fn: (command: (netFn: number, cmd: number, data?: number[]) => Promise<IpmiResponse>) => Promise<T>): Promise<T> {
    const sock = await BmcSocket.open(this.target);
    const session = new RmcpPlusSession(this.creds);
    try {
      while (!session.established) await this.exchange(sock, () => session.next(), (d) => session.receive(d), session.step);
      const command = async (netFn: number, cmd: number, data: number[] = []) => {
        let seq = -1;
        let reply: IpmiResponse | undefined;
        await this.exchange(sock, () => { const r = session.request(netFn, cmd, Buffer.from(data), seq < 0 ? undefined : seq); seq = r.seq; return r.packet; }, (d) => {
          const r = session.response(d);
          if (!r || r.seq !== seq || r.cmd !== cmd) return false;
          reply = r;
          return true;
        }, `command 0x${netFn.toString(16)}/0x${cmd.toString(16)}`);
        return reply!;
      };
      try {
        return await fn(command);
      } finally {
        // also after a refused command: a BMC has few session slots per user
        try { sock.send(session.close()); await sock.receive(200); } catch { /* best effort: the BMC times the session out */ }
      }
    } finally {
      sock.close();
    }
  }

  /** Sends make() until accept() takes a reply; resends with a doubled wait; throws a timeout IpmiError. */
  private async exchange(sock: BmcSocket, make: () => Buffer, accept: (d: Buffer) => boolean, what: string): Promise<void> {
    let wait = this.timeoutMs;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      sock.send(make());
      const deadline = Date.now() + wait;
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        const d = await sock.receive(left);
        if (!d) break;
        try {
          if (accept(d)) return;
        } catch (err) {
          if (err instanceof IpmiDecodeError) continue; // garbage: counted as no reply
          throw err;
        }
      }
      wait *= 2;
    }
    throw new IpmiError('timeout', `no answer from ${this.target.host}:${this.target.port} to ${what} after ${this.attempts} tries`);
  }

  private static check(r: IpmiResponse, what: string): IpmiResponse {
    if (r.completionCode !== 0) throw new IpmiError('command', `${what} failed: ${ccText(r.completionCode)}`);
    return r;
  }

  async powerStatus(): Promise<'on' | 'off'> {
    return this.withSession(async (command) => {
      const r = IpmiClient.check(await command(NetFn.Chassis, Cmd.GetChassisStatus), 'Get Chassis Status');
      if (r.data.length < 1) throw new IpmiError('protocol', 'Get Chassis Status answered without data');
      return (r.data[0] & 0x01) ? 'on' : 'off';
    });
  }

  async chassisControl(action: ChassisControl): Promise<void> {
    await this.withSession(async (command) => {
      IpmiClient.check(await command(NetFn.Chassis, Cmd.ChassisControl, [CONTROL_CODE[action]]), `Chassis Control ${action}`);
    });
  }

  /** Boot flags (parameter 5): valid, next boot only, force PXE; `efi` asks for an EFI boot. */
  async setBootPxe(opts: { efi?: boolean } = {}): Promise<void> {
    await this.withSession(async (command) => {
      IpmiClient.check(await command(NetFn.Chassis, Cmd.SetSystemBootOptions, [0x05, 0x80 | (opts.efi ? 0x20 : 0), 0x04, 0x00, 0x00, 0x00]), 'Set System Boot Options (boot flags: PXE)');
    });
  }

  /** The boot device the next boot will use, from boot flags parameter 5 ('pxe', 'disk', 'none', …). */
  async bootDevice(): Promise<string> {
    return this.withSession(async (command) => {
      const r = IpmiClient.check(await command(NetFn.Chassis, Cmd.GetSystemBootOptions, [0x05, 0x00, 0x00]), 'Get System Boot Options');
      const dev = ((r.data[3] ?? 0) >> 2) & 0x0f;
      return ({ 0: 'none', 1: 'pxe', 2: 'disk', 3: 'safe', 4: 'diag', 5: 'cdrom', 6: 'bios' } as Record<number, string>)[dev] ?? `device ${dev}`;
    });
  }
}
