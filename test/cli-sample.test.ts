/**
 * `minigpt sample --interactive`: one sample per line of input with the model loaded once, a new
 * seed per prompt, a prompt it cannot encode reported without ending the session, and clear
 * refusals of flags that do not go together.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkpointToZip } from '../src/io/checkpoint.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { endOfTextModel } from './support/end-of-text-model.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'minigpt-sample-'));
const tokenizer = buildCharTokenizer('hello world!');
const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
const ckpt = join(root, 'model.zip');
writeFileSync(ckpt, await checkpointToZip({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer }));
const sample = (args: string[], input: string) =>
  spawnSync(process.execPath, [CLI, 'sample', '--ckpt', ckpt, '--backend', 'reference', ...args], { input, encoding: 'utf8', timeout: 60_000 });

test('--interactive answers each line with a sample, a new seed per prompt, and goes on past a prompt it cannot encode', () => {
  const r = sample(['--interactive', '--tokens', '12'], 'hello\nhello\nxyz\n\nwor');
  assert.equal(r.status, 1, 'piped prompts, one of which got no sample: exit 1 at the end');
  const lines = r.stdout.split('\n');
  assert.equal(lines.at(-1), '');
  const samples = lines.slice(0, -1);
  assert.equal(samples.length, 4, r.stdout);
  assert.ok(samples[0]!.startsWith('hello') && samples[1]!.startsWith('hello') && samples[3]!.startsWith('wor'), r.stdout);
  for (const [i, prompt] of [[0, 'hello'], [1, 'hello'], [2, ''], [3, 'wor']] as const) {
    assert.equal([...samples[i]!].length, prompt.length + 12, `sample ${i}: ${samples[i]}`);
  }
  assert.notEqual(samples[0], samples[1], 'the second prompt samples with the next seed');
  assert.match(r.stderr, /^minigpt: error: the prompt: character "x" \(U\+0078\) .* is not in the tokenizer's vocabulary/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(sample(['--interactive', '--tokens', '5'], 'hello\nwor\n').status, 0, 'every prompt sampled: exit 0');
  // The first prompt's sample is the one a plain run with the same seed writes.
  const plain = sample(['--prompt', 'hello', '--tokens', '12'], '');
  assert.equal(plain.stdout, `${samples[0]}\n`);
});

test('--interactive with piped prompts stops at once when the reader closes the output or on SIGINT (exit 130), not after the lines already read', async () => {
  const { spawn } = await import('node:child_process');
  // Every other prompt cannot be encoded ('z'): each of those writes an error line to stderr, which counts the prompts handled.
  const prompts = 'hello\nz\n'.repeat(10_000);
  const run = (signal: boolean) => new Promise<{ code: number | null; handled: number }>((done) => {
    const p = spawn(process.execPath, [CLI, 'sample', '--ckpt', ckpt, '--backend', 'reference', '--interactive', '--tokens', '8'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => {
      out += d;
      if (out.split('\n').length > 3) {
        if (signal) p.kill('SIGINT');
        else p.stdout.destroy(); // as `| head` does
      }
    });
    p.stderr.on('data', (d) => (err += d));
    p.stdin.on('error', () => {}); // it may stop reading before all prompts are written
    p.stdin.end(prompts);
    const stuck = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('exit', (code) => {
      clearTimeout(stuck);
      done({ code, handled: err.split('\n').filter((l) => l.startsWith('minigpt: error:')).length });
    });
  });
  // Closed output: exit 1, as the 'z' prompts it handled got no sample; SIGINT: 130.
  for (const [signal, code] of [[false, 1], [true, 130]] as const) {
    const r = await run(signal);
    assert.equal(r.code, code);
    // Well under all 10,000 (which the loop handled before); a loaded machine lets it run on for a while.
    assert.ok(r.handled < 5000, `${r.handled} prompts of 10000 handled after ${signal ? 'SIGINT' : 'the output closed'}`);
  }
});

test('--interactive with --prompt is refused in one line', () => {
  const r = sample(['--interactive', '--prompt', 'hi'], '');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'minigpt: error: --prompt goes without --interactive (type the prompts at the > instead)\n');
});

test('--count N writes N samples of the prompt, sample n with --seed + n, a line "---" between them; not with --interactive', () => {
  const r = sample(['--prompt', 'hello', '--count', '3', '--tokens', '10', '--seed', '5'], '');
  assert.equal(r.status, 0, r.stderr);
  const samples = r.stdout.split('---\n');
  assert.equal(samples.length, 3, r.stdout);
  for (const [n, s] of samples.entries()) {
    const alone = sample(['--prompt', 'hello', '--tokens', '10', '--seed', String(5 + n)], '');
    assert.equal(s, alone.stdout, `sample ${n} is the sample of seed ${5 + n}`);
  }
  const tooBig = sample(['--prompt', 'hello', '--count', '3', '--seed', '9007199254740990'], '');
  assert.equal(tooBig.status, 1);
  assert.equal(tooBig.stdout, '', 'refused before the first sample');
  assert.match(tooBig.stderr, /^minigpt: error: --seed 9007199254740990 with --count 3: the last sample's seed \(--seed \+ 2\) would pass 9007199254740991; use a smaller --seed\n$/);
  const refused = sample(['--interactive', '--count', '2'], 'hello\n');
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /^minigpt: error: --count goes without --interactive/);
});

test('--stop TEXT ends the sample where the generated text reaches it, without writing it, with a note', () => {
  const full = sample(['--prompt', 'hello', '--tokens', '40', '--seed', '2'], '');
  assert.equal(full.status, 0, full.stderr);
  const generated = full.stdout.slice('hello'.length, -1);
  const stop = generated.slice(12, 14);
  const at = generated.indexOf(stop);
  const r = sample(['--prompt', 'hello', '--tokens', '40', '--seed', '2', '--stop', stop], '');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `hello${generated.slice(0, at)}\n`);
  assert.equal(r.stderr, `minigpt: note: the text reached --stop after ${at + 2} tokens\n`);
  // Given twice, either stops it (the first one given used to be dropped): the earlier one here.
  const later = generated.slice(20, 22);
  const both = sample(['--prompt', 'hello', '--tokens', '40', '--seed', '2', '--stop', stop, '--stop', later], '');
  assert.equal(both.stdout, r.stdout);
  const empty = sample(['--prompt', 'hello', '--stop', ''], '');
  assert.equal(empty.status, 1);
  assert.match(empty.stderr, /^minigpt: error: --stop is empty; give it a value \(TEXT\), or leave the flag out\n$/);
});

test('a sample ends where the model ends the text, with a note on stderr; --ignore-eot goes on', async () => {
  const m = endOfTextModel();
  const zip = join(root, 'ends.zip');
  writeFileSync(zip, await checkpointToZip({ config: m.config, weights: m.weights, tokenizer: m.tokenizer }));
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'sample', '--ckpt', zip, '--backend', 'reference', '--prompt', 'p', '--tokens', '4', '--temperature', '0', ...args], { encoding: 'utf8', timeout: 60_000 });
  const ended = run([]);
  assert.equal(ended.status, 0, ended.stderr);
  assert.equal(ended.stdout, 'pa\n');
  assert.equal(ended.stderr, 'minigpt: note: the model ended the text (<|endoftext|>) after 1 token; --ignore-eot goes on past it\n');
  // "a" could begin the stop text, so it is held back until <|endoftext|> brings it out: written, not lost.
  const held = run(['--stop', 'a#']);
  assert.equal(held.status, 0, held.stderr);
  assert.equal(held.stdout, 'pa\n');
  const onward = run(['--ignore-eot']);
  assert.equal(onward.status, 0, onward.stderr);
  assert.equal(onward.stdout, 'pa<|endoftext|><|endoftext|><|endoftext|>\n');
  assert.equal(onward.stderr, '');
});

test('an imported chat model\'s sample ends at its own end-of-text token, and the note names it', async () => {
  const { tokenizerFromJson } = await import('../src/data/tokenizer.js');
  const { hfBpeFixtureTokenizer } = await import('./support/hf-bpe-fixture.js');
  const chat = tokenizerFromJson({ ...hfBpeFixtureTokenizer('smollm-style').toJSON(), eos: '<|im_end|>' }, 'chat');
  const m = endOfTextModel(chat);
  const zip = join(root, 'chat.zip');
  writeFileSync(zip, await checkpointToZip({ config: m.config, weights: m.weights, tokenizer: m.tokenizer }));
  const r = spawnSync(process.execPath, [CLI, 'sample', '--ckpt', zip, '--backend', 'reference', '--prompt', 'p', '--tokens', '4', '--temperature', '0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'pa\n');
  assert.equal(r.stderr, 'minigpt: note: the model ended the text (<|im_end|>) after 1 token; --ignore-eot goes on past it\n');
});

test('--allow-special makes the prompt\'s <|endoftext|> text the token (it counts as one), else it is ordinary text', async () => {
  const m = endOfTextModel();
  const zip = join(root, 'special.zip');
  writeFileSync(zip, await checkpointToZip({ config: m.config, weights: m.weights, tokenizer: m.tokenizer }));
  const prompt = '<|endoftext|>'.repeat(17) + 'p';
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'sample', '--ckpt', zip, '--backend', 'reference', '--prompt', prompt, '--tokens', '2', '--temperature', '0', ...args], { encoding: 'utf8', timeout: 60_000 });
  const special = run(['--allow-special']);
  assert.equal(special.status, 0, special.stderr);
  assert.match(special.stderr, /^minigpt: note: the prompt has 18 tokens; the model sees only its last 16 \(its context\)\n/);
  assert.equal(special.stdout, `${prompt}a\n`);
  const plain = run([]);
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stderr, /^minigpt: note: the prompt has \d{3} tokens/);
});

test('a model trained on lowercased text gets lowercased prompts and texts (sample, eval), with a note; the suggested sample command encodes', () => {
  const text = join(root, 'shouty.txt');
  writeFileSync(text, 'ROMEO: The Cat sat on the Mat. '.repeat(60));
  const run = join(root, 'lower');
  // cwd: train records runs/latest there, which must not be the developer's checkout.
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: root });
  const t = cli(['train', '--data', text, '--clean', 'lowercase', '--out', run, '--steps', '2', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '2', '--backend', 'reference', '--quiet']);
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /next: npx minigpt sample --ckpt \S*lower --prompt "the "\n$/);
  const s = cli(['sample', '--ckpt', run, '--prompt', 'ROMEO: The', '--tokens', '5', '--backend', 'reference']);
  assert.equal(s.status, 0, s.stderr);
  assert.ok(s.stdout.startsWith('romeo: the'), s.stdout);
  assert.equal(s.stderr, "minigpt: note: the prompt is lowercased, as the model's training text was (--clean lowercase)\n");
  const e = cli(['eval', '--ckpt', run, '--text', 'The Cat', '--json', '--backend', 'reference']);
  assert.equal(e.status, 0, e.stderr);
  assert.equal(e.stderr, "minigpt: note: --text is lowercased, as the model's training text was (--clean lowercase)\n");
  const lowered = cli(['eval', '--ckpt', run, '--text', 'the cat', '--json', '--backend', 'reference']);
  assert.equal(e.stdout, lowered.stdout);
  assert.equal(lowered.stderr, '');
  // A run of characters without "T", "h" or "e" is told to sample from an empty prompt.
  const abc = join(root, 'abc.txt');
  writeFileSync(abc, 'abcd abcd '.repeat(100));
  const t2 = cli(['train', '--data', abc, '--out', join(root, 'abc-run'), '--steps', '1', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '2', '--backend', 'reference', '--quiet']);
  assert.equal(t2.status, 0, t2.stderr);
  assert.match(t2.stdout, /next: npx minigpt sample --ckpt \S*abc-run\n$/);
  // --batch means nothing for --text: refused rather than ignored.
  const b = cli(['eval', '--ckpt', run, '--text', 'the cat', '--batch', '4']);
  assert.equal(b.status, 1);
  assert.match(b.stderr, /^minigpt: error: --batch goes with --data/);
});

test('prepare --clean lowercase: a run on those shards lowercases prompts too', () => {
  const text = join(root, 'shouty2.txt');
  writeFileSync(text, 'ROMEO: The Cat sat on the Mat.\n'.repeat(60));
  const shards = join(root, 'lower-shards');
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: root });
  const p = cli(['prepare', '--data', text, '--tokenizer', 'char', '--clean', 'nfc,newlines,lowercase', '--out', shards]);
  assert.equal(p.status, 0, p.stderr);
  const run = join(root, 'lower-from-shards');
  const t = cli(['train', '--data', shards, '--out', run, '--steps', '1', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '2', '--backend', 'reference', '--quiet']);
  assert.equal(t.status, 0, t.stderr);
  const s = cli(['sample', '--ckpt', run, '--prompt', 'ROMEO', '--tokens', '3', '--backend', 'reference']);
  assert.equal(s.status, 0, s.stderr);
  assert.ok(s.stdout.startsWith('romeo'), s.stdout);
});
