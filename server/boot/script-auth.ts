/**
 * Who may receive a provisioning script (it carries a boot token): the decision, pure.
 *
 *   ironboot leases addresses (DHCP in reservation or full mode)  → only the address it reserved or leased to that
 *                                                                   MAC (as smee does); the setting does not loosen it
 *   otherwise, --boot-script-auth ip (default)                     → only the machine's reserved address
 *                                                                   (machines.ipv4), else refused with what to do
 *   otherwise, --boot-script-auth none                             → anyone (the token is then not bound to an address)
 *
 * A refusal still gets an iPXE script, without a token, that says why on the console.
 */

export type BootScriptAuth = 'ip' | 'none';
export const BOOT_SCRIPT_AUTH_MODES: readonly BootScriptAuth[] = ['ip', 'none'];

export interface BootScriptAuthInput {
  mac: string;
  /** Where the request came from (IPv4-mapped prefix already removed). */
  sourceIp: string;
  /** Whether this daemon hands out the addresses (DHCP on, reservation or full mode). */
  dhcpLeases: boolean;
  mode: BootScriptAuth;
  /** machines.ipv4.address of that MAC, if any. */
  reservedIp: string | null;
  /** Unexpired pool leases ironboot bound to that MAC (full mode). */
  leasedIps: string[];
}

export interface BootScriptAuthDecision {
  allow: boolean;
  /** The address the boot token is bound to (the hello must come from it); null: not bound. */
  bindIp: string | null;
  /** Which rule decided: for the log. */
  rule: 'dhcp-lease' | 'reserved-ip' | 'none';
  reason: string;
}

export function decideBootScriptAuth(i: BootScriptAuthInput): BootScriptAuthDecision {
  const known = [...new Set([...(i.reservedIp ? [i.reservedIp] : []), ...i.leasedIps])];
  if (i.dhcpLeases || i.mode === 'ip') {
    const rule = i.dhcpLeases ? 'dhcp-lease' : 'reserved-ip';
    if (known.includes(i.sourceIp)) {
      return { allow: true, bindIp: i.sourceIp, rule, reason: `${i.sourceIp} is the address ${i.dhcpLeases ? 'ironboot leased or reserved' : 'reserved'} for ${i.mac}` };
    }
    if (!known.length) {
      return {
        allow: false, bindIp: null, rule,
        reason: i.dhcpLeases
          ? `ironboot has no lease or reservation for ${i.mac}, so no address may fetch its provisioning script`
          : `${i.mac} has no reserved address to check ${i.sourceIp} against (ironboot machines set ${i.mac} --ip ADDR/PREFIX, or serve with --boot-script-auth none)`,
      };
    }
    return { allow: false, bindIp: null, rule, reason: `${i.sourceIp} is not the address of ${i.mac} (${known.join(', ')})` };
  }
  return { allow: true, bindIp: null, rule: 'none', reason: '--boot-script-auth none: served to any address' };
}
