/** The kernel to ship: the host's Debian linux-image-amd64 (/boot/vmlinuz-VER with /lib/modules/VER), or a path. */
import { existsSync, readdirSync } from 'node:fs';
import { basename } from 'node:path';

/** Compares kernel versions like `sort -V` ("6.1.0-56-amd64" > "6.1.0-9-amd64"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return 0;
}

export interface KernelChoice { path: string; version: string; modulesDir: string }

export function findKernel(opts: { kernel?: string; bootDir?: string; modulesRoot?: string } = {}): KernelChoice {
  const modulesRoot = opts.modulesRoot ?? '/lib/modules';
  if (opts.kernel) {
    if (!existsSync(opts.kernel)) throw new Error(`kernel ${opts.kernel} does not exist`);
    const version = basename(opts.kernel).replace(/^vmlinuz-/, '');
    const modulesDir = `${modulesRoot}/${version}`;
    if (!existsSync(`${modulesDir}/modules.dep`)) {
      throw new Error(`no modules for kernel ${opts.kernel}: expected ${modulesDir}/modules.dep (name the kernel vmlinuz-<version>)`);
    }
    return { path: opts.kernel, version, modulesDir };
  }
  const bootDir = opts.bootDir ?? '/boot';
  const versions = (existsSync(bootDir) ? readdirSync(bootDir) : [])
    .filter((f) => /^vmlinuz-/.test(f))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`${modulesRoot}/${v}/modules.dep`))
    .sort(compareVersions);
  const version = versions.pop();
  if (!version) throw new Error(`no kernel in ${bootDir} with modules in ${modulesRoot}: install linux-image-amd64 or pass --kernel PATH`);
  return { path: `${bootDir}/vmlinuz-${version}`, version, modulesDir: `${modulesRoot}/${version}` };
}
