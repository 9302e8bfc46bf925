/**
 * The operators' web page in a real browser (Debian's chromium, driven by playwright-core): sign in with
 * #token=…, see machines, container disks and workflows from a real daemon, register a machine through the form,
 * cancel a workflow with its button, and watch the event arrive on the live stream.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { spawnDaemon, tempDir, readyImage } from '../helpers/daemon.ts';
import { Store } from '../../server/store/index.ts';

const CHROMIUM = '/usr/bin/chromium';
/** The page's document, inside waitForFunction callbacks (they run in the browser; no DOM lib on the Node side). */
declare const document: { querySelector(selector: string): { textContent: string | null } | null };

test('the web page lists, registers, cancels and streams events in a real browser', { skip: !existsSync(CHROMIUM) && 'chromium is not installed', timeout: 60_000 }, async (t) => {
  const dir = tempDir(); t.after(dir.remove);
  const s = Store.open(dir.path);
  s.images.insert(readyImage({ id: 'abc123', name: 'busybox-httpd' }));
  s.machines.create({ mac: '52:54:00:12:34:56', hostname: 'node-1', ipv4: { address: '10.77.0.21', prefix: 24, dns: [] } });
  s.close();
  const d = await spawnDaemon(dir.path, [], { IRONBOOT_TOKEN: 'ui-test-token' });
  t.after(() => d.stop());
  const created = await fetch(`${d.url}/api/v1/workflows`, {
    method: 'POST', headers: { authorization: 'Bearer ui-test-token', 'content-type': 'application/json' },
    body: JSON.stringify({ machine: '52:54:00:12:34:56', image: 'busybox-httpd', target: '/dev/vda' }),
  }).then((r) => r.json() as Promise<{ id: string }>);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(`${d.url}/#token=ui-test-token`);
  await page.waitForSelector('#workflows td');
  assert.equal(new URL(page.url()).hash, '', 'the token leaves the address bar');
  assert.match(await page.textContent('#machines') ?? '', /52:54:00:12:34:56\s*node-1\s*10\.77\.0\.21\/24/);
  assert.match(await page.textContent('#images') ?? '', /busybox-httpd\s*ready\s*32\.0 MiB\s*\/bin\/httpd -f -p 80/);
  assert.match(await page.textContent('#workflows') ?? '', new RegExp(`${created.id.slice(0, 8)}\\s*52:54:00:12:34:56\\s*busybox-httpd\\s*pending`));

  // register a machine through the form; a bad MAC shows the API's reason
  await page.fill('#add-machine [name=mac]', 'nonsense');
  await page.click('#add-machine button');
  await page.waitForFunction(() => document.querySelector('#error')!.textContent!.includes('mac:'));
  await page.fill('#add-machine [name=mac]', '52-54-00-aa-bb-cc');
  await page.fill('#add-machine [name=hostname]', 'node-2');
  await page.click('#add-machine button');
  await page.waitForFunction(() => document.querySelector('#machines')!.textContent!.includes('52:54:00:aa:bb:cc'));

  // cancel with the button; the live stream shows the event and the table follows
  await page.click(`button[data-cancel="${created.id}"]`);
  await page.waitForFunction(() => document.querySelector('#log')!.textContent!.includes('cancelled by operator'));
  await page.waitForSelector(`button[data-retry="${created.id}"]`);
  const api = await fetch(`${d.url}/api/v1/workflows/${created.id}`, { headers: { authorization: 'Bearer ui-test-token' } }).then((r) => r.json() as Promise<{ state: string }>);
  assert.equal(api.state, 'cancelled');
  assert.deepEqual(errors, []);
});
