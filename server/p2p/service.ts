/**
 * Peer-to-peer disk fetching on the server side: chunk manifests, the tracker, the token peers ask for, metrics
 * and the debug log of every decision. Routes (server/http/routes/image-files.ts, agent.ts) call it; the workflow
 * service's events drop a holder when its workflow ends.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { ManifestCache, type Manifest } from './manifest.ts';
import { PeerTracker, type Decision, type TrackerLimits } from './tracker.ts';
import type { ChunkManifest } from '../agent/api.ts';
import type { EventEmitter } from 'node:events';
import { isFinal, type WorkflowState } from '../workflows/states.ts';

export const DEFAULT_CHUNK_SIZE = 4 << 20;
export const DEFAULT_PEER_PORT = 7480;

export interface P2pOptions { chunkSize?: number; port?: number; limits?: Partial<TrackerLimits>; now?: () => number }

function counter(registry: Registry, name: string, help: string, labelNames: string[] = []): Counter<string> {
  return (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
}

export class P2pService {
  readonly chunkSize: number;
  readonly port: number;
  readonly tracker: PeerTracker;
  private manifests: ManifestCache;
  private known = new Map<string, Manifest>();
  /** Per daemon start: the peer tokens of files (HMAC of the file's sha256) change with it, as the tracker does. */
  private secret = randomBytes(32);
  private assigned: Counter<string>;
  private assignedBytes: Counter<string>;
  private bad: Counter<string>;

  constructor(private log: Logger, registry: Registry, o: P2pOptions = {}) {
    this.chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.port = o.port ?? DEFAULT_PEER_PORT;
    this.tracker = new PeerTracker(o.limits, o.now);
    this.manifests = new ManifestCache(this.chunkSize);
    this.assigned = counter(registry, 'ironboot_p2p_chunks_assigned_total', 'Disk chunks assigned to agents, by source (peer: another agent; server: a Range request here)', ['source']);
    this.assignedBytes = counter(registry, 'ironboot_p2p_chunk_bytes_assigned_total', 'Bytes of the disk chunks assigned, by source (peer, server)', ['source']);
    this.bad = counter(registry, 'ironboot_p2p_bad_peer_reports_total', 'Peers reported bad by agents (a chunk whose sha256 differs, an error, or nothing in time), by reason', ['reason']);
    const tracker = this.tracker;
    if (!registry.getSingleMetric('ironboot_p2p_holders')) {
      new Gauge({ name: 'ironboot_p2p_holders', help: 'Agents serving disk chunks to peers', registers: [registry], collect() { this.set(tracker.stats().holders); } });
    }
  }

  peerToken(file: string): string {
    return createHmac('sha256', this.secret).update(`ironboot-p2p:${file}`).digest('base64url');
  }

  /** The manifest of the compressed file at `path` (sha256 `file`), as agents get it; starts tracking the file. */
  async manifest(path: string, file: string): Promise<ChunkManifest> {
    const m = await this.manifests.get(path, file);
    this.known.set(file, m);
    this.tracker.track(file, m.chunks.length);
    return { ...m, peerToken: this.peerToken(file), port: this.port };
  }

  private chunkBytes(file: string, chunk: number): number {
    const m = this.known.get(file);
    if (!m) return 0;
    return Math.max(0, Math.min(m.chunkSize, m.size - chunk * m.chunkSize));
  }

  assign(file: string, ctx: { workflowId: string; mac: string; ip: string }, from: number, count: number, port: number | null): Decision[] {
    const addr = port ? `${ctx.ip}:${port}` : null;
    const out = this.tracker.assign(file, ctx.workflowId, addr, from, count);
    for (const d of out) {
      const source = d.peer ? 'peer' : 'server';
      this.assigned.inc({ source });
      this.assignedBytes.inc({ source }, this.chunkBytes(file, d.chunk));
      this.log.debug({ mac: ctx.mac, workflow: ctx.workflowId, file, chunk: d.chunk, source, peer: d.peer, holder: d.holder, why: d.why }, `p2p: chunk ${d.chunk} from ${d.peer ?? 'the server'} (${d.why})`);
    }
    return out;
  }

  report(file: string, ctx: { workflowId: string; mac: string; ip: string }, port: number | null,
    have: number[], bad: { chunk: number; peer: string; reason: 'hash' | 'error' | 'slow' }[] = []): { accepted: number; banned: number } {
    const accepted = this.tracker.report(file, ctx.workflowId, port ? `${ctx.ip}:${port}` : null, have);
    let banned = 0;
    for (const b of bad) {
      const r = this.tracker.reportBad(file, ctx.workflowId, b.peer, b.chunk, b.reason);
      this.bad.inc({ reason: b.reason });
      if (r?.action === 'banned') banned++;
      this.log.info({ mac: ctx.mac, workflow: ctx.workflowId, file, chunk: b.chunk, peer: b.peer, reason: b.reason, holder: r?.holder ?? null, action: r?.action ?? 'ignored' },
        !r ? `p2p: report of peer ${b.peer} ignored: the reporter was not sent there for chunk ${b.chunk}`
          : r.action === 'banned' ? `p2p: peer ${b.peer} reported bad (${b.reason}) for chunk ${b.chunk}: no longer handed out for this file`
            : `p2p: peer ${b.peer} reported (${b.reason}) for chunk ${b.chunk}: not handed out for a while`);
    }
    this.log.debug({ mac: ctx.mac, workflow: ctx.workflowId, file, have: have.length, accepted }, 'p2p: chunks held');
    return { accepted, banned };
  }

  /** Drops each holder whose workflow reaches a final state (the workflow service's events); returns the unsubscribe. */
  follow(events: EventEmitter): () => void {
    const on = (ev: { kind: string; state?: string | null; workflowId: string }) => {
      if (ev.kind === 'state' && ev.state && isFinal(ev.state as WorkflowState)) this.workflowEnded(ev.workflowId);
    };
    events.on('event', on);
    return () => { events.off('event', on); };
  }

  /** The workflow ended: its agent leaves every file's holders. */
  workflowEnded(workflowId: string): void {
    if (this.tracker.drop(workflowId)) this.log.debug({ workflow: workflowId }, 'p2p: holder left (workflow ended)');
  }
}
