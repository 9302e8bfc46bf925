/**
 * Several daemons, one store: two processes race to finish the same running workflows (one says succeeded, the
 * other failed). Exactly one change wins per workflow and leaves exactly one final event; the other daemon is
 * refused with a 409 that names the state the winner set, and nothing else goes wrong (no storage error).
 *
 * On SQLite (the two processes share one database file: WAL, two writers) and on PostgreSQL (the test's own server).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import pino from 'pino';
import { fleetBackends, freshStore, openStore } from '../helpers/fleet-store.ts';
import { WorkflowService } from '../../server/workflows/service.ts';

const CHILD = join(import.meta.dirname, '..', 'helpers', 'fleet-workflow-child.ts');
const N = 400;

interface Result { won: string[]; refused: { id: string; message: string }[]; errors: { id: string; message: string }[] }

function runningWorkflows(spec: string): string[] {
  const store = openStore(spec);
  try {
    const wfs = new WorkflowService(store, pino({ level: 'silent' }));
    store.images.insert({ id: 'img1', name: 'web', state: 'ready', rawSize: 1, rawSha256: 'a', compressedSize: 1, compressedSha256: 'b' });
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const mac = `52:54:00:91:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      store.machines.create({ mac });
      const wf = wfs.create({ mac, image: 'img1', target: 'ram' });
      wfs.transition(wf.id, 'running');
      ids.push(wf.id);
    }
    return ids;
  } finally { store.close(); }
}

async function race(t: { after: (fn: () => unknown) => void }, spec: string, ids: string[], targets: [string, string]): Promise<Result[]> {
  const children = targets.map(() => {
    const proc = spawn(process.execPath, ['--import', 'tsx', CHILD, spec], { stdio: ['pipe', 'pipe', 'pipe'] });
    t.after(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
    let stderr = '';
    proc.stderr!.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    const lines: string[] = [];
    const waiters: ((l: string) => void)[] = [];
    createInterface({ input: proc.stdout! }).on('line', (l) => { const w = waiters.shift(); if (w) w(l); else lines.push(l); });
    const next = () => new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      proc.once('exit', () => reject(new Error(`child exited: ${stderr}`)));
      waiters.push(resolve);
    });
    return { proc, next };
  });
  for (const c of children) assert.equal(JSON.parse(await c.next()).ready, true);
  // both start at the same moment, each walking the workflows in its own order, so they meet on many
  const at = Date.now() + 500;
  children.forEach((c, i) => c.proc.stdin!.write(JSON.stringify({ ids: shuffled(ids, i + 1), to: targets[i], at }) + '\n'));
  return Promise.all(children.map(async (c) => JSON.parse(await c.next()) as Result));
}

function shuffled<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const BACKENDS = fleetBackends(); // this file's PostgreSQL: started before, stopped after the tests

function check(spec: string, ids: string[], results: Result[], targets: [string, string]): void {
  for (const r of results) assert.deepEqual(r.errors, [], 'no storage errors, only wins and 409s');
  const store = openStore(spec);
  try {
    for (const id of ids) {
      const winners = results.map((r, i) => (r.won.includes(id) ? i : -1)).filter((i) => i >= 0);
      assert.equal(winners.length, 1, `${id}: winners ${JSON.stringify(winners)}`);
      const w = winners[0];
      const loser = results[1 - w].refused.find((x) => x.id === id);
      assert.ok(loser, `${id}: the other daemon was refused`);
      assert.match(loser.message, new RegExp(`is ${targets[w]}\\b`), 'the refusal names the state the winner set');
      const wf = store.workflows.get(id)!;
      assert.equal(wf.state, targets[w]);
      const finals = store.events.list(id).filter((e) => e.kind === 'state' && (e.state === 'succeeded' || e.state === 'failed'));
      assert.equal(finals.length, 1, `${id}: one final event, got ${finals.map((e) => e.state)}`);
      assert.equal(finals[0].state, targets[w]);
    }
  } finally { store.close(); }
}

for (const backend of BACKENDS) {

test(`${backend}: two daemons finish the same workflows at once (succeeded vs failed): one change wins each, one final event, the other gets a 409`, async (t) => {
  const spec = freshStore(t, backend);
  const ids = runningWorkflows(spec);
  const results = await race(t, spec, ids, ['succeeded', 'failed']);
  t.diagnostic(`wins: ${results.map((r) => r.won.length).join(' + ')}`);
  check(spec, ids, results, ['succeeded', 'failed']);
});

test(`${backend}: two daemons make the same change at once (failed and failed): once`, async (t) => {
  const spec = freshStore(t, backend);
  const ids = runningWorkflows(spec);
  const results = await race(t, spec, ids, ['failed', 'failed']);
  t.diagnostic(`wins: ${results.map((r) => r.won.length).join(' + ')}`);
  check(spec, ids, results, ['failed', 'failed']);
});
}
