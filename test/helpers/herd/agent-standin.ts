/**
 * The reference stack's agent-API stand-in (dnsmasq and nginx have no equivalent of /agent/v1): hello answers the
 * workflow spec from the config file, events are acknowledged with the state they move to; all in memory, nothing
 * stored. `node --import tsx agent-standin.ts HOST PORT SPECS.json` (SPECS: workflowId → WorkflowSpec).
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';

const [host, port, specsFile] = process.argv.slice(2);
const specs = JSON.parse(readFileSync(specsFile, 'utf8')) as Record<string, unknown>;
const states = new Map<string, string>();
http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let body: any;
    try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { res.writeHead(400).end(); return; }
    const spec = specs[body.workflowId];
    if (!spec) { res.writeHead(401).end('{}'); return; }
    let out: unknown;
    if (req.url === '/agent/v1/hello') { states.set(body.workflowId, 'agent-online'); out = spec; } else if (req.url === '/agent/v1/events') {
      for (const e of body.events) if (e.state) states.set(body.workflowId, e.state);
      out = { accepted: body.events.length, state: states.get(body.workflowId) };
    } else { res.writeHead(404).end(); return; }
    const data = JSON.stringify(out);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }).end(data);
  });
}).listen(Number(port), host, () => process.stdout.write('agent stand-in listening\n'));
