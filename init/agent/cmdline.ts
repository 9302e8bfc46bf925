/**
 * The kernel command line, as the agent reads it from /proc/cmdline (pure).
 *
 * Keys with a dot (`ironboot.server=`) never reach init's argv or environment (the kernel keeps them as
 * module parameters), so the agent parses the whole line itself. Tokenising follows the kernel's own
 * `next_arg()`: words are separated by whitespace, double quotes group (`key="a b"` or `"key=a b"`), the
 * first `=` splits key from value (later ones belong to the value), and everything after ` -- ` is init's
 * argv, not parameters.
 */
import type { Static } from '@sinclair/typebox';
import type { AfterAction } from '../../server/agent/api.ts';

export type After = Static<typeof AfterAction>;

export interface CmdlineParam { key: string; value: string | null }

/** Splits a command line into parameters (in order) and the init arguments after `--`. */
export function tokenizeCmdline(text: string): { params: CmdlineParam[]; initArgs: string[] } {
  const params: CmdlineParam[] = [];
  const words: string[] = [];
  let i = 0;
  const s = text.replace(/\0/g, ' ');
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i])) i++;
    if (i >= s.length) break;
    let word = '';
    let inQuote = false;
    while (i < s.length && (inQuote || !/\s/.test(s[i]))) {
      if (s[i] === '"') inQuote = !inQuote; else word += s[i];
      i++;
    }
    words.push(word);
  }
  const dashes = words.indexOf('--');
  const paramWords = dashes >= 0 ? words.slice(0, dashes) : words;
  const initArgs = dashes >= 0 ? words.slice(dashes + 1) : [];
  for (const w of paramWords) {
    const eq = w.indexOf('=');
    if (eq < 0) params.push({ key: w, value: null });
    else params.push({ key: w.slice(0, eq), value: w.slice(eq + 1) });
  }
  return { params, initArgs };
}

/** Last value wins, like the kernel's own handling of repeated parameters. */
export function cmdlineMap(text: string): Map<string, string | null> {
  const m = new Map<string, string | null>();
  for (const p of tokenizeCmdline(text).params) m.set(p.key, p.value);
  return m;
}

/** Splits a command string into words: whitespace separates, single quotes and backslashes quote. */
export function splitWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let have = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated single quote in "${s}"`);
      cur += s.slice(i + 1, end); have = true; i = end;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i]; have = true;
    } else if (/\s/.test(c)) {
      if (have) out.push(cur);
      cur = ''; have = false;
    } else { cur += c; have = true; }
  }
  if (have) out.push(cur);
  return out;
}

export interface StaticIp { address: string; prefix: number; gateway: string | null; dns: string[] }

export interface AgentConfig {
  /**
   * server: the ironboot flow; persistent: a later boot of a persistent workflow (`ironboot.boot=persistent`, runs the
   * disk it wrote); seed: `root=` + `entrypoint=` without a server (ginit's flow); none: nothing to do.
   */
  mode: 'server' | 'persistent' | 'seed' | 'none';
  server: string | null;
  workflowId: string | null;
  token: string | null;
  /** Boot interface MAC (canonical lower-case, colons) from BOOTIF= or ironboot.mac=. */
  mac: string | null;
  vlan: number | null;
  staticIp: StaticIp | null;
  /** Persistent boot: ironboot.disk=, the disk the workflow wrote (its target). */
  persistentDisk: string | null;
  /** Seed flow: the root device and the entrypoint's argv. */
  root: string | null;
  rootFsType: string | null;
  entrypoint: string[];
  /** ironboot.after= overrides what happens after the entrypoint (seed default: shell). */
  after: After | null;
  /** ironboot.modules=a,b,c loads exactly these instead of the modalias coldplug (faster, for known hardware). */
  modules: string[] | null;
  /** ironboot.zeroout=0 skips zeroing a block device's skipped regions (trust the filesystem instead). */
  zeroout: boolean;
  /** ironboot.net=0 skips networking in the seed flow. */
  net: boolean;
  /** Problems a user can act on (bad values); the agent prints them and carries on with defaults. */
  warnings: string[];
}

const AFTERS: readonly After[] = ['shell', 'reboot', 'poweroff', 'wait'];

/** BOOTIF=01-52-54-00-12-34-56 (PXELINUX: ARP type + MAC) or a plain MAC in any common spelling. */
export function parseBootMac(v: string): string | null {
  const hex = v.toLowerCase().replace(/[^0-9a-f]/g, '');
  const bytes = hex.length === 14 && hex.startsWith('01') ? hex.slice(2) : hex;
  if (bytes.length !== 12) return null;
  return bytes.match(/../g)!.join(':');
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** Builds the agent's configuration from /proc/cmdline text (pure). */
export function parseAgentConfig(text: string): AgentConfig {
  const m = cmdlineMap(text);
  const get = (k: string): string | null => {
    const v = m.get(k);
    return v === undefined || v === null || v === '' ? null : v;
  };
  const warnings: string[] = [];
  const server = get('ironboot.server');
  const workflowId = get('ironboot.workflow');
  const token = get('ironboot.token');

  let mac: string | null = null;
  const macRaw = get('ironboot.mac') ?? get('BOOTIF');
  if (macRaw) {
    mac = parseBootMac(macRaw);
    if (!mac) warnings.push(`ignoring boot MAC "${macRaw}": not a MAC address`);
  }

  let vlan: number | null = null;
  const vlanRaw = get('ironboot.vlan');
  if (vlanRaw) {
    const n = Number(vlanRaw);
    if (Number.isInteger(n) && n >= 1 && n <= 4094) vlan = n;
    else warnings.push(`ignoring ironboot.vlan="${vlanRaw}": VLAN id must be 1-4094`);
  }

  let staticIp: StaticIp | null = null;
  const ipRaw = get('ironboot.ip');
  if (ipRaw) {
    const [addr, pfx] = ipRaw.split('/');
    const prefix = pfx === undefined ? 24 : Number(pfx);
    if (!IPV4.test(addr) || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
      warnings.push(`ignoring ironboot.ip="${ipRaw}": expected ADDRESS/PREFIX, e.g. 10.0.0.5/24`);
    } else {
      const gw = get('ironboot.gw');
      if (gw && !IPV4.test(gw)) warnings.push(`ignoring ironboot.gw="${gw}": not an IPv4 address`);
      const dns = (get('ironboot.dns') ?? '').split(',').filter(Boolean);
      const badDns = dns.filter((d) => !IPV4.test(d));
      if (badDns.length) warnings.push(`ignoring DNS servers ${badDns.join(', ')}: not IPv4 addresses`);
      staticIp = { address: addr, prefix, gateway: gw && IPV4.test(gw) ? gw : null, dns: dns.filter((d) => IPV4.test(d)) };
    }
  }

  let after: After | null = null;
  const afterRaw = get('ironboot.after');
  if (afterRaw) {
    if ((AFTERS as string[]).includes(afterRaw)) after = afterRaw as After;
    else warnings.push(`ignoring ironboot.after="${afterRaw}": expected one of ${AFTERS.join(', ')}`);
  }

  const modulesRaw = get('ironboot.modules');
  const modules = modulesRaw ? modulesRaw.split(',').filter(Boolean) : null;

  const root = get('ironboot.root') ?? get('root');
  const epRaw = get('ironboot.entrypoint') ?? get('entrypoint');
  let entrypoint: string[] = [];
  if (epRaw) {
    try { entrypoint = splitWords(epRaw); } catch (e) { warnings.push(`entrypoint: ${(e as Error).message}`); }
  }

  const bootKind = get('ironboot.boot');
  const persistentDisk = get('ironboot.disk');
  if (bootKind && bootKind !== 'persistent') warnings.push(`ignoring ironboot.boot="${bootKind}": the only kind is persistent`);
  let mode: AgentConfig['mode'] = 'none';
  if (server && workflowId && token) mode = 'server';
  else if (server && workflowId && bootKind === 'persistent' && persistentDisk) mode = 'persistent';
  else if (root && entrypoint.length) mode = 'seed';
  if (bootKind === 'persistent' && mode !== 'persistent' && mode !== 'server') {
    const missing = [['ironboot.server', server], ['ironboot.workflow', workflowId], ['ironboot.disk', persistentDisk]]
      .filter(([, v]) => !v).map(([k]) => k);
    warnings.push(`a persistent boot needs ${missing.join(' and ')} on the kernel command line`);
  } else if (mode !== 'server' && mode !== 'persistent' && (server || workflowId || token)) {
    const missing = [['ironboot.server', server], ['ironboot.workflow', workflowId], ['ironboot.token', token]]
      .filter(([, v]) => !v).map(([k]) => k);
    warnings.push(`server flow needs ${missing.join(' and ')} on the kernel command line`);
  }
  if (mode === 'none' && (root || epRaw)) warnings.push('the seed flow needs both root= and entrypoint=');

  return {
    mode, server: server ? server.replace(/\/+$/, '') : null, workflowId, token, mac, vlan, staticIp,
    persistentDisk: mode === 'persistent' ? persistentDisk : null, root, rootFsType: get('rootfstype'), entrypoint, after, modules,
    zeroout: get('ironboot.zeroout') !== '0', net: get('ironboot.net') !== '0', warnings,
  };
}
