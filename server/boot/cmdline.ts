/**
 * The kernel command line a provisioning boot gets (pure).
 *
 *   initrd=initramfs              UEFI: the EFI stub loads the initrd iPXE registered under that name (harmless on BIOS)
 *   console=tty0 console=ttyS0,…  the last console= is /dev/console, so the agent's output goes to the serial line
 *   ironboot.server/workflow/token/mac   what the agent needs to say hello (init/agent/cmdline.ts reads them)
 *   panic=N                       reboot N s after a kernel panic, so a failed boot retries instead of hanging
 *   …the workflow's kernelArgs last, so an operator can override any of the above (the kernel keeps the last value)
 */

export interface CmdlineInput {
  serverUrl: string;
  workflowId: string;
  token: string;
  mac: string;
  kernelArgs: string;
  initrdName: string;
  panicSeconds: number;
  /** console= values in order; the last becomes /dev/console. */
  consoles: string[];
}

export const DEFAULT_CONSOLES = ['tty0', 'ttyS0,115200'];

/** Control characters (newlines above all) would end the iPXE `kernel` line and start a new command. */
export const oneLine = (s: string): string => s.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();

export function kernelCmdline(c: CmdlineInput): string {
  const words = [
    `initrd=${c.initrdName}`,
    ...c.consoles.map((x) => `console=${x}`),
    `ironboot.server=${c.serverUrl}`,
    `ironboot.workflow=${c.workflowId}`,
    `ironboot.token=${c.token}`,
    `ironboot.mac=${c.mac}`,
    `panic=${c.panicSeconds}`,
  ];
  const extra = oneLine(c.kernelArgs);
  if (extra) words.push(extra);
  return words.map(oneLine).join(' ');
}

export interface PersistentCmdlineInput {
  serverUrl: string;
  workflowId: string;
  mac: string;
  /** The disk the workflow wrote (its target). */
  disk: string;
  kernelArgs: string;
  initrdName: string;
  panicSeconds: number;
  consoles: string[];
}

/**
 * The kernel command line of a persistent boot (a machine whose latest workflow is persistent and succeeded):
 * `ironboot.boot=persistent ironboot.disk=<target>` instead of a token. The credential is on the disk (the marker),
 * not here: a boot script can be fetched by anyone on the LAN.
 */
export function persistentCmdline(c: PersistentCmdlineInput): string {
  const words = [
    `initrd=${c.initrdName}`,
    ...c.consoles.map((x) => `console=${x}`),
    `ironboot.server=${c.serverUrl}`,
    `ironboot.workflow=${c.workflowId}`,
    'ironboot.boot=persistent',
    `ironboot.disk=${c.disk}`,
    `ironboot.mac=${c.mac}`,
    `panic=${c.panicSeconds}`,
  ];
  const extra = oneLine(c.kernelArgs);
  if (extra) words.push(extra);
  return words.map(oneLine).join(' ');
}
