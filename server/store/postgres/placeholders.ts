/**
 * The repositories' placeholders (`?` positional, `@name` named, as better-sqlite3 takes them) in PostgreSQL's
 * `$n` form. Pure; the driver caches the result per SQL text. String literals, quoted identifiers and comments
 * are left alone. A named parameter used several times becomes one `$n`.
 */
export interface TranslatedSql {
  text: string;
  /** Named form: the parameter name of each `$n` (index n-1). Positional form: null. */
  names: string[] | null;
  /** How many `$n` the text has. */
  count: number;
}

export function translatePlaceholders(sql: string): TranslatedSql {
  let out = '';
  let positional = 0;
  const names: string[] = [];
  const index = new Map<string, number>();
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    if (c === "'" || c === '"') {
      // a quoted string or identifier; a doubled quote inside is an escaped quote
      let j = i + 1;
      for (;;) {
        if (j >= n) break;
        if (sql[j] === c) { if (sql[j + 1] === c) { j += 2; continue; } break; }
        j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (c === '-' && sql[i + 1] === '-') {
      const j = sql.indexOf('\n', i);
      const end = j < 0 ? n : j;
      out += sql.slice(i, end);
      i = end;
    } else if (c === '/' && sql[i + 1] === '*') {
      const j = sql.indexOf('*/', i + 2);
      const end = j < 0 ? n : j + 2;
      out += sql.slice(i, end);
      i = end;
    } else if (c === '?') {
      out += `$${++positional}`;
      i++;
    } else if (c === '@' && /[A-Za-z_]/.test(sql[i + 1] ?? '')) {
      let j = i + 1;
      while (j < n && /\w/.test(sql[j])) j++;
      const name = sql.slice(i + 1, j);
      let k = index.get(name);
      if (k === undefined) { names.push(name); k = names.length; index.set(name, k); }
      out += `$${k}`;
      i = j;
    } else {
      out += c;
      i++;
    }
  }
  if (positional && names.length) throw new Error(`SQL mixes ? and @name placeholders: ${sql}`);
  return { text: out, names: names.length ? names : null, count: positional || names.length };
}

/** The values for `$1…$n` from the statement's arguments, as better-sqlite3 takes them. */
export function bindValues(t: TranslatedSql, args: unknown[], sql: string): unknown[] {
  let values: unknown[];
  if (t.names) {
    const obj = args[0];
    if (args.length !== 1 || obj === null || typeof obj !== 'object') throw new TypeError(`named parameters need one object argument: ${sql}`);
    values = t.names.map((name) => {
      if (!(name in (obj as object))) throw new RangeError(`Missing named parameter "${name}"`);
      return (obj as Record<string, unknown>)[name];
    });
  } else {
    if (args.length !== t.count) throw new RangeError(`Too ${args.length < t.count ? 'few' : 'many'} parameter values were provided (${args.length} for ${t.count}): ${sql}`);
    values = args;
  }
  return values.map((v) => {
    if (v === undefined) return null;
    if (typeof v === 'boolean') throw new TypeError(`booleans are stored as 0/1 in both dialects; got ${v} in: ${sql}`);
    return v;
  });
}
