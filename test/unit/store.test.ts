import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openDb, loadMigrations, migrate, schemaVersion, SchemaTooNewError, MIGRATIONS_DIR } from '../../server/store/db.ts';
import { Store } from '../../server/store/index.ts';
import { DuplicateError } from '../../server/store/machines.ts';
import { isUniqueViolation } from '../../server/store/sql.ts';
import { tempDir, readyImage } from '../helpers/daemon.ts';
import { storeBackends } from '../helpers/stores.ts';

test('sqlite: a fresh database gets every migration, in WAL mode, recorded in schema_migrations', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const db = openDb(dir.path);
  const all = loadMigrations();
  assert.ok(all.length >= 1);
  assert.equal(schemaVersion(db), all[all.length - 1].version);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as { version: number; name: string }[];
  assert.deepEqual(rows.map((r) => r.version), all.map((m) => m.version));
  for (const table of ['machines', 'images', 'workflows', 'events']) {
    assert.ok(db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?").get(table), `table ${table}`);
  }
  db.close();
});

test('re-running migrations on an up-to-date database applies nothing and keeps the data', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s1 = Store.open(dir.path);
  s1.machines.create({ mac: '52:54:00:00:00:01', hostname: 'a' });
  s1.close();
  const db = openDb(dir.path);
  assert.deepEqual(migrate(db).applied, []);
  assert.equal((db.prepare('SELECT COUNT(*) AS n FROM machines').get() as { n: number }).n, 1);
  db.close();
});

test('migrations are applied in order, each in its own transaction: a failing one leaves the earlier ones', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const mdir = join(dir.path, 'migrations');
  mkdirSync(mdir);
  writeFileSync(join(mdir, '001_a.sql'), 'CREATE TABLE a (x INTEGER);');
  writeFileSync(join(mdir, '002_b.sql'), 'CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);');
  const db = new Database(join(dir.path, 'x.db'));
  assert.throws(() => migrate(db, loadMigrations(mdir)), /no such table: nope/);
  assert.equal(schemaVersion(db), 1);
  assert.ok(db.prepare("SELECT 1 FROM sqlite_master WHERE name='a'").get());
  assert.equal(db.prepare("SELECT 1 FROM sqlite_master WHERE name='b'").get(), undefined, '002 rolled back as a whole');
  db.close();
});

test('a gap in migration numbers is refused', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  writeFileSync(join(dir.path, '001_a.sql'), 'SELECT 1;');
  writeFileSync(join(dir.path, '003_c.sql'), 'SELECT 1;');
  assert.throws(() => loadMigrations(dir.path), /expected version 2/);
});

test('a database written by a newer ironboot is refused with a clear message, and left untouched', (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const db = openDb(dir.path);
  const latest = schemaVersion(db);
  db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(latest + 5, 'future', new Date().toISOString());
  db.close();
  assert.throws(() => openDb(dir.path), (err: unknown) => {
    assert.ok(err instanceof SchemaTooNewError);
    assert.match((err as Error).message, new RegExp(`schema version ${latest + 5}.*only knows up to ${latest}.*newer ironboot`));
    return true;
  });
  const again = new Database(join(dir.path, 'ironboot.db'));
  assert.equal(schemaVersion(again), latest + 5);
  again.close();
});

test('the shipped migrations are numbered without gaps', () => {
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
  files.forEach((f, i) => assert.equal(Number(f.slice(0, 3)), i + 1, f));
});

for (const backend of storeBackends()) {
  describe(`repositories on ${backend.name}`, () => {
    test('machines: unique MAC and reserved address, labels filter, update keeps unspecified fields', (t) => {
      const s = backend.open(t).store;
      const m = s.machines.create({ mac: '52:54:00:00:00:01', hostname: 'n1', ipv4: { address: '10.0.0.5', prefix: 24, dns: ['10.0.0.1'] }, labels: { rack: 'r1' } });
      assert.equal(m.allowPxe, true);
      assert.equal(typeof m.id, 'number');
      assert.throws(() => s.machines.create({ mac: '52:54:00:00:00:01' }), DuplicateError);
      assert.throws(() => s.machines.create({ mac: '52:54:00:00:00:02', ipv4: { address: '10.0.0.5', prefix: 24, dns: [] } }), (e: unknown) => (e as DuplicateError).field === 'ipv4.address');
      s.machines.create({ mac: '52:54:00:00:00:03', labels: { rack: 'r2' } });
      assert.deepEqual(s.machines.list({ labels: { rack: 'r1' } }).map((x) => x.mac), ['52:54:00:00:00:01']);
      const u = s.machines.update('52:54:00:00:00:01', { allowPxe: false })!;
      assert.equal(u.allowPxe, false);
      assert.equal(u.hostname, 'n1');
      assert.deepEqual(u.ipv4, { address: '10.0.0.5', prefix: 24, dns: ['10.0.0.1'] });
      assert.equal(s.machines.getByIpv4('10.0.0.5')?.mac, '52:54:00:00:00:01');
      s.machines.setPower(m.id, { state: 'on' });
      assert.equal(s.machines.getById(m.id)?.power?.state, 'on');
      assert.equal(s.machines.delete(m.id), true);
      assert.equal(s.machines.delete(m.id), false, 'changes counts rows on both');
    });

    test('a unique violation the repository did not check surfaces with its code on both dialects', (t) => {
      const s = backend.open(t).store;
      s.images.insert(readyImage({ id: 'i1', name: 'same' }));
      assert.throws(() => s.images.insert(readyImage({ id: 'i2', name: 'same' })), (e: unknown) => isUniqueViolation(e));
    });

    test('workflows: at most one active per machine, enforced by the database itself', (t) => {
      const s = backend.open(t).store;
      const m = s.machines.create({ mac: '52:54:00:00:00:01' });
      const img = s.images.insert(readyImage());
      const base = { machineId: m.id, imageId: img.id, target: '/dev/sda', after: 'wait' as const, token: 't' };
      s.workflows.insert({ ...base, id: 'w1' });
      assert.throws(() => s.workflows.insert({ ...base, id: 'w2' }), (e: unknown) => isUniqueViolation(e));
      s.workflows.setState('w1', 'succeeded', { final: true });
      s.workflows.insert({ ...base, id: 'w3' });
      assert.equal(s.workflows.activeForMachine(m.id)!.id, 'w3');
      assert.equal(s.workflows.get('w1')!.finishedAt !== null, true);
      assert.equal(s.workflows.countForMachine(m.id), 2);
      assert.equal(s.images.activeUsers(img.id), 1);
      assert.deepEqual(s.workflows.list({ state: 'succeeded' }).map((w) => w.id), ['w1']);
    });

    test('workflows: setState fields, persistent boot counters, the latest of a machine by creation order', (t) => {
      const s = backend.open(t).store;
      const m = s.machines.create({ mac: '52:54:00:00:00:01' });
      const img = s.images.insert(readyImage());
      const base = { machineId: m.id, imageId: img.id, target: '/dev/sda', after: 'wait' as const, token: '' };
      // one transaction: the same created_at millisecond is likely; the later one is still the latest
      s.tx(() => {
        s.workflows.insert({ ...base, id: 'b-first' });
        s.events.append({ workflowId: 'b-first', kind: 'state', state: 'pending' });
        s.workflows.setState('b-first', 'cancelled', { final: true, reason: 'x' });
        s.workflows.insert({ ...base, id: 'a-second' });
        s.events.append({ workflowId: 'a-second', kind: 'state', state: 'pending' });
      });
      assert.equal(s.workflows.latestForMachine(m.id)!.id, 'a-second');
      s.workflows.setState('a-second', 'booting', { started: true, reason: null });
      let w = s.workflows.get('a-second')!;
      assert.ok(w.startedAt);
      assert.equal(w.reason, null);
      s.workflows.setState('a-second', 'failed', { final: true, reason: 'disk', exitCode: 3 });
      w = s.workflows.get('a-second')!;
      assert.deepEqual([w.state, w.reason, w.exitCode, !!w.finishedAt], ['failed', 'disk', 3, true]);
      s.workflows.setState('a-second', 'failed', {});
      assert.equal(s.workflows.get('a-second')!.reason, 'disk', 'fields left out keep their value');
      s.workflows.setBootTokenSha256('a-second', 'ab'.repeat(32));
      assert.equal(s.workflows.bootTokenSha256('a-second'), 'ab'.repeat(32));
      assert.equal(s.workflows.countBoot('a-second'), 1);
      assert.equal(s.workflows.countBoot('a-second'), 2);
    });

    test('events are numbered per workflow in order', (t) => {
      const s = backend.open(t).store;
      const m = s.machines.create({ mac: '52:54:00:00:00:01' });
      const img = s.images.insert(readyImage());
      s.workflows.insert({ id: 'w1', machineId: m.id, imageId: img.id, target: 'ram', after: 'wait', token: 't' });
      const first = s.events.append({ workflowId: 'w1', kind: 'state', state: 'pending' });
      const second = s.events.append({ workflowId: 'w1', kind: 'progress', bytesDone: 5, bytesTotal: 6_000_000_000 });
      assert.ok(second.id > first.id);
      s.events.append({ workflowId: 'w1', kind: 'log', payload: { lines: [{ stream: 'stdout', line: 'hi' }] } });
      const evs = s.events.list('w1');
      assert.deepEqual(evs.map((e) => e.seq), [1, 2, 3]);
      assert.deepEqual(evs.map((e) => e.id), [first.id, second.id, evs[2].id]);
      assert.equal(evs[1].bytesTotal, 6_000_000_000, 'a BIGINT reads back as a number');
      assert.deepEqual(evs[2].payload, { lines: [{ stream: 'stdout', line: 'hi' }] });
      assert.deepEqual(s.events.list('w1', { afterSeq: 2 }).map((e) => e.seq), [3]);
      assert.deepEqual(s.events.list('w1', { limit: 1 }).map((e) => e.seq), [1]);
    });

    test('images: every field round-trips (the column named user too), replace, state, delete', (t) => {
      const s = backend.open(t).store;
      const img = s.images.insert(readyImage({ id: 'i1', name: 'web', config: { entrypoint: ['/e'], cmd: [], env: [], workingDir: null, user: 'www' } }));
      assert.equal(img.config.user, 'www');
      assert.equal(img.rawSize, 33554432);
      assert.equal(s.images.find('web')?.id, 'i1');
      s.images.replace({ ...readyImage({ id: 'i1', name: 'web2' }), state: 'building' });
      assert.equal(s.images.get('i1')?.name, 'web2');
      s.images.setState('i1', 'failed', { error: 'no space', progress: { stage: 'x' } });
      assert.deepEqual([s.images.get('i1')?.state, s.images.get('i1')?.error, s.images.get('i1')?.progress], ['failed', 'no space', { stage: 'x' }]);
      assert.deepEqual(s.images.list().map((i) => i.id), ['i1']);
      assert.equal(s.images.delete('i1'), true);
      assert.equal(s.images.get('i1'), undefined);
    });

    test('machine events, agent tokens, agent event ids and usage', (t) => {
      const s = backend.open(t).store;
      const m = s.machines.create({ mac: '52:54:00:00:00:01' });
      const img = s.images.insert(readyImage());
      s.workflows.insert({ id: 'w1', machineId: m.id, imageId: img.id, target: 'ram', after: 'wait', token: '' });
      const e1 = s.machineEvents.append({ machineId: m.id, kind: 'power', action: 'on', outcome: 'ok', message: null, workflowId: null });
      const e2 = s.machineEvents.append({ machineId: m.id, kind: 'power', action: 'off', outcome: 'failed', message: 'x', workflowId: 'w1', payload: { n: 1 } });
      assert.ok(e2.id > e1.id);
      assert.deepEqual(s.machineEvents.list(m.id).map((e) => [e.id, e.action, e.payload]), [[e1.id, 'on', {}], [e2.id, 'off', { n: 1 }]]);
      assert.deepEqual(s.machineEvents.list(m.id, 1).map((e) => e.action), ['off']);

      s.agentTokens.insert({ hash: 'h1', workflowId: 'w1', kind: 'boot', ip: null });
      s.agentTokens.insert({ hash: 'h2', workflowId: 'w1', kind: 'boot', ip: '10.0.0.5' });
      assert.equal(s.agentTokens.markUsed('h1'), true);
      assert.equal(s.agentTokens.markUsed('h1'), false, 'a second use loses');
      assert.equal(s.agentTokens.supersede('w1', 'boot'), 1);
      assert.equal(s.agentTokens.get('h2')?.state, 'superseded');

      s.agentEvents.remember('w1', 'a');
      s.agentEvents.remember('w1', 'a');
      assert.deepEqual([...s.agentEvents.seen('w1', ['a', 'b'])], ['a']);
      s.tx(() => { for (let i = 0; i < 100; i++) s.agentEvents.remember('w1', `id${i}`); });
      const asked = Array.from({ length: 150 }, (_, i) => `id${i}`);
      assert.deepEqual([...s.agentEvents.seen('w1', asked)].sort(), asked.slice(0, 100).sort(), 'a batch past one chunk of ids');
      assert.equal(s.agentEvents.seen('w1', []).size, 0);
      assert.deepEqual(s.agentEvents.usage('w1'), { events: 0, bytes: 0, truncated: false, dropped: 0 });
      s.agentEvents.setUsage('w1', { events: 2, bytes: 5_000_000_000, truncated: true, dropped: 1 });
      s.agentEvents.setUsage('w1', { events: 3, bytes: 5_000_000_001, truncated: true, dropped: 1 });
      assert.deepEqual(s.agentEvents.usage('w1'), { events: 3, bytes: 5_000_000_001, truncated: true, dropped: 1 });
    });

    test('pool leases: upsert, durable put, by MAC, delete', (t) => {
      const s = backend.open(t).store;
      const l = { address: '10.0.0.100', mac: 'aa:bb', state: 'bound' as const, expiresAt: 1_796_000_000_000, hostname: null, updatedAt: 1_796_000_000_000 };
      s.leases.putDurably([l]);
      s.leases.putDurably([{ ...l, state: 'released' }, { ...l, address: '10.0.0.101', updatedAt: l.updatedAt + 1 }]);
      assert.deepEqual(s.leases.list().map((x) => [x.address, x.state]), [['10.0.0.100', 'released'], ['10.0.0.101', 'bound']]);
      assert.deepEqual(s.leases.getByMac('aa:bb').map((x) => x.address), ['10.0.0.101', '10.0.0.100']);
      assert.equal(s.leases.get('10.0.0.100')?.expiresAt, 1_796_000_000_000);
      assert.equal(s.leases.delete('10.0.0.100'), true);
      assert.equal(s.leases.get('10.0.0.100'), undefined);
    });

    test('transactions: all or nothing; a nested one that throws undoes only itself', (t) => {
      const s = backend.open(t).store;
      assert.throws(() => s.tx(() => { s.machines.create({ mac: '52:54:00:00:00:01' }); throw new Error('boom'); }), /boom/);
      assert.equal(s.machines.list().length, 0);
      s.tx(() => {
        s.machines.create({ mac: '52:54:00:00:00:02' });
        assert.throws(() => s.tx(() => { s.machines.create({ mac: '52:54:00:00:00:03' }); throw new Error('inner'); }), /inner/);
        s.machines.create({ mac: '52:54:00:00:00:04' });
      });
      assert.deepEqual(s.machines.list().map((m) => m.mac), ['52:54:00:00:00:02', '52:54:00:00:00:04']);
    });

    test('the change marker moves with machine writes through any connection, not with lease writes', (t) => {
      const h = backend.open(t);
      const s = h.store;
      const other = h.reopen();
      const m0 = s.changeMarker();
      s.leases.put({ address: '10.0.0.100', mac: 'aa', state: 'bound', expiresAt: 1, hostname: null, updatedAt: 1 });
      assert.equal(s.changeMarker().others, m0.others, 'a lease write is not a machine change');
      const own = s.ownChanges();
      other.machines.create({ mac: '52:54:00:00:00:09' });
      const m1 = s.changeMarker();
      assert.notEqual(m1.others, m0.others, 'a machine added through another connection');
      assert.equal(m1.own, own);
      s.machines.create({ mac: '52:54:00:00:00:0a' });
      const m2 = s.changeMarker();
      assert.ok(m2.own !== m1.own || m2.others !== m1.others, 'a machine added through this connection');
    });
  });
}
