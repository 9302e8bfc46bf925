/** The multi-layer test image: every kind of entry and every whiteout rule. */
import type { TarSpec } from './images-oci.ts';

export const CAP = Buffer.from('01000002' + '00200000' + '00000000' + '00000000' + '00000000', 'hex'); // cap_net_raw+ep, v2
export const ACL = Buffer.from('0200000001000600ffffffff04000400ffffffff10000400ffffffff20000400ffffffff', 'hex');
export const LONG = `deep/${'d'.repeat(60)}/${'e'.repeat(60)}/file-with-a-long-name.txt`;
export const HOST_ESCAPE = `ibi-escape-${process.pid}`;

/** Three layers exercising every kind of entry and every whiteout rule. */
export function multiLayers(): TarSpec[][] {
  return [
    [
      { path: 'bin/', type: 'dir' }, { path: 'bin/tool', content: 'tool v1\n', mode: 0o755 },
      { path: 'etc/', type: 'dir' }, { path: 'etc/deleteme', content: 'gone\n' }, { path: 'etc/keep', content: 'kept\n' },
      { path: 'etc/overwritten', content: 'old\n' },
      { path: 'opt/app/', type: 'dir' }, { path: 'opt/app/old1', content: 'old1' }, { path: 'opt/app/sub/', type: 'dir' },
      { path: 'opt/app/sub/old2', content: 'old2' },
      { path: 'var/cache/', type: 'dir' }, { path: 'var/cache/x', content: 'x' },
      { path: 'usr/lib/', type: 'dir' }, { path: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { path: 'escape', type: 'symlink', linkname: '/tmp' },
    ],
    [
      { path: 'etc/.wh.deleteme', content: '' },
      { path: 'opt/app/.wh..wh..opq', content: '' }, { path: 'opt/app/new', content: 'new' },
      { path: 'usr/bin/', type: 'dir' }, { path: 'usr/bin/tool-link', type: 'hardlink', linkname: 'bin/tool' },
      { path: 'usr/bin/sh', type: 'symlink', linkname: '/bin/busybox' },
      { path: 'dev/', type: 'dir' }, { path: 'dev/null', type: 'chardev', devmajor: 1, devminor: 3, mode: 0o666 },
      { path: 'dev/sda', type: 'blockdev', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
      { path: 'run/', type: 'dir' }, { path: 'run/fifo', type: 'fifo', mode: 0o600 },
      { path: 'usr/bin/su', content: 'su', mode: 0o4755 },
      { path: 'usr/bin/wall', content: 'wall', mode: 0o2755, gid: 5 },
      { path: 'usr/bin/ping', content: 'ping', mode: 0o755, xattrs: { 'security.capability': CAP } },
      { path: 'etc/labelled', content: 'l', xattrs: { 'user.comment': 'hello "world"\\', 'user.bin': Buffer.from([0, 1, 2, 255]), 'trusted.t': 'tv' } },
      { path: 'etc/acl', content: 'a', xattrs: { 'system.posix_acl_access': ACL } },
      { path: 'home/', type: 'dir' }, { path: 'home/user/', type: 'dir', uid: 1000, gid: 1000, mode: 0o700, xattrs: { 'user.dir': 'd' } },
      { path: 'home/user/secret', content: 's', uid: 1000, gid: 1000, mode: 0o000 },
      { path: 'tmp/', type: 'dir', mode: 0o1777 },
      { path: LONG, content: 'long' },
      { path: 'name with spaces "and quotes"', content: 'q' },
    ],
    [
      { path: 'etc/overwritten', content: 'new\n', mode: 0o600 },
      { path: 'var/.wh.cache', content: '' }, { path: 'var/cache', type: 'symlink', linkname: '../tmp' },
      { path: 'lib/libx.so', content: 'elf' }, // through the lib → usr/lib symlink
      { path: `escape/${HOST_ESCAPE}`, content: 'must stay inside' }, // through an absolute symlink
      { path: '../outside', content: 'rejected' },
    ],
  ];
}

