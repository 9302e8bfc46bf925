/**
 * Start-up checks that keep the daemon's secrets private: the data directory (database, admin token, images)
 * is created 0700 and a wider existing one is reported; an operator-chosen admin token that is short or has
 * little variety is reported as weak (pure checks apart from the one mkdir/stat).
 */
import { mkdirSync, statSync } from 'node:fs';

/** Creates the data directory 0700 when missing; returns a warning when it exists with access for others. */
export function ensurePrivateDataDir(dir: string): string | null {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = statSync(dir).mode & 0o777;
  if (mode & 0o077) {
    return `data directory ${dir} is mode ${mode.toString(8).padStart(4, '0')}: group and others can look into it ` +
      `(database, admin token, images); chmod 700 ${dir}`;
  }
  return null;
}

export const MIN_TOKEN_LENGTH = 20;
export const MIN_TOKEN_BITS = 96;

/** Why an admin token is weak, or null. Estimates entropy as length × Shannon entropy of its characters. */
export function weakTokenReason(token: string): string | null {
  if (token.length < MIN_TOKEN_LENGTH) return `it is ${token.length} characters long (want at least ${MIN_TOKEN_LENGTH})`;
  const counts = new Map<string, number>();
  for (const c of token) counts.set(c, (counts.get(c) ?? 0) + 1);
  let h = 0;
  for (const n of counts.values()) { const p = n / token.length; h -= p * Math.log2(p); }
  const bits = Math.round(h * token.length);
  if (bits < MIN_TOKEN_BITS) return `it has about ${bits} bits of entropy (${counts.size} distinct characters; want at least ${MIN_TOKEN_BITS} bits)`;
  return null;
}
