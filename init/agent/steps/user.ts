/** The image's User (OCI: user, uid, user:group, uid:gid) resolved against the image's own /etc files (pure). */

export interface Ids { uid: number; gid: number; home: string | null }

const parse = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));

export function resolveUser(user: string | null, passwd: string, group: string): Ids {
  if (!user) return { uid: 0, gid: 0, home: '/root' };
  const [u, g] = user.split(':');
  const pw = parse(passwd);
  let uid: number;
  let gid: number | null = null;
  let home: string | null = null;
  const byName = pw.find((f) => f[0] === u);
  const byId = /^\d+$/.test(u) ? pw.find((f) => f[2] === u) : undefined;
  if (byName) { uid = Number(byName[2]); gid = Number(byName[3]); home = byName[5] ?? null; }
  else if (/^\d+$/.test(u)) { uid = Number(u); if (byId) { gid = Number(byId[3]); home = byId[5] ?? null; } }
  else throw new Error(`user "${u}" is not in the image's /etc/passwd`);
  if (g !== undefined && g !== '') {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const gr = parse(group).find((f) => f[0] === g);
      if (!gr) throw new Error(`group "${g}" is not in the image's /etc/group`);
      gid = Number(gr[2]);
    }
  }
  return { uid, gid: gid ?? uid, home };
}
