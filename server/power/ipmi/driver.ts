/** PowerDriver over IPMI v2.0 lanplus (client.ts), IpmiError mapped to PowerError. */
import { IpmiClient, type IpmiClientOptions } from './client.ts';
import { IpmiError } from './session.ts';
import { PowerError, type PowerDriver } from '../driver.ts';

export class IpmiPowerDriver implements PowerDriver {
  readonly protocol = 'ipmi' as const;
  private client: IpmiClient;

  constructor(target: { host: string; port: number }, creds: { username: string; password: string }, opts: IpmiClientOptions = {}) {
    this.client = new IpmiClient(target, creds, opts);
  }

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof IpmiError) throw new PowerError(err.kind, `IPMI: ${err.message}`);
      throw err;
    }
  }

  status() { return this.run(() => this.client.powerStatus()); }
  on() { return this.run(() => this.client.chassisControl('on')); }
  off() { return this.run(() => this.client.chassisControl('off')); }
  cycle() { return this.run(() => this.client.chassisControl('cycle')); }
  bootPxe(opts: { efi: boolean }) { return this.run(() => this.client.setBootPxe(opts)); }
}
