/** A small argv parser: --flag value, --flag=value, repeatable flags, booleans, and `--` for the rest. */
import { CliError } from './client.ts';

/** Flags every client command takes. */
export const COMMON_FLAGS = ['json', 'help', 'server', 'token', 'data-dir'];

function suggest(name: string, known: string[]): string {
  const near = known.find((k) => k.startsWith(name.slice(0, 3)) || name.startsWith(k));
  return near ? ` (did you mean --${near}?)` : '';
}

export interface ParsedArgs {
  positionals: string[];
  flags: Record<string, string | boolean | string[]>;
  rest: string[];
}

/**
 * `known` (when given) lists every flag the command takes besides the common ones; anything else is refused, so a
 * typo (--ipv4 for --ip) is an error rather than silently ignored.
 */
export function parseArgs(argv: string[], spec: { bool?: string[]; list?: string[]; known?: string[] } = {}): ParsedArgs {
  const bool = new Set(['json', 'help', ...(spec.bool ?? [])]);
  const list = new Set(spec.list ?? []);
  const out: ParsedArgs = { positionals: [], flags: {}, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { out.rest = argv.slice(i + 1); break; }
    if (a === '-h') { out.flags.help = true; continue; }
    if (!a.startsWith('--')) { out.positionals.push(a); continue; }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (spec.known) {
      const base = name.startsWith('no-') && bool.has(name.slice(3)) ? name.slice(3) : name;
      if (!COMMON_FLAGS.includes(base) && !spec.known.includes(base)) {
        throw new CliError(`unknown flag --${name}${suggest(base, spec.known)}`);
      }
    }
    if (bool.has(name) || (name.startsWith('no-') && bool.has(name.slice(3)))) {
      if (name.startsWith('no-') && bool.has(name.slice(3))) out.flags[name.slice(3)] = false;
      else out.flags[name] = eq > 0 ? !/^(0|false|no|off)$/i.test(a.slice(eq + 1)) : true;
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new CliError(`--${name} needs a value`);
    if (list.has(name)) out.flags[name] = [...((out.flags[name] as string[]) ?? []), value];
    else out.flags[name] = value;
  }
  return out;
}

export function str(flags: ParsedArgs['flags'], name: string): string | undefined {
  const v = flags[name];
  return typeof v === 'string' ? v : undefined;
}

export function strList(flags: ParsedArgs['flags'], name: string): string[] {
  const v = flags[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

export function need(args: ParsedArgs, index: number, what: string): string {
  const v = args.positionals[index];
  if (v === undefined) throw new CliError(`missing ${what}`);
  return v;
}

/** k=v pairs → object; the flag is named in the error. */
export function keyValuePairs(items: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const it of items) {
    const i = it.indexOf('=');
    if (i <= 0) throw new CliError(`--${flag} ${it}: expected KEY=VALUE`);
    out[it.slice(0, i)] = it.slice(i + 1);
  }
  return out;
}
