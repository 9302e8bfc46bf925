/**
 * `ironboot images build REF [--name N] [--platform P] [--size S] [--insecure] [--oci-layout PATH | --docker-archive PATH]`
 * Builds locally into the data directory (opening the store itself), or with --server through the API.
 * Progress: one redrawn line on a terminal, a line per step otherwise (both on stderr).
 */
import { resolve } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { ApiClient, CliError, clientOptions } from './client.ts';
import { parseArgs, str } from './args.ts';
import { bytes } from './format.ts';
import { Store } from '../store/index.ts';
import { createImageService, ImageError, type BuildProgress, type ImageSource } from '../images/index.ts';
import type { ArtifactStore, ArtifactStoreError } from '../images/artifact-store.ts';
import { ConfigError, resolveImageStore } from '../config.ts';

type Out = (s: string) => void;

export const IMAGES_BUILD_HELP = `ironboot images build REF [--name N] [--platform linux/amd64] [--size 2G] [--headroom 0.25] [--insecure]
ironboot images build [TAG] --oci-layout PATH        an OCI image layout (directory or tar)
ironboot images build [REPO:TAG] --docker-archive PATH   a \`docker save\` tar

  Builds locally into --data-dir (IRONBOOT_DATA_DIR, default ./var), recorded in the daemon's store (--store URL or
  IRONBOOT_STORE when the daemon runs on PostgreSQL; default the data directory's SQLite) and, with --images
  s3://BUCKET/PREFIX (IRONBOOT_IMAGES; --s3-endpoint URL, --s3-path-style), uploaded to the daemons' bucket (needed with
  a PostgreSQL store: the daemons serve from there); with --server URL the daemon builds it
  (paths are then on the server). Registry credentials: IRONBOOT_REGISTRY_USERNAME/IRONBOOT_REGISTRY_PASSWORD
  or a Docker config.json ($DOCKER_CONFIG, ~/.docker/config.json); the environment ones need
  IRONBOOT_REGISTRY_HOST (the one registry they are for). Passwords go over plain HTTP only with
  IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH=1, to a token service on another host only if IRONBOOT_REGISTRY_AUTH_HOSTS names it.
`;

/** Renders progress: a redrawn line on a TTY, step lines otherwise. */
export function progressPrinter(write: (s: string) => void, tty: boolean): { update(p: BuildProgress): void; end(): void } {
  let lastKey = '';
  let lastDraw = 0;
  let drawn = false;
  const line = (p: BuildProgress) => {
    const parts = [`layers ${p.layersDone}/${p.layersTotal}`, `pulled ${bytes(p.bytesPulled)}${p.bytesToPull ? `/${bytes(p.bytesToPull)}` : ''}`, `flattened ${bytes(p.bytesFlattened)}`];
    // file data goes to the disk and through zstd while the layers stream; the metadata follows at the end
    if (p.bytesCompressed) parts.push(`disk written ${bytes(p.bytesCompressed)}${p.diskBytes ? `/${bytes(p.diskBytes)} ✓` : ''}`);
    return `${p.stage.padEnd(11)} ${parts.join(' · ')}`;
  };
  return {
    update(p) {
      if (tty) {
        const now = Date.now();
        if (now - lastDraw < 100 && p.stage !== 'done') return;
        lastDraw = now;
        write(`\r\x1b[2K${line(p)}`);
        drawn = true;
        return;
      }
      const key = `${p.stage}:${p.layersDone}`;
      if (key === lastKey) return;
      lastKey = key;
      write(`${line(p)}\n`);
    },
    end() { if (tty && drawn) write('\n'); },
  };
}

function sourceFrom(positional: string | undefined, f: Record<string, string | boolean | string[]>): ImageSource {
  const oci = str(f, 'oci-layout');
  const docker = str(f, 'docker-archive');
  if (oci && docker) throw new CliError('give one of --oci-layout and --docker-archive');
  const platform = str(f, 'platform');
  if (oci) return { type: 'oci-layout', path: resolve(oci), ...(positional ? { ref: positional } : {}), ...(platform ? { platform } : {}) };
  if (docker) return { type: 'docker-archive', path: resolve(docker), ...(positional ? { ref: positional } : {}), ...(platform ? { platform } : {}) };
  if (!positional) throw new CliError(`missing image reference\n\n${IMAGES_BUILD_HELP}`);
  return { type: 'registry', ref: positional, ...(platform ? { platform } : {}), ...(f.insecure === true ? { insecure: true } : {}) };
}

function summary(img: Record<string, any>, path?: string): string {
  return [
    `image ${img.id} (${img.name}) ready`,
    `  source      ${img.source}`,
    `  digest      ${img.digest}`,
    `  disk        ${bytes(img.rawSize)}  sha256:${img.rawSha256}`,
    `  wire (zstd) ${bytes(img.compressedSize)}  sha256:${img.compressedSha256}`,
    `  entrypoint  ${JSON.stringify(img.config.entrypoint)}  cmd ${JSON.stringify(img.config.cmd)}`,
    ...(path ? [`  file        ${path}`] : []),
  ].join('\n') + '\n';
}

export async function imagesBuildCommand(argv: string[], out: Out): Promise<void> {
  const a = parseArgs(argv, { bool: ['insecure', 's3-path-style'] });
  if (a.flags.help) { out(IMAGES_BUILD_HELP); return; }
  const f = a.flags;
  const source = sourceFrom(a.positionals[0], f);
  const opts = {
    ...(str(f, 'name') ? { name: str(f, 'name') } : {}),
    ...(str(f, 'size') ? { size: str(f, 'size') } : {}),
    ...(str(f, 'headroom') ? { headroom: Number(str(f, 'headroom')) } : {}),
  };
  const json = f.json === true;
  const printer = progressPrinter((s) => process.stderr.write(s), process.stderr.isTTY === true && !json);

  if (str(f, 'server')) {
    const api = new ApiClient(clientOptions(f));
    let img = await api.request<Record<string, any>>('POST', '/api/v1/images', { source, ...opts });
    while (img.state === 'building' || img.state === 'pending') {
      if (img.progress?.stage) printer.update(img.progress as BuildProgress);
      await new Promise((r) => setTimeout(r, 500));
      img = await api.request<Record<string, any>>('GET', `/api/v1/images/${encodeURIComponent(img.id)}`);
    }
    printer.end();
    if (img.state !== 'ready') throw new CliError(`image build failed: ${img.error ?? img.state}`);
    out(json ? JSON.stringify(img, null, 2) + '\n' : summary(img));
    return;
  }

  const dataDir = resolve(String(f['data-dir'] ?? process.env.IRONBOOT_DATA_DIR ?? './var'));
  const storeUrl = String(f.store ?? process.env.IRONBOOT_STORE ?? '') || null;
  // where the disk goes: as the daemons have it (--images), so that every daemon can serve what this builds
  let imageStore;
  try {
    imageStore = resolveImageStore({
      images: str(f, 'images') ?? process.env.IRONBOOT_IMAGES ?? null, s3Endpoint: str(f, 's3-endpoint') ?? null,
      s3PathStyle: f['s3-path-style'] === true ? true : null,
    });
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.key.startsWith('AWS_') ? err.message : `--${err.message}`);
    throw err;
  }
  if (storeUrl && imageStore.kind === 'local') {
    throw new CliError('--store is a PostgreSQL store shared by several daemons: a build into this data directory would be '
      + 'served by none of them. Give --images s3://BUCKET/PREFIX (as the daemons have it), or build through a daemon with --server URL');
  }
  let artifacts: ArtifactStore | undefined;
  if (imageStore.kind === 's3') {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { s3ArtifactStore } = await import('../images/s3-store.ts');
    artifacts = s3ArtifactStore(imageStore);
    try {
      await artifacts.check();
    } catch (err) {
      const e = err as ArtifactStoreError;
      throw new CliError(`--${e.setting ?? 'images'}: ${e.message}`);
    }
  }
  const store = Store.open(dataDir, { url: storeUrl });
  try {
    const svc = createImageService({ store, log: pino({ level: 'error' }, pino.destination(2)), registry: new Registry(), dataDir, artifacts });
    svc.recover();
    let img;
    try {
      img = await svc.build(source, opts, (p) => printer.update(p));
    } catch (err) {
      printer.end();
      if (err instanceof ImageError) throw new CliError(err.message);
      throw err;
    }
    printer.end();
    out(json ? JSON.stringify(img, null, 2) + '\n' : summary(img, svc.filePath(img.id, 'zst')));
  } finally {
    store.close();
  }
}
