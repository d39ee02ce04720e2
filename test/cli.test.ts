/** The CLI end to end: init and eval, and one clear line for every mistake. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, computeLogits } from '../src/inference.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const SMALL = ['--d-model', '16', '--n-heads', '2', '--n-layers', '2', '--context', '32'];

test('init writes a checkpoint and eval --json scores text with per-token log-probabilities', async () => {
  const dir = join(await mkdtemp(join(tmpdir(), 'minigpt-cli-')), 'ck');
  const init = run('init', '--out', dir, '--chars', 'abcdefgh .', ...SMALL, '--seed', '5');
  assert.equal(init.code, 0, init.err);
  const r = run('eval', '--ckpt', dir, '--text', 'abc deh.', '--json');
  assert.equal(r.code, 0, r.err);
  const score = JSON.parse(r.out);
  assert.deepEqual(score.ids, [2, 3, 4, 0, 5, 6, 9, 1]);
  assert.equal(score.logprobs.length, 7);
  // Each log-probability is the log-softmax of the logits at the previous position.
  const { model } = await loadModel(dir);
  const logits = await computeLogits(model, score.ids);
  const V = model.config.vocab_size;
  for (let i = 0; i < 7; i++) {
    const row = logits.subarray(i * V, i * V + V);
    const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
    assert.ok(Math.abs(row[score.ids[i + 1]] - lse - score.logprobs[i]) < 1e-5);
  }
  const mean = -score.logprobs.reduce((a: number, b: number) => a + b, 0) / 7;
  assert.ok(Math.abs(score.loss - mean) < 1e-6);
});

test('init takes its vocabulary from --data and the model flags shape the model', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), 'the cat sat on the mat\n');
  const dir = join(root, 'ck');
  const r = run('init', '--out', dir, '--data', join(root, 'corpus.txt'), '--d-model', '24', '--n-heads', '3', '--n-kv-heads', '1', '--n-layers', '1', '--mlp', 'gelu', '--tie-embeddings', '--init', 'xavier-normal');
  assert.equal(r.code, 0, r.err);
  const { model, tokenizer } = await loadModel(dir);
  assert.equal(tokenizer.vocabSize, 11);
  assert.deepEqual(
    [model.config.vocab_size, model.config.d_model, model.config.n_heads, model.config.n_kv_heads, model.config.n_layers, model.config.mlp, model.config.intermediate_size, model.config.tie_embeddings, model.config.init],
    [11, 24, 3, 1, 1, 'gelu', 96, true, 'xavier-normal'],
  );
});

test('every bad invocation prints one error line, no stack trace, and exits 1', async () => {
  const dir = join(await mkdtemp(join(tmpdir(), 'minigpt-cli-')), 'ck');
  assert.equal(run('init', '--out', dir, '--chars', 'ab', ...SMALL).code, 0);
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['init', '--bogus'], /unknown flag --bogus/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--d-model', 'x'], /--d-model must be an integer \(got "x"\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--n-layers', '0'], /--n-layers must be at least 1/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--d-model', '30', '--n-heads', '4'], /--n-heads \(4\) must divide --d-model \(30\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--mlp', 'relu'], /--mlp must be one of swiglu, gelu/],
    [['init', '--out', dir + '2'], /give exactly one of --data FILE or --chars STRING/],
    [['init', '--out', dir + '2', '--data', '/no/such/file.txt'], /no\/such\/file\.txt/],
    [['init', '--out', dir + '2', '--chars'], /--chars needs a value/],
    [['eval', '--text', 'ab'], /--ckpt DIR is required/],
    [['eval', '--ckpt', '/no/such/ckpt', '--text', 'ab'], /does not exist/],
    [['eval', '--ckpt', dir, '--text', 'abz'], /character "z" \(U\+007A\) at line 1, column 3/],
    [['eval', '--ckpt', dir, '--text', 'ab'.repeat(40)], /80 tokens is longer than the model's context of 32/],
    [['eval', '--ckpt', dir, '--text', 'a'], /at least 2/],
  ];
  for (const [args, re] of cases) {
    const r = run(...args);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}, stderr ${r.err}`);
    assert.match(r.err, re, args.join(' '));
    assert.equal(r.err.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.err}`);
    assert.doesNotMatch(r.err, /\s+at\s.+:\d+:\d+/, 'no stack trace');
  }
});

test('--help lists every flag of the command', () => {
  const r = run('init', '--help');
  assert.equal(r.code, 0);
  for (const flag of ['--out', '--data', '--chars', '--seed', '--vocab-size', '--d-model', '--n-heads', '--n-kv-heads', '--n-layers', '--context', '--mlp', '--intermediate-size', '--rms-norm-eps', '--rope-theta', '--tie-embeddings', '--dropout', '--init']) {
    assert.ok(r.out.includes(flag), `init --help mentions ${flag}`);
  }
  assert.match(run('--help').out, /eval/);
});
