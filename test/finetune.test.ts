/** Fine-tuning from a checkpoint (--init-from), finished runs, short-run warmup, and finding the run a command means. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile, readFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { train, latestRun, findCheckpointDir, type TrainOptions } from '../src/train/train.js';
import { loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint.js';
import { parseDuration } from '../src/cli/commands/train.js';
import { MinigptError } from '../src/errors.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const CORPUS = Array.from({ length: 300 }, (_, i) => `the ${['cat', 'dog', 'bird'][i % 3]} sat on the ${['mat', 'log', 'hat'][(i * 7) % 3]}.`).join('\n');
const TINY = { d_model: 16, n_heads: 2, n_layers: 1, context: 16 };

async function setup(): Promise<{ root: string; data: string; base: (over?: Partial<TrainOptions>) => TrainOptions }> {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ft-'));
  const data = join(root, 'corpus.txt');
  await writeFile(data, CORPUS);
  const base = (over: Partial<TrainOptions> = {}): TrainOptions => ({
    data, model: TINY, batch: 4, steps: 10, lr: 1e-2, minLr: 1e-3, warmup: 2,
    evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 4, backend: 'reference', ...over,
  });
  return { root, data, base };
}

test('--init-from starts a new run from the weights, config and tokenizer of a checkpoint without optimizer state', async () => {
  const { root, data, base } = await setup();
  const first = await train(base({ out: join(root, 'a'), steps: 30 }));
  // A weights-only checkpoint, as init and import write.
  const src = await loadCheckpoint(first.checkpoint);
  await saveCheckpoint(join(root, 'weights'), { config: src.config, weights: src.weights, tokenizer: src.tokenizer });

  // --resume refuses it and points at --init-from.
  await assert.rejects(train(base({ resume: join(root, 'weights') })), (e: unknown) => e instanceof MinigptError && /fine-tune it with initFrom: "/.test(e.message));

  let firstLoss = NaN;
  const messages: string[] = [];
  const tuned = await train({
    data, batch: 4, steps: 5, lr: 1e-3, warmup: 0, evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 4, backend: 'reference',
    initFrom: join(root, 'weights'), out: join(root, 'tuned'),
    onStep: (s) => { if (s.step === 1) firstLoss = s.loss; }, onMessage: (m) => messages.push(m),
  });
  // Starting from trained weights, the first loss is already far below a fresh model's ln(vocab).
  const fresh = await train(base({ out: join(root, 'fresh'), steps: 1, warmup: 0 }));
  assert.ok(firstLoss < fresh.finalLoss - 0.5, `fine-tune starts at ${firstLoss}, a fresh model at ${fresh.finalLoss}`);
  assert.ok(messages.some((m) => m.includes('fine-tuning from')));
  const out = await loadCheckpoint(tuned.checkpoint, { training: true });
  assert.deepEqual({ ...out.config }, { ...src.config });
  assert.equal(out.training!.step, 5);
  assert.deepEqual(out.tokenizer.encode('the cat'), src.tokenizer.encode('the cat'));
  const metrics = (await readFile(join(root, 'tuned', 'metrics.jsonl'), 'utf8')).split('\n')[0];
  assert.match(metrics, /"init_from"/);
  // The fine-tuned run is an ordinary run: it resumes.
  const more = await train({ resume: join(root, 'tuned'), steps: 7, backend: 'reference', evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 4 });
  assert.equal(more.steps, 7);
});

test('--init-from refuses a different model shape (a shorter context is fine), tokenizer, or --resume beside it', async () => {
  const { root, base } = await setup();
  const first = await train(base({ out: join(root, 'a'), steps: 2 }));
  const tune = (over: Partial<TrainOptions>) => train({ ...base({ out: join(root, `t${Math.random()}`), model: undefined }), initFrom: first.runDir, ...over });
  await assert.rejects(tune({ model: { d_model: 32 } }), /model\.d_model 32 \(the checkpoint has 16\): initFrom: ".*" fixes the model's shape; drop the option$/);
  await assert.rejects(tune({ tokenizer: 'gpt2' }), /tokenizer gpt2 conflicts with initFrom: "/);
  await assert.rejects(tune({ resume: first.runDir }), /resume and initFrom exclude each other/);
  // Data with a character the checkpoint's tokenizer lacks: the advice is to remove it (the tokenizer cannot be rebuilt).
  const snow = join(root, 'snow.txt');
  await writeFile(snow, `${CORPUS}\nthe cat ☃`);
  await assert.rejects(tune({ data: snow }), /snow\.txt: character "☃" \(U\+2603\) .* is not in the tokenizer's vocabulary .*; the checkpoint's tokenizer has no token for it; remove such characters from the data$/);
  // Dropout is a training setting: it may change.
  const ok = await tune({ model: { dropout: 0.1 }, steps: 1 });
  assert.equal((await loadCheckpoint(ok.checkpoint)).config.dropout, 0.1);
  // So is the context, down to shorter windows (RoPE has no weights per position): a model imported
  // with a long max_position_embeddings fine-tunes on short ones. The weights carry over unchanged.
  const short = await tune({ model: { context: 8 }, steps: 1, lr: 1e-30, minLr: 0, warmup: 0 });
  const before = await loadCheckpoint(first.checkpoint), after = await loadCheckpoint(short.checkpoint);
  assert.deepEqual({ ...after.config }, { ...before.config, context: 8 });
  assert.ok(after.weights.every((w, i) => Math.abs(w - before.weights[i]!) < 1e-6));
  await assert.rejects(tune({ model: { context: 32 } }), /^MinigptError: model\.context 32 is longer than the checkpoint's context of 16; initFrom: ".*" fine-tunes on windows of at most that many tokens$/);
});

test('resuming a run that has done its steps is a clear error, not a second final evaluation', async () => {
  const { root, base } = await setup();
  const first = await train(base({ out: join(root, 'a'), steps: 3 }));
  await assert.rejects(train({ resume: first.runDir, backend: 'reference' }), /is at step 3, the end of its 3 steps; pass a larger steps/);
  await assert.rejects(train({ resume: first.runDir, backend: 'reference', steps: 2 }), /is at step 3, not before steps: 2; pass a larger steps/);
});

test('without --warmup a short run warms up over a tenth of its steps', async () => {
  const { root, base } = await setup();
  const lrs: number[] = [];
  await train({ ...base({ out: join(root, 'a'), steps: 20, lr: 1e-2, minLr: 1e-2 }), warmup: undefined, onStep: (s) => lrs.push(s.lr) });
  assert.equal(lrs[0], 5e-3); // step 1 of a 2-step warmup
  assert.equal(lrs[1], 1e-2); // the peak lr, reached at step 2 (a 50-step warmup would be at 4e-4)
  const state = JSON.parse(await readFile(join(root, 'a', 'checkpoint', 'trainer_state.json'), 'utf8'));
  assert.equal(state.options.warmup, 2);
});

test('the final evaluation says it is the final one', async () => {
  const { root, base } = await setup();
  const evals: { final: boolean; tokens: number }[] = [];
  await train(base({ out: join(root, 'a'), steps: 4, evalEvery: 2, onEval: (e) => evals.push({ final: e.final, tokens: e.tokens }) }));
  assert.deepEqual(evals.map((e) => e.final), [false, false, true]);
  assert.ok(evals[2].tokens >= evals[0].tokens && evals[0].tokens > 0);
});

test('the latest run without a checkpoint falls back to the newest run that has one; a broken run checkpoint is named as broken', async () => {
  const { root, base } = await setup();
  const cwd = process.cwd();
  process.chdir(root);
  try {
    const good = await train(base({ out: join(root, 'runs', 'good'), steps: 1 }));
    await mkdir(join(root, 'runs', 'died'), { recursive: true });
    await writeFile(join(root, 'runs', 'died', 'metrics.jsonl'), '{"step":0}\n');
    await writeFile(join(root, 'runs', 'latest'), join(root, 'runs', 'died') + '\n');
    assert.equal(await latestRun(), good.runDir);
    await assert.rejects(findCheckpointDir(join(root, 'runs', 'died')), /has no checkpoint yet/);
    await rm(join(root, 'runs', 'good'), { recursive: true });
    await assert.rejects(latestRun(), /the latest run, .*died, has no readable checkpoint \(it stopped before its first save/);
    // runs/latest naming a run that is gone says so.
    await rm(join(root, 'runs', 'died'), { recursive: true });
    await assert.rejects(latestRun(), /runs\/latest names .*died, which does not exist \(moved or deleted\)/);
  } finally {
    process.chdir(cwd);
  }
  // A broken config.json in a run's checkpoint: the error is about that file, not "no config.json".
  const r = await train(base({ out: join(root, 'b'), steps: 1 }));
  await writeFile(join(r.checkpoint, 'config.json'), '{ broken');
  assert.equal(await findCheckpointDir(r.runDir), r.checkpoint);
  await assert.rejects(loadCheckpoint(await findCheckpointDir(r.runDir)), (e: unknown) => e instanceof MinigptError && !/no config\.json/.test(e.message));
});

test('a Hugging Face directory given as a checkpoint says to import it', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-hfdir-'));
  await writeFile(join(root, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'] }));
  await assert.rejects(loadCheckpoint(root), /looks like a Hugging Face model directory: read it with readHfModel\(".*"\) \(saveCheckpoint keeps what it gives as a checkpoint\)/);
});

test('--max-time takes compound durations and refuses zero', () => {
  assert.equal(parseDuration('1h30m'), 5400);
  assert.equal(parseDuration('2m30s'), 150);
  assert.equal(parseDuration('90'), 90);
  assert.equal(parseDuration('1.5h'), 5400);
  assert.throws(() => parseDuration('0'), /more than zero/);
  assert.throws(() => parseDuration('0m'), /more than zero/);
  assert.throws(() => parseDuration('30m1h'), /duration like/);
  assert.throws(() => parseDuration('soon'), /duration like/);
});

test('train --init-from on the command line fine-tunes; --tokenizer with shards that differ is refused', async () => {
  const { root, data } = await setup();
  const tiny = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '4', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0'];
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root });
  let r = run('init', '--out', join(root, 'init'), '--data', data, '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16');
  assert.equal(r.status, 0, r.stderr);
  r = run('train', '--init-from', join(root, 'init'), '--data', data, '--steps', '2', '--batch', '4', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0', '--out', join(root, 'ft'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /done: 2 steps/);
  // eval with no data scores the run's own validation split, as its final evaluation did.
  const finalVal = (await readFile(join(root, 'ft', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).find((m) => m.final).val_loss;
  r = run('eval', '--ckpt', join(root, 'ft'), '--backend', 'reference', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Math.abs(JSON.parse(r.stdout).val_loss - finalVal) < 1e-5, `${r.stdout} vs ${finalVal}`);
  r = run('eval', '--ckpt', join(root, 'init'), '--backend', 'reference');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /records no training data .*give --text/);
  // runs/latest (a file naming the latest run) is taken wherever a run is.
  await mkdir(join(root, 'runs'), { recursive: true });
  await writeFile(join(root, 'runs', 'latest'), join(root, 'ft') + '\n');
  r = run('plot', join(root, 'runs', 'latest'), '--out', join(root, 'p.svg'));
  assert.equal(r.status, 0, r.stderr);
  r = run('eval', '--ckpt', join(root, 'runs', 'latest'), '--text', 'the cat', '--backend', 'reference');
  assert.equal(r.status, 0, r.stderr);
  r = run('train', '--init-from', join(root, 'init'), '--data', data, '--steps', '2', '--n-layers', '3', '--out', join(root, 'ft2'));
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /--n-layers 3 \(the checkpoint has 1\)/);
  r = run('prepare', '--data', data, '--tokenizer', 'char', '--out', join(root, 'shards'));
  assert.equal(r.status, 0, r.stderr);
  r = run('train', '--data', join(root, 'shards'), '--tokenizer', 'gpt2', '--steps', '2', ...tiny, '--out', join(root, 'sh'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--tokenizer gpt2 conflicts with the shards/);
  // A tokenizer file from `tokenizer train` trains as it is, and lands in the checkpoint.
  r = run('tokenizer', 'train', '--data', data, '--vocab', '270', '--out', join(root, 'tok.json'));
  assert.equal(r.status, 0, r.stderr);
  r = run('train', '--data', data, '--tokenizer', join(root, 'tok.json'), '--steps', '2', ...tiny, '--out', join(root, 'tokrun'));
  assert.equal(r.status, 0, r.stderr);
  const { tokenizerFromJson } = await import('../src/data/tokenizer.js');
  const fileTok = tokenizerFromJson(JSON.parse(await readFile(join(root, 'tok.json'), 'utf8')), 'tok.json');
  const saved = (await loadCheckpoint(join(root, 'tokrun', 'checkpoint'))).tokenizer;
  assert.equal(saved.vocabSize, fileTok.vocabSize);
  assert.deepEqual(Array.from(saved.encode('the bird sat')), Array.from(fileTok.encode('the bird sat')));
  r = run('train', '--data', join(root, 'shards'), '--tokenizer', join(root, 'tok.json'), '--steps', '2', ...tiny, '--out', join(root, 'sh2'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not the given bpe tokenizer/);
  // --clean: learned on text cleaned as training will clean it (lowercased: no uppercase merge).
  await writeFile(join(root, 'upper.txt'), 'THE CAT SAT ON THE MAT. '.repeat(40));
  r = run('tokenizer', 'train', '--data', join(root, 'upper.txt'), '--vocab', '262', '--clean', 'nfc,lowercase', '--out', join(root, 'lower.json'));
  assert.equal(r.status, 0, r.stderr);
  const lower = tokenizerFromJson(JSON.parse(await readFile(join(root, 'lower.json'), 'utf8')), 'lower.json');
  assert.ok(lower.encode('the cat').length < lower.encode('THE CAT').length, 'merges learned on the lowercased text');
  r = run('train', '--data', data, '--tokenizer', join(root, 'nope.json'), '--steps', '2', ...tiny, '--out', join(root, 'sh3'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no such file or folder/);
});

test('without minLr the cosine decay ends at a tenth of lr, for any lr; a run folder loads as its checkpoint', async () => {
  const { root, base } = await setup();
  const lrs: number[] = [];
  const r = await train({ ...base({ out: join(root, 'a'), steps: 10, lr: 1e-4, warmup: 0 }), minLr: undefined, onStep: (s) => lrs.push(s.lr) });
  assert.ok(Math.abs(lrs.at(-1)! - 1e-5) < 1e-12, `last lr ${lrs.at(-1)}`);
  assert.ok(lrs[4] < 1e-4 && lrs[4] > 1e-5);
  // loadCheckpoint takes the run folder the CLI takes.
  assert.equal((await loadCheckpoint(r.runDir)).config.d_model, 16);
});

test('a run cut by maxTime says so, logs its last step, and resuming with more steps says how the decay changes', async () => {
  const { root, base } = await setup();
  const finalTokens: number[] = [];
  const onEval = (e: { final: boolean; tokens: number }): void => { if (e.final) finalTokens.push(e.tokens); };
  const r = await train(base({ out: join(root, 'a'), steps: 100000, maxTime: 0.3, onEval }));
  assert.ok(r.outOfTime && !r.interrupted && r.steps < 100000);
  // Past maxTime the final evaluation scores the periodic windows only (4 of 16 tokens), to end near the limit.
  assert.deepEqual(finalTokens, [4 * 16]);
  assert.ok(r.lastLr > 1e-3, `lr ${r.lastLr} is still near the peak`);
  assert.ok(r.finalValLoss !== null && r.bestValLoss !== null && r.bestValLoss <= r.finalValLoss);
  const records = (await readFile(join(root, 'a', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(records.some((m) => m.step === r.steps && typeof m.loss === 'number'), 'the last step has a loss record');
  const messages: string[] = [];
  await train({ resume: r.runDir, steps: r.steps + 5, backend: 'reference', evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 4, onMessage: (m) => messages.push(m), onEval });
  assert.ok(messages.some((m) => /the cosine decay now spans \d+ steps instead of 100000/.test(m)), messages.join('\n'));
  // The run done, its final evaluation covers the whole validation split.
  assert.ok(finalTokens[1]! > 4 * 16 * 10, `${finalTokens[1]} tokens`);
});

test('fp16 records its loss scale and skipped steps in metrics.jsonl', async () => {
  const { root, base } = await setup();
  await train(base({ out: join(root, 'a'), steps: 4, amp: 'fp16', ampInitialScale: 2 ** 60, logEvery: 1, onWarning: () => {} }));
  const records = (await readFile(join(root, 'a', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  const skipped = records.filter((m) => m.skipped === true);
  assert.ok(skipped.length > 0, 'a 2^60 scale overflows');
  assert.ok(skipped.every((m) => typeof m.loss_scale === 'number'));
  const steps = records.filter((m) => typeof m.loss === 'number' && m.skipped !== true);
  assert.equal(steps.length, 4);
  assert.ok(steps.every((m) => typeof m.loss_scale === 'number' && m.loss_scale < 2 ** 60));
});

test('a run keeps the cleaning its data was read with, for resume and for eval without data', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-clean-'));
  const data = join(root, 'crlf.txt');
  await writeFile(data, CORPUS.replaceAll('\n', '\r\n\u0007'));
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root });
  const tiny = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '4', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0'];
  let r = run('train', '--data', data, '--clean', 'none', '--steps', '2', ...tiny, '--out', join(root, 'a'));
  assert.equal(r.status, 0, r.stderr);
  const state = JSON.parse(await readFile(join(root, 'a', 'checkpoint', 'trainer_state.json'), 'utf8'));
  assert.equal(state.clean.newlines, false);
  const finalVal = (await readFile(join(root, 'a', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).find((m) => m.final).val_loss;
  r = run('eval', '--ckpt', join(root, 'a'), '--backend', 'reference', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Math.abs(JSON.parse(r.stdout).val_loss - finalVal) < 1e-5, `${r.stdout} vs ${finalVal}`);
  r = run('train', '--resume', join(root, 'a'), '--steps', '4', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0');
  assert.equal(r.status, 0, r.stderr);
  const resumed = JSON.parse(await readFile(join(root, 'a', 'checkpoint', 'trainer_state.json'), 'utf8'));
  assert.equal(resumed.clean.newlines, false);
});

test('documents on the command line: tokenizer train, train, prepare and eval --data all join JSONL records with <|endoftext|> for bpe', async () => {
  const { root } = await setup();
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root });
  const docs = join(root, 'docs.jsonl');
  const lines = CORPUS.split('\n');
  await writeFile(docs, Array.from({ length: 30 }, (_, i) => JSON.stringify({ text: lines.slice(i * 10, i * 10 + 10).join('\n') })).join('\n'));
  const tiny = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '4', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0'];
  // `tokenizer train` learns the BPE `train --tokenizer bpe` learns (each document apart).
  let r = run('tokenizer', 'train', '--data', docs, '--vocab', '270', '--out', join(root, 'tok.json'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /characters \(30 documents\)/);
  r = run('train', '--data', docs, '--tokenizer', 'bpe', '--bpe-vocab', '270', '--steps', '2', ...tiny, '--out', join(root, 'run'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /data: docs\.jsonl \(30 documents, separated by <\|endoftext\|>\), bpe tokenizer/);
  const saved = (await loadCheckpoint(join(root, 'run', 'checkpoint'))).tokenizer;
  assert.deepEqual(saved.toJSON(), JSON.parse(await readFile(join(root, 'tok.json'), 'utf8')));
  // eval --data on the text scores the tokens prepare writes: shards with no validation part,
  // --all on both, give the same windows and so the same loss.
  r = run('prepare', '--data', docs, '--tokenizer', join(root, 'run'), '--val-fraction', '0', '--out', join(root, 'shards'));
  assert.equal(r.status, 0, r.stderr);
  const onShards = run('eval', '--ckpt', join(root, 'run'), '--data', join(root, 'shards'), '--all', '--json', '--backend', 'reference');
  const onText = run('eval', '--ckpt', join(root, 'run'), '--data', docs, '--all', '--json', '--backend', 'reference');
  assert.equal(onShards.status, 0, onShards.stderr);
  assert.equal(onText.status, 0, onText.stderr);
  assert.deepEqual(JSON.parse(onText.stdout), JSON.parse(onShards.stdout));
  const meta = JSON.parse(await readFile(join(root, 'shards', 'meta.json'), 'utf8'));
  assert.equal(meta.document_separator, '<|endoftext|>');
  // Records that clean to nothing (control characters only) leave nothing to evaluate: said in one line.
  await writeFile(join(root, 'controls.jsonl'), '{"text": "\\u0001"}\n{"text": "\\u0002"}\n');
  r = run('eval', '--ckpt', join(root, 'run'), '--data', join(root, 'controls.jsonl'), '--backend', 'reference');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^minigpt: error: \S*controls\.jsonl has no text left after cleaning\n$/);
});
