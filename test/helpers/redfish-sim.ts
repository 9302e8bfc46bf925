/**
 * A small Redfish BMC for tests, written around a real QEMU process and its QMP socket: HTTPS (a self-signed
 * certificate made with openssl for 127.0.0.1) on loopback, one ComputerSystem, SessionService sessions and basic
 * auth. ComputerSystem.Reset On starts QEMU, ForceOff sends QMP `quit`, ForceRestart QMP `system_reset`,
 * PowerCycle stops and starts the process, GracefulShutdown `system_powerdown`; PowerState comes from the process
 * and QMP `query-status`. Boot.BootSourceOverrideTarget=Pxe with Enabled=Once picks QEMU's `-boot n` for the next
 * start only. Every request is kept in `requests` (method, path, whether it was authenticated).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, appendFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';

export interface RedfishSimOptions {
  dir: string;
  port: number;
  username: string;
  password: string;
  /** QEMU argv without -boot and -qmp (added per power-on). */
  machine: string[];
}

export function makeSelfSignedCert(dir: string, host = '127.0.0.1'): { key: string; cert: string } {
  const key = join(dir, 'bmc.key'); const cert = join(dir, 'bmc.crt');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', `/CN=${host}`, '-addext', `subjectAltName=IP:${host}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
}

/** One QMP command on a fresh connection (capabilities negotiated first). */
export function qmp(socket: string, execute: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let buf = '';
    let step = 0;
    const timer = setTimeout(() => { c.destroy(); reject(new Error(`QMP ${execute}: timeout`)); }, 5000);
    c.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line);
        if (msg.event) continue;
        if (step === 0 && msg.QMP) { step = 1; c.write('{"execute":"qmp_capabilities"}\n'); continue; }
        if (step === 1 && 'return' in msg) { step = 2; c.write(JSON.stringify({ execute }) + '\n'); continue; }
        if (step === 2) { clearTimeout(timer); c.end(); if (msg.error) reject(new Error(`QMP ${execute}: ${msg.error.desc}`)); else resolve(msg.return); }
      }
    });
    c.on('error', (e) => { clearTimeout(timer); reject(e); });
    c.on('close', () => { clearTimeout(timer); if (step < 2) reject(new Error(`QMP ${execute}: connection closed`)); });
  });
}

const SYSTEM = '/redfish/v1/Systems/1';

export class RedfishSim {
  readonly requests: { method: string; path: string; authenticated: boolean }[] = [];
  readonly powerLog: string[] = [];
  readonly cert: string;
  private server!: https.Server;
  private qemu: ChildProcess | null = null;
  private sessions = new Map<string, string>(); // token → session id
  private override: { target: string; enabled: string } = { target: 'None', enabled: 'Disabled' };
  private readonly qmpSocket: string;

  private constructor(readonly o: RedfishSimOptions, tls: { key: string; cert: string }) {
    this.cert = tls.cert;
    this.qmpSocket = join(o.dir, 'qmp.sock');
    this.server = https.createServer({ key: tls.key, cert: tls.cert }, (req, res) => { void this.handle(req, res); });
  }

  static async start(o: RedfishSimOptions): Promise<RedfishSim> {
    const sim = new RedfishSim(o, makeSelfSignedCert(o.dir));
    await new Promise<void>((r) => sim.server.listen(o.port, '127.0.0.1', () => r()));
    return sim;
  }

  machinePid(): number | null {
    return this.qemu && this.qemu.exitCode === null && this.qemu.signalCode === null ? this.qemu.pid ?? null : null;
  }

  get bootOverride() { return { ...this.override }; }

  private async powerOn(): Promise<void> {
    if (this.machinePid()) return;
    const order = this.override.target === 'Pxe' ? 'n' : 'c';
    if (this.override.enabled === 'Once') this.override = { target: 'None', enabled: 'Disabled' };
    this.powerLog.push(`on ${order}`);
    const p = spawn(this.o.machine[0], [...this.o.machine.slice(1), '-qmp', `unix:${this.qmpSocket},server=on,wait=off`, '-boot', `order=${order}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = join(this.o.dir, 'machine.console');
    p.stdout!.on('data', (d) => appendFileSync(log, d)); p.stderr!.on('data', (d) => appendFileSync(log, d));
    this.qemu = p;
    for (let i = 0; i < 100; i++) {
      try { await qmp(this.qmpSocket, 'query-status'); return; } catch { await new Promise((r) => setTimeout(r, 100)); }
      if (p.exitCode !== null) throw new Error(`QEMU exited with ${p.exitCode}`);
    }
  }

  private async powerOff(): Promise<void> {
    const p = this.qemu;
    if (!this.machinePid() || !p) return;
    this.powerLog.push('off');
    const gone = new Promise((r) => p.once('exit', r));
    await qmp(this.qmpSocket, 'quit').catch(() => p.kill('SIGKILL'));
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
    if (p.exitCode === null && p.signalCode === null) { p.kill('SIGKILL'); await gone; }
  }

  private authenticated(req: import('node:http').IncomingMessage): boolean {
    const t = req.headers['x-auth-token'];
    if (typeof t === 'string' && this.sessions.has(t)) return true;
    const b = req.headers.authorization;
    if (b?.startsWith('Basic ')) return Buffer.from(b.slice(6), 'base64').toString() === `${this.o.username}:${this.o.password}`;
    return false;
  }

  private async handle(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    const body = text ? JSON.parse(text) : null;
    const path = (req.url ?? '').split('?')[0].replace(/\/$/, '');
    const send = (status: number, data?: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(data === undefined ? '' : JSON.stringify(data));
    };
    const authed = this.authenticated(req);
    this.requests.push({ method: req.method ?? '', path, authenticated: authed });
    try {
      if (req.method === 'POST' && path === '/redfish/v1/SessionService/Sessions') {
        if (body?.UserName !== this.o.username || body?.Password !== this.o.password) return send(401, { error: { message: 'invalid credentials' } });
        const token = randomBytes(16).toString('hex'); const id = randomBytes(4).toString('hex');
        this.sessions.set(token, id);
        return send(201, { '@odata.id': `/redfish/v1/SessionService/Sessions/${id}`, Id: id }, { 'x-auth-token': token, location: `/redfish/v1/SessionService/Sessions/${id}` });
      }
      if (!authed) return send(401, { error: { message: 'authentication required' } });
      if (req.method === 'DELETE' && path.startsWith('/redfish/v1/SessionService/Sessions/')) {
        for (const [t, id] of this.sessions) if (path.endsWith(`/${id}`)) this.sessions.delete(t);
        return send(204);
      }
      if (req.method === 'GET' && path === '/redfish/v1/Systems') return send(200, { Members: [{ '@odata.id': SYSTEM }], 'Members@odata.count': 1 });
      if (req.method === 'GET' && path === SYSTEM) {
        let state = 'Off';
        if (this.machinePid()) state = (await qmp(this.qmpSocket, 'query-status').catch(() => null)) ? 'On' : 'Off';
        return send(200, {
          '@odata.id': SYSTEM, Id: '1', PowerState: state,
          Boot: { BootSourceOverrideTarget: this.override.target, BootSourceOverrideEnabled: this.override.enabled },
          Actions: { '#ComputerSystem.Reset': { target: `${SYSTEM}/Actions/ComputerSystem.Reset`, 'ResetType@Redfish.AllowableValues': ['On', 'ForceOff', 'GracefulShutdown', 'ForceRestart', 'PowerCycle'] } },
        });
      }
      if (req.method === 'PATCH' && path === SYSTEM) {
        const b = body?.Boot ?? {};
        if (b.BootSourceOverrideTarget && !['None', 'Pxe', 'Hdd', 'Cd'].includes(b.BootSourceOverrideTarget)) return send(400, { error: { message: `bad target ${b.BootSourceOverrideTarget}` } });
        this.override = { target: b.BootSourceOverrideTarget ?? this.override.target, enabled: b.BootSourceOverrideEnabled ?? this.override.enabled };
        return send(204);
      }
      if (req.method === 'POST' && path === `${SYSTEM}/Actions/ComputerSystem.Reset`) {
        switch (body?.ResetType) {
          case 'On': await this.powerOn(); break;
          case 'ForceOff': await this.powerOff(); break;
          case 'GracefulShutdown': if (this.machinePid()) await qmp(this.qmpSocket, 'system_powerdown'); break;
          case 'ForceRestart': if (this.machinePid()) { this.powerLog.push('reset'); await qmp(this.qmpSocket, 'system_reset'); } break;
          case 'PowerCycle': if (this.machinePid()) { await this.powerOff(); await this.powerOn(); } break;
          default: return send(400, { error: { message: `ResetType ${body?.ResetType} is not allowed` } });
        }
        return send(204);
      }
      return send(404, { error: { message: `no resource ${path}` } });
    } catch (err) {
      return send(500, { error: { message: (err as Error).message } });
    }
  }

  async stop(): Promise<void> {
    await this.powerOff().catch(() => this.qemu?.kill('SIGKILL'));
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
