/**
 * Persistent boot, the server's side (pure apart from the token's randomness).
 *
 * A machine whose latest workflow is `mode: persistent` and `succeeded` netboots ironboot's kernel + initramfs on
 * every later boot with a persistent-boot command line (server/boot/cmdline.ts): the agent finds the disk it wrote,
 * checks the marker there (init/agent/steps/marker.ts) and checks in at POST /agent/v1/boot with the token from the
 * marker. Only `mode: persistent` does this; `after=reboot` alone only reboots (an ephemeral disk, or one in RAM,
 * is not meant to be run again, and the machine then boots whatever its firmware finds next).
 *
 * The token: 32 random bytes, created at hello for a persistent workflow and handed to the agent in the spec, which
 * writes it into the marker; the server keeps only its sha256 (workflows.boot_token_sha256). It is not in the boot
 * script or the kernel command line (anyone on the LAN may fetch a boot script), it works for every later boot (it
 * is not single-use: the machine holds it on the disk it proves), it grants only POST /agent/v1/boot for that
 * workflow, and it dies with the workflow: a new workflow for the machine supersedes it, and the reinstall overwrites
 * the marker.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { MarkerInfo } from '../agent/api.ts';
import type { Image } from '../store/images.ts';
import type { Workflow } from '../store/workflows.ts';

export const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

export function issueBootToken(): { token: string; sha256: string } {
  const token = randomBytes(32).toString('base64url');
  return { token, sha256: sha256Hex(token) };
}

/** Constant-time check of a presented token against the stored sha256. */
export function bootTokenMatches(presented: string | undefined, storedSha256: string | null): boolean {
  if (!presented || !storedSha256 || !/^[0-9a-f]{64}$/.test(storedSha256)) return false;
  return timingSafeEqual(Buffer.from(sha256Hex(presented), 'hex'), Buffer.from(storedSha256, 'hex'));
}

/** Whether this workflow, the machine's latest, makes the machine's boots persistent boots. */
export const bootsPersistently = (latest: Workflow | undefined): boolean =>
  !!latest && latest.mode === 'persistent' && latest.state === 'succeeded';

export type CheckInDecision =
  | { ok: true }
  | { ok: false; status: 400 | 401 | 403 | 409; field: string; reason: string };

export interface CheckInInput {
  workflow: Workflow;
  /** The machine's latest workflow (a newer one supersedes this one). */
  latest: Workflow | undefined;
  image: Image | undefined;
  mac: string;
  tokenOk: boolean;
  marker: MarkerInfo | undefined;
}

/** Whether a persistent boot may run its disk (pure). Every refusal names the field and what differs. */
export function decideCheckIn(c: CheckInInput): CheckInDecision {
  const wf = c.workflow;
  const no = (status: 400 | 401 | 403 | 409, field: string, reason: string): CheckInDecision => ({ ok: false, status, field, reason });
  if (!c.tokenOk) return no(401, 'authorization', `the disk's persistent-boot token does not belong to workflow ${wf.id} (a disk from another install, or a rewritten marker)`);
  if (c.mac !== wf.machineMac) return no(403, 'mac', `workflow ${wf.id} belongs to ${wf.machineMac}, not ${c.mac}`);
  if (wf.mode !== 'persistent') return no(409, 'workflowId', `workflow ${wf.id} is ${wf.mode}, not persistent: its disk is not booted again`);
  if (c.latest && c.latest.id !== wf.id) {
    return no(409, 'workflowId', `workflow ${wf.id} was superseded by workflow ${c.latest.id} (${c.latest.state}); that one decides what this machine runs`);
  }
  if (wf.state !== 'succeeded') return no(409, 'workflowId', `workflow ${wf.id} is ${wf.state}; only a succeeded persistent workflow boots its disk again`);
  const m = c.marker;
  if (!m) return no(400, 'marker', 'a check-in must say what the disk\'s marker holds');
  if (m.workflowId !== wf.id) return no(409, 'marker', `the disk's marker names workflow ${m.workflowId}, not ${wf.id}`);
  if (m.mac !== wf.machineMac) return no(409, 'marker', `the disk was written for ${m.mac}, the workflow's machine is ${wf.machineMac}`);
  const img = c.image;
  if (!img || m.imageId !== img.id || m.rawSha256 !== img.rawSha256) {
    return no(409, 'marker', `the disk holds image ${m.imageId} (sha256 ${m.rawSha256}), the workflow's image is ${img?.id ?? wf.imageId} (sha256 ${img?.rawSha256 ?? 'unknown'})`);
  }
  if (m.rawSize !== img.rawSize) return no(409, 'marker', `the disk's image is ${m.rawSize} bytes, the workflow's ${img.rawSize}`);
  return { ok: true };
}

/** Whether an unauthenticated refusal may be recorded: only for a machine that is in persistent boot right now. */
export function acceptsUnverifiedRefusal(wf: Workflow, latest: Workflow | undefined, mac: string): boolean {
  return mac === wf.machineMac && latest?.id === wf.id && bootsPersistently(wf);
}
