import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { sendFile } from '../send-file.ts';
import type { AppDeps } from '../app.ts';

export const ARTIFACT_FILES = ['vmlinuz', 'initramfs'] as const;

/** GET/HEAD /artifacts/{vmlinuz,initramfs}: the kernel and initramfs machines boot (Range, ETag). */
const artifactsRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { artifactsDir }) => {
  const params = Type.Object({ name: Type.Union(ARTIFACT_FILES.map((n) => Type.Literal(n))) });
  const handler = async (req: { params: { name: string } }, reply: unknown) =>
    sendFile(req as never, reply as never, join(artifactsDir, req.params.name));
  app.get('/artifacts/:name', { schema: { tags: ['boot'], summary: 'Kernel or initramfs', params } }, handler);
};

export default artifactsRoutes;
