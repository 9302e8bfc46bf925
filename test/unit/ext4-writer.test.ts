/**
 * The ext4 writer (server/images/disk.ts, ext4/): synthetic layers streamed through the flattener into the disk
 * builder (file contents to the data area as they arrive, the metadata planned at the end), then
 * judged by e2fsck -fn (must be clean), read back attribute by attribute and byte by byte with debugfs, and (as
 * root) mounted read-only by the kernel inside a private mount namespace and compared with the entries.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Flattener, type EntryMeta, type ContentSink } from '../../server/images/flatten.ts';
import { DiskBuilder, DiskFullError } from '../../server/images/disk.ts';
import { xattrHash, aclToDisk } from '../../server/images/ext4/plan.ts';
import { ZST_RESERVED } from '../../server/images/ext4/write.ts';
import { makeTar, type TarSpec } from '../helpers/images-oci.ts';
import { stat, ls, cat, xattrs, readlink, fsck, debugfs } from '../helpers/images-disk.ts';

const missing = ['e2fsck', 'debugfs', 'zstd'].filter((c) => spawnSync(c, ['-V']).error);
const skip = missing.length ? `missing: ${missing.join(', ')}` : false;
const isRoot = process.geteuid?.() === 0;
const canMount = isRoot && !spawnSync('unshare', ['--version']).error && !spawnSync('python3', ['--version']).error;
const mountSkip = skip || (!canMount && 'needs root, unshare and python3 for a read-only kernel mount');

const work = mkdtempSync(join(tmpdir(), 'ibi-ext4-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** A file's content as the flattener delivered it to the disk. */
const content = (b: Built, p: string) => Buffer.concat(b.contents.get(b.entries.get(p)!)!);

interface Built {
  dir: string; raw: string; zst: string; entries: Map<string, EntryMeta>; rawSha256: string; compressedSha256: string;
  /** Every file the layers delivered (also the ones later layers removed), with its bytes. */
  contents: Map<EntryMeta, Buffer[]>;
  dataEnd: number;
}

/**
 * Streams the layers (each a tar in `chunk`-byte pieces, 64 KiB by default, like a decompressor delivers it)
 * through the flattener into a DiskBuilder, with a tee that keeps every file's bytes for the checks.
 */
async function build(layers: TarSpec[] | TarSpec[][], opts: { seed?: string; blocksPerGroup?: number; maxExtent?: number; sizeBytes?: number; chunk?: number } = {}): Promise<Built> {
  const dir = join(work, `b${++n}`);
  mkdirSync(dir);
  const raw = join(dir, 'disk.ext4');
  const zst = join(dir, 'disk.ext4.zst');
  const disk = new DiskBuilder(raw, zst, { seed: opts.seed ?? 'sha256:test', label: 'test', sizeBytes: opts.sizeBytes, blocksPerGroup: opts.blocksPerGroup, maxExtent: opts.maxExtent });
  const contents = new Map<EntryMeta, Buffer[]>();
  let cur: Buffer[] = [];
  const tee: ContentSink = {
    begin: (m) => { disk.begin(m); cur = []; contents.set(m, cur); },
    data: (c) => { cur.push(Buffer.from(c)); return disk.data(c); },
    end: () => disk.end(),
  };
  const f = new Flattener(tee);
  const step = opts.chunk ?? 65536;
  const list = (layers.length && Array.isArray(layers[0]) ? layers : [layers]) as TarSpec[][];
  try {
    for (const specs of list) {
      const tar = makeTar(specs);
      await f.applyLayer((async function* () { for (let o = 0; o < tar.length; o += step) yield tar.subarray(o, o + step); })());
    }
  } catch (err) {
    await disk.abort();
    throw err;
  }
  const d = await disk.finish(f.entries);
  assert.equal(d.rawSize, statSync(raw).size);
  assert.equal(d.rawSha256, sha(readFileSync(raw)), 'the sha256 is the raw file\'s');
  assert.equal(d.compressedSha256, sha(readFileSync(zst)));
  assert.equal(d.compressedSize, statSync(zst).size);
  const unz = spawnSync('zstd', ['-dc', zst], { maxBuffer: 1 << 30 });
  assert.equal(unz.status, 0, unz.stderr?.toString());
  assert.equal(sha(unz.stdout), d.rawSha256, 'zstd -dc of the .zst gives exactly the raw disk');
  assert.equal(spawnSync('zstd', ['-tq', zst]).status, 0, 'zstd -t passes');
  return { dir, raw, zst, entries: f.entries, rawSha256: d.rawSha256, compressedSha256: d.compressedSha256, contents, dataEnd: disk.headBlocks + [...contents.keys()].reduce((a, m) => a + Math.ceil((m.size ?? 0) / 4096), 0) };
}

function assertClean(img: string): void {
  const r = fsck(img);
  assert.ok(r.ok, `e2fsck -fn is not clean:\n${r.output}`);
}

const TYPE_NAME: Record<string, string> = { file: 'regular', dir: 'directory', symlink: 'symlink', chardev: 'character', blockdev: 'block', fifo: 'FIFO' };

/** Every entry read back with debugfs: type, mode, owner, links, size, mtime, devices, symlinks, contents, xattrs. */
function checkWithDebugfs(b: Built, only?: (p: string) => boolean): void {
  const links = new Map<EntryMeta, number>();
  for (const m of b.entries.values()) links.set(m, (links.get(m) ?? 0) + 1);
  for (const [p, m] of b.entries) {
    if (only && !only(p)) continue;
    const fp = `/${p}`;
    const s = stat(b.raw, fp);
    const what = `${fp}: `;
    assert.equal(s.type, TYPE_NAME[m.type], what + 'type');
    if (m.type !== 'symlink') assert.equal(s.mode, m.mode & 0o7777, what + 'mode');
    assert.equal(s.uid, m.uid, what + 'uid');
    assert.equal(s.gid, m.gid, what + 'gid');
    assert.equal(s.mtime, Math.floor(m.mtime) % 2 ** 32, what + 'mtime (the low 32 bits)');
    if (m.type !== 'dir') assert.equal(s.links, links.get(m), what + 'links');
    if (m.type === 'file') {
      assert.equal(s.size, m.size, what + 'size');
      assert.ok(cat(b.raw, fp).equals(content(b, p)), what + 'content');
    }
    if (m.type === 'symlink') assert.equal(readlink(b.raw, fp), m.linkname, what + 'target');
    if (m.type === 'chardev' || m.type === 'blockdev') assert.deepEqual([s.devMajor, s.devMinor], [m.devmajor, m.devminor], what + 'device');
    // names (and short values) from ea_list, every value byte for byte from ea_get; ACLs in their on-disk form
    const xa = xattrs(b.raw, fp);
    const want = m.xattrs ?? new Map<string, Buffer>();
    assert.deepEqual([...xa.keys()].sort(), [...want.keys()].sort(), what + 'xattr names');
    for (const [k, v] of want) {
      if (k.startsWith('system.posix_acl')) { assert.deepEqual(xa.get(k), aclToDisk(v, k), what + k); continue; }
      const out = join(b.dir, 'xattr-value');
      rmSync(out, { force: true });
      debugfs(b.raw, `ea_get -f ${out} "${fp}" ${k}`);
      assert.deepEqual(readFileSync(out), v, what + k);
    }
  }
}

/** The tree as the kernel sees it: mounted read-only inside `unshare -m --propagation private`, walked by python3. */
function kernelView(img: string): Record<string, { t: string; mode: number; uid: number; gid: number; nlink: number; size: number; mtime: number; ino: number; rdev?: [number, number]; link?: string; sha?: string; xattrs: Record<string, string> }> {
  const mnt = `${img}.mnt`;
  mkdirSync(mnt, { recursive: true });
  const py = `
import os, sys, json, stat, hashlib
root = sys.argv[1]; out = {}
for d, dirs, files in os.walk(root):
    for name in [''] + dirs + files if d == root else dirs + files:
        p = os.path.join(d, name) if name else d
        st = os.lstat(p)
        rel = os.path.relpath(p, root); rel = '' if rel == '.' else rel
        if rel == 'lost+found' or rel.startswith('lost+found/'): continue
        m = st.st_mode
        t = 'dir' if stat.S_ISDIR(m) else 'file' if stat.S_ISREG(m) else 'symlink' if stat.S_ISLNK(m) else 'chardev' if stat.S_ISCHR(m) else 'blockdev' if stat.S_ISBLK(m) else 'fifo' if stat.S_ISFIFO(m) else '?'
        e = dict(t=t, mode=stat.S_IMODE(m), uid=st.st_uid, gid=st.st_gid, nlink=st.st_nlink, size=st.st_size, mtime=int(st.st_mtime), ino=st.st_ino,
                 xattrs={k: os.getxattr(p, k, follow_symlinks=False).hex() for k in os.listxattr(p, follow_symlinks=False)})
        if t in ('chardev', 'blockdev'): e['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        if t == 'symlink': e['link'] = os.readlink(p)
        if t == 'file':
            with open(p, 'rb') as f: e['sha'] = hashlib.sha256(f.read()).hexdigest()
        out[rel] = e
json.dump(out, sys.stdout)
`;
  writeFileSync(`${img}.py`, py);
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t ext4 -o ro,loop "$0" "$1" && { python3 "$2" "$1"; rc=$?; umount "$1"; exit $rc; }', img, mnt, `${img}.py`],
    { encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, `mount/walk failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function checkWithKernel(b: Built): void {
  const view = kernelView(b.raw);
  const links = new Map<EntryMeta, number>();
  for (const m of b.entries.values()) links.set(m, (links.get(m) ?? 0) + 1);
  assert.deepEqual(Object.keys(view).sort(), [...b.entries.keys()].sort(), 'the same paths');
  const inoOf = new Map<EntryMeta, number>();
  for (const [p, m] of b.entries) {
    const k = view[p];
    const what = `/${p}: `;
    assert.equal(k.t, m.type, what + 'type');
    if (m.type !== 'symlink') assert.equal(k.mode, m.mode & 0o7777, what + 'mode');
    assert.deepEqual([k.uid, k.gid, k.mtime], [m.uid, m.gid, Math.floor(m.mtime)], what + 'owner, mtime');
    if (m.type !== 'dir') assert.equal(k.nlink, links.get(m), what + 'links');
    if (m.type === 'file') {
      assert.equal(k.size, m.size, what + 'size');
      assert.equal(k.sha, sha(content(b, p)), what + 'content');
    }
    if (m.type === 'symlink') assert.equal(k.link, m.linkname, what + 'target');
    if (m.type === 'chardev' || m.type === 'blockdev') assert.deepEqual(k.rdev, [m.devmajor, m.devminor], what + 'device');
    const want = Object.fromEntries([...(m.xattrs ?? new Map<string, Buffer>())].map(([x, v]) => [x, v.toString('hex')]));
    assert.deepEqual(k.xattrs, want, what + 'xattrs (ACLs back in their VFS form)');
    if (inoOf.has(m)) assert.equal(k.ino, inoOf.get(m), what + 'a hard link shares the inode');
    else inoOf.set(m, k.ino);
  }
  const inos = [...inoOf.values()];
  assert.equal(new Set(inos).size, inos.length, 'distinct entries have distinct inodes');
}

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');
// user::rw-, user:1000:rw-, group::r--, mask::rw-, other::r-- (the VFS form: version 2, 8-byte entries)
const ACL = Buffer.from('02000000' + '01000600ffffffff' + '02000600e8030000' + '04000400ffffffff' + '10000600ffffffff' + '20000400ffffffff', 'hex');

/** Every kind of entry ext4 must represent. */
function mixedTree(): TarSpec[] {
  return [
    { path: 'bin/', type: 'dir' }, { path: 'bin/tool', content: 'tool\n', mode: 0o755 },
    { path: 'bin/tool2', type: 'hardlink', linkname: 'bin/tool' }, { path: 'bin/tool3', type: 'hardlink', linkname: 'bin/tool' },
    { path: 'fast', type: 'symlink', linkname: 'bin/tool' },
    { path: 'slow', type: 'symlink', linkname: `/${'long-target/'.repeat(16)}end`.slice(0, 200) },
    { path: 'exactly59', type: 'symlink', linkname: 'x'.repeat(59) }, { path: 'exactly60', type: 'symlink', linkname: 'y'.repeat(60) },
    { path: 'dev/', type: 'dir' }, { path: 'dev/null', type: 'chardev', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'dev/nvme', type: 'blockdev', devmajor: 259, devminor: 70000, mode: 0o660, gid: 6 },
    { path: 'dev/huge', type: 'chardev', devmajor: 4095, devminor: 1048575 },
    { path: 'dev/null2', type: 'hardlink', linkname: 'dev/null' },
    { path: 'run/', type: 'dir' }, { path: 'run/fifo', type: 'fifo', mode: 0o600 },
    { path: 'usr/', type: 'dir' }, { path: 'usr/su', content: 'su', mode: 0o4755 }, { path: 'usr/wall', content: 'wall', mode: 0o2755, gid: 5 },
    { path: 'tmp/', type: 'dir', mode: 0o1777 },
    { path: 'home/', type: 'dir' }, { path: 'home/big/', type: 'dir', uid: 100000, gid: 70000, mode: 0o700 },
    { path: 'home/big/file', content: 'x', uid: 2000000, gid: 100000, mode: 0 },
    { path: 'ping', content: 'ping', xattrs: { 'security.capability': CAP, 'user.small': 'v' } },
    { path: 'acl', content: 'a', xattrs: { 'system.posix_acl_access': ACL } },
    { path: 'dacl/', type: 'dir', xattrs: { 'system.posix_acl_default': ACL, 'user.d': 'dir' } },
    { path: 'big-xattrs', content: 'b', xattrs: { 'user.a': 'A'.repeat(900), 'user.b': 'B'.repeat(900), 'user.c': Buffer.alloc(900, 0xfe), 'user.d': 'D'.repeat(901) } },
    { path: 'lnk-xattr', type: 'symlink', linkname: 'ping', xattrs: { 'trusted.t': 'tv' } },
    { path: 'empty', content: '' },
    { path: 'one-block', content: Buffer.alloc(4096, 1) }, { path: 'block-plus-one', content: Buffer.alloc(4097, 2) },
    { path: 'future', content: 'f', mtime: 2 ** 32 + 100 }, { path: 'past', content: 'p', mtime: 1 },
    { path: 'name with spaces "and quotes"', content: 'q' }, { path: `${'n'.repeat(255)}`, content: 'long name' },
  ];
}

test('xattr entry hash: the kernel\'s ext4_xattr_hash_entry', () => {
  // name "a", value "b": h = 'a' = 0x61; then (0x61 << 16) ^ (0x61 >>> 16) ^ 0x62
  assert.equal(xattrHash(Buffer.from('a'), Buffer.from('b')), ((0x61 << 16) ^ 0x62) >>> 0);
  assert.equal(xattrHash(Buffer.from('ab'), Buffer.alloc(0)), ((0x61 << 5) ^ 0x62) >>> 0);
  assert.deepEqual(aclToDisk(Buffer.from('0200000001000600ffffffff02000700e8030000', 'hex'), 'x'), Buffer.from('0100000001000600020007' + '00e8030000', 'hex'));
});

/** The xattr block of `path` in `img`: its header hash and its entries (index, name, value size, hash) in order. */
function xattrBlock(img: string, path: string): { hHash: number; entries: string[]; block: Buffer } {
  const blk = Number(/File ACL: (\d+)/.exec(debugfs(img, `stat ${path}`))![1]);
  assert.ok(blk > 0, `${path} has an xattr block`);
  const block = readFileSync(img).subarray(blk * 4096, blk * 4096 + 4096);
  assert.equal(block.readUInt32LE(0), 0xea020000);
  const entries: string[] = [];
  for (let o = 32; block.readUInt32LE(o) !== 0; o += 16 + ((block[o] + 3) & ~3)) {
    entries.push(`${block[o + 1]}:${block.toString('latin1', o + 16, o + 16 + block[o])}:${block.readUInt32LE(o + 8)}:${block.readUInt32LE(o + 12).toString(16)}`);
  }
  return { hHash: block.readUInt32LE(12), entries, block };
}

test('an xattr block like the kernel (or e2fsprogs) writes it: same entry order, entry hashes and block hash', { skip }, async () => {
  const values = { 'user.zz': Buffer.alloc(900, 0x41), 'user.a': randomBytes(1000), 'security.selinux': Buffer.from('system_u:object_r:bin_t:s0'.repeat(6)), 'user.bb': randomBytes(1500) };
  const b = await build([{ path: 'f', content: 'f', xattrs: values }]);
  assertClean(b.raw);
  // the reference: the same xattrs set by the kernel on a mounted mke2fs image (as root), else by debugfs
  const ref = join(b.dir, 'ref.ext4');
  assert.equal(spawnSync('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-I', '256', '-O', '^metadata_csum', ref, '8M']).status, 0);
  Object.values(values).forEach((v, i) => writeFileSync(join(b.dir, `v${i}`), v));
  if (canMount) {
    const mnt = `${ref}.mnt`;
    mkdirSync(mnt);
    const py = `import os, sys\nopen(sys.argv[1] + '/f', 'w').close()\n` +
      Object.keys(values).map((k, i) => `os.setxattr(sys.argv[1] + '/f', '${k}', open('${join(b.dir, `v${i}`)}', 'rb').read())\n`).join('');
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t ext4 -o loop "$0" "$1" && { python3 -c "$2" "$1"; rc=$?; umount "$1"; exit $rc; }', ref, mnt, py], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  } else {
    const script = ['write /dev/null f', ...Object.keys(values).map((k, i) => `ea_set -f ${join(b.dir, `v${i}`)} /f ${k}`)];
    spawnSync('debugfs', ['-w', '-f', '-', ref], { input: script.join('\n') + '\n' });
  }
  const ours = xattrBlock(b.raw, '/f');
  const theirs = xattrBlock(ref, '/f');
  assert.deepEqual(ours.entries, theirs.entries);
  assert.notEqual(ours.hHash, 0);
  if (canMount) assert.equal(ours.hHash.toString(16), theirs.hHash.toString(16), 'the block hash the kernel computes'); // e2fsprogs leaves it 0
});

test('empty image: clean, root and lost+found only', { skip }, async () => {
  const b = await build([]);
  assertClean(b.raw);
  assert.deepEqual(ls(b.raw, '/'), ['lost+found']);
  assert.equal(stat(b.raw, '/').links, 3);
  assert.equal(stat(b.raw, '/lost+found').mode, 0o700);
  assert.match(debugfs(b.raw, 'stats'), /Filesystem features:\s+has_journal ext_attr dir_index sparse_super2 filetype extent flex_bg sparse_super large_file huge_file dir_nlink extra_isize\n/);
  if (canMount) assert.deepEqual(Object.keys(kernelView(b.raw)), ['']);
});

test('every kind of entry: e2fsck clean, debugfs and the kernel read back all of it', { skip }, async () => {
  const b = await build(mixedTree());
  assertClean(b.raw);
  checkWithDebugfs(b);
  assert.equal(stat(b.raw, '/bin/tool').links, 3);
  assert.match(debugfs(b.raw, 'stat /exactly59'), /Fast link dest/);
  assert.doesNotMatch(debugfs(b.raw, 'stat /exactly60'), /Fast link dest/);
  assert.match(debugfs(b.raw, 'stat /big-xattrs'), /File ACL: [1-9]/, 'large xattrs live in an external block');
  assert.match(debugfs(b.raw, 'stat /ping'), /File ACL: 0\b/, 'small xattrs live in the inode');
  assert.equal(stat(b.raw, '/future').mtime, 100, 'the low 32 bits; the epoch bits carry the rest');
  assert.match(debugfs(b.raw, 'stat /future'), /mtime: 0x00000064:00000001/);
  if (canMount) checkWithKernel(b);
  // the same layer delivered in other pieces (odd sizes, split headers and contents; one piece): the same bytes
  for (const chunk of [4093, 1 << 30]) assert.equal((await build(mixedTree(), { chunk })).rawSha256, b.rawSha256, `pieces of ${chunk}`);
  // the head's own frame, then a skippable frame, at the start of the .zst
  const z = readFileSync(b.zst);
  assert.equal(z.readUInt32LE(0), 0xfd2fb528, 'a zstd frame first');
  const skipAt = z.indexOf(Buffer.from([0x50, 0x2a, 0x4d, 0x18]));
  assert.ok(skipAt > 0 && skipAt + 8 + z.readUInt32LE(skipAt + 4) === ZST_RESERVED, 'a skippable frame fills the reserved region');
  assert.equal(z.readUInt32LE(ZST_RESERVED), 0xfd2fb528, 'the main frame after it');
});

test('3000 files in one directory: a multi-block linear directory', { skip }, async () => {
  const specs: TarSpec[] = [{ path: 'many/', type: 'dir' }, ...Array.from({ length: 3000 }, (_, i) => ({ path: `many/some-file-name-${i}`, content: `${i}\n` }))];
  const b = await build(specs);
  assertClean(b.raw);
  assert.ok(stat(b.raw, '/many').size > 10 * 4096, `directory spans many blocks (${stat(b.raw, '/many').size})`);
  assert.deepEqual(ls(b.raw, '/many').sort(), specs.slice(1).map((s) => s.path.slice(5)).sort());
  checkWithDebugfs(b, (p) => p === 'many' || /-(0|1|999|2999)$/.test(p));
  if (canMount) checkWithKernel(b);
});

test('a file across block groups: one extent (flex_bg), or a depth-1 extent tree when extents are short', { skip }, async () => {
  const big = randomBytes(24 << 20);
  const specs: TarSpec[] = [{ path: 'big', content: big }, { path: 'small', content: 'after' }, { path: 'd/', type: 'dir' }, { path: 'd/x', content: 'x' }];
  // 1024 blocks per group (4 MiB groups): the file crosses 6 group boundaries in one extent
  const one = await build(specs, { blocksPerGroup: 1024 });
  assertClean(one.raw);
  const ex1 = debugfs(one.raw, 'ex /big');
  assert.match(ex1, /^\s*0\/\s*0\s+1\/\s*1\s+0 -\s+6143\s+16 -\s+6159\s+6144\b/m, `one extent of 6144 blocks:\n${ex1}`);
  assert.match(debugfs(one.raw, 'stats'), /Blocks per group:\s+1024/);
  assert.ok(cat(one.raw, '/big').equals(big));
  checkWithDebugfs(one, (p) => p !== 'big');
  if (canMount) checkWithKernel(one);
  // extents of at most 1000 blocks: 7 of them, more than the inode holds
  const b = await build(specs, { blocksPerGroup: 1024, maxExtent: 1000 });
  assertClean(b.raw);
  const ex = debugfs(b.raw, 'ex /big');
  assert.match(ex, /^\s*0\/\s*1\s+1\/\s*1/m, `an index level in the inode:\n${ex}`);
  assert.ok((ex.match(/^\s*1\/\s*1/gm) ?? []).length > 4, `more than 4 leaf extents:\n${ex}`);
  assert.ok(cat(b.raw, '/big').equals(big));
  checkWithDebugfs(b, (p) => p !== 'big');
  if (canMount) checkWithKernel(b);
});

test('layers that delete and overwrite files: dead bytes stay in the data area as free blocks', { skip }, async () => {
  const oldA = randomBytes(300 << 10);
  const gone = randomBytes(200 << 10);
  const newA = randomBytes(100 << 10);
  const b = await build([
    [{ path: 'a', content: oldA }, { path: 'gone', content: gone }, { path: 'h', type: 'hardlink', linkname: 'a' },
      { path: 'd/', type: 'dir' }, { path: 'd/x', content: 'old x' }, { path: 'd/keep', content: 'k' }, { path: 'mid', content: 'mid' }],
    [{ path: 'a', content: newA, mode: 0o600 }, { path: '.wh.gone', content: '' }, { path: 'd/.wh..wh..opq', content: '' }, { path: 'd/y', content: 'y' }],
    [{ path: 'mid', content: Buffer.alloc(5000, 7) }, { path: 'late', content: 'late' }],
  ], { blocksPerGroup: 256 });
  assertClean(b.raw);
  assert.deepEqual([...b.entries.keys()].sort(), ['', 'a', 'd', 'd/y', 'h', 'late', 'mid']);
  assert.ok(cat(b.raw, '/a').equals(newA));
  assert.ok(cat(b.raw, '/h').equals(oldA), 'the hard link keeps the first layer\'s file');
  assert.equal(stat(b.raw, '/a').links, 1);
  assert.equal(stat(b.raw, '/h').links, 1);
  checkWithDebugfs(b);
  if (canMount) checkWithKernel(b);
  // the removed files' bytes are still in the data area, in blocks the bitmap says are free
  const img = readFileSync(b.raw);
  const dead = [...b.contents.keys()].filter((m) => ![...b.entries.values()].includes(m) && (m.size ?? 0) > 0);
  assert.equal(dead.length, 4, 'gone, d/x and d/keep (opaque dir), the first mid');
  for (const m of dead) {
    const bytes = Buffer.concat(b.contents.get(m)!);
    assert.ok(img.subarray(m.block! * 4096, m.block! * 4096 + bytes.length).equals(bytes), 'dead bytes in place');
    assert.match(debugfs(b.raw, `testb ${m.block} ${Math.ceil(bytes.length / 4096)}`), /not in use/);
    assert.doesNotMatch(debugfs(b.raw, `testb ${m.block} ${Math.ceil(bytes.length / 4096)}`), /marked in use/);
  }
  // files in arrival order from block 16, the metadata after them
  const firstData = Math.min(...[...b.contents.keys()].filter((m) => m.block !== undefined).map((m) => m.block!));
  assert.equal(firstData, 16);
  const gd = debugfs(b.raw, 'stats');
  for (const m of gd.matchAll(/(?:block bitmap|inode bitmap|inode table) at (\d+)/gi)) assert.ok(Number(m[1]) >= b.dataEnd, `metadata after the data area: ${m[0]}`);
});

test('bit-reproducible: the same entries and seed give the same bytes; the seed sets the UUID', { skip }, async () => {
  const a = await build(mixedTree(), { seed: 'sha256:aaaa' });
  const b = await build(mixedTree(), { seed: 'sha256:aaaa' });
  const c = await build(mixedTree(), { seed: 'sha256:cccc' });
  assert.equal(a.rawSha256, b.rawSha256);
  assert.equal(a.compressedSha256, b.compressedSha256);
  assert.notEqual(a.rawSha256, c.rawSha256);
  const uuid = (img: string) => /Filesystem UUID:\s+(\S+)/.exec(debugfs(img, 'stats'))![1];
  assert.equal(uuid(a.raw), uuid(b.raw));
  assert.notEqual(uuid(a.raw), uuid(c.raw));
});

test('a forced size too small for the content is a DiskFullError, as soon as it is known', { skip }, async () => {
  const big = { path: 'big', content: randomBytes(6 << 20) };
  // the file alone is larger than the disk: known at its tar header, during the pull
  await assert.rejects(build([big], { sizeBytes: 5 << 20 }), (err: Error) => err instanceof DiskFullError && /does not fit in 5 MiB: give a larger --size/.test(err.message));
  // the file fits, the metadata after it does not: known when the filesystem is planned
  await assert.rejects(build([big], { sizeBytes: 6.2 * (1 << 20) }), (err: Error) => err instanceof DiskFullError && /does not fit in 6 MiB: give a larger --size/.test(err.message));
  // and with room: a clean 7 MiB disk (no journal below 2048 blocks, like mke2fs)
  const d = await build([big], { sizeBytes: 7 << 20 });
  assert.equal(statSync(d.raw).size, 7 << 20);
  assertClean(d.raw);
  assert.doesNotMatch(debugfs(d.raw, 'stats'), /has_journal/);
  checkWithDebugfs(d);
});
