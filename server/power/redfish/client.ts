/**
 * Redfish power control over HTTPS (DSP0266): ComputerSystem.Reset and the one-time boot override
 * (Boot.BootSourceOverrideTarget = Pxe, BootSourceOverrideEnabled = Once). Session auth (POST
 * /redfish/v1/SessionService/Sessions → X-Auth-Token, deleted afterwards), or HTTP basic auth when the service
 * has no session service. Certificates verify against the system CAs or a per-BMC CA; a BMC whose self-signed
 * certificate should simply be accepted needs tlsInsecure set for that BMC. Every request has a deadline.
 */
import https from 'node:https';
import { PowerError, type PowerDriver } from '../driver.ts';

export interface RedfishOptions {
  /** PEM CA bundle that signs the BMC's certificate (instead of the system CAs). */
  ca?: string | null;
  /** Accept any certificate (self-signed BMCs), for this BMC only. */
  tlsInsecure?: boolean;
  /** 'session' (default: falls back to basic when there is no session service) or 'basic'. */
  auth?: 'session' | 'basic';
  timeoutMs?: number;
}

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: any }

const TLS_CODES = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE']);

export class RedfishClient implements PowerDriver {
  readonly protocol = 'redfish' as const;
  private agent: https.Agent;
  private timeoutMs: number;

  constructor(readonly target: { host: string; port: number }, private creds: { username: string; password: string }, private opts: RedfishOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.agent = new https.Agent({
      keepAlive: false,
      rejectUnauthorized: !opts.tlsInsecure,
      ...(opts.ca ? { ca: opts.ca } : {}),
    });
  }

  private request(method: string, path: string, body: unknown, headers: Record<string, string>): Promise<Reply> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: this.target.host, port: this.target.port, method, path, agent: this.agent, servername: this.target.host,
        headers: { accept: 'application/json', 'odata-version': '4.0', ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}), ...headers },
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => { size += c.length; if (size <= 1 << 20) chunks.push(c); });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = null;
          try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
        res.on('error', reject);
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new PowerError('timeout', `Redfish: no answer from ${this.where()} to ${method} ${path} within ${this.timeoutMs / 1000} s`)));
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.mapError(err)));
      req.end(payload);
    });
  }

  private where(): string { return `${this.target.host}:${this.target.port}`; }

  private mapError(err: NodeJS.ErrnoException): Error {
    if (err instanceof PowerError) return err;
    const code = err.code ?? '';
    if (TLS_CODES.has(code)) {
      return new PowerError('tls', `Redfish: the certificate of ${this.where()} does not verify (${code}); give the BMC's CA (bmc.ca), or accept this BMC's self-signed certificate explicitly (bmc.tlsInsecure)`);
    }
    if (['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET'].includes(code)) {
      return new PowerError('unreachable', `Redfish: cannot reach ${this.where()}: ${code}`);
    }
    if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS')) return new PowerError('tls', `Redfish: TLS with ${this.where()} failed: ${err.message}`);
    return new PowerError('unreachable', `Redfish: ${this.where()}: ${err.message}`);
  }

  /** Runs fn with an authenticated request function; deletes the session afterwards. */
  private async withAuth<T>(fn: (call: (method: string, path: string, body?: unknown) => Promise<Reply>) => Promise<T>): Promise<T> {
    let auth: Record<string, string> = { authorization: `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')}` };
    let sessionUri: string | null = null;
    if ((this.opts.auth ?? 'session') === 'session') {
      const r = await this.request('POST', '/redfish/v1/SessionService/Sessions', { UserName: this.creds.username, Password: this.creds.password }, {});
      if (r.status === 401 || r.status === 403) throw new PowerError('auth', `Redfish: ${this.where()} refused the session for user "${this.creds.username}" (HTTP ${r.status}): wrong user name or password`);
      const token = r.headers['x-auth-token'];
      if (r.status < 300 && typeof token === 'string') {
        auth = { 'x-auth-token': token };
        const loc = r.headers.location;
        sessionUri = typeof loc === 'string' ? new URL(loc, 'https://bmc').pathname : (r.body?.['@odata.id'] ?? null);
      } else if (![404, 405, 501].includes(r.status)) {
        throw new PowerError('protocol', `Redfish: creating a session failed with HTTP ${r.status}${messageOf(r.body)}`);
      } // else: no session service, basic auth
    }
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await this.request(method, path, body, auth);
      if (r.status === 401 || r.status === 403) throw new PowerError('auth', `Redfish: ${method} ${path} refused (HTTP ${r.status}): wrong user name or password, or too little privilege`);
      return r;
    };
    try {
      return await fn(call);
    } finally {
      if (sessionUri) await this.request('DELETE', sessionUri, undefined, auth).catch(() => undefined);
    }
  }

  private async system(call: (m: string, p: string, b?: unknown) => Promise<Reply>): Promise<{ path: string; body: any }> {
    const list = await call('GET', '/redfish/v1/Systems');
    if (list.status !== 200) throw new PowerError('protocol', `Redfish: GET /redfish/v1/Systems → HTTP ${list.status}${messageOf(list.body)}`);
    const members = list.body?.Members;
    if (!Array.isArray(members) || members.length === 0) throw new PowerError('protocol', 'Redfish: the service lists no ComputerSystem');
    if (members.length > 1) throw new PowerError('protocol', `Redfish: the service lists ${members.length} systems; ironboot drives BMCs of one system`);
    const path = String(members[0]['@odata.id']);
    const sys = await call('GET', path);
    if (sys.status !== 200) throw new PowerError('protocol', `Redfish: GET ${path} → HTTP ${sys.status}${messageOf(sys.body)}`);
    return { path, body: sys.body };
  }

  private async reset(call: (m: string, p: string, b?: unknown) => Promise<Reply>, sys: { path: string; body: any }, type: string): Promise<void> {
    const action = sys.body?.Actions?.['#ComputerSystem.Reset'];
    const target = action?.target ?? `${sys.path}/Actions/ComputerSystem.Reset`;
    const r = await call('POST', target, { ResetType: type });
    if (r.status >= 300) throw new PowerError('command', `Redfish: ComputerSystem.Reset ${type} → HTTP ${r.status}${messageOf(r.body)}`);
  }

  private static allowed(sys: { body: any }): string[] | null {
    const v = sys.body?.Actions?.['#ComputerSystem.Reset']?.['ResetType@Redfish.AllowableValues'];
    return Array.isArray(v) ? v.map(String) : null;
  }

  async status(): Promise<'on' | 'off'> {
    return this.withAuth(async (call) => {
      const s = (await this.system(call)).body?.PowerState;
      if (s === 'On' || s === 'PoweringOff' || s === 'Paused') return 'on';
      if (s === 'Off' || s === 'PoweringOn') return 'off';
      throw new PowerError('protocol', `Redfish: PowerState "${s}" is not one of On, Off, PoweringOn, PoweringOff`);
    });
  }

  on() { return this.withAuth(async (call) => this.reset(call, await this.system(call), 'On')); }
  off() { return this.withAuth(async (call) => this.reset(call, await this.system(call), 'ForceOff')); }

  cycle() {
    return this.withAuth(async (call) => {
      const sys = await this.system(call);
      const allowed = RedfishClient.allowed(sys);
      const type = !allowed || allowed.includes('PowerCycle') ? 'PowerCycle' : allowed.includes('ForceRestart') ? 'ForceRestart' : null;
      if (!type) throw new PowerError('command', `Redfish: the system allows neither PowerCycle nor ForceRestart (only ${allowed!.join(', ')})`);
      await this.reset(call, sys, type);
    });
  }

  bootPxe(opts: { efi: boolean }) {
    return this.withAuth(async (call) => {
      const sys = await this.system(call);
      const boot: Record<string, string> = { BootSourceOverrideTarget: 'Pxe', BootSourceOverrideEnabled: 'Once' };
      if (opts.efi) boot.BootSourceOverrideMode = 'UEFI';
      const r = await call('PATCH', sys.path, { Boot: boot });
      if (r.status >= 300) throw new PowerError('command', `Redfish: PATCH ${sys.path} Boot override → HTTP ${r.status}${messageOf(r.body)}`);
    });
  }
}

function messageOf(body: any): string {
  const m = body?.error?.['@Message.ExtendedInfo']?.[0]?.Message ?? body?.error?.message;
  return m ? `: ${m}` : '';
}
