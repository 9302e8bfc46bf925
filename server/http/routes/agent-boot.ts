/**
 * POST /agent/v1/boot — persistent boots (server/workflows/persistent.ts). The agent of a machine whose latest workflow
 * is persistent and succeeded found the disk it wrote and checks in with the token from that disk's marker:
 *
 *   started   the server checks token, machine, workflow (latest, persistent, succeeded) and the marker's image digest,
 *             counts the boot, records a `boot` event on the workflow (which stays succeeded) and answers the spec
 *   exited    the entrypoint of boot N ended with exitCode (a `boot` event)
 *   refused   the agent would not run the disk it found, and says why (a `boot` event; verified: false when the
 *             agent has no valid token, e.g. another machine's disk; accepted only while the machine is in
 *             persistent boot)
 *
 * A check-in the server refuses is recorded as a refused `boot` event too, and answered 4xx {error, field, message}.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { PersistentBootReport, PersistentBootReply } from '../../agent/api.ts';
import { parseMac } from '../../mac.ts';
import { acceptsUnverifiedRefusal, bootTokenMatches, decideCheckIn } from '../../workflows/persistent.ts';
import { bearer } from '../auth.ts';
import { ApiError, badRequest } from '../errors.ts';
import { ErrorReply } from '../schemas.ts';
import type { AppDeps } from '../app.ts';
import { buildSpec } from './agent.ts';

const agentBootRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows, log }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 409: ErrorReply };

  app.post('/boot', {
    schema: { tags: ['agent'], summary: 'Persistent boot: check in with the disk marker\'s token, report the entrypoint\'s end or a refused disk', body: PersistentBootReport, response: { 200: PersistentBootReply, ...errors } },
  }, async (req) => {
    const b = req.body;
    const wf = store.workflows.get(b.workflowId);
    const mac = parseMac(b.mac);
    if (!mac) throw badRequest('mac', `"${b.mac}" is not a MAC address`);
    const tokenOk = !!wf && bootTokenMatches(bearer(req.headers.authorization), store.workflows.bootTokenSha256(wf.id));
    if (!wf) throw new ApiError(401, 'authorization', `no persistent workflow ${b.workflowId} with this token`);
    const latest = store.workflows.latestForMachine(wf.machineId);
    const ip = b.ip ?? req.ip;
    const ctx = { mac: wf.machineMac, workflow: wf.id, ip, device: b.device };
    const record = (message: string, payload: Record<string, unknown>) => workflows.record({
      workflowId: wf.id, kind: 'boot', state: wf.state, message,
      payload: { ip, ...(b.device ? { device: b.device } : {}), ...(b.marker ? { marker: b.marker } : {}), ...payload },
    });

    if (b.phase === 'refused') {
      if (!tokenOk && !acceptsUnverifiedRefusal(wf, latest, mac)) {
        throw new ApiError(401, 'authorization', `workflow ${wf.id} is not in persistent boot on ${mac}; an unauthenticated refusal is not recorded`);
      }
      const reason = b.reason ?? 'no reason given';
      log.warn({ ...ctx, verified: tokenOk, reason }, 'persistent boot refused by the agent');
      record(`persistent boot refused by the machine: ${reason}`, { phase: 'refused', verified: tokenOk, reason });
      return { boot: 0, verified: tokenOk };
    }

    if (b.phase === 'exited') {
      if (!tokenOk) throw new ApiError(401, 'authorization', `the persistent-boot token does not belong to workflow ${wf.id}`);
      if (mac !== wf.machineMac) throw new ApiError(403, 'mac', `workflow ${wf.id} belongs to ${wf.machineMac}, not ${mac}`);
      const exitCode = b.exitCode ?? null;
      log.info({ ...ctx, boot: b.boot, exitCode }, 'persistent boot: entrypoint exited');
      record(`persistent boot ${b.boot ?? '?'}: entrypoint exited with code ${exitCode ?? '?'}`, { phase: 'exited', boot: b.boot ?? null, exitCode });
      return { boot: b.boot ?? 0, verified: true };
    }

    // started: may this disk run?
    const image = store.images.get(wf.imageId);
    const d = decideCheckIn({ workflow: wf, latest, image, mac, tokenOk, marker: b.marker });
    if (!d.ok) {
      log.warn({ ...ctx, field: d.field, reason: d.reason }, 'persistent boot refused by the server');
      // recorded only when the caller proved the disk or the machine is this workflow's (no event spam from strangers)
      if (tokenOk || acceptsUnverifiedRefusal(wf, latest, mac)) {
        record(`persistent boot refused by the server: ${d.reason}`, { phase: 'refused', verified: tokenOk, by: 'server', field: d.field, reason: d.reason });
      }
      throw new ApiError(d.status, d.field, d.reason);
    }
    const boot = store.workflows.countBoot(wf.id);
    log.info({ ...ctx, boot, image: wf.imageId }, `persistent boot ${boot}: disk verified by its marker`);
    record(`persistent boot ${boot}: ${b.device ?? wf.target} holds image ${b.marker!.imageId} written at ${b.marker!.writtenAt}; running the entrypoint`,
      { phase: 'started', boot, verified: true });
    const host = req.headers.host ?? `${req.hostname}`;
    return { boot, verified: true, spec: buildSpec(store, wf, `${req.protocol}://${host}`) };
  });
};

export default agentBootRoutes;
