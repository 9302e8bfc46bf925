/**
 * A real IPMI BMC for tests: OpenIPMI's ipmi_sim (Debian `openipmi`) serving IPMI v2.0 lanplus on a UDP port,
 * with a chassis-control program (ipmi_sim's `chassis_control`, see ipmi_lan(5) and OpenIPMI's
 * ipmi_sim_chassiscontrol) that really powers a QEMU process on and off: power on starts the machine's command,
 * power off stops it (SIGTERM, then SIGKILL), `get power` says whether it runs, and the boot device set over IPMI
 * (Set System Boot Options) picks QEMU's `-boot` order for the next power-on only (PXE: `n`, else `c`).
 * QEMU is wired back to ipmi_sim through `ipmi-bmc-extern` (the simulator's VM serial codec), as a BMC is
 * wired to its host. The simulator runs wherever `spawn` puts it (the caller's process or a lab namespace).
 */
import { spawn as spawnChild, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';

export const IPMI_SIM = '/usr/bin/ipmi_sim';

export function ipmiSimUnavailable(): string | false {
  if (!existsSync(IPMI_SIM)) return `${IPMI_SIM} is missing (apt-get install openipmi)`;
  if (spawnSync('sh', ['-c', 'command -v ipmitool'], { stdio: 'ignore' }).status !== 0) return 'ipmitool is missing (apt-get install ipmitool)';
  return false;
}

export interface IpmiSimOptions {
  dir: string;
  /** UDP port of the LAN channel (default 623). */
  port?: number;
  address?: string;
  /** TCP port where ipmi_sim waits for QEMU's ipmi-bmc-extern chardev. */
  vmPort: number;
  username: string;
  password: string;
  /** The machine: argv of its QEMU, without `-boot` (added per power-on) and without the BMC wiring (added here). */
  machine: string[];
  /** Run the simulator (and with it the machine) and ipmitool under this prefix, e.g. ['ip', 'netns', 'exec', NS]. */
  exec?: string[];
}

const sh = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

export class IpmiSim {
  readonly proc: ChildProcess;
  private out = '';
  readonly consoleLog: string;

  private constructor(readonly o: IpmiSimOptions, proc: ChildProcess) {
    this.proc = proc;
    this.consoleLog = join(o.dir, 'machine.console');
    proc.stdout?.on('data', (d) => { this.out += d; });
    proc.stderr?.on('data', (d) => { this.out += d; });
  }

  static async start(o: IpmiSimOptions): Promise<IpmiSim> {
    const { dir } = o;
    mkdirSync(join(dir, 'state'), { recursive: true });
    const port = o.port ?? 623;
    const qemu = [...o.machine,
      '-chardev', `socket,id=ipmi0,host=127.0.0.1,port=${o.vmPort},reconnect=2`,
      '-device', 'ipmi-bmc-extern,chardev=ipmi0,id=bmc0', '-device', 'isa-ipmi-kcs,bmc=bmc0'];
    writeFileSync(join(dir, 'machine.sh'), `#!/bin/sh\n# $1: QEMU boot order for this power-on\nexec ${qemu.map(sh).join(' ')} -boot order="$1"\n`);
    chmodSync(join(dir, 'machine.sh'), 0o755);
    // ipmi_sim runs this as: chassis <device> get power boot | chassis <device> set power 1 | set boot pxe | set reset 1
    writeFileSync(join(dir, 'chassis.sh'), `#!/bin/sh
dir=${sh(dir)}
shift; op=$1; shift
# one chassis operation at a time: two power-ons at once (a retry while the first still runs) would both start a
# machine, and the first would be lost to the pid file
exec 9>"$dir/chassis.lock"; flock 9
# alive and not a zombie (the machine is re-parented once this script exits; a zombie still answers kill -0)
alive() { [ -r "/proc/$1/stat" ] && read -r _ _ st _ < "/proc/$1/stat" && [ "$st" != Z ]; }
running() { [ -s "$dir/pid" ] && alive "$(cat "$dir/pid")"; }
start() {
  running && return 0
  order=c; [ "$(cat "$dir/boot" 2>/dev/null)" = pxe ] && order=n
  echo default > "$dir/boot"   # a boot device set over IPMI holds for the next boot only
  echo "$(date +%s.%N) power on, boot order $order" >> "$dir/power.log"
  setsid "$dir/machine.sh" "$order" >> "$dir/machine.console" 2>&1 < /dev/null 9>&- &   # (the lock is not the machine's)
  echo $! > "$dir/pid"
}
stop() {
  running || { rm -f "$dir/pid"; return 0; }
  pid=$(cat "$dir/pid"); echo "$(date +%s.%N) power off" >> "$dir/power.log"
  kill -TERM "$pid"; i=0
  while alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  alive "$pid" && kill -KILL "$pid"
  rm -f "$dir/pid"
}
case $op in
  get) for p in "$@"; do case $p in
         power) if running; then echo power:1; else echo power:0; fi ;;
         boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
         *) echo "Invalid parameter: $p"; exit 1 ;;
       esac; done ;;
  set) while [ $# -ge 2 ]; do p=$1; v=$2; shift 2; case $p in
         power) if [ "$v" = 1 ]; then start; else stop; fi ;;
         reset) stop; start ;;
         boot) echo "$v" > "$dir/boot" ;;
         shutdown|identify) ;;
         *) echo "Invalid parameter: $p"; exit 1 ;;
       esac; done ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
`);
    chmodSync(join(dir, 'chassis.sh'), 0o755);
    writeFileSync(join(dir, 'lan.conf'), `name "ironboot-test"
set_working_mc 0x20
  startlan 1
    addr ${o.address ?? '127.0.0.1'} ${port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid 49524f4e424f4f542d54455354424d43
  endlan
  serial 15 127.0.0.1 ${o.vmPort} codec VM
  chassis_control "${join(dir, 'chassis.sh')} 0x20"
  user 2 true "${o.username}" "${o.password}" admin 10 md5
`);
    writeFileSync(join(dir, 'sim.emu'), 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n');
    const args = ['-c', join(dir, 'lan.conf'), '-f', join(dir, 'sim.emu'), '-s', join(dir, 'state'), '-n'];
    const pre = o.exec ?? [];
    const proc = spawnChild(pre[0] ?? IPMI_SIM, [...pre.slice(1), ...(pre.length ? [IPMI_SIM] : []), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const sim = new IpmiSim(o, proc);
    // ready when ipmitool gets an answer over lanplus
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode !== null) throw new Error(`ipmi_sim exited with ${proc.exitCode}: ${sim.out}`);
      if (sim.ipmitool(['chassis', 'power', 'status']).status === 0) return sim;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`ipmi_sim did not answer on ${port}: ${sim.out}`);
  }

  /** The reference client, against the same simulator. */
  ipmitool(args: string[], password = this.o.password): { status: number | null; stdout: string; stderr: string } {
    const prefix = this.o.exec ?? [];
    const r = spawnSync(prefix[0] ?? 'ipmitool', [...prefix.slice(1), ...(prefix.length ? ['ipmitool'] : []), '-I', 'lanplus', '-C', '3', '-H', this.o.address ?? '127.0.0.1', '-p', String(this.o.port ?? 623),
      '-U', this.o.username, '-P', password, '-R', '1', '-N', '1', ...args], { encoding: 'utf8', timeout: 20_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** PID of the machine's QEMU while it is powered on. */
  machinePid(): number | null {
    try {
      const pid = Number(readFileSync(join(this.o.dir, 'pid'), 'utf8').trim());
      if (!pid) return null;
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return / Z /.test(st.slice(st.lastIndexOf(')'))) ? null : pid;
    } catch { return null; }
  }

  powerLog(): string {
    try { return readFileSync(join(this.o.dir, 'power.log'), 'utf8'); } catch { return ''; }
  }

  console(): string {
    try { return readFileSync(this.consoleLog, 'latin1'); } catch { return ''; }
  }

  output(): string { return this.out; }

  /**
   * Stops the simulator and the machine, by PID. The simulator goes first: while it runs, a power-on can arrive
   * (the daemon's retries, its power poll) and start a new machine after ours was stopped. A chassis script it
   * started may still be running (a power-on in flight): wait for those to end, then power off what is on.
   */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.pid) {
      const done = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
      if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
    }
    const chassis = join(this.o.dir, 'chassis.sh');
    const pattern = chassis.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    for (let i = 0; i < 100 && spawnSync('pgrep', ['-f', pattern]).status === 0; i++) await new Promise((r) => setTimeout(r, 100));
    const pre = this.o.exec ?? [];
    spawnSync(pre[0] ?? chassis, [...pre.slice(1), ...(pre.length ? [chassis] : []), '0x20', 'set', 'power', '0'], { timeout: 10_000 });
  }
}
