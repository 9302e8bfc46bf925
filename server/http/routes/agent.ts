import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Hello, WorkflowSpec, EventBatch, EventBatchReply, AGENT_EVENTS_BODY_LIMIT, PeersQuery, PeersReply, ChunkReport, ChunkReportReply, P2P_MAX_QUERY } from '../../agent/api.ts';
import { applyAgentBatch } from '../../workflows/agent-events.ts';
import type { Workflow } from '../../store/workflows.ts';
import type { Store } from '../../store/index.ts';
import { parseMac } from '../../mac.ts';
import { isFinal } from '../../workflows/states.ts';
import { issueBootToken } from '../../workflows/persistent.ts';
import { bearer, tokenMatches } from '../auth.ts';
import { ApiError, badRequest } from '../errors.ts';
import { ErrorReply } from '../schemas.ts';
import type { AppDeps } from '../app.ts';
import { AgentTokens, plainAddress, refuse, type TokenRefusal } from '../../workflows/tokens.ts';
import type { WorkflowService } from '../../workflows/service.ts';
import type { Logger } from 'pino';
import type { BootDisk } from '../../images/bootable.ts';
import { ROOT_START, SECTOR } from '../../images/bootable.ts';
import { firstBootFiles, instanceData } from '../../workflows/install.ts';

/** A refused agent token as the error reply; a suspicious one (a replay, another address) also as a workflow event. */
function refused(r: TokenRefusal, ctx: { workflows: WorkflowService; log: Logger; ip: string; route: string }): ApiError {
  if (r.suspicious) {
    ctx.log.warn({ workflow: r.suspicious.workflowId, from: ctx.ip, route: ctx.route, why: r.suspicious.kind, status: r.status }, `agent call refused: ${r.message}`);
    if (ctx.route === 'hello') {
      ctx.workflows.record({
        workflowId: r.suspicious.workflowId, kind: 'info', message: `hello refused from ${ctx.ip}: ${r.message}`,
        payload: { refused: r.suspicious.kind, ip: ctx.ip, status: r.status },
      });
    }
  } else {
    ctx.log.info({ from: ctx.ip, route: ctx.route, status: r.status }, `agent call refused: ${r.message}`);
  }
  return new ApiError(r.status, r.field, r.message);
}

/**
 * The workflow of a session token presented from the request's address (server/workflows/tokens.ts): 401 for a
 * missing, wrong or superseded token, 403 from another address than the hello's, 409 once the workflow is final.
 */
export function authorizeSession(store: Store, workflows: WorkflowService, log: Logger,
  req: { ip: string; headers: { authorization?: string } }, workflowId?: string, opts: { finished?: 'refuse' | 'retries-only' } = {}): Workflow {
  const r = new AgentTokens(store).checkSession(bearer(req.headers.authorization), req.ip, workflowId, opts);
  if (!r.ok) throw refused(r, { workflows, log, ip: plainAddress(req.ip), route: 'events' });
  return r.workflow;
}

function persistentBootToken(store: Store, workflowId: string): string {
  const { token, sha256 } = issueBootToken();
  store.workflows.setBootTokenSha256(workflowId, sha256);
  return token;
}

/**
 * mode install: the spec's disk is the image's bootable disk (GPT, GRUB, the image's ext4 as partition 3), served at
 * /install/<id>.disk.zst, and the first-boot data the agent writes into its root (server/workflows/install.ts).
 */
export function installSpec(store: Store, wf: Workflow, spec: WorkflowSpec, disk: BootDisk, baseUrl: string): WorkflowSpec {
  const img = store.images.get(wf.imageId)!;
  const machine = store.machines.getById(wf.machineId)!;
  const d = instanceData(machine, wf, img);
  return {
    ...spec,
    image: {
      ...spec.image, format: 'disk',
      url: `${baseUrl}/install/${img.id}.disk.zst`, rawUrl: `${baseUrl}/install/${img.id}.disk`,
      compressedSize: disk.compressedSize, compressedSha256: disk.compressedSha256, rawSize: disk.rawSize, rawSha256: disk.rawSha256,
    },
    install: {
      rootPartition: 3, rootOffset: ROOT_START * SECTOR, rootPartUuid: disk.layout.partGuids.root, kernel: disk.kernel,
      instanceId: d.instanceId, files: firstBootFiles(d, wf),
    },
  };
}

/** Merges the image config with the workflow's overrides into what the agent runs. */
export function buildSpec(store: Store, wf: Workflow, baseUrl: string): WorkflowSpec {
  const img = store.images.get(wf.imageId)!;
  const machine = store.machines.getById(wf.machineId)!;
  const env = new Map<string, string>();
  for (const kv of img.config.env) { const i = kv.indexOf('='); if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1)); }
  for (const [k, v] of Object.entries(wf.env)) env.set(k, v);
  return {
    workflowId: wf.id,
    machine: { mac: machine.mac, hostname: machine.hostname },
    image: {
      id: img.id, name: img.name, format: img.format,
      url: `${baseUrl}/images/${img.id}.${img.format}.zst`, rawUrl: `${baseUrl}/images/${img.id}.${img.format}`,
      compressedSize: img.compressedSize ?? 0, compressedSha256: img.compressedSha256 ?? '',
      rawSize: img.rawSize ?? 0, rawSha256: img.rawSha256 ?? '',
    },
    target: wf.target,
    after: wf.after,
    mode: wf.mode,
    entrypoint: wf.entrypoint ?? img.config.entrypoint,
    cmd: wf.args ?? (wf.entrypoint ? [] : img.config.cmd),
    env: [...env].map(([k, v]) => `${k}=${v}`),
    workingDir: img.config.workingDir,
    user: img.config.user,
    dns: machine.ipv4?.dns ?? [],
    wipe: wf.wipe ?? false,
    ...(wf.targetSerial != null ? { targetSerial: wf.targetSerial } : {}),
    ...(wf.targetSize != null ? { targetSize: wf.targetSize } : {}),
  };
}

/** /agent/v1: the init agent on a machine says hello and reports its steps. */
const agentRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows, log, agentEventLimits, p2p }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 409: ErrorReply };
  const tokens = new AgentTokens(store);

  app.post('/hello', { schema: { tags: ['agent'], summary: 'Agent online: exchanges its single-use boot token for a session token; returns its workflow', body: Hello, response: { 200: WorkflowSpec, ...errors } } },
    async (req) => {
      const ip = plainAddress(req.ip);
      const mac = parseMac(req.body.mac);
      // mode install: the bootable disk must exist before the spec can name it (built at creation; waited for here)
      let disk: BootDisk | null = null;
      const pre = store.workflows.get(req.body.workflowId);
      if (pre?.mode === 'install' && !isFinal(pre.state) && tokens.peekBoot(bearer(req.headers.authorization), pre.id, ip)) {
        const img = store.images.get(pre.imageId);
        try {
          if (!workflows.bootDisks || !img) throw new Error(workflows.bootDisks ? `image ${pre.imageId} is gone` : 'this server cannot build bootable disks');
          disk = await workflows.bootDisks.ensure(img);
        } catch (err) {
          const reason = `the bootable disk of image ${img?.name ?? pre.imageId} could not be built: ${(err as Error).message}`;
          workflows.tryTransition(pre.id, 'failed', { reason });
          throw new ApiError(409, 'image', reason);
        }
      }
      // the exchange and agent-online in one transaction (of a group commit: WorkflowService.commitSoon); a refusal
      // writes nothing but its own event (below)
      const r = await workflows.commitSoon(() => {
        const r = tokens.exchangeBoot(bearer(req.headers.authorization), req.body.workflowId, ip, (wf) => {
          if (!mac) return refuse(400 as never, 'mac', `"${req.body.mac}" is not a MAC address`);
          if (mac !== wf.machineMac) {
            log.warn({ mac, expected: wf.machineMac, workflow: wf.id }, 'agent hello from the wrong machine');
            return refuse(403, 'mac', `workflow ${wf.id} belongs to ${wf.machineMac}, not ${mac}`);
          }
          return null;
        });
        if (r.ok) {
          workflows.transition(r.workflow.id, 'agent-online', {
            message: `agent online at ${ip}${req.body.ip && req.body.ip !== ip ? ` (it says ${req.body.ip})` : ''}; boot token exchanged for a session token bound to ${ip}`,
            payload: { ip, reportedIp: req.body.ip ?? null, inventory: req.body.inventory ?? {}, agentVersion: req.body.agentVersion },
          });
        }
        return r;
      });
      if (!r.ok) {
        if ((r.status as number) === 400) throw badRequest(r.field, r.message);
        throw refused(r, { workflows, log, ip, route: 'hello' });
      }
      const { workflow: wf, session } = r;
      const host = req.headers.host ?? `${req.hostname}`;
      const base = `${req.protocol}://${host}`;
      let spec: WorkflowSpec = { ...buildSpec(store, wf, base), sessionToken: session };
      if (wf.mode === 'install') {
        if (!disk) throw new ApiError(409, 'workflowId', `workflow ${wf.id}'s bootable disk is not built`);
        spec = installSpec(store, wf, spec, disk, base);
      }
      // persistent: a fresh disk-marker token per hello (only its sha256 is kept); the last hello's disk is the one marked
      if (wf.mode === 'persistent') spec.persistent = { token: persistentBootToken(store, wf.id) };
      if (p2p) spec.image.chunksUrl = `${spec.image.url}.chunks`;
      return spec;
    });

  if (p2p) {
    // the compressed file this workflow's agent streams: a peer query or report about another file is refused
    const fileOf = (wf: Workflow): string | null => (wf.mode === 'install'
      ? workflows.bootDisks?.get(wf.imageId)?.compressedSha256 ?? null
      : store.images.get(wf.imageId)?.compressedSha256 ?? null);
    const session = (req: { ip: string; headers: { authorization?: string } }, file: string) => {
      const wf = authorizeSession(store, workflows, log, req);
      const own = fileOf(wf);
      if (own !== file) throw new ApiError(403, 'file', `workflow ${wf.id} streams ${own ?? 'no compressed file'}, not ${file}`);
      if (!p2p.tracker.isTracked(file)) throw new ApiError(409, 'file', `no manifest of ${file} was served since the server started; GET the image's chunksUrl first`);
      return { workflowId: wf.id, mac: wf.machineMac, ip: plainAddress(req.ip) };
    };
    app.get('/peers', { logLevel: 'warn', schema: { tags: ['agent'], summary: 'Where to fetch the next chunks of the disk: per chunk a peer (ADDRESS:PORT), or null for the server', querystring: PeersQuery, response: { 200: PeersReply, ...errors } } },
      async (req) => {
        const count = Number(req.query.count);
        const port = req.query.port === undefined ? null : Number(req.query.port);
        if (count < 1 || count > P2P_MAX_QUERY) throw badRequest('count', `${count} is not between 1 and ${P2P_MAX_QUERY}`);
        if (port !== null && (port < 1 || port > 65535)) throw badRequest('port', `${port} is not a port (1-65535)`);
        const ctx = session(req, req.query.file);
        const out = p2p.assign(req.query.file, ctx, Number(req.query.from), count, port);
        return { chunks: out.map((d) => ({ chunk: d.chunk, peer: d.peer })) };
      });
    app.post('/chunks', { logLevel: 'warn', schema: { tags: ['agent'], summary: 'Chunks the agent verified (and serves to peers), and peers that served it a bad chunk', body: ChunkReport, response: { 200: ChunkReportReply, ...errors } } },
      async (req) => {
        const ctx = session(req, req.body.file);
        return p2p.report(req.body.file, ctx, req.body.port ?? null, req.body.have, req.body.bad ?? []);
      });
  }

  app.post('/events', { bodyLimit: AGENT_EVENTS_BODY_LIMIT, schema: { tags: ['agent'], summary: 'Agent reports steps, progress, log lines, exit code (one transaction per batch)', body: EventBatch, response: { 200: EventBatchReply, ...errors } } },
    async (req) => {
      // a finished workflow's session still reaches applyAgentBatch, which acknowledges a retried final report (its
      // event ids were already accepted) and refuses anything new with 409: no event lands after the final status
      // one group commit with the batches of other agents reporting at the same time (WorkflowService.commitSoon)
      const { wf, r } = await workflows.commitSoon(() => {
        const wf = authorizeSession(store, workflows, log, req, req.body.workflowId, { finished: 'retries-only' });
        return { wf, r: applyAgentBatch(store, workflows, wf, req.body.events, agentEventLimits) };
      });
      if (r.duplicates) log.info({ mac: wf.machineMac, workflow: wf.id, duplicates: r.duplicates }, 'agent resent events the server already has (acknowledged, not written again)');
      if (r.dropped) log.warn({ mac: wf.machineMac, workflow: wf.id, dropped: r.dropped }, 'agent output over the workflow cap dropped');
      return r;
    });
};

export default agentRoutes;
