/**
 * The CLI's dealings with the terminal and the shell: Ctrl-C stops `sample` (exit 130), a reader
 * that goes away (`| head`) ends it quietly (exit 0), `help CMD` and `-v` work, --help has no
 * glitches, and the progress line keeps its numbers on a terminal of unknown width.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatHelp, type CommandSpec } from '../src/cli/args.js';
import { progressLine } from '../src/cli/progress.js';
import { trainCommand } from '../src/cli/commands/train.js';
import { sampleCommand } from '../src/cli/commands/sample.js';
import { evalCommand } from '../src/cli/commands/eval.js';
import { lrFindCommand } from '../src/cli/commands/lr-find.js';
import { plotCommand } from '../src/cli/commands/plot.js';
import { tokenizerCommand } from '../src/cli/commands/tokenizer.js';
import { prepareCommand } from '../src/cli/commands/prepare.js';
import { exportCommand } from '../src/cli/commands/export.js';
import { importCommand } from '../src/cli/commands/import.js';
import { benchCommand } from '../src/cli/commands/bench.js';
import { initCommand } from '../src/cli/commands/init.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = join(HERE, '..', 'src', 'cli', 'main.js');
const PKG = JSON.parse(readFileSync(join(HERE, '..', '..', 'package.json'), 'utf8')) as { version: string };
const root = mkdtempSync(join(tmpdir(), 'minigpt-output-'));
const CKPT = join(root, 'ck');
const TOKENS = 300_000;

const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

interface Finished { code: number | null; signal: NodeJS.Signals | null; out: string; err: string }

/** Starts `sample` on the tiny checkpoint; `onFirstOutput` runs once its first text arrives. */
function sample(onFirstOutput: (child: ReturnType<typeof spawn>) => void): Promise<Finished> {
  const child = spawn(process.execPath, [CLI, 'sample', '--ckpt', CKPT, '--tokens', String(TOKENS), '--backend', 'cpu', '--threads', '1'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '', seen = false;
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => { err += d; });
  child.stdout!.on('data', (d: string) => {
    out += d;
    if (!seen && out.trim().length > 0) {
      seen = true;
      onFirstOutput(child);
    }
  });
  child.stdout!.on('error', () => {});
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, out, err });
    });
  });
}

before(() => {
  const r = run('init', '--out', CKPT, '--chars', 'abcdefgh .', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '32', '--seed', '1');
  assert.equal(r.code, 0, r.err);
});

test('Ctrl-C stops a long sample within moments, with exit code 130', async () => {
  const r = await sample((child) => setTimeout(() => child.kill('SIGINT'), 200));
  assert.equal(r.signal, null, `ended by its own exit, not killed by ${r.signal}; stderr: ${r.err}`);
  assert.equal(r.code, 130, `stderr: ${r.err}`);
  assert.ok(r.out.length > 0 && r.out.length < TOKENS / 2, `stopped early: ${r.out.length} of ${TOKENS} characters`);
  assert.doesNotMatch(r.err, /error|at /i);
});

test('a reader that closes the pipe early ends sample quietly with exit code 0', async () => {
  const r = await sample((child) => child.stdout!.destroy());
  assert.equal(r.signal, null, `ended by its own exit, not killed by ${r.signal}; stderr: ${r.err}`);
  assert.equal(r.code, 0, `stderr: ${r.err}`);
  assert.doesNotMatch(r.err, /EPIPE|Error|\n\s+at /);
  assert.equal(r.err.trim(), '');
});

test('`help CMD` prints the command\'s help, like `CMD --help`; an unknown CMD is an error', () => {
  const viaHelp = run('help', 'train');
  const viaFlag = run('train', '--help');
  assert.equal(viaHelp.code, 0, viaHelp.err);
  assert.equal(viaFlag.code, 0, viaFlag.err);
  assert.equal(viaHelp.out, viaFlag.out);
  assert.match(viaHelp.out, /--steps/);
  const bad = run('help', 'frobnicate');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /^minigpt: error: unknown command "frobnicate"/);
  assert.equal(bad.err.trim().split('\n').length, 1);
  assert.match(run('help').out, /Commands:/);
});

test('-v, -V, version and --version print the version in package.json', () => {
  for (const flag of ['-v', '-V', 'version', '--version']) {
    const r = run(flag);
    assert.equal(r.code, 0, `${flag}: ${r.err}`);
    assert.equal(r.out.trim(), `minigpt ${PKG.version}`, flag);
  }
});

test('--help shows no empty "(default )" and one parenthesis per flag', () => {
  const commands: CommandSpec[] = [trainCommand, sampleCommand, evalCommand, lrFindCommand, plotCommand, tokenizerCommand, prepareCommand, exportCommand, importCommand, benchCommand, initCommand];
  for (const cmd of commands) {
    const help = formatHelp(cmd);
    assert.ok(!help.includes('(default )'), `${cmd.name} --help has "(default )"`);
    assert.ok(!/default[:]? \)/.test(help), `${cmd.name} --help has an empty default`);
    assert.ok(!/\) \((one of|default)/.test(help), `${cmd.name} --help has two parentheses in a row`);
  }
  const help = formatHelp({
    name: 'x', summary: 's', usage: 'u', run: async () => {},
    flags: {
      prompt: { type: 'string', value: 'TEXT', description: 'text to continue', default: '' },
      tokens: { type: 'int', value: 'N', description: 'tokens to generate', default: 200 },
      temperature: { type: 'number', value: 'T', description: 'sampling temperature (0: greedy)', default: 0.8 },
    },
  });
  assert.match(help, /text to continue\n/);
  assert.match(help, /tokens to generate \(default: 200\)/);
  assert.match(help, /sampling temperature \(0: greedy; default: 0\.8\)/);
  assert.match(run('sample', '--help').out, /--prompt TEXT +text to continue\n/);
});

test('the progress line keeps its numbers on a terminal that reports width 0 or none', () => {
  for (const columns of [0, undefined, 10, 60, 200]) {
    let written = '';
    const stream = { isTTY: true, columns, write: (s: string) => { written += s; return true; } } as unknown as NodeJS.WriteStream;
    const bar = progressLine(stream);
    const fields = 'loss 2.3456 lr 3.00e-4 12.3k tok/s ETA 1m05s';
    bar.update(37, 1000, fields);
    assert.ok(written.includes(`37/1000 ${fields}`), `columns ${columns}: ${JSON.stringify(written)}`);
    if (columns === 0 || columns === undefined || columns === 200) assert.match(written, /[█░]{8,} 37\/1000/, `columns ${columns}: a bar`);
    if (columns === 60) assert.ok(written.length <= 59 && !/[█░]/.test(written), `columns 60: the numbers without the bar: ${JSON.stringify(written)}`);
    bar.done();
  }
});
