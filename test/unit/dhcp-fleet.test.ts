/**
 * Several daemons, one pool: two processes, each with its own store connection and DhcpLeases (full mode) on the
 * same pool, answer real DHCP request bytes through the real handler and group commit. However their requests
 * interleave, no address is ACKed to two MACs at once, and every client whose claim lost got a refusal (a NAK, or
 * an OFFER of another address), never a reply for an address the other daemon holds.
 *
 * Each test runs on SQLite (the two processes share one database file: WAL, two writers) and on PostgreSQL (the
 * test's own server, test/helpers/postgres.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fleetBackends, freshStore, openStore } from '../helpers/fleet-store.ts';

const CHILD = join(import.meta.dirname, '..', 'helpers', 'fleet-dhcp-child.ts');
const POOL_SIZE = 30; // FLEET_POOL in the child: 10.90.0.100-10.90.0.129

interface Reply { mac: string; type: string; yiaddr: string; message: string | null }

class Daemon {
  private lines: string[] = [];
  private waiters: ((l: string) => void)[] = [];
  stderr = '';
  constructor(readonly proc: ChildProcess, readonly serverId: string) {
    createInterface({ input: proc.stdout! }).on('line', (l) => { const w = this.waiters.shift(); if (w) w(l); else this.lines.push(l); });
    proc.stderr!.on('data', (d) => { this.stderr = (this.stderr + d).slice(-4000); });
  }
  next(): Promise<Record<string, unknown>> {
    const l = this.lines.shift();
    const parse = (s: string) => { const o = JSON.parse(s); if (o.error) throw new Error(`${this.serverId}: ${o.error}`); return o; };
    if (l !== undefined) return Promise.resolve(parse(l));
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`daemon ${this.serverId} exited: ${this.stderr}`));
      this.proc.once('exit', onExit);
      this.waiters.push((s) => { this.proc.off('exit', onExit); try { resolve(parse(s)); } catch (e) { reject(e); } });
    });
  }
  async send(cmd: unknown): Promise<Record<string, unknown>> { this.proc.stdin!.write(JSON.stringify(cmd) + '\n'); return this.next(); }
  async settle(): Promise<{ replies: Reply[]; lost: number; lostMacs: string[] }> { return await this.send({ op: 'settle' }) as never; }
}

async function startDaemons(t: { after: (fn: () => unknown) => void }, storeSpec: string): Promise<[Daemon, Daemon]> {
  const ds = ['10.90.0.1', '10.90.0.2'].map((addr) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', CHILD, storeSpec, addr], { stdio: ['pipe', 'pipe', 'pipe'] });
    t.after(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
    return new Daemon(proc, addr);
  });
  for (const d of ds) assert.equal((await d.next()).ready, true);
  return ds as [Daemon, Daemon];
}

const mac = (d: number, i: number) => `52:54:00:90:${d.toString(16).padStart(2, '0')}:${i.toString(16).padStart(2, '0')}`;
const poolAddress = (i: number) => `10.90.0.${100 + i}`;

/** The holders as the clients see them: an ACK for an address someone else holds is a double allocation. */
class Holders {
  private byAddress = new Map<string, string>();
  private byMac = new Map<string, string>();
  acks = 0;
  ack(m: string, address: string): void {
    const holder = this.byAddress.get(address);
    assert.ok(holder === undefined || holder === m, `${address} ACKed to ${m} while ${holder} holds it`);
    const prev = this.byMac.get(m);
    if (prev && prev !== address) this.byAddress.delete(prev); // a client holds one address: its old one went back
    this.byAddress.set(address, m);
    this.byMac.set(m, address);
    this.acks++;
  }
  get held(): Map<string, string> { return this.byAddress; }
}

const BACKENDS = fleetBackends(); // this file's PostgreSQL: started before, stopped after the tests

function boundRows(storeSpec: string): Map<string, string> {
  const store = openStore(storeSpec);
  try {
    return new Map(store.leases.list().filter((l) => l.state === 'bound' && l.mac).map((l) => [l.address, l.mac!]));
  } finally { store.close(); }
}

for (const backend of BACKENDS) {

test(`${backend}: two daemons, one pool: the same address asked of both at once goes to one; the other client gets a NAK, or an OFFER of another address`, async (t) => {
  const spec = freshStore(t, backend);
  const [a, b] = await startDaemons(t, spec);
  // INIT-REBOOT of two clients for the same free address, one at each daemon, decided before either commits
  await a.send({ op: 'add', mac: mac(1, 1), type: 'request', requested: poolAddress(10), reboot: true });
  await b.send({ op: 'add', mac: mac(2, 1), type: 'request', requested: poolAddress(10), reboot: true });
  const ra = await a.settle();
  const rb = await b.settle();
  assert.deepEqual(ra.replies.map((r) => [r.mac, r.type, r.yiaddr]), [[mac(1, 1), 'ack', poolAddress(10)]]);
  assert.equal(rb.lost, 1, 'b lost its claim');
  assert.deepEqual(rb.replies.map((r) => [r.mac, r.type]), [[mac(2, 1), 'nak']], JSON.stringify(rb));
  assert.match(rb.replies[0].message ?? '', /requested 10\.90\.0\.110/);

  // two DISCOVERs decided at once: the same first free address; the second daemon's OFFER becomes another one
  await a.send({ op: 'add', mac: mac(1, 2), type: 'discover' });
  await b.send({ op: 'add', mac: mac(2, 2), type: 'discover' });
  const oa = await a.settle();
  const ob = await b.settle();
  assert.equal(oa.replies[0].type, 'offer');
  assert.equal(ob.replies[0].type, 'offer');
  assert.equal(ob.lost, 1, 'b lost the offer claim and offered again');
  assert.notEqual(ob.replies[0].yiaddr, oa.replies[0].yiaddr);
  assert.notEqual(ob.replies[0].yiaddr, poolAddress(10), 'not the address a holds');
  // a third client at b: b knows a's rows without a lost claim (the mirror takes in what a wrote)
  await b.send({ op: 'add', mac: mac(2, 3), type: 'discover' });
  const ob3 = await b.settle();
  assert.equal(ob3.lost, 0);
  assert.ok(![poolAddress(10), oa.replies[0].yiaddr, ob.replies[0].yiaddr].includes(ob3.replies[0].yiaddr), JSON.stringify(ob3));
  for (const [d, r] of [[a, oa.replies[0]], [b, ob.replies[0]]] as const) {
    await d.send({ op: 'add', mac: r.mac, type: 'request', requested: r.yiaddr });
    assert.deepEqual((await d.settle()).replies.map((x) => [x.type, x.yiaddr]), [['ack', r.yiaddr]]);
  }
  const rows = boundRows(spec);
  assert.equal(rows.get(poolAddress(10)), mac(1, 1));
  assert.equal(rows.get(oa.replies[0].yiaddr), mac(1, 2));
  assert.equal(rows.get(ob.replies[0].yiaddr), mac(2, 2));
});

/** Deterministic PRNG (mulberry32), so a failing interleaving can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

test(`${backend}: two daemons, one pool: random interleavings of DISCOVER, REQUEST, INIT-REBOOT and commits never ACK one address to two MACs`, async (t) => {
  const spec = freshStore(t, backend);
  const ds = await startDaemons(t, spec);
  const seed = Number(process.env.FLEET_SEED ?? 20261203);
  const rnd = prng(seed);
  const holders = new Holders();
  // per daemon: requests added since its last settle (each must get an ACK or a NAK), offers it made
  const waiting: Map<string, 'request' | 'discover' | 'reboot'>[] = [new Map(), new Map()];
  const offered: Map<string, string>[] = [new Map(), new Map()];
  let lost = 0, naks = 0;
  const settle = async (i: number) => {
    const r = await ds[i].settle();
    lost += r.lost;
    for (const x of r.replies) {
      const kind = waiting[i].get(x.mac);
      assert.ok(kind, `reply to ${x.mac}, which asked nothing (seed ${seed})`);
      waiting[i].delete(x.mac);
      if (x.type === 'ack') { assert.notEqual(kind, 'discover'); holders.ack(x.mac, x.yiaddr); offered[i].delete(x.mac); }
      else if (x.type === 'nak') { assert.notEqual(kind, 'discover'); naks++; offered[i].delete(x.mac); }
      else if (x.type === 'offer') { assert.equal(kind, 'discover'); offered[i].set(x.mac, x.yiaddr); }
    }
    // unanswered: a DISCOVER when the pool is full (also after its claim lost), an INIT-REBOOT this daemon knows
    // nothing about (RFC 2131 4.3.2); never a REQUEST that answers an OFFER, nor a REQUEST whose claim lost
    for (const [m, kind] of waiting[i]) {
      assert.notEqual(kind, 'request', `REQUEST of ${m} got no answer (seed ${seed})`);
      if (kind === 'reboot') assert.ok(!r.lostMacs.includes(m), `${m} lost its claim and got no answer (seed ${seed})`);
    }
    waiting[i].clear();
  };
  for (let step = 0; step < 600; step++) {
    const i = rnd() < 0.5 ? 0 : 1;
    const r = rnd();
    const m = mac(0x10 + i, Math.floor(rnd() * 40)); // 80 clients for 30 addresses
    if (r < 0.25) { await settle(i); continue; }
    if (waiting[i].has(m)) continue; // one request per client per burst, as a real client waits for its answer
    if (r < 0.55) { waiting[i].set(m, 'discover'); await ds[i].send({ op: 'add', mac: m, type: 'discover' }); }
    else if (r < 0.8 && offered[i].has(m)) { waiting[i].set(m, 'request'); await ds[i].send({ op: 'add', mac: m, type: 'request', requested: offered[i].get(m) }); }
    else { waiting[i].set(m, 'reboot'); await ds[i].send({ op: 'add', mac: m, type: 'request', requested: poolAddress(Math.floor(rnd() * POOL_SIZE)), reboot: true }); }
  }
  await settle(0); await settle(1);
  t.diagnostic(`seed ${seed}: ${holders.acks} ACKs, ${naks} NAKs, ${lost} lost claims`);
  assert.ok(lost > 0, 'the interleavings made the daemons race for addresses');
  // what the clients hold is what the store says
  const rows = boundRows(spec);
  for (const [address, m] of holders.held) assert.equal(rows.get(address), m, `${address}: store ${rows.get(address)}, client ${m}`);
});

test(`${backend}: two daemons, one pool, free-running: every ACK is for an address no other client holds`, async (t) => {
  const spec = freshStore(t, backend);
  const [a, b] = await startDaemons(t, spec);
  const macsA = Array.from({ length: 40 }, (_, i) => mac(0x20, i));
  const macsB = Array.from({ length: 40 }, (_, i) => mac(0x21, i));
  const [ra, rb] = await Promise.all([a.send({ op: 'run', macs: macsA, burst: 4 }), b.send({ op: 'run', macs: macsB, burst: 4 })]) as unknown as { replies: Reply[]; lost: number }[];
  const holders = new Holders();
  for (const r of [...ra.replies, ...rb.replies]) if (r.type === 'ack') holders.ack(r.mac, r.yiaddr);
  // every REQUEST (one per OFFER) got an ACK or a NAK
  for (const res of [ra, rb]) {
    const offers = res.replies.filter((r) => r.type === 'offer').length;
    const answers = res.replies.filter((r) => r.type === 'ack' || r.type === 'nak').length;
    assert.equal(answers, offers);
  }
  t.diagnostic(`${holders.acks} ACKs for ${POOL_SIZE} addresses, lost claims ${ra.lost} + ${rb.lost}`);
  assert.ok(holders.acks <= POOL_SIZE);
  assert.ok(holders.acks >= POOL_SIZE - 2, `the pool was used (${holders.acks} ACKs)`);
  const rows = boundRows(spec);
  assert.equal(rows.size, holders.acks);
  for (const [address, m] of holders.held) assert.equal(rows.get(address), m);
});
}
