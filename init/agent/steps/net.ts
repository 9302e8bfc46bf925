/**
 * Step 3: networking. DHCP (busybox udhcpc, whose hook script only records the lease) on the interface the
 * cmdline names (BOOTIF= / ironboot.mac=), else on every Ethernet interface with a carrier; the first
 * lease wins and the agent configures it: address, default route via the router option (not via the DHCP
 * server), DNS. Optional VLAN (ironboot.vlan=) on top, or static addressing (ironboot.ip= gw= dns=).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import type { AgentConfig } from '../cmdline.ts';
import type { NetInfo } from '../main.ts';
import { bb, mustRun, PATHS, sleep } from '../sys.ts';

export interface Iface { name: string; mac: string; carrier: boolean }

const readSys = (p: string) => readFile(p, 'utf8').then((s) => s.trim()).catch(() => '');

/** Physical Ethernet interfaces (type 1 with a backing device). */
export async function listEthernet(sysRoot = '/sys'): Promise<Iface[]> {
  const names = await readdir(`${sysRoot}/class/net`).catch(() => [] as string[]);
  const out: Iface[] = [];
  for (const name of names.sort()) {
    if (name === 'lo') continue;
    const base = `${sysRoot}/class/net/${name}`;
    if ((await readSys(`${base}/type`)) !== '1') continue;
    if (!(await readdir(`${base}/device`).catch(() => null))) continue;
    out.push({ name, mac: (await readSys(`${base}/address`)).toLowerCase(), carrier: (await readSys(`${base}/carrier`)) === '1' });
  }
  return out;
}

/** Parses the lease file written by udhcpc.script (KEY=VALUE lines). */
export function parseLease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** A dotted netmask or a prefix length → prefix length. */
export function prefixOf(mask: string | undefined): number {
  if (!mask) return 24;
  if (/^\d+$/.test(mask)) return Number(mask);
  return mask.split('.').reduce((n, o) => n + (Number(o) >>> 0).toString(2).replace(/0/g, '').length, 0);
}

/** The udhcpc hook shipped in the initramfs (init/build writes it to PATHS.udhcpcScript). */
export const UDHCPC_SCRIPT = `#!/bin/sh
# ironboot: record the lease only; the agent configures the interface that wins.
case "$1" in
  deconfig) ip addr flush dev "$interface" 2>/dev/null; ip link set "$interface" up ;;
  bound|renew)
    f=/run/ironboot/lease.$interface
    { echo "ip=$ip"; echo "mask=$mask"; echo "subnet=$subnet"; echo "router=$router"; echo "dns=$dns"
      echo "domain=$domain"; echo "hostname=$hostname"; echo "serverid=$serverid"; echo "lease=$lease"; } > "$f.tmp"
    mv "$f.tmp" "$f" ;;
esac
exit 0
`;

async function waitFor<T>(fn: () => Promise<T | null>, ms: number, step = 200): Promise<T | null> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= end) return null;
    await sleep(step);
  }
}

/** One shell for the whole configuration: each process node spawns is a fork of a large process (slow under emulation). */
async function configure(iface: string, ip: string, prefix: number, router: string | null): Promise<void> {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  await mustRun(PATHS.busybox, ['sh', '-c', [
    `ip addr flush dev ${q(iface)} 2>/dev/null`,
    `ip addr add ${q(`${ip}/${prefix}`)} dev ${q(iface)} || exit 1`,
    `ip link set ${q(iface)} up`,
    ...(router ? [`ip route replace default via ${q(router)} dev ${q(iface)} || exit 1`] : []),
  ].join('\n')]);
}

/** Whether an interface is administratively up already (IFF_UP in its sysfs flags; the coldplug script ups links). */
export async function linkIsUp(name: string, sysRoot = '/sys'): Promise<boolean> {
  const flags = Number.parseInt(await readSys(`${sysRoot}/class/net/${name}/flags`), 16);
  return Number.isFinite(flags) && (flags & 1) === 1;
}

/** Whether any network hardware is present (PCI class 02xxxx or a virtio-net device), bound or not. */
export async function networkHardwarePresent(sysRoot = '/sys'): Promise<boolean> {
  for (const d of await readdir(`${sysRoot}/bus/pci/devices`).catch(() => [] as string[])) {
    if ((await readSys(`${sysRoot}/bus/pci/devices/${d}/class`)).startsWith('0x02')) return true;
  }
  for (const d of await readdir(`${sysRoot}/bus/virtio/devices`).catch(() => [] as string[])) {
    if ((await readSys(`${sysRoot}/bus/virtio/devices/${d}/device`)) === '0x0001') return true;
  }
  return (await listEthernet(sysRoot)).length > 0;
}

export async function bringUpNetwork(cfg: AgentConfig, say: (m: string) => void): Promise<NetInfo> {
  if (!(await linkIsUp('lo'))) await bb('ip', ['link', 'set', 'lo', 'up']);
  if (!cfg.mac && !(await networkHardwarePresent())) throw new Error('no network hardware found');
  // Drivers bind asynchronously: wait for the named interface, or for at least one.
  const found = await waitFor(async () => {
    const all = await listEthernet();
    if (cfg.mac) return all.filter((i) => i.mac === cfg.mac).length ? all.filter((i) => i.mac === cfg.mac) : null;
    return all.length ? all : null;
  }, cfg.mac ? 20_000 : cfg.mode === 'seed' ? 3000 : 10_000);
  if (!found) throw new Error(cfg.mac ? `no interface with MAC ${cfg.mac} (BOOTIF/ironboot.mac)` : 'no Ethernet interface found (missing driver?)');
  for (const i of found) if (!(await linkIsUp(i.name))) await bb('ip', ['link', 'set', i.name, 'up']);
  // Carrier takes a moment after link up (e1000: ~1.4 s under TCG).
  let candidates = await waitFor(async () => {
    const up = (await listEthernet()).filter((i) => found.some((f) => f.name === i.name) && i.carrier);
    return up.length ? up : null;
  }, 6000, 100);
  if (!candidates) { say('no interface reports a carrier; trying DHCP on all of them'); candidates = found; }

  // The interface the addresses go on: the VLAN sub-interface when asked for.
  const onIface = async (i: Iface): Promise<string> => {
    if (!cfg.vlan) return i.name;
    const name = `${i.name}.${cfg.vlan}`.slice(0, 15);
    await bb('modprobe', ['-q', '8021q']);
    await bb('ip', ['link', 'add', 'link', i.name, 'name', name, 'type', 'vlan', 'id', String(cfg.vlan)]);
    await mustRun(PATHS.busybox, ['ip', 'link', 'set', name, 'up']);
    return name;
  };

  if (cfg.staticIp) {
    const i = candidates[0];
    const name = await onIface(i);
    const s = cfg.staticIp;
    await configure(name, s.address, s.prefix, s.gateway);
    return { iface: name, mac: i.mac, ip: s.address, prefix: s.prefix, router: s.gateway, dns: s.dns, hostname: null, domain: null };
  }

  const names = new Map<string, Iface>();
  for (const i of candidates) names.set(await onIface(i), i);
  for (const n of names.keys()) await rm(`${PATHS.runDir}/lease.${n}`, { force: true });
  say(`DHCP on ${[...names.keys()].join(', ')}`);
  const clients: ChildProcess[] = [];
  const winner = await new Promise<string | null>((resolve) => {
    let left = names.size;
    for (const n of names.keys()) {
      const c = spawn(PATHS.busybox, ['udhcpc', '-i', n, '-f', '-q', '-n', '-t', '8', '-T', '2', '-A', '1', '-s', PATHS.udhcpcScript,
        '-x', `hostname:ironboot-${names.get(n)!.mac.replace(/:/g, '')}`], { stdio: ['ignore', 'ignore', 'ignore'] });
      clients.push(c);
      c.on('error', () => {});
      c.on('close', async (code) => {
        left--;
        if (code === 0 && (await readFile(`${PATHS.runDir}/lease.${n}`, 'utf8').catch(() => null))) resolve(n);
        else if (left === 0) resolve(null);
      });
    }
  });
  for (const c of clients) if (c.exitCode === null && c.pid) { try { process.kill(c.pid, 'SIGTERM'); } catch { /* gone */ } }
  if (!winner) throw new Error(`no DHCP lease on ${[...names.keys()].join(', ')}`);
  const lease = parseLease(await readFile(`${PATHS.runDir}/lease.${winner}`, 'utf8'));
  const prefix = prefixOf(lease.mask || lease.subnet);
  const router = (lease.router ?? '').split(/\s+/).filter(Boolean)[0] ?? null;
  await configure(winner, lease.ip, prefix, router);
  return {
    iface: winner, mac: names.get(winner)!.mac, ip: lease.ip, prefix, router,
    dns: (lease.dns ?? '').split(/\s+/).filter(Boolean), hostname: lease.hostname || null, domain: lease.domain || null,
  };
}
