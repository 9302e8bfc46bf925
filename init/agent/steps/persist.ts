/**
 * Persistent boot, the agent's I/O (the marker codec and the checks are pure, in marker.ts):
 *   provisioning (mode persistent)  markDisk: after the stream was verified and synced, write the marker sector, sync,
 *                                   read it back — the last write before the disk is mounted
 *   every later boot                findPersistentDisk: the disk named by ironboot.disk=, its marker and superblock checked
 *                                   checkIn / reportBoot: POST /agent/v1/boot with the marker's token
 */
import { open, stat } from 'node:fs/promises';
import { Value } from '@sinclair/typebox/value';
import { AGENT_API_PREFIX, PersistentBootReply, type MarkerInfo, type PersistentBootReport, type WorkflowSpec } from '../../../server/agent/api.ts';
import type { AgentConfig } from '../cmdline.ts';
import type { NetInfo } from '../main.ts';
import { postJson, type PostJson } from '../reporter.ts';
import { sleep } from '../sys.ts';
import { resolveBlockTarget } from './disk.ts';
import { checkDisk, decodeMarker, encodeMarker, extUuid, MARKER_BYTES, type DiskMarker } from './marker.ts';

/** The bytes a check needs: the marker sector and the ext superblock (1024..2047). */
export const DISK_HEAD_BYTES = 4096;

/** A disk the agent will not run, and why (the reason goes to the console and to the server). */
export class DiskRefused extends Error {
  constructor(readonly reason: string, readonly marker: DiskMarker | null = null) { super(reason); this.name = 'DiskRefused'; }
}

export interface FoundDisk { device: string; marker: DiskMarker }

export async function readDiskHead(device: string): Promise<Buffer> {
  const fh = await open(device, 'r');
  try {
    const buf = Buffer.alloc(DISK_HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Writes the marker of `spec` to `device` (a block device or an image file holding the verified ext disk). */
export async function markDisk(spec: WorkflowSpec, device: string, mac: string, now = () => new Date()): Promise<DiskMarker> {
  if (!spec.persistent?.token) throw new Error('the server sent no persistent-boot token for this persistent workflow');
  const fh = await open(device, 'r+');
  try {
    const head = Buffer.alloc(DISK_HEAD_BYTES);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const fsUuid = extUuid(head.subarray(0, bytesRead));
    if (!fsUuid) throw new Error(`${device} holds no ext filesystem: cannot mark it for persistent boot`);
    if (head.subarray(0, MARKER_BYTES).some((b) => b !== 0) && !decodeMarker(head).ok) {
      // ext keeps these bytes free; an image that put something there (a boot sector) must not be silently overwritten
      throw new Error(`${device}'s first sector is not empty (a boot sector in the image?): cannot mark it for persistent boot`);
    }
    const marker: DiskMarker = {
      workflowId: spec.workflowId, imageId: spec.image.id, rawSha256: spec.image.rawSha256, rawSize: spec.image.rawSize,
      mac, fsUuid, writtenAt: now().toISOString(), token: spec.persistent.token,
    };
    const sector = encodeMarker(marker);
    const { bytesWritten } = await fh.write(sector, 0, sector.length, 0);
    if (bytesWritten !== sector.length) throw new Error(`short write of the marker to ${device} (${bytesWritten} bytes)`);
    await fh.sync();
    const back = Buffer.alloc(MARKER_BYTES);
    await fh.read(back, 0, back.length, 0);
    if (!back.equals(sector)) throw new Error(`the marker read back from ${device} differs from the one written`);
    return marker;
  } finally {
    await fh.close();
  }
}

/** The disk of this persistent boot, checked against its marker; throws DiskRefused with the reason. */
export async function findPersistentDisk(cfg: AgentConfig, mac: string | null, timeoutMs = 30_000): Promise<FoundDisk> {
  let device: string;
  try {
    // a regular file is taken as it is (a disk image: the unit tests); anything else is resolved as a block device
    const isFile = await stat(cfg.persistentDisk!).then((st) => st.isFile()).catch(() => false);
    device = isFile ? cfg.persistentDisk! : await resolveBlockTarget(cfg.persistentDisk!, timeoutMs);
  } catch (e) {
    throw new DiskRefused((e as Error).message);
  }
  const v = checkDisk(await readDiskHead(device), { workflowId: cfg.workflowId!, mac }, device);
  if (!v.ok) throw new DiskRefused(v.reason, v.marker);
  return { device, marker: v.marker };
}

export const markerInfo = (m: DiskMarker): MarkerInfo => ({
  workflowId: m.workflowId, imageId: m.imageId, rawSha256: m.rawSha256, rawSize: m.rawSize, mac: m.mac, fsUuid: m.fsUuid, writtenAt: m.writtenAt,
});

const serverMessage = (body: string): string => {
  try { return (JSON.parse(body) as { message?: string }).message ?? body.slice(0, 500); } catch { return body.slice(0, 500); }
};

/**
 * The server checks the marker and answers this boot's number and the spec to run. Network errors and 5xx are
 * retried until the deadline; a 4xx is the server refusing the disk (DiskRefused with its reason).
 */
export async function checkIn(cfg: AgentConfig, net: NetInfo, found: FoundDisk, say: (m: string) => void,
  o: { post?: PostJson; deadlineMs?: number } = {}): Promise<{ boot: number; spec: WorkflowSpec }> {
  const url = `${cfg.server}${AGENT_API_PREFIX}/boot`;
  const body: PersistentBootReport = {
    workflowId: cfg.workflowId!, mac: net.mac, ip: net.ip, phase: 'started', device: found.device, marker: markerInfo(found.marker),
  };
  const end = Date.now() + (o.deadlineMs ?? 120_000);
  for (let attempt = 0; ; attempt++) {
    let why: string;
    try {
      const r = await (o.post ?? postJson)(url, found.marker.token, body, 15_000);
      if (r.status >= 200 && r.status < 300) {
        const reply = JSON.parse(r.body) as unknown;
        if (!Value.Check(PersistentBootReply, reply) || !reply.spec) throw new Error('the server\'s check-in answer does not match the agent API');
        return { boot: reply.boot, spec: reply.spec };
      }
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        throw new DiskRefused(`the server refused this disk (HTTP ${r.status}): ${serverMessage(r.body)}`, found.marker);
      }
      why = `HTTP ${r.status}`;
    } catch (e) {
      if (e instanceof DiskRefused || /does not match the agent API/.test((e as Error).message)) throw e;
      why = (e as Error).message;
    }
    if (Date.now() > end) throw new Error(`cannot reach ${url}: ${why}`);
    say(`check-in at ${url} failed (${why}); retrying`);
    await sleep(Math.min(5000, 500 * 2 ** attempt));
  }
}

/** Reports the end of the entrypoint (exited) or a disk not run (refused). Resolves whether the server took it. */
export async function reportBoot(cfg: AgentConfig, net: NetInfo, found: { device?: string; marker: DiskMarker | null } | null,
  r: { phase: 'exited' | 'refused'; boot?: number; exitCode?: number; reason?: string },
  o: { post?: PostJson; attempts?: number } = {}): Promise<boolean> {
  const body: PersistentBootReport = {
    workflowId: cfg.workflowId!, mac: net.mac, ip: net.ip, phase: r.phase,
    ...(r.boot !== undefined ? { boot: r.boot } : {}), ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
    ...(r.reason !== undefined ? { reason: r.reason.slice(0, 2000) } : {}),
    ...(found?.device ? { device: found.device } : {}), ...(found?.marker ? { marker: markerInfo(found.marker) } : {}),
  };
  for (let i = 0; i < (o.attempts ?? 5); i++) {
    try {
      const res = await (o.post ?? postJson)(`${cfg.server}${AGENT_API_PREFIX}/boot`, found?.marker?.token ?? '', body, 10_000);
      if (res.status >= 200 && res.status < 300) return true;
      if (res.status >= 400 && res.status < 500) return false;
    } catch { /* retried */ }
    await sleep(500 * 2 ** i);
  }
  return false;
}
