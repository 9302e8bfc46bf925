/**
 * A small HTTP server on 127.0.0.1 serving one body with ETag and Range, for the agent's streaming-writer
 * unit tests. It can cut connections part-way (to exercise resume) and ignore Range (to exercise refusal).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeImageServer {
  url: string;
  /** Range header of each request, in order (null when absent). */
  ranges: Array<string | null>;
  close(): Promise<void>;
}

export async function startFakeImageServer(body: Buffer, opts: {
  /** For the first cuts.length requests: destroy the socket after sending this many body bytes. */
  cuts?: number[];
  ignoreRange?: boolean;
  etag?: string;
} = {}): Promise<FakeImageServer> {
  const ranges: Array<string | null> = [];
  const cuts = [...(opts.cuts ?? [])];
  const etag = opts.etag ?? '"img-1"';
  const server = http.createServer((req, res) => {
    ranges.push(req.headers.range ?? null);
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (m && !opts.ignoreRange && (!ifRange || ifRange === etag)) {
      start = Number(m[1]);
      res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}`, etag, 'accept-ranges': 'bytes' });
    } else {
      res.writeHead(200, { 'content-length': body.length, etag, 'accept-ranges': 'bytes' });
    }
    const part = body.subarray(start);
    const cut = cuts.shift();
    if (cut === undefined) { res.end(part); return; }
    res.write(part.subarray(0, cut), () => setTimeout(() => req.socket.destroy(), 20));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/image.ext4.zst`,
    ranges,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
