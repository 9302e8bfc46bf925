/**
 * Serves one file from disk with Content-Length, ETag, Last-Modified, HEAD, If-None-Match and single Range
 * requests (RFC 9110). Used for container disks and boot artifacts: large reads (1 MiB) keep it near disk speed.
 */
import { createReadStream, statSync, type Stats } from 'node:fs';
import type { FastifyReply, FastifyRequest } from 'fastify';

export interface SendFileOptions {
  contentType?: string;
  /** A strong validator, e.g. the content's sha256; defaults to size+mtime. */
  etag?: string;
  /** Called when the whole body (or range) has been sent. */
  onDone?: (info: { bytes: number; complete: boolean }) => void;
}

const HIGH_WATER_MARK = 1 << 20;

export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // multi-range or malformed: ignore (send the whole file)
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

export function sendFile(req: FastifyRequest, reply: FastifyReply, path: string, opts: SendFileOptions = {}): FastifyReply {
  let st: Stats;
  try {
    st = statSync(path);
  } catch {
    return reply.code(404).send({ error: 'Not Found', message: 'no such file' });
  }
  if (!st.isFile()) return reply.code(404).send({ error: 'Not Found', message: 'no such file' });
  const size = st.size;
  const etag = `"${opts.etag ?? `${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}`}"`;
  reply.header('ETag', etag);
  reply.header('Last-Modified', st.mtime.toUTCString());
  reply.header('Accept-Ranges', 'bytes');
  reply.header('Content-Type', opts.contentType ?? 'application/octet-stream');
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').map((s) => s.trim()).some((t) => t === etag || t === '*')) {
    return reply.code(304).send();
  }
  let range = parseRange(req.headers.range, size);
  const ifRange = req.headers['if-range'];
  if (range && ifRange && ifRange !== etag) range = null; // changed since: whole file
  if (range === 'unsatisfiable') {
    reply.header('Content-Range', `bytes */${size}`);
    return reply.code(416).send({ error: 'Range Not Satisfiable', message: `file is ${size} bytes` });
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1;
  const length = size === 0 ? 0 : end - start + 1;
  if (range) {
    reply.code(206);
    reply.header('Content-Range', `bytes ${start}-${end}/${size}`);
  }
  reply.header('Content-Length', length);
  if (req.method === 'HEAD' || length === 0) return reply.send();
  const stream = createReadStream(path, { start, end, highWaterMark: HIGH_WATER_MARK });
  if (opts.onDone) {
    let sent = 0;
    stream.on('data', (c) => { sent += (c as Buffer).length; });
    reply.raw.once('close', () => opts.onDone!({ bytes: sent, complete: sent === length && reply.raw.writableFinished }));
  }
  return reply.send(stream);
}
