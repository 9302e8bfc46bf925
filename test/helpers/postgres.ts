/**
 * A PostgreSQL server of the test's own: Debian's postgres binaries, a cluster in a temp directory, listening on a
 * Unix socket in that directory only (listen_addresses=''; no TCP port, nothing on the host's network). A socket
 * path crosses network namespaces, so daemons run inside test namespaces reach it too.
 *
 * postgres refuses to run as root: as root the cluster belongs to the `postgres` user (created by Debian's
 * postgresql package, installed by deploy/setup.sh --test); otherwise it runs as the current user.
 *
 *   const pg = await startPostgres();
 *   t.after(() => pg.stop());
 *   const url = await pg.createDatabase('t1');   // postgresql://ironboot@/t1?host=/tmp/ironboot-pg-…
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPostgres {
  /** Directory holding the server's Unix socket (the `host` of a libpq URL). */
  socketDir: string;
  /** URL of the default database `ironboot`. */
  url: string;
  pid: number;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Runs SQL through psql (as the superuser `ironboot`) and returns its stdout. */
  psql(sql: string, database?: string): string;
  stop(): Promise<void>;
}

/** Debian installs the server under /usr/lib/postgresql/<major>/bin; the newest there wins. */
export function postgresBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const majors = readdirSync(root).filter((d) => /^\d+$/.test(d) && existsSync(join(root, d, 'bin', 'postgres')));
  majors.sort((a, b) => Number(b) - Number(a));
  return majors.length ? join(root, majors[0], 'bin') : null;
}

/** Why PostgreSQL cannot be started here, or null when it can. */
export function postgresUnavailable(): string | null {
  if (!postgresBinDir()) return 'PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql, or run deploy/setup.sh --test as root)';
  if (process.getuid?.() === 0 && spawnSync('id', ['-u', 'postgres']).status !== 0) return 'running as root but there is no `postgres` user to run the server as';
  return null;
}

const dbUrl = (socketDir: string, name: string) => `postgresql://ironboot@/${name}?host=${encodeURIComponent(socketDir)}`;

export async function startPostgres(opts: { timeoutMs?: number } = {}): Promise<TestPostgres> {
  const why = postgresUnavailable();
  if (why) throw new Error(why);
  const bin = postgresBinDir()!;
  const dir = mkdtempSync(join(tmpdir(), 'ironboot-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const ids = asRoot ? spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim() : '';
  const gid = asRoot ? spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim() : '';
  if (asRoot) chownSync(dir, Number(ids), Number(gid));
  // as root: run the server's programs as postgres (setpriv keeps the environment and needs no login shell)
  const wrap = (cmd: string, args: string[]): [string, string[]] => asRoot
    ? ['setpriv', ['--reuid', ids, '--regid', gid, '--clear-groups', cmd, ...args]]
    : [cmd, args];
  const run = (cmd: string, args: string[]) => {
    const [c, a] = wrap(cmd, args);
    const r = spawnSync(c, a, { encoding: 'utf8', cwd: dir });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
    return r.stdout;
  };

  run(join(bin, 'initdb'), ['-D', data, '-U', 'ironboot', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  const [c, a] = wrap(join(bin, 'postgres'), ['-D', data, '-k', dir, '-c', "listen_addresses=", '-c', 'fsync=off',
    '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200', '-c', 'log_min_messages=warning']);
  const child: ChildProcess = spawn(c, a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  let exited = false;
  child.once('exit', () => { exited = true; });

  const stop = async () => {
    if (!exited && child.pid) {
      child.kill('SIGINT'); // fast shutdown
      const t0 = Date.now();
      while (!exited && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
      if (!exited) child.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (exited) { await stop(); throw new Error(`postgres exited at start: ${stderr}`); }
    const r = spawnSync(join(bin, 'pg_isready'), ['-h', dir, '-U', 'ironboot', '-d', 'postgres', '-q']);
    if (r.status === 0) break;
    if (Date.now() > deadline) { await stop(); throw new Error(`postgres did not become ready in time: ${stderr}`); }
    await new Promise((r) => setTimeout(r, 100));
  }

  const psql = (sql: string, database = 'postgres') => {
    const r = spawnSync('psql', ['-h', dir, '-U', 'ironboot', '-d', database, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
    return r.stdout;
  };
  const createDatabase = async (name: string) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${name}: lower-case letters, digits and _ only`);
    psql(`CREATE DATABASE ${name}`);
    return dbUrl(dir, name);
  };
  await createDatabase('ironboot');
  return { socketDir: dir, url: dbUrl(dir, 'ironboot'), pid: child.pid!, createDatabase, psql, stop };
}
