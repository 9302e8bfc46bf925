import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const TOKEN_FILE = 'admin-token';

/**
 * The admin token: IRONBOOT_TOKEN if set; else the one saved in the data directory; else a new one, saved with
 * mode 0600 (`generated` tells the caller to print it once).
 */
export function loadAdminToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): { token: string; generated: boolean; source: string } {
  if (env.IRONBOOT_TOKEN) return { token: env.IRONBOOT_TOKEN, generated: false, source: 'IRONBOOT_TOKEN' };
  const path = join(dataDir, TOKEN_FILE);
  if (existsSync(path)) return { token: readFileSync(path, 'utf8').trim(), generated: false, source: path };
  mkdirSync(dataDir, { recursive: true });
  const token = randomBytes(24).toString('base64url');
  writeFileSync(path, token + '\n', { mode: 0o600, flag: 'wx' });
  return { token, generated: true, source: path };
}

/** Constant-time comparison of a presented bearer token with the expected one. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (!presented) return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}
