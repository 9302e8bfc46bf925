/**
 * One simulated machine, booting as a real one does, over real sockets from its own macvlan and address:
 *
 *   PXE ROM:  DHCP (PXEClient) → TFTP of the boot file (undionly.kpxe)
 *   iPXE:     DHCP (user class iPXE) → HTTP boot script → HTTP kernel + initramfs (one keep-alive connection)
 *   agent:    init/agent/main.ts's own server flow (runAgent) with the machine's steps: DHCP (udhcpc's
 *             request), hello (init/agent/steps/hello.ts), the disk over HTTP, hashed and checked against the
 *             workflow's compressedSha256 then discarded, and the agent's EventReporter for every event.
 *
 * Nothing is written: the kernel, initramfs and disk bytes are hashed and dropped. Each phase is timed.
 */
import { performance } from 'node:perf_hooks';
import { runAgent, type AgentSteps, type NetInfo } from '../../../init/agent/main.ts';
import { parseAgentConfig } from '../../../init/agent/cmdline.ts';
import { sayHello } from '../../../init/agent/steps/hello.ts';
import { EventReporter } from '../../../init/agent/reporter.ts';
import type { Console } from '../../../init/agent/sys.ts';
import { dhcpExchangeOffThread as dhcpExchange } from './dhcp.ts';
import { tftpFetch } from './tftp.ts';
import { httpGet, machineAgent, postJsonFrom } from './http.ts';

export interface MachineSpec { mac: string; ip: string; iface: string; prefix: number }

export const PHASES = ['dhcp-pxe', 'tftp', 'dhcp-ipxe', 'script', 'kernel', 'initrd', 'dhcp-agent', 'hello', 'disk', 'report'] as const;
export type Phase = typeof PHASES[number];

export interface MachineResult {
  mac: string;
  ok: boolean;
  error: string | null;
  /** [start, end] in ms since the herd's start (performance.now() based). */
  phases: Partial<Record<Phase, [number, number]>>;
  dhcpRetransmits: number;
  tftpRetransmits: number;
  tftpDuplicates: number;
  httpBytes: number;
  diskBytes: number;
  workflowId: string | null;
  serverState: string | null;
}

const hexhyp = (mac: string) => mac.replaceAll(':', '-');

/** iPXE's expansion of the settings a DHCP boot file or script may name. */
const expand = (s: string, mac: string) => s.replace(/\$\{(mac|net0\/mac)(:hexhyp)?\}/g, (_m, _k, hyp) => (hyp ? hexhyp(mac) : mac));

export async function bootMachine(m: MachineSpec, t0: number): Promise<MachineResult> {
  const r: MachineResult = {
    mac: m.mac, ok: false, error: null, phases: {}, dhcpRetransmits: 0, tftpRetransmits: 0, tftpDuplicates: 0,
    httpBytes: 0, diskBytes: 0, workflowId: null, serverState: null,
  };
  const timed = async <T>(p: Phase, fn: () => Promise<T>): Promise<T> => {
    const s = performance.now() - t0;
    try { return await fn(); } finally { r.phases[p] = [s, performance.now() - t0]; }
  };
  const consoleLines: string[] = [];
  const cons: Console = { say: (x) => { consoleLines.push(x); if (consoleLines.length > 20) consoleLines.shift(); }, warn: (x) => { consoleLines.push(`WARN ${x}`); } };
  try {
    // PXE ROM
    const pxe = await timed('dhcp-pxe', () => dhcpExchange(m.iface, m.mac, 'pxe'));
    r.dhcpRetransmits += pxe.retransmits;
    if (pxe.yiaddr !== m.ip) throw new Error(`PXE DHCP gave ${pxe.yiaddr}, the reservation is ${m.ip}`);
    if (!pxe.file) throw new Error('PXE DHCP answer without a boot file');
    const tftp = await timed('tftp', () => tftpFetch(m.ip, pxe.siaddr !== '0.0.0.0' ? pxe.siaddr : pxe.serverId, pxe.file));
    r.tftpRetransmits += tftp.retransmits; r.tftpDuplicates += tftp.duplicates;
    // iPXE
    const ipxe = await timed('dhcp-ipxe', () => dhcpExchange(m.iface, m.mac, 'ipxe'));
    r.dhcpRetransmits += ipxe.retransmits;
    if (!/^https?:\/\//.test(ipxe.file)) throw new Error(`iPXE DHCP answer without an HTTP boot script: "${ipxe.file}"`);
    const ipxeHttp = machineAgent(m.ip, true);
    let cmdline = '';
    try {
      const script = await timed('script', () => httpGet(expand(ipxe.file, m.mac), ipxeHttp, { keep: true }));
      if (script.status !== 200) throw new Error(`boot script: HTTP ${script.status}`);
      const text = script.body!.toString();
      const kernel = /^\s*kernel\s+(\S+)\s*(.*)$/m.exec(text);
      const initrd = /^\s*initrd\s+(\S+)/m.exec(text);
      if (!kernel || !initrd) throw new Error(`boot script has no kernel/initrd line:\n${text.slice(0, 400)}`);
      cmdline = expand(kernel[2], m.mac);
      for (const [p, url] of [['kernel', kernel[1]], ['initrd', initrd[1]]] as const) {
        const g = await timed(p, () => httpGet(expand(url, m.mac), ipxeHttp));
        if (g.status !== 200) throw new Error(`${p} ${url}: HTTP ${g.status}`);
        r.httpBytes += g.bytes;
      }
    } finally { ipxeHttp.destroy(); }
    // the agent
    const cfg = parseAgentConfig(cmdline);
    if (cfg.mode !== 'server') throw new Error(`the kernel command line does not start the server flow: ${cmdline}`);
    r.workflowId = cfg.workflowId;
    const http = machineAgent(m.ip, true);
    const post = postJsonFrom(http);
    const reporter = new EventReporter({ server: cfg.server!, workflowId: cfg.workflowId!, token: () => cfg.token!, console: cons, post }); // hello swaps the boot token for the session token
    const finalAck = reporter.final.bind(reporter);
    reporter.final = (e, o) => timed('report', () => finalAck(e, o));
    const steps: AgentSteps = {
      mounts: async () => {}, drivers: async () => {},
      net: () => timed('dhcp-agent', async (): Promise<NetInfo> => {
        const l = await dhcpExchange(m.iface, m.mac, 'udhcpc');
        r.dhcpRetransmits += l.retransmits;
        if (l.yiaddr !== m.ip) throw new Error(`agent DHCP gave ${l.yiaddr}, the reservation is ${m.ip}`);
        return { iface: m.iface, mac: m.mac, ip: l.yiaddr, prefix: m.prefix, router: null, dns: [], hostname: null, domain: null };
      }),
      hello: (c, net) => timed('hello', () => sayHello(c, net, cons.say, { post, inventory: { cpus: { count: 2 }, memoryBytes: 1 << 30, firmware: 'bios' } })),
      stream: (spec, _c, hooks) => timed('disk', async () => {
        const { compressedSize: size, compressedSha256: want, rawSize } = spec.image;
        const g = await httpGet(spec.image.url, http, { token: cfg.token!, onData: (n) => hooks.progress(Math.floor((n / size) * rawSize), rawSize) });
        if (g.status !== 200) throw new Error(`GET ${spec.image.url}: HTTP ${g.status}`);
        hooks.verifying();
        if (g.bytes !== size || g.sha256 !== want) throw new Error(`disk stream: ${g.bytes} bytes sha256 ${g.sha256}, the workflow says ${size} bytes ${want}`);
        r.diskBytes += g.bytes; r.httpBytes += g.bytes;
        return { device: '/dev/vda' };
      }),
      rootDevice: async () => { throw new Error('no seed flow in the herd'); },
      mount: async () => ({ fsType: 'ext4' }),
      run: async (_spec, onLine) => { onLine({ stream: 'stdout', line: `herd machine ${m.mac} up` }); return 0; },
      after: async () => {},
    };
    const out = await runAgent({ cfg, steps, reporter, console: cons });
    http.destroy();
    r.serverState = reporter.serverState;
    if (!out.ok) throw new Error(`agent flow failed in ${out.step}: ${out.reason}`);
    r.ok = true;
  } catch (e) {
    r.error = `${(e as Error).message}${consoleLines.length ? `\n  console: ${consoleLines.slice(-5).join(' | ')}` : ''}`;
  }
  return r;
}
