/**
 * One QEMU machine for tests (KVM when it boots the kernel here, else software emulation: `-accel tcg -cpu max -smp 1`), optionally inside a
 * network namespace (a `-netdev tap` is looked up by name in the caller's namespace). The serial console
 * goes to a file and to memory; `waitFor(regex)` watches it. The VM always runs under `timeout`, and
 * `kill()` stops it by PID (SIGTERM to `timeout`, which forwards it to QEMU; SIGKILL after 3 s).
 *
 *   const vm = startVm({ kernel, initrd, append: 'console=ttyS0 …', disks: [{ file, bus: 'ahci' }], serialLog });
 *   t.after(() => vm.kill());
 *   await vm.waitFor(/hello/, 60_000);
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { accelArgs, chooseAccel, describeAccel, type Accel } from '../../server/lab/accel.ts';

export interface VmDisk { file: string; bus: 'virtio' | 'ahci' | 'scsi'; format?: 'raw' | 'qcow2'; serial?: string }
export interface VmNic { tap: string; mac: string; model?: string }

export interface VmOptions {
  kernel: string;
  initrd: string;
  append: string;
  disks?: VmDisk[];
  nics?: VmNic[];
  memMb?: number;
  /** Run inside this network namespace (needed for tap NICs created there). */
  netns?: string;
  serialLog: string;
  /** Hard limit for the whole run (default 300 s). */
  timeoutSec?: number;
  extraArgs?: string[];
  /** Default: chooseAccel() for this kernel (KVM when it boots here, else TCG), printed once per test process. */
  accel?: Accel;
}

export function qemuArgs(o: VmOptions): string[] {
  const a = [...accelArgs(o.accel ?? 'tcg'), '-smp', '1', '-m', String(o.memMb ?? 1024), '-nographic', '-no-reboot',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append];
  (o.disks ?? []).forEach((d, i) => {
    const drive = `file=${d.file},format=${d.format ?? 'raw'},if=none,id=d${i}`;
    const serial = d.serial ? `,serial=${d.serial}` : '';
    if (d.bus === 'virtio') a.push('-drive', drive, '-device', `virtio-blk-pci,drive=d${i}${serial}`);
    else if (d.bus === 'ahci') a.push('-drive', drive, '-device', `ahci,id=ahci${i}`, '-device', `ide-hd,drive=d${i},bus=ahci${i}.0${serial}`);
    else a.push('-drive', drive, '-device', `virtio-scsi-pci,id=scsi${i}`, '-device', `scsi-hd,drive=d${i},bus=scsi${i}.0${serial}`);
  });
  if (!(o.nics ?? []).length) a.push('-nic', 'none');
  (o.nics ?? []).forEach((n, i) => {
    a.push('-netdev', `tap,id=n${i},ifname=${n.tap},script=no,downscript=no`, '-device', `${n.model ?? 'virtio-net-pci'},netdev=n${i},mac=${n.mac},romfile=`);
  });
  return [...a, ...(o.extraArgs ?? [])];
}

export class Vm {
  private buf = '';
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  private log: WriteStream;
  readonly exited: Promise<number | null>;
  readonly startedAt = Date.now();

  constructor(readonly proc: ChildProcess, serialLog: string) {
    this.log = createWriteStream(serialLog);
    const onData = (d: Buffer) => {
      this.log.write(d);
      this.buf += d.toString('utf8');
      for (const w of [...this.waiters]) {
        const m = this.buf.match(w.re);
        if (m) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(m); }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => proc.on('close', (code) => { this.log.end(); resolve(code); }));
  }

  get pid(): number | undefined { return this.proc.pid; }

  /** Everything the console printed so far. */
  get output(): string { return this.buf; }

  /** Resolves with the first match of `re` on the console (also if it already appeared). */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const m = this.buf.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (x: RegExpMatchArray) => { clearTimeout(timer); resolve(x); } };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        const tail = this.buf.split('\n').slice(-25).join('\n');
        reject(new Error(`no ${re} on the console within ${timeoutMs / 1000} s; last lines:\n${tail}`));
      }, timeoutMs);
      this.exited.then(() => setTimeout(() => {
        if (this.waiters.includes(w)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          clearTimeout(timer);
          reject(new Error(`QEMU exited before ${re} appeared; last lines:\n${this.buf.split('\n').slice(-25).join('\n')}`));
        }
      }, 50));
      this.waiters.push(w);
    });
  }

  /** Stops the VM by PID (idempotent). */
  async kill(): Promise<void> {
    const p = this.proc;
    if (p.exitCode !== null || p.signalCode !== null || !p.pid) return;
    try { process.kill(p.pid, 'SIGTERM'); } catch { return; }
    const t = setTimeout(() => { try { process.kill(p.pid!, 'SIGKILL'); } catch { /* gone */ } }, 3000);
    await this.exited;
    clearTimeout(t);
  }
}

const told = new Set<string>();
/** The accelerator for VMs booting `kernel` (server/lab/accel.ts), said once per test process. */
export function testAccel(kernel: string): Accel {
  const c = chooseAccel(kernel);
  const line = describeAccel(c);
  if (!told.has(line)) { told.add(line); process.stderr.write(`# ${line}\n`); }
  return c.accel;
}

export function startVm(o: VmOptions): Vm {
  const qemu = ['timeout', String(o.timeoutSec ?? 300), 'qemu-system-x86_64', ...qemuArgs({ ...o, accel: o.accel ?? testAccel(o.kernel) })];
  const cmd = o.netns ? ['ip', 'netns', 'exec', o.netns, ...qemu] : qemu;
  const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Vm(proc, o.serialLog);
}
