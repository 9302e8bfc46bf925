import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { WorkflowEvent } from '../../../store/events.ts';
import { ApiError, notFound } from '../../errors.ts';
import { ErrorReply } from '../../schemas.ts';
import { StreamTickets } from '../../stream-tickets.ts';
import { eventView } from './workflows.ts';
import type { AppDeps } from '../../app.ts';

export const DEFAULT_SSE_MAX_CLIENTS = 64;
/** A client with this much unsent output has stopped reading: it is dropped rather than buffered without end. */
export const SSE_MAX_BUFFERED_BYTES = 1 << 20;

/**
 * GET /api/v1/events/stream — server-sent events of every workflow event (`event: workflow`), for live views:
 * this daemon's and, on PostgreSQL, those of every daemon on the same database (server/workflows/fleet-events.ts).
 * `?workflow=ID` narrows it to one workflow and first replays that workflow's past events. At most
 * `sseMaxClients` streams are open at once (503 beyond); a client that stops reading is dropped.
 * POST /api/v1/events/ticket — a short-lived ticket for `?ticket=`, so a browser's EventSource need not put
 * the admin token in the URL.
 */
const eventsRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { store, workflows, log, sseMaxClients, streamTickets }) => {
  const tickets = streamTickets ?? new StreamTickets();
  const maxClients = sseMaxClients ?? DEFAULT_SSE_MAX_CLIENTS;
  const open = new Set<() => void>();
  // preClose, not onClose: server.close() waits for every open connection, and a live stream never ends by itself
  app.addHook('preClose', async () => { for (const close of [...open]) close(); });

  app.post('/events/ticket', {
    schema: { tags: ['events'], summary: 'A short-lived ticket that opens the event stream (?ticket=) without the admin token in the URL',
      response: { 200: Type.Object({ ticket: Type.String(), expiresAt: Type.String() }), 401: ErrorReply } },
  }, async () => tickets.issue());

  app.get('/events/stream', {
    schema: { tags: ['events'], summary: 'Live workflow events (text/event-stream)',
      querystring: Type.Object({ workflow: Type.Optional(Type.String()), ticket: Type.Optional(Type.String()), token: Type.Optional(Type.String()) }) },
  }, async (req, reply) => {
    const only = req.query.workflow;
    if (only && !store.workflows.get(only)) throw notFound('workflow', `no workflow ${only}`);
    if (open.size >= maxClients) {
      log.warn({ clients: open.size, max: maxClients, remote: req.ip }, 'event stream refused: too many clients');
      reply.header('Retry-After', '10');
      throw new ApiError(503, 'stream', `${open.size} event streams are open, the most this server allows (sseMaxClients); try again later`);
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    let lastSeq = 0;
    // the replay of a workflow's past events is written at once; only what comes on top of it counts as slow
    let allowance = SSE_MAX_BUFFERED_BYTES;
    let replaying = false;
    const write = (chunk: string) => {
      if (res.destroyed) return;
      res.write(chunk);
      if (replaying) { allowance += Buffer.byteLength(chunk); return; }
      if (res.writableLength > allowance) {
        log.warn({ remote: req.ip, buffered: res.writableLength }, 'event stream client dropped: it stopped reading');
        stop();
        res.destroy();
      }
    };
    const send = (e: WorkflowEvent) => {
      if (only && e.workflowId !== only) return;
      if (only) { if (e.seq <= lastSeq) return; lastSeq = e.seq; }
      write(`id: ${e.workflowId}:${e.seq}\nevent: workflow\ndata: ${JSON.stringify(eventView(e))}\n\n`);
    };
    const keepAlive = setInterval(() => write(': keep-alive\n\n'), 15000);
    const stop = () => { clearInterval(keepAlive); workflows.events.off('event', send); workflows.events.off('remote', send); open.delete(close); };
    const close = () => { stop(); res.end(); };
    open.add(close);
    req.raw.on('close', stop);
    write(': ironboot event stream\n\n');
    workflows.events.on('event', send);
    workflows.events.on('remote', send); // committed by another daemon on the same PostgreSQL (fleet-events.ts)
    if (only) {
      replaying = true;
      for (const e of store.events.list(only)) send(e);
      replaying = false;
    }
  });
};

export default eventsRoutes;
