/**
 * Step 5 around the streaming writer: where the disk goes (a block device, a /dev/disk/by-… name, `ram`),
 * zeroing what the writer skips on a block device, and growing the filesystem to the disk afterwards.
 */
import { mkdir, open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { WorkflowSpec } from '../../../server/agent/api.ts';
import type { AgentConfig } from '../cmdline.ts';
import type { StreamHooks } from '../main.ts';
import { bb, mustRun, run, PATHS, sleep } from '../sys.ts';
import { blockDeviceSize, streamDisk } from './stream.ts';
import { Value } from '@sinclair/typebox/value';
import { ChunkManifest } from '../../../server/agent/api.ts';
import { postJson } from '../reporter.ts';
import { fetchBufferWith, fetchChunks, HeldChunks, keepChunksCap, newStats, PEER_CONNECT_TIMEOUT_MS, servePeers, type ChunkFetchStats, type PeerServer } from './peers.ts';

/** The chunks this agent serves to peers, for as long as it runs (the entrypoint keeps it running). */
const served = new Map<string, HeldChunks>();
let peerServer: Promise<PeerServer | null> | null = null;

/**
 * Peer-to-peer fetching when the server offers it (spec.image.chunksUrl): the chunk source for streamDisk, or
 * null for the whole-file path (no manifest, or it could not be read).
 */
async function peerChunks(spec: WorkflowSpec, cfg: AgentConfig, url: string, say: (m: string) => void, stats: ChunkFetchStats): Promise<AsyncIterable<Buffer> | null> {
  const img = spec.image;
  if (!img.chunksUrl || !cfg.token || !cfg.server) return null;
  const fetch = fetchBufferWith();
  const murl = img.chunksUrl.startsWith('/') ? `${cfg.server}${img.chunksUrl}` : img.chunksUrl;
  let manifest: ChunkManifest;
  try {
    const r = await fetch(murl, { authorization: `Bearer ${cfg.token}` }, 120_000, 16 << 20);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    const m = JSON.parse(r.body.toString());
    if (!Value.Check(ChunkManifest, m)) throw new Error('not a chunk manifest');
    if (m.file !== img.compressedSha256 || m.size !== img.compressedSize) throw new Error(`the manifest is of ${m.file} (${m.size} bytes), not of the workflow's file`);
    manifest = m;
  } catch (e) {
    say(`no chunk manifest (${(e as Error).message}); fetching the whole file from the server`);
    return null;
  }
  // serve what we fetch only when it fits well in memory; otherwise fetch from peers but serve nobody
  let hold: { chunks: HeldChunks; port: number } | undefined;
  const cap = keepChunksCap();
  if (manifest.size <= cap) {
    peerServer ??= servePeers(served, { port: manifest.port, log: say }).catch((e: Error) => { say(`cannot serve chunks to peers on port ${manifest.port}: ${e.message}`); return null; });
    const ps = await peerServer;
    if (ps) {
      const chunks = new HeldChunks(manifest);
      served.set(manifest.file, chunks);
      hold = { chunks, port: ps.port };
    }
  } else {
    say(`the disk (${manifest.size} bytes) is over what this machine keeps to serve peers (${cap} bytes); fetching without serving`);
  }
  say(`fetching ${manifest.chunks.length} chunks of ${manifest.chunkSize} bytes from peers or the server${hold ? `; serving them on port ${hold.port}` : ''}`);
  return fetchChunks({
    manifest, fileUrl: url, server: cfg.server, token: cfg.token, fetch, fetchPeer: fetchBufferWith({ connectTimeoutMs: PEER_CONNECT_TIMEOUT_MS }),
    post: postJson, hold, log: say,
  }, stats);
}

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

/** How much of the start of a disk the signature check reads (btrfs keeps its superblock at 64 KiB). */
export const SIGNATURE_BYTES = 128 << 10;

/**
 * What the first bytes of a disk say it already holds: a partition table or a filesystem/volume signature
 * (the common ones blkid knows), or null for a disk that looks blank (pure).
 */
export function diskSignature(b: Buffer): string | null {
  const at = (off: number, magic: string | Buffer) => {
    const m = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : magic;
    return b.length >= off + m.length && b.subarray(off, off + m.length).equals(m);
  };
  if (at(512, 'EFI PART') || at(4096, 'EFI PART')) return 'a GPT partition table';
  if (at(0, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]))) return 'a LUKS encrypted volume';
  if (at(0, 'XFSB')) return 'an XFS filesystem';
  if (at(1080, Buffer.from([0x53, 0xef]))) return 'an ext2/3/4 filesystem';
  if (at(65600, '_BHRfS_M')) return 'a btrfs filesystem';
  if (at(3, 'NTFS    ')) return 'an NTFS filesystem';
  if (at(512, 'LABELONE') || at(1024, 'LABELONE')) return 'an LVM physical volume';
  if (at(4086, 'SWAPSPACE2') || at(4086, 'SWAP-SPACE')) return 'a swap area';
  if (at(0, Buffer.from([0xfc, 0x4e, 0x2b, 0xa9])) || at(4096, Buffer.from([0xfc, 0x4e, 0x2b, 0xa9]))) return 'an MD RAID member';
  if (at(32769, 'CD001')) return 'an ISO 9660 filesystem';
  if (at(510, Buffer.from([0x55, 0xaa]))) {
    if (at(54, 'FAT') || at(82, 'FAT32')) return 'a FAT filesystem';
    for (let i = 0; i < 4; i++) if (b[446 + 16 * i + 4] !== 0) return 'an MBR (DOS) partition table';
  }
  return null;
}

/**
 * A whole-disk ext filesystem that ironboot's image builder wrote (volume label "ironboot", no partition table):
 * a previous container disk, which a new workflow replaces without `wipe: true`, as re-provisioning does.
 */
export function isIronbootDisk(head: Buffer): boolean {
  if (head.length < 1160 || head.readUInt16LE(1080) !== 0xef53) return false;
  if (head.subarray(512, 520).toString('latin1') === 'EFI PART') return false;
  const label = head.subarray(1024 + 120, 1024 + 136);
  const end = label.indexOf(0);
  return label.subarray(0, end < 0 ? 16 : end).toString('latin1') === 'ironboot';
}

/** The GPT partition names ironboot's bootable disks carry (server/images/bootable.ts PART_NAMES). */
export const IRONBOOT_GPT_NAMES = ['ironboot-bios', 'ironboot-esp', 'ironboot-root'];

/**
 * A GPT that ironboot's bootable-disk builder wrote (an installed machine, mode install): its first three partition
 * entries are named ironboot-bios, ironboot-esp, ironboot-root. A reinstall replaces it without `wipe: true` (pure).
 */
export function isIronbootGpt(head: Buffer): boolean {
  if (head.length < 1024 || head.subarray(512, 520).toString('latin1') !== 'EFI PART') return false;
  const entriesLba = Number(head.readBigUInt64LE(512 + 72));
  const entrySize = head.readUInt32LE(512 + 84);
  if (entrySize < 128 || entrySize > 4096) return false;
  return IRONBOOT_GPT_NAMES.every((name, i) => {
    const at = entriesLba * 512 + i * entrySize + 56;
    if (at + 72 > head.length) return false;
    const raw = head.subarray(at, at + 72).toString('utf16le');
    const end = raw.indexOf('\0');
    return (end < 0 ? raw : raw.slice(0, end)) === name;
  });
}

export class TargetRefused extends Error {
  constructor(message: string) { super(message); this.name = 'TargetRefused'; }
}

/**
 * Checks a block target before anything is written: its serial and size when the workflow names them, and that
 * it holds no partition table or filesystem unless the workflow says `wipe: true` (a previous ironboot container
 * disk, isIronbootDisk, is replaced without it). Throws TargetRefused with
 * the reason (the agent reports it as the workflow's failure).
 */
export async function checkTarget(device: string, want: { wipe?: boolean; serial?: string; size?: number; minSize?: number }, sysRoot = '/sys'): Promise<void> {
  const name = basename(await realpath(device).catch(() => device));
  if (want.serial !== undefined) {
    const b = `${sysRoot}/class/block/${name}`;
    const serial = (await read(`${b}/device/serial`)) || (await read(`${b}/serial`));
    if (serial.trim() !== want.serial) {
      throw new TargetRefused(`target ${device} has serial "${serial || 'none'}", but the workflow wants "${want.serial}"; nothing was written`);
    }
  }
  const fh = await open(device, 'r');
  try {
    if (want.size !== undefined || want.minSize !== undefined) {
      const sectors = Number(await read(`${sysRoot}/class/block/${name}/size`));
      const size = sectors > 0 ? sectors * 512 : (await fh.stat()).size;
      if (want.size !== undefined && size !== want.size) throw new TargetRefused(`target ${device} is ${size} bytes, but the workflow wants ${want.size}; nothing was written`);
      if (want.minSize !== undefined && size < want.minSize) {
        throw new TargetRefused(`target ${device} is ${size} bytes, smaller than the disk image (${want.minSize} bytes); nothing was written`);
      }
    }
    if (!want.wipe) {
      const buf = Buffer.alloc(SIGNATURE_BYTES);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const head = buf.subarray(0, bytesRead);
      const found = diskSignature(head);
      if (found && !isIronbootDisk(head) && !isIronbootGpt(head)) {
        throw new TargetRefused(`target ${device} already holds ${found}; refusing to overwrite it (nothing was written). ` +
          'If this disk may be erased, create the workflow with wipe: true (ironboot workflows create --wipe)');
      }
    }
  } finally {
    await fh.close();
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
    await checkTarget(target, { wipe: spec.wipe, serial: spec.targetSerial, size: spec.targetSize, minSize: img.rawSize });
    say(`target ${target}: ${await blockDeviceSize(target)} bytes, the ${spec.mode === 'install' ? 'bootable disk' : 'disk image'} needs ${img.rawSize}`);
    say(spec.wipe ? `target ${target}: checked; wipe allowed` : `target ${target}: no partition table or filesystem found; writing`);
  }
  const t0 = Date.now();
  const p2p = newStats();
  const chunks = await peerChunks(spec, cfg, url, say, p2p);
  const r = await streamDisk({
    chunks: chunks ?? undefined,
    url, rawSize: img.rawSize, rawSha256: img.rawSha256, compressedSha256: img.compressedSha256, compressedSize: img.compressedSize,
    target, zstd: PATHS.zstd,
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
    `${r.resumes} resume(s); sha256 ok (${r.verifiedOver === 'compressed' ? 'of the compressed stream' : 'of the written disk'})`);
  if (chunks) {
    say(`chunks: ${p2p.fromPeers} from peers (${p2p.peerBytes} bytes), ${p2p.fromServer} from the server (${p2p.serverBytes} bytes)` +
      `${p2p.badPeers.length ? `; ${p2p.badPeers.length} refused from peers (${p2p.badPeers.map((b) => `${b.peer} chunk ${b.chunk}: ${b.reason}`).slice(0, 5).join(', ')})` : ''}`);
  }
  if (!isRam && /^ext[234]$/.test(img.format)) {
    const g = await run(PATHS.resize2fs, [target]);
    if (g.code === 0) say(`resize2fs: grew the filesystem to ${target}`);
    else say(`resize2fs did not grow the filesystem (carrying on): ${(g.stderr || g.stdout).trim().split('\n').pop()}`);
  }
  return { device: target };
}
