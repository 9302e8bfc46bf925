/**
 * Registry credentials: IRONBOOT_REGISTRY_USERNAME/IRONBOOT_REGISTRY_PASSWORD for the one registry named by
 * IRONBOOT_REGISTRY_HOST (host[:port] as in the image reference; never any other), else a Docker config.json
 * ($DOCKER_CONFIG/config.json, ~/.docker/config.json) or a containers auth.json ($REGISTRY_AUTH_FILE) entry for
 * the host ("auth": base64 "user:password").
 *
 * Where they may be sent (basicAuthRefusal): to the registry itself, or to a token realm on the registry's own host
 * name (Docker Hub's auth.docker.io for docker.io), over HTTPS. A realm on another host only if the operator names
 * it in IRONBOOT_REGISTRY_AUTH_HOSTS; plain HTTP only with IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH=1.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DOCKER_HUB } from './reference.ts';

export interface Credentials { username: string; password: string }

export function configPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const paths: string[] = [];
  if (env.REGISTRY_AUTH_FILE) paths.push(env.REGISTRY_AUTH_FILE);
  if (env.DOCKER_CONFIG) paths.push(join(env.DOCKER_CONFIG, 'config.json'));
  paths.push(join(env.HOME ?? homedir(), '.docker', 'config.json'));
  if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  return paths;
}

/** Finds the entry for `registry` in a parsed config.json (keys may be URLs or hosts). Pure. */
export function credentialsFromConfig(config: unknown, registry: string): Credentials | null {
  const auths = (config as { auths?: Record<string, { auth?: string; username?: string; password?: string }> })?.auths;
  if (!auths || typeof auths !== 'object') return null;
  const wanted = registry === DOCKER_HUB ? ['index.docker.io', 'docker.io', 'registry-1.docker.io'] : [registry];
  for (const [key, v] of Object.entries(auths)) {
    const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    if (!wanted.includes(host)) continue;
    if (v.username && v.password) return { username: v.username, password: v.password };
    if (v.auth) {
      const dec = Buffer.from(v.auth, 'base64').toString('utf8');
      const i = dec.indexOf(':');
      if (i > 0) return { username: dec.slice(0, i), password: dec.slice(i + 1) };
    }
  }
  return null;
}

/** The registry the environment's credentials are for ("docker.io" and its aliases are one). Pure. */
export function sameRegistry(a: string, b: string): boolean {
  const hub = (h: string) => (['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(h) ? DOCKER_HUB : h);
  return hub(a.toLowerCase()) === hub(b.toLowerCase());
}

/** Environment credentials that exist but are for no host (or another one): said in a login error. */
export function envCredentialsNote(registry: string, env: NodeJS.ProcessEnv = process.env): string {
  if (!env.IRONBOOT_REGISTRY_USERNAME) return '';
  if (!env.IRONBOOT_REGISTRY_HOST) return ' (IRONBOOT_REGISTRY_USERNAME is set but IRONBOOT_REGISTRY_HOST is not: environment credentials apply to the one registry it names)';
  if (!sameRegistry(env.IRONBOOT_REGISTRY_HOST, registry)) return ` (the environment's credentials are for ${env.IRONBOOT_REGISTRY_HOST}, not ${registry})`;
  return '';
}

export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | null {
  if (env.IRONBOOT_REGISTRY_USERNAME && env.IRONBOOT_REGISTRY_PASSWORD && env.IRONBOOT_REGISTRY_HOST
    && sameRegistry(env.IRONBOOT_REGISTRY_HOST, registry)) {
    return { username: env.IRONBOOT_REGISTRY_USERNAME, password: env.IRONBOOT_REGISTRY_PASSWORD };
  }
  for (const p of configPaths(env)) {
    let text: string;
    try { text = readFileSync(p, 'utf8'); } catch { continue; }
    try {
      const c = credentialsFromConfig(JSON.parse(text), registry);
      if (c) return c;
    } catch { /* unreadable config: ignore */ }
  }
  return null;
}

const hostName = (hostPort: string) => hostPort.replace(/^\[([^\]]+)\](:\d+)?$/, '$1').replace(/:\d+$/, '').toLowerCase();

/**
 * Why credentials for `registry` must not go to `target` (the registry's own URL or a token realm), or null if
 * they may. Pure (the settings come in env).
 */
export function basicAuthRefusal(registry: string, target: URL, env: NodeJS.ProcessEnv = process.env): string | null {
  if (target.protocol !== 'https:' && env.IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH !== '1') {
    return `not sending the credentials for ${registry} over plain HTTP to ${target.host}; set IRONBOOT_REGISTRY_PLAIN_HTTP_AUTH=1 to allow it`;
  }
  const regHost = hostName(registry === DOCKER_HUB ? 'registry-1.docker.io' : registry);
  const tHost = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (tHost === regHost) return null;
  if (registry === DOCKER_HUB && tHost === 'auth.docker.io') return null;
  const allowed = (env.IRONBOOT_REGISTRY_AUTH_HOSTS ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  if (allowed.includes(tHost) || allowed.includes(target.host.toLowerCase())) return null;
  return `not sending the credentials for ${registry} to the token service ${target.host} (another host); name it in IRONBOOT_REGISTRY_AUTH_HOSTS to allow it`;
}
