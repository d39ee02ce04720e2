#!/usr/bin/env node
/**
 * Runs the test suite (`node --test` on every dist/test/*.test.js, or on the files given) with TMPDIR set to a fresh
 * folder that is removed afterwards: the temporary runs, checkpoints and browser profiles the
 * tests make never pile up in the system's temporary folder. `npm test` runs it after the build.
 *
 *   node scripts/test.mjs                              # the whole suite
 *   node scripts/test.mjs dist/test/train.test.js      # some files
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'minigpt-tests-'));
const args = process.argv.slice(2);
// The files listed, not the folder: Node 22 and later take a folder given to --test as a module.
const suite = readdirSync('dist/test').filter((f) => f.endsWith('.test.js')).sort().map((f) => join('dist/test', f));
const files = args.some((a) => !a.startsWith('-')) ? [] : suite;
// TAP on every Node (24 prints its spec reporter when not on a terminal): CI reads the "# pass" counts.
const child = spawn(process.execPath, ['--test', '--test-reporter=tap', ...args, ...files], {
  stdio: 'inherit',
  env: { ...process.env, TMPDIR: dir },
});
// Ctrl-C reaches the test runner too (same process group); wait for it to end, then clean up.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code, signal) => {
  rmSync(dir, { recursive: true, force: true });
  process.exitCode = code ?? (signal ? 1 : 0);
});
