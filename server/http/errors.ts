import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { WorkflowError } from '../workflows/service.ts';
import { DuplicateError } from '../store/machines.ts';

/** An error an API caller can act on: HTTP status, the field at fault (if any) and the reason. */
export class ApiError extends Error {
  constructor(public statusCode: number, public field: string | null, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (field: string, message: string) => new ApiError(400, field, message);
export const notFound = (field: string, message: string) => new ApiError(404, field, message);
export const conflict = (field: string | null, message: string) => new ApiError(409, field, message);

const TITLES: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 416: 'Range Not Satisfiable', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
};

/** Turns ajv's first validation error into a dotted field name: body /ipv4/address → ipv4.address. */
function validationField(err: FastifyError): string | null {
  const v = err.validation?.[0];
  if (!v) return null;
  let path = (v.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.');
  const p = v.params as Record<string, unknown>;
  if (typeof p?.missingProperty === 'string') path = path ? `${path}.${p.missingProperty}` : p.missingProperty;
  if (typeof p?.additionalProperty === 'string') path = path ? `${path}.${p.additionalProperty}` : p.additionalProperty;
  return path || (err.validationContext ?? null);
}

export function errorHandler(err: FastifyError | ApiError | WorkflowError | DuplicateError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  let status = 500;
  let field: string | null = null;
  let message = 'internal error';
  if (err instanceof ApiError || err instanceof WorkflowError) {
    status = err instanceof WorkflowError ? err.status : err.statusCode;
    field = err.field;
    message = err.message;
  } else if (err instanceof DuplicateError) {
    status = 409; field = err.field; message = err.message;
  } else if ((err as FastifyError).validation) {
    const fe = err as FastifyError;
    status = 400;
    field = validationField(fe);
    const v = fe.validation![0];
    const what = v.params && typeof (v.params as Record<string, unknown>).additionalProperty === 'string' ? 'is not a known field' : v.message;
    message = `${field ?? fe.validationContext}: ${what}`;
  } else if (typeof (err as FastifyError).statusCode === 'number' && (err as FastifyError).statusCode! < 500) {
    status = (err as FastifyError).statusCode!;
    message = err.message;
  } else {
    req.log.error({ err }, 'request failed');
  }
  return reply.code(status).send({ error: TITLES[status] ?? 'Error', ...(field ? { field } : {}), message });
}
