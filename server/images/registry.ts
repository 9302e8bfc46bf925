/**
 * A distribution v2 (OCI / Docker registry) client: manifests and blobs, anonymous or bearer-token auth as
 * Docker Hub and GHCR do it, basic auth, plain HTTP with `insecure`.
 */
import { createHash } from 'node:crypto';
import { ImageError } from './errors.ts';
import { basicAuthRefusal, envCredentialsNote, findCredentials, type Credentials } from './credentials.ts';
import { MANIFEST_ACCEPT } from './manifest.ts';
import { DOCKER_HUB, formatReference, type ImageReference } from './reference.ts';

export interface RegistryOptions {
  insecure?: boolean;
  credentials?: Credentials | null;
  userAgent?: string;
}

/** WWW-Authenticate: Bearer realm="…",service="…",scope="…" → parts. Pure. */
export function parseAuthenticate(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return { scheme: '', params: {} };
  const params: Record<string, string> = {};
  const re = /(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]))) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

function networkError(err: unknown, host: string, insecure: boolean): ImageError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? (err as { code?: string }).code;
  const why = code === 'ECONNREFUSED' ? 'connection refused (is the registry running on that port?)'
    : code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'host name does not resolve'
    : code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connection timed out'
    : /wrong version number|EPROTO|packet length too long/i.test(String(cause?.message ?? code)) ? 'TLS handshake failed: the registry speaks plain HTTP? then use --insecure'
    : cause?.message ?? (err as Error).message;
  return new ImageError(`cannot reach registry ${host}${insecure ? ' (plain HTTP)' : ''}: ${why}`, 'source.ref');
}

export class RegistryClient {
  private token: string | null = null;
  private basic: string | null = null;
  private readonly base: string;
  private readonly creds: Credentials | null;

  constructor(readonly ref: ImageReference, private opts: RegistryOptions = {}) {
    this.base = `${opts.insecure ? 'http' : 'https'}://${ref.registry}`;
    this.creds = opts.credentials !== undefined ? opts.credentials : findCredentials(ref.registry);
  }

  private get name(): string { return formatReference(this.ref); }

  /** GET with auth negotiation: on 401, obtain a bearer token (or use basic credentials) and retry once. */
  private async get(path: string, headers: Record<string, string> = {}): Promise<Response> {
    const url = `${this.base}/v2/${this.ref.repository}/${path}`;
    const send = async () => {
      const h: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'ironboot', ...headers };
      if (this.token) h.authorization = `Bearer ${this.token}`;
      else if (this.basic) h.authorization = `Basic ${this.basic}`;
      try {
        return await fetch(url, { headers: h, redirect: 'follow' });
      } catch (err) {
        throw networkError(err, this.ref.registry, !!this.opts.insecure);
      }
    };
    let res = await send();
    // first contact, or an expired token (Docker Hub's last 300 s): answer the challenge once and retry
    if (res.status === 401 && !this.basic) {
      this.token = null;
      const challenge = parseAuthenticate(res.headers.get('www-authenticate') ?? '');
      await res.body?.cancel();
      if (challenge.scheme === 'bearer') this.token = await this.fetchToken(challenge.params);
      else if (challenge.scheme === 'basic') {
        if (!this.creds) throw new ImageError(`registry ${this.ref.registry} requires a login: set IRONBOOT_REGISTRY_HOST=${this.ref.registry} with IRONBOOT_REGISTRY_USERNAME/IRONBOOT_REGISTRY_PASSWORD or add it to a Docker config.json${envCredentialsNote(this.ref.registry)}`, 'source.ref');
        const refusal = basicAuthRefusal(this.ref.registry, new URL(url));
        if (refusal) throw new ImageError(`registry ${this.ref.registry} asks for a password: ${refusal}`, 'source.ref');
        this.basic = Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64');
      } else throw new ImageError(`registry ${this.ref.registry} asks for unsupported authentication "${challenge.scheme}"`, 'source.ref');
      res = await send();
    }
    if (res.status === 401 || res.status === 403) {
      const body = await res.text().catch(() => '');
      throw new ImageError(`access to ${this.ref.repository} on ${this.ref.registry} denied (${res.status})${this.creds ? ' with the configured credentials' : `: the repository does not exist or needs credentials${envCredentialsNote(this.ref.registry)}`}${errorDetail(body)}`, 'source.ref');
    }
    return res;
  }

  private async fetchToken(p: Record<string, string>): Promise<string> {
    if (!p.realm) throw new ImageError(`registry ${this.ref.registry} sent a bearer challenge without a realm`);
    let u: URL;
    try { u = new URL(p.realm); } catch { throw new ImageError(`registry ${this.ref.registry} sent a bearer challenge with a bad realm "${p.realm}"`); }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ImageError(`registry ${this.ref.registry} sent a token realm that is not HTTP(S): ${p.realm}`);
    if (p.service) u.searchParams.set('service', p.service);
    u.searchParams.set('scope', p.scope ?? `repository:${this.ref.repository}:pull`);
    const headers: Record<string, string> = {};
    if (this.creds) {
      const refusal = basicAuthRefusal(this.ref.registry, u);
      if (refusal) throw new ImageError(`registry ${this.ref.registry}: ${refusal}`, 'source.ref');
    }
    if (this.creds) headers.authorization = `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')}`;
    let res: Response;
    try { res = await fetch(u, { headers, redirect: this.creds ? 'error' : 'follow' }); } catch (err) { throw networkError(err, u.host, false); }
    if (!res.ok) throw new ImageError(`token service ${u.host} refused a pull token for ${this.ref.repository} (${res.status})${this.creds ? ': check the credentials' : ''}`, 'source.ref');
    const j = (await res.json()) as { token?: string; access_token?: string };
    const t = j.token ?? j.access_token;
    if (!t) throw new ImageError(`token service ${u.host} returned no token`);
    return t;
  }

  /** A manifest or index by tag or digest; verified against the digest when fetched by digest. */
  async manifest(reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const res = await this.get(`manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.status === 404) {
      const body = await res.text().catch(() => '');
      const what = reference.startsWith('sha256:') ? `digest ${reference}` : `tag "${reference}"`;
      throw new ImageError(`${this.ref.registry}/${this.ref.repository}: ${what} not found${errorDetail(body)}`, 'source.ref');
    }
    if (!res.ok) throw new ImageError(`${this.name}: registry answered ${res.status} for the manifest${errorDetail(await res.text().catch(() => ''))}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length > 4 << 20) throw new ImageError(`${this.name}: manifest larger than 4 MiB`);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new ImageError(`${this.name}: manifest content does not match digest ${reference} (got ${digest})`);
    }
    return { bytes, mediaType: (res.headers.get('content-type') ?? '').split(';')[0], digest };
  }

  /** A blob's bytes as a stream (the caller verifies the digest while consuming it). */
  async blob(digest: string): Promise<AsyncIterable<Buffer>> {
    const res = await this.get(`blobs/${digest}`);
    if (res.status === 404) throw new ImageError(`${this.name}: blob ${digest} not found in the registry`);
    if (!res.ok || !res.body) throw new ImageError(`${this.name}: registry answered ${res.status} for blob ${digest}`);
    const body = res.body;
    const host = this.ref.registry;
    return (async function* () {
      try {
        for await (const u8 of body as unknown as AsyncIterable<Uint8Array>) yield Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
      } catch (err) {
        throw new ImageError(`download of blob ${digest} from ${host} failed: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`);
      }
    })();
  }

  async blobBytes(digest: string, max = 16 << 20): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of await this.blob(digest)) {
      n += c.length;
      if (n > max) throw new ImageError(`${this.name}: blob ${digest} larger than ${max} bytes`);
      parts.push(c);
    }
    return Buffer.concat(parts);
  }
}

function errorDetail(body: string): string {
  try {
    const j = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    const e = j.errors?.[0];
    if (e) return ` (${e.code}${e.message ? `: ${e.message}` : ''})`;
  } catch { /* not JSON */ }
  return '';
}

export { DOCKER_HUB };
