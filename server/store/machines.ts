import type { Db } from './db.ts';
import { isUniqueViolation, type SqlStatement } from './sql.ts';

export interface Ipv4Reservation {
  address: string;
  prefix: number;
  gateway?: string;
  dns: string[];
  leaseSeconds?: number;
  domain?: string;
}

export type MachineArch = 'auto' | 'bios' | 'uefi-x64' | 'uefi-arm64';

/** A machine's BMC as reads show it: never the password (migrations/*_machine_bmc.sql). */
export interface BmcSettings {
  url: string;
  username: string;
  /** Redfish: accept a certificate that does not verify (self-signed), for this BMC only. */
  tlsInsecure: boolean;
  /** Redfish: PEM CA bundle for this BMC's certificate. */
  ca: string | null;
}

/** What a BMC needs to be driven: the settings and the password (only the power service asks for it). */
export interface BmcCredentials extends BmcSettings { password: string }

/** A BMC as given on create or update; a missing password on update keeps the stored one. */
export interface BmcInput { url: string; username: string; password?: string; tlsInsecure?: boolean; ca?: string | null }

export type PowerState = 'on' | 'off' | 'unknown';
export interface PowerStatus { state: PowerState | null; checkedAt: string | null; error: string | null }

export interface Machine {
  id: number;
  mac: string;
  hostname: string | null;
  ipv4: Ipv4Reservation | null;
  arch: MachineArch;
  efiBinary: 'ipxe.efi' | 'snponly.efi';
  allowPxe: boolean;
  labels: Record<string, string>;
  /** OpenSSH authorized_keys lines for installed disks (migrations/008_machine_ssh_keys.sql). */
  sshKeys?: string[];
  bmc?: BmcSettings | null;
  power?: PowerStatus;
  createdAt: string;
  updatedAt: string;
}

export interface MachineInput {
  mac: string;
  hostname?: string | null;
  ipv4?: Ipv4Reservation | null;
  arch?: MachineArch;
  efiBinary?: 'ipxe.efi' | 'snponly.efi';
  allowPxe?: boolean;
  labels?: Record<string, string>;
  sshKeys?: string[];
  bmc?: BmcInput | null;
}

interface Row {
  id: number; mac: string; hostname: string | null;
  ipv4_address: string | null; ipv4_prefix: number | null; ipv4_gateway: string | null; ipv4_dns: string;
  lease_seconds: number | null; domain: string | null; arch: string | null; efi_binary: string | null;
  allow_pxe: number; labels: string; ssh_keys: string; created_at: string; updated_at: string;
  bmc_url: string | null; bmc_username: string | null; bmc_password: string | null; bmc_tls_insecure: number; bmc_ca: string | null;
  power_state: string | null; power_checked_at: string | null; power_error: string | null;
}

function fromRow(r: Row): Machine {
  return {
    id: r.id,
    mac: r.mac,
    hostname: r.hostname,
    ipv4: r.ipv4_address
      ? {
          address: r.ipv4_address,
          prefix: r.ipv4_prefix ?? 24,
          ...(r.ipv4_gateway ? { gateway: r.ipv4_gateway } : {}),
          dns: JSON.parse(r.ipv4_dns),
          ...(r.lease_seconds != null ? { leaseSeconds: r.lease_seconds } : {}),
          ...(r.domain ? { domain: r.domain } : {}),
        }
      : null,
    arch: (r.arch ?? 'auto') as MachineArch,
    efiBinary: (r.efi_binary ?? 'ipxe.efi') as Machine['efiBinary'],
    allowPxe: r.allow_pxe === 1,
    labels: JSON.parse(r.labels),
    sshKeys: JSON.parse(r.ssh_keys ?? '[]'),
    bmc: r.bmc_url ? { url: r.bmc_url, username: r.bmc_username ?? '', tlsInsecure: r.bmc_tls_insecure === 1, ca: r.bmc_ca } : null,
    power: { state: r.power_state as PowerState | null, checkedAt: r.power_checked_at, error: r.power_error },
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function toParams(m: MachineInput) {
  return {
    mac: m.mac,
    hostname: m.hostname ?? null,
    ipv4_address: m.ipv4?.address ?? null,
    ipv4_prefix: m.ipv4 ? m.ipv4.prefix : null,
    ipv4_gateway: m.ipv4?.gateway ?? null,
    ipv4_dns: JSON.stringify(m.ipv4?.dns ?? []),
    lease_seconds: m.ipv4?.leaseSeconds ?? null,
    domain: m.ipv4?.domain ?? null,
    arch: m.arch ?? 'auto',
    efi_binary: m.efiBinary ?? 'ipxe.efi',
    allow_pxe: m.allowPxe === false ? 0 : 1,
    labels: JSON.stringify(m.labels ?? {}),
    ssh_keys: JSON.stringify(m.sshKeys ?? []),
    bmc_url: m.bmc?.url ?? null,
    bmc_username: m.bmc?.username ?? null,
    bmc_password: m.bmc?.password ?? null,
    bmc_tls_insecure: m.bmc?.tlsInsecure ? 1 : 0,
    bmc_ca: m.bmc?.ca ?? null,
  };
}

export class DuplicateError extends Error {
  constructor(public field: string, message: string) { super(message); this.name = 'DuplicateError'; }
}

/** The machines table: one row per MAC address. */
export class MachineRepository {
  private statements = new Map<string, SqlStatement>();
  constructor(private db: Db) {}

  /** Statements are prepared once: DHCP looks machines up on every packet. */
  private q(sql: string): SqlStatement {
    let st = this.statements.get(sql);
    if (!st) { st = this.db.prepare(sql); this.statements.set(sql, st); }
    return st;
  }

  list(filter: { labels?: Record<string, string> } = {}): Machine[] {
    const rows = this.q('SELECT * FROM machines ORDER BY mac').all() as Row[];
    let out = rows.map(fromRow);
    if (filter.labels) {
      const want = Object.entries(filter.labels);
      out = out.filter((m) => want.every(([k, v]) => m.labels[k] === v));
    }
    return out;
  }

  getByMac(mac: string): Machine | undefined {
    const r = this.q('SELECT * FROM machines WHERE mac = ?').get(mac) as Row | undefined;
    return r && fromRow(r);
  }

  getById(id: number): Machine | undefined {
    const r = this.q('SELECT * FROM machines WHERE id = ?').get(id) as Row | undefined;
    return r && fromRow(r);
  }

  getByIpv4(address: string): Machine | undefined {
    const r = this.q('SELECT * FROM machines WHERE ipv4_address = ?').get(address) as Row | undefined;
    return r && fromRow(r);
  }

  create(input: MachineInput): Machine {
    const now = new Date().toISOString();
    return this.db.transaction(() => {
      if (this.getByMac(input.mac)) throw new DuplicateError('mac', `a machine with MAC ${input.mac} already exists`);
      if (input.ipv4 && this.getByIpv4(input.ipv4.address)) {
        throw new DuplicateError('ipv4.address', `address ${input.ipv4.address} is already reserved for another machine`);
      }
      const p = toParams(input);
      let row: { id: number };
      try {
        row = this.q(`INSERT INTO machines (mac, hostname, ipv4_address, ipv4_prefix, ipv4_gateway, ipv4_dns,
        lease_seconds, domain, arch, efi_binary, allow_pxe, labels, ssh_keys, bmc_url, bmc_username, bmc_password, bmc_tls_insecure, bmc_ca,
        created_at, updated_at)
        VALUES (@mac, @hostname, @ipv4_address, @ipv4_prefix, @ipv4_gateway, @ipv4_dns, @lease_seconds, @domain, @arch,
        @efi_binary, @allow_pxe, @labels, @ssh_keys, @bmc_url, @bmc_username, @bmc_password, @bmc_tls_insecure, @bmc_ca, @now, @now) RETURNING id`).get({ ...p, now }) as { id: number };
      } catch (err) {
        // checked above; another connection (a second daemon on one PostgreSQL) can still win the race to the index
        if (isUniqueViolation(err)) {
          const byIp = /ipv4/.test((err as Error).message) || (err as { constraint?: string }).constraint === 'machines_ipv4';
          throw byIp ? new DuplicateError('ipv4.address', `address ${input.ipv4?.address} is already reserved for another machine`)
            : new DuplicateError('mac', `a machine with MAC ${input.mac} already exists`);
        }
        throw err;
      }
      return this.getById(row.id)!;
    })();
  }

  /** Replaces the given fields; fields left out keep their value. */
  update(mac: string, patch: Partial<Omit<MachineInput, 'mac'>>): Machine | undefined {
    return this.db.transaction(() => {
      const cur = this.getByMac(mac);
      if (!cur) return undefined;
      const next: MachineInput = {
        mac,
        hostname: patch.hostname !== undefined ? patch.hostname : cur.hostname,
        ipv4: patch.ipv4 !== undefined ? patch.ipv4 : cur.ipv4,
        arch: patch.arch ?? cur.arch,
        efiBinary: patch.efiBinary ?? cur.efiBinary,
        allowPxe: patch.allowPxe ?? cur.allowPxe,
        labels: patch.labels ?? cur.labels,
        sshKeys: patch.sshKeys ?? cur.sshKeys,
        bmc: patch.bmc === undefined ? this.bmcInput(cur.id) : patch.bmc === null ? null
          : { ...patch.bmc, password: patch.bmc.password ?? this.getBmcCredentials(cur.id)?.password ?? '' },
      };
      if (next.ipv4) {
        const other = this.getByIpv4(next.ipv4.address);
        if (other && other.id !== cur.id) {
          throw new DuplicateError('ipv4.address', `address ${next.ipv4.address} is already reserved for ${other.mac}`);
        }
      }
      const p = toParams(next);
      this.q(`UPDATE machines SET hostname=@hostname, ipv4_address=@ipv4_address, ipv4_prefix=@ipv4_prefix,
        ipv4_gateway=@ipv4_gateway, ipv4_dns=@ipv4_dns, lease_seconds=@lease_seconds, domain=@domain, arch=@arch,
        efi_binary=@efi_binary, allow_pxe=@allow_pxe, labels=@labels, ssh_keys=@ssh_keys, bmc_url=@bmc_url, bmc_username=@bmc_username,
        bmc_password=@bmc_password, bmc_tls_insecure=@bmc_tls_insecure, bmc_ca=@bmc_ca, updated_at=@now WHERE mac=@mac`)
        .run({ ...p, now: new Date().toISOString() });
      return this.getByMac(mac);
    })();
  }

  /** The BMC with its password: for the power service only, never for an API read. */
  getBmcCredentials(id: number): BmcCredentials | undefined {
    const r = this.q('SELECT bmc_url, bmc_username, bmc_password, bmc_tls_insecure, bmc_ca FROM machines WHERE id = ?').get(id) as Row | undefined;
    if (!r?.bmc_url) return undefined;
    return { url: r.bmc_url, username: r.bmc_username ?? '', password: r.bmc_password ?? '', tlsInsecure: r.bmc_tls_insecure === 1, ca: r.bmc_ca };
  }

  private bmcInput(id: number): BmcInput | null {
    return this.getBmcCredentials(id) ?? null;
  }

  /** Records a polled or acted power state (not a change of the machine's settings: updated_at stays). */
  setPower(id: number, p: { state: PowerState; error?: string | null }): void {
    this.q('UPDATE machines SET power_state = ?, power_checked_at = ?, power_error = ? WHERE id = ?')
      .run(p.state, new Date().toISOString(), p.error ?? null, id);
  }

  listWithBmc(): Machine[] {
    return (this.q('SELECT * FROM machines WHERE bmc_url IS NOT NULL ORDER BY mac').all() as Row[]).map(fromRow);
  }

  delete(id: number): boolean {
    return this.q('DELETE FROM machines WHERE id = ?').run(id).changes > 0;
  }
}
