/**
 * /api/v1/machines/{mac}/power: power control through the machine's BMC (server/power/service.ts).
 *   POST …/power/{on|off|cycle|status|pxe}   one action; 200 with its outcome, 502 when the BMC failed it
 *   GET  …/power                              last known state and the machine's recent power events
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ApiError, notFound } from '../../errors.ts';
import { ErrorReply, MacParams, MachineEvent, PowerActionParams, PowerResult } from '../../schemas.ts';
import { macParam } from './machines.ts';
import { PowerRequestError, type PowerService } from '../../../power/service.ts';
import type { PowerAction } from '../../../power/driver.ts';
import type { AppDeps } from '../../app.ts';

const eventView = (e: { id: number; at: string; kind: string; action: string; outcome: string; message: string | null; workflowId: string | null; payload: Record<string, unknown> }) => ({
  id: e.id, at: e.at, kind: e.kind, action: e.action, outcome: e.outcome, message: e.message, workflowId: e.workflowId, payload: e.payload,
});

export function powerRoutes(power: PowerService): FastifyPluginAsyncTypebox<AppDeps> {
  return async (app, { store }) => {
    const errors = { 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply, 502: ErrorReply };

    app.post('/machines/:mac/power/:action', {
      schema: { tags: ['power'], summary: 'Power on, off, cycle, read the power state, or set next boot to PXE, through the machine\'s BMC', params: PowerActionParams, response: { 200: PowerResult, ...errors } },
    }, async (req) => {
      const mac = macParam(req.params.mac);
      let result;
      try {
        result = await power.act(mac, req.params.action as PowerAction);
      } catch (err) {
        if (err instanceof PowerRequestError) throw new ApiError(err.status, err.field, err.message);
        throw err;
      }
      if (result.outcome === 'failed') throw new ApiError(502, 'bmc', `power ${result.action} failed: ${result.message}`);
      return { ...result, event: eventView(result.event) };
    });

    app.get('/machines/:mac/power', {
      schema: {
        tags: ['power'], summary: 'Last known power state and recent power events', params: MacParams,
        response: { 200: Type.Object({ state: Type.Union([Type.String(), Type.Null()]), checkedAt: Type.Union([Type.String(), Type.Null()]), error: Type.Union([Type.String(), Type.Null()]), events: Type.Array(MachineEvent) }), ...errors },
      },
    }, async (req) => {
      const mac = macParam(req.params.mac);
      const m = store.machines.getByMac(mac);
      if (!m) throw notFound('mac', `no machine with MAC ${mac}`);
      return { state: m.power?.state ?? null, checkedAt: m.power?.checkedAt ?? null, error: m.power?.error ?? null, events: store.machineEvents.list(m.id, 50).map(eventView) };
    });
  };
}
