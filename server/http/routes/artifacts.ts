import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { join } from 'node:path';
import { sendFile } from '../send-file.ts';
import type { AppDeps } from '../app.ts';

export const ARTIFACT_FILES = ['vmlinuz', 'initramfs'] as const;

/**
 * GET/HEAD /artifacts/{vmlinuz,initramfs}: the kernel and initramfs machines boot (Range, ETag).
 * GET/HEAD /ipxe/<binary>: the iPXE binaries, for UEFI HTTP boot (DHCP hands out this URL to HTTPClient firmware).
 */
const artifactsRoutes: FastifyPluginAsyncTypebox<AppDeps> = async (app, { artifactsDir, ipxeDir }) => {
  const params = Type.Object({ name: Type.Union(ARTIFACT_FILES.map((n) => Type.Literal(n))) });
  app.get('/artifacts/:name', { schema: { tags: ['boot'], summary: 'Kernel or initramfs', params } },
    async (req, reply) => sendFile(req, reply, join(artifactsDir, req.params.name)));
  const ipxeParams = Type.Object({ name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*\\.(efi|kpxe|pxe|lkrn)$' }) });
  app.get('/ipxe/:name', { schema: { tags: ['boot'], summary: 'iPXE binary (UEFI HTTP boot)', params: ipxeParams } },
    async (req, reply) => sendFile(req, reply, join(ipxeDir ?? '/usr/lib/ipxe', req.params.name)));
};

export default artifactsRoutes;
