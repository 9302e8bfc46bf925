/**
 * A real S3 server for tests: s3rver (npm, a Koa implementation of the S3 REST API that keeps objects in a
 * directory) on 127.0.0.1 at a free port, with one bucket, and an SDK client to look inside it.
 *
 * s3rver 3.7.1 was chosen over @20minutes/s3rver: with the AWS SDK v3 it does HeadBucket, multipart uploads,
 * ranged and presigned GETs, ListObjectsV2 and DeleteObject; the @20minutes fork (4.x as installed here) answered
 * HeadBucket with an unparseable error. s3rver checks the access key id (S3RVER) but not the V4 signature itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import S3rver from 's3rver';
import { S3Client, ListObjectsV2Command, GetObjectCommand, PutObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { freePorts } from './ports.ts';

/** s3rver's built-in account. */
export const S3_KEY = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface TestS3 {
  endpoint: string;
  port: number;
  bucket: string;
  client: S3Client;
  /** Keys under `prefix` with their sizes. */
  list(prefix?: string): Promise<{ key: string; size: number }[]>;
  get(key: string): Promise<Buffer>;
  sha256(key: string): Promise<string>;
  head(key: string): Promise<{ metadata: Record<string, string>; etag: string }>;
  put(key: string, body: Buffer): Promise<void>;
  /** Every request the server got, as "METHOD /path?query". */
  requests(): string[];
  stop(): Promise<void>;
}

export async function startS3Server(bucket = 'ironboot-images'): Promise<TestS3> {
  const dir = mkdtempSync(join(tmpdir(), 'ib-s3rver-'));
  const port = await freePorts(1);
  const server = new S3rver({ port, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const seen: string[] = [];
  // first in Koa's chain (S3rver is a Koa app whose routes do not call next)
  (server as unknown as { middleware: unknown[] }).middleware.unshift(async (ctx: { method: string; url: string }, next: () => Promise<void>) => {
    seen.push(`${ctx.method} ${ctx.url}`);
    await next();
  });
  await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_KEY,
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const get = async (key: string) => {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const parts: Buffer[] = [];
    for await (const c of r.Body as AsyncIterable<Buffer>) parts.push(c);
    return Buffer.concat(parts);
  };
  return {
    endpoint, port, bucket, client, get,
    requests: () => [...seen],
    async list(prefix = '') {
      const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (r.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0 }));
    },
    sha256: async (key) => createHash('sha256').update(await get(key)).digest('hex'),
    async head(key) {
      const h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return { metadata: h.Metadata ?? {}, etag: h.ETag ?? '' };
    },
    async put(key, body) { await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body })); },
    async stop() {
      client.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
