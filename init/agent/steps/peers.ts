/**
 * Peer-to-peer disk fetching, the agent's side (server/p2p is the server's):
 *
 *   fetchChunks   the compressed disk file chunk by chunk, in order, a small window in flight: each chunk from the
 *                 peer the server's tracker names (GET /agent/v1/peers) or else from the server (a Range request);
 *                 every chunk's sha256 is checked against the manifest before it is yielded. A peer whose chunk is
 *                 bad, missing or late is reported (POST /agent/v1/chunks) and the chunk fetched from the server.
 *   HeldChunks    the verified chunks this agent keeps in memory to serve (only when the file is below a cap), and
 *                 the chunks it is still fetching (a peer asking for one of those waits for it).
 *   servePeers    GET /p2p/<file sha256>/<n> on a fixed port, only verified chunks, only with the file's peer token.
 *
 * The agent reports chunks held as they are verified, so the tracker can send later machines here.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { MAX_REDIRECTS, redirectTarget } from '../redirect.ts';
import { readFileSync } from 'node:fs';
import { AGENT_API_PREFIX, P2P_MAX_QUERY, type ChunkManifest, type ChunkReport, type PeersReply } from '../../../server/agent/api.ts';
import type { PostJson } from '../reporter.ts';

export interface FetchReply { status: number; body: Buffer; headers: http.IncomingHttpHeaders }

/** GET url → the whole body (at most `maxBytes`, else an error); `agent` for the source address (the herd) or TLS. */
export type FetchBuffer = (url: string, headers: Record<string, string>, timeoutMs: number, maxBytes: number) => Promise<FetchReply>;

/**
 * How long a peer gets to accept the connection. A peer that is gone (powered off, rebooted into its OS) still
 * holds chunks in the tracker until its workflow ends; on a LAN its address then fails only after the kernel's ARP
 * tries (3 s), which a single machine's whole disk phase measured (test/bench/boot.ts: stream 1.0 → 4.0 s). A
 * live peer on the same segment accepts in well under this even under a rack's load; one that does not is
 * reported (suspended, not banned) and the chunk comes from the server.
 */
export const PEER_CONNECT_TIMEOUT_MS = 750;

export function fetchBufferWith(agents: { http?: http.Agent; https?: https.Agent; connectTimeoutMs?: number } = {}): FetchBuffer {
  const once = fetchOnce(agents);
  // a server chunk under --images-redirect: a 307 to a presigned S3 URL (init/agent/redirect.ts)
  return async (url, headers, timeoutMs, maxBytes) => {
    for (let hop = 0; ; hop++) {
      const r = await once(url, headers, timeoutMs, maxBytes);
      const next = redirectTarget(url, r.status, r.headers.location, headers);
      if (!next) return r;
      if (hop >= MAX_REDIRECTS) throw new Error(`GET ${url}: more than ${MAX_REDIRECTS} redirects`);
      ({ url, headers } = next);
    }
  };
}

function fetchOnce(agents: { http?: http.Agent; https?: https.Agent; connectTimeoutMs?: number }): FetchBuffer {
  return (url, headers, timeoutMs, maxBytes) => new Promise((resolve, reject) => {
    const tls = url.startsWith('https:');
    const req = (tls ? https : http).get(url, { headers, agent: tls ? agents.https : agents.http }, (res) => {
      const parts: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > maxBytes) { req.destroy(new Error(`GET ${url}: more than ${maxBytes} bytes`)); return; }
        parts.push(c);
      });
      res.on('end', () => { clearTimeout(deadline); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), headers: res.headers }); });
      res.on('error', (e) => { clearTimeout(deadline); reject(e); });
    });
    // a whole-request deadline, not an idle one: a peer that trickles is as bad as one that stalls
    const deadline = setTimeout(() => req.destroy(new Error(`GET ${url}: not done within ${timeoutMs} ms`)), timeoutMs);
    const connectMs = agents.connectTimeoutMs;
    if (connectMs) {
      req.on('socket', (sock) => {
        if (!sock.connecting) return; // a kept-alive connection
        const t = setTimeout(() => req.destroy(new Error(`GET ${url}: no connection within ${connectMs} ms`)), connectMs);
        sock.once('connect', () => clearTimeout(t));
        sock.once('close', () => clearTimeout(t));
      });
    }
    req.on('error', (e) => { clearTimeout(deadline); reject(e); });
  });
}

/** Whether this agent can keep a file of `size` bytes in memory to serve it: below min(1 GiB, 25 % of MemAvailable). */
export function keepChunksCap(meminfo = '/proc/meminfo'): number {
  let avail = 0;
  try { avail = Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync(meminfo, 'utf8'))?.[1] ?? 0) * 1024; } catch { /* no /proc: keep nothing */ }
  return Math.min(1 << 30, Math.floor(avail / 4));
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The verified chunks of one file this agent holds, and those it still expects (while its fetch runs). */
export class HeldChunks {
  private chunks: (Buffer | undefined)[];
  private waiters = new Map<number, ((b: Buffer | null) => void)[]>();
  private expecting = true;
  constructor(readonly manifest: ChunkManifest) { this.chunks = new Array(manifest.chunks.length); }

  /** Keeps a chunk; only one whose sha256 is the manifest's (the caller verified it; checked again, cheaply wrong otherwise). */
  put(n: number, b: Buffer, verified: string): void {
    if (verified !== this.manifest.chunks[n]) throw new Error(`chunk ${n}: not the manifest's sha256`);
    this.chunks[n] = b;
    for (const w of this.waiters.get(n) ?? []) w(b);
    this.waiters.delete(n);
  }

  has(n: number): boolean { return !!this.chunks[n]; }

  /** Chunk n, waiting up to `ms` for one still being fetched; null when it is not here and will not come. */
  get(n: number, ms: number): Promise<Buffer | null> {
    const b = this.chunks[n];
    if (b) return Promise.resolve(b);
    if (!this.expecting || n < 0 || n >= this.chunks.length) return Promise.resolve(null);
    return new Promise((resolve) => {
      const t = setTimeout(() => { const l = this.waiters.get(n); if (l) this.waiters.set(n, l.filter((x) => x !== done)); resolve(null); }, ms);
      const done = (x: Buffer | null) => { clearTimeout(t); resolve(x); };
      this.waiters.set(n, [...(this.waiters.get(n) ?? []), done]);
    });
  }

  /** The fetch ended (done or failed): nothing more will come; waiting peers get what is here. */
  settle(): void {
    this.expecting = false;
    for (const [n, ws] of this.waiters) for (const w of ws) w(this.chunks[n] ?? null);
    this.waiters.clear();
  }
}

export interface PeerServer { port: number; close(): Promise<void> }

/**
 * Serves the verified chunks of `files` (by file sha256) on host:port: GET /p2p/<sha256>/<n> with
 * `Authorization: Bearer <peer token>`. A chunk still being fetched is waited for up to `waitMs`.
 */
export function servePeers(files: Map<string, HeldChunks>, o: { host?: string; port: number; waitMs?: number; log?: (m: string) => void }): Promise<PeerServer> {
  const srv = http.createServer(async (req, res) => {
    const m = /^\/p2p\/([0-9a-f]{64})\/(\d{1,9})$/.exec(req.url ?? '');
    const held = m ? files.get(m[1]) : undefined;
    if (req.method !== 'GET' || !m || !held) { res.writeHead(404).end(); return; }
    const want = Buffer.from(`Bearer ${held.manifest.peerToken}`);
    const got = Buffer.from(String(req.headers.authorization ?? ''));
    if (got.length !== want.length || !timingSafeEqual(got, want)) { res.writeHead(401).end(); return; }
    const b = await held.get(Number(m[2]), o.waitMs ?? 15_000);
    if (!b) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.length });
    res.end(b);
  });
  srv.keepAliveTimeout = 30_000;
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(o.port, o.host, () => {
      srv.off('error', reject);
      srv.on('error', (e) => o.log?.(`peer server: ${e.message}`));
      const a = srv.address() as { port: number };
      resolve({
        port: a.port,
        close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
      });
    });
  });
}

export interface ChunkFetchOptions {
  manifest: ChunkManifest;
  /** The compressed file on the server (Range requests). */
  fileUrl: string;
  /** The server's base URL (…/agent/v1/peers, …/agent/v1/chunks). */
  server: string;
  /** The workflow's session token (server requests only; peers get the manifest's peer token). */
  token: string;
  fetch: FetchBuffer;
  /** For peers: its own agent (another socket pool than the server's). */
  fetchPeer?: FetchBuffer;
  post: PostJson;
  /** Where verified chunks are kept to serve (with the port they are served on); absent: this agent serves nobody. */
  hold?: { chunks: HeldChunks; port: number };
  /** Chunks in flight at once. */
  window?: number;
  /**
   * A peer chunk not received within this long is fetched from the server (and the peer reported slow); longer
   * than a peer server waits for a chunk it is still fetching (15 s), so a peer behind a slow one answers 404 first.
   */
  peerTimeoutMs?: number;
  serverTimeoutMs?: number;
  serverTries?: number;
  retryDelayMs?: number;
  log?: (m: string) => void;
}

export interface ChunkFetchStats {
  chunks: number;
  fromPeers: number;
  fromServer: number;
  peerBytes: number;
  serverBytes: number;
  /** Peer chunks refused: [chunk, peer, reason]. */
  badPeers: { chunk: number; peer: string; reason: 'hash' | 'error' | 'slow' }[];
  /** Chunk n came from this peer (null: the server). */
  sources: (string | null)[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The file's chunks, in order, each verified against the manifest. `stats` fills in as it goes. Fails only when
 * the server itself cannot deliver a chunk that verifies after `serverTries` tries.
 */
export async function* fetchChunks(o: ChunkFetchOptions, stats: ChunkFetchStats = newStats()): AsyncGenerator<Buffer> {
  const m = o.manifest;
  const count = m.chunks.length;
  const window = Math.max(1, Math.min(o.window ?? 8, P2P_MAX_QUERY));
  const log = o.log ?? (() => {});
  const fetchPeer = o.fetchPeer ?? o.fetch;
  const sources = new Map<number, Promise<string | null>>();
  const auth = { authorization: `Bearer ${o.token}` };
  let asked = 0;

  const query = (from: number, k: number): Promise<Map<number, string | null>> => {
    const q = `${o.server}${AGENT_API_PREFIX}/peers?file=${m.file}&from=${from}&count=${k}${o.hold ? `&port=${o.hold.port}` : ''}`;
    return o.fetch(q, auth, 10_000, 1 << 20).then((r) => {
      if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString().slice(0, 200)}`);
      return new Map((JSON.parse(r.body.toString()) as PeersReply).chunks.map((c) => [c.chunk, c.peer] as const));
    }).catch((e: Error) => { log(`peers query (chunks ${from}-${from + k - 1}) failed: ${e.message}; fetching them from the server`); return new Map<number, string | null>(); });
  };
  // sources for the next chunks, one query per window (a failed query: the server for those)
  const sourceOf = (n: number): Promise<string | null> => {
    if (!sources.has(n)) {
      const from = asked;
      const k = Math.min(count - from, window, P2P_MAX_QUERY);
      asked = from + k;
      const reply = query(from, k);
      for (let i = from; i < from + k; i++) sources.set(i, reply.then((map) => map.get(i) ?? null));
    }
    return sources.get(n)!;
  };

  // held chunks and bad peers go to the server in batches (a failed report is only logged: it costs sharing, not the disk)
  let pendingHave: number[] = [];
  let pendingBad: NonNullable<ChunkReport['bad']> = [];
  let flushing: Promise<void> | null = null;
  const flush = async (): Promise<void> => {
    while (flushing) await flushing;
    if (!pendingHave.length && !pendingBad.length) return;
    const body: ChunkReport = { file: m.file, have: pendingHave, ...(o.hold ? { port: o.hold.port } : {}), ...(pendingBad.length ? { bad: pendingBad } : {}) };
    pendingHave = []; pendingBad = [];
    flushing = o.post(`${o.server}${AGENT_API_PREFIX}/chunks`, o.token, body, 10_000).then((r) => {
      if (r.status !== 200) log(`chunk report refused: HTTP ${r.status} ${r.body.slice(0, 200)}`);
    }, (e: Error) => log(`chunk report failed: ${e.message}`)).finally(() => { flushing = null; });
    await flushing;
  };

  const span = (n: number) => ({ start: n * m.chunkSize, end: Math.min(m.size, (n + 1) * m.chunkSize) });
  const fromServer = async (n: number): Promise<Buffer> => {
    const { start, end } = span(n);
    let last = '';
    for (let t = 1; t <= (o.serverTries ?? 5); t++) {
      try {
        const r = await o.fetch(o.fileUrl, { ...auth, range: `bytes=${start}-${end - 1}` }, o.serverTimeoutMs ?? 120_000, end - start);
        if (r.status !== 206 && !(r.status === 200 && start === 0 && end === m.size)) throw new Error(`HTTP ${r.status} to a Range request`);
        const h = sha256(r.body);
        if (h !== m.chunks[n]) throw new Error(`sha256 ${h}, the manifest says ${m.chunks[n]}`);
        stats.fromServer++; stats.serverBytes += r.body.length;
        return r.body;
      } catch (e) {
        last = (e as Error).message;
        log(`chunk ${n} from the server: ${last} (try ${t})`);
        await sleep(o.retryDelayMs ?? 500);
      }
    }
    throw new Error(`chunk ${n} (bytes ${start}-${end - 1}) could not be fetched from the server: ${last}`);
  };

  // a peer that failed once is not asked again, also for chunks it was already assigned
  const refused = new Set<string>();
  const one = async (n: number): Promise<Buffer> => {
    let peer = await sourceOf(n);
    // sent to a peer that already failed: ask once more (the tracker then names only peers that have the chunk)
    if (peer && refused.has(peer)) peer = (await query(n, 1)).get(n) ?? null;
    if (peer && refused.has(peer)) peer = null;
    // the next window's sources are asked for while this one is fetched: the query is off the critical path
    if (n + window < count) void sourceOf(n + window);
    let b: Buffer | null = null;
    if (peer) {
      const { start, end } = span(n);
      let reason: 'hash' | 'error' | 'slow' | null = null;
      try {
        const r = await fetchPeer(`http://${peer}/p2p/${m.file}/${n}`, { authorization: `Bearer ${m.peerToken}` }, o.peerTimeoutMs ?? 30_000, end - start);
        if (r.status !== 200) reason = 'error';
        else if (sha256(r.body) !== m.chunks[n]) reason = 'hash';
        else b = r.body;
      } catch (e) {
        reason = /not done within/.test((e as Error).message) ? 'slow' : 'error';
      }
      if (b) { stats.fromPeers++; stats.peerBytes += b.length; stats.sources[n] = peer; } else {
        log(`chunk ${n} from peer ${peer}: ${reason === 'hash' ? 'sha256 differs from the manifest' : reason === 'slow' ? 'not in time' : 'no chunk'}; fetching it from the server and reporting the peer`);
        refused.add(peer);
        stats.badPeers.push({ chunk: n, peer, reason: reason! });
        pendingBad.push({ chunk: n, peer, reason: reason! });
        void flush();
      }
    }
    if (!b) { b = await fromServer(n); stats.sources[n] = null; }
    if (o.hold) o.hold.chunks.put(n, b, m.chunks[n]);
    pendingHave.push(n);
    if (pendingHave.length >= window) void flush();
    return b;
  };

  const inFlight: Promise<Buffer>[] = [];
  let next = 0;
  // a later chunk may fail while an earlier one is awaited: handled here, rethrown when its turn comes
  const start = () => { const p = one(next++); p.catch(() => {}); inFlight.push(p); };
  try {
    while (next < Math.min(window, count)) start();
    for (let n = 0; n < count; n++) {
      const b = await inFlight.shift()!;
      if (next < count) start();
      stats.chunks++;
      yield b;
    }
    await flush();
  } finally {
    o.hold?.chunks.settle();
  }
}

export const newStats = (): ChunkFetchStats => ({ chunks: 0, fromPeers: 0, fromServer: 0, peerBytes: 0, serverBytes: 0, badPeers: [], sources: [] });
