/** Shared libraries of an executable, from `ldd` output (parsing is pure). */
import { execFileSync } from 'node:child_process';

/** Paths of the libraries ldd lists (the vDSO has no file and is skipped). */
export function parseLdd(text: string): string[] {
  const out = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || /^linux-vdso|^linux-gate/.test(line) || /statically linked|not a dynamic/.test(line)) continue;
    const arrow = /=>\s+(\/\S+)/.exec(line);
    if (arrow) { out.add(arrow[1]); continue; }
    if (/=>\s+not found/.test(line)) throw new Error(`missing library: ${line}`);
    const direct = /^(\/\S+)\s+\(/.exec(line);
    if (direct) out.add(direct[1]);
  }
  return [...out].sort();
}

export function librariesOf(binary: string): string[] {
  let text: string;
  try {
    text = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const out = String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
    if (/not a dynamic executable/.test(out)) return [];
    throw new Error(`ldd ${binary} failed: ${out.trim()}`);
  }
  return parseLdd(text);
}
