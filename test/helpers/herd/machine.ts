/**
 * One simulated machine, booting as a real one does, over real sockets from its own macvlan and address:
 *
 *   PXE ROM:  DHCP (PXEClient) → TFTP of the boot file (undionly.kpxe)
 *   iPXE:     DHCP (user class iPXE) → HTTP boot script → HTTP kernel + initramfs (one keep-alive connection)
 *   agent:    init/agent/main.ts's own server flow (runAgent) with the machine's steps: DHCP (udhcpc's
 *             request), hello (init/agent/steps/hello.ts), the disk over HTTP, hashed and checked against the
 *             workflow's compressedSha256 then discarded, and the agent's EventReporter for every event.
 *
 * With peer-to-peer fetching on (the spec names a chunk manifest), the disk comes chunk by chunk through the agent's
 * own init/agent/steps/peers.ts: from the peers the tracker names or the server, every chunk verified, and the
 * machine serves its verified chunks on its own address (port from the manifest) until the herd ends.
 *
 * Nothing is written: the kernel and initramfs are counted and dropped, the disk hashed and dropped. Each phase is timed.
 */
import { performance } from 'node:perf_hooks';
import { runAgent, type AgentSteps, type NetInfo, type StreamHooks } from '../../../init/agent/main.ts';
import type { WorkflowSpec } from '../../../server/agent/api.ts';
import { parseAgentConfig } from '../../../init/agent/cmdline.ts';
import { sayHello } from '../../../init/agent/steps/hello.ts';
import { EventReporter } from '../../../init/agent/reporter.ts';
import type { Console } from '../../../init/agent/sys.ts';
import { dhcpExchangeOffThread as dhcpExchange } from './dhcp.ts';
import { tftpFetch } from './tftp.ts';
import { HttpConnection, HttpPool, machineAgent, postJsonFrom } from './http.ts';
import { createHash } from 'node:crypto';
import { fetchChunks, HeldChunks, newStats, servePeers, type FetchBuffer, type PeerServer } from '../../../init/agent/steps/peers.ts';
import type { ChunkManifest } from '../../../server/agent/api.ts';

/**
 * Chunks this process's machines verified, one copy per chunk (key: file sha256 / chunk number). Every machine
 * still receives and verifies every byte of its disk; what it keeps to serve its peers is this one copy (500
 * copies of one disk would be gigabytes of the simulator's memory, and allocating them its CPU).
 */
const verifiedChunks = new Map<string, Buffer>();

/** A machine's held chunks, kept as the process's one verified copy of each. */
class SharedHeldChunks extends HeldChunks {
  override put(n: number, b: Buffer, verified: string): void {
    const key = `${this.manifest.file}/${n}`;
    if (verified === this.manifest.chunks[n] && !verifiedChunks.has(key)) verifiedChunks.set(key, b);
    super.put(n, verifiedChunks.get(key) ?? b, verified);
  }
}

/**
 * init/agent/steps/peers.ts's FetchBuffer over an HttpPool: a chunk (a peer's /p2p/<file>/<n> or a Range of the
 * server's file) is compared as it arrives with the verified copy, if there is one (HttpConnection `expect`); the
 * agent's code then verifies its sha256 as always. Unlike the agent's (init/agent/steps/disk.ts), peer fetches here
 * have no connect timeout (PEER_CONNECT_TIMEOUT_MS): every peer server of the herd runs on this process's one thread,
 * which answers late under 500 machines (its own loop lag is printed by the bench), while in a rack a live peer
 * accepts on its own CPU. The gone-peer case is test/integration/p2p-peer-gone.test.ts's.
 */
function poolFetch(pool: HttpPool, manifest: ChunkManifest | null): FetchBuffer {
  return async (url, headers, timeoutMs, maxBytes) => {
    let n: number | null = null;
    const peer = /\/p2p\/([0-9a-f]{64})\/(\d+)$/.exec(url);
    const range = /^bytes=(\d+)-/.exec(headers.range ?? '');
    if (manifest && peer && peer[1] === manifest.file) n = Number(peer[2]);
    else if (manifest && range && Number(range[1]) % manifest.chunkSize === 0) n = Number(range[1]) / manifest.chunkSize;
    const expect = manifest && n !== null ? verifiedChunks.get(`${manifest.file}/${n}`) : undefined;
    const r = await pool.get(url, { keep: true, expect, maxBytes, headers, deadlineMs: timeoutMs });
    return { status: r.status, body: r.body!, headers: r.headers };
  };
}

/**
 * The sha256 of a disk received as `parts` (chunks in order), as the agent checks it after the last chunk. When the
 * parts are the process's verified copies themselves (the same buffers, not only equal bytes), the digest over
 * them is computed once per file and reused: the same buffers in the same order have the same hash.
 */
const wholeDigests = new Map<string, string>();
function wholeSha256(manifest: ChunkManifest, parts: Buffer[]): string {
  const canonical = parts.length === manifest.chunks.length && parts.every((b, n) => verifiedChunks.get(`${manifest.file}/${n}`) === b);
  const known = canonical ? wholeDigests.get(manifest.file) : undefined;
  if (known) return known;
  const h = createHash('sha256');
  for (const b of parts) h.update(b);
  const d = h.digest('hex');
  if (canonical) wholeDigests.set(manifest.file, d);
  return d;
}

/** A peer that serves every chunk with one byte flipped (what a broken or hostile machine would send). */
class CorruptChunks extends SharedHeldChunks {
  override async get(n: number, ms: number): Promise<Buffer | null> {
    const b = await super.get(n, ms);
    if (!b) return b;
    const c = Buffer.from(b);
    c[c.length >> 1] ^= 0xff;
    return c;
  }
}

/** The peer servers of every machine of this runner (closed when the herd is done). */
export const peerServers: PeerServer[] = [];

export interface MachineSpec { mac: string; ip: string; iface: string; prefix: number }

export const PHASES = ['dhcp-pxe', 'tftp', 'dhcp-ipxe', 'script', 'kernel', 'initrd', 'dhcp-agent', 'hello', 'disk', 'report'] as const;
export type Phase = typeof PHASES[number];

export interface MachineResult {
  mac: string;
  ok: boolean;
  error: string | null;
  /** [start, end] in ms since the herd's start (performance.now() based). */
  phases: Partial<Record<Phase, [number, number]>>;
  dhcpRetransmits: number;
  tftpRetransmits: number;
  tftpDuplicates: number;
  httpBytes: number;
  diskBytes: number;
  /** Disk bytes this machine got from the server, and from peers (peer-to-peer fetching; 0 without it). */
  serverDiskBytes: number;
  peerDiskBytes: number;
  /** Peer chunks refused (sha256 differs, error, late), each fetched again from the server. */
  badPeers: { chunk: number; peer: string; reason: string }[];
  /** Per chunk: the peer it came from, or null for the server (empty without peer-to-peer fetching). */
  chunkSources: (string | null)[];
  workflowId: string | null;
  serverState: string | null;
}

const hexhyp = (mac: string) => mac.replaceAll(':', '-');

/** iPXE's expansion of the settings a DHCP boot file or script may name. */
const expand = (s: string, mac: string) => s.replace(/\$\{(mac|net0\/mac)(:hexhyp)?\}/g, (_m, _k, hyp) => (hyp ? hexhyp(mac) : mac));

export interface BootOptions {
  /** This machine's peer server flips a byte of every chunk it serves. */
  corruptPeer?: boolean;
  /** The entrypoint runs until this settles (a service that keeps running; its agent keeps serving chunks). */
  entrypointUntil?: Promise<void>;
  /** Called when the disk phase ends, verified or not. */
  onDiskDone?: () => void;
}

export async function bootMachine(m: MachineSpec, t0: number, o: BootOptions = {}): Promise<MachineResult> {
  const r: MachineResult = {
    mac: m.mac, ok: false, error: null, phases: {}, dhcpRetransmits: 0, tftpRetransmits: 0, tftpDuplicates: 0,
    httpBytes: 0, diskBytes: 0, serverDiskBytes: 0, peerDiskBytes: 0, badPeers: [], chunkSources: [], workflowId: null, serverState: null,
  };
  const timed = async <T>(p: Phase, fn: () => Promise<T>): Promise<T> => {
    const s = performance.now() - t0;
    try { return await fn(); } finally { r.phases[p] = [s, performance.now() - t0]; }
  };
  const consoleLines: string[] = [];
  const cons: Console = { say: (x) => { consoleLines.push(x); if (consoleLines.length > 20) consoleLines.shift(); }, warn: (x) => { consoleLines.push(`WARN ${x}`); } };
  try {
    // PXE ROM
    const pxe = await timed('dhcp-pxe', () => dhcpExchange(m.iface, m.mac, 'pxe'));
    r.dhcpRetransmits += pxe.retransmits;
    if (pxe.yiaddr !== m.ip) throw new Error(`PXE DHCP gave ${pxe.yiaddr}, the reservation is ${m.ip}`);
    if (!pxe.file) throw new Error('PXE DHCP answer without a boot file');
    const tftp = await timed('tftp', () => tftpFetch(m.ip, pxe.siaddr !== '0.0.0.0' ? pxe.siaddr : pxe.serverId, pxe.file));
    r.tftpRetransmits += tftp.retransmits; r.tftpDuplicates += tftp.duplicates;
    // iPXE
    const ipxe = await timed('dhcp-ipxe', () => dhcpExchange(m.iface, m.mac, 'ipxe'));
    r.dhcpRetransmits += ipxe.retransmits;
    if (!/^https?:\/\//.test(ipxe.file)) throw new Error(`iPXE DHCP answer without an HTTP boot script: "${ipxe.file}"`);
    const ipxeHttp = new HttpConnection(m.ip);
    let cmdline = '';
    try {
      const script = await timed('script', () => ipxeHttp.get(expand(ipxe.file, m.mac), { keep: true }));
      if (script.status !== 200) throw new Error(`boot script: HTTP ${script.status}`);
      const text = script.body!.toString();
      const kernel = /^\s*kernel\s+(\S+)\s*(.*)$/m.exec(text);
      const initrd = /^\s*initrd\s+(\S+)/m.exec(text);
      if (!kernel || !initrd) throw new Error(`boot script has no kernel/initrd line:\n${text.slice(0, 400)}`);
      cmdline = expand(kernel[2], m.mac);
      for (const [p, url] of [['kernel', kernel[1]], ['initrd', initrd[1]]] as const) {
        // counted, not hashed (iPXE checks neither): the parser holds the server to its Content-Length
        const g = await timed(p, () => ipxeHttp.get(expand(url, m.mac)));
        if (g.status !== 200) throw new Error(`${p} ${url}: HTTP ${g.status}`);
        r.httpBytes += g.bytes;
      }
    } finally { ipxeHttp.destroy(); }
    // the agent
    const cfg = parseAgentConfig(cmdline);
    if (cfg.mode !== 'server') throw new Error(`the kernel command line does not start the server flow: ${cmdline}`);
    r.workflowId = cfg.workflowId;
    const http = machineAgent(m.ip, true);
    const post = postJsonFrom(http);
    const reporter = new EventReporter({ server: cfg.server!, workflowId: cfg.workflowId!, token: () => cfg.token!, console: cons, post }); // hello swaps the boot token for the session token
    const finalAck = reporter.final.bind(reporter);
    reporter.final = (e, o) => timed('report', () => finalAck(e, o));
    const steps: AgentSteps = {
      mounts: async () => {}, drivers: async () => {},
      net: () => timed('dhcp-agent', async (): Promise<NetInfo> => {
        const l = await dhcpExchange(m.iface, m.mac, 'udhcpc');
        r.dhcpRetransmits += l.retransmits;
        if (l.yiaddr !== m.ip) throw new Error(`agent DHCP gave ${l.yiaddr}, the reservation is ${m.ip}`);
        return { iface: m.iface, mac: m.mac, ip: l.yiaddr, prefix: m.prefix, router: null, dns: [], hostname: null, domain: null };
      }),
      hello: (c, net) => timed('hello', () => sayHello(c, net, cons.say, { post, inventory: { cpus: { count: 2 }, memoryBytes: 1 << 30, firmware: 'bios' } })),
      stream: (spec, _c, hooks) => timed('disk', async () => { try { return await streamOne(spec, hooks); } finally { o.onDiskDone?.(); } }),
      rootDevice: async () => { throw new Error('no seed flow in the herd'); },
      mount: async () => ({ fsType: 'ext4' }),
      run: async (_spec, onLine) => { onLine({ stream: 'stdout', line: `herd machine ${m.mac} up` }); await o.entrypointUntil; return 0; },
      after: async () => {},
    };
    async function streamOne(spec: WorkflowSpec, hooks: StreamHooks): Promise<{ device: string }> {
        const { compressedSize: size, compressedSha256: want, rawSize } = spec.image;
        if (spec.image.chunksUrl) {
          // the agent's own chunk fetcher, from this machine's address; a socket pool for the server, one for peers
          const toServer = new HttpPool(m.ip, 4);
          const toPeers = new HttpPool(m.ip, 8);
          const reports = machineAgent(m.ip, true); // the chunk reports' posts (node:http, as the agent's)
          try {
            const timedFetch = (f: FetchBuffer): FetchBuffer => async (u, h, t, mx) => {
              const s0 = performance.now();
              try { return await f(u, h, t, mx); } finally { if (process.env.HERD_P2P_LOG) process.stderr.write(`${m.mac} T ${(performance.now() - t0).toFixed(0)} ${(performance.now() - s0).toFixed(0)}ms ${u.replace(/[0-9a-f]{64}/, 'F')}\n`); }
            };
            const mr = await timedFetch(poolFetch(toServer, null))(spec.image.chunksUrl, { authorization: `Bearer ${cfg.token!}` }, 60_000, 16 << 20);
            if (mr.status !== 200) throw new Error(`GET ${spec.image.chunksUrl}: HTTP ${mr.status} ${mr.body.toString().slice(0, 200)}`);
            const manifest = JSON.parse(mr.body.toString()) as ChunkManifest;
            const fetch = timedFetch(poolFetch(toServer, manifest));
            const chunks = o.corruptPeer ? new CorruptChunks(manifest) : new SharedHeldChunks(manifest);
            const ps = await servePeers(new Map([[manifest.file, chunks]]), { host: m.ip, port: manifest.port });
            peerServers.push(ps);
            const stats = newStats();
            const parts: Buffer[] = [];
            let got = 0;
            for await (const b of fetchChunks({
              manifest, fileUrl: spec.image.url, server: cfg.server!, token: cfg.token!, fetch, fetchPeer: timedFetch(poolFetch(toPeers, manifest)),
              post: postJsonFrom(reports), hold: { chunks, port: ps.port }, log: (x) => { cons.say(x); if (process.env.HERD_P2P_LOG) process.stderr.write(`${m.mac} ${x}\n`); },
            }, stats)) {
              parts.push(b); got += b.length;
              hooks.progress(Math.floor((got / size) * rawSize), rawSize);
            }
            hooks.verifying();
            const h = wholeSha256(manifest, parts);
            if (got !== size || h !== want) throw new Error(`disk chunks: ${got} bytes sha256 ${h}, the workflow says ${size} bytes ${want}`);
            r.diskBytes += got; r.httpBytes += stats.serverBytes;
            r.serverDiskBytes = stats.serverBytes; r.peerDiskBytes = stats.peerBytes; r.badPeers = stats.badPeers; r.chunkSources = stats.sources;
            return { device: '/dev/vda' };
          } finally { toServer.destroy(); toPeers.destroy(); reports.destroy(); }
        }
        const disk = new HttpConnection(m.ip);
        const g = await disk.get(spec.image.url, { token: cfg.token!, hash: true, onData: (n) => hooks.progress(Math.floor((n / size) * rawSize), rawSize) })
          .finally(() => disk.destroy());
        if (g.status !== 200) throw new Error(`GET ${spec.image.url}: HTTP ${g.status}`);
        hooks.verifying();
        if (g.bytes !== size || g.sha256 !== want) throw new Error(`disk stream: ${g.bytes} bytes sha256 ${g.sha256}, the workflow says ${size} bytes ${want}`);
        r.diskBytes += g.bytes; r.httpBytes += g.bytes; r.serverDiskBytes += g.bytes;
        return { device: '/dev/vda' };
    }
    const out = await runAgent({ cfg, steps, reporter, console: cons });
    http.destroy();
    r.serverState = reporter.serverState;
    if (!out.ok) throw new Error(`agent flow failed in ${out.step}: ${out.reason}`);
    r.ok = true;
  } catch (e) {
    r.error = `${(e as Error).message}${consoleLines.length ? `\n  console: ${consoleLines.slice(-5).join(' | ')}` : ''}`;
  }
  return r;
}
