import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { WorkflowEvent } from '../../../store/events.ts';
import { notFound } from '../../errors.ts';
import { eventView } from './workflows.ts';
import type { AppDeps } from '../../app.ts';

/**
 * GET /api/v1/events/stream — server-sent events of every workflow event (`event: workflow`), for live views.
 * `?workflow=ID` narrows it to one workflow and first replays that workflow's past events.
 */
const eventsRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows }) => {
  const open = new Set<() => void>();
  // preClose, not onClose: server.close() waits for every open connection, and a live stream never ends by itself
  app.addHook('preClose', async () => { for (const close of [...open]) close(); });
  app.get('/events/stream', {
    schema: { tags: ['events'], summary: 'Live workflow events (text/event-stream)', querystring: Type.Object({ workflow: Type.Optional(Type.String()) }) },
  }, async (req, reply) => {
    const only = req.query.workflow;
    if (only && !store.workflows.get(only)) throw notFound('workflow', `no workflow ${only}`);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.write(': ironboot event stream\n\n');
    let lastSeq = 0;
    const send = (e: WorkflowEvent) => {
      if (only && e.workflowId !== only) return;
      if (only) { if (e.seq <= lastSeq) return; lastSeq = e.seq; }
      res.write(`id: ${e.workflowId}:${e.seq}\nevent: workflow\ndata: ${JSON.stringify(eventView(e))}\n\n`);
    };
    workflows.events.on('event', send);
    if (only) for (const e of store.events.list(only)) send(e);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15000);
    const stop = () => { clearInterval(keepAlive); workflows.events.off('event', send); open.delete(close); };
    const close = () => { stop(); res.end(); };
    open.add(close);
    req.raw.on('close', stop);
  });
};

export default eventsRoutes;
