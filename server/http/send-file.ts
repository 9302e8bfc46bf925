/**
 * Serves one file from disk (container disks, boot artifacts, iPXE binaries): Content-Length, ETag, Last-Modified,
 * If-None-Match, single Range requests with If-Range (RFC 9110), and HEAD. The body: on a plain TCP socket, bodies
 * of 64 KiB and more go through sendfile(2) (sendfile-helper.ts: the native addon's threads) as nginx does; others
 * (TLS, small, or without the addon) by reads of up to 1 MiB written straight to the socket with backpressure.
 */
import { closeSync, fstatSync, openSync, read } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sendfileAvailable, sendfileToSocket, socketFd } from './sendfile-helper.ts';

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

export const READ_SIZE = 1 << 20;
/** Bodies at least this big go through sendfile(2) (sendfile-helper.ts) when available. */
export const SENDFILE_MIN = 64 << 10;

export interface SendFileOptions {
  contentType?: string;
  /** A strong validator, e.g. the content's sha256; defaults to size+mtime. */
  etag?: string;
  /** Cache-Control; container disks are immutable (content-addressed), artifacts are not. */
  cacheControl?: string;
}

export function sendFile(req: FastifyRequest, reply: FastifyReply, path: string, opts: SendFileOptions = {}): FastifyReply {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return reply.code(404).send({ error: 'Not Found', message: 'no such file' });
  }
  let owned = true;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return reply.code(404).send({ error: 'Not Found', message: 'no such file' });
    const size = st.size;
    const etag = `"${opts.etag ?? `${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}`}"`;
    reply.header('ETag', etag);
    reply.header('Last-Modified', st.mtime.toUTCString());
    reply.header('Accept-Ranges', 'bytes');
    reply.header('Content-Type', opts.contentType ?? 'application/octet-stream');
    if (opts.cacheControl) reply.header('Cache-Control', opts.cacheControl);
    const inm = req.headers['if-none-match'];
    if (inm && inm.split(',').map((s) => s.trim()).some((t) => t === etag || t === '*')) return reply.code(304).send();
    let range = parseRange(req.headers.range, size);
    const ifRange = req.headers['if-range'];
    if (range && ifRange && ifRange !== etag) range = null;
    if (range === 'unsatisfiable') {
      reply.header('Content-Range', `bytes */${size}`);
      return reply.code(416).type('application/json; charset=utf-8').send({ error: 'Range Not Satisfiable', message: `file is ${size} bytes` });
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : size - 1;
    const length = size === 0 ? 0 : end - start + 1;
    if (range) {
      reply.code(206);
      reply.header('Content-Range', `bytes ${start}-${end}/${size}`);
    }
    reply.header('Content-Length', length);
    if (req.method === 'HEAD' || length === 0) {
      // written by hand: fastify would replace Content-Length with the (empty) body's
      reply.hijack();
      reply.raw.writeHead(reply.statusCode, reply.getHeaders() as Record<string, string | number | string[]>);
      reply.raw.end();
      return reply;
    }
    owned = false;
    // never on TLS (socketFd is null there): sendfile(2) would write the file's plain bytes under the TLS layer
    if (length >= SENDFILE_MIN && sendfileAvailable() && reply.raw.socket && socketFd(reply.raw.socket) !== null) return zeroCopy(reply, fd, start, length);
    return pump(reply, fd, start, length);
  } finally {
    if (owned) closeSync(fd);
  }
}

/** Headers written by hand, the body by sendfile(2) on one of the addon's threads; the connection closes after the body. */
function zeroCopy(reply: FastifyReply, fd: number, start: number, length: number): FastifyReply {
  reply.hijack();
  const socket = reply.raw.socket!;
  const headers = { ...reply.getHeaders(), connection: 'close', date: new Date().toUTCString() } as Record<string, string | number | string[]>;
  let head = `HTTP/1.1 ${reply.statusCode} ${STATUS_CODES[reply.statusCode] ?? ''}\r\n`;
  for (const [k, v] of Object.entries(headers)) for (const x of Array.isArray(v) ? v : [v]) head += `${k}: ${x}\r\n`;
  let fdOpen = true;
  const closeFd = () => { if (fdOpen) { fdOpen = false; closeSync(fd); } };
  socket.write(head + '\r\n', (err) => {
    // the client may be gone already (the write fails, or the socket has no handle left)
    if (err || socket.destroyed) { closeFd(); socket.destroy(); return; }
    const sending = sendfileToSocket(fd, start, length, socket);
    closeFd(); // the addon holds its own duplicate
    void sending.then((r) => {
      if (!r.ok) reply.log.debug({ sent: r.sent, length, reason: r.error }, 'file body not sent whole');
      if (r.ok) socket.end(); else socket.destroy();
    });
  });
  return reply;
}

function pump(reply: FastifyReply, fd: number, start: number, length: number): FastifyReply {
  const res = reply.raw;
  reply.hijack();
  const headers = reply.getHeaders() as Record<string, string | number | string[]>;
  res.writeHead(reply.statusCode, headers);
  let pos = start;
  const end = start + length;
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    closeSync(fd);
  };
  res.once('close', finish);
  const next = () => {
    if (closed) return;
    if (pos >= end) { res.end(); return; }
    const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, end - pos));
    read(fd, buf, 0, buf.length, pos, (err, n) => {
      if (closed) return;
      if (err || n === 0) { res.destroy(err ?? new Error('file shrank while being sent')); return; }
      pos += n;
      if (res.write(n === buf.length ? buf : buf.subarray(0, n))) next();
      else res.once('drain', next);
    });
  };
  next();
  return reply;
}
