/** Reading a built ext4 image without mounting it: debugfs -R and e2fsck -fn. */
import { spawnSync } from 'node:child_process';

/** A debugfs argument: double quotes, "" for a literal quote. */
const q = (p: string) => `"${p.replaceAll('"', '""')}"`;

export interface DiskStat {
  type: string; mode: number; uid: number; gid: number; links: number; size: number;
  devMajor?: number; devMinor?: number; mtime?: number;
}

export function debugfs(image: string, cmd: string): string {
  const r = spawnSync('debugfs', ['-R', cmd, image], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`debugfs -R ${cmd}: exit ${r.status}: ${r.stderr}`);
  const err = r.stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (err.length) throw new Error(`debugfs -R ${cmd}: ${err.join(' / ')}`);
  return r.stdout;
}

export function stat(image: string, path: string): DiskStat {
  const out = debugfs(image, `stat ${q(path)}`);
  const m = (re: RegExp) => { const x = re.exec(out); if (!x) throw new Error(`stat ${path}: no ${re} in\n${out}`); return x; };
  const s: DiskStat = {
    type: m(/Type:\s+(\S+)/)[1], mode: parseInt(m(/Mode:\s+(\d+)/)[1], 8), uid: Number(m(/User:\s+(\d+)/)[1]),
    gid: Number(m(/Group:\s+(\d+)/)[1]), links: Number(m(/Links:\s+(\d+)/)[1]), size: Number(m(/Size:\s+(\d+)/)[1]),
  };
  const dev = /Device major\/minor number:\s+(\d+):(\d+)/.exec(out);
  if (dev) { s.devMajor = Number(dev[1]); s.devMinor = Number(dev[2]); }
  const mt = /mtime:\s+0x([0-9a-f]+)/.exec(out);
  if (mt) s.mtime = parseInt(mt[1], 16);
  return s;
}

/** Names in a directory (without . and ..). */
export function ls(image: string, dir: string): string[] {
  return debugfs(image, `ls -p ${q(dir)}`).split('\n').filter((l) => l.startsWith('/')).map((l) => l.split('/')[5]).filter((n) => n && n !== '.' && n !== '..');
}

export function exists(image: string, path: string): boolean {
  const r = spawnSync('debugfs', ['-R', `stat ${q(path)}`, image], { encoding: 'utf8' });
  return !/File not found/.test(r.stderr);
}

export function cat(image: string, path: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `cat ${q(path)}`, image], { maxBuffer: 1 << 28 });
  return r.stdout;
}

/** Extended attributes as debugfs prints them: name → raw bytes. */
export function xattrs(image: string, path: string): Map<string, Buffer> {
  const out = debugfs(image, `ea_list ${q(path)}`);
  const res = new Map<string, Buffer>();
  for (const line of out.split('\n')) {
    const m = /^\s+(\S+) \((\d+)\)(?: = (.*))?$/.exec(line);
    if (!m) continue;
    const v = m[3] ?? '';
    if (v.startsWith('"')) res.set(m[1], Buffer.from(JSON.parse(v) as string, 'latin1'));
    else res.set(m[1], Buffer.from(v.trim().split(/\s+/).filter(Boolean).map((h) => parseInt(h, 16))));
  }
  return res;
}

export function readlink(image: string, path: string): string {
  const out = debugfs(image, `stat ${q(path)}`);
  const m = /Fast link dest:\s+"(.*)"/.exec(out);
  if (m) return m[1];
  return cat(image, path).toString();
}

export function fsck(image: string): { ok: boolean; output: string } {
  const r = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  return { ok: r.status === 0, output: r.stdout + r.stderr };
}
