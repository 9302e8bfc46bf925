/** The hardware inventory sent with hello, read from /sys and /proc (roots injectable for tests). */
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import type { Inventory } from '../../../server/agent/api.ts';

const read = (p: string) => readFile(p, 'utf8').then((s) => s.trim()).catch(() => '');
const opt = (s: string): string | undefined => (s ? s : undefined);

export async function readInventory(sysRoot = '/sys', procRoot = '/proc'): Promise<Inventory> {
  const cpuinfo = await read(`${procRoot}/cpuinfo`);
  const procs = cpuinfo.split('\n').filter((l) => /^processor\s*:/.test(l)).length;
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1];
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(await read(`${procRoot}/meminfo`))?.[1] ?? 0);

  const disks: NonNullable<Inventory['disks']> = [];
  for (const name of (await readdir(`${sysRoot}/block`).catch(() => [] as string[])).sort()) {
    if (/^(loop|ram|zram|dm-|md|sr|fd)/.test(name)) continue;
    const b = `${sysRoot}/block/${name}`;
    const sizeBytes = Number(await read(`${b}/size`)) * 512;
    if (!sizeBytes) continue;
    disks.push({
      name, sizeBytes,
      model: opt(await read(`${b}/device/model`)),
      serial: opt((await read(`${b}/device/serial`)) || (await read(`${b}/serial`))),
      rotational: (await read(`${b}/queue/rotational`)) === '1',
    });
  }

  const nics: NonNullable<Inventory['nics']> = [];
  for (const name of (await readdir(`${sysRoot}/class/net`).catch(() => [] as string[])).sort()) {
    if (name === 'lo') continue;
    const b = `${sysRoot}/class/net/${name}`;
    if (!(await stat(`${b}/device`).catch(() => null))) continue;
    const driver = await readlink(`${b}/device/driver`).then((l) => l.split('/').pop()).catch(() => undefined);
    const speed = Number(await read(`${b}/speed`));
    nics.push({
      name, mac: (await read(`${b}/address`)).toLowerCase(), driver,
      carrier: (await read(`${b}/carrier`)) === '1',
      ...(Number.isInteger(speed) && speed > 0 ? { speedMbps: speed } : {}),
    });
  }

  const dmi = `${sysRoot}/class/dmi/id`;
  return {
    cpus: { count: procs || 1, ...(model ? { model } : {}) },
    memoryBytes: memKb * 1024,
    disks, nics,
    dmi: {
      vendor: opt(await read(`${dmi}/sys_vendor`)), product: opt(await read(`${dmi}/product_name`)),
      serial: opt(await read(`${dmi}/product_serial`)), uuid: opt(await read(`${dmi}/product_uuid`)),
      biosVersion: opt(await read(`${dmi}/bios_version`)),
    },
    firmware: (await stat(`${sysRoot}/firmware/efi`).catch(() => null)) ? 'uefi' : 'bios',
    kernel: opt(await read(`${procRoot}/sys/kernel/osrelease`)),
  };
}
