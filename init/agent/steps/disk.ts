/**
 * Step 5 around the streaming writer: where the disk goes (a block device, a /dev/disk/by-… name, `ram`),
 * zeroing what the writer skips on a block device, and growing the filesystem to the disk afterwards.
 */
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import type { WorkflowSpec } from '../../../server/agent/api.ts';
import type { AgentConfig } from '../cmdline.ts';
import type { StreamHooks } from '../main.ts';
import { bb, mustRun, run, PATHS, sleep } from '../sys.ts';
import { streamDisk } from './stream.ts';

const read = (p: string) => readFile(p, 'utf8').then((s) => s.trim()).catch(() => '');
const clean = (s: string) => s.trim().replace(/\s+/g, '_');

/** The names udev would give a disk under /dev/disk/by-id (the common cases; no udev in the initramfs). */
export async function diskIds(name: string, sysRoot = '/sys'): Promise<string[]> {
  const b = `${sysRoot}/block/${name}`;
  const model = clean(await read(`${b}/device/model`));
  const serial = clean((await read(`${b}/device/serial`)) || (await read(`${b}/serial`)));
  const wwid = await read(`${b}/device/wwid`) || await read(`${b}/wwid`);
  const ids: string[] = [];
  if (name.startsWith('vd') && serial) ids.push(`virtio-${serial}`);
  if (name.startsWith('nvme') && model && serial) ids.push(`nvme-${model}_${serial}`);
  if (name.startsWith('sd')) {
    const vendor = clean(await read(`${b}/device/vendor`));
    if (vendor === 'ATA' && model) ids.push(`ata-${model}${serial ? `_${serial}` : ''}`);
    else if (wwid) ids.push(`scsi-${wwid.replace(/^naa\./, '3')}`);
  }
  if (/^(naa\.|eui\.)/.test(wwid)) ids.push(`wwn-0x${wwid.slice(4)}`);
  return ids;
}

/** Resolves a target to a device path; waits for late disks (AHCI/SCSI appear asynchronously). */
export async function resolveBlockTarget(target: string, timeoutMs = 30_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await stat(target).then((s) => s.isBlockDevice()).catch(() => false)) return target;
    const m = /^\/dev\/disk\/by-(id|uuid|label|partuuid|partlabel)\/(.+)$/.exec(target);
    if (m && (m[1] === 'uuid' || m[1] === 'label')) {
      const r = await bb('findfs', [`${m[1].toUpperCase()}=${m[2]}`]);
      if (r.code === 0 && r.stdout.trim()) return r.stdout.trim();
    } else if (m && m[1] === 'id') {
      for (const name of await readdir('/sys/block').catch(() => [] as string[])) {
        if ((await diskIds(name)).includes(m[2])) return `/dev/${name}`;
      }
    } else if (/^(LABEL|UUID)=/.test(target)) {
      const r = await bb('findfs', [target]);
      if (r.code === 0 && r.stdout.trim()) return r.stdout.trim();
    }
    if (Date.now() > end) {
      const have = (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => !/^(loop|ram)/.test(n));
      throw new Error(`target ${target} not found within ${timeoutMs / 1000} s (block devices: ${have.join(', ') || 'none'})`);
    }
    await bb('modprobe', ['-q', 'sd_mod']);
    await sleep(250);
  }
}

/** BLKZEROOUT over [0, length) (util-linux blkdiscard -z), so the blocks the writer skips read as zeros. */
export async function zeroOut(device: string, length: number): Promise<void> {
  const len = Math.ceil(length / 4096) * 4096;
  await mustRun(PATHS.blkdiscard, ['-z', '-o', '0', '-l', String(len), device]);
}

export async function streamToTarget(spec: WorkflowSpec, cfg: AgentConfig, hooks: StreamHooks, say: (m: string) => void): Promise<{ device: string }> {
  const img = spec.image;
  const url = img.url.startsWith('/') ? `${cfg.server}${img.url}` : img.url;
  let target: string;
  let isRam = false;
  if (spec.target === 'ram') {
    isRam = true;
    await mkdir(PATHS.ramDir, { recursive: true });
    const size = Math.ceil(img.rawSize / (1 << 20)) + 16;
    await mustRun(PATHS.busybox, ['mount', '-t', 'tmpfs', '-o', `size=${size}m,mode=0700`, 'ironboot-ram', PATHS.ramDir]);
    target = `${PATHS.ramDir}/disk.img`;
  } else {
    target = await resolveBlockTarget(spec.target);
    if (target !== spec.target) say(`target ${spec.target} is ${target}`);
  }
  const t0 = Date.now();
  const r = await streamDisk({
    url, rawSize: img.rawSize, rawSha256: img.rawSha256, target, zstd: PATHS.zstd,
    headers: cfg.token ? { authorization: `Bearer ${cfg.token}` } : {},
    onProgress: hooks.progress, onVerifying: hooks.verifying,
    zeroRange: cfg.zeroout ? async (dev, len) => {
      const tz = Date.now();
      await zeroOut(dev, len);
      say(`zeroed ${len} bytes of ${dev} (BLKZEROOUT) in ${((Date.now() - tz) / 1000).toFixed(2)} s so skipped blocks read as zeros`);
    } : undefined,
    log: say,
  });
  const s = (Date.now() - t0) / 1000;
  say(`streamed ${r.compressedBytes} → ${r.rawBytes} bytes in ${s.toFixed(1)} s (${(r.rawBytes / 1e6 / Math.max(s, 0.001)).toFixed(1)} MB/s), ` +
    `${r.bytesSkipped} zero bytes skipped, ${r.resumes} resume(s); sha256 ok`);
  if (!isRam && /^ext[234]$/.test(img.format)) {
    const g = await run(PATHS.resize2fs, [target]);
    if (g.code === 0) say(`resize2fs: grew the filesystem to ${target}`);
    else say(`resize2fs did not grow the filesystem (carrying on): ${(g.stderr || g.stdout).trim().split('\n').pop()}`);
  }
  return { device: target };
}
