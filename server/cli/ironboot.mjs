#!/usr/bin/env node
// The `ironboot` command (package.json "bin"): runs the TypeScript sources through tsx.
import { register } from 'tsx/esm/api';

// Image builds decode and encode in libuv's thread pool (2 threads each while they run): a larger pool keeps
// file reads and writes elsewhere in the daemon from queueing behind them. Read when the pool starts, i.e. now.
process.env.UV_THREADPOOL_SIZE ??= '16';

register();
const { main } = await import('./main.ts');
const code = await main(process.argv.slice(2));
if (code !== 0) process.exitCode = code;
