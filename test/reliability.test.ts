/** Nothing is lost: kills at random moments, interrupted saves, and fuzzed loaders. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile, readFile, rename, readdir, mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint.js';
import { tokenizerFromJson } from '../src/data/tokenizer.js';
import { MinigptError } from '../src/errors.js';
import { createRng } from '../src/util/random.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { caseSeed, createFuzzContext, mutate, runFuzzCase, FUZZ_TARGETS } from './support/fuzz.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const CORPUS = Array.from({ length: 200 }, (_, i) => `the ${['cat', 'dog'][i % 2]} sat on the mat.`).join('\n');

test('SIGKILL at random moments never leaves a checkpoint that fails to load or resume', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-kill-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const run = join(root, 'run');
  const rng = createRng(11);
  const common = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '2', '--backend', 'reference', '--sample-every', '0', '--eval-every', '0', '--save-every', '1'];
  const start = (args: string[]) => spawn(process.execPath, [CLI, 'train', ...args, ...common], { cwd: root, stdio: 'ignore' });
  // First run: wait for its first checkpoint, then kill it.
  let child = start(['--data', join(root, 'corpus.txt'), '--out', run, '--steps', '100000']);
  for (let t = 0; t < 200; t++) {
    if (await stat(join(run, 'checkpoint', 'manifest.json')).then(() => true, () => false)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  let lastStep = -1;
  for (let kill = 0; kill < 12; kill++) {
    await new Promise((r) => setTimeout(r, 200 + rng.int(800)));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    const ckpt = await loadCheckpoint(join(run, 'checkpoint'), { training: true });
    assert.ok(ckpt.training!.step >= lastStep, `step went back from ${lastStep} to ${ckpt.training!.step}`);
    assert.ok(ckpt.weights.every(Number.isFinite));
    lastStep = ckpt.training!.step;
    child = start(['--resume', run]);
  }
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  assert.ok(lastStep > 0);
  // Each resume dropped the records its checkpoint did not keep: every step is logged once, in
  // order; only the last line may be one cut short by the last kill.
  const lines = (await readFile(join(run, 'metrics.jsonl'), 'utf8')).split('\n').filter((l) => l.trim());
  const records = lines.flatMap((l, i) => {
    try {
      return [JSON.parse(l) as { step: number; loss?: number }];
    } catch (e) {
      if (i === lines.length - 1) return [];
      throw e;
    }
  });
  const steps = records.filter((r) => typeof r.loss === 'number').map((r) => r.step);
  assert.ok(steps.length > 0);
  assert.ok(steps.every((s, i) => i === 0 || s > steps[i - 1]), `train-loss steps not increasing: ${steps.join(' ')}`);
});

test('a save interrupted between its two renames is recovered on the next load', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-recover-'));
  const dir = join(root, 'checkpoint');
  const config = resolveConfig({ vocab_size: 4, d_model: 8, n_heads: 2, n_layers: 1, context: 8 });
  const weights = initialWeights(config, paramLayout(config), createRng(1));
  await saveCheckpoint(dir, { config, weights, tokenizer: buildCharTokenizer('abcd') });
  await rename(dir, join(root, '.checkpoint.old-999999-abcd1234'));
  const back = await loadCheckpoint(dir);
  assert.deepEqual(back.weights, weights);
  assert.deepEqual((await readdir(root)).sort(), ['checkpoint']);
  // Left by a process with this one's pid (a restarted container hands out the same pids): not
  // this process's own staging, so it is recovered too.
  await rename(dir, join(root, `.checkpoint.old-${process.pid}-abcd1234`));
  assert.deepEqual((await loadCheckpoint(dir)).weights, weights);
  assert.deepEqual((await readdir(root)).sort(), ['checkpoint']);
});

test('a prepare interrupted between its two renames leaves shards that training finds (put back from their hidden name)', async () => {
  const { prepareShards, isShardDir, openShards } = await import('../src/data/shards.js');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-recover-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const out = join(root, 'shards');
  await prepareShards({ data: join(root, 'corpus.txt'), out, tokenizer: 'char' });
  await rename(out, join(root, '.shards.old-999999-abcd1234'));
  assert.ok(await isShardDir(out));
  const opened = await openShards(out);
  assert.ok(opened.train.length > 0);
  opened.close();
  assert.deepEqual((await readdir(root)).sort(), ['corpus.txt', 'shards']);
});

test('fuzzed tokenizer JSON (2000 mutations of char, bpe and gpt2 files) gives a tokenizer or a MinigptError, nothing else', async () => {
  const { trainBpe } = await import('../src/data/bpe.js');
  const sources = [
    JSON.stringify(buildCharTokenizer('hello world, é 😀').toJSON()),
    JSON.stringify(trainBpe(CORPUS, { vocabSize: 270 }).toJSON()),
    JSON.stringify({ type: 'gpt2' }),
  ].map((s) => new TextEncoder().encode(s));
  const rng = createRng(5);
  let parsed = 0;
  for (let i = 0; i < 2000; i++) {
    const text = new TextDecoder().decode(mutate(sources[i % 3], rng));
    let json: unknown;
    try { json = JSON.parse(text); } catch { continue; }
    parsed++;
    try {
      const t = tokenizerFromJson(json, 'fuzz.json');
      t.decode(t.encode('hello'.slice(0, rng.int(5))));
    } catch (e) {
      assert.ok(e instanceof MinigptError, `mutation ${i}: ${(e as Error).stack}`);
    }
  }
  assert.ok(parsed > 100);
});

test('fuzzed checkpoints (300 mutated files) load or fail with a MinigptError, nothing else', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-fuzz-'));
  const good = join(root, 'good');
  const config = resolveConfig({ vocab_size: 6, d_model: 8, n_heads: 2, n_layers: 1, context: 8 });
  await saveCheckpoint(good, { config, weights: initialWeights(config, paramLayout(config), createRng(2)), tokenizer: buildCharTokenizer('abcdef'), training: { step: 1, m: new Float32Array(paramLayout(config).size), v: new Float32Array(paramLayout(config).size), trainer: {} } });
  const files = (await readdir(good)).filter((f) => f !== 'manifest.json');
  const rng = createRng(9);
  for (let i = 0; i < 300; i++) {
    const dir = join(root, `m${i}`);
    await mkdir(dir);
    for (const f of await readdir(good)) await writeFile(join(dir, f), await readFile(join(good, f)));
    const victim = files[rng.int(files.length)];
    await writeFile(join(dir, victim), mutate(await readFile(join(good, victim)), rng));
    // Half the time without the manifest, so the parsers themselves meet the damage.
    if (i % 2) await rm(join(dir, 'manifest.json'));
    try {
      await loadCheckpoint(dir, { training: true });
    } catch (e) {
      assert.ok(e instanceof MinigptError, `mutation ${i} of ${victim}: ${(e as Error).stack}`);
    }
  }
});

test('fuzzed loaders (1500 random and mutated cases over safetensors, checkpoint, checkpoint zip, shards, tokenizer) load or fail with a MinigptError', async () => {
  const ctx = await createFuzzContext(await mkdtemp(join(tmpdir(), 'minigpt-fuzz-all-')));
  const counts: Record<string, number> = {};
  for (let i = 0; i < 1500; i++) {
    const target = FUZZ_TARGETS[i % FUZZ_TARGETS.length]!;
    const outcome = await runFuzzCase(target, caseSeed(17, i), ctx).catch((e: Error) => assert.fail(`case ${i} (${target}, seed 17; replay with node scripts/fuzz.mjs --seed 17 --case ${i}): ${e.stack}`));
    counts[`${target} ${outcome}`] = (counts[`${target} ${outcome}`] ?? 0) + 1;
  }
  // Both outcomes happen for every target, or the mutations are too weak (or too strong) to test anything.
  for (const target of FUZZ_TARGETS) {
    assert.ok(counts[`${target} rejected`]! > 0 && counts[`${target} loaded`]! > 0, JSON.stringify(counts));
  }
});
