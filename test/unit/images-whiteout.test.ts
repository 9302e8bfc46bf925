/**
 * OCI whiteouts exactly as the image-spec (and umoci, the reference unpacker) apply them: a whiteout hides only the
 * lower layers' entries, never one of its own layer, whatever order the layer's tar holds them in.
 *
 * Each case is a lower layer and an upper layer whose whiteout is put at every position among the entries that
 * (re)add things (those keep their natural parent-before-child order). For every order the image is built by
 * ironboot (flattener + ext4 writer, read back with debugfs) and unpacked by `umoci unpack`, and the two trees must
 * be equal: paths, types, modes, owners, contents, symlink targets, devices and which paths share an inode.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Flattener } from '../../server/images/flatten.ts';
import { DiskBuilder } from '../../server/images/disk.ts';
import { buildImage, makeTar, writeOciLayout, type TarSpec } from '../helpers/images-oci.ts';
import { cat, debugfs, readlink } from '../helpers/images-disk.ts';

const missing = ['umoci', 'debugfs', 'zstd'].filter((c) => spawnSync(c, ['--version']).error && spawnSync(c, ['-V']).error);
const skip = missing.length ? `missing: ${missing.join(', ')} (deploy/setup.sh installs them)`
  : process.geteuid?.() !== 0 ? 'umoci unpack needs root to keep owners and make device nodes' : false;

const work = mkdtempSync(join(tmpdir(), 'ibi-wh-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;

interface Node { type: string; mode: number; uid: number; gid: number; sha?: string; target?: string; dev?: string }
interface Tree { nodes: Record<string, Node>; links: string[][] }

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex').slice(0, 16);
const TYPE_BITS: Record<number, string> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink', 0o020000: 'chardev', 0o060000: 'blockdev', 0o010000: 'fifo' };

/** Paths that share an inode, as sorted groups (only inodes with more than one path). */
function linkGroups(byIno: Map<number, string[]>): string[][] {
  return [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort((a, b) => a[0].localeCompare(b[0]));
}

/** umoci's rootfs, walked with lstat. */
function umociTree(root: string): Tree {
  const nodes: Record<string, Node> = {};
  const byIno = new Map<number, string[]>();
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    const s = lstatSync(abs);
    const type = TYPE_BITS[s.mode & 0o170000];
    const node: Node = { type, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid };
    if (type === 'file') { node.sha = sha(readFileSync(abs)); byIno.set(s.ino, [...(byIno.get(s.ino) ?? []), `/${rel}`]); }
    if (type === 'symlink') { node.target = readlinkSync(abs); delete (node as Partial<Node>).mode; }
    if (type === 'chardev' || type === 'blockdev') node.dev = `${Math.floor(s.rdev / 256) & 0xfff}:${(s.rdev & 0xff) | ((s.rdev >> 12) & 0xfff00)}`;
    nodes[`/${rel}`] = node;
    if (type === 'dir') for (const k of readdirSync(abs).sort()) walk(rel ? `${rel}/${k}` : k);
  };
  walk('');
  return { nodes, links: linkGroups(byIno) };
}

/** ironboot's ext4 image, walked with debugfs (`ls -p` per directory: inode, mode, owner; cat, stat for the rest). */
function diskTree(img: string): Tree {
  const nodes: Record<string, Node> = {};
  const byIno = new Map<number, string[]>();
  const walk = (dir: string) => {
    for (const line of debugfs(img, `ls -p "${dir}"`).split('\n')) {
      const f = line.split('/');
      if (f.length < 7 || !f[5] || f[5] === '.' || f[5] === '..') continue;
      const p = dir === '/' ? `/${f[5]}` : `${dir}/${f[5]}`;
      if (p === '/lost+found') continue;
      const mode = parseInt(f[2], 8);
      const type = TYPE_BITS[mode & 0o170000];
      const node: Node = { type, mode: mode & 0o7777, uid: Number(f[3]), gid: Number(f[4]) };
      if (type === 'file') { node.sha = sha(cat(img, p)); byIno.set(Number(f[1]), [...(byIno.get(Number(f[1])) ?? []), p]); }
      if (type === 'symlink') { node.target = readlink(img, p); delete (node as Partial<Node>).mode; }
      if (type === 'chardev' || type === 'blockdev') {
        const m = /Device major\/minor number:\s+(\d+):(\d+)/.exec(debugfs(img, `stat "${p}"`))!;
        node.dev = `${Number(m[1])}:${Number(m[2])}`;
      }
      nodes[p] = node;
      if (type === 'dir') walk(p);
    }
  };
  const root = /Mode:\s+(\d+)/.exec(debugfs(img, 'stat /'))!;
  const owner = /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(debugfs(img, 'stat /'))!;
  nodes['/'] = { type: 'dir', mode: parseInt(root[1], 8), uid: Number(owner[1]), gid: Number(owner[2]) };
  walk('/');
  const sorted: Record<string, Node> = {};
  for (const k of Object.keys(nodes).sort()) sorted[k] = nodes[k];
  return { nodes: sorted, links: linkGroups(byIno) };
}

/** `umoci unpack` of the image (umask 022, as a daemon's); null (and why) if umoci refuses the image. */
function unpackWithUmoci(layers: TarSpec[][]): { tree: Tree | null; error?: string } {
  const dir = join(work, `u${++n}`);
  writeOciLayout(join(dir, 'oci'), buildImage({ layers }));
  const r = spawnSync('sh', ['-c', 'umask 022 && exec umoci --log error unpack --image "$1/oci:latest" "$1/bundle"', 'sh', dir], { encoding: 'utf8' });
  if (r.status !== 0) return { tree: null, error: r.stderr.trim() };
  const tree = umociTree(join(dir, 'bundle', 'rootfs'));
  const sorted: Record<string, Node> = {};
  for (const k of Object.keys(tree.nodes).sort()) sorted[k] = tree.nodes[k];
  rmSync(dir, { recursive: true, force: true });
  return { tree: { nodes: sorted, links: tree.links } };
}

async function buildWithIronboot(layers: TarSpec[][]): Promise<{ tree: Tree; skipped: string[] }> {
  const dir = join(work, `i${++n}`);
  mkdirSync(dir);
  const disk = new DiskBuilder(join(dir, 'd.ext4'), join(dir, 'd.ext4.zst'), { seed: 'sha256:wh', label: 'wh' });
  const f = new Flattener(disk);
  for (const specs of layers) {
    const tar = makeTar(specs);
    await f.applyLayer((async function* () { yield tar; })());
  }
  await disk.finish(f.entries);
  const tree = diskTree(join(dir, 'd.ext4'));
  rmSync(dir, { recursive: true, force: true });
  return { tree, skipped: f.stats.skipped };
}

/** Every position of `wh` among `entries` (whose own order stays). */
function positions(wh: TarSpec[], entries: TarSpec[]): TarSpec[][] {
  if (!wh.length) return [entries];
  const [first, ...rest] = wh;
  const out: TarSpec[][] = [];
  for (const tail of positions(rest, entries)) for (let i = 0; i <= tail.length; i++) out.push([...tail.slice(0, i), first, ...tail.slice(i)]);
  return out;
}

const file = (path: string, content: string, more: Partial<TarSpec> = {}): TarSpec => ({ path, content, ...more });
const dir = (path: string, more: Partial<TarSpec> = {}): TarSpec => ({ path, type: 'dir', ...more });
const wh = (path: string): TarSpec => ({ path, content: '' });

/** The lower layer every case starts from. */
const LOWER: TarSpec[] = [
  dir('d/', { mode: 0o750, uid: 7, gid: 8 }), file('d/old', 'old'), dir('d/sub/', { mode: 0o711 }), file('d/sub/deep', 'deep', { mode: 0o600 }),
  file('f', 'f lower'), file('hl-a', 'shared', { mode: 0o640 }), { path: 'hl-b', type: 'hardlink', linkname: 'hl-a' },
  { path: 'ln', type: 'symlink', linkname: '/d' }, dir('dev/'), { path: 'dev/null', type: 'chardev', devmajor: 1, devminor: 3, mode: 0o666 },
  dir('keep/'), file('keep/k', 'k'),
];

/** linkFirstFails: umoci refuses the orders where the whiteout comes before this layer's hard link to it. */
interface Case { name: string; whiteouts: TarSpec[]; entries: TarSpec[]; lower?: TarSpec[]; linkFirstFails?: true }
const CASES: Case[] = [
  { name: 'plain whiteout of a dir + a re-added child', whiteouts: [wh('.wh.d')], entries: [file('d/new', 'new')] },
  { name: 'plain whiteout of a dir + the dir re-added (new mode) with a child', whiteouts: [wh('.wh.d')], entries: [dir('d/', { mode: 0o700 }), file('d/new', 'new')] },
  { name: 'plain whiteout of a dir + a file re-added deeper under it (implicit parents)', whiteouts: [wh('.wh.d')], entries: [file('d/sub/deep2', 'deep2')] },
  { name: 'plain whiteout of a dir, replaced by a symlink', whiteouts: [wh('.wh.d')], entries: [{ path: 'd', type: 'symlink', linkname: 'keep' }] },
  { name: 'plain whiteout of a file + the file re-added', whiteouts: [wh('.wh.f')], entries: [file('f', 'f upper', { mode: 0o755 })] },
  { name: 'plain whiteout of a file, replaced by a dir with a child', whiteouts: [wh('.wh.f')], entries: [dir('f/'), file('f/x', 'x')] },
  { name: 'opaque dir + a re-added subdir with a child', whiteouts: [wh('d/.wh..wh..opq')], entries: [dir('d/sub/'), file('d/sub/new', 'new')] },
  { name: 'opaque dir + a re-added child only (its dir not listed)', whiteouts: [wh('d/.wh..wh..opq')], entries: [file('d/sub/new', 'new')] },
  { name: 'opaque dir + plain whiteout in it + the whited-out name re-added', whiteouts: [wh('d/.wh..wh..opq'), wh('d/.wh.old')], entries: [file('d/old', 'old upper')] },
  { name: 'opaque marker in a subdir + a whiteout of its parent (a marker adds nothing)', whiteouts: [wh('d/sub/.wh..wh..opq'), wh('.wh.d')], entries: [file('top', 'top')] },
  { name: 'opaque root (.wh..wh..opq at the top) + re-added entries', whiteouts: [wh('.wh..wh..opq')], entries: [dir('d/'), file('d/new', 'new'), file('top', 'top')] },
  { name: 'whiteout through a symlinked parent + a re-add there', whiteouts: [wh('ln/.wh.old')], entries: [file('d/old', 'again')] },
  { name: 'whiteout of a hard link target: the other (lower) link keeps the content', whiteouts: [wh('.wh.hl-a')], entries: [file('other', 'o')] },
  { name: 'whiteout of a dir, a hard link of this layer into it', whiteouts: [wh('.wh.keep')], entries: [{ path: 'k-link', type: 'hardlink', linkname: 'keep/k' }], linkFirstFails: true },
  { name: 'whiteout of a hard link target, a hard link of this layer to it', whiteouts: [wh('.wh.hl-a')], entries: [{ path: 'hl-c', type: 'hardlink', linkname: 'hl-a' }], linkFirstFails: true },
];

for (const c of CASES) {
  test(`whiteouts vs umoci: ${c.name}, every order`, { skip }, async (t) => {
    const orders = positions(c.whiteouts, c.entries);
    let reference: Tree | null = null;
    const refused: number[] = [];
    const results: Tree[] = [];
    for (const [i, upper] of orders.entries()) {
      const layers = [c.lower ?? LOWER, upper];
      const mine = await buildWithIronboot(layers);
      assert.deepEqual(mine.skipped, [], `order ${i}: nothing skipped`);
      const theirs = unpackWithUmoci(layers);
      results.push(mine.tree);
      if (!theirs.tree) { refused.push(i); t.diagnostic(`umoci refuses order ${i} (${upper.map((e) => e.path).join(', ')}): ${theirs.error}`); continue; }
      reference ??= theirs.tree;
      assert.deepEqual(mine.tree, theirs.tree, `order ${i} (${upper.map((e) => e.path).join(', ')}): ironboot's disk = umoci's rootfs`);
    }
    assert.ok(reference, 'umoci unpacks at least one order');
    assert.deepEqual(refused, c.linkFirstFails ? [0] : [], 'the orders umoci refuses');
    // where umoci refuses an order (a hard link made before its target's whiteout is applied fails there), the
    // spec's order independence says it is the same image as every other order
    for (const i of refused) assert.deepEqual(results[i], reference, `order ${i}: same tree as the orders umoci unpacks`);
  });
}
