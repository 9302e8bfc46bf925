/** A small client of the REST API for the CLI. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export class CliError extends Error {
  constructor(message: string, public exitCode = 1) { super(message); this.name = 'CliError'; }
}

export interface ClientOptions { server: string; token: string }

/** --server/--token, else IRONBOOT_SERVER/IRONBOOT_TOKEN, else the local daemon's defaults and its token file. */
export function clientOptions(flags: Record<string, string | boolean | string[]>, env = process.env): ClientOptions {
  const server = String(flags.server ?? env.IRONBOOT_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  let token = (flags.token as string | undefined) ?? env.IRONBOOT_TOKEN;
  if (!token) {
    const dataDir = resolve(String(flags['data-dir'] ?? env.IRONBOOT_DATA_DIR ?? './var'));
    try { token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim(); } catch { /* none */ }
  }
  if (!token) throw new CliError('no API token: pass --token, set IRONBOOT_TOKEN, or run where the daemon\'s data directory (--data-dir) is readable');
  return { server, token };
}

export class ApiClient {
  constructor(private opts: ClientOptions) {}

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.opts.server + path, {
        method,
        headers: { authorization: `Bearer ${this.opts.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new CliError(`cannot reach ironboot at ${this.opts.server}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`);
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let data: unknown;
    try { data = text ? JSON.parse(text) : undefined; } catch { data = text; }
    if (!res.ok) {
      const e = data as { message?: string; field?: string } | undefined;
      throw new CliError(`${res.status} ${res.statusText}: ${e?.message ?? text}`);
    }
    return data as T;
  }

  /** Follows a server-sent event stream; calls onEvent for each event until it returns true or the stream ends. */
  async stream(path: string, onEvent: (type: string, data: unknown) => boolean | void, signal?: AbortSignal): Promise<void> {
    let res: Response;
    try {
      res = await fetch(this.opts.server + path, { headers: { authorization: `Bearer ${this.opts.token}`, accept: 'text/event-stream' }, signal });
    } catch (err) {
      throw new CliError(`cannot reach ironboot at ${this.opts.server}: ${(err as Error).message}`);
    }
    if (!res.ok || !res.body) throw new CliError(`${res.status} ${res.statusText}: ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += decoder.decode(value, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = 'message';
          const data: string[] = [];
          for (const line of chunk.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (!data.length) continue;
          if (onEvent(type, JSON.parse(data.join('\n')))) return;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}
