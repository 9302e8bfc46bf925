import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Workflow as WorkflowRow } from '../../../store/workflows.ts';
import type { WorkflowEvent } from '../../../store/events.ts';
import type { WorkflowState as WorkflowStateName } from '../../../workflows/states.ts';
import { notFound, badRequest } from '../../errors.ts';
import { Workflow, WorkflowCreate, WorkflowListQuery, WorkflowWithEvents, WorkflowEventsQuery, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX, IdParams, ErrorReply } from '../../schemas.ts';
import { macParam } from './machines.ts';
import type { AppDeps } from '../../app.ts';

export const workflowView = (w: WorkflowRow) => ({
  id: w.id, machine: w.machineMac, image: w.imageId, state: w.state, target: w.target, after: w.after, mode: w.mode,
  entrypoint: w.entrypoint, args: w.args, env: w.env, kernelArgs: w.kernelArgs, reason: w.reason, exitCode: w.exitCode,
  timeoutSeconds: w.timeoutSeconds, powerCycle: w.powerCycle ?? false, wipe: w.wipe ?? false, targetSerial: w.targetSerial ?? null, targetSize: w.targetSize ?? null, createdAt: w.createdAt, updatedAt: w.updatedAt, startedAt: w.startedAt, finishedAt: w.finishedAt,
});

export const eventView = (e: WorkflowEvent) => ({
  seq: e.seq, workflowId: e.workflowId, at: e.at, kind: e.kind, state: e.state, message: e.message,
  bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, payload: e.payload,
});

/** /api/v1/workflows: what a machine does on its next boot, and what it did. */
const workflowsRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows }) => {
  const errors = { 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply };

  app.post('/workflows', { schema: { tags: ['workflows'], summary: 'Assign a container disk to a machine', body: WorkflowCreate, response: { 201: Workflow, ...errors } } },
    async (req, reply) => {
      const b = req.body;
      const wf = await workflows.createChecked({
        mac: macParam(b.machine, 'machine'), image: b.image, target: b.target, after: b.after, mode: b.mode, entrypoint: b.entrypoint,
        args: b.args, env: b.env, kernelArgs: b.kernelArgs, timeoutSeconds: b.timeoutSeconds, powerCycle: b.powerCycle,
        wipe: b.wipe, targetSerial: b.targetSerial, targetSize: b.targetSize,
      });
      return reply.code(201).send(workflowView(wf));
    });

  app.get('/workflows', { schema: { tags: ['workflows'], summary: 'List workflows', querystring: WorkflowListQuery, response: { 200: Type.Array(Workflow), ...errors } } },
    async (req) => {
      let machineId: number | undefined;
      if (req.query.machine !== undefined) {
        const mac = macParam(req.query.machine, 'machine');
        const m = store.machines.getByMac(mac);
        if (!m) return [];
        machineId = m.id;
      }
      return store.workflows.list({ machineId, state: req.query.state as WorkflowStateName | undefined }).map(workflowView);
    });

  app.get('/workflows/:id', { schema: { tags: ['workflows'], summary: 'Get a workflow with a page of its events (?eventsAfter=SEQ&eventsLimit=N)', params: IdParams, querystring: WorkflowEventsQuery, response: { 200: WorkflowWithEvents, ...errors } } },
    async (req) => {
      const wf = store.workflows.get(req.params.id);
      if (!wf) throw notFound('id', `no workflow ${req.params.id}`);
      const after = Number(req.query.eventsAfter ?? 0);
      const limit = Number(req.query.eventsLimit ?? EVENTS_PAGE_DEFAULT);
      if (limit < 1 || limit > EVENTS_PAGE_MAX) throw badRequest('eventsLimit', `eventsLimit must be 1…${EVENTS_PAGE_MAX}, not ${limit}`);
      const page = store.events.list(wf.id, { afterSeq: after, limit: limit + 1 });
      const more = page.length > limit;
      const events = (more ? page.slice(0, limit) : page).map(eventView);
      return { ...workflowView(wf), events, eventsNext: more ? events[events.length - 1].seq : null };
    });

  app.post('/workflows/:id/cancel', { schema: { tags: ['workflows'], summary: 'Cancel an active workflow', params: IdParams, response: { 200: Workflow, ...errors } } },
    async (req) => workflowView(workflows.cancel(req.params.id)));

  app.post('/workflows/:id/retry', { schema: { tags: ['workflows'], summary: 'Start a new workflow like a finished one', params: IdParams, response: { 201: Workflow, ...errors } } },
    async (req, reply) => reply.code(201).send(workflowView(workflows.retry(req.params.id))));
};

export default workflowsRoutes;
