#!/usr/bin/env node
// The `ironboot` command (package.json "bin"): runs the TypeScript sources through tsx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
const code = await main(process.argv.slice(2));
if (code !== 0) process.exitCode = code;
