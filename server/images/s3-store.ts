/**
 * The S3 artifact store (`--images s3://BUCKET/PREFIX`), over the AWS SDK v3: AWS itself or any S3-compatible
 * server (`--s3-endpoint` / AWS_ENDPOINT_URL, path-style addressing). Credentials come from the SDK's usual chain
 * (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, a profile, an instance role).
 */
import { createReadStream, statSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { S3Client, HeadBucketCommand, GetObjectCommand, DeleteObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { ArtifactStoreError, type ArtifactStore, type ImageStoreConfig } from './artifact-store.ts';

type S3Config = Extract<ImageStoreConfig, { kind: 's3' }>;

/** Multipart parts: S3 wants at least 5 MiB; 16 MiB keeps a 10000-part upload above 150 GiB. */
const PART_SIZE = 16 << 20;
const CHECK_TIMEOUT_MS = 10_000;

interface SdkError { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; message?: string }

export function s3ArtifactStore(cfg: S3Config): ArtifactStore {
  const client = new S3Client({
    region: cfg.region,
    ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
    forcePathStyle: cfg.pathStyle,
    // the SDK's default CRC32 trailers (aws-chunked bodies) are not understood by every S3-compatible server;
    // every artifact is verified against its sha256 in the image row anyway
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // a store that goes silent mid-download fails the fetch (and its waiters) instead of holding them forever
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
  });
  const location = `s3://${cfg.bucket}${cfg.prefix ? `/${cfg.prefix}` : ''}`;
  const key = (name: string) => (cfg.prefix ? `${cfg.prefix}/${name}` : name);
  const where = cfg.endpoint ? ` at ${cfg.endpoint}` : ` (AWS, region ${cfg.region})`;

  /** An SDK failure as a reason an operator can act on, naming the setting to look at. */
  const explain = (err: unknown, what: string): ArtifactStoreError => {
    const e = err as SdkError;
    const status = e.$metadata?.httpStatusCode;
    const code = e.code ?? (e as { cause?: { code?: string } }).cause?.code;
    if (code && /^(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|ECONNRESET|ETIMEDOUT|EAI_AGAIN)$/.test(code) || e.name === 'TimeoutError' || e.name === 'AbortError') {
      return new ArtifactStoreError(`${what}: cannot reach the S3 store${where} (${code ?? e.name}); check --s3-endpoint / AWS_ENDPOINT_URL`, 's3-endpoint', 'unreachable');
    }
    if (e.name === 'NoSuchKey' || (status === 404 && e.name !== 'NoSuchBucket' && !what.startsWith('bucket'))) {
      return new ArtifactStoreError(`${what}: no such object in ${location}`, null, 'not-found');
    }
    if (e.name === 'NoSuchBucket' || status === 404) return new ArtifactStoreError(`${what}: the bucket "${cfg.bucket}" does not exist${where}; create it or fix --images`, 'images', 'refused');
    if (status === 403 || status === 401 || e.name === 'InvalidAccessKeyId' || e.name === 'SignatureDoesNotMatch' || e.name === 'AccessDenied') {
      return new ArtifactStoreError(`${what}: the S3 store${where} refused the credentials (HTTP ${status ?? '?'} ${e.name}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy`, 'images', 'refused');
    }
    if (e.name === 'CredentialsProviderError') return new ArtifactStoreError(`${what}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile / role)`, 'images', 'refused');
    return new ArtifactStoreError(`${what}: S3 error${where}: ${e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? String(err)}`, null, 'failed');
  };

  return {
    kind: 's3',
    location,
    describe: (name) => `${location}/${name}`,
    async check() {
      try {
        await client.send(new HeadBucketCommand({ Bucket: cfg.bucket }), { abortSignal: AbortSignal.timeout(CHECK_TIMEOUT_MS) });
      } catch (err) {
        throw explain(err, `bucket ${location}`);
      }
    },
    async upload(name, file, o) {
      const total = statSync(file).size;
      const up = new Upload({
        client, partSize: PART_SIZE, queueSize: 4, leavePartsOnError: false,
        params: { Bucket: cfg.bucket, Key: key(name), Body: createReadStream(file, { highWaterMark: 1 << 20 }), ContentType: o.contentType, ContentLength: total, Metadata: { sha256: o.sha256 } },
      });
      up.on('httpUploadProgress', (p) => o.onProgress?.(p.loaded ?? 0, p.total ?? total));
      try {
        await up.done();
      } catch (err) {
        throw explain(err, `upload of ${location}/${name}`);
      }
    },
    async open(name) {
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: cfg.bucket, Key: key(name) }));
        return { body: r.Body as Readable, size: r.ContentLength ?? null };
      } catch (err) {
        throw explain(err, `${location}/${name}`);
      }
    },
    async remove(names) {
      for (const n of names) {
        try {
          // S3 answers 204 for a key that is not there
          await client.send(new DeleteObjectCommand({ Bucket: cfg.bucket, Key: key(n) }));
        } catch (err) {
          throw explain(err, `delete of ${location}/${n}`);
        }
      }
    },
    presign: (name, seconds) => getSignedUrl(client, new GetObjectCommand({ Bucket: cfg.bucket, Key: key(name) }), { expiresIn: seconds }),
  };
}
