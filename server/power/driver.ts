/** What power control needs from a BMC, whatever its protocol (IPMI, Redfish). */
export type PowerAction = 'on' | 'off' | 'cycle' | 'status' | 'pxe';
export const POWER_ACTIONS: readonly PowerAction[] = ['on', 'off', 'cycle', 'status', 'pxe'];

/**
 * Why an action failed. `auth` is retried once only (more tries of a wrong password lock accounts on real BMCs),
 * `tls` needs the operator; `timeout` and `unreachable` may pass and are retried with backoff; `protocol` and `command` mean the
 * BMC answered but refused or said something unusable.
 */
export type PowerErrorKind = 'auth' | 'tls' | 'timeout' | 'unreachable' | 'protocol' | 'command';

export class PowerError extends Error {
  constructor(readonly kind: PowerErrorKind, message: string) { super(message); this.name = 'PowerError'; }
  get retryable(): boolean { return this.kind === 'timeout' || this.kind === 'unreachable'; }
}

export interface PowerDriver {
  readonly protocol: 'ipmi' | 'redfish';
  status(): Promise<'on' | 'off'>;
  on(): Promise<void>;
  /** Hard power off. */
  off(): Promise<void>;
  /** Power cycle a machine that is on (callers power on a machine that is off instead). */
  cycle(): Promise<void>;
  /** Next boot (only) from the network. */
  bootPxe(opts: { efi: boolean }): Promise<void>;
}
