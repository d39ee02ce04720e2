/**
 * The scale-out path: scripts/train_ddp.py continues training an HF export on llm.c-format
 * shards with torchrun (2 CPU processes over gloo, DDP and FSDP2); the loss must go down and
 * the result must import back and score the text better than before. Skips without the venv.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportHf, readHfTensors } from '../src/io/hf.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { importCommand } from '../src/cli/commands/import.js';
import { loadModel, scoreText } from '../src/inference.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function findPython(modules: string[]): { python?: string; skip?: string } {
  const python = process.env.MINIGPT_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `no Python venv at ${python} (run scripts/setup-venv.sh or set MINIGPT_PYTHON)` };
  const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} lacks ${modules.join(', ')}: ${(r.stderr || '').trim().split('\n').pop()}` };
  return { python };
}

/** llm.c's token file: 256 int32 header (magic, version 1 = uint16, count), then the tokens. */
function shard(ids: ArrayLike<number>): Buffer {
  const header = new Int32Array(256);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = ids.length;
  return Buffer.concat([Buffer.from(header.buffer), Buffer.from(Uint16Array.from(ids).buffer)]);
}

/** Runs train_ddp.py under torchrun on 2 processes; `interruptWhen`: Ctrl-C (SIGINT to torchrun, which passes it on to its workers) once stdout matches it. */
function torchrun(python: string, args: string[], opts: { timeoutMs?: number; interruptWhen?: RegExp } = {}): Promise<{ code: number | null; out: string; err: string }> {
  const timeoutMs = opts.timeoutMs ?? 240_000;
  return new Promise((res) => {
    // torchrun is `python -m torch.distributed.run`; the venv's python finds it without PATH.
    // Its own process group, so a timeout ends the workers too (they hold the output pipes).
    const p = spawn(python, ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', join(ROOT, 'scripts', 'train_ddp.py'), ...args], {
      env: { ...process.env, OMP_NUM_THREADS: '1', TOKENIZERS_PARALLELISM: 'false' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '', err = '';
    let interrupted = false;
    p.stdout.on('data', (d) => {
      out += d;
      if (opts.interruptWhen && !interrupted && opts.interruptWhen.test(out)) {
        interrupted = true;
        p.kill('SIGINT');
      }
    });
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      err += `\n[test] timed out after ${timeoutMs / 1000} s; stopped`;
      // SIGTERM lets torchrun stop its workers (they run in sessions of their own).
      p.kill('SIGTERM');
      setTimeout(() => p.kill('SIGKILL'), 10_000).unref();
    }, timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      try {
        process.kill(-p.pid!, 'SIGKILL'); // stray workers, if any
      } catch {
        // none left
      }
      setTimeout(() => res({ code, out, err }), 100);
    });
  });
}

const py = findPython(['torch', 'transformers', 'numpy']);

/** A small GQA model exported to ROOT/hf (and saved as a checkpoint in ROOT/before), and two train shards and a val shard of its text in ROOT/shards. */
async function exportedModelAndShards(prefix: string) {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(100);
  const tokenizer = buildCharTokenizer(text);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 32 });
  const weights = initialWeights(config, paramLayout(config), createRng(1));
  await exportHf({ config, weights, tokenizer }, join(root, 'hf'));
  await saveCheckpoint(join(root, 'before'), { config, weights, tokenizer });
  await mkdir(join(root, 'shards'));
  const ids = tokenizer.encode(text);
  await writeFile(join(root, 'shards', 'train_000000.bin'), shard(ids.subarray(0, 3000)));
  await writeFile(join(root, 'shards', 'train_000001.bin'), shard(ids.subarray(3000, 4000)));
  await writeFile(join(root, 'shards', 'val_000000.bin'), shard(ids.subarray(4000)));
  return { root, text };
}

/** train_ddp.py run as one process, without torchrun. */
const trainDdp = (python: string, args: string[]) => spawnSync(python, [join(ROOT, 'scripts', 'train_ddp.py'), ...args], {
  encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' },
});

/** train_ddp.py's JSON lines. */
const jsonLines = (out: string) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

test('torchrun (2 CPU processes, gloo) continues training an export on shards; the result imports (DDP and FSDP)', { skip: py.skip }, async () => {
  const { root, text } = await exportedModelAndShards('minigpt-ddp-');
  const common = ['--model', join(root, 'hf'), '--data', join(root, 'shards'), '--batch', '4', '--lr', '1e-2', '--log-every', '1', '--eval-batches', '2', '--dist-timeout', '120'];
  const runs = [
    // Gradient accumulation: DDP's no_sync and FSDP's set_requires_gradient_sync on all but the last micro-batch.
    await torchrun(py.python!, [...common, '--out', join(root, 'out-ddp'), '--steps', '20', '--strategy', 'ddp', '--accum', '2']),
    await torchrun(py.python!, [...common, '--out', join(root, 'out-fsdp'), '--steps', '10', '--strategy', 'fsdp', '--accum', '2']),
  ];
  const before = (await scoreText(await loadModel(join(root, 'before'), { backend: 'reference' }), text.slice(0, 30))).loss;
  for (const [i, strategy] of ['ddp', 'fsdp'].entries()) {
    const r = runs[i]!;
    assert.equal(r.code, 0, `${strategy}: train_ddp.py failed:\n${r.err.slice(-3000)}`);
    const lines = jsonLines(r.out);
    const start = lines.find((l) => l.event === 'start');
    assert.equal(start.world_size, 2);
    assert.equal(start.backend, 'gloo');
    assert.equal(start.strategy, strategy);
    assert.equal(start.tokens_per_step, 4 * 2 * 32 * 2);
    const losses = lines.filter((l) => typeof l.loss === 'number').map((l) => l.loss as number);
    const first = losses[0]!, last = losses[losses.length - 1]!;
    assert.ok(last < first * 0.8, `${strategy}: loss went ${first} -> ${last}`);
    const val = lines.find((l) => typeof l.val_loss === 'number');
    assert.ok(val, `${strategy}: no val_loss logged`);

    const ckpt = join(root, `imported-${strategy}`);
    await importCommand.run({ from: join(root, `out-${strategy}`), out: ckpt }, []);
    const after = (await scoreText(await loadModel(ckpt, { backend: 'reference' }), text.slice(0, 30))).loss;
    console.log(`# ${strategy}: torchrun loss ${first.toFixed(3)} -> ${last.toFixed(3)}, val ${val.val_loss.toFixed(3)}; minigpt on the imported result: ${before.toFixed(3)} -> ${after.toFixed(3)}`);
    assert.ok(after < before * 0.8, `${strategy}: the imported model scores ${after}, the original ${before}`);
  }
});

test('train_ddp.py saves when stopped, and --resume continues exactly: a DDP run stopped by Ctrl-C and resumed ends with the weights of one run straight through; FSDP and another world size resume too', { skip: py.skip }, async () => {
  const { root } = await exportedModelAndShards('minigpt-ddp-resume-');
  const steps = 200;
  const common = ['--model', join(root, 'hf'), '--data', join(root, 'shards'), '--batch', '4', '--lr', '1e-2', '--log-every', '1', '--eval-batches', '1', '--dist-timeout', '120'];
  // Periodic saves and evaluations in the run straight through: they change nothing in its training.
  const straight = await torchrun(py.python!, [...common, '--out', join(root, 'straight'), '--steps', String(steps), '--save-every', '50', '--eval-every', '50']);
  assert.equal(straight.code, 0, straight.err.slice(-3000));

  // The same command with --resume, first while --out holds nothing: it starts from --model.
  const again = [...common, '--out', join(root, 'resumed'), '--steps', String(steps), '--resume'];
  const stopped = await torchrun(py.python!, again, { interruptWhen: /"step": 5,/ });
  const stopLine = stopped.err.split('\n').find((l) => l.startsWith('train_ddp.py: stopped at step'));
  assert.ok(stopLine, `no stop line (exit ${stopped.code}):\n${stopped.err.slice(-3000)}`);
  const stoppedAt = Number(/step (\d+) of 200/.exec(stopLine)![1]);
  assert.ok(stoppedAt >= 5 && stoppedAt < steps, stopLine);
  assert.match(stopLine, /; --out \S+resumed holds the run: the same command with --resume continues it$/);
  assert.ok(!jsonLines(stopped.out).some((l) => l.event === 'start' && 'resumed_from' in l), 'the first run starts from --model');
  const saved = JSON.parse(await readFile(join(root, 'resumed', 'trainer_state.json'), 'utf8'));
  assert.equal(saved.step, stoppedAt);
  assert.equal(saved.world_size, 2);
  assert.equal(saved.data_positions.length, 2);

  const resumed = await torchrun(py.python!, again);
  assert.equal(resumed.code, 0, resumed.err.slice(-3000));
  const start = jsonLines(resumed.out).find((l) => l.event === 'start');
  assert.equal(start.resumed_from, stoppedAt);
  assert.equal(start.data_windows, 'continued');
  assert.deepEqual(start.changed, {});
  assert.equal(jsonLines(resumed.out).find((l) => typeof l.loss === 'number').step, stoppedAt + 1);
  assert.ok((await readFile(join(root, 'resumed', 'model.safetensors'))).equals(await readFile(join(root, 'straight', 'model.safetensors'))),
    `the run stopped at step ${stoppedAt} and resumed differs from the one run straight through`);
  const [a, b] = await Promise.all(['straight', 'resumed'].map(async (d) => JSON.parse(await readFile(join(root, d, 'trainer_state.json'), 'utf8'))));
  assert.deepEqual(b.data_positions, a.data_positions);

  // Training on: a larger --steps, FSDP on the DDP save (the saved state is whole, by parameter
  // name), then one process (another world size: fresh windows); the schedule stays the run's.
  const fsdp = await torchrun(py.python!, [...again.filter((f) => f !== '--steps' && f !== String(steps)), '--steps', String(steps + 5), '--strategy', 'fsdp']);
  assert.equal(fsdp.code, 0, fsdp.err.slice(-3000));
  assert.deepEqual(jsonLines(fsdp.out).filter((l) => typeof l.loss === 'number').map((l) => l.step), [201, 202, 203, 204, 205]);
  assert.deepEqual(jsonLines(fsdp.out).find((l) => l.event === 'start').changed, { steps: [steps, steps + 5] });
  const single = trainDdp(py.python!, ['--data', join(root, 'shards'), '--out', join(root, 'resumed'), '--resume', '--steps', String(steps + 8), '--log-every', '1']);
  assert.equal(single.status, 0, single.stderr);
  const singleStart = jsonLines(single.stdout).find((l) => l.event === 'start');
  assert.equal(singleStart.resumed_from, steps + 5);
  assert.equal(singleStart.data_windows, 'new: the save was made by 2 processes, this run has 1');
  const logged = jsonLines(single.stdout).filter((l) => typeof l.loss === 'number');
  assert.deepEqual(logged.map((l) => l.step), [206, 207, 208]);
  const saves = JSON.parse(await readFile(join(root, 'resumed', 'trainer_state.json'), 'utf8'));
  assert.deepEqual([saves.step, saves.steps, saves.batch, saves.lr, saves.world_size], [steps + 8, steps + 8, 4, 0.01, 1]);
  assert.ok(Math.abs(logged[0].lr - 0.001 - 0.5 * (0.01 - 0.001) * (1 + Math.cos(Math.PI * (206 - 20) / (208 - 20)))) < 1e-12, `lr ${logged[0].lr}: --lr and the warmup (20) kept`);

  // The save's metrics.jsonl holds the whole run's records, each step once across the stop and the resumes: minigpt plot draws it.
  const { readMetrics } = await import('../src/train/plot.js');
  const history = await readMetrics(join(root, 'resumed', 'metrics.jsonl'));
  assert.deepEqual(history.filter((r) => typeof r.loss === 'number').map((r) => r.step), Array.from({ length: steps + 8 }, (_, i) => i + 1));
  assert.deepEqual(history.filter((r) => typeof r.val_loss === 'number').map((r) => r.step), [steps, steps + 5, steps + 8]);

  // Done already: the same command again says so and leaves --out as it is.
  const done = trainDdp(py.python!, ['--data', join(root, 'shards'), '--out', join(root, 'resumed'), '--resume', '--steps', String(steps + 8)]);
  assert.equal(done.status, 0, done.stderr);
  assert.match(done.stderr.trim(), /^train_ddp\.py: the run in --out \S+ is at step 208 of --steps 208 already: nothing to train \(give a larger --steps to go on\)$/);
  assert.equal(done.stdout, '');

  // The imported result is minigpt's again.
  await importCommand.run({ from: join(root, 'resumed'), out: join(root, 'imported') }, []);
  assert.ok(existsSync(join(root, 'imported')));
});

/** train_ddp.py's check that the shards were made with the model's tokenizer (prints "same" when they were). */
function checkShardsMatchModel(shards: string, hfDir: string, vocab: number) {
  return spawnSync(py.python!, ['-c',
    `import sys; sys.path.insert(0, sys.argv[1]); import train_ddp; train_ddp.check_shards_match_model(sys.argv[2], sys.argv[3], ${vocab}); print("same")`,
    join(ROOT, 'scripts'), shards, hfDir], { encoding: 'utf8' });
}

test('train_ddp.py refuses shards made with another BPE of the same size, and takes the model\'s own', { skip: py.skip }, async () => {
  const { trainBpe } = await import('../src/data/bpe.js');
  const { prepareShards } = await import('../src/data/shards.js');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-bpe-'));
  const textA = 'the quick brown fox jumps over the lazy dog. '.repeat(40), textB = 'pack my box with five dozen liquor jugs! '.repeat(40);
  const [own, other] = [trainBpe(textA, { vocabSize: 280 }), trainBpe(textB, { vocabSize: 280 })];
  const config = resolveConfig({ vocab_size: own.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer: own }, join(root, 'hf'));
  await writeFile(join(root, 'a.txt'), textA);
  for (const [name, tokenizer] of [['own', own], ['other', other]] as const) {
    await prepareShards({ data: join(root, 'a.txt'), out: join(root, name), tokenizer });
  }
  const check = (shards: string) => checkShardsMatchModel(shards, join(root, 'hf'), 280);
  const same = check(join(root, 'own'));
  assert.equal(same.status, 0, same.stderr);
  assert.equal(same.stdout.trim(), 'same');
  const differ = check(join(root, 'other'));
  assert.equal(differ.status, 1);
  assert.match(differ.stderr.trim(), /^train_ddp\.py: the shards' BPE merges differ from the model's \(first at merge \d+ of 23 \/ 23\): prepare the shards with the model's tokenizer$/);
});

test('train_ddp.py takes shards made with an imported (hf-bpe) tokenizer for its model, and refuses another\'s', { skip: py.skip }, async () => {
  const { prepareShards } = await import('../src/data/shards.js');
  const { hfBpeFixtureTokenizer } = await import('./support/hf-bpe-fixture.js');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-hfbpe-'));
  const { tokenizerFromJson } = await import('../src/data/tokenizer.js');
  const own = hfBpeFixtureTokenizer('smollm-style'), other = hfBpeFixtureTokenizer('gpt2-style');
  // The same vocabulary and merges, but digits not split first: other tokens for "12".
  const undigited = tokenizerFromJson({ ...own.toJSON(), pretokenizer: 'gpt2' }, 'undigited');
  const config = resolveConfig({ vocab_size: 704, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer: own }, join(root, 'hf'));
  await writeFile(join(root, 'a.txt'), 'the quick brown fox jumps over the lazy dog 12 times. '.repeat(40));
  for (const [name, tokenizer] of [['own', own], ['other', other], ['undigited', undigited]] as const) {
    await prepareShards({ data: join(root, 'a.txt'), out: join(root, name), tokenizer });
  }
  const check = (shards: string) => checkShardsMatchModel(shards, join(root, 'hf'), 704);
  const same = check(join(root, 'own'));
  assert.equal(same.status, 0, same.stderr);
  assert.equal(same.stdout.trim(), 'same');
  for (const name of ['other', 'undigited']) {
    const differ = check(join(root, name));
    assert.equal(differ.status, 1, name);
    assert.match(differ.stderr.trim(), SHARDS_TOKENIZER_DIFFERS, name);
  }
});

const SHARDS_TOKENIZER_DIFFERS = /^train_ddp\.py: the shards' tokenizer differs from the model's \(its vocabulary, merges, special tokens, pre-tokenizer or start-of-text token\): prepare the shards with the model's tokenizer$/;

test('train_ddp.py takes shards made with an imported sp-bpe (Llama 2-style) tokenizer for its model, and refuses them without its "<s>"', { skip: py.skip }, async () => {
  const { prepareShards } = await import('../src/data/shards.js');
  const { spBpeFixtureTokenizer } = await import('./support/sp-bpe-fixture.js');
  const { tokenizerFromJson } = await import('../src/data/tokenizer.js');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-spbpe-'));
  const own = spBpeFixtureTokenizer('llama-style');
  const { addBos: _, ...json } = own.toJSON();
  const noStart = tokenizerFromJson(json, 'no <s>');
  const config = resolveConfig({ vocab_size: 1024, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer: own }, join(root, 'hf'));
  await writeFile(join(root, 'a.txt'), 'the quick brown fox jumps over the lazy dog 12 times.\n'.repeat(40));
  for (const [name, tokenizer] of [['own', own], ['no-start', noStart]] as const) await prepareShards({ data: join(root, 'a.txt'), out: join(root, name), tokenizer });
  const same = checkShardsMatchModel(join(root, 'own'), join(root, 'hf'), 1024);
  assert.equal(same.status, 0, same.stderr);
  assert.equal(same.stdout.trim(), 'same');
  const differ = checkShardsMatchModel(join(root, 'no-start'), join(root, 'hf'), 1024);
  assert.equal(differ.status, 1);
  assert.match(differ.stderr.trim(), SHARDS_TOKENIZER_DIFFERS);
});

test('train_ddp.py checks its setup before training (--out, --seq-len, short or foreign shards), follows minigpt\'s learning-rate schedule, takes a glob\'s val_*.bin as validation, and a SIGTERM saves the run (one line, exit 130); --resume refuses what is no save', { skip: py.skip }, async () => {
  const { learningRate } = await import('../src/train/schedule.js');
  const { stat } = await import('node:fs/promises');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-setup-'));
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40);
  const tokenizer = buildCharTokenizer(text);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer }, join(root, 'hf'));
  const ids = tokenizer.encode(text);
  await mkdir(join(root, 'shards'));
  await writeFile(join(root, 'shards', 'train_000000.bin'), shard(ids.subarray(0, 1500)));
  await writeFile(join(root, 'shards', 'val_000000.bin'), shard(ids.subarray(1500)));
  await mkdir(join(root, 'short-val'));
  await writeFile(join(root, 'short-val', 'train_000000.bin'), shard(ids.subarray(0, 1500)));
  await writeFile(join(root, 'short-val', 'val_000000.bin'), shard(ids.subarray(1500, 1510)));
  await mkdir(join(root, 'llmc')); // llm.c's own names for its shards
  await writeFile(join(root, 'llmc', 'tiny_train.bin'), shard(ids.subarray(0, 1500)));
  await writeFile(join(root, 'llmc', 'tiny_val.bin'), shard(ids.subarray(1500)));
  await mkdir(join(root, 'foreign'));
  await writeFile(join(root, 'foreign', 'train_000000.bin'), shard(Array.from({ length: 500 }, (_, i) => i % 200)));
  await mkdir(join(root, 'kept'));
  await writeFile(join(root, 'kept', 'notes.txt'), 'mine');
  const script = join(ROOT, 'scripts', 'train_ddp.py');
  const run = (args: string[]) => trainDdp(py.python!, ['--model', join(root, 'hf'), '--batch', '2', '--eval-batches', '1', ...args]);
  const refused = (args: string[], message: RegExp) => {
    const r = run(args);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr.trim(), message);
    assert.equal(r.stdout, '', 'refused before training');
  };
  const data = ['--data', join(root, 'shards')];
  refused([...data, '--out', join(root, 'kept')], /^train_ddp\.py: --out \S+kept already holds files: give --force to replace the folder, or another --out$/);
  assert.equal(await readFile(join(root, 'kept', 'notes.txt'), 'utf8'), 'mine');
  refused([...data, '--out', join(root, 'hf') + '/'], /^train_ddp\.py: --out \S+ is or holds the --model folder: its saves would delete the model the run starts from; give another --out$/);
  refused([...data, '--out', root, '--force'], /^train_ddp\.py: --out \S+ is or holds the --model folder/);
  refused([...data, '--out', join(root, 'hf', '..', 'shards'), '--force'], /^train_ddp\.py: --out \S+ is or holds the shards' folder: its saves would delete them; give another --out$/);
  refused([...data, '--out', join(root, 'o'), '--eval-batches', '0'], /^train_ddp\.py: --eval-batches must be at least 1 \(got 0\)$/);
  refused([...data, '--out', join(root, 'o'), '--steps', '0'], /^train_ddp\.py: --steps must be at least 1 \(got 0\)$/);
  refused([...data, '--out', join(root, 'o'), '--lr', '1e-3', '--min-lr', '1'], /^train_ddp\.py: --lr must be above 0 and at least --min-lr \(got --lr 0\.001, --min-lr 1\.0\)$/);
  refused([...data, '--out', join(root, 'o'), '--seq-len', '17'], /^train_ddp\.py: --seq-len 17 is longer than the model's context \(16, its max_position_embeddings\): give at most 16$/);
  refused(['--data', join(root, 'short-val'), '--out', join(root, 'o')], /^train_ddp\.py: no val shard holds a window of 17 tokens \(--seq-len 16 \+ 1\): \S+val_000000\.bin$/);
  refused(['--data', join(root, 'nothing-*.bin'), '--out', join(root, 'o')], /^train_ddp\.py: --data \S+ matches no shard \(train_\*\.bin\)/);
  const foreign = run(['--data', join(root, 'foreign'), '--out', join(root, 'o')]);
  assert.equal(foreign.status, 1);
  assert.match(foreign.stderr.trim().split('\n').pop()!, /^train_ddp\.py: the shards hold token id \d+, past the model's vocabulary \(\d+\): prepare them with the model's tokenizer$/);

  // A glob of a folder of llm.c's shards: tiny_val.bin is the validation set, not training data.
  const lr = 0.01, minLr = 0.001, warmup = 2, steps = 5;
  const ok = run(['--data', join(root, 'llmc', '*.bin'), '--out', join(root, 'out'), '--steps', String(steps), '--warmup', String(warmup), '--lr', String(lr), '--log-every', '1']);
  assert.equal(ok.status, 0, ok.stderr);
  const lines = ok.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const logged = lines.filter((l) => typeof l.lr === 'number');
  assert.deepEqual(logged.map((l) => l.step), [1, 2, 3, 4, 5]);
  for (const l of logged) assert.ok(Math.abs(l.lr - learningRate({ lr, minLr, warmupSteps: warmup, totalSteps: steps }, l.step)) < 1e-12, `step ${l.step}: lr ${l.lr}`);
  assert.ok(lines.some((l) => typeof l.val_loss === 'number'), 'the glob\'s val shard is evaluated');
  const mode = (await stat(join(root, 'out', 'model.safetensors'))).mode;
  assert.equal(mode & 0o044, (await stat(join(root, 'out', 'config.json'))).mode & 0o044, 'model.safetensors is as readable as the rest');

  // --accum 2 of 1 sequence draws the windows one --batch 2 draws, so it makes the same updates up to float rounding (and --accum 1 --batch 1 would be far off).
  const accum = run(['--data', join(root, 'llmc', '*.bin'), '--out', join(root, 'out-accum'), '--steps', String(steps), '--warmup', String(warmup), '--lr', String(lr), '--log-every', '1', '--batch', '1', '--accum', '2']);
  assert.equal(accum.status, 0, accum.stderr);
  const accumLosses = jsonLines(accum.stdout).filter((l) => typeof l.loss === 'number').map((l) => l.loss as number);
  logged.forEach((l, i) => assert.ok(Math.abs(l.loss - accumLosses[i]!) < 1e-5, `step ${l.step}: loss ${l.loss} with --batch 2, ${accumLosses[i]} with --batch 1 --accum 2`));
  const [whole, accumulated] = await Promise.all([readHfTensors(join(root, 'out')), readHfTensors(join(root, 'out-accum'))]);
  let largest = 0;
  for (const [name, t] of whole) t.data.forEach((v, i) => (largest = Math.max(largest, Math.abs(v - accumulated.get(name)!.data[i]!))));
  assert.ok(largest < 1e-4, `weights differ by up to ${largest}`);

  // --compile: the same steps under torch.compile (its first step compiles: tens of seconds here).
  // No validation shard, so no second graph to compile for evaluation; the train windows are the same.
  const compiled = run(['--data', join(root, 'llmc', 'tiny_train.bin'), '--out', join(root, 'out-compiled'), '--steps', '2', '--warmup', String(warmup), '--lr', String(lr), '--log-every', '1', '--compile']);
  assert.equal(compiled.status, 0, compiled.stderr.slice(-3000));
  assert.equal(jsonLines(compiled.stdout).find((l) => l.event === 'start').compile, true);
  const compiledLosses = jsonLines(compiled.stdout).filter((l) => typeof l.loss === 'number').map((l) => l.loss as number);
  assert.equal(compiledLosses.length, 2);
  compiledLosses.forEach((loss, i) => assert.ok(Math.abs(loss - logged[i]!.loss) < 1e-4, `step ${i + 1}: loss ${loss} compiled, ${logged[i]!.loss} eager`));

  // --resume: a folder of other files is no save; without a save, --model is needed.
  refused([...data, '--out', join(root, 'kept'), '--resume'], /^train_ddp\.py: --out \S+kept already holds files but no train_ddp\.py save to resume: give --force to replace the folder, or another --out$/);
  const noModel = trainDdp(py.python!, [...data, '--out', join(root, 'o'), '--resume']);
  assert.equal(noModel.status, 1);
  assert.match(noModel.stderr.trim(), /^train_ddp\.py: --model is needed: give the HF folder to start from \(--resume: --out \S+ holds no save yet\)$/);

  // SIGTERM (a scheduler's preemption) mid-run: the step ends, the run is saved, one line, exit 130.
  const p = spawn(py.python!, [script, '--model', join(root, 'hf'), ...data, '--out', join(root, 'stopped'), '--steps', '1000000', '--batch', '2', '--log-every', '1'], {
    env: { ...process.env, OMP_NUM_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '', err = '';
  p.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((done) => p.on('exit', (code) => done(code)));
  const stuck = setTimeout(() => p.kill('SIGKILL'), 120_000); // never the suite's hang
  try {
    const started = await Promise.race([
      new Promise<boolean>((done) => p.stdout.on('data', (d) => {
        out += d;
        if (out.includes('"step": 1,')) done(true);
      })),
      exited.then(() => false),
    ]);
    assert.ok(started, `it ended before its first step: ${err}`);
    p.kill('SIGTERM');
    assert.equal(await exited, 130, err);
  } finally {
    clearTimeout(stuck);
    p.kill('SIGKILL');
  }
  const stoppedAt = jsonLines(out).filter((l) => typeof l.loss === 'number').pop().step;
  assert.equal(err.trim().split('\n').pop()!, `train_ddp.py: stopped at step ${stoppedAt} of 1000000; --out ${join(root, 'stopped')} holds the run: the same command with --resume continues it`);
  assert.equal(JSON.parse(await readFile(join(root, 'stopped', 'trainer_state.json'), 'utf8')).step, stoppedAt);
  assert.deepEqual(jsonLines(out).find((l) => l.event === 'stopped'), { event: 'stopped', step: stoppedAt });

  // Resumed with a smaller --steps, another --lr and another --seed: the warmup stays the run's (50,
  // not a tenth of the new total), --min-lr (the default, --lr / 10) follows the new --lr, the new
  // seed draws new windows, and the start line says what changed.
  const target = stoppedAt + 2;
  const resumed = run([...data, '--out', join(root, 'stopped'), '--resume', '--steps', String(target), '--seed', '7', '--lr', '1e-3']);
  assert.equal(resumed.status, 0, resumed.stderr);
  const start = jsonLines(resumed.stdout).find((l) => l.event === 'start');
  assert.deepEqual([start.resumed_from, start.warmup, start.data_windows, start.changed],
    [stoppedAt, 50, 'new: --seed changed', { steps: [1000000, target], lr: [3e-4, 1e-3], min_lr: [3e-4 / 10, 1e-3 / 10], seed: [1337, 7] }]);

  // A save cut between its renames (--out renamed aside, the new one not yet in): the run is not
  // started over from --model; --resume continues the save that was renamed aside.
  const aside = join(root, '.stopped.old-4242-1');
  const { rename, readdir } = await import('node:fs/promises');
  await rename(join(root, 'stopped'), aside);
  refused([...data, '--out', join(root, 'stopped')], /^train_ddp\.py: --out \S+stopped is missing but its last save is in \S+\.stopped\.old-4242-1 \(a save was cut short\): give --resume to continue it, --force to start over, or another --out$/);
  const recovered = run([...data, '--out', join(root, 'stopped'), '--resume', '--steps', String(target + 1)]);
  assert.equal(recovered.status, 0, recovered.stderr);
  assert.deepEqual(jsonLines(recovered.stdout).find((l) => l.event === 'recovered'), { event: 'recovered', from: aside, step: target });
  assert.equal(jsonLines(recovered.stdout).find((l) => l.event === 'start').resumed_from, target);
  assert.equal(JSON.parse(await readFile(join(root, 'stopped', 'trainer_state.json'), 'utf8')).step, target + 1);
  assert.deepEqual((await readdir(root)).filter((n) => n.startsWith('.stopped.')), [], 'what the cut save left is gone');
  // Cut after its last step: nothing to train, and the save is back in place.
  await rename(join(root, 'stopped'), aside);
  const done = run([...data, '--out', join(root, 'stopped'), '--resume', '--steps', String(target + 1)]);
  assert.equal(done.status, 0, done.stderr);
  assert.match(done.stderr, /is at step \d+ of --steps \d+ already: nothing to train/);
  assert.equal(JSON.parse(await readFile(join(root, 'stopped', 'trainer_state.json'), 'utf8')).step, target + 1);
  assert.ok(!existsSync(aside));

  // A damaged save is refused before anything starts.
  const torchSave = (value: string, path: string) => spawnSync(py.python!, ['-c', `import sys, torch; torch.save(${value}, sys.argv[1])`, path]);
  torchSave("{'state': {}, 'param_groups': []}", join(root, 'stopped', 'optimizer.pt'));
  refused([...data, '--out', join(root, 'stopped'), '--resume'], /^train_ddp\.py: \S+optimizer\.pt does not hold AdamW's state for this model's \d+ weights \(it has 0\): the save is damaged; give another --out$/);
  await writeFile(join(root, 'stopped', 'optimizer.pt'), 'not a pickle');
  refused([...data, '--out', join(root, 'stopped'), '--resume'], /^train_ddp\.py: \S+optimizer\.pt cannot be read \(.+\): the save is damaged; give another --out$/);
  const state = JSON.parse(await readFile(join(root, 'stopped', 'trainer_state.json'), 'utf8'));
  await writeFile(join(root, 'stopped', 'trainer_state.json'), JSON.stringify({ ...state, batch: '4' }));
  refused([...data, '--out', join(root, 'stopped'), '--resume'], /^train_ddp\.py: \S+trainer_state\.json has batch "4", not a whole number of at least 1: the save is damaged; give another --out, or --force without --resume to start over$/);
  await writeFile(join(root, 'stopped', 'trainer_state.json'), JSON.stringify({ ...state, step: -3 }));
  refused([...data, '--out', join(root, 'stopped'), '--resume'], /^train_ddp\.py: \S+trainer_state\.json has step -3, not from 1 to its steps \(\d+\): the save is damaged/);
  await writeFile(join(root, 'stopped', 'trainer_state.json'), '{"step": 3');
  refused([...data, '--out', join(root, 'stopped'), '--resume'], /^train_ddp\.py: \S+trainer_state\.json cannot be read \(.+\): the save is damaged; give another --out, or --force without --resume to start over$/);
  refused([...data, '--out', join(root, 'no-such-folder', 'out')], /^train_ddp\.py: --out \S+out: cannot write in \S+no-such-folder \(no such folder\), where saves are made$/);
});
