import type { Db } from './db.ts';

export type ImageState = 'pending' | 'building' | 'ready' | 'failed';

/** A container disk: a container image turned into a filesystem image. */
export interface Image {
  id: string;
  name: string;
  source: string | null;
  digest: string | null;
  state: ImageState;
  error: string | null;
  format: string;
  rawSize: number | null;
  rawSha256: string | null;
  compressedSize: number | null;
  compressedSha256: string | null;
  config: { entrypoint: string[]; cmd: string[]; env: string[]; workingDir: string | null; user: string | null };
  progress: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

export interface ImageInput {
  id: string;
  name: string;
  source?: string | null;
  digest?: string | null;
  state: ImageState;
  error?: string | null;
  format?: string;
  rawSize?: number | null;
  rawSha256?: string | null;
  compressedSize?: number | null;
  compressedSha256?: string | null;
  config?: Partial<Image['config']>;
  progress?: Record<string, unknown>;
}

/** Column `user` is quoted in SQL: a reserved word in PostgreSQL. */
interface Row {
  id: string; name: string; source: string | null; digest: string | null; state: string; error: string | null;
  format: string; raw_size: number | null; raw_sha256: string | null; compressed_size: number | null;
  compressed_sha256: string | null; entrypoint: string; cmd: string; env: string; working_dir: string | null;
  user: string | null; progress: string; created_at: string; updated_at: string;
}

function fromRow(r: Row): Image {
  return {
    id: r.id, name: r.name, source: r.source, digest: r.digest, state: r.state as ImageState, error: r.error,
    format: r.format, rawSize: r.raw_size, rawSha256: r.raw_sha256, compressedSize: r.compressed_size,
    compressedSha256: r.compressed_sha256,
    config: { entrypoint: JSON.parse(r.entrypoint), cmd: JSON.parse(r.cmd), env: JSON.parse(r.env), workingDir: r.working_dir, user: r.user },
    progress: JSON.parse(r.progress), createdAt: r.created_at, updatedAt: r.updated_at,
  };
}

function toParams(i: ImageInput) {
  return {
    id: i.id, name: i.name, source: i.source ?? null, digest: i.digest ?? null, state: i.state, error: i.error ?? null,
    format: i.format ?? 'ext4', raw_size: i.rawSize ?? null, raw_sha256: i.rawSha256 ?? null,
    compressed_size: i.compressedSize ?? null, compressed_sha256: i.compressedSha256 ?? null,
    entrypoint: JSON.stringify(i.config?.entrypoint ?? []), cmd: JSON.stringify(i.config?.cmd ?? []),
    env: JSON.stringify(i.config?.env ?? []), working_dir: i.config?.workingDir ?? null, user: i.config?.user ?? null,
    progress: JSON.stringify(i.progress ?? {}),
  };
}

/** The images table (container disks). */
export class ImageRepository {
  constructor(private db: Db) {}

  list(): Image[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY name').all() as Row[]).map(fromRow);
  }

  get(id: string): Image | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE id = ?').get(id) as Row | undefined;
    return r && fromRow(r);
  }

  getByName(name: string): Image | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as Row | undefined;
    return r && fromRow(r);
  }

  /** By id, or else by name. */
  find(idOrName: string): Image | undefined {
    return this.get(idOrName) ?? this.getByName(idOrName);
  }

  insert(input: ImageInput): Image {
    const now = new Date().toISOString();
    this.db.prepare(`INSERT INTO images (id, name, source, digest, state, error, format, raw_size, raw_sha256,
      compressed_size, compressed_sha256, entrypoint, cmd, env, working_dir, "user", progress, created_at, updated_at)
      VALUES (@id, @name, @source, @digest, @state, @error, @format, @raw_size, @raw_sha256, @compressed_size,
      @compressed_sha256, @entrypoint, @cmd, @env, @working_dir, @user, @progress, @now, @now)`).run({ ...toParams(input), now });
    return this.get(input.id)!;
  }

  /** Replaces every field of an existing image with `input` (fields left out become their defaults). */
  replace(input: ImageInput): Image {
    this.db.prepare(`UPDATE images SET name=@name, source=@source, digest=@digest, state=@state, error=@error,
      format=@format, raw_size=@raw_size, raw_sha256=@raw_sha256, compressed_size=@compressed_size,
      compressed_sha256=@compressed_sha256, entrypoint=@entrypoint, cmd=@cmd, env=@env, working_dir=@working_dir,
      "user"=@user, progress=@progress, updated_at=@now WHERE id=@id`).run({ ...toParams(input), now: new Date().toISOString() });
    return this.get(input.id)!;
  }

  setState(id: string, state: ImageState, fields: { error?: string | null; progress?: Record<string, unknown> } = {}): void {
    const cur = this.get(id);
    if (!cur) return;
    this.db.prepare('UPDATE images SET state=?, error=?, progress=?, updated_at=? WHERE id=?').run(
      state, fields.error !== undefined ? fields.error : cur.error, JSON.stringify(fields.progress ?? cur.progress),
      new Date().toISOString(), id);
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM images WHERE id = ?').run(id).changes > 0;
  }

  /** Workflows still active that use this image. */
  activeUsers(id: string): number {
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM workflows WHERE image_id = ?
      AND state NOT IN ('succeeded','failed','timed-out','cancelled')`).get(id) as { n: number }).n;
  }
}
