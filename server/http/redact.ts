/**
 * Keeps secrets out of the request log: the values of query parameters that carry credentials (`?token=`,
 * `?ticket=`, …) are replaced before fastify's request line is logged (pure).
 */
import type { FastifyRequest } from 'fastify';

const SECRET_PARAM = /token|ticket|secret|password|passwd|key|auth|signature|sig|credential/i;

export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const parts = url.slice(q + 1).split('&').map((kv) => {
    const eq = kv.indexOf('=');
    const name = eq < 0 ? kv : kv.slice(0, eq);
    let decoded = name;
    try { decoded = decodeURIComponent(name.replace(/\+/g, ' ')); } catch { /* keep as is */ }
    return eq >= 0 && SECRET_PARAM.test(decoded) ? `${name}=[redacted]` : kv;
  });
  return `${url.slice(0, q)}?${parts.join('&')}`;
}

/** fastify's request serializer with the URL redacted; protocol and localPort say which listener took it (HTTP or HTTPS). */
export function redactedRequest(req: FastifyRequest) {
  return {
    method: req.method,
    url: redactUrl(req.url),
    protocol: req.protocol,
    localPort: req.socket?.localPort,
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}
