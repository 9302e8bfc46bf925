/**
 * Registry credentials: IRONBOOT_REGISTRY_USERNAME/IRONBOOT_REGISTRY_PASSWORD (any registry), else a Docker
 * config.json ($DOCKER_CONFIG/config.json, ~/.docker/config.json) or a containers auth.json ($REGISTRY_AUTH_FILE)
 * entry for the host ("auth": base64 "user:password").
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

export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | null {
  if (env.IRONBOOT_REGISTRY_USERNAME && env.IRONBOOT_REGISTRY_PASSWORD) {
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
