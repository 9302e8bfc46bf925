/**
 * Step 2: drivers for the hardware present. Like udev's coldplug: every /sys/bus/STAR/devices/STAR/modalias is
 * handed to modprobe (busybox, which resolves aliases through modules.alias). Loading a bus driver
 * (virtio_pci, a SCSI HBA) makes new devices appear, so passes repeat until no new alias shows up.
 *
 * The coldplug itself runs as a busybox shell script that init starts beside the agent (COLDPLUG_SCRIPT, from
 * /etc/inittab), so the drivers load, and the NICs get their carrier, while node is still starting; this step
 * waits for its result and then loads whatever alias appeared since (or does the whole coldplug when the script
 * is not there).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { AgentConfig } from '../cmdline.ts';
import { bb, PATHS, sleep } from '../sys.ts';

/** Modules the coldplug cannot find by alias but the flow needs (softdeps busybox ignores, VLAN, loop). */
export const ALWAYS_LOAD = ['crc32c_generic', 'crc32c-intel', 'loop', 'sd_mod', 'ext4'];

/** Where the coldplug script is installed and where it leaves its result (one line: aliases and passes). */
export const COLDPLUG = { script: '/lib/ironboot/coldplug.sh', done: `${PATHS.runDir}/coldplug.done`, aliases: `${PATHS.runDir}/coldplug.aliases` };

/**
 * The coldplug init starts beside the agent. Passes without sleeping: a bus driver creates its child devices
 * while it probes, before modprobe returns; late devices are the agent's rescans' business. Then every Ethernet
 * link goes up, so its carrier (e1000: over a second under emulation) comes meanwhile. With ironboot.modules= the
 * agent loads the named modules itself, and the script only says so.
 */
export const COLDPLUG_SCRIPT = `#!/bin/sh
# ironboot: coldplug beside the agent (started by init from /etc/inittab); the agent waits for ${COLDPLUG.done}
export PATH=/bin
mkdir -p ${PATHS.runDir}
case " $(cat /proc/cmdline) " in *" ironboot.modules="*) echo "skipped (ironboot.modules=)" > ${COLDPLUG.done}; exit 0 ;; esac
seen=; pass=0; extra="${ALWAYS_LOAD.join(' ')}"
while [ $pass -lt 4 ]; do
  all=$(cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u)
  [ "$all" = "$seen" ] && break
  pass=$((pass + 1))
  modprobe -q -a $all $extra
  seen=$all; extra=
done
ip link set lo up
for n in /sys/class/net/*; do [ -e "$n/device" ] && ip link set "\${n##*/}" up; done
echo "$seen" > ${COLDPLUG.aliases}
echo "$(echo "$seen" | grep -c .) device aliases in $pass passes" > ${COLDPLUG.done}.tmp && mv ${COLDPLUG.done}.tmp ${COLDPLUG.done}
`;

export async function readModaliases(sysRoot = '/sys'): Promise<string[]> {
  // synchronous reads: a few hundred tiny sysfs files, each a thread-pool round trip otherwise (slow under emulation)
  const out = new Set<string>();
  let buses: string[] = [];
  try { buses = readdirSync(`${sysRoot}/bus`); } catch { return []; }
  for (const bus of buses) {
    let devs: string[] = [];
    try { devs = readdirSync(`${sysRoot}/bus/${bus}/devices`); } catch { continue; }
    for (const dev of devs) {
      try {
        const a = readFileSync(`${sysRoot}/bus/${bus}/devices/${dev}/modalias`, 'utf8').trim();
        if (a) out.add(a);
      } catch { /* no modalias */ }
    }
  }
  return [...out].sort();
}

/** The coldplug script's result once it is done; null when there is no script or it did not finish in time. */
async function coldplugResult(timeoutMs: number): Promise<string | null> {
  if (!existsSync(COLDPLUG.script)) return null;
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await readFile(COLDPLUG.done, 'utf8').catch(() => null);
    if (r !== null) return r.trim();
    if (Date.now() > end) return null;
    await sleep(50);
  }
}

export async function loadDrivers(cfg: AgentConfig, say: (m: string) => void): Promise<void> {
  if (cfg.modules) {
    await bb('modprobe', ['-q', '-a', ...cfg.modules, ...ALWAYS_LOAD]);
    say(`loaded modules ${cfg.modules.join(',')}`);
    return;
  }
  const t0 = Date.now();
  const early = await coldplugResult(60_000);
  const seen = new Set<string>();
  const passes: string[] = [];
  if (early !== null) {
    // what the script saw is loaded; the passes below only take what appeared since
    passes.push(`coldplug script: ${early}, waited ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    for (const a of (await readFile(COLDPLUG.aliases, 'utf8').catch(() => '')).split('\n')) if (a.trim()) seen.add(a.trim());
  }
  for (let pass = 1; pass <= 4; pass++) {
    const tp = Date.now();
    const fresh = (await readModaliases()).filter((a) => !seen.has(a));
    if (!fresh.length) break;
    fresh.forEach((a) => seen.add(a));
    await bb('modprobe', ['-q', '-a', ...fresh, ...(pass === 1 && early === null ? ALWAYS_LOAD : [])]);
    passes.push(`${fresh.length} in ${((Date.now() - tp) / 1000).toFixed(2)} s`);
  }
  const mods = (await readFile('/proc/modules', 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  say(`coldplug: ${seen.size} device aliases (${passes.join(', ')}), ${mods} modules loaded`);
}
