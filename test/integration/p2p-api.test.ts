/**
 * The server's peer-to-peer surface through the real app (inject): the chunk manifest under the image file's token
 * rules, GET /agent/v1/peers and POST /agent/v1/chunks only for the workflow's own file, the tracker's answers
 * across workflows, a bad-peer report, a finished workflow's agent leaving the holders, and the hello's chunksUrl.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Registry } from 'prom-client';
import { agentSession, bootTokenFor, inProcessApp, readyImage, silentLog, tempDir } from '../helpers/daemon.ts';
import { createImageService } from '../../server/images/index.ts';
import imageFilesRoutes from '../../server/http/routes/image-files.ts';
import { P2pService } from '../../server/p2p/service.ts';
import { metricsText } from '../../server/metrics.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function setup(t: { after(fn: () => unknown): void }, p2pOn = true) {
  const registry = new Registry();
  const p2p = p2pOn ? new P2pService(silentLog(), registry, { chunkSize: 65536, port: 7480 }) : null;
  let svc: ReturnType<typeof createImageService> | null = null;
  const dir = tempDir();
  t.after(() => dir.remove());
  const ctx = await inProcessApp({
    dataDir: dir.path,
    extra: {
      registry, p2p,
      plugins: [{ plugin: async (app, d) => {
        svc = createImageService({ store: d.store, log: d.log, registry: d.registry, dataDir: dir.path });
        return imageFilesRoutes(app, { ...d, imageService: svc });
      } }],
    },
  });
  t.after(() => ctx.close());
  if (!svc) throw new Error('the image-files plugin was not registered');
  const images = svc as ReturnType<typeof createImageService>;
  if (p2p) t.after(p2p.follow(ctx.workflows.events));
  const file = randomBytes(5 * 65536 + 999);
  const other = randomBytes(1000);
  ctx.store.images.insert(readyImage({ id: 'img1', compressedSize: file.length, compressedSha256: sha(file) }));
  ctx.store.images.insert(readyImage({ id: 'img2', name: 'other', compressedSize: other.length, compressedSha256: sha(other) }));
  for (const [id, b] of [['img1', file], ['img2', other]] as const) {
    mkdirSync(dirname(images.filePath(id, 'zst')), { recursive: true });
    writeFileSync(images.filePath(id, 'zst'), b);
  }
  const agent = (mac: string, ip: string, image = 'img1') => {
    ctx.store.machines.create({ mac });
    const wf = ctx.workflows.create({ mac, image, target: 'ram' });
    ctx.workflows.transition(wf.id, 'booting');
    return { wf, ip, session: agentSession(ctx.store, wf.id, ip) };
  };
  return { ctx, p2p, registry, file, other, agent };
}

test('manifest, peers and chunks: token rules, own file only, peers across workflows, bad peers, finished workflows', async (t) => {
  const { ctx, registry, file, other, agent } = await setup(t);
  const a = agent('52:54:00:00:00:01', '10.0.0.1');
  const b = agent('52:54:00:00:00:02', '10.0.0.2');
  const c = agent('52:54:00:00:00:03', '10.0.0.3');
  const x = agent('52:54:00:00:00:09', '10.0.0.9', 'img2');
  const as = (who: { session: string; ip: string }, o: { method?: 'GET' | 'POST'; url: string; payload?: object }) =>
    ctx.app.inject({ method: o.method ?? 'GET', url: o.url, payload: o.payload, remoteAddress: who.ip, headers: { authorization: `Bearer ${who.session}` } });
  const F = sha(file);

  // the manifest: the image file's rules
  assert.equal((await ctx.app.inject({ url: '/images/img1.ext4.zst.chunks', remoteAddress: a.ip })).statusCode, 401);
  assert.equal((await as(x, { url: '/images/img1.ext4.zst.chunks' })).statusCode, 403, 'a workflow of another image');
  assert.equal((await as({ ...a, ip: '10.0.0.77' }, { url: '/images/img1.ext4.zst.chunks' })).statusCode, 403, 'from another address');
  const peersBefore = await as(a, { url: `/agent/v1/peers?file=${F}&from=0&count=2&port=7480` });
  assert.equal(peersBefore.statusCode, 409, 'no manifest served yet');
  const mr = await as(a, { url: '/images/img1.ext4.zst.chunks' });
  assert.equal(mr.statusCode, 200, mr.body);
  const m = mr.json();
  assert.equal(m.file, F);
  assert.equal(m.size, file.length);
  assert.equal(m.chunkSize, 65536);
  assert.deepEqual(m.chunks, Array.from({ length: 6 }, (_, i) => sha(file.subarray(i * 65536, (i + 1) * 65536))));
  assert.equal(m.port, 7480);
  assert.ok(m.peerToken.length >= 16);
  assert.equal((await as(b, { url: '/images/img1.ext4.zst.chunks' })).json().peerToken, m.peerToken, 'one peer token per file');

  // peers and chunks: only the workflow's own file, bounded queries
  assert.equal((await as(x, { url: `/agent/v1/peers?file=${F}&from=0&count=2` })).statusCode, 403);
  assert.equal((await as(a, { url: `/agent/v1/peers?file=${sha(other)}&from=0&count=2` })).statusCode, 403);
  assert.equal((await as(a, { url: `/agent/v1/peers?file=${F}&from=0&count=0` })).statusCode, 400);
  assert.equal((await as(a, { url: `/agent/v1/peers?file=${F}&from=0&count=33` })).statusCode, 400);
  assert.equal((await as(a, { url: `/agent/v1/peers?file=${F}&from=0&count=2&port=70000` })).statusCode, 400);
  assert.equal((await ctx.app.inject({ url: `/agent/v1/peers?file=${F}&from=0&count=2`, remoteAddress: a.ip })).statusCode, 401);

  // a asks first: the server; it reports what it verified; b is sent to a (at a's own address, not one it claims)
  assert.deepEqual((await as(a, { url: `/agent/v1/peers?file=${F}&from=0&count=6&port=7480` })).json().chunks.map((c: { peer: unknown }) => c.peer), Array(6).fill(null));
  const rep = await as(a, { method: 'POST', url: '/agent/v1/chunks', payload: { file: F, port: 7480, have: [0, 1, 2, 3, 4, 5] } });
  assert.deepEqual(rep.json(), { accepted: 6, banned: 0 });
  assert.deepEqual((await as(b, { url: `/agent/v1/peers?file=${F}&from=0&count=2&port=7480` })).json().chunks, [{ chunk: 0, peer: '10.0.0.1:7480' }, { chunk: 1, peer: '10.0.0.1:7480' }]);
  assert.equal((await as(x, { method: 'POST', url: '/agent/v1/chunks', payload: { file: F, have: [0] } })).statusCode, 403);
  // b reports a bad: a is never handed out again
  const bad = await as(b, { method: 'POST', url: '/agent/v1/chunks', payload: { file: F, have: [1], bad: [{ chunk: 0, peer: '10.0.0.1:7480', reason: 'hash' }] } });
  assert.deepEqual(bad.json(), { accepted: 1, banned: 1 });
  // c: chunks 0 and 1 from b (which holds 1 and is fetching 0 again), never from a; the rest from the server
  assert.deepEqual((await as(c, { url: `/agent/v1/peers?file=${F}&from=0&count=6&port=7480` })).json().chunks.map((x: { peer: unknown }) => x.peer),
    ['10.0.0.2:7480', '10.0.0.2:7480', null, null, null, null]);
  const text = await metricsText(registry);
  assert.match(text, /ironboot_p2p_chunks_assigned_total\{source="peer"\} 4/);
  assert.match(text, /ironboot_p2p_chunks_assigned_total\{source="server"\} 10/);
  assert.match(text, /ironboot_p2p_bad_peer_reports_total\{reason="hash"\} 1/);

  // c verifies chunk 0 and holds it; once c's workflow ends, nobody is sent to it any more
  assert.equal((await as(c, { method: 'POST', url: '/agent/v1/chunks', payload: { file: F, port: 7480, have: [0] } })).statusCode, 200);
  const d = agent('52:54:00:00:00:04', '10.0.0.4');
  assert.equal((await as(d, { url: `/agent/v1/peers?file=${F}&from=0&count=1&port=7480` })).json().chunks[0].peer, '10.0.0.3:7480');
  ctx.workflows.transition(c.wf.id, 'failed', { reason: 'test' });
  const e = agent('52:54:00:00:00:05', '10.0.0.5');
  assert.notEqual((await as(e, { url: `/agent/v1/peers?file=${F}&from=0&count=1` })).json().chunks[0].peer, '10.0.0.3:7480');
  assert.equal((await as(c, { url: `/agent/v1/peers?file=${F}&from=0&count=1` })).statusCode, 409, 'its token expired with it');
});

test('the hello names the manifest when peer-to-peer is on, and not when it is off', async (t) => {
  for (const on of [true, false]) {
    const { ctx } = await setup(t, on);
    ctx.store.machines.create({ mac: '52:54:00:00:00:01' });
    const wf = ctx.workflows.create({ mac: '52:54:00:00:00:01', image: 'img1', target: 'ram' });
    ctx.workflows.transition(wf.id, 'booting');
    const r = await ctx.app.inject({ method: 'POST', url: '/agent/v1/hello', remoteAddress: '127.0.0.1', headers: { authorization: `Bearer ${bootTokenFor(ctx.store, wf.id)}` },
      payload: { workflowId: wf.id, mac: '52:54:00:00:00:01' } });
    assert.equal(r.statusCode, 200, r.body);
    const spec = r.json();
    if (on) assert.equal(spec.image.chunksUrl, `${spec.image.url}.chunks`);
    else assert.equal(spec.image.chunksUrl, undefined);
    const m = await ctx.app.inject({ url: '/images/img1.ext4.zst.chunks', remoteAddress: '127.0.0.1', headers: { authorization: `Bearer ${spec.sessionToken}` } });
    assert.equal(m.statusCode, on ? 200 : 404);
  }
});
