import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { parseMac } from '../../../mac.ts';
import { maskToPrefix, sameSubnet, broadcastOf, networkOf, ipToInt } from '../../../ipv4.ts';
import type { Ipv4Reservation, BmcInput as StoredBmcInput } from '../../../store/machines.ts';
import { parseBmcUrl } from '../../../power/bmc-url.ts';
import { badRequest, notFound, conflict } from '../../errors.ts';
import { Machine, MachineCreate, MachineUpdate, MacParams, MachineListQuery, ErrorReply, type Ipv4Input, type BmcInput } from '../../schemas.ts';
import type { AppDeps } from '../../app.ts';

export function macParam(input: string, field = 'mac'): string {
  const mac = parseMac(input);
  if (!mac) throw badRequest(field, `"${input}" is not a MAC address (e.g. 52:54:00:12:34:56, 52-54-00-12-34-56, 525400123456)`);
  return mac;
}

/** Validates an IPv4 reservation beyond the schema: prefix or netmask, gateway inside the subnet, a host address. */
export function toReservation(v: Ipv4Input): Ipv4Reservation {
  let prefix = v.prefix;
  if (v.netmask !== undefined) {
    const p = maskToPrefix(v.netmask);
    if (p === null) throw badRequest('ipv4.netmask', `${v.netmask} is not a contiguous netmask`);
    if (prefix !== undefined && prefix !== p) throw badRequest('ipv4.netmask', `netmask ${v.netmask} (/${p}) contradicts prefix /${prefix}`);
    prefix = p;
  }
  if (prefix === undefined) throw badRequest('ipv4.prefix', 'give the subnet as prefix (e.g. 24) or netmask (e.g. 255.255.255.0)');
  if (prefix < 31) {
    const a = ipToInt(v.address);
    if (a === networkOf(v.address, prefix)) throw badRequest('ipv4.address', `${v.address} is the network address of /${prefix}`);
    if (a === broadcastOf(v.address, prefix)) throw badRequest('ipv4.address', `${v.address} is the broadcast address of /${prefix}`);
  }
  if (v.gateway !== undefined) {
    if (!sameSubnet(v.address, v.gateway, prefix)) throw badRequest('ipv4.gateway', `gateway ${v.gateway} is not inside ${v.address}/${prefix}`);
    if (v.gateway === v.address) throw badRequest('ipv4.gateway', 'gateway equals the machine\'s own address');
  }
  return {
    address: v.address, prefix, ...(v.gateway ? { gateway: v.gateway } : {}), dns: v.dns ?? [],
    ...(v.leaseSeconds ? { leaseSeconds: v.leaseSeconds } : {}), ...(v.domain ? { domain: v.domain } : {}),
  };
}

/** Validates a BMC beyond the schema: the URL's protocol, host and port; a password for a new BMC. */
export function toBmc(v: BmcInput, hasStoredPassword: boolean): StoredBmcInput {
  const addr = parseBmcUrl(v.url);
  if (typeof addr === 'string') throw badRequest('bmc.url', addr);
  if (v.password === undefined && !hasStoredPassword) throw badRequest('bmc.password', 'a new BMC needs its password');
  if (v.ca && !/-----BEGIN CERTIFICATE-----/.test(v.ca)) throw badRequest('bmc.ca', 'not a PEM certificate bundle (-----BEGIN CERTIFICATE-----)');
  if (addr.protocol === 'ipmi' && (v.ca || v.tlsInsecure)) throw badRequest(v.ca ? 'bmc.ca' : 'bmc.tlsInsecure', 'IPMI has no TLS; ca and tlsInsecure are for redfish:// BMCs');
  return {
    url: `${addr.protocol}://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`, username: v.username,
    ...(v.password !== undefined ? { password: v.password } : {}), tlsInsecure: v.tlsInsecure ?? false, ca: v.ca ?? null,
  };
}

const SSH_KEY_TYPES = /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)$/;

/**
 * OpenSSH authorized_keys lines: `[options] TYPE BASE64 [comment]`, one key per line. The key blob must decode
 * and name the same type (what sshd checks); a line break, a NUL or a bad key is a 400 naming the entry.
 */
export function sshKeysParam(keys: string[]): string[] {
  return keys.map((raw, i) => {
    const field = `sshKeys[${i}]`;
    const line = raw.trim();
    if (/[\r\n\0]/.test(line)) throw badRequest(field, 'one key per entry: no line breaks or NUL bytes');
    const words = line.split(/\s+/);
    const at = words.findIndex((w) => SSH_KEY_TYPES.test(w));
    if (at < 0) throw badRequest(field, `no key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, …) in "${line.slice(0, 40)}…"`);
    const b64 = words[at + 1] ?? '';
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw badRequest(field, `the ${words[at]} key is not base64`);
    const blob = Buffer.from(b64, 'base64');
    const n = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
    if (n <= 0 || 4 + n > blob.length || blob.toString('latin1', 4, 4 + n) !== words[at]) {
      throw badRequest(field, `the key data does not hold a ${words[at]} key (truncated or another type)`);
    }
    return line;
  });
}

export function parseLabelFilter(label: string | string[] | undefined): Record<string, string> | undefined {
  if (label === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const l of Array.isArray(label) ? label : [label]) {
    const i = l.indexOf('=');
    if (i <= 0) throw badRequest('label', `"${l}" is not key=value`);
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

/** /api/v1/machines: one row per MAC address. */
const machinesRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, log }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply };

  app.get('/machines', { schema: { tags: ['machines'], summary: 'List machines', querystring: MachineListQuery, response: { 200: Type.Array(Machine), ...errors } } },
    async (req) => store.machines.list({ labels: parseLabelFilter(req.query.label) }));

  app.post('/machines', { schema: { tags: ['machines'], summary: 'Register a machine', body: MachineCreate, response: { 201: Machine, ...errors } } },
    async (req, reply) => {
      const b = req.body;
      const mac = macParam(b.mac);
      const m = store.machines.create({
        mac, hostname: b.hostname ?? null, ipv4: b.ipv4 ? toReservation(b.ipv4) : null, arch: b.arch,
        efiBinary: b.efiBinary, allowPxe: b.allowPxe, labels: b.labels, sshKeys: b.sshKeys ? sshKeysParam(b.sshKeys) : [], bmc: b.bmc ? toBmc(b.bmc, false) : null,
      });
      log.info({ mac, hostname: m.hostname, ipv4: m.ipv4?.address, bmc: m.bmc?.url }, 'machine registered');
      return reply.code(201).send(m);
    });

  app.get('/machines/:mac', { schema: { tags: ['machines'], summary: 'Get a machine', params: MacParams, response: { 200: Machine, ...errors } } },
    async (req) => {
      const mac = macParam(req.params.mac);
      const m = store.machines.getByMac(mac);
      if (!m) throw notFound('mac', `no machine with MAC ${mac}`);
      return m;
    });

  const hasBmcPassword = (mac: string) => {
    const m = store.machines.getByMac(mac);
    return !!(m && store.machines.getBmcCredentials(m.id));
  };

  app.patch('/machines/:mac', { schema: { tags: ['machines'], summary: 'Update a machine (only the fields given)', params: MacParams, body: MachineUpdate, response: { 200: Machine, ...errors } } },
    async (req) => {
      const mac = macParam(req.params.mac);
      const b = req.body;
      const m = store.machines.update(mac, {
        ...(b.hostname !== undefined ? { hostname: b.hostname } : {}),
        ...(b.ipv4 !== undefined ? { ipv4: b.ipv4 ? toReservation(b.ipv4) : null } : {}),
        ...(b.arch !== undefined ? { arch: b.arch } : {}),
        ...(b.efiBinary !== undefined ? { efiBinary: b.efiBinary } : {}),
        ...(b.allowPxe !== undefined ? { allowPxe: b.allowPxe } : {}),
        ...(b.labels !== undefined ? { labels: b.labels } : {}),
        ...(b.sshKeys !== undefined ? { sshKeys: sshKeysParam(b.sshKeys) } : {}),
        ...(b.bmc !== undefined ? { bmc: b.bmc ? toBmc(b.bmc, hasBmcPassword(mac)) : null } : {}),
      });
      if (!m) throw notFound('mac', `no machine with MAC ${mac}`);
      log.info({ mac, fields: Object.keys(b) }, 'machine updated');
      return m;
    });

  app.delete('/machines/:mac', { schema: { tags: ['machines'], summary: 'Delete a machine and its finished workflows', params: MacParams, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      const mac = macParam(req.params.mac);
      store.tx(() => {
        const m = store.machines.getByMac(mac);
        if (!m) throw notFound('mac', `no machine with MAC ${mac}`);
        const active = store.workflows.activeForMachine(m.id);
        if (active) throw conflict('mac', `machine ${mac} has an active workflow ${active.id} (${active.state}); cancel it first`);
        store.db.prepare('DELETE FROM workflows WHERE machine_id = ?').run(m.id);
        store.db.prepare('DELETE FROM dhcp_leases WHERE mac = ?').run(mac);
        store.machines.delete(m.id);
      });
      log.info({ mac }, 'machine deleted');
      return reply.code(204).send(null);
    });
};

export default machinesRoutes;
