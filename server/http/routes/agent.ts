import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Hello, WorkflowSpec, EventBatch, EventBatchReply, AGENT_EVENTS_BODY_LIMIT } from '../../agent/api.ts';
import { applyAgentBatch } from '../../workflows/agent-events.ts';
import type { Workflow } from '../../store/workflows.ts';
import type { Store } from '../../store/index.ts';
import { parseMac } from '../../mac.ts';
import { isFinal } from '../../workflows/states.ts';
import { bearer, tokenMatches } from '../auth.ts';
import { ApiError, badRequest } from '../errors.ts';
import { ErrorReply } from '../schemas.ts';
import type { AppDeps } from '../app.ts';

/** The workflow a token belongs to; 401 for a missing or wrong token. */
function authorize(store: Store, workflowId: string, authorization: string | undefined): Workflow {
  const wf = store.workflows.get(workflowId);
  if (!wf || !tokenMatches(bearer(authorization), wf.token)) {
    throw new ApiError(401, 'authorization', 'missing or wrong workflow token');
  }
  return wf;
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
const agentRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows, log, agentEventLimits }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 409: ErrorReply };

  app.post('/hello', { schema: { tags: ['agent'], summary: 'Agent online: returns its workflow', body: Hello, response: { 200: WorkflowSpec, ...errors } } },
    async (req) => {
      const wf = authorize(store, req.body.workflowId, req.headers.authorization);
      const mac = parseMac(req.body.mac);
      if (!mac) throw badRequest('mac', `"${req.body.mac}" is not a MAC address`);
      if (mac !== wf.machineMac) {
        log.warn({ mac, expected: wf.machineMac, workflow: wf.id }, 'agent hello from the wrong machine');
        throw new ApiError(403, 'mac', `workflow ${wf.id} belongs to ${wf.machineMac}, not ${mac}`);
      }
      if (isFinal(wf.state)) throw new ApiError(409, 'workflowId', `workflow ${wf.id} is already ${wf.state}`);
      workflows.transition(wf.id, 'agent-online', {
        message: `agent online at ${req.body.ip ?? req.ip}`,
        payload: { ip: req.body.ip ?? req.ip, inventory: req.body.inventory ?? {}, agentVersion: req.body.agentVersion },
      });
      const host = req.headers.host ?? `${req.hostname}`;
      return buildSpec(store, wf, `${req.protocol}://${host}`);
    });

  app.post('/events', { bodyLimit: AGENT_EVENTS_BODY_LIMIT, schema: { tags: ['agent'], summary: 'Agent reports steps, progress, log lines, exit code (one transaction per batch)', body: EventBatch, response: { 200: EventBatchReply, ...errors } } },
    async (req) => {
      const wf = authorize(store, req.body.workflowId, req.headers.authorization);
      const r = applyAgentBatch(store, workflows, wf.id, req.body.events, agentEventLimits);
      if (r.duplicates) log.info({ mac: wf.machineMac, workflow: wf.id, duplicates: r.duplicates }, 'agent resent events the server already has (acknowledged, not written again)');
      if (r.dropped) log.warn({ mac: wf.machineMac, workflow: wf.id, dropped: r.dropped }, 'agent output over the workflow cap dropped');
      return r;
    });
};

export default agentRoutes;
