/** Step 8: what happens after the workflow ended (only once the final status reached the server). */
import { spawn } from 'node:child_process';
import type { After } from '../cmdline.ts';
import { bb, PATHS, sleep } from '../sys.ts';

const forever = (): Promise<never> => new Promise(() => { setInterval(() => {}, 1 << 30); });

/** A shell on the console, started again when it exits (never returns). */
export async function consoleShell(say: (m: string) => void): Promise<never> {
  for (;;) {
    say('starting a shell on the console (exit it to get a new one)');
    const t0 = Date.now();
    await new Promise<void>((resolve) => {
      const sh = spawn(PATHS.busybox, ['cttyhack', '/bin/sh', '-l'], { stdio: 'inherit', env: { ...process.env, PS1: 'ironboot# ', PATH: '/bin:/sbin:/usr/bin:/usr/sbin:/lib/ironboot/bin' } });
      sh.on('error', () => resolve());
      sh.on('close', () => resolve());
    });
    if (Date.now() - t0 < 2000) await sleep(5000);   // no console input (e.g. headless): do not spin
  }
}

export async function doAfter(action: After, say: (m: string) => void): Promise<void> {
  switch (action) {
    case 'reboot':
    case 'poweroff':
      say(`${action} now`);
      await bb('sync', []);
      await bb(action, ['-f']);
      return forever();
    case 'wait':
      say('done; waiting (the entrypoint\'s orphans keep running)');
      return forever();
    case 'shell':
    default:
      return consoleShell(say);
  }
}
