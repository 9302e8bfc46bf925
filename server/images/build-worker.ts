/**
 * The worker thread of one image build: runs buildDisk on the job it is sent and reports to the main thread
 * (messages: progress at most every 100 ms and at each stage, each finished layer, then done or error).
 */
import { parentPort } from 'node:worker_threads';
import { buildDisk, asImageError, type BuildJob } from './build.ts';
import type { BuildProgress } from './index.ts';

export type WorkerMessage =
  | { t: 'progress'; p: BuildProgress; force: boolean }
  | { t: 'layer'; i: number; of: number; digest: string }
  | { t: 'done'; result: Awaited<ReturnType<typeof buildDisk>> }
  | { t: 'error'; message: string; field: string | null };

const post = (m: WorkerMessage) => parentPort!.postMessage(m);

// one job per thread (a fresh heap for every image): sent as the first message, so a thread can be started
// before its build is asked for
parentPort!.once('message', (job: BuildJob) => { void run(job); });

async function run(job: BuildJob): Promise<void> {
  let last = 0;
  try {
    const result = await buildDisk(job, {
      progress(p, force) {
        const now = performance.now();
        if (!force && now - last < 100) return;
        last = now;
        post({ t: 'progress', p, force });
      },
      layer: (i, of, digest) => post({ t: 'layer', i, of, digest }),
    });
    post({ t: 'done', result });
  } catch (err) {
    const e = asImageError(err, job.imagesDir);
    post({ t: 'error', message: e.message, field: e.field });
  }
}
