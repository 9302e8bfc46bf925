/**
 * Child of test/integration/p2p-peer-gone.test.ts, run inside a namespace: one GET through the agent's fetchBufferWith
 * (init/agent/steps/peers.ts) to URL, with connectTimeoutMs when given. Prints {ok, error, ms} as JSON.
 */
import { fetchBufferWith } from '../../init/agent/steps/peers.ts';

const [url, connect] = process.argv.slice(2);
const fetch = fetchBufferWith(connect ? { connectTimeoutMs: Number(connect) } : {});
const t0 = Date.now();
fetch(url, {}, 30_000, 1 << 20).then(
  (r) => console.log(JSON.stringify({ ok: true, status: r.status, ms: Date.now() - t0 })),
  (e: Error) => console.log(JSON.stringify({ ok: false, error: e.message, ms: Date.now() - t0 })),
);
