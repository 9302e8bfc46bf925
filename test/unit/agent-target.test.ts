/**
 * The agent's target check before it writes: a loop device over a file with a GPT written by sfdisk is refused
 * unless the workflow says wipe, and the disk is left exactly as it was; serial and size are checked when set.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkTarget, diskSignature, isIronbootDisk, streamToTarget, TargetRefused, SIGNATURE_BYTES } from '../../init/agent/steps/disk.ts';
import { parseAgentConfig } from '../../init/agent/cmdline.ts';
import type { WorkflowSpec } from '../../server/agent/api.ts';
import { have } from '../helpers/netns.ts';

const isRoot = process.getuid?.() === 0;
const skipLoop = !isRoot ? 'needs root (losetup)' : !have('sfdisk') ? 'sfdisk is not installed' : !have('losetup') ? 'losetup is not installed' : false;
const DISK = 32 << 20;

function tmp(t: { after(fn: () => unknown): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'iba-target-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function blankFile(path: string) { writeFileSync(path, ''); truncateSync(path, DISK); }

/** Attaches a loop device over `file`; detached when the test ends (also on failure). */
function loop(t: { after(fn: () => unknown): void }, file: string): string {
  const dev = execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
  t.after(() => { try { execFileSync('losetup', ['-d', dev]); } catch { /* already gone */ } });
  return dev;
}

test('diskSignature knows the common partition tables and filesystems, and a blank disk', (t) => {
  const dir = tmp(t);
  assert.equal(diskSignature(Buffer.alloc(SIGNATURE_BYTES)), null);
  const f = join(dir, 'ext4.img');
  blankFile(f);
  execFileSync('mkfs.ext4', ['-q', '-F', f]);
  assert.equal(diskSignature(readFileSync(f).subarray(0, SIGNATURE_BYTES)), 'an ext2/3/4 filesystem');
  const mbr = Buffer.alloc(SIGNATURE_BYTES);
  mbr[446 + 4] = 0x83; mbr[510] = 0x55; mbr[511] = 0xaa;
  assert.equal(diskSignature(mbr), 'an MBR (DOS) partition table');
  const swap = Buffer.alloc(SIGNATURE_BYTES);
  swap.write('SWAPSPACE2', 4086, 'latin1');
  assert.equal(diskSignature(swap), 'a swap area');
});

test('a disk with a GPT (sfdisk, on a loop device) is refused before anything is written; wipe: true allows it', { skip: skipLoop }, async (t) => {
  const dir = tmp(t);
  const file = join(dir, 'disk.img');
  blankFile(file);
  execFileSync('sfdisk', ['-q', file], { input: 'label: gpt\n,16MiB,L\n' });
  const dev = loop(t, file);
  const before = readFileSync(file).subarray(0, 1 << 20);
  await assert.rejects(checkTarget(dev, {}), (e: Error) => e instanceof TargetRefused && /already holds a GPT partition table.*wipe: true/.test(e.message));
  await checkTarget(dev, { wipe: true });

  // through the agent's stream step: refused before the image is fetched or a byte is written
  const spec = {
    workflowId: 'wf', target: dev, wipe: false,
    image: { id: 'i', name: 'i', format: 'ext4', url: 'http://127.0.0.1:9/never-fetched.zst', rawUrl: '', compressedSize: 1, compressedSha256: '', rawSize: 1 << 20, rawSha256: 'x' },
  } as unknown as WorkflowSpec;
  const said: string[] = [];
  await assert.rejects(
    streamToTarget(spec, parseAgentConfig('ironboot.server=http://127.0.0.1:9 ironboot.workflow=wf ironboot.token=t'),
      { progress: () => {}, verifying: () => {} }, (m) => said.push(m)),
    (e: Error) => e instanceof TargetRefused && e.message.includes(dev),
  );
  assert.ok(readFileSync(file).subarray(0, 1 << 20).equals(before), 'the disk is exactly as it was');
});

test('a blank loop device passes; serial and size are checked when the workflow names them', { skip: skipLoop }, async (t) => {
  const dir = tmp(t);
  const file = join(dir, 'blank.img');
  blankFile(file);
  const dev = loop(t, file);
  await checkTarget(dev, {});
  await checkTarget(dev, { size: DISK });
  await assert.rejects(checkTarget(dev, { size: DISK * 2 }), /is 33554432 bytes, but the workflow wants 67108864/);
  await assert.rejects(checkTarget(dev, { serial: 'S123' }), /has serial "none", but the workflow wants "S123"/);
  // a fake sysfs with the serial the workflow wants
  const sys = join(dir, 'sys');
  const name = dev.split('/').pop()!;
  execFileSync('mkdir', ['-p', join(sys, 'class', 'block', name, 'device')]);
  writeFileSync(join(sys, 'class', 'block', name, 'device', 'serial'), 'S123\n');
  writeFileSync(join(sys, 'class', 'block', name, 'size'), `${DISK / 512}\n`);
  await checkTarget(dev, { serial: 'S123', size: DISK }, sys);
});

test('a whole-disk ext4 that ironboot wrote (label "ironboot") is replaced without wipe; any other ext4 is refused', { skip: skipLoop }, async (t) => {
  const dir = tmp(t);
  const ours = join(dir, 'ours.img');
  const theirs = join(dir, 'theirs.img');
  blankFile(ours); blankFile(theirs);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'ironboot', ours]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'data', theirs]);
  assert.equal(isIronbootDisk(readFileSync(ours).subarray(0, SIGNATURE_BYTES)), true);
  assert.equal(isIronbootDisk(readFileSync(theirs).subarray(0, SIGNATURE_BYTES)), false);
  await checkTarget(loop(t, ours), {});
  await assert.rejects(checkTarget(loop(t, theirs), {}), (e: Error) => e instanceof TargetRefused && /already holds an ext2\/3\/4 filesystem/.test(e.message));
});
