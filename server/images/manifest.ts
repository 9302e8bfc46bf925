/**
 * OCI / Docker manifests, indexes and image configs: parsing and platform choice. Pure.
 */
import { ImageError } from './errors.ts';
import { DIGEST, formatPlatform, type Platform } from './reference.ts';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

export interface Descriptor { mediaType: string; digest: string; size: number; platform?: Platform; annotations?: Record<string, string> }

export type ParsedManifest =
  | { kind: 'index'; manifests: Descriptor[] }
  | { kind: 'manifest'; config: Descriptor; layers: Descriptor[] };

/** The part of an image config that matters at run time. */
export interface RunConfig { entrypoint: string[]; cmd: string[]; env: string[]; workingDir: string | null; user: string | null }

export interface ImageConfig { platform: Platform; run: RunConfig; diffIds: string[] }

function descriptor(d: unknown, what: string): Descriptor {
  const o = d as Record<string, unknown>;
  if (!o || typeof o.digest !== 'string' || !DIGEST.test(o.digest)) throw new ImageError(`${what}: missing or unsupported digest (only sha256 is supported)`);
  const p = o.platform as Record<string, unknown> | undefined;
  return {
    mediaType: String(o.mediaType ?? ''), digest: o.digest, size: Number(o.size ?? -1),
    ...(p && typeof p.os === 'string' && typeof p.architecture === 'string'
      ? { platform: { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) } } : {}),
    ...(o.annotations ? { annotations: o.annotations as Record<string, string> } : {}),
  };
}

export function parseManifest(bytes: Buffer, contentType?: string | null): ParsedManifest {
  let j: Record<string, unknown>;
  try { j = JSON.parse(bytes.toString('utf8')); } catch { throw new ImageError('manifest is not valid JSON'); }
  const mt = String(j.mediaType ?? contentType ?? '').split(';')[0].trim();
  if (Array.isArray(j.manifests) || mt === MEDIA.ociIndex || mt === MEDIA.dockerList) {
    return { kind: 'index', manifests: ((j.manifests as unknown[]) ?? []).map((m, i) => descriptor(m, `index entry ${i}`)) };
  }
  if (j.schemaVersion === 1) throw new ImageError('Docker schema 1 manifests are not supported (push the image again with a current client)');
  if (!j.config || !Array.isArray(j.layers)) throw new ImageError(`unsupported manifest (media type "${mt}")`);
  return { kind: 'manifest', config: descriptor(j.config, 'config'), layers: (j.layers as unknown[]).map((l, i) => descriptor(l, `layer ${i}`)) };
}

/** Picks the manifest for a platform from an index; variant must match when asked for. */
export function pickPlatform(manifests: Descriptor[], want: Platform): Descriptor {
  const candidates = manifests.filter((m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture
    && (!want.variant || m.platform.variant === want.variant));
  if (!candidates.length) {
    const have = manifests.filter((m) => m.platform && m.platform.os !== 'unknown').map((m) => formatPlatform(m.platform!));
    throw new ImageError(`no image for platform ${formatPlatform(want)} in this index (it has: ${have.join(', ') || 'none'})`, 'source.platform');
  }
  // amd64 has no variant; for arm64 prefer v8 when none asked
  return candidates.find((m) => !m.platform!.variant || m.platform!.variant === 'v8') ?? candidates[0];
}

const strList = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);

export function parseImageConfig(bytes: Buffer): ImageConfig {
  let j: Record<string, any>;
  try { j = JSON.parse(bytes.toString('utf8')); } catch { throw new ImageError('image config is not valid JSON'); }
  const c = (j.config ?? {}) as Record<string, unknown>;
  return {
    platform: { os: String(j.os ?? 'linux'), architecture: String(j.architecture ?? 'amd64'), ...(j.variant ? { variant: String(j.variant) } : {}) },
    run: {
      entrypoint: strList(c.Entrypoint), cmd: strList(c.Cmd), env: strList(c.Env),
      workingDir: typeof c.WorkingDir === 'string' && c.WorkingDir ? c.WorkingDir : null,
      user: typeof c.User === 'string' && c.User ? c.User : null,
    },
    diffIds: strList(j.rootfs?.diff_ids),
  };
}
