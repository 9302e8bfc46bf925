/**
 * Start-up checks that keep the daemon's secrets private: the data directory (database, admin token, images)
 * is created 0700 and a wider existing one is reported; an operator-chosen admin token that is short or has
 * little variety is reported as weak (pure checks apart from the one mkdir/stat); and the daemon's identity among
 * daemons sharing a store.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';

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

/**
 * This daemon's name among the daemons sharing one store: `<hostname>-<8 hex>`, made once and kept in
 * DATA_DIR/daemon-id, so it survives restarts (a restarted daemon recognises its own interrupted image builds) and
 * differs between two daemons on one host (each has its own data directory).
 */
export function daemonIdentity(dataDir: string): string {
  const file = join(dataDir, 'daemon-id');
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[\w.-]{1,200}$/.test(id)) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const id = `${hostname().replace(/[^\w.-]/g, '_').slice(0, 180)}-${randomBytes(4).toString('hex')}`;
  mkdirSync(dataDir, { recursive: true });
  try {
    writeFileSync(file, `${id}\n`, { mode: 0o644, flag: 'wx' }); // exclusive: of two processes starting at once, one names it
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8').trim();
    throw err;
  }
  return id;
}
