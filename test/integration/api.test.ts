import { before, test } from 'node:test';
import { describeStores, type StoreBackend } from '../helpers/stores.ts';
import assert from 'node:assert/strict';
import { inProcessApp, readyImage } from '../helpers/daemon.ts';
import { AgentTokens } from '../../server/workflows/tokens.ts';

type Ctx = Awaited<ReturnType<typeof inProcessApp>>;

let backend: StoreBackend;

async function setup(t: { after(fn: () => unknown): void }): Promise<Ctx> {
  const h = backend.open();
  const ctx = await inProcessApp({ dataDir: h.dataDir, store: h.store });
  t.after(async () => { await ctx.close(); h.remove(); });
  return ctx;
}

const count = (ctx: Ctx, table: string) => (ctx.store.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;

describeStores('REST API', (b) => {
  before(() => { backend = b; }); // the suites run one after the other; setup() opens this one's store
test('every /api/v1 route answers 401 without the admin token, and with a wrong one', async (t) => {
  const ctx = await setup(t);
  const routes: [string, string][] = [
    ['GET', '/api/v1/machines'], ['POST', '/api/v1/machines'], ['GET', '/api/v1/machines/525400000001'],
    ['PATCH', '/api/v1/machines/525400000001'], ['DELETE', '/api/v1/machines/525400000001'],
    ['GET', '/api/v1/images'], ['GET', '/api/v1/images/x'], ['DELETE', '/api/v1/images/x'],
    ['GET', '/api/v1/workflows'], ['POST', '/api/v1/workflows'], ['GET', '/api/v1/workflows/x'],
    ['POST', '/api/v1/workflows/x/cancel'], ['POST', '/api/v1/workflows/x/retry'], ['GET', '/api/v1/events/stream'],
  ];
  for (const [method, url] of routes) {
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: ctx.adminToken }]) {
      const r = await ctx.app.inject({ method: method as 'GET', url, headers, payload: method === 'POST' || method === 'PATCH' ? {} : undefined });
      assert.equal(r.statusCode, 401, `${method} ${url} ${JSON.stringify(headers)}`);
      assert.equal(r.json().field, 'authorization');
    }
  }
  assert.equal(count(ctx, 'machines'), 0);
});

test('machines: create, get in any MAC notation, list by label, update, delete', async (t) => {
  const ctx = await setup(t);
  const body = {
    mac: '52:54:00:12:34:56', hostname: 'node-1',
    ipv4: { address: '10.77.0.21', prefix: 24, gateway: '10.77.0.1', dns: ['10.77.0.1'] }, allowPxe: true, labels: { rack: 'r1' },
  };
  const c = await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: body });
  assert.equal(c.statusCode, 201, c.body);
  assert.equal(c.json().mac, '52:54:00:12:34:56');
  assert.deepEqual(c.json().ipv4, { address: '10.77.0.21', prefix: 24, gateway: '10.77.0.1', dns: ['10.77.0.1'] });
  await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52-54-00-00-00-02', labels: { rack: 'r2' } } });
  for (const form of ['52:54:00:12:34:56', '52-54-00-12-34-56', '525400123456', '52-54-00-12-34-56'.toUpperCase()]) {
    const g = await ctx.app.inject({ method: 'GET', url: `/api/v1/machines/${form}`, headers: ctx.auth });
    assert.equal(g.statusCode, 200, form);
    assert.equal(g.json().hostname, 'node-1');
  }
  const l = await ctx.app.inject({ method: 'GET', url: '/api/v1/machines?label=rack=r2', headers: ctx.auth });
  assert.deepEqual(l.json().map((m: { mac: string }) => m.mac), ['52:54:00:00:00:02']);
  const all = await ctx.app.inject({ method: 'GET', url: '/api/v1/machines', headers: ctx.auth });
  assert.equal(all.json().length, 2);
  const u = await ctx.app.inject({ method: 'PATCH', url: '/api/v1/machines/52-54-00-12-34-56', headers: ctx.auth, payload: { allowPxe: false, ipv4: { address: '10.77.0.22', netmask: '255.255.255.0' } } });
  assert.equal(u.statusCode, 200, u.body);
  assert.equal(u.json().allowPxe, false);
  assert.equal(u.json().hostname, 'node-1');
  assert.equal(u.json().ipv4.prefix, 24);
  const d = await ctx.app.inject({ method: 'DELETE', url: '/api/v1/machines/525400123456', headers: ctx.auth });
  assert.equal(d.statusCode, 204);
  const g = await ctx.app.inject({ method: 'GET', url: '/api/v1/machines/525400123456', headers: ctx.auth });
  assert.equal(g.statusCode, 404);
  assert.equal(g.json().field, 'mac');
});

test('machines: bad input is 400 naming the field, and nothing is written', async (t) => {
  const ctx = await setup(t);
  const cases: [unknown, string][] = [
    [{ mac: 'zz' }, 'mac'],
    [{}, 'mac'],
    [{ mac: '52:54:00:00:00:01', hostname: 'bad host!' }, 'hostname'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.300', prefix: 24 } }, 'ipv4.address'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.3', prefix: 33 } }, 'ipv4.prefix'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.3' } }, 'ipv4.prefix'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.3', netmask: '255.0.255.0' } }, 'ipv4.netmask'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.3', prefix: 24, gateway: '10.0.1.1' } }, 'ipv4.gateway'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.255', prefix: 24 } }, 'ipv4.address'],
    [{ mac: '52:54:00:00:00:01', ipv4: { address: '10.0.0.3', prefix: 24, dns: ['x'] } }, 'ipv4.dns.0'],
    [{ mac: '52:54:00:00:00:01', allowPxe: 'maybe' }, 'allowPxe'],
    [{ mac: '52:54:00:00:00:01', arch: 'sparc' }, 'arch'],
    [{ mac: '52:54:00:00:00:01', labels: { rack: 5 } }, 'labels.rack'],
    [{ mac: '52:54:00:00:00:01', colour: 'red' }, 'colour'],
  ];
  for (const [payload, field] of cases) {
    const r = await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: payload as object });
    assert.equal(r.statusCode, 400, `${JSON.stringify(payload)} → ${r.body}`);
    assert.equal(r.json().field, field, JSON.stringify(payload));
    assert.ok(r.json().message.length > 5);
  }
  const bad = await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: { ...ctx.auth, 'content-type': 'application/json' }, payload: '{"mac": ' });
  assert.equal(bad.statusCode, 400);
  assert.equal(count(ctx, 'machines'), 0);
  const g = await ctx.app.inject({ method: 'GET', url: '/api/v1/machines/not-a-mac', headers: ctx.auth });
  assert.equal(g.statusCode, 400);
  assert.equal(g.json().field, 'mac');
});

test('machines: duplicate MAC or reserved address is 409, and the first row is unchanged', async (t) => {
  const ctx = await setup(t);
  const first = { mac: '52:54:00:00:00:01', hostname: 'a', ipv4: { address: '10.0.0.5', prefix: 24 } };
  assert.equal((await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: first })).statusCode, 201);
  const dup = await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52-54-00-00-00-01', hostname: 'b' } });
  assert.equal(dup.statusCode, 409);
  assert.equal(dup.json().field, 'mac');
  const ip = await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52:54:00:00:00:02', ipv4: { address: '10.0.0.5', prefix: 24 } } });
  assert.equal(ip.statusCode, 409);
  assert.equal(ip.json().field, 'ipv4.address');
  await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52:54:00:00:00:03' } });
  const upd = await ctx.app.inject({ method: 'PATCH', url: '/api/v1/machines/52:54:00:00:00:03', headers: ctx.auth, payload: { hostname: 'c', ipv4: { address: '10.0.0.5', prefix: 24 } } });
  assert.equal(upd.statusCode, 409);
  const m3 = ctx.store.machines.getByMac('52:54:00:00:00:03')!;
  assert.equal(m3.hostname, null, 'a refused update writes nothing, not even the valid fields');
  assert.equal(ctx.store.machines.getByMac('52:54:00:00:00:01')!.hostname, 'a');
  assert.equal(count(ctx, 'machines'), 2);
});

test('images: list, get by id or name, delete; 404; refused while an active workflow uses it', async (t) => {
  const ctx = await setup(t);
  ctx.store.images.insert(readyImage({ id: 'abc123', name: 'web' }));
  ctx.store.images.insert(readyImage({ id: 'def456', name: 'other' }));
  const l = await ctx.app.inject({ method: 'GET', url: '/api/v1/images', headers: ctx.auth });
  assert.deepEqual(l.json().map((i: { name: string }) => i.name), ['other', 'web']);
  const g = await ctx.app.inject({ method: 'GET', url: '/api/v1/images/web', headers: ctx.auth });
  assert.equal(g.json().id, 'abc123');
  assert.deepEqual(g.json().config.entrypoint, ['/bin/httpd']);
  assert.equal((await ctx.app.inject({ method: 'GET', url: '/api/v1/images/abc123', headers: ctx.auth })).json().name, 'web');
  assert.equal((await ctx.app.inject({ method: 'GET', url: '/api/v1/images/nope', headers: ctx.auth })).statusCode, 404);
  ctx.store.machines.create({ mac: '52:54:00:00:00:01' });
  const wf = ctx.workflows.create({ mac: '52:54:00:00:00:01', image: 'web', target: '/dev/sda' });
  const refused = await ctx.app.inject({ method: 'DELETE', url: '/api/v1/images/web', headers: ctx.auth });
  assert.equal(refused.statusCode, 409);
  assert.ok(ctx.store.images.get('abc123'));
  const d = await ctx.app.inject({ method: 'DELETE', url: '/api/v1/images/other', headers: ctx.auth });
  assert.equal(d.statusCode, 204);
  assert.equal(ctx.store.images.get('def456'), undefined);
  assert.equal((await ctx.app.inject({ method: 'DELETE', url: '/api/v1/images/other', headers: ctx.auth })).statusCode, 404);
  void wf;
});

test('workflows: create, list by machine and state, get with events, cancel, retry, and their errors', async (t) => {
  const ctx = await setup(t);
  ctx.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  ctx.store.images.insert(readyImage({ id: 'img2', name: 'wip', state: 'building' }));
  await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52:54:00:12:34:56' } });
  await ctx.app.inject({ method: 'POST', url: '/api/v1/machines', headers: ctx.auth, payload: { mac: '52:54:00:12:34:57' } });
  const body = { machine: '52-54-00-12-34-56', image: 'web', target: '/dev/vda', after: 'wait', entrypoint: ['/bin/httpd'], args: ['-f', '-p', '80'], env: { A: '1' } };
  const c = await ctx.app.inject({ method: 'POST', url: '/api/v1/workflows', headers: ctx.auth, payload: body });
  assert.equal(c.statusCode, 201, c.body);
  const wf = c.json();
  assert.equal(wf.state, 'pending');
  assert.equal(wf.machine, '52:54:00:12:34:56');
  assert.equal(wf.image, 'img1');
  assert.equal(wf.token, undefined, 'the agent token is not shown in the API');

  const errs: [object, number, string][] = [
    [{ ...body }, 409, 'machine'],                                   // one active workflow per machine
    [{ ...body, machine: '52:54:00:99:99:99' }, 404, 'machine'],
    [{ ...body, machine: 'xx' }, 400, 'machine'],
    [{ ...body, machine: '52:54:00:12:34:57', image: 'nope' }, 404, 'image'],
    [{ ...body, machine: '52:54:00:12:34:57', image: 'wip' }, 409, 'image'],
    [{ ...body, machine: '52:54:00:12:34:57', target: 'sda' }, 400, 'target'],
    [{ ...body, machine: '52:54:00:12:34:57', after: 'explode' }, 400, 'after'],
    [{ ...body, machine: '52:54:00:12:34:57', env: { 'A-B': '1' } }, 400, 'env.A-B'],
    [{ ...body, machine: '52:54:00:12:34:57', entrypoint: [] }, 400, 'entrypoint'],
  ];
  for (const [payload, status, field] of errs) {
    const r = await ctx.app.inject({ method: 'POST', url: '/api/v1/workflows', headers: ctx.auth, payload });
    assert.equal(r.statusCode, status, `${JSON.stringify(payload)} → ${r.body}`);
    assert.equal(r.json().field, field, r.body);
  }
  assert.equal(count(ctx, 'workflows'), 1);

  const byMachine = await ctx.app.inject({ method: 'GET', url: '/api/v1/workflows?machine=525400123456', headers: ctx.auth });
  assert.deepEqual(byMachine.json().map((w: { id: string }) => w.id), [wf.id]);
  assert.deepEqual((await ctx.app.inject({ method: 'GET', url: '/api/v1/workflows?state=running', headers: ctx.auth })).json(), []);
  assert.equal((await ctx.app.inject({ method: 'GET', url: '/api/v1/workflows?state=bogus', headers: ctx.auth })).statusCode, 400);
  const g = await ctx.app.inject({ method: 'GET', url: `/api/v1/workflows/${wf.id}`, headers: ctx.auth });
  assert.deepEqual(g.json().events.map((e: { state: string }) => e.state), ['pending']);
  assert.equal((await ctx.app.inject({ method: 'GET', url: '/api/v1/workflows/nope', headers: ctx.auth })).statusCode, 404);

  assert.equal((await ctx.app.inject({ method: 'POST', url: `/api/v1/workflows/${wf.id}/retry`, headers: ctx.auth })).statusCode, 409);
  const cancel = await ctx.app.inject({ method: 'POST', url: `/api/v1/workflows/${wf.id}/cancel`, headers: ctx.auth });
  assert.equal(cancel.json().state, 'cancelled');
  assert.equal((await ctx.app.inject({ method: 'POST', url: `/api/v1/workflows/${wf.id}/cancel`, headers: ctx.auth })).statusCode, 409);
  const retry = await ctx.app.inject({ method: 'POST', url: `/api/v1/workflows/${wf.id}/retry`, headers: ctx.auth });
  assert.equal(retry.statusCode, 201);
  assert.equal(retry.json().state, 'pending');
  assert.deepEqual(retry.json().args, ['-f', '-p', '80']);
  assert.equal((await ctx.app.inject({ method: 'POST', url: '/api/v1/workflows/nope/cancel', headers: ctx.auth })).statusCode, 404);
  // a machine with history cannot be deleted while active; after cancel it can, with its history
  assert.equal((await ctx.app.inject({ method: 'DELETE', url: '/api/v1/machines/525400123456', headers: ctx.auth })).statusCode, 409);
});

test('agent API: hello exchanges the boot token for a session token, returns the merged spec; events move the workflow and record logs', async (t) => {
  const ctx = await setup(t);
  ctx.store.images.insert(readyImage({ id: 'img1', name: 'web', config: { entrypoint: ['/bin/httpd'], cmd: ['-f'], env: ['PATH=/bin', 'A=image'], workingDir: '/srv', user: 'www' } }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56', hostname: 'n1', ipv4: { address: '10.0.0.5', prefix: 24, dns: ['10.0.0.1'] } });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'web', target: '/dev/vda', env: { A: 'wf', B: '2' }, args: ['-p', '80'] });
  const hello = { workflowId: wf.id, mac: '52-54-00-12-34-56', ip: '10.0.0.5', inventory: { cpus: { count: 1 }, memoryBytes: 1 << 30 } };
  const noTok = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', payload: hello });
  assert.equal(noTok.statusCode, 401);
  const admin = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: ctx.auth, payload: hello });
  assert.equal(admin.statusCode, 401, 'the admin token is not a workflow token');
  // what the boot route does when it serves the script to 10.0.0.5
  const bootToken = new AgentTokens(ctx.store).issueBoot(wf.id, '10.0.0.5');
  const boot = { authorization: `Bearer ${bootToken}` };
  const at = (remoteAddress: string) => ({ remoteAddress });
  const wrongMac = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: boot, payload: { ...hello, mac: '52:54:00:00:00:09' }, ...at('10.0.0.5') });
  assert.equal(wrongMac.statusCode, 403);
  const elsewhere = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: boot, payload: hello, ...at('10.0.0.66') });
  assert.equal(elsewhere.statusCode, 403, 'the boot token is bound to the address the script went to');
  assert.match(elsewhere.json().message, /issued to 10\.0\.0\.5; hello came from 10\.0\.0\.66/);
  const h = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: { ...boot, host: 'srv:8080' }, payload: hello, ...at('10.0.0.5') });
  assert.equal(h.statusCode, 200, h.body);
  const spec = h.json();
  assert.ok(spec.sessionToken.length >= 32);
  assert.notEqual(spec.sessionToken, bootToken);
  const auth = { authorization: `Bearer ${spec.sessionToken}` };
  assert.equal(spec.image.url, 'http://srv:8080/images/img1.ext4.zst');
  assert.equal(spec.image.rawSha256, 'b'.repeat(64));
  assert.deepEqual(spec.entrypoint, ['/bin/httpd']);
  assert.deepEqual(spec.cmd, ['-p', '80']);
  assert.deepEqual(spec.env, ['PATH=/bin', 'A=wf', 'B=2']);
  assert.equal(spec.workingDir, '/srv');
  assert.equal(spec.user, 'www');
  assert.deepEqual(spec.dns, ['10.0.0.1']);
  assert.equal(ctx.store.workflows.get(wf.id)!.state, 'agent-online');

  const post = (events: object[], headers = auth, ip = '10.0.0.5') => ctx.app.inject({ method: 'POST', url: '/agent/v1/events', headers, payload: { workflowId: wf.id, events }, ...at(ip) });
  assert.equal((await post([{ state: 'streaming' }], boot)).statusCode, 401, 'the boot token only serves the hello');
  assert.equal((await post([{ state: 'streaming' }], auth, '10.0.0.66')).statusCode, 403, 'a session token from another address is refused');
  assert.equal(ctx.store.workflows.get(wf.id)!.state, 'agent-online');
  assert.equal((await post([{ state: 'streaming' }, { bytesDone: 10, bytesTotal: 100 }, { state: 'verifying' }, { state: 'mounted' }, { state: 'running' }])).statusCode, 200);
  assert.equal((await post([{ state: 'running' }])).statusCode, 200, 'a repeated report is accepted');
  assert.equal((await post([{ state: 'streaming' }])).statusCode, 409, 'no going back');
  await post([{ log: [{ stream: 'stdout', line: 'hello' }, { stream: 'stderr', line: 'oops' }] }]);
  const fin = await post([{ state: 'succeeded', exitCode: 3 }]);
  assert.equal(fin.json().state, 'failed', 'a non-zero exit code is a failure');
  const w = ctx.store.workflows.get(wf.id)!;
  assert.equal(w.exitCode, 3);
  assert.match(w.reason!, /exited with code 3/);
  const kinds = ctx.store.events.list(wf.id).map((e) => `${e.kind}:${e.state ?? ''}`);
  assert.deepEqual(kinds, ['state:pending', 'info:', 'state:agent-online', 'state:streaming', 'progress:streaming', 'state:verifying', 'state:mounted', 'state:running', 'log:', 'state:failed']);
  const log = ctx.store.events.list(wf.id).find((e) => e.kind === 'log')!;
  assert.deepEqual(log.payload.lines, [{ stream: 'stdout', line: 'hello' }, { stream: 'stderr', line: 'oops' }]);
  const bad = await ctx.app.inject({ method: 'POST', url: '/agent/v1/events', headers: auth, payload: { workflowId: wf.id, events: [{ state: 'exploded' }] }, ...at('10.0.0.5') });
  assert.equal(bad.statusCode, 400);
  // the workflow is final: nothing new lands (a retry of what it already reported is only acknowledged)
  const after = await post([{ log: [{ stream: 'stdout', line: 'late' }] }]);
  assert.equal(after.statusCode, 409, after.body);
  assert.match(after.json().message, /already failed; it accepts no more events/);
});

test('agent API: a replayed hello is refused (409) and recorded; a newer hello supersedes the session', async (t) => {
  const ctx = await setup(t);
  ctx.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56', ipv4: { address: '10.0.0.5', prefix: 24, dns: [] } });
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'web', target: 'ram' });
  const tokens = new AgentTokens(ctx.store);
  const hello = (token: string) => ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', headers: { authorization: `Bearer ${token}` }, payload: { workflowId: wf.id, mac: '52:54:00:12:34:56' }, remoteAddress: '10.0.0.5' });
  const first = tokens.issueBoot(wf.id, '10.0.0.5');
  const h1 = await hello(first);
  assert.equal(h1.statusCode, 200, h1.body);
  const replay = await hello(first);
  assert.equal(replay.statusCode, 409);
  assert.match(replay.json().message, /already exchanged/);
  const ev = ctx.store.events.list(wf.id).find((e) => e.kind === 'info' && e.payload.refused === 'replayed-boot-token');
  assert.ok(ev, 'the replay is an event of the workflow');
  assert.match(ev.message!, /hello refused from 10\.0\.0\.5/);
  // a newer script supersedes the unused boot token; its hello supersedes the first session
  const stale = tokens.issueBoot(wf.id, '10.0.0.5');
  const second = tokens.issueBoot(wf.id, '10.0.0.5');
  assert.equal((await hello(stale)).statusCode, 401);
  const h2 = await hello(second);
  assert.equal(h2.statusCode, 200, h2.body);
  const events = (token: string) => ctx.app.inject({ method: 'POST', url: '/agent/v1/events', headers: { authorization: `Bearer ${token}` }, payload: { workflowId: wf.id, events: [{ message: 'x' }] }, remoteAddress: '10.0.0.5' });
  assert.equal((await events(h1.json().sessionToken)).statusCode, 401, 'the first session was superseded');
  assert.equal((await events(h2.json().sessionToken)).statusCode, 200);
  // tokens are kept hashed: neither token appears in the database
  const rows = ctx.store.db.prepare('SELECT hash FROM agent_tokens').all() as { hash: string }[];
  assert.ok(rows.length >= 5);
  for (const r of rows) assert.match(r.hash, /^[0-9a-f]{64}$/);
  const dump = JSON.stringify(ctx.store.db.prepare('SELECT * FROM agent_tokens').all()) + JSON.stringify(ctx.store.db.prepare('SELECT * FROM workflows').all());
  for (const tok of [first, second, h1.json().sessionToken, h2.json().sessionToken]) assert.ok(!dump.includes(tok));
});

test('the event stream delivers workflow events live as server-sent events', async (t) => {
  const ctx = await setup(t);
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const port = (ctx.app.server.address() as { port: number }).port;
  ctx.store.images.insert(readyImage({ id: 'img1' }));
  ctx.store.machines.create({ mac: '52:54:00:12:34:56' });
  const ac = new AbortController();
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/events/stream`, { headers: ctx.auth, signal: ac.signal });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const reader = res.body!.getReader();
  const wf = ctx.workflows.create({ mac: '52:54:00:12:34:56', image: 'img1', target: 'ram' });
  ctx.workflows.transition(wf.id, 'booting');
  let text = '';
  while (!(text.match(/event: workflow/g)?.length === 2)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  ac.abort();
  const datas = [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]));
  assert.deepEqual(datas.map((d) => [d.workflowId, d.state]), [[wf.id, 'pending'], [wf.id, 'booting']]);
});

test('/healthz, /metrics and the OpenAPI document need no token', async (t) => {
  const ctx = await setup(t);
  const h = await ctx.app.inject({ method: 'GET', url: '/healthz' });
  assert.equal(h.statusCode, 200);
  assert.equal(h.json().status, 'ok');
  const m = await ctx.app.inject({ method: 'GET', url: '/metrics' });
  assert.match(m.body, /ironboot_process_cpu_seconds_total/);
  const doc = await ctx.app.inject({ method: 'GET', url: '/api/docs/json' });
  assert.equal(doc.statusCode, 200);
  const paths = Object.keys(doc.json().paths);
  for (const p of ['/api/v1/machines', '/api/v1/machines/{mac}', '/api/v1/workflows', '/api/v1/workflows/{id}/cancel', '/api/v1/images/{id}', '/agent/v1/hello']) {
    assert.ok(paths.includes(p), p);
  }
  const page = await ctx.app.inject({ method: 'GET', url: '/api/docs/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /swagger/i);
});

test('the web page is served at / and talks to the API it documents', async (t) => {
  const ctx = await setup(t);
  const r = await ctx.app.inject({ method: 'GET', url: '/' });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /text\/html/);
  for (const path of ["'/machines'", "'/images'", "'/workflows'", '/api/v1/events/stream?ticket=', "'/events/ticket'"]) assert.ok(r.body.includes(path), path);
});

test('iPXE binaries are served over HTTP for UEFI HTTP boot, and nothing outside their directory', async (t) => {
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tempDir } = await import('../helpers/daemon.ts');
  const dir = tempDir(); t.after(dir.remove);
  mkdirSync(join(dir.path, 'ipxe'));
  writeFileSync(join(dir.path, 'ipxe', 'ipxe.efi'), Buffer.alloc(1000, 7));
  writeFileSync(join(dir.path, 'secret.efi'), 'x');
  const ctx = await inProcessApp({ extra: { ipxeDir: join(dir.path, 'ipxe') } });
  t.after(() => ctx.close());
  const r = await ctx.app.inject({ method: 'GET', url: '/ipxe/ipxe.efi' });
  assert.equal(r.statusCode, 200);
  assert.equal(r.rawPayload.length, 1000);
  const part = await ctx.app.inject({ method: 'GET', url: '/ipxe/ipxe.efi', headers: { range: 'bytes=10-19' } });
  assert.equal(part.statusCode, 206);
  assert.equal(part.headers['content-range'], 'bytes 10-19/1000');
  for (const bad of ['/ipxe/..%2Fsecret.efi', '/ipxe/%2E%2E%2Fsecret.efi', '/ipxe/passwd']) {
    const b = await ctx.app.inject({ method: 'GET', url: bad });
    assert.ok([400, 404].includes(b.statusCode), `${bad} → ${b.statusCode}`);
  }
});
});
