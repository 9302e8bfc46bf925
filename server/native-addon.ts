/**
 * Loading ironboot's native addons (server/<room>/native/build/Release/<name>.node, built by
 * deploy/build-native.sh): the addon, or why it is not there. Each caller decides what its absence means.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export type LoadedAddon<T> = { addon: T; why: '' } | { addon: null; why: string };

/** `nativeDir` is the addon's source folder (the one holding binding.gyp). */
export function loadAddon<T>(nativeDir: string, name: string): LoadedAddon<T> {
  const path = join(nativeDir, 'build', 'Release', `${name}.node`);
  if (!existsSync(path)) return { addon: null, why: `${path} is not built (deploy/build-native.sh builds it)` };
  try {
    return { addon: createRequire(import.meta.url)(path) as T, why: '' };
  } catch (err) {
    return { addon: null, why: `cannot load ${path}: ${(err as Error).message}` };
  }
}
