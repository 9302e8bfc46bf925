/**
 * Where finished image artifacts live (the `--images` setting):
 *
 *  - local (the default): DATA_DIR/images is all there is, as it always was; the image service needs no store.
 *  - s3 (`--images s3://BUCKET/PREFIX`): an S3-compatible bucket shared by every daemon of the site (one per rack),
 *    an ArtifactStore (s3-store.ts); DATA_DIR/images is each daemon's cache of it (artifact-cache.ts).
 *
 * A store moves bytes only; whether they are the right bytes is decided against the image row's sha256 by the
 * cache, never by the store.
 */
import type { Readable } from 'node:stream';

/** The --images setting, parsed (server/config.ts). */
export type ImageStoreConfig =
  | { kind: 'local' }
  | {
    kind: 's3';
    bucket: string;
    /** Key prefix without a trailing slash ('' for the bucket's root). */
    prefix: string;
    /** null: AWS's own endpoint for the region. */
    endpoint: string | null;
    region: string;
    /** Path-style URLs (http://host/bucket/key), which most S3-compatible servers need. */
    pathStyle: boolean;
    /** Answer GET /images/<id>.ext4.zst with a redirect to a presigned URL instead of streaming. */
    redirect: boolean;
    /** How long a presigned URL is valid. */
    redirectSeconds: number;
  };

export class ArtifactStoreError extends Error {
  /** `setting`: the flag to look at (--images, --s3-endpoint), or null when it is not a setting's fault. */
  constructor(message: string, readonly setting: string | null = null, readonly code: 'not-found' | 'unreachable' | 'refused' | 'failed' = 'failed') {
    super(message);
    this.name = 'ArtifactStoreError';
  }
}

export interface UploadOptions {
  contentType: string;
  /** Recorded on the object (x-amz-meta-sha256) for operators; readers verify against the image row. */
  sha256: string;
  onProgress?: (sent: number, total: number) => void;
}

export interface ArtifactStore {
  readonly kind: 's3';
  /** For logs and errors: s3://bucket/prefix. */
  readonly location: string;
  /** At start: the store exists and answers; rejects with ArtifactStoreError naming the setting. */
  check(): Promise<void>;
  /** Stores the finished local file `file` as `name` (multipart when large). */
  upload(name: string, file: string, o: UploadOptions): Promise<void>;
  /** The bytes of `name`; rejects with ArtifactStoreError code 'not-found' when there is no such object. */
  open(name: string): Promise<{ body: Readable; size: number | null }>;
  /** Removes the objects; names that are not there are not an error. */
  remove(names: string[]): Promise<void>;
  /** A GET URL of `name` valid for `seconds`, signed with the store's credentials. */
  presign(name: string, seconds: number): Promise<string>;
  /** Where `name` is, for logs (s3://bucket/prefix/name). */
  describe(name: string): string;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * `--images` as given: empty or `local` → the local directory; `s3://BUCKET[/PREFIX]` → S3. Throws with the
 * reason (the caller names the flag).
 */
export function parseImagesLocation(value: string | null): { kind: 'local' } | { kind: 's3'; bucket: string; prefix: string } {
  if (value === null || value === '' || value === 'local') return { kind: 'local' };
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/.exec(value);
  if (!m) throw new Error(`"${value}" is neither s3://BUCKET/PREFIX nor local`);
  const bucket = m[1];
  if (!bucket) throw new Error(`"${value}" names no bucket (s3://BUCKET/PREFIX)`);
  if (!BUCKET.test(bucket) || bucket.includes('..')) throw new Error(`"${bucket}" is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)`);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '.' || p === '..') || /\/\//.test(prefix)) throw new Error(`"${value}": the prefix "${prefix}" has an empty, "." or ".." part`);
  return { kind: 's3', bucket, prefix };
}
