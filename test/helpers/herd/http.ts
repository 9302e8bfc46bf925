/**
 * HTTP for the herd: every request leaves from the machine's own address.
 *
 * Downloads (boot script, kernel, initramfs, the whole disk) go through HttpConnection: one keep-alive TCP
 * connection, HTTP/1.1 parsed here, the body read straight from the socket into one reusable buffer (net's
 * `onread`: no Buffer per read, no stream machinery, no http.IncomingMessage). Five hundred machines receiving
 * gigabytes on the server's own two cores must cost the simulator little per byte, or a slow simulator is
 * measured instead of the server. The body is counted, hashed only when asked (the disk), kept only when asked
 * (scripts). The agent API's small JSON posts use node:http as the agent does (postJsonFrom).
 */
import http from 'node:http';
import net from 'node:net';
import { createHash, type Hash } from 'node:crypto';
import type { PostJson } from '../../../init/agent/reporter.ts';

export const machineAgent = (localAddress: string, keepAlive: boolean): http.Agent =>
  new http.Agent({ keepAlive, maxSockets: keepAlive ? 1 : 8, localAddress } as http.AgentOptions);

export interface GetOptions {
  /** Keep the body (else it is counted, hashed if asked, and dropped). */
  keep?: boolean;
  /**
   * With keep: the bytes the caller expects (a chunk this process already verified). Compared as they arrive;
   * when every byte matches, that very buffer is the body (no allocation: 500 machines' copies of one disk need
   * not each take memory); from the first difference on, the body is a copy of what really came.
   */
  expect?: Buffer;
  /** Refuse a body longer than this. */
  maxBytes?: number;
  hash?: boolean;
  headers?: Record<string, string>;
  token?: string;
  onData?: (n: number) => void;
}

export interface GetResult { status: number; bytes: number; sha256: string | null; body: Buffer | null; headers: Record<string, string> }

/** One read buffer for every connection of this process: onread callbacks run one at a time, each consumes its bytes before returning. */
const READ_BUFFER = Buffer.allocUnsafe(256 << 10);

interface Pending {
  url: string;
  resolve: (r: GetResult) => void;
  reject: (e: Error) => void;
  keep: boolean;
  expect: Buffer | null;
  /** Whether every byte so far equals `expect`'s. */
  matching: boolean;
  /** The copy (keep without expect, or expect after a difference), preallocated to Content-Length when known. */
  copy: Buffer | null;
  maxBytes: number;
  hash: Hash | null;
  onData?: (n: number) => void;
  head: Buffer[];
  headBytes: number;
  status: number;
  headers: Record<string, string>;
  /** 'head' until the blank line; then 'length' (remaining), 'chunked' (chunk state) or 'close' (to EOF). */
  body: 'head' | 'length' | 'chunked' | 'close';
  remaining: number;
  chunk: { size: number; line: string; state: 'size' | 'data' | 'data-crlf' | 'trailer' };
  bytes: number;
  kept: Buffer[];
}

/** A keep-alive HTTP/1.1 connection from `localAddress`; requests one after the other (as iPXE makes them). */
export class HttpConnection {
  private sock: net.Socket | null = null;
  private host = '';
  private port = 0;
  private p: Pending | null = null;

  constructor(readonly localAddress: string, readonly timeoutMs = 60_000) {}

  get(url: string, o: GetOptions = {}): Promise<GetResult> {
    if (this.p) return Promise.reject(new Error(`GET ${url}: the connection is busy with ${this.p.url}`));
    const u = new URL(url);
    if (u.protocol !== 'http:') return Promise.reject(new Error(`GET ${url}: only http:// is fetched by the herd`));
    const port = Number(u.port || 80);
    if (this.sock && (this.host !== u.hostname || this.port !== port)) this.destroy();
    return new Promise<GetResult>((resolve, reject) => {
      this.p = {
        url, resolve, reject, keep: !!o.keep, expect: o.expect ?? null, matching: !!o.expect, copy: null, maxBytes: o.maxBytes ?? Infinity,
        hash: o.hash ? createHash('sha256') : null, onData: o.onData,
        head: [], headBytes: 0, status: 0, headers: {}, body: 'head', remaining: 0, chunk: { size: 0, line: '', state: 'size' }, bytes: 0, kept: [],
      };
      const req = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUser-Agent: ironboot-herd\r\n`
        + `${o.token ? `Authorization: Bearer ${o.token}\r\n` : ''}${Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
      if (!this.sock) this.open(u.hostname, port);
      this.sock!.write(req);
    });
  }

  /** Closes the connection; a request still under way fails. */
  destroy(): void {
    this.sock?.destroy();
    this.sock = null;
    if (this.p) this.fail(new Error('connection destroyed'));
  }

  private open(host: string, port: number): void {
    this.host = host; this.port = port;
    const sock = net.connect({
      host, port, localAddress: this.localAddress, noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => { this.onBytes(buf as Buffer, n); return true; } },
    } as net.NetConnectOpts);
    sock.setTimeout(this.timeoutMs, () => this.fail(new Error(`no data for ${this.timeoutMs} ms`)));
    // events of a connection this one has already let go of (closed after a response) are not the current request's
    sock.on('error', (e) => { if (this.sock === sock) this.fail(e); });
    sock.on('end', () => {
      if (this.sock !== sock) return;
      if (this.p?.body === 'close') { this.sock = null; sock.destroy(); this.finish(); } else this.fail(new Error('the server closed the connection mid-response'));
    });
    sock.on('close', () => { if (this.sock !== sock) return; this.sock = null; if (this.p) this.fail(new Error('connection closed')); });
    this.sock = sock;
  }

  private fail(e: Error): void {
    const p = this.p;
    this.p = null;
    this.sock?.destroy();
    this.sock = null;
    if (p) p.reject(new Error(`GET ${p.url}: ${e.message}`));
  }

  private finish(): void {
    const p = this.p!;
    this.p = null;
    const headers = p.headers;
    if (this.sock && (headers.connection?.toLowerCase() === 'close')) this.destroy();
    let body: Buffer | null = null;
    if (p.keep) {
      if (p.matching && p.expect && p.bytes === p.expect.length) body = p.expect;
      else if (p.copy) body = p.copy.length === p.bytes ? p.copy : p.copy.subarray(0, p.bytes);
      else body = Buffer.concat(p.kept);
    }
    p.resolve({ status: p.status, bytes: p.bytes, sha256: p.hash ? p.hash.digest('hex') : null, body, headers });
  }

  private onBytes(buf: Buffer, n: number): void {
    let data = buf.subarray(0, n);
    const p = this.p;
    if (!p) { this.destroy(); return; } // bytes nobody asked for
    if (p.body === 'head') {
      p.head.push(Buffer.from(data)); // READ_BUFFER is reused: copy
      p.headBytes += data.length;
      const all = p.head.length === 1 ? p.head[0] : Buffer.concat(p.head);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) {
        if (p.headBytes > 64 << 10) this.fail(new Error('response head larger than 64 KiB'));
        else p.head = [all];
        return;
      }
      const lines = all.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0]);
      if (!m) return this.fail(new Error(`not an HTTP response: ${JSON.stringify(lines[0].slice(0, 80))}`));
      p.status = Number(m[2]);
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) p.headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      if (m[1] === '0') p.headers.connection ??= 'close';
      if (/chunked/i.test(p.headers['transfer-encoding'] ?? '')) p.body = 'chunked';
      else if (p.headers['content-length'] !== undefined) { p.body = 'length'; p.remaining = Number(p.headers['content-length']); }
      else p.body = 'close';
      if (p.body === 'length' && p.remaining > p.maxBytes) return this.fail(new Error(`more than ${p.maxBytes} bytes`));
      if (p.keep && p.body === 'length' && (!p.expect || p.expect.length !== p.remaining)) { p.matching = false; p.copy = Buffer.allocUnsafe(p.remaining); }
      data = all.subarray(end + 4);
      if (p.body === 'length' && p.remaining === 0) return this.finish();
    }
    if (data.length) this.onBody(p, data);
  }

  private take(p: Pending, d: Buffer): void {
    if (!d.length) return;
    const at = p.bytes;
    p.bytes += d.length;
    if (p.bytes > p.maxBytes) return this.fail(new Error(`more than ${p.maxBytes} bytes`));
    p.hash?.update(d);
    if (p.keep) {
      if (p.matching && p.expect!.length >= p.bytes && p.expect!.compare(d, 0, d.length, at, p.bytes) === 0) { /* still the expected bytes */ } else {
        if (p.matching) { // the first difference: what came so far was the expected bytes
          p.matching = false;
          p.copy = Buffer.allocUnsafe(Math.max(p.body === 'length' ? at + p.remaining : 0, p.bytes));
          p.expect!.copy(p.copy, 0, 0, at);
        }
        if (p.copy) {
          if (p.copy.length < p.bytes) { const g = Buffer.allocUnsafe(Math.max(p.bytes, p.copy.length * 2)); p.copy.copy(g, 0, 0, at); p.copy = g; }
          d.copy(p.copy, at);
        } else p.kept.push(Buffer.from(d));
      }
    }
    p.onData?.(p.bytes);
  }

  private onBody(p: Pending, data: Buffer): void {
    if (p.body === 'close') return this.take(p, data);
    if (p.body === 'length') {
      const n = Math.min(p.remaining, data.length);
      this.take(p, data.subarray(0, n));
      p.remaining -= n;
      if (p.remaining === 0) this.finish();
      return;
    }
    // chunked: size line, data, CRLF, … a zero size, trailers, blank line
    let i = 0;
    const c = p.chunk;
    while (i < data.length && this.p === p) {
      if (c.state === 'data') {
        const n = Math.min(c.size, data.length - i);
        this.take(p, data.subarray(i, i + n));
        c.size -= n; i += n;
        if (c.size === 0) { c.state = 'data-crlf'; c.line = ''; }
        continue;
      }
      const nl = data.indexOf(10, i);
      c.line += data.subarray(i, nl < 0 ? data.length : nl + 1).toString('latin1');
      i = nl < 0 ? data.length : nl + 1;
      if (nl < 0) continue;
      const line = c.line.trim();
      c.line = '';
      if (c.state === 'data-crlf') { c.state = 'size'; continue; }
      if (c.state === 'trailer') { if (line === '') this.finish(); continue; }
      const size = parseInt(line.split(';')[0], 16);
      if (Number.isNaN(size)) return this.fail(new Error(`bad chunk size line ${JSON.stringify(line.slice(0, 40))}`));
      if (size === 0) c.state = 'trailer'; else { c.size = size; c.state = 'data'; }
    }
  }
}

/** init/agent/reporter.ts's postJson, but from the machine's address (the agent's own sends from its only one). */
export function postJsonFrom(agent: http.Agent): PostJson {
  return (url, token, body, timeoutMs) => new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(url, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': data.length, authorization: `Bearer ${token}` },
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * Keep-alive HttpConnections from one address, at most `maxPerHost` to each host:port (as an http.Agent's
 * maxSockets), each used by one request at a time; a connection the server closed is replaced.
 */
export class HttpPool {
  private idle = new Map<string, HttpConnection[]>();
  private busy = new Map<string, number>();
  private queue = new Map<string, (() => void)[]>();
  private all = new Set<HttpConnection>();

  constructor(readonly localAddress: string, readonly maxPerHost: number) {}

  async get(url: string, o: GetOptions & { deadlineMs?: number } = {}): Promise<GetResult> {
    const key = new URL(url).host;
    while ((this.busy.get(key) ?? 0) >= this.maxPerHost) await new Promise<void>((r) => this.queue.set(key, [...(this.queue.get(key) ?? []), r]));
    this.busy.set(key, (this.busy.get(key) ?? 0) + 1);
    const c = this.idle.get(key)?.pop() ?? new HttpConnection(this.localAddress);
    this.all.add(c);
    // a whole-request deadline (init/agent/steps/peers.ts's: a peer that trickles is as bad as one that stalls)
    let timer: NodeJS.Timeout | undefined;
    const deadline = o.deadlineMs === undefined ? null : new Promise<never>((_r, reject) => {
      timer = setTimeout(() => { reject(new Error(`GET ${url}: not done within ${o.deadlineMs} ms`)); c.destroy(); }, o.deadlineMs);
    });
    try {
      const r = await (deadline ? Promise.race([c.get(url, o), deadline]) : c.get(url, o));
      (this.idle.get(key) ?? this.idle.set(key, []).get(key)!).push(c);
      return r;
    } catch (e) {
      c.destroy(); this.all.delete(c);
      throw e;
    } finally {
      clearTimeout(timer);
      this.busy.set(key, this.busy.get(key)! - 1);
      this.queue.get(key)?.shift()?.();
    }
  }

  destroy(): void { for (const c of this.all) c.destroy(); this.all.clear(); this.idle.clear(); }
}
