/**
 * The agent's side of the token exchange against the real agent routes on 127.0.0.1: hello presents the boot token
 * and from then on the agent (reporter, image download: cfg.token) uses the session token it got back; the boot
 * token does not say hello twice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inProcessApp, readyImage, tempDir } from '../helpers/daemon.ts';
import { AgentTokens } from '../../server/workflows/tokens.ts';
import { parseAgentConfig } from '../../init/agent/cmdline.ts';
import { sayHello, savedSessionToken } from '../../init/agent/steps/hello.ts';
import { EventReporter } from '../../init/agent/reporter.ts';

const quiet = { say: () => {}, warn: () => {} };
const MAC = '52:54:00:88:00:01';

test('hello swaps cfg.token for the session token (kept for a respawn); events go with it; a second hello is refused', async (t) => {
  const ctx = await inProcessApp();
  t.after(() => ctx.close());
  const tmp = tempDir(); t.after(tmp.remove);
  ctx.store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  ctx.store.machines.create({ mac: MAC, ipv4: { address: '127.0.0.1', prefix: 8, dns: [] } });
  const wf = ctx.workflows.create({ mac: MAC, image: 'web', target: 'ram' });
  const bootToken = new AgentTokens(ctx.store).issueBoot(wf.id, '127.0.0.1');
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const server = `http://127.0.0.1:${(ctx.app.server.address() as { port: number }).port}`;

  const cfg = parseAgentConfig(`ironboot.server=${server} ironboot.workflow=${wf.id} ironboot.token=${bootToken} ironboot.mac=${MAC}`);
  const net = { iface: 'eth0', mac: MAC, ip: '127.0.0.1', prefix: 8, router: null, dns: [], hostname: null, domain: null };
  const sessionFile = join(tmp.path, 'run', 'session-token');
  const spec = await sayHello(cfg, net, () => {}, { inventory: {}, sessionFile, deadlineMs: 2000 });
  assert.equal(spec.workflowId, wf.id);
  assert.ok(spec.sessionToken);
  assert.equal(cfg.token, spec.sessionToken, 'cfg.token is now the session token');
  assert.equal(readFileSync(sessionFile, 'utf8'), spec.sessionToken);
  assert.equal(savedSessionToken(sessionFile), spec.sessionToken);

  const rep = new EventReporter({ server, workflowId: wf.id, token: () => cfg.token!, console: quiet, batchDelayMs: 5 });
  assert.equal(await rep.final({ state: 'streaming' }, { maxAttempts: 3 }), true);
  assert.equal(rep.serverState, 'streaming', 'the server accepted the events with the session token');

  const replay = parseAgentConfig(`ironboot.server=${server} ironboot.workflow=${wf.id} ironboot.token=${bootToken} ironboot.mac=${MAC}`);
  await assert.rejects(sayHello(replay, net, () => {}, { inventory: {}, sessionFile: null, deadlineMs: 2000 }), /hello refused: HTTP 409 .*already exchanged/);
});
