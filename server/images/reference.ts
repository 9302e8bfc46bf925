/**
 * Image references as Docker and the distribution spec write them: [REGISTRY/]REPOSITORY[:TAG][@DIGEST].
 * Pure. Docker Hub is the default registry ("library/" for single-component names).
 */
import { ImageError } from './errors.ts';

export interface ImageReference {
  /** host[:port] used on the wire (registry-1.docker.io for Docker Hub). */
  registry: string;
  repository: string;
  tag: string | null;
  digest: string | null;
}

export const DOCKER_HUB = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
export const DIGEST = /^sha256:[a-f0-9]{64}$/;

export function parseReference(ref: string): ImageReference {
  const bad = (why: string) => new ImageError(`bad image reference "${ref}": ${why}`, 'source.ref');
  if (!ref || /\s/.test(ref)) throw bad('empty or contains whitespace');
  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`digest must be sha256:<64 hex digits>`);
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      registry = first === 'docker.io' || first === 'index.docker.io' ? DOCKER_HUB : first;
      rest = rest.slice(slash + 1);
      if (!/^[a-zA-Z0-9.-]+(:\d{1,5})?$/.test(first) && !/^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(first)) throw bad(`registry host "${first}" is not a host[:port]`);
    }
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`tag "${tag}" may only contain letters, digits, "_", "." and "-" (max 128)`);
  }
  if (!rest) throw bad('no repository name');
  const parts = rest.split('/');
  for (const p of parts) if (!COMPONENT.test(p)) throw bad(`repository component "${p}" must be lowercase letters, digits and separators`);
  if (registry === DOCKER_HUB && parts.length === 1) rest = `library/${rest}`;
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: rest, tag, digest };
}

export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** "linux/amd64", "linux/arm64/v8" → parts. */
export interface Platform { os: string; architecture: string; variant?: string }

export function parsePlatform(p: string): Platform {
  const parts = p.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !/^[a-z0-9_]+$/.test(x))) {
    throw new ImageError(`bad platform "${p}": expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8`, 'source.platform');
  }
  return { os: parts[0], architecture: parts[1], ...(parts[2] ? { variant: parts[2] } : {}) };
}

export const formatPlatform = (p: Platform) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
