/**
 * Runs INSIDE a test's network namespace: an HTTP forwarder listening on a Unix socket (a file, so the test
 * process in the host namespace can reach it) that passes each request to `x-forward-to: HOST:PORT` inside the
 * namespace. It is how a test talks to the daemon's API on the lab bridge and fetches a page from a VM, without
 * any link between the namespace and the host's network. `x-forward-ca: FILE` makes it an HTTPS request verified
 * against that CA (the daemon's HTTPS side with --tls-cert).
 *
 *   ip netns exec NS node --import tsx test/helpers/lab-forward.ts /tmp/x.sock
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) { process.stderr.write('usage: lab-forward.ts SOCKET\n'); process.exit(2); }
rmSync(socketPath, { force: true });

const server = http.createServer((req, res) => {
  const target = String(req.headers['x-forward-to'] ?? '');
  const m = /^([\d.]+):(\d+)$/.exec(target);
  if (!m) { res.writeHead(400).end('x-forward-to: HOST:PORT missing\n'); return; }
  const headers = { ...req.headers };
  delete headers['x-forward-to'];
  const caFile = headers['x-forward-ca'] ? String(headers['x-forward-ca']) : null;
  delete headers['x-forward-ca'];
  headers.host = target;
  let ca: Buffer | null = null;
  if (caFile) {
    try { ca = readFileSync(caFile); } catch (err) { res.writeHead(400).end(`x-forward-ca: ${(err as Error).message}\n`); return; }
  }
  const opts = { host: m[1], port: Number(m[2]), method: req.method, path: req.url, headers, timeout: 15000 };
  const up = (ca ? https.request({ ...opts, ca }, onReply) : http.request(opts, onReply));
  function onReply(r: http.IncomingMessage) {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  }
  up.on('timeout', () => up.destroy(new Error('timeout')));
  up.on('error', (err) => {
    if (!res.headersSent) res.writeHead(502, { 'x-forward-error': err.message }).end(`forward to ${target} failed: ${err.message}\n`);
    else res.destroy();
  });
  req.pipe(up);
});
server.listen(socketPath, () => process.stdout.write(`forwarding on ${socketPath}\n`));
const stop = () => server.close(() => { rmSync(socketPath, { force: true }); process.exit(0); });
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
