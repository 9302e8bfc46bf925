/** CLI commands that talk to the REST API: machines, images, workflows. */
import { readFileSync } from 'node:fs';
import { ApiClient, CliError, clientOptions } from './client.ts';
import { parseArgs, str, strList, need, keyValuePairs, type ParsedArgs } from './args.ts';
import { table, keyValues, bytes, fmt } from './format.ts';

type Out = (s: string) => void;
type Obj = Record<string, any>;

function print(out: Out, json: boolean, data: unknown, human: () => string): void {
  out(json ? JSON.stringify(data, null, 2) + '\n' : human());
}

export const MACHINES_HELP = `ironboot machines add MAC [--hostname H] [--ip ADDR/PREFIX] [--gateway IP] [--dns IP]... [--lease-time S]
                      [--domain D] [--arch auto|bios|uefi-x64|uefi-arm64] [--efi-binary ipxe.efi|snponly.efi]
                      [--no-pxe] [--label KEY=VALUE]... [--ssh-key 'ssh-ed25519 AAAA… user' | --ssh-key @FILE]...
ironboot machines set MAC [same flags as add; --pxe / --no-pxe]
ironboot machines list [--label KEY=VALUE]...
ironboot machines show MAC
ironboot machines rm MAC
ironboot machines power MAC on|off|cycle|status|pxe       (through the machine's BMC; pxe: next boot from the network)
  BMC flags of add/set: --bmc ipmi://HOST[:PORT]|redfish://HOST[:PORT]|none --bmc-user U
                        --bmc-password-file FILE (or IRONBOOT_BMC_PASSWORD) [--bmc-ca PEMFILE] [--bmc-tls-insecure]
`;

function machineBody(a: ParsedArgs, forUpdate: boolean): Obj {
  const f = a.flags;
  const body: Obj = {};
  if (str(f, 'hostname') !== undefined) body.hostname = str(f, 'hostname');
  const ip = str(f, 'ip');
  if (ip !== undefined) {
    if (ip === 'none') body.ipv4 = null;
    else {
      const m = /^([\d.]+)(?:\/(\d+))?$/.exec(ip);
      if (!m) throw new CliError(`--ip ${ip}: expected ADDRESS/PREFIX, e.g. 10.77.0.21/24`);
      body.ipv4 = { address: m[1], prefix: m[2] ? Number(m[2]) : 24 };
      if (str(f, 'gateway')) body.ipv4.gateway = str(f, 'gateway');
      if (strList(f, 'dns').length) body.ipv4.dns = strList(f, 'dns');
      if (str(f, 'lease-time')) body.ipv4.leaseSeconds = Number(str(f, 'lease-time'));
      if (str(f, 'domain')) body.ipv4.domain = str(f, 'domain');
    }
  } else if (str(f, 'gateway') || strList(f, 'dns').length) {
    throw new CliError('--gateway and --dns belong to a reservation: give --ip ADDRESS/PREFIX too');
  }
  if (str(f, 'arch')) body.arch = str(f, 'arch');
  if (str(f, 'efi-binary')) body.efiBinary = str(f, 'efi-binary');
  if (f.pxe !== undefined) body.allowPxe = f.pxe !== false;
  if (strList(f, 'label').length) body.labels = keyValuePairs(strList(f, 'label'), 'label');
  // --ssh-key LINE or @FILE (an authorized_keys file: one key per line, # comments skipped); --ssh-key none clears
  const keys = strList(f, 'ssh-key');
  if (keys.length) {
    body.sshKeys = keys[0] === 'none' && keys.length === 1 ? [] : keys.flatMap((k) => k.startsWith('@')
      ? readFileSync(k.slice(1), 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
      : [k]);
  }
  const bmc = str(f, 'bmc');
  if (bmc === 'none') body.bmc = null;
  else if (bmc !== undefined) {
    const file = str(f, 'bmc-password-file');
    const password = file !== undefined ? readFileSync(file, 'utf8').replace(/\r?\n$/, '') : str(f, 'bmc-password') ?? process.env.IRONBOOT_BMC_PASSWORD;
    body.bmc = { url: bmc, username: str(f, 'bmc-user') ?? '', ...(password !== undefined ? { password } : {}) };
    if (str(f, 'bmc-ca')) body.bmc.ca = readFileSync(str(f, 'bmc-ca')!, 'utf8');
    if (f['bmc-tls-insecure'] !== undefined) body.bmc.tlsInsecure = f['bmc-tls-insecure'] !== false;
  } else if (str(f, 'bmc-user') !== undefined || str(f, 'bmc-password-file') !== undefined) {
    throw new CliError('--bmc-user and --bmc-password-file belong to a BMC: give --bmc URL too');
  }
  if (!forUpdate) body.mac = need(a, 1, 'MAC address');
  return body;
}

const machineColumns: [string, (r: Obj) => unknown][] = [
  ['MAC', (m) => m.mac], ['HOSTNAME', (m) => m.hostname], ['IPV4', (m) => (m.ipv4 ? `${m.ipv4.address}/${m.ipv4.prefix}` : null)],
  ['PXE', (m) => (m.allowPxe ? 'yes' : 'no')], ['ARCH', (m) => m.arch], ['POWER', (m) => (m.bmc ? m.power?.state ?? '?' : null)],
  ['LABELS', (m) => m.labels],
];

export async function machinesCommand(argv: string[], out: Out): Promise<void> {
  const a = parseArgs(argv, {
    bool: ['pxe', 'bmc-tls-insecure'], list: ['dns', 'label', 'ssh-key'],
    known: ['hostname', 'ip', 'gateway', 'dns', 'lease-time', 'domain', 'arch', 'efi-binary', 'pxe', 'label', 'ssh-key', 'bmc', 'bmc-user', 'bmc-password', 'bmc-password-file', 'bmc-ca', 'bmc-tls-insecure'],
  });
  const sub = a.positionals[0];
  if (!sub || a.flags.help) { out(MACHINES_HELP); return; }
  const api = new ApiClient(clientOptions(a.flags));
  const json = a.flags.json === true;
  switch (sub) {
    case 'add': {
      const m = await api.request<Obj>('POST', '/api/v1/machines', machineBody(a, false));
      print(out, json, m, () => `added ${m.mac}${m.hostname ? ` (${m.hostname})` : ''}\n`);
      return;
    }
    case 'set': case 'update': {
      const mac = need(a, 1, 'MAC address');
      const m = await api.request<Obj>('PATCH', `/api/v1/machines/${encodeURIComponent(mac)}`, machineBody(a, true));
      print(out, json, m, () => keyValues(m));
      return;
    }
    case 'list': case 'ls': {
      const q = strList(a.flags, 'label').map((l) => `label=${encodeURIComponent(l)}`).join('&');
      const ms = await api.request<Obj[]>('GET', `/api/v1/machines${q ? '?' + q : ''}`);
      print(out, json, ms, () => table(ms, machineColumns));
      return;
    }
    case 'show': case 'get': {
      const m = await api.request<Obj>('GET', `/api/v1/machines/${encodeURIComponent(need(a, 1, 'MAC address'))}`);
      print(out, json, m, () => keyValues(m));
      return;
    }
    case 'power': {
      const mac = need(a, 1, 'MAC address');
      const action = need(a, 2, 'power action (on, off, cycle, status or pxe)');
      if (!['on', 'off', 'cycle', 'status', 'pxe'].includes(action)) throw new CliError(`"${action}" is not a power action: on, off, cycle, status or pxe`);
      const r = await api.request<Obj>('POST', `/api/v1/machines/${encodeURIComponent(mac)}/power/${action}`);
      print(out, json, r, () => `${r.mac}: ${r.message}${r.attempts > 1 ? ` (${r.attempts} tries)` : ''}\n`);
      return;
    }
    case 'rm': case 'delete': {
      const mac = need(a, 1, 'MAC address');
      await api.request('DELETE', `/api/v1/machines/${encodeURIComponent(mac)}`);
      print(out, json, { deleted: mac }, () => `deleted ${mac}\n`);
      return;
    }
    default: throw new CliError(`unknown subcommand "machines ${sub}"\n\n${MACHINES_HELP}`);
  }
}

export const IMAGES_HELP = `ironboot images list
ironboot images show ID|NAME
ironboot images rm ID|NAME
ironboot images build REF [--name N] [--platform linux/amd64] [--size SIZE] [--insecure]   (ironboot images build --help)
`;

const imageColumns: [string, (r: Obj) => unknown][] = [
  ['ID', (i) => i.id], ['NAME', (i) => i.name], ['STATE', (i) => i.state], ['SIZE', (i) => bytes(i.rawSize)],
  ['WIRE', (i) => bytes(i.compressedSize)], ['SOURCE', (i) => i.source],
];

export async function imagesCommand(argv: string[], out: Out, extra: { build?: (argv: string[], out: Out) => Promise<void> } = {}): Promise<void> {
  const sub = argv.find((x) => !x.startsWith('-'));
  if (sub === 'build') {
    if (!extra.build) throw new CliError('images build is not available in this build');
    return extra.build(argv.filter((x, i) => i !== argv.indexOf('build')), out);
  }
  const a = parseArgs(argv, { known: [] });
  if (!sub || a.flags.help) { out(IMAGES_HELP); return; }
  const api = new ApiClient(clientOptions(a.flags));
  const json = a.flags.json === true;
  switch (sub) {
    case 'list': case 'ls': {
      const is = await api.request<Obj[]>('GET', '/api/v1/images');
      print(out, json, is, () => table(is, imageColumns));
      return;
    }
    case 'show': case 'get': {
      const i = await api.request<Obj>('GET', `/api/v1/images/${encodeURIComponent(need(a, 1, 'image id or name'))}`);
      print(out, json, i, () => keyValues({ ...i, rawSize: bytes(i.rawSize), compressedSize: bytes(i.compressedSize) }));
      return;
    }
    case 'rm': case 'delete': {
      const id = need(a, 1, 'image id or name');
      await api.request('DELETE', `/api/v1/images/${encodeURIComponent(id)}`);
      print(out, json, { deleted: id }, () => `deleted ${id}\n`);
      return;
    }
    default: throw new CliError(`unknown subcommand "images ${sub}"\n\n${IMAGES_HELP}`);
  }
}

export const WORKFLOWS_HELP = `ironboot workflows create --machine MAC --image ID|NAME --target /dev/disk/by-id/…|/dev/sda|ram [--after wait|shell|reboot|poweroff] [--mode ephemeral|persistent|install]
                          [--wipe] [--target-serial SERIAL] [--target-size BYTES]
                          [--entrypoint PATH | --entrypoint '["/bin/sh","-c","..."]'] [--env KEY=VALUE]...
                          [--kernel-args "..."] [--timeout SECONDS] [--power-cycle] [-- ARGS...]
                          (--power-cycle: the machine's BMC sets next boot to PXE and power-cycles it)
ironboot workflows list [--machine MAC] [--state STATE]
ironboot workflows show ID
ironboot workflows cancel ID
ironboot workflows retry ID
ironboot workflows watch ID      follow its events live until it finishes

Prefer a stable /dev/disk/by-id/… name (see the machine's inventory) over /dev/sdX, whose order can change between
boots. The agent refuses a target that already holds a partition table or a filesystem unless --wipe is given, and
checks --target-serial / --target-size before it writes anything.
`;

const workflowColumns: [string, (r: Obj) => unknown][] = [
  ['ID', (w) => w.id], ['MACHINE', (w) => w.machine], ['IMAGE', (w) => w.image], ['STATE', (w) => w.state],
  ['TARGET', (w) => w.target], ['UPDATED', (w) => w.updatedAt],
];

const FINAL = new Set(['succeeded', 'failed', 'timed-out', 'cancelled']);

export function formatEvent(e: Obj): string {
  const t = String(e.at).slice(11, 23);
  if (e.kind === 'state') return `${t}  ${String(e.state).padEnd(12)} ${e.message ?? ''}${e.payload?.exitCode !== undefined ? ` (exit ${e.payload.exitCode})` : ''}`;
  if (e.kind === 'progress') {
    const pct = e.bytesTotal ? ` ${((100 * e.bytesDone) / e.bytesTotal).toFixed(0)}%` : '';
    return `${t}  ${'progress'.padEnd(12)} ${bytes(e.bytesDone)} / ${bytes(e.bytesTotal)}${pct}`;
  }
  if (e.kind === 'log') return (e.payload?.lines ?? []).map((l: Obj) => `${t}  ${(l.stream === 'stderr' ? 'stderr' : 'stdout').padEnd(12)} ${l.line}`).join('\n');
  return `${t}  ${String(e.kind).padEnd(12)} ${e.message ?? fmt(e.payload)}`;
}

/** A workflow with every event: GET /api/v1/workflows/{id} pages its events (eventsNext). */
async function workflowWithAllEvents(api: ApiClient, id: string): Promise<Obj> {
  const path = `/api/v1/workflows/${encodeURIComponent(id)}`;
  const w = await api.request<Obj>('GET', path);
  const events: Obj[] = [...(w.events as Obj[])];
  for (let next = w.eventsNext as number | null | undefined; next != null;) {
    const page = await api.request<Obj>('GET', `${path}?eventsAfter=${next}`);
    events.push(...(page.events as Obj[]));
    next = page.eventsNext as number | null | undefined;
  }
  const { eventsNext: _next, ...rest } = w;
  return { ...rest, events };
}

export async function workflowsCommand(argv: string[], out: Out): Promise<number> {
  const a = parseArgs(argv, { bool: ['power-cycle', 'wipe'], list: ['env'], known: ['machine', 'image', 'target', 'after', 'mode', 'entrypoint', 'env', 'kernel-args', 'timeout', 'state', 'power-cycle', 'wipe', 'target-serial', 'target-size'] });
  const sub = a.positionals[0];
  if (!sub || a.flags.help) { out(WORKFLOWS_HELP); return 0; }
  const api = new ApiClient(clientOptions(a.flags));
  const json = a.flags.json === true;
  switch (sub) {
    case 'create': {
      const f = a.flags;
      const body: Obj = { machine: str(f, 'machine'), image: str(f, 'image'), target: str(f, 'target') ?? '/dev/sda' };
      if (!body.machine) throw new CliError('--machine MAC is required');
      if (!body.image) throw new CliError('--image ID|NAME is required');
      if (str(f, 'after')) body.after = str(f, 'after');
      if (str(f, 'mode')) body.mode = str(f, 'mode');
      if (f.wipe === true) body.wipe = true;
      if (str(f, 'target-serial')) body.targetSerial = str(f, 'target-serial');
      if (str(f, 'target-size')) body.targetSize = Number(str(f, 'target-size'));
      const ep = str(f, 'entrypoint');
      if (ep) {
        if (ep.startsWith('[')) {
          try { body.entrypoint = JSON.parse(ep); } catch { throw new CliError('--entrypoint: not a JSON array'); }
        } else body.entrypoint = [ep];
      }
      if (a.rest.length) body.args = a.rest;
      if (strList(f, 'env').length) body.env = keyValuePairs(strList(f, 'env'), 'env');
      if (str(f, 'kernel-args')) body.kernelArgs = str(f, 'kernel-args');
      if (str(f, 'timeout')) body.timeoutSeconds = Number(str(f, 'timeout'));
      if (f['power-cycle'] === true) body.powerCycle = true;
      const w = await api.request<Obj>('POST', '/api/v1/workflows', body);
      print(out, json, w, () => `created workflow ${w.id} for ${w.machine} (${w.state})\n`);
      return 0;
    }
    case 'list': case 'ls': {
      const q = new URLSearchParams();
      if (str(a.flags, 'machine')) q.set('machine', str(a.flags, 'machine')!);
      if (str(a.flags, 'state')) q.set('state', str(a.flags, 'state')!);
      const ws = await api.request<Obj[]>('GET', `/api/v1/workflows${q.size ? '?' + q : ''}`);
      print(out, json, ws, () => table(ws, workflowColumns));
      return 0;
    }
    case 'show': case 'get': {
      const w = await workflowWithAllEvents(api, need(a, 1, 'workflow id'));
      print(out, json, w, () => {
        const { events, ...rest } = w;
        return keyValues(rest) + '\nevents:\n' + (events as Obj[]).map(formatEvent).join('\n') + '\n';
      });
      return 0;
    }
    case 'cancel': case 'retry': {
      const id = need(a, 1, 'workflow id');
      const w = await api.request<Obj>('POST', `/api/v1/workflows/${encodeURIComponent(id)}/${sub}`);
      print(out, json, w, () => `${sub === 'cancel' ? 'cancelled' : 'retrying as'} ${w.id} (${w.state})\n`);
      return 0;
    }
    case 'watch': {
      const id = need(a, 1, 'workflow id');
      let final: Obj | undefined;
      const cur = await workflowWithAllEvents(api, id);
      if (FINAL.has(cur.state)) {
        for (const e of cur.events) out((json ? JSON.stringify(e) : formatEvent(e)) + '\n');
        return cur.state === 'succeeded' ? 0 : 1;
      }
      await api.stream(`/api/v1/events/stream?workflow=${encodeURIComponent(id)}`, (_type, data) => {
        const e = data as Obj;
        out((json ? JSON.stringify(e) : formatEvent(e)) + '\n');
        if (e.kind === 'state' && FINAL.has(e.state)) { final = e; return true; }
        return false;
      });
      return final?.state === 'succeeded' ? 0 : 1;
    }
    default: throw new CliError(`unknown subcommand "workflows ${sub}"\n\n${WORKFLOWS_HELP}`);
  }
}
