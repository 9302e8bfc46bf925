/**
 * GET /boot/<mac>.ipxe — the iPXE script DHCP hands to iPXE (`${publicUrl}/boot/${mac}.ipxe`), any MAC notation
 * (52:54:00:12:34:56, 52-54-00-12-34-56 as iPXE's ${mac:hexhyp}, 525400123456). Always 200 with a script: a 404
 * would drop iPXE into its interactive shell. A provisioning script (it carries a fresh boot token) goes only to
 * the machine's own address (server/boot/script-auth.ts); anyone else gets a script without a token that says why.
 * Serving it moves a pending workflow to `booting` (server/boot/serve.ts).
 *
 * GET /boot/boot.ipxe — a generic entry script for DHCP servers that cannot put the MAC in the URL (an existing
 * DHCP server or dnsmasq pointing iPXE at ironboot): it chains to the per-MAC script.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { AppDeps } from '../app.ts';
import { parseMac } from '../../mac.ts';
import type { BootTemplates, BootScriptOptions } from '../../boot/ipxe.ts';
import { createBootScriptServer, type BootScriptPolicy } from '../../boot/serve.ts';

export interface BootRouteOptions extends AppDeps {
  templates: BootTemplates;
  /** How machines reach the HTTP side; null/absent: from the request's Host header. */
  publicUrl?: string | null;
  /** Retry and pause settings passed to the templates. */
  script?: Omit<BootScriptOptions, 'publicUrl' | 'agentUrl'>;
  /** Who may receive a provisioning script; default: reserved addresses only (--boot-script-auth ip). */
  policy?: BootScriptPolicy;
  /** ironboot.server= for the agent from the script's base URL, when it differs (the HTTPS side). */
  agentUrl?: ((scriptBase: string) => string) | null;
}

function scriptsCounter(registry: Registry): Counter<'kind'> {
  const name = 'ironboot_boot_scripts_total';
  return (registry.getSingleMetric(name) as Counter<'kind'> | undefined) ?? new Counter({
    name, help: 'iPXE boot scripts served, by kind (provision, local-boot, unknown, entry, refused: a provisioning script asked for from another address)', labelNames: ['kind'], registers: [registry],
  });
}

/**
 * The base of the script's URLs: the public URL, else the request's own. A script fetched over HTTPS (iPXE built with
 * HTTPS and the CA) keeps iPXE on HTTPS: an http public URL is then mapped to the HTTPS side (agentUrl).
 */
function baseUrl(req: FastifyRequest, publicUrl: string | null | undefined, httpsSide?: ((base: string) => string) | null): string {
  const base = publicUrl ? publicUrl.replace(/\/+$/, '') : `${req.protocol}://${req.headers.host ?? req.hostname}`;
  if (req.protocol === 'https' && base.startsWith('http:') && httpsSide) return httpsSide(base);
  return base;
}

const bootRoutes: FastifyPluginAsync<BootRouteOptions> = async (app, opts) => {
  const { store, workflows, log, templates, registry } = opts;
  const served = scriptsCounter(registry);
  const serveBootScript = createBootScriptServer({
    store, workflows, log, templates, script: opts.script, policy: opts.policy ?? { mode: 'ip', dhcpLeases: false },
  });

  app.get<{ Params: { file: string } }>('/boot/:file', {
    exposeHeadRoute: false, // serving a provisioning script mints a boot token and moves the workflow: GET only
    schema: {
      tags: ['boot'], summary: 'iPXE script for a machine: /boot/<mac>.ipxe',
      params: { type: 'object', properties: { file: { type: 'string' } }, required: ['file'] },
    },
  }, async (req, reply) => {
    const file = req.params.file;
    if (!file.endsWith('.ipxe')) return reply.code(404).send({ error: 'Not Found', message: `no boot file ${file}; scripts are /boot/<mac>.ipxe` });
    const server = baseUrl(req, opts.publicUrl, opts.agentUrl);
    reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store');
    const stem = file.slice(0, -'.ipxe'.length);
    const mac = parseMac(stem);
    if (!mac) {
      served.inc({ kind: 'entry' });
      // not a MAC: the generic entry script (also for /boot/boot.ipxe); iPXE fills in its own MAC
      // its exit status is the per-MAC script's, so the firmware carries on the same way as without this hop
      return `#!ipxe\necho ironboot: ${stem === 'boot' ? 'entry script' : `"${stem}" is not a MAC address`}, chaining to the script for \${mac}\n`
        + `chain --autofree ${server}/boot/\${mac}.ipxe\n`;
    }
    // its token and the move to booting in one group commit with the scripts other machines ask for meanwhile
    const out = await workflows.commitSoon(() => serveBootScript({
      mac, sourceIp: req.ip, via: req.protocol === 'https' ? 'https' : 'http', userAgent: req.headers['user-agent'] ?? null,
      urls: { publicUrl: server, agentUrl: opts.agentUrl?.(server) },
    }));
    served.inc({ kind: out.auth && !out.auth.allow ? 'refused' : out.kind });
    return out.script;
  });
};

export default bootRoutes;

/**
 * For the composition root: a plugin in the shape of AppDeps.plugins, with the templates (loaded and checked at
 * start by loadBootTemplates) and the public URL bound in.
 *   deps.plugins.push({ plugin: bootPlugin(loadBootTemplates(dir), config.publicUrl) })
 */
export function bootPlugin(templates: BootTemplates, publicUrl: string | null, script?: BootRouteOptions['script'],
  access: Pick<BootRouteOptions, 'policy' | 'agentUrl'> = {}): FastifyPluginAsync<AppDeps> {
  return async (app, deps) => bootRoutes(app, { ...deps, templates, publicUrl, script, ...access });
}
