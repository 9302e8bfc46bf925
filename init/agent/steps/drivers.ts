/**
 * Step 2: drivers for the hardware present. Like udev's coldplug: every /sys/bus/STAR/devices/STAR/modalias is
 * handed to modprobe (busybox, which resolves aliases through modules.alias). Loading a bus driver
 * (virtio_pci, a SCSI HBA) makes new devices appear, so passes repeat until no new alias shows up.
 */
import { readdir, readFile } from 'node:fs/promises';
import type { AgentConfig } from '../cmdline.ts';
import { bb, sleep } from '../sys.ts';

/** Modules the coldplug cannot find by alias but the flow needs (softdeps busybox ignores, VLAN, loop). */
export const ALWAYS_LOAD = ['crc32c_generic', 'crc32c-intel', 'loop', 'sd_mod', 'ext4'];

export async function readModaliases(sysRoot = '/sys'): Promise<string[]> {
  const out = new Set<string>();
  let buses: string[] = [];
  try { buses = await readdir(`${sysRoot}/bus`); } catch { return []; }
  for (const bus of buses) {
    let devs: string[] = [];
    try { devs = await readdir(`${sysRoot}/bus/${bus}/devices`); } catch { continue; }
    for (const dev of devs) {
      try {
        const a = (await readFile(`${sysRoot}/bus/${bus}/devices/${dev}/modalias`, 'utf8')).trim();
        if (a) out.add(a);
      } catch { /* no modalias */ }
    }
  }
  return [...out].sort();
}

export async function loadDrivers(cfg: AgentConfig, say: (m: string) => void): Promise<void> {
  if (cfg.modules) {
    await bb('modprobe', ['-q', '-a', ...cfg.modules, ...ALWAYS_LOAD]);
    say(`loaded modules ${cfg.modules.join(',')}`);
    return;
  }
  const seen = new Set<string>();
  const passes: string[] = [];
  for (let pass = 1; pass <= 4; pass++) {
    const t0 = Date.now();
    const fresh = (await readModaliases()).filter((a) => !seen.has(a));
    if (!fresh.length) break;
    fresh.forEach((a) => seen.add(a));
    await bb('modprobe', ['-q', '-a', ...fresh, ...(pass === 1 ? ALWAYS_LOAD : [])]);
    passes.push(`${fresh.length} in ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    await sleep(pass === 1 ? 200 : 300);
  }
  const mods = (await readFile('/proc/modules', 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  say(`coldplug: ${seen.size} device aliases (passes: ${passes.join(', ')}), ${mods} modules loaded`);
}
