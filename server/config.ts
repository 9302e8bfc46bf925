/**
 * Settings of `ironboot serve`: each is a flag, an IRONBOOT_… environment variable and a key of an optional
 * JSON config file (--config / IRONBOOT_CONFIG). Precedence: flag > environment > file > default.
 * deploy/ironboot.example.json documents every key.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { BOOT_SCRIPT_AUTH_MODES, type BootScriptAuth } from './boot/script-auth.ts';
import { parseImagesLocation, type ImageStoreConfig } from './images/artifact-store.ts';

export type DhcpMode = 'reservation' | 'proxy' | 'full';

export interface ServeConfig {
  dataDir: string;
  /** null: embedded SQLite in the data directory; else a postgres:// or postgresql:// URL. */
  store: string | null;
  /** host null: the provisioning interfaces' addresses (--dhcp-interface) and loopback (server/listen.ts). */
  httpListen: { host: string | null; port: number };
  publicUrl: string | null;
  dhcp: boolean;
  dhcpMode: DhcpMode;
  dhcpInterfaces: string[];
  dhcpPool: { start: string; end: string } | null;
  dhcpPoolUnknown: boolean;
  dhcpLeaseSeconds: number;
  dhcpRouter: string | null;
  dhcpDns: string[];
  /** Relays (giaddr) whose requests are served; empty: any relay. */
  dhcpRelays: { address: string; prefix: number }[];
  dhcpPort: number;
  proxyPort: number;
  tftp: boolean;
  tftpListen: { host: string | null; port: number };
  /** Concurrent TFTP transfers; past it requests go unanswered, so clients retry (server/tftp/server.ts). */
  tftpMaxTransfers: number;
  /** null: ARTIFACTS_DIR/ipxe when `ironboot artifacts ipxe` built one there, else /usr/lib/ipxe (server/boot/ipxe-dir.ts). */
  ipxeDir: string | null;
  artifactsDir: string | null;
  templatesDir: string | null;
  buildArtifacts: boolean;
  logLevel: string;
  /** Seconds between polls of every BMC's power state (0: never). */
  powerPollSeconds?: number;
  /** Who gets a provisioning script when ironboot does not lease the addresses itself (server/boot/script-auth.ts). */
  bootScriptAuth: BootScriptAuth;
  /** HTTPS for the agent, the API and the images (PEM files); null: plain HTTP only. */
  tls: { cert: string; key: string; ca: string | null } | null;
  httpsListen: { host: string | null; port: number };
  /** How agents reach the HTTPS side (default: the public URL's host on the HTTPS port). */
  publicHttpsUrl: string | null;
  /** Per workflow: most output events (log, progress, info) its agent may store. */
  agentMaxEvents: number;
  /** Per workflow: most bytes of agent output stored. */
  agentMaxEventBytes: number;
  /** Most concurrent live event stream (SSE) clients. */
  sseMaxClients: number;
  /** Where built images live (--images): DATA_DIR/images, or an S3 bucket that DATA_DIR/images caches. */
  imageStore: ImageStoreConfig;
  /** Agents fetch disk chunks from peers that have them (server/p2p); off: every agent fetches the whole file here. */
  p2p: boolean;
  /** Bytes per chunk of a compressed disk file (each verified by its sha256). */
  p2pChunkSize: number;
  /** The port agents serve their verified chunks on. */
  p2pPort: number;
}

export class ConfigError extends Error {
  constructor(public key: string, message: string) {
    super(`${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

/** Keys of the config file: the ServeConfig fields, and the TLS files that ServeConfig.tls groups. */
type SettingKey = keyof ServeConfig | 'tlsCert' | 'tlsKey' | 'tlsCa'
  | 'images' | 's3Endpoint' | 's3PathStyle' | 'imagesRedirect' | 'imagesRedirectSeconds';

interface Spec {
  key: SettingKey;
  flag: string;
  kind: 'string' | 'bool' | 'list' | 'int';
  help: string;
}

export const SERVE_SETTINGS: Spec[] = [
  { key: 'dataDir', flag: 'data-dir', kind: 'string', help: 'data directory: database, token, images, artifacts (default ./var)' },
  { key: 'store', flag: 'store', kind: 'string', help: 'database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB or postgresql://USER@/DB?host=/socket/dir (default: embedded SQLite in the data directory)' },
  { key: 'httpListen', flag: 'http-listen', kind: 'string', help: 'HTTP [ADDRESS]:PORT (default :8080, on the --dhcp-interface addresses and loopback; 0.0.0.0 = every interface)' },
  { key: 'publicUrl', flag: 'public-url', kind: 'string', help: 'how machines reach the HTTP side (default: from the serving interface)' },
  { key: 'dhcp', flag: 'dhcp', kind: 'bool', help: 'serve DHCP (--no-dhcp to turn off)' },
  { key: 'dhcpMode', flag: 'dhcp-mode', kind: 'string', help: 'reservation (default) | proxy | full' },
  { key: 'dhcpInterfaces', flag: 'dhcp-interface', kind: 'list', help: 'interface to serve DHCP on (repeatable; required with DHCP on)' },
  { key: 'dhcpPool', flag: 'dhcp-pool', kind: 'string', help: 'full mode: dynamic pool START-END, e.g. 10.77.0.100-10.77.0.199' },
  { key: 'dhcpPoolUnknown', flag: 'dhcp-pool-unknown', kind: 'bool', help: 'full mode: also lease to MACs that are not registered' },
  { key: 'dhcpLeaseSeconds', flag: 'dhcp-lease-time', kind: 'int', help: 'lease time in seconds when a reservation has none (default 3600)' },
  { key: 'dhcpRouter', flag: 'dhcp-router', kind: 'string', help: 'router option for pool leases' },
  { key: 'dhcpDns', flag: 'dhcp-dns', kind: 'list', help: 'DNS server option for pool leases (repeatable)' },
  { key: 'dhcpRelays', flag: 'dhcp-relay', kind: 'list', help: 'only serve relayed requests from this relay address or ADDRESS/PREFIX (repeatable; default: any relay)' },
  { key: 'dhcpPort', flag: 'dhcp-port', kind: 'int', help: 'DHCP server port (default 67; tests only)' },
  { key: 'proxyPort', flag: 'proxy-port', kind: 'int', help: 'PXE proxyDHCP port (default 4011)' },
  { key: 'tftp', flag: 'tftp', kind: 'bool', help: 'serve TFTP (--no-tftp to turn off)' },
  { key: 'tftpListen', flag: 'tftp-listen', kind: 'string', help: 'TFTP [ADDRESS]:PORT (default :69, on the --dhcp-interface addresses and loopback; 0.0.0.0 = every interface)' },
  { key: 'tftpMaxTransfers', flag: 'tftp-max-transfers', kind: 'int', help: 'concurrent TFTP transfers (default 256); past it a request goes unanswered and its client retries' },
  { key: 'ipxeDir', flag: 'ipxe-dir', kind: 'string', help: 'directory of iPXE binaries (default: ARTIFACTS_DIR/ipxe when `ironboot artifacts ipxe` built one, else /usr/lib/ipxe)' },
  { key: 'artifactsDir', flag: 'artifacts-dir', kind: 'string', help: 'kernel + initramfs directory (default DATA_DIR/artifacts)' },
  { key: 'templatesDir', flag: 'templates-dir', kind: 'string', help: 'iPXE templates (default: the shipped templates/ipxe)' },
  { key: 'buildArtifacts', flag: 'build-artifacts', kind: 'bool', help: 'build the kernel + initramfs at start when missing (default on)' },
  { key: 'logLevel', flag: 'log-level', kind: 'string', help: 'trace | debug | info | warn | error (default info)' },
  { key: 'powerPollSeconds', flag: 'power-poll-interval', kind: 'int', help: 'seconds between polls of each BMC\'s power state (default 60; 0: never)' },
  { key: 'bootScriptAuth', flag: 'boot-script-auth', kind: 'string', help: 'ip (default): a provisioning script (it carries a boot token) goes only to the machine\'s reserved address | none: to anyone; when ironboot leases the addresses (DHCP reservation/full) only the leased/reserved address gets it' },
  { key: 'tlsCert', flag: 'tls-cert', kind: 'string', help: 'PEM certificate (chain) for HTTPS; with --tls-key turns on the HTTPS side for the agent, the API and the images' },
  { key: 'tlsKey', flag: 'tls-key', kind: 'string', help: 'PEM private key of --tls-cert' },
  { key: 'tlsCa', flag: 'tls-ca', kind: 'string', help: 'PEM CA the agent verifies the server against (built into the initramfs); default: none, the agent then verifies against node\'s built-in public CAs' },
  { key: 'httpsListen', flag: 'https-listen', kind: 'string', help: 'HTTPS [ADDRESS]:PORT with --tls-cert (default :8443, on the --dhcp-interface addresses and loopback)' },
  { key: 'publicHttpsUrl', flag: 'public-https-url', kind: 'string', help: 'how agents reach the HTTPS side (default: the public URL\'s host with https and the HTTPS port)' },
  { key: 'agentMaxEvents', flag: 'agent-max-events', kind: 'int', help: 'per workflow: most log/progress/info events stored (default 50000)' },
  { key: 'agentMaxEventBytes', flag: 'agent-max-event-bytes', kind: 'int', help: 'per workflow: most bytes of agent output stored (default 67108864)' },
  { key: 'sseMaxClients', flag: 'sse-max-clients', kind: 'int', help: 'most concurrent live event stream clients (default 64)' },
  { key: 'images', flag: 'images', kind: 'string', help: 'where built images live: local (default: DATA_DIR/images) | s3://BUCKET/PREFIX (shared by every daemon; DATA_DIR/images caches it; region AWS_REGION, default us-east-1; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)' },
  { key: 's3Endpoint', flag: 's3-endpoint', kind: 'string', help: 'S3-compatible server URL for --images s3:// (default AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS)' },
  { key: 's3PathStyle', flag: 's3-path-style', kind: 'bool', help: 'path-style S3 URLs (http://host/bucket/key), as most S3-compatible servers need (default on with an endpoint, off for AWS)' },
  { key: 'imagesRedirect', flag: 'images-redirect', kind: 'bool', help: 'with --images s3://: answer GET /images/<id>.ext4.zst (after the token check) with a 307 to a presigned S3 URL instead of streaming it' },
  { key: 'imagesRedirectSeconds', flag: 'images-redirect-expiry', kind: 'int', help: 'seconds a presigned image URL stays valid (default 300)' },
  { key: 'p2p', flag: 'p2p', kind: 'bool', help: 'agents fetch disk chunks from peers that already have them, each chunk verified by its sha256 (default on; --no-p2p: the whole file from this server)' },
  { key: 'p2pChunkSize', flag: 'p2p-chunk-size', kind: 'int', help: 'bytes per chunk of a compressed disk (default 4194304; 65536 to 67108864)' },
  { key: 'p2pPort', flag: 'p2p-port', kind: 'int', help: 'port agents serve their verified chunks on (default 7480)' },
];

export const envName = (flag: string): string => 'IRONBOOT_' + flag.toUpperCase().replaceAll('-', '_');

/** `ADDRESS:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (host null: the default addresses), or `ADDRESS`. */
function parseHostPort(key: string, v: string, defPort: number): { host: string | null; port: number } {
  const m = /^(?:\[?([^\]]*)\]?:)?(\d+)$/.exec(v) ?? /^([^:]+)$/.exec(v);
  if (!m) throw new ConfigError(key, `"${v}" is not ADDRESS:PORT`);
  const host = m.length === 3 ? (m[1] || null) : m[1];
  const port = m.length === 3 ? Number(m[2]) : defPort;
  if (!(port >= 0 && port <= 65535)) throw new ConfigError(key, `port ${port} out of range`);
  return { host, port };
}

/**
 * Where images live (--images and the S3 settings): the serve config and `ironboot images build` both read it.
 * Throws a ConfigError naming the setting.
 */
export function resolveImageStore(o: {
  images: string | null; s3Endpoint: string | null; s3PathStyle?: boolean | null; redirect?: boolean; redirectSeconds?: number;
}, env: NodeJS.ProcessEnv = process.env): ImageStoreConfig {
  let location: ReturnType<typeof parseImagesLocation>;
  try { location = parseImagesLocation(o.images); } catch (err) { throw new ConfigError('images', (err as Error).message); }
  const s3EndpointSetting = o.s3Endpoint;
  const s3Endpoint = s3EndpointSetting ?? (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || null);
  const redirectOn = o.redirect ?? false;
  if (location.kind !== 's3') {
    if (redirectOn) throw new ConfigError('images-redirect', 'redirects go to presigned S3 URLs: it needs --images s3://BUCKET/PREFIX');
    if (s3EndpointSetting) throw new ConfigError('s3-endpoint', 'only used with --images s3://BUCKET/PREFIX');
    return { kind: 'local' };
  }
  const endpointKey = s3EndpointSetting ? 's3-endpoint' : env.AWS_ENDPOINT_URL_S3 ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL';
  if (s3Endpoint && !/^https?:\/\/[^/]+/.test(s3Endpoint)) throw new ConfigError(endpointKey, `"${s3Endpoint}" is not an http(s) URL`);
  const redirectSeconds = o.redirectSeconds ?? 300;
  if (redirectSeconds < 1 || redirectSeconds > 604800) throw new ConfigError('images-redirect-expiry', `${redirectSeconds} is not between 1 and 604800 seconds (S3's limit for presigned URLs)`);
  return {
    ...location, endpoint: s3Endpoint ? s3Endpoint.replace(/\/+$/, '') : null, region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    pathStyle: o.s3PathStyle ?? !!s3Endpoint, redirect: redirectOn, redirectSeconds,
  };
}

/** Parses argv (after the subcommand), the environment and the config file into a ServeConfig. */
export function loadServeConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const flags = new Map<string, unknown>();
  let configFile: string | undefined = env.IRONBOOT_CONFIG;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new ConfigError(a, 'unexpected argument');
    let [name, value] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    if (name === 'config') { configFile = value ?? argv[++i]; continue; }
    let negate = false;
    let spec = SERVE_SETTINGS.find((s) => s.flag === name);
    if (!spec && name.startsWith('no-')) { spec = SERVE_SETTINGS.find((s) => s.flag === name.slice(3) && s.kind === 'bool'); negate = true; }
    if (!spec) throw new ConfigError(`--${name}`, 'unknown flag (see ironboot serve --help)');
    if (spec.kind === 'bool') {
      flags.set(spec.key, negate ? false : value === undefined ? true : !/^(0|false|no|off)$/i.test(value));
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new ConfigError(`--${name}`, 'needs a value');
    }
    if (spec.kind === 'list') flags.set(spec.key, [...((flags.get(spec.key) as string[]) ?? []), value]);
    else flags.set(spec.key, value);
  }
  let file: Record<string, unknown> = {};
  if (configFile) {
    try {
      file = JSON.parse(readFileSync(configFile, 'utf8'));
    } catch (err) {
      throw new ConfigError('--config', `cannot read ${configFile}: ${(err as Error).message}`);
    }
    for (const k of Object.keys(file)) {
      if (!SERVE_SETTINGS.some((s) => s.key === k)) throw new ConfigError(`${configFile}: ${k}`, 'unknown key');
    }
  }
  const raw = (spec: Spec): unknown => {
    if (flags.has(spec.key)) return flags.get(spec.key);
    const e = env[envName(spec.flag)];
    if (e !== undefined && e !== '') {
      if (spec.kind === 'bool') return !/^(0|false|no|off)$/i.test(e);
      if (spec.kind === 'list') return e.split(',').map((s) => s.trim()).filter(Boolean);
      return e;
    }
    return file[spec.key];
  };
  const get = (key: SettingKey) => raw(SERVE_SETTINGS.find((s) => s.key === key)!);
  const str = (key: SettingKey, def: string | null) => { const v = get(key); return v === undefined || v === null ? def : String(v); };
  const int = (key: SettingKey, def: number) => {
    const v = get(key);
    if (v === undefined || v === null) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new ConfigError(key, `"${v}" is not a non-negative integer`);
    return n;
  };
  const bool = (key: SettingKey, def: boolean) => { const v = get(key); return v === undefined || v === null ? def : Boolean(v); };
  const list = (key: keyof ServeConfig) => { const v = get(key); return v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)]; };

  const dhcpMode = str('dhcpMode', 'reservation') as DhcpMode;
  if (!['reservation', 'proxy', 'full'].includes(dhcpMode)) throw new ConfigError('dhcp-mode', `"${dhcpMode}" is not one of reservation, proxy, full`);
  let dhcpPool: ServeConfig['dhcpPool'] = null;
  const pool = str('dhcpPool', null);
  if (pool) {
    const m = /^(\d+\.\d+\.\d+\.\d+)\s*-\s*(\d+\.\d+\.\d+\.\d+)$/.exec(pool);
    if (!m) throw new ConfigError('dhcp-pool', `"${pool}" is not START-END (e.g. 10.77.0.100-10.77.0.199)`);
    dhcpPool = { start: m[1], end: m[2] };
  }
  if (dhcpMode === 'full' && !dhcpPool) throw new ConfigError('dhcp-pool', 'full mode needs a pool (--dhcp-pool START-END)');
  const dhcpRelays = list('dhcpRelays').map((r) => {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(r.trim());
    const prefix = m ? Number(m[2] ?? 32) : -1;
    if (!m || prefix > 32 || m[1].split('.').some((o) => Number(o) > 255)) throw new ConfigError('dhcp-relay', `"${r}" is not an IPv4 ADDRESS or ADDRESS/PREFIX`);
    return { address: m[1], prefix };
  });
  const logLevel = str('logLevel', 'info')!;
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel)) throw new ConfigError('log-level', `"${logLevel}" is not a log level`);
  const publicUrl = str('publicUrl', null);
  if (publicUrl && !/^https?:\/\/[^/]+/.test(publicUrl)) throw new ConfigError('public-url', `"${publicUrl}" is not an http(s) URL`);

  const bootScriptAuth = str('bootScriptAuth', 'ip') as BootScriptAuth;
  if (!BOOT_SCRIPT_AUTH_MODES.includes(bootScriptAuth)) throw new ConfigError('boot-script-auth', `"${bootScriptAuth}" is not one of ${BOOT_SCRIPT_AUTH_MODES.join(', ')}`);
  const tlsCert = str('tlsCert', null);
  const tlsKey = str('tlsKey', null);
  const tlsCa = str('tlsCa', null);
  if (!!tlsCert !== !!tlsKey) throw new ConfigError(tlsCert ? 'tls-key' : 'tls-cert', 'HTTPS needs both --tls-cert and --tls-key');
  if (tlsCa && !tlsCert) throw new ConfigError('tls-ca', '--tls-ca without --tls-cert/--tls-key: there is no HTTPS side to verify');
  const publicHttpsUrl = str('publicHttpsUrl', null);
  if (publicHttpsUrl && !/^https:\/\/[^/]+/.test(publicHttpsUrl)) throw new ConfigError('public-https-url', `"${publicHttpsUrl}" is not an https URL`);

  const imageStore = resolveImageStore({
    images: str('images', null), s3Endpoint: str('s3Endpoint', null), s3PathStyle: get('s3PathStyle') == null ? null : bool('s3PathStyle', false),
    redirect: bool('imagesRedirect', false), redirectSeconds: int('imagesRedirectSeconds', 300),
  }, env);

  const store = str('store', null);
  if (store !== null && store !== '' && store !== 'sqlite') {
    // the rest (host, socket directory, credentials) is checked by connecting, which names --store when it fails
    if (!/^postgres(?:ql)?:\/\/\S*$/.test(store)) throw new ConfigError('store', `"${store.replace(/:[^:@/]*@/, ':***@')}" is not a postgres://… or postgresql://… URL (leave it out for SQLite in the data directory)`);
  }

  const p2pChunkSize = int('p2pChunkSize', 4 << 20);
  if (p2pChunkSize < 65536 || p2pChunkSize > 64 << 20) throw new ConfigError('p2p-chunk-size', `${p2pChunkSize} is not between 65536 and 67108864 bytes`);
  const p2pPort = int('p2pPort', 7480);
  if (p2pPort < 1 || p2pPort > 65535) throw new ConfigError('p2p-port', `${p2pPort} is not a port (1-65535)`);

  return {
    imageStore,
    store: store && store !== 'sqlite' ? store : null,
    p2p: bool('p2p', true),
    p2pChunkSize,
    p2pPort,
    bootScriptAuth,
    tls: tlsCert && tlsKey ? { cert: resolve(tlsCert), key: resolve(tlsKey), ca: tlsCa ? resolve(tlsCa) : null } : null,
    httpsListen: parseHostPort('https-listen', str('httpsListen', ':8443')!, 8443),
    publicHttpsUrl: publicHttpsUrl ? publicHttpsUrl.replace(/\/+$/, '') : null,
    dataDir: resolve(str('dataDir', './var')!),
    httpListen: parseHostPort('http-listen', str('httpListen', ':8080')!, 8080),
    publicUrl: publicUrl ? publicUrl.replace(/\/+$/, '') : null,
    dhcp: bool('dhcp', true),
    dhcpMode,
    dhcpInterfaces: list('dhcpInterfaces'),
    dhcpPool,
    dhcpPoolUnknown: bool('dhcpPoolUnknown', false),
    dhcpLeaseSeconds: int('dhcpLeaseSeconds', 3600),
    dhcpRouter: str('dhcpRouter', null),
    dhcpDns: list('dhcpDns'),
    dhcpRelays,
    dhcpPort: int('dhcpPort', 67),
    proxyPort: int('proxyPort', 4011),
    tftp: bool('tftp', true),
    tftpListen: parseHostPort('tftp-listen', str('tftpListen', ':69')!, 69),
    tftpMaxTransfers: int('tftpMaxTransfers', 256),
    ipxeDir: (() => { const d = str('ipxeDir', null); return d ? resolve(d) : null; })(),
    artifactsDir: str('artifactsDir', null),
    templatesDir: str('templatesDir', null),
    buildArtifacts: bool('buildArtifacts', true),
    logLevel,
    powerPollSeconds: int('powerPollSeconds', 60),
    agentMaxEvents: int('agentMaxEvents', 50_000),
    agentMaxEventBytes: int('agentMaxEventBytes', 64 << 20),
    sseMaxClients: int('sseMaxClients', 64),
  };
}
