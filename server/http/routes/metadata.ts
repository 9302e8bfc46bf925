/**
 * EC2-style instance metadata for installed machines (mode install), for images that ask for it over HTTP:
 *
 *   GET /2009-04-04/meta-data/                    index (instance-id, hostname, local-hostname, local-ipv4, mac, public-keys/)
 *   GET /2009-04-04/meta-data/instance-id | hostname | local-ipv4 | public-keys/0/openssh-key | …
 *   GET /2009-04-04/user-data                     #cloud-config (hostname, ssh_authorized_keys)
 *   (also under /latest/)
 *
 * The caller is identified by the request's source address alone, never by anything in the URL: the address must be
 * a machine's reservation (or its bound DHCP lease), the MAC that the neighbour table (/proc/net/arp) holds for that
 * address must be the machine's, and the machine's latest workflow must be an install that succeeded. Anything
 * else is a 404 that says nothing about other machines (the reason is logged).
 */
import { readFileSync } from 'node:fs';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import type { Machine } from '../../store/machines.ts';
import type { Workflow } from '../../store/workflows.ts';
import type { Store } from '../../store/index.ts';
import { parseMac } from '../../mac.ts';
import { plainAddress } from '../../workflows/tokens.ts';
import { instanceData, metadataListing, metadataTree, userData, type InstanceData } from '../../workflows/install.ts';

/** IPv4 address → MAC from /proc/net/arp text (complete entries only: flags with ATF_COM, 0x2) (pure). */
export function parseArpTable(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    const flags = Number.parseInt(f[2], 16);
    const mac = parseMac(f[3]);
    if (!(flags & 0x2) || !mac || mac === '00:00:00:00:00:00') continue;
    out.set(f[0], mac);
  }
  return out;
}

export type NeighbourLookup = (ip: string) => string | null;

export const procNeighbours: NeighbourLookup = (ip) => {
  try { return parseArpTable(readFileSync('/proc/net/arp', 'utf8')).get(ip) ?? null; } catch { return null; }
};

export type Identified = { ok: true; machine: Machine; workflow: Workflow; data: InstanceData } | { ok: false; why: string };

/** Who is asking (pure apart from the store and the neighbour lookup). */
export function identifyInstance(store: Store, sourceIp: string, neighbours: NeighbourLookup): Identified {
  const ip = plainAddress(sourceIp);
  let machine = store.machines.getByIpv4(ip);
  if (!machine) {
    const lease = store.leases.get(ip);
    if (lease?.state === 'bound' && lease.mac && lease.expiresAt > Date.now()) machine = store.machines.getByMac(lease.mac);
  }
  if (!machine) return { ok: false, why: `${ip} is no machine's reserved or leased address` };
  const seen = neighbours(ip);
  if (!seen) return { ok: false, why: `no neighbour entry for ${ip} (not on a provisioning network of this server)` };
  if (seen !== machine.mac) return { ok: false, why: `${ip} belongs to ${machine.mac}, but the neighbour table has ${seen} for it` };
  const wf = store.workflows.latestForMachine(machine.id);
  if (!wf || wf.mode !== 'install' || wf.state !== 'succeeded') return { ok: false, why: `${machine.mac} has no succeeded install workflow` };
  const img = store.images.get(wf.imageId);
  return { ok: true, machine, workflow: wf, data: instanceData(machine, wf, img ?? { name: wf.imageId }) };
}

export type MetadataOptions = AppDeps & { neighbours?: NeighbourLookup };

const metadataRoutes: FastifyPluginAsyncTypebox<MetadataOptions> = async (app, opts) => {
  const { store, log } = opts;
  const neighbours = opts.neighbours ?? procNeighbours;
  const text = Type.String();
  const who = (req: { ip: string }, reply: { code(n: number): { send(b: unknown): unknown } }) => {
    const r = identifyInstance(store, req.ip, neighbours);
    if (!r.ok) {
      log.info({ from: plainAddress(req.ip), why: r.why }, 'metadata request refused');
      reply.code(404).send({ error: 'Not Found', message: 'no instance metadata for this address' });
      return null;
    }
    return r;
  };
  for (const base of ['/2009-04-04', '/latest']) {
    app.get(`${base}/meta-data/*`, { schema: { tags: ['metadata'], summary: 'EC2-style meta-data of the calling installed machine (by source address and MAC)', response: { 200: text, 404: Type.Unknown() } } },
      async (req, reply) => {
        const r = who(req, reply);
        if (!r) return reply;
        const path = (req.params as { '*': string })['*'] ?? '';
        const tree = metadataTree(r.data);
        reply.type('text/plain; charset=utf-8');
        if (path === '' || path.endsWith('/')) {
          const listing = metadataListing(tree, path);
          if (listing === null) return reply.code(404).send('not found');
          return listing;
        }
        const v = tree.get(path);
        if (v === undefined) {
          const asDir = metadataListing(tree, `${path}/`);
          if (asDir !== null) return asDir;
          return reply.code(404).send('not found');
        }
        return v;
      });
    app.get(`${base}/meta-data`, { schema: { hide: true } }, async (req, reply) => reply.redirect(`${base}/meta-data/`));
    app.get(`${base}/user-data`, { schema: { tags: ['metadata'], summary: 'cloud-config user-data of the calling installed machine', response: { 200: text } } },
      async (req, reply) => {
        const r = who(req, reply);
        if (!r) return reply;
        reply.type('text/plain; charset=utf-8');
        return userData(r.data);
      });
  }
};

export default metadataRoutes;
