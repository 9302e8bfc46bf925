/**
 * The persistent-boot marker (pure): which workflow wrote a disk, from which image, for which machine, and the
 * credential its later boots check in with.
 *
 * Where it lives: the first 512-byte sector of the disk. A persistent workflow writes an ext2/3/4 filesystem
 * straight to the disk, and ext4 never uses its first 1024 bytes (the "group 0 padding" kept for boot sectors):
 * mount, resize2fs and e2fsck write the superblock at 1024, so the marker survives every later mount, and reading
 * it needs no mount and no re-hash. One sector is written in one piece by the disk, so a power cut leaves the old
 * sector or the new one, never a mixture; the sha256 over the sector catches anything else (a torn write on odd
 * hardware, a stray writer). The marker is written last, after the stream was verified and synced, and a new
 * stream rewrites block 0 (the first block holds the superblock, so it is never skipped as zeros) or a failed one
 * wipes the first MiB: a half-written reinstall never carries the previous disk's marker.
 *
 *   0   16  magic "ironboot-disk-v1"
 *   16   2  length of the JSON body (LE)
 *   18   n  JSON body (MarkerBody), at most MARKER_BODY_MAX bytes
 *   …      zeros
 *   480 32  sha256 over bytes 0..479
 */
import { createHash } from 'node:crypto';

export const MARKER_MAGIC = 'ironboot-disk-v1';
export const MARKER_BYTES = 512;
const SUM_AT = MARKER_BYTES - 32;
const BODY_AT = 18;
export const MARKER_BODY_MAX = SUM_AT - BODY_AT;

export interface DiskMarker {
  workflowId: string;
  imageId: string;
  /** sha256 of the image's raw bytes, as verified while streaming. */
  rawSha256: string;
  rawSize: number;
  /** The machine that wrote it (canonical MAC). */
  mac: string;
  /** The ext superblock's s_uuid (36-char form): changes if someone reformats the disk. */
  fsUuid: string;
  writtenAt: string;
  /** Persistent-boot token (the server keeps only its sha256). */
  token: string;
}

const KEYS: Array<keyof DiskMarker> = ['workflowId', 'imageId', 'rawSha256', 'rawSize', 'mac', 'fsUuid', 'writtenAt', 'token'];

export class MarkerError extends Error {
  constructor(message: string) { super(message); this.name = 'MarkerError'; }
}

/** The 512-byte sector holding m. Throws when the body does not fit. */
export function encodeMarker(m: DiskMarker): Buffer {
  const body = Buffer.from(JSON.stringify(Object.fromEntries(KEYS.map((k) => [k, m[k]]))), 'utf8');
  if (body.length > MARKER_BODY_MAX) throw new MarkerError(`marker body is ${body.length} bytes, at most ${MARKER_BODY_MAX} fit`);
  const buf = Buffer.alloc(MARKER_BYTES);
  buf.write(MARKER_MAGIC, 0, 'latin1');
  buf.writeUInt16LE(body.length, 16);
  body.copy(buf, BODY_AT);
  createHash('sha256').update(buf.subarray(0, SUM_AT)).digest().copy(buf, SUM_AT);
  return buf;
}

export type MarkerRead =
  | { ok: true; marker: DiskMarker }
  | { ok: false; problem: 'absent' | 'damaged'; reason: string };

/** Reads a marker from the first bytes of a disk (at least 512). Never throws. */
export function decodeMarker(sector: Buffer): MarkerRead {
  if (sector.length < MARKER_BYTES || sector.toString('latin1', 0, 16) !== MARKER_MAGIC) {
    return { ok: false, problem: 'absent', reason: 'no ironboot marker in the first sector (the disk was never provisioned for persistent boot, or was overwritten since)' };
  }
  const sum = createHash('sha256').update(sector.subarray(0, SUM_AT)).digest();
  if (!sum.equals(sector.subarray(SUM_AT, MARKER_BYTES))) {
    return { ok: false, problem: 'damaged', reason: 'the ironboot marker is damaged (its sha256 does not match: a torn or foreign write)' };
  }
  const len = sector.readUInt16LE(16);
  if (len > MARKER_BODY_MAX) return { ok: false, problem: 'damaged', reason: `the ironboot marker claims a ${len}-byte body` };
  let body: unknown;
  try { body = JSON.parse(sector.toString('utf8', BODY_AT, BODY_AT + len)); } catch {
    return { ok: false, problem: 'damaged', reason: 'the ironboot marker body is not JSON' };
  }
  const b = body as Record<string, unknown>;
  for (const k of KEYS) {
    const want = k === 'rawSize' ? 'number' : 'string';
    if (typeof b?.[k] !== want) return { ok: false, problem: 'damaged', reason: `the ironboot marker has no ${k}` };
  }
  return { ok: true, marker: Object.fromEntries(KEYS.map((k) => [k, b[k]])) as unknown as DiskMarker };
}

/** The ext2/3/4 superblock's UUID from the first 2048+ bytes of a disk, or null when there is no ext superblock. */
export function extUuid(head: Buffer): string | null {
  if (head.length < 2048 || head.readUInt16LE(1080) !== 0xef53) return null;
  const h = head.toString('hex', 1024 + 0x68, 1024 + 0x78);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** What a persistent boot expects of its disk: the kernel command line's workflow and this machine's MAC. */
export interface MarkerExpectation { workflowId: string; mac: string | null }

export type MarkerVerdict = { ok: true; marker: DiskMarker } | { ok: false; reason: string; marker: DiskMarker | null };

/**
 * Whether the disk whose first bytes are `head` (at least 2048: the marker and the superblock) may be run for
 * `want` (pure). Every refusal says what was found and what was expected.
 */
export function checkDisk(head: Buffer, want: MarkerExpectation, device = 'the disk'): MarkerVerdict {
  const r = decodeMarker(head);
  if (!r.ok) return { ok: false, reason: `${device}: ${r.reason}`, marker: null };
  const m = r.marker;
  if (m.workflowId !== want.workflowId) {
    return { ok: false, marker: m, reason: `${device} holds workflow ${m.workflowId} (image ${m.imageId}, written for ${m.mac} at ${m.writtenAt}), not this machine's workflow ${want.workflowId}` };
  }
  if (want.mac && m.mac !== want.mac) {
    return { ok: false, marker: m, reason: `${device} was written for machine ${m.mac}, this machine is ${want.mac}` };
  }
  const uuid = extUuid(head);
  if (!uuid) return { ok: false, marker: m, reason: `${device} has an ironboot marker but no ext filesystem behind it (overwritten since ${m.writtenAt})` };
  if (uuid !== m.fsUuid) {
    return { ok: false, marker: m, reason: `${device}'s filesystem UUID is ${uuid}, the marker recorded ${m.fsUuid} (the disk was reformatted)` };
  }
  return { ok: true, marker: m };
}
