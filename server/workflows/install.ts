/**
 * `mode: install`, the server's side (pure): what an installed machine finds on its own disk at first boot, and the
 * EC2-style metadata it may ask for.
 *
 * The agent streams the bootable disk (server/images/bootable.ts), then mounts its root partition and writes the
 * files listed here: /etc/hostname, /etc/hosts, a systemd-networkd .network (matched by MAC) with the machine's
 * static address, or DHCP when it has no reservation, /root/.ssh/authorized_keys, the workflow's kernel arguments
 * for GRUB (/etc/ironboot/grub.cfg), and a cloud-init NoCloud seed (/var/lib/cloud/seed/nocloud/{meta-data,
 * user-data,network-config}) for images that run cloud-init. The same data is served at /2009-04-04/… to the machine
 * itself (server/http/routes/metadata.ts). Everything is rendered once, here, so the seed and the HTTP metadata agree.
 */
import type { InstallFile } from '../agent/api.ts';
import type { Machine } from '../store/machines.ts';
import type { Workflow } from '../store/workflows.ts';
import type { Image } from '../store/images.ts';

/** The instance id of an installed machine: its install workflow (a reinstall is a new instance, as cloud-init expects). */
export const instanceId = (wf: Workflow): string => `i-${wf.id.replace(/-/g, '').slice(0, 17)}`;

export interface InstanceData {
  instanceId: string;
  hostname: string;
  mac: string;
  ipv4: { address: string; prefix: number; gateway?: string; dns: string[]; domain?: string } | null;
  sshKeys: string[];
  imageName: string;
}

export function instanceData(machine: Machine, wf: Workflow, img: Pick<Image, 'name'>): InstanceData {
  return {
    instanceId: instanceId(wf),
    hostname: machine.hostname ?? `ironboot-${machine.mac.replace(/:/g, '')}`,
    mac: machine.mac,
    ipv4: machine.ipv4 ? { address: machine.ipv4.address, prefix: machine.ipv4.prefix, gateway: machine.ipv4.gateway, dns: machine.ipv4.dns, domain: machine.ipv4.domain } : null,
    sshKeys: machine.sshKeys ?? [],
    imageName: img.name,
  };
}

/** The first label of a host name (what /etc/hostname holds when the name is fully qualified). */
const shortName = (h: string) => h.split('.')[0];

export function networkdUnit(d: InstanceData): string {
  const lines = ['# written by ironboot at install (workflow instance ' + d.instanceId + ')', '[Match]', `MACAddress=${d.mac}`, '', '[Network]'];
  if (d.ipv4) {
    lines.push(`Address=${d.ipv4.address}/${d.ipv4.prefix}`);
    if (d.ipv4.gateway) lines.push(`Gateway=${d.ipv4.gateway}`);
    for (const s of d.ipv4.dns) lines.push(`DNS=${s}`);
    if (d.ipv4.domain) lines.push(`Domains=${d.ipv4.domain}`);
    lines.push('LinkLocalAddressing=no', 'IPv6AcceptRA=no');
  } else {
    lines.push('DHCP=ipv4');
  }
  return lines.join('\n') + '\n';
}

/** cloud-init's network-config, version 2 (netplan's format). JSON is YAML. */
export function networkConfig(d: InstanceData): string {
  const eth: Record<string, unknown> = { match: { macaddress: d.mac }, 'set-name': 'eth0' };
  if (d.ipv4) {
    eth.addresses = [`${d.ipv4.address}/${d.ipv4.prefix}`];
    if (d.ipv4.gateway) eth.routes = [{ to: 'default', via: d.ipv4.gateway }];
    if (d.ipv4.dns.length || d.ipv4.domain) eth.nameservers = { addresses: d.ipv4.dns, ...(d.ipv4.domain ? { search: [d.ipv4.domain] } : {}) };
  } else {
    eth.dhcp4 = true;
  }
  return JSON.stringify({ version: 2, ethernets: { eth0: eth } }, null, 2) + '\n';
}

export const metaData = (d: InstanceData): string =>
  JSON.stringify({ 'instance-id': d.instanceId, 'local-hostname': d.hostname, hostname: d.hostname }, null, 2) + '\n';

export const userData = (d: InstanceData): string =>
  `#cloud-config\n${JSON.stringify({ hostname: shortName(d.hostname), fqdn: d.hostname.includes('.') ? d.hostname : undefined, ssh_authorized_keys: d.sshKeys, manage_etc_hosts: false }, null, 2)}\n`;

/** GRUB script quoting: single quotes, a quote as '\'' . */
const grubQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The files the agent writes into the installed root (pure). */
export function firstBootFiles(d: InstanceData, wf: Workflow): InstallFile[] {
  const host = shortName(d.hostname);
  const files: InstallFile[] = [
    { path: '/etc/hostname', content: `${host}\n`, mode: 0o644 },
    { path: '/etc/hosts', content: `127.0.0.1\tlocalhost\n${d.ipv4 ? d.ipv4.address : '127.0.1.1'}\t${d.hostname !== host ? `${d.hostname} ` : ''}${host}\n::1\tlocalhost ip6-localhost ip6-loopback\n`, mode: 0o644 },
    { path: '/etc/systemd/network/10-ironboot.network', content: networkdUnit(d), mode: 0o644 },
    { path: '/var/lib/cloud/seed/nocloud/meta-data', content: metaData(d), mode: 0o644 },
    { path: '/var/lib/cloud/seed/nocloud/user-data', content: userData(d), mode: 0o600 },
    { path: '/var/lib/cloud/seed/nocloud/network-config', content: networkConfig(d), mode: 0o644 },
    { path: '/etc/ironboot/install.json', content: JSON.stringify({ workflow: wf.id, instanceId: d.instanceId, image: d.imageName, mac: d.mac }, null, 2) + '\n', mode: 0o644 },
    { path: '/etc/ironboot/grub.cfg', content: `# the workflow's kernel arguments, read by the ESP's grub.cfg\nset ironboot_args=${grubQuote(wf.kernelArgs ?? '')}\n`, mode: 0o644 },
  ];
  if (d.ipv4?.dns.length) {
    files.push({ path: '/etc/resolv.conf', content: `${d.ipv4.domain ? `search ${d.ipv4.domain}\n` : ''}${d.ipv4.dns.map((s) => `nameserver ${s}`).join('\n')}\n`, mode: 0o644, replaceSymlink: true });
  }
  if (d.sshKeys.length) files.push({ path: '/root/.ssh/authorized_keys', content: d.sshKeys.join('\n') + '\n', mode: 0o600, dirMode: 0o700 });
  return files;
}

/** EC2's 2009-04-04 meta-data tree for the instance (pure): path under meta-data/ → body; directories end in '/'. */
export function metadataTree(d: InstanceData): Map<string, string> {
  const t = new Map<string, string>();
  t.set('instance-id', d.instanceId);
  t.set('hostname', d.hostname);
  t.set('local-hostname', d.hostname);
  t.set('mac', d.mac);
  if (d.ipv4) t.set('local-ipv4', d.ipv4.address);
  if (d.sshKeys.length) {
    t.set('public-keys/', d.sshKeys.map((k, i) => `${i}=${k.split(/\s+/).slice(2).join(' ') || `key-${i}`}`).join('\n'));
    d.sshKeys.forEach((k, i) => { t.set(`public-keys/${i}/`, 'openssh-key'); t.set(`public-keys/${i}/openssh-key`, k); });
  }
  return t;
}

/** The listing of a meta-data directory ('' for the root): its entries, sub-directories with a trailing '/'. */
export function metadataListing(tree: Map<string, string>, dir: string): string | null {
  if (dir.endsWith('/') && tree.has(dir)) return tree.get(dir)!;
  const out = new Set<string>();
  for (const k of tree.keys()) {
    if (!k.startsWith(dir) || k === dir) continue;
    const rest = k.slice(dir.length);
    const i = rest.indexOf('/');
    out.add(i < 0 ? rest : rest.slice(0, i + 1));
  }
  return out.size ? [...out].join('\n') : null;
}
