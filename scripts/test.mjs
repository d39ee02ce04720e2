#!/usr/bin/env node
/**
 * Runs the test suite (`node --test dist/test/`, or the files given) with TMPDIR set to a fresh
 * folder that is removed afterwards: the temporary runs, checkpoints and browser profiles the
 * tests make never pile up in the system's temporary folder. `npm test` runs it after the build.
 *
 *   node scripts/test.mjs                              # the whole suite
 *   node scripts/test.mjs dist/test/train.test.js      # some files
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'minigpt-tests-'));
const args = process.argv.slice(2);
const child = spawn(process.execPath, ['--test', ...(args.length > 0 ? args : ['dist/test/'])], {
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
