/**
 * Following an HTTP redirect from the agent's downloads: with `--images-redirect` the server answers the disk GET
 * (after its token check) with a 307 to a presigned S3 URL. The next request goes to the Location, with the same
 * headers (Range and If-Range too: S3 serves ranges of a presigned GET) except the Authorization, which is the
 * server's session and never goes to another origin (the presigned URL carries its own credentials). A resume
 * starts again at the server's URL, so an expired presigned URL is never reused.
 */
export const MAX_REDIRECTS = 5;

const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

/** The request to make after this answer, or null when it is not a redirect. Throws on a Location to another scheme. */
export function redirectTarget(from: string, status: number, location: string | string[] | undefined, headers: Record<string, string>): { url: string; headers: Record<string, string> } | null {
  if (!REDIRECT_STATUS.has(status) || typeof location !== 'string' || !location) return null;
  const next = new URL(location, from);
  if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new Error(`GET ${from}: redirect to ${next.protocol} (only http and https are followed)`);
  const out: Record<string, string> = {};
  const sameOrigin = next.origin === new URL(from).origin;
  for (const [k, v] of Object.entries(headers)) if (sameOrigin || k.toLowerCase() !== 'authorization') out[k] = v;
  return { url: next.toString(), headers: out };
}
