/**
 * Runs INSIDE a test's network namespace: an HTTP forwarder listening on a Unix socket (a file, so the test
 * process in the host namespace can reach it) that passes each request to `x-forward-to: HOST:PORT` inside the
 * namespace. It is how a test talks to the daemon's API on the lab bridge and fetches a page from a VM, without
 * any link between the namespace and the host's network.
 *
 *   ip netns exec NS node --import tsx test/helpers/lab-forward.ts /tmp/x.sock
 */
import http from 'node:http';
import { rmSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) { process.stderr.write('usage: lab-forward.ts SOCKET\n'); process.exit(2); }
rmSync(socketPath, { force: true });

const server = http.createServer((req, res) => {
  const target = String(req.headers['x-forward-to'] ?? '');
  const m = /^([\d.]+):(\d+)$/.exec(target);
  if (!m) { res.writeHead(400).end('x-forward-to: HOST:PORT missing\n'); return; }
  const headers = { ...req.headers };
  delete headers['x-forward-to'];
  headers.host = target;
  const up = http.request({ host: m[1], port: Number(m[2]), method: req.method, path: req.url, headers, timeout: 15000 }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
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
