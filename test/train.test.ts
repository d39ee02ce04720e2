/** The training loop as a library: learning, exact resume, interruption, mixed precision, divergence. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, readFile, readdir, appendFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { train, metricsUpToStep, type TrainOptions } from '../src/train/train.js';
import { loadCheckpoint } from '../src/io/checkpoint.js';
import { createAmp, INITIAL_LOSS_SCALE } from '../src/train/amp.js';
import { learningRate } from '../src/train/schedule.js';
import { findLearningRate } from '../src/train/lr-find.js';
import { memoryTokens } from '../src/data/batches.js';
import { resolveConfig } from '../src/model/config.js';
import { MinigptError } from '../src/errors.js';

const CORPUS = Array.from({ length: 300 }, (_, i) => `the ${['cat', 'dog', 'bird'][i % 3]} sat on the ${['mat', 'log', 'hat'][(i * 7) % 3]}.`).join('\n');
let dataFile = '';
async function data(): Promise<string> {
  if (!dataFile) {
    dataFile = join(await mkdtemp(join(tmpdir(), 'minigpt-train-')), 'corpus.txt');
    await writeFile(dataFile, CORPUS);
  }
  return dataFile;
}
const TINY = { d_model: 16, n_heads: 2, n_layers: 1, context: 16 };
async function opts(over: Partial<TrainOptions> = {}): Promise<TrainOptions> {
  return {
    data: await data(), model: TINY, batch: 4, steps: 20, lr: 1e-2, minLr: 1e-3, warmup: 2,
    evalEvery: 10, sampleEvery: 0, saveEvery: 0, backend: 'reference',
    out: join(await mkdtemp(join(tmpdir(), 'minigpt-run-')), 'run'), ...over,
  };
}

test('the schedule warms up linearly, then decays by cosine to min lr', () => {
  const s = { lr: 1, minLr: 0.1, warmupSteps: 10, totalSteps: 110 };
  assert.equal(learningRate(s, 5), 0.5);
  assert.equal(learningRate(s, 10), 1);
  assert.ok(Math.abs(learningRate(s, 60) - 0.55) < 1e-12);
  assert.equal(learningRate(s, 110), 0.1);
  assert.equal(learningRate(s, 500), 0.1);
  // Without warmup the decay starts at once; step 0 (before the first) is the peak, not 0/0.
  const flat = { ...s, warmupSteps: 0 };
  assert.equal(learningRate(flat, 0), 1);
  assert.ok(learningRate(flat, 1) < 1 && learningRate(flat, 1) > 0.99);
});

test('a training seed past 2^32 is a seed of its own: not the weights, batches and masks of its low 32 bits', async () => {
  const losses = async (seed: number): Promise<number[]> => {
    const seen: number[] = [];
    await train(await opts({ steps: 3, evalEvery: 0, seed, model: { ...TINY, dropout: 0.1 }, onStep: (s) => seen.push(s.loss) }));
    return seen;
  };
  const low = await losses(1);
  assert.deepEqual(await losses(1), low);
  assert.notDeepEqual(await losses(2 ** 32 + 1), low);
});

test('a run folder deleted while training stops the run with one line saying so', async () => {
  const { rm } = await import('node:fs/promises');
  // Noticed at the next log line, or at the next save when that comes first (a save recreated the folder).
  for (const cadence of [{ logEvery: 1 }, { logEvery: 10, saveEvery: 5 }]) {
    const o = await opts({ steps: 50, evalEvery: 0, ...cadence });
    await assert.rejects(train({ ...o, onStep: async (s) => { if (s.step === 3) await rm(o.out!, { recursive: true }); } }),
      (e: unknown) => e instanceof MinigptError && /^the run folder .*run is gone \(deleted or moved while training\); the run stopped$/.test(e.message));
    assert.ok(!existsSync(o.out!), 'not made again');
  }
});

test('a warmup as long as the run is trained as asked, with a warning that the rate never decays', async () => {
  const warnings: string[] = [];
  const lrs: number[] = [];
  await train(await opts({ steps: 4, warmup: 8, evalEvery: 0, onWarning: (m) => warnings.push(m), onStep: (s) => lrs.push(s.lr) }));
  assert.deepEqual(lrs, [1, 2, 3, 4].map((i) => (1e-2 * i) / 8));
  assert.deepEqual(warnings, ['the warmup (8 steps) is not shorter than the run (4 steps): the learning rate only rises, to 5.00e-3 at the last step, never reaching 0.01, and never decays']);
});

test('training lowers the loss and writes metrics.jsonl, loss.svg and a checkpoint', async () => {
  const o = await opts({ steps: 40 });
  const losses: number[] = [];
  const summary = await train({ ...o, onStep: (s) => losses.push(s.loss) });
  assert.equal(summary.steps, 40);
  assert.ok(losses.at(-1)! < losses[0] - 1, `loss went from ${losses[0]} to ${losses.at(-1)}`);
  assert.ok(summary.bestValLoss! < Math.log(20));
  const files = await readdir(o.out!);
  for (const f of ['metrics.jsonl', 'loss.svg', 'checkpoint']) assert.ok(files.includes(f), f);
  const metrics = (await readFile(join(o.out!, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(metrics.some((m) => m.step === 40 && typeof m.val_loss === 'number'));
  // ASCII text, a character per token: bits per byte is the loss in bits.
  const last = metrics.filter((m) => m.final).at(-1);
  assert.ok(Math.abs(last.val_bpb - last.val_loss / Math.LN2) < 1e-9, JSON.stringify(last));
  assert.ok(metrics.some((m) => m.step === 20 && typeof m.loss === 'number' && typeof m.tok_per_s === 'number'));
  assert.match(await readFile(join(o.out!, 'loss.svg'), 'utf8'), /^<svg[^>]*>[\s\S]*<path[\s\S]*<\/svg>\s*$/);
  const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
  assert.equal(ckpt.training!.step, 40);
});

test('resume is exact: 10 steps, stop, resume to 20 gives bitwise the weights of 20 straight', async () => {
  const extra = { model: { ...TINY, dropout: 0.1 }, accum: 2 };
  const straight = await opts(extra);
  await train(straight);
  const split = await opts(extra);
  const stop = new AbortController();
  const first = await train({ ...split, signal: stop.signal, onStep: (s) => { if (s.step === 10) stop.abort(); } });
  assert.equal(first.interrupted, true);
  assert.equal(first.steps, 10);
  await train({ resume: split.out, backend: 'reference', evalEvery: 10, sampleEvery: 0, saveEvery: 0 });
  const a = await loadCheckpoint(join(straight.out!, 'checkpoint'), { training: true });
  const b = await loadCheckpoint(join(split.out!, 'checkpoint'), { training: true });
  assert.equal(b.training!.step, 20);
  assert.deepEqual(b.weights, a.weights);
  assert.deepEqual(b.training!.m, a.training!.m);
  assert.deepEqual(b.training!.v, a.training!.v);
});

test('a resumed run keeps its eval/sample/save cadence unless given, and counts this session\'s tokens apart', async () => {
  const o = await opts({ steps: 12, evalEvery: 3, sampleEvery: 0, saveEvery: 0 });
  const stop = new AbortController();
  const first = await train({ ...o, signal: stop.signal, onStep: (s) => { if (s.step === 4) stop.abort(); } });
  assert.equal(first.sessionTokens, first.tokensSeen);
  const evals: number[] = [];
  const samples: number[] = [];
  const resumed = await train({ resume: o.out, backend: 'reference', onEval: (e) => { if (!e.final) evals.push(e.step); }, onSample: (s) => samples.push(s.step) });
  assert.deepEqual(evals, [6, 9, 12], 'the run\'s --eval-every 3, not the default 100');
  assert.deepEqual(samples, [], 'the run\'s --sample-every 0, not the default 250');
  assert.equal(resumed.sessionTokens, 8 * 4 * 16, 'steps 5-12 of batch 4 x context 16');
  assert.equal(resumed.tokensSeen, 12 * 4 * 16);
  // Given on the command line, a cadence changes.
  const again = await opts({ steps: 12, evalEvery: 3, sampleEvery: 0, saveEvery: 0 });
  const stop2 = new AbortController();
  await train({ ...again, signal: stop2.signal, onStep: (s) => { if (s.step === 4) stop2.abort(); } });
  const evals2: number[] = [];
  await train({ resume: again.out, backend: 'reference', evalEvery: 4, onEval: (e) => { if (!e.final) evals2.push(e.step); } });
  assert.deepEqual(evals2, [8, 12]);
});

/** metrics.jsonl's records; `lax`: skipping lines that are not JSON. */
const readRecords = async (dir: string, lax = false): Promise<Record<string, unknown>[]> =>
  (await readFile(join(dir, 'metrics.jsonl'), 'utf8')).trim().split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l)];
    } catch (e) {
      if (lax) return [];
      throw e;
    }
  });
const trainSteps = (records: Record<string, unknown>[]): number[] => records.filter((r) => typeof r.loss === 'number' && !r.skipped).map((r) => r.step as number);
const valSteps = (records: Record<string, unknown>[]): number[] => records.filter((r) => typeof r.val_loss === 'number' && !r.final).map((r) => r.step as number);
/** A run that dies (as on a crash or a second Ctrl-C) after logging step 6, its last save at step 4. */
async function crashedRun(): Promise<TrainOptions> {
  const o = await opts({ steps: 12, evalEvery: 3, saveEvery: 4, logEvery: 1 });
  await assert.rejects(train({ ...o, onStep: (s) => { if (s.step === 7) throw new Error('crash'); } }), /crash/);
  assert.equal((await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true })).training!.step, 4);
  // Records past the checkpoint: steps 5 and 6 and the eval at 6 (logged by the run); one cut short by the crash.
  await appendFile(join(o.out!, 'metrics.jsonl'), '{"step":7,"loss":2.5,"lr"');
  assert.deepEqual(trainSteps(await readRecords(o.out!, true)), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(valSteps(await readRecords(o.out!, true)), [3, 6]);
  return o;
}

test('a run resumed after a crash past its last save drops the records of the discarded steps from metrics.jsonl', async () => {
  const o = await crashedRun();
  await train({ resume: o.out, backend: 'reference' });
  const records = await readRecords(o.out!);
  assert.deepEqual(trainSteps(records), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'each step once, in order');
  assert.deepEqual(valSteps(records), [3, 6, 9, 12]);
  assert.equal(records.filter((r) => r.event === 'start').length, 1, 'the start record stays');
  assert.equal(records.filter((r) => r.final).length, 1);
  // metricsUpToStep itself: step-less lines and stray non-JSON lines stay, a cut last line goes.
  assert.deepEqual(metricsUpToStep('{"event":"x"}\n{"step":1}\nnot json\n{"step":3,"val_loss":1}\n{"step":2,"skipped":true}\n{"st', 2),
    { text: '{"event":"x"}\n{"step":1}\nnot json\n{"step":2,"skipped":true}\n', dropped: 2 });
  assert.deepEqual(metricsUpToStep('', 5), { text: '', dropped: 0 });
});

test('a run resumed into another directory (--out) starts there with the old run\'s history up to its checkpoint; the old run is untouched', async () => {
  const o = await crashedRun();
  const before = await readFile(join(o.out!, 'metrics.jsonl'));
  const oldCkpt = await readFile(join(o.out!, 'checkpoint', 'model.safetensors'));
  const out = join(await mkdtemp(join(tmpdir(), 'minigpt-run-')), 'moved');
  const summary = await train({ resume: o.out, out, backend: 'reference' });
  assert.equal(summary.runDir, out);
  const records = await readRecords(out);
  assert.deepEqual(trainSteps(records), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'the whole run, each step once');
  assert.deepEqual(valSteps(records), [3, 6, 9, 12]);
  assert.equal(records[0].event, 'start');
  assert.match(await readFile(join(out, 'loss.svg'), 'utf8'), /^<svg/);
  assert.deepEqual(await readFile(join(o.out!, 'metrics.jsonl')), before, 'the old run\'s metrics as they were');
  assert.deepEqual(await readFile(join(o.out!, 'checkpoint', 'model.safetensors')), oldCkpt);
  assert.equal((await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true })).training!.step, 4);
  // The new directory now holds a run of its own: resuming the old run into it again would replace it.
  await assert.rejects(train({ resume: o.out, out, backend: 'reference' }), (e: unknown) => e instanceof MinigptError && /already holds a run; continue it with resume: "/.test(e.message));
});

test('reading the loss back every 7 steps trains bitwise like reading every step', async () => {
  const extra = { model: { ...TINY, dropout: 0.1 }, accum: 2, steps: 23, saveEvery: 5, sampleEvery: 0, evalEvery: 10 };
  const runs = [];
  for (const syncEvery of [1, 7]) {
    const o = await opts({ ...extra, syncEvery });
    const steps: { step: number; loss: number; gradNorm: number; lr: number }[] = [];
    const evals: number[] = [];
    await train({ ...o, onStep: (s) => steps.push({ step: s.step, loss: s.loss, gradNorm: s.gradNorm, lr: s.lr }), onEval: (e) => evals.push(e.step, e.valLoss) });
    runs.push({ steps, evals, ckpt: await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true }) });
  }
  const [a, b] = runs;
  assert.equal(a.steps.length, 23);
  assert.deepEqual(b.steps, a.steps);
  assert.deepEqual(b.evals, a.evals, 'evaluations at the same steps, on the same weights');
  assert.deepEqual(b.ckpt.weights, a.ckpt.weights);
  assert.deepEqual(b.ckpt.training!.m, a.ckpt.training!.m);
  assert.equal(b.ckpt.training!.step, 23);
});

test('the loop reads the device once per window of --sync-every steps', async () => {
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const reads: number[] = [];
  for (const syncEvery of [1, 5]) {
    const be = createReferenceBackend();
    let n = 0;
    const read = be.read.bind(be);
    be.read = (t) => { n++; return read(t); };
    await train({ ...(await opts({ steps: 10, evalEvery: 0, syncEvery })), backend: be });
    reads.push(n);
  }
  // The final evaluation and checkpoint read the same in both runs; the steps read 10 times, then twice.
  assert.equal(reads[0] - reads[1], 10 - 2);
});

test('with --sync-every, a skipped step inside a window is taken back: the run ends at its step count', async () => {
  // lr 1e30: the first update blows the weights up, every later loss is NaN and skipped on the device.
  const o = await opts({ lr: 1e30, warmup: 0, minLr: 0, gradClip: 0, steps: 50, syncEvery: 4 });
  const messages: string[] = [];
  await assert.rejects(train({ ...o, onMessage: (m) => messages.push(m) }), (e: unknown) => e instanceof MinigptError && /training diverged: 7 tries in a row at step 2/.test(e.message));
  assert.deepEqual(messages.filter((m) => /skipped the update/.test(m)), ['step 2', ...[2, 3, 4, 5, 6, 7].map((k) => `step 2, try ${k}`)].map((s) => `${s}: loss is NaN; skipped the update`));
  const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
  assert.equal(ckpt.training!.step, 1);
  assert.ok(ckpt.weights.every(Number.isFinite));
});

test('an aborted run saves a loadable checkpoint at the step it reached', async () => {
  const o = await opts({ steps: 100 });
  const stop = new AbortController();
  const summary = await train({ ...o, signal: stop.signal, onStep: (s) => { if (s.step === 3) stop.abort(); } });
  assert.equal(summary.interrupted, true);
  assert.equal((await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true })).training!.step, 3);
});

test('accumulating, an abort is heard between micro-batches: the unfinished step is dropped, and resume gives the weights of a straight run', async () => {
  const extra = { steps: 3, accum: 8, evalEvery: 0 };
  const straight = await opts(extra);
  await train(straight);
  const split = await opts(extra);
  const stop = new AbortController();
  // Queued behind step 1: it runs at the first turn of the event loop, which step 2 gives between two micro-batches.
  const first = await train({ ...split, signal: stop.signal, onStep: (s) => { if (s.step === 1) setImmediate(() => stop.abort()); } });
  assert.equal(first.interrupted, true);
  assert.equal(first.steps, 1, 'step 2 was dropped, not finished');
  assert.equal((await loadCheckpoint(join(split.out!, 'checkpoint'), { training: true })).training!.step, 1);
  await train({ resume: split.out, backend: 'reference' });
  const a = await loadCheckpoint(join(straight.out!, 'checkpoint'), { training: true });
  const b = await loadCheckpoint(join(split.out!, 'checkpoint'), { training: true });
  assert.equal(b.training!.step, 3);
  assert.deepEqual(b.weights, a.weights, 'step 2 drew its batches again from where it began');
});

test('dynamic loss scaling: starts at 2^16, halves on overflow, doubles after the growth interval', () => {
  const amp = createAmp('fp16', undefined, 3);
  assert.equal(amp.scale, INITIAL_LOSS_SCALE);
  amp.update(false);
  assert.equal(amp.scale, 32768);
  amp.update(true); amp.update(true);
  assert.equal(amp.scale, 32768);
  amp.update(true);
  assert.equal(amp.scale, 65536);
  assert.equal(createAmp('bf16').scale, 1);
});

test('fp16 training with a forced overflow skips those steps, halving the scale each time, then trains', async () => {
  const o = await opts({ amp: 'fp16', steps: 4, ampInitialScale: 2 ** 40 });
  const scales: number[] = [];
  const messages: string[] = [];
  const summary = await train({ ...o, onStep: (s) => scales.push(s.lossScale), onMessage: (m) => messages.push(m) });
  assert.ok(summary.skippedSteps >= 10, `skipped ${summary.skippedSteps}`);
  assert.equal(messages.filter((m) => /gradient overflow; skipped the update/.test(m)).length, summary.skippedSteps);
  assert.equal(scales[0], 2 ** (40 - summary.skippedSteps));
  assert.equal(summary.steps, 4);
  const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
  assert.equal(ckpt.training!.step, 4);
  assert.equal((ckpt.training!.trainer.amp as { scale: number }).scale, scales.at(-1));
});

test('fp16 with accumulation: 8 micro-batches of 1 keep the loss scale a batch of 8 keeps (each micro-batch is scaled by scale / accum)', async () => {
  const runs: { skipped: number; scales: number[] }[] = [];
  for (const [batch, accum] of [[8, 1], [1, 8]]) {
    const scales: number[] = [];
    const summary = await train({ ...(await opts({ amp: 'fp16', batch, accum, steps: 3, warmup: 0, lr: 3e-3, evalEvery: 0 })), onStep: (s) => scales.push(s.lossScale) });
    runs.push({ skipped: summary.skippedSteps, scales });
  }
  // The default scale 2^16 holds for one batch of 8 sequences; the running sum of 8 micro-batches each
  // scaled by the whole 2^16 overflowed f16 at step 1.
  assert.deepEqual(runs.map((r) => r.skipped), [0, 0]);
  assert.deepEqual(runs[1].scales, runs[0].scales);
});

test('a skipped step leaves weights and optimizer moments untouched', async () => {
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const { createModel, setWeights, readWeights } = await import('../src/model/model.js');
  const { createOptimizer, optimizerStepChecked } = await import('../src/train/optimizer.js');
  const c = resolveConfig({ vocab_size: 8, ...TINY });
  const be = createReferenceBackend();
  const model = createModel(be, c);
  setWeights(model, new Float32Array(model.layout.size).fill(0.5));
  const opt = createOptimizer(model);
  be.write(model.grads.all, new Float32Array(model.layout.size).fill(1));
  be.write(model.grads.all, [Infinity], 3);
  const norm = await optimizerStepChecked(model, opt, 0.1);
  assert.equal(norm, Infinity);
  assert.ok((await readWeights(model)).every((w) => w === 0.5));
  assert.ok((await be.read(opt.m)).every((m) => m === 0));
  assert.equal(opt.step, 0);
});

test('bf16 training runs without loss scaling and lowers the loss', async () => {
  const losses: number[] = [];
  const summary = await train({ ...(await opts({ amp: 'bf16', steps: 30 })), onStep: (s) => { losses.push(s.loss); assert.equal(s.lossScale, 1); } });
  assert.equal(summary.skippedSteps, 0);
  assert.ok(losses.at(-1)! < losses[0] - 1);
});

test('a loss that keeps coming out non-finite stops training with a clear error and the last good checkpoint (fp32, and bf16, which has no loss scale to halve)', async () => {
  for (const amp of ['off', 'bf16'] as const) {
    const o = await opts({ lr: 1e30, warmup: 0, minLr: 0, gradClip: 0, steps: 50, amp });
    let tries = 0;
    await assert.rejects(train({ ...o, onMessage: (m) => void (tries += /skipped the update/.test(m) ? 1 : 0) }),
      (e: unknown) => e instanceof MinigptError && /training diverged: 5 tries in a row at step 2/.test(e.message) && /lower lr \(now /.test(e.message), amp);
    assert.equal(tries, 5, amp);
    const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
    assert.ok(ckpt.weights.every(Number.isFinite));
  }
});

test('weights that overflowed are never saved: a diverged run keeps the checkpoint it had, or saves none', async () => {
  // lr 1e39 is past float32's range: the weights overflow at step 1, and step 2's loss is NaN five times.
  const o = await opts({ lr: 1e39, warmup: 0, minLr: 0, gradClip: 0, steps: 50 });
  await assert.rejects(train(o), (e: unknown) => e instanceof MinigptError
    && /^training diverged: 5 tries in a row at step 2 had a non-finite loss or gradient; the weights at step 1 are no longer finite numbers, so they were not saved; try a lower lr \(now 1e\+39\)$/.test(e.message));
  assert.deepEqual(await readdir(o.out!).then((f) => f.filter((n) => n.includes('checkpoint'))), []);
  // A periodic save of such weights is refused the same way, and leaves the earlier checkpoint.
  const good = await opts({ steps: 2, saveEvery: 1 });
  await train(good);
  const before = await readFile(join(good.out!, 'checkpoint', 'model.safetensors'));
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const backend = createReferenceBackend();
  const write = backend.write.bind(backend);
  backend.adamw = ((adamw) => (...args: Parameters<typeof adamw>) => { adamw(...args); write(args[0], [Infinity], 0); })(backend.adamw.bind(backend));
  await assert.rejects(train({ ...good, resume: good.out, steps: 3, backend }), (e: unknown) => e instanceof MinigptError &&
    /^the weights at step 3 are no longer finite numbers, so they were not saved; the checkpoint already in .* \(an earlier step\) is kept; try a lower lr/.test(e.message));
  assert.deepEqual(await readFile(join(good.out!, 'checkpoint', 'model.safetensors')), before);
});

test('a batch that cannot fit in memory is refused before anything is allocated: train, lr-find, and eval takes no more than its windows', async () => {
  const huge = 1e9;
  await assert.rejects(train(await opts({ batch: huge })), (e: unknown) => e instanceof MinigptError
    && /^batch 1000000000 of 16-token sequences needs ~\d+\.\d GiB for this model, more than this machine's \d+\.\d GiB; use a smaller batch \(accum keeps the tokens per step\)$/.test(e.message));
  const config = resolveConfig({ vocab_size: 20, ...TINY });
  await assert.rejects(findLearningRate({ config, train: memoryTokens(new Int32Array(400)), batch: huge, backend: 'reference' }),
    (e: unknown) => e instanceof MinigptError && /^batch 1000000000 of .* use a smaller batch$/.test(e.message));
  // eval: a batch past the windows there are is just all of them at once.
  const o = await opts({ steps: 2 });
  await train(o);
  const { loadModel } = await import('../src/inference.js');
  const { evaluateText } = await import('../src/train/train.js');
  const loaded = await loadModel(o.out!, { backend: 'reference' });
  const few = await evaluateText(loaded.model, loaded.tokenizer, CORPUS.slice(0, 2000), { batch: 8 });
  assert.deepEqual(await evaluateText(loaded.model, loaded.tokenizer, CORPUS.slice(0, 2000), { batch: huge }), few);
});

test('eval\'s default batch shrinks to what a backend holds, in all and per tensor (the same scores); a batch asked for is taken as asked', async () => {
  const o = await opts({ steps: 2 });
  await train(o);
  const { loadModel } = await import('../src/inference.js');
  const { evaluateText } = await import('../src/train/train.js');
  const { createModel, setWeights } = await import('../src/model/model.js');
  const { modelBytes } = await import('../src/train/train.js');
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const loaded = await loadModel(o.out!, { backend: 'reference' });
  const c = loaded.model.config;
  // A backend whose memory holds the weights and the activations of two windows, not of eight.
  const limit = Math.ceil(modelBytes(c, 2, c.context, false) / 0.9);
  const weights = (await loadCheckpoint(join(o.out!, 'checkpoint'))).weights;
  const smallModel = () => {
    const ref = createReferenceBackend();
    let used = 0;
    const model = createModel({ ...ref, memoryLimit: limit, alloc: (n: number) => {
      used += 4 * n;
      if (used > limit) throw new MinigptError(`memory full (${used} of ${limit} bytes)`);
      return ref.alloc(n);
    } }, c);
    setWeights(model, weights);
    return model;
  };
  const text = CORPUS.slice(0, 4000);
  const fits = await evaluateText(smallModel(), loaded.tokenizer, text);
  assert.deepEqual(fits, await evaluateText(loaded.model, loaded.tokenizer, text, { batch: 8 }));
  assert.ok(fits.tokens >= 8 * c.context, 'enough windows for a batch of 8');
  await assert.rejects(evaluateText(smallModel(), loaded.tokenizer, text, { batch: 8 }), /memory full/);
  // A bound on one tensor (a GPU's largest buffer): the widest activation (this tiny model's: the
  // MLP's gate|up) of two windows fits, of eight not. (Its weights are one tensor bigger than
  // that; the bound spares them here.)
  const maxTensorBytes = 4 * 2 * c.context * Math.max(c.vocab_size, 2 * c.intermediate_size, 3 * c.d_model);
  const narrowModel = () => {
    const ref = createReferenceBackend();
    const model = createModel({ ...ref, maxTensorBytes, alloc: (n: number) => {
      if (4 * n > maxTensorBytes && n !== weights.length) throw new MinigptError(`tensor too big (${4 * n} of ${maxTensorBytes} bytes)`);
      return ref.alloc(n);
    } }, c);
    setWeights(model, weights);
    return model;
  };
  assert.deepEqual(await evaluateText(narrowModel(), loaded.tokenizer, text), fits);
  await assert.rejects(evaluateText(narrowModel(), loaded.tokenizer, text, { batch: 8 }), /tensor too big/);
});

test('lr-find sweeps exponentially, suggests a rate inside the sweep, and touches no checkpoint', async () => {
  const o = await opts({ steps: 5 });
  await train(o);
  const ckptFile = join(o.out!, 'checkpoint', 'model.safetensors');
  const before = createHash('sha256').update(await readFile(ckptFile)).digest('hex');
  const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'));
  const tokens = ckpt.tokenizer.encode(CORPUS);
  const result = await findLearningRate({ config: ckpt.config, train: memoryTokens(tokens), weights: ckpt.weights, batch: 4, steps: 40, startLr: 1e-5, endLr: 10, backend: 'reference' });
  assert.ok(result.curve.length >= 10);
  const lrs = result.curve.map((p) => p.lr);
  for (let i = 1; i < lrs.length; i++) assert.ok(Math.abs(lrs[i] / lrs[i - 1] - Math.pow(1e6, 1 / 39)) < 1e-9);
  assert.ok(result.suggestion >= 1e-5 && result.suggestion <= 10);
  assert.ok(result.stoppedEarly, 'lr 10 diverges, so the sweep stops early');
  assert.equal(createHash('sha256').update(await readFile(ckptFile)).digest('hex'), before);
});

test('lr-find stops when the loss climbs back past where it started, though it never reaches 4x its best', async () => {
  // A blown-up loss settles near ln(vocab) (~3.3 here), while the best is ~1.5: the 4x rule cannot fire.
  const { buildCharTokenizer } = await import('../src/data/tokenizer.js');
  const lines = Array.from({ length: 600 }, (_, i) => `the cat ${i % 7} sat on mat ${(i * 3) % 11}; dog ${(i * 5) % 13} ran.\n`).join('');
  const tokenizer = buildCharTokenizer(lines);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 4, n_layers: 2, context: 32 });
  const r = await findLearningRate({ config, train: memoryTokens(tokenizer.encode(lines)), batch: 8, backend: 'cpu', threads: 1 });
  const start = r.curve[0].smoothed, last = r.curve.at(-1)!.smoothed, best = Math.min(...r.curve.map((p) => p.smoothed));
  assert.ok(r.stoppedEarly && r.curve.length < 100, `${r.curve.length} steps`);
  assert.ok(last > start && last < 4 * best && best < 0.9 * start, `start ${start}, best ${best}, last ${last}`);
  assert.ok(r.suggestion < r.minimum);
});

test('lr-find with dropout draws a new mask each step, forward and backward alike', async () => {
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const backend = createReferenceBackend();
  const seeds: number[] = [];
  const dropout = backend.dropout.bind(backend);
  backend.dropout = (out, inp, p, seed) => { seeds.push(seed); dropout(out, inp, p, seed); };
  const config = resolveConfig({ vocab_size: 20, ...TINY, dropout: 0.2 });
  const train = memoryTokens(Int32Array.from({ length: 400 }, (_, i) => (i * 7) % 20));
  await findLearningRate({ config, train, batch: 2, steps: 10, startLr: 1e-4, endLr: 1e-3, backend });
  // 1 layer: 3 dropout sites, each applied in the forward and again in the backward.
  assert.equal(seeds.length, 10 * 6);
  const perStep = Array.from({ length: 10 }, (_, k) => seeds.slice(6 * k, 6 * k + 6));
  for (const step of perStep) assert.deepEqual(step.slice(3).sort(), step.slice(0, 3).sort(), 'the backward uses the forward\'s masks');
  assert.equal(new Set(perStep.map((s) => s[0])).size, 10, `first-site seeds ${perStep.map((s) => s[0])}`);
});

test('training reads prepared shards from disk and resumes from them exactly like from text', async () => {
  const { prepareShards } = await import('../src/data/shards.js');
  const shardDir = join(await mkdtemp(join(tmpdir(), 'minigpt-shards-')), 'shards');
  await prepareShards({ data: await data(), out: shardDir, tokenizer: 'char', shardTokens: 1000 });
  const fromShards = await opts({ data: shardDir, steps: 12 });
  const fromText = await opts({ steps: 12 });
  const a = await train(fromShards), b = await train(fromText);
  assert.equal(a.steps, 12);
  // Same tokens, same split, same seed: the same run.
  assert.equal(a.finalLoss, b.finalLoss);
});

test('shards prepared without a validation split: training says so and how to give one', async () => {
  const { prepareShards } = await import('../src/data/shards.js');
  const shardDir = join(await mkdtemp(join(tmpdir(), 'minigpt-shards-')), 'no-val');
  await prepareShards({ data: await data(), out: shardDir, tokenizer: 'char', valFraction: 0 });
  await assert.rejects(train(await opts({ data: shardDir, steps: 2 })), (e: unknown) => e instanceof MinigptError
    && e.message === `${shardDir} has no validation shards (prepared with a validation fraction of 0); give valData, or prepare the data again with a validation fraction`);
  assert.equal((await train(await opts({ data: shardDir, valData: await data(), steps: 2 }))).steps, 2);
});

test('cleaning steps are switchable: lowercase on gives a vocabulary without capitals', async () => {
  const { loadTrainingData } = await import('../src/train/train.js');
  const file = join(await mkdtemp(join(tmpdir(), 'minigpt-clean-')), 'c.txt');
  await writeFile(file, 'Hello World\r\n\n\n\nBye\u0007 Now\n');
  const lower = await loadTrainingData({ data: file, clean: { lowercase: true } });
  const asIs = await loadTrainingData({ data: file, clean: { nfc: false, newlines: false, controlChars: false, collapseBlankLines: false, lowercase: false } });
  const vocab = (d: { tokenizer: { toJSON(): unknown } }): string[] => (d.tokenizer.toJSON() as { vocab: string[] }).vocab;
  assert.ok(!vocab(lower).some((ch) => /[A-Z\r\u0007]/.test(ch)));
  assert.ok(vocab(asIs).includes('H') && vocab(asIs).includes('\r') && vocab(asIs).includes('\u0007'));
});

test('documents (folder files, JSONL records): <|endoftext|> between them for gpt2 and bpe, a blank line for char; a resumed run keeps its separator', async () => {
  const { loadTrainingData } = await import('../src/train/train.js');
  const { gpt2Tokenizer } = await import('../src/data/gpt2.js');
  const { cleanText } = await import('../src/data/text.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-docs-'));
  await writeFile(join(dir, 'a.txt'), 'Hello there.\n');
  // A literal "<|endoftext|>" stays text; a record that cleans to nothing adds no separator.
  await writeFile(join(dir, 'b.jsonl'), ['{"text": "One <|endoftext|> two"}', '{"text": "\\u0001"}', '{"text": "Three"}'].join('\n'));
  const all = (d: { train: { length: number; read(at: number, into: Int32Array): void }; val: { length: number; read(at: number, into: Int32Array): void } }): number[] => {
    const out: number[] = [];
    for (const s of [d.train, d.val]) {
      const buf = new Int32Array(s.length);
      if (s.length > 0) s.read(0, buf);
      out.push(...buf);
    }
    return out;
  };
  const gpt2 = gpt2Tokenizer();
  const fromGpt2 = await loadTrainingData({ data: dir, tokenizer: 'gpt2' });
  assert.equal(fromGpt2.documentSeparator, '<|endoftext|>');
  assert.equal(fromGpt2.documents, 3);
  assert.deepEqual(all(fromGpt2), [...gpt2.encode('Hello there.\n'), 50256, ...gpt2.encode('One <|endoftext|> two'), 50256, ...gpt2.encode('Three')]);
  // An older run's record (no separator recorded) reads its data as it did: joined by a blank line.
  const asBefore = await loadTrainingData({ data: dir, tokenizer: 'gpt2', documentSeparator: '\n\n' });
  assert.deepEqual(all(asBefore), [...gpt2.encode(cleanText('Hello there.\n\n\nOne <|endoftext|> two\n\n\u0001\n\nThree'))]);
  const fromChar = await loadTrainingData({ data: dir, tokenizer: 'char' });
  assert.equal(fromChar.documentSeparator, '\n\n');
  assert.equal(fromChar.documents, 4, 'a char run counts the documents it joins');
  // Joined, then cleaned: the blank-line runs across the joins collapse.
  assert.equal(fromChar.tokenizer.decode(all(fromChar)), 'Hello there.\n\nOne <|endoftext|> two\n\nThree');

  // A bpe run: its BPE learns nothing across documents; the run records the separator, and a
  // resume of a record without one reads the data joined by a blank line, as runs before did.
  const docs = join(dir, 'many.jsonl');
  await writeFile(docs, Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: CORPUS.split('\n').slice(i * 5, i * 5 + 5).join('\n') })).join('\n'));
  const starts: { documents: number | undefined; documentSeparator: string; trainTokens: number }[] = [];
  const o = await opts({ data: docs, tokenizer: 'bpe', bpeVocab: 270, steps: 2, evalEvery: 0, onStart: (s) => void starts.push(s) });
  await train(o);
  assert.equal(starts[0]!.documents, 60);
  assert.equal(starts[0]!.documentSeparator, '<|endoftext|>');
  const ckptDir = join(o.out!, 'checkpoint');
  const ckpt = await loadCheckpoint(ckptDir, { training: true });
  assert.equal(ckpt.training!.trainer.document_separator, '<|endoftext|>');
  delete ckpt.training!.trainer.document_separator; // as a checkpoint written before it was recorded
  const { saveCheckpoint } = await import('../src/io/checkpoint.js');
  await saveCheckpoint(ckptDir, ckpt);
  await train({ resume: o.out, steps: 3, backend: 'reference', onStart: (s) => void starts.push(s) });
  assert.equal(starts[1]!.documentSeparator, '\n\n');
  assert.notEqual(starts[1]!.trainTokens, starts[0]!.trainTokens);
});

test('--val-data beside shards is joined as the shards\' documents were (their meta.json), also for shards prepared before it was recorded', async () => {
  const { loadTrainingData } = await import('../src/train/train.js');
  const { prepareShards } = await import('../src/data/shards.js');
  const { gpt2Tokenizer } = await import('../src/data/gpt2.js');
  const { cleanText } = await import('../src/data/text.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-shards-val-'));
  await writeFile(join(dir, 'train.jsonl'), ['{"text": "First document."}', '{"text": "Second document."}'].join('\n'));
  await writeFile(join(dir, 'val.jsonl'), ['{"text": "Held out."}', '{"text": "Also held out."}'].join('\n'));
  const shards = join(dir, 'shards');
  await prepareShards({ data: join(dir, 'train.jsonl'), out: shards, tokenizer: 'gpt2', valFraction: 0 });
  const valTokens = (d: { val: { length: number; read(at: number, into: Int32Array): void } }): number[] => {
    const buf = new Int32Array(d.val.length);
    d.val.read(0, buf);
    return [...buf];
  };
  const gpt2 = gpt2Tokenizer();
  const withEot = await loadTrainingData({ data: shards, valData: join(dir, 'val.jsonl') });
  assert.equal(withEot.documentSeparator, '<|endoftext|>');
  assert.deepEqual(valTokens(withEot), [...gpt2.encode('Held out.'), 50256, ...gpt2.encode('Also held out.')]);
  const metaPath = join(shards, 'meta.json');
  const meta = JSON.parse(await readFile(metaPath, 'utf8'));
  delete meta.document_separator; // as shards prepared before meta.json recorded it: joined by a blank line
  await writeFile(metaPath, JSON.stringify(meta));
  const older = await loadTrainingData({ data: shards, valData: join(dir, 'val.jsonl') });
  assert.equal(older.documentSeparator, '\n\n');
  assert.deepEqual(valTokens(older), [...gpt2.encode(cleanText('Held out.\n\nAlso held out.'))]);
});

test('best (and keepBest) compares every evaluation on the periodic windows: the final weights are scored on them too, not the whole split against a sample', async () => {
  const o = await opts({ steps: 30, evalEvery: 7, evalWindows: 4, lr: 3e-2, keepBest: true });
  const finals: number[] = [];
  const summary = await train({ ...o, onEval: (e) => { if (e.final) finals.push(e.bestValLoss); } });
  const records = (await readFile(join(o.out!, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).filter((m) => typeof m.val_loss === 'number');
  const periodic = records.filter((m) => !m.final);
  assert.deepEqual(periodic.map((m) => m.step), [7, 14, 21, 28]);
  // The final weights on the periodic windows, scored here.
  const { evaluateLoss } = await import('../src/train/evaluate.js');
  const { createModel, setWeights } = await import('../src/model/model.js');
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const last = await loadCheckpoint(join(o.out!, 'checkpoint'));
  const model = createModel(createReferenceBackend(), last.config);
  setWeights(model, last.weights);
  const { loadTrainingData } = await import('../src/train/train.js');
  const val = (await loadTrainingData({ data: o.data })).val;
  const finalOnSample = (await evaluateLoss(model, val, 4, 16, 4)).loss;
  const candidates = [...periodic.map((m) => ({ step: m.step as number, loss: m.val_loss as number })), { step: 30, loss: finalOnSample }];
  const min = candidates.reduce((a, b) => (b.loss < a.loss ? b : a));
  assert.equal(summary.bestValLoss, min.loss);
  assert.deepEqual(finals, [min.loss], 'the final onEval reports the same best');
  assert.notEqual(summary.finalValLoss, finalOnSample, 'the final evaluation covers more windows than the periodic ones');
  assert.deepEqual(summary.bestCheckpoint, { path: join(o.out!, 'best'), step: min.step, valLoss: min.loss });
  assert.equal((await loadCheckpoint(join(o.out!, 'best'), { training: true })).training!.step, min.step);
});

test('keepBest keeps the checkpoint of the lowest validation loss in RUN/best; continuing from it needs another folder; a resumed run keeps the setting', async () => {
  const o = await opts({ steps: 30, evalEvery: 5, lr: 3e-2, keepBest: true });
  const summary = await train(o);
  const vals = (await readFile(join(o.out!, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).filter((m) => typeof m.val_loss === 'number');
  let min = vals[0];
  for (const m of vals) if (m.val_loss < min.val_loss) min = m;
  const best = await loadCheckpoint(join(o.out!, 'best'), { training: true });
  assert.equal(best.training!.step, min.step, 'best/ holds the step of the lowest validation loss');
  assert.equal(best.training!.trainer.best_val_loss, min.val_loss);
  assert.deepEqual(summary.bestCheckpoint, { path: join(o.out!, 'best'), step: min.step, valLoss: min.val_loss });
  // Continuing from best/ in the run's own folder would replace its latest checkpoint.
  const latest = await readFile(join(o.out!, 'checkpoint', 'model.safetensors'));
  await assert.rejects(train({ resume: join(o.out!, 'best'), steps: 40, backend: 'reference' }), (e: unknown) => e instanceof MinigptError && /best is not the latest checkpoint of a run \(continuing in .* would replace .*checkpoint\); give out: "DIR" for a new run that continues from it$/.test(e.message));
  assert.deepEqual(await readFile(join(o.out!, 'checkpoint', 'model.safetensors')), latest, 'the latest checkpoint is untouched');
  const from = await train({ resume: join(o.out!, 'best'), out: join(o.out!, '..', 'from-best'), steps: 32, backend: 'reference' });
  assert.equal(from.steps, 32);
  // Continued in another folder, the run takes its best checkpoint along: DIR/best is the best of
  // the whole run (here stopped at once, so no evaluation could write one).
  const elsewhere = await train({ resume: o.out, out: join(o.out!, '..', 'elsewhere'), steps: 40, backend: 'reference', signal: AbortSignal.abort() });
  assert.equal(elsewhere.interrupted, true);
  const carried = await loadCheckpoint(join(o.out!, '..', 'elsewhere', 'best'), { training: true });
  assert.equal(carried.training!.step, min.step);
  assert.deepEqual(elsewhere.bestCheckpoint, { path: join(o.out!, '..', 'elsewhere', 'best'), step: min.step, valLoss: min.val_loss });
  // A checkpoint folder copied out of its run is not resumed into the folder around it either.
  const copyParent = await mkdtemp(join(tmpdir(), 'minigpt-copy-'));
  await cp(join(o.out!, 'best'), join(copyParent, 'mymodel'), { recursive: true });
  await assert.rejects(train({ resume: join(copyParent, 'mymodel'), steps: 40, backend: 'reference' }), (e: unknown) => e instanceof MinigptError && /mymodel is not the latest checkpoint of a run; give out: "DIR"/.test(e.message));
  assert.deepEqual(await readdir(copyParent), ['mymodel'], 'nothing is written beside it');
  // Resumed in place without keepBest, the run keeps its own (true) setting.
  await train({ resume: o.out, steps: 32, backend: 'reference' });
  assert.equal(((await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true })).training!.trainer.options as { keep_best: boolean }).keep_best, true);
  // Without it, no best/ folder.
  const plain = await opts({ steps: 5 });
  assert.equal((await train(plain)).bestCheckpoint, null);
  assert.ok(!(await readdir(plain.out!)).includes('best'));
});

test('train() and resolveConfig() refuse what the CLI would: unknown names (with the likely one) and values out of range', async () => {
  const refused = async (opts: object, re: RegExp): Promise<void> => {
    await assert.rejects(train({ out: join(await mkdtemp(join(tmpdir(), 'minigpt-opts-')), 'never'), ...opts } as TrainOptions), (e: unknown) => e instanceof MinigptError && re.test(e.message), JSON.stringify(opts));
  };
  await refused({ batchSize: 4 }, /^unknown training option "batchSize" \(did you mean "batch"\?\)$/);
  await refused({ step: 1 }, /^unknown training option "step" \(did you mean "steps"\?\)$/);
  await refused({ model: { dmodel: 16 } }, /^unknown model setting "dmodel" \(did you mean "d_model"\?\)/);
  await refused({ amp: 'fp8' }, /^amp must be one of off, fp16, bf16 \(got "fp8"\)$/);
  // Named as a library caller names them, not by the CLI's flags.
  await refused({ batch: 0 }, /^batch must be a whole number, 1 or more \(got 0\)$/);
  await refused({ keepBest: 'yes' }, /^keepBest must be true or false \(got "yes"\)$/);
  await refused({ steps: 2.5 }, /^steps must be a whole number, 1 or more/);
  await refused({ lr: 0.1, minLr: 1 }, /^minLr must be at most lr \(got minLr 1, lr 0\.1\)$/);
  await refused({ model: { n_heads: 3 } }, /^model.n_heads \(3\) must divide model.d_model \(128\)$/);
  await refused({ maxTime: -1 }, /^maxTime must be a number above 0 \(got -1\)$/);
  await refused({ weightDecay: -1 }, /^weightDecay must be a number, 0 or more/);
  await refused({ warmup: -5 }, /^warmup must be a whole number, 0 or more \(got -5\)$/);
  await refused({ seed: 1.5 }, /^seed must be a whole number/);
  await refused({ logEvery: 0 }, /^logEvery must be a whole number, 1 or more/);
  await refused({ saveEvery: -2 }, /^saveEvery must be a whole number, 0 or more/);
  await refused({ lr: '0.1' }, /^lr must be a number above 0 \(got "0\.1"\)$/);
  assert.throws(() => resolveConfig({ vocab_size: 50, dmodel: 32 } as never), (e: unknown) => e instanceof MinigptError && /unknown model setting "dmodel" \(did you mean "d_model"\?\)/.test(e.message));
  assert.equal(resolveConfig({ vocab_size: 50, d_model: 32, n_heads: 2 }).d_model, 32);
});

test('a run on shards records the cleaning the shards were prepared with, so prompts are cleaned that way', async () => {
  const { prepareShards } = await import('../src/data/shards.js');
  const { loadModel } = await import('../src/inference.js');
  const { preparePrompt } = await import('../src/generate.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-shards-clean-'));
  const text = join(dir, 'text.txt');
  await writeFile(text, 'The Cat Sat On The Mat. '.repeat(80));
  const shards = join(dir, 'shards');
  await prepareShards({ data: text, out: shards, tokenizer: 'char', clean: { lowercase: true } });
  const o = await opts({ data: shards, steps: 2, evalEvery: 0 });
  const summary = await train(o);
  assert.equal(summary.clean?.lowercase, true);
  const loaded = await loadModel(o.out!, { backend: 'reference' });
  assert.equal(loaded.clean?.lowercase, true);
  assert.deepEqual(preparePrompt(loaded, 'The CAT'), { prompt: 'the cat', note: "the prompt is lowercased, as the model's training text was (clean: { lowercase: true })" });
});

test('a hand-edited trainer_state.json (a checkpoint without a manifest) is a clear error on resume, field by field', async () => {
  const { rm: remove } = await import('node:fs/promises');
  const o = await opts({ steps: 2, evalEvery: 0 });
  await train(o);
  const ckptDir = join(o.out!, 'checkpoint');
  await remove(join(ckptDir, 'manifest.json')); // the manifest is optional: without it nothing checks the bytes
  const statePath = join(ckptDir, 'trainer_state.json');
  const good = JSON.parse(await readFile(statePath, 'utf8'));
  const cases: [(s: Record<string, any>) => void, RegExp][] = [
    [(s) => { delete s.options; }, /"options" must be the run's settings \(got undefined\)/],
    [(s) => { s.best_val_loss = 'abc'; }, /"best_val_loss" must be a loss or null \(got "abc"\)/],
    [(s) => { s.data = 5; }, /"data" must be a path or null \(got 5\)/],
    [(s) => { s.amp = null; }, /"amp" must be the mixed-precision state/],
    [(s) => { s.options = {}; }, /"options\.batch" must be a whole number of at least 1 \(got undefined\)/],
    [(s) => { s.tokens_seen = 'x'; }, /"tokens_seen" must be a number of at least 0/],
    [(s) => { s.options.batch = 0; }, /"options\.batch" must be a whole number of at least 1 \(got 0\)/],
    [(s) => { s.options.sync_every = 0; }, /"options\.sync_every" must be a whole number \(got 0\)/],
    [(s) => { s.sampler = { s: [1, 2], spare: null }; }, /"sampler" must be a random-number state/],
    [(s) => { s.data_tokens = {}; }, /"data_tokens" must be the train and val token counts \(got \{\}\)/],
    [(s) => { s.device = 'cpu'; }, /"device" must be the backend and its threads \(got "cpu"\)/],
    [(s) => { s.invalid_utf8 = 'skip'; }, /"invalid_utf8" must be "replace" or absent/],
  ];
  for (const [edit, re] of cases) {
    const state = structuredClone(good);
    edit(state);
    await writeFile(statePath, JSON.stringify(state));
    await assert.rejects(train({ resume: o.out, steps: 3, backend: 'reference' }), (e: unknown) => e instanceof MinigptError && re.test(e.message) && /trainer_state\.json: .*the checkpoint is corrupt$/.test(e.message), String(re));
  }
  await writeFile(statePath, JSON.stringify(good));
  const resumed = await train({ resume: o.out, steps: 3, backend: 'reference' });
  assert.equal(resumed.steps, 3);
});

/** A run of `o` stopped (as Ctrl-C stops it) after `steps` steps. */
async function stopAfter(o: TrainOptions, steps: number): Promise<void> {
  const stop = new AbortController();
  const s = await train({ ...o, signal: stop.signal, onStep: (i) => { if (i.step === steps) stop.abort(); } });
  assert.equal(s.steps, steps);
}

test('resume reads its data as the run did and says what changed: invalidUtf8 "replace" is kept, other validation data, a changed data file, another thread count', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-resume-notes-'));
  const file = join(dir, 'bad-bytes.txt');
  await writeFile(file, Buffer.concat([Buffer.from(CORPUS), Buffer.from([0xff, 0x0a]), Buffer.from(CORPUS)]));
  const first = await opts({ data: file, invalidUtf8: 'replace', steps: 20, onWarning: () => {} });
  await stopAfter(first, 5);
  // Resuming without invalidUtf8 reads the bytes as the run did (it failed: "pass invalidUtf8 replace").
  const messages: string[] = [];
  const resumed = await train({ resume: first.out, backend: 'reference', steps: 12, onMessage: (m) => messages.push(m), onWarning: () => {} });
  assert.equal(resumed.steps, 12);
  // The validation data changes: said, and the best val loss starts afresh.
  const val = join(dir, 'val.txt');
  await writeFile(val, CORPUS.split('\n').reverse().join('\n'));
  messages.length = 0;
  const other = await train({ resume: first.out, backend: 'reference', steps: 14, valData: val, evalEvery: 0, onMessage: (m) => messages.push(m), onWarning: () => {} });
  assert.ok(messages.some((m) => m.startsWith(`validating on ${val} (the run validated on a split of its training data until now)`)), messages.join('\n'));
  assert.ok(messages.some((m) => /the best val loss \(\d\.\d{4} on the old\) starts afresh/.test(m)), messages.join('\n'));
  assert.equal(other.bestValLoss, other.finalValLoss, 'the best is the new data\'s only evaluation');
  // The training file is all training now (no split), but it did not change: nothing said of it.
  assert.ok(!messages.some((m) => m.startsWith('changed since')), messages.join('\n'));
  // The data file changes under its path: said.
  await writeFile(file, CORPUS.slice(0, CORPUS.length / 2));
  messages.length = 0;
  await train({ resume: first.out, backend: 'reference', steps: 16, onMessage: (m) => messages.push(m), onWarning: () => {} });
  assert.ok(messages.some((m) => /^changed since the run began: bad-bytes\.txt \([\d,]+ train tokens then, [\d,]+ now\); the run goes on/.test(m)), messages.join('\n'));
  // Another backend: the continuation is not bit-identical, and it says so.
  messages.length = 0;
  await train({ resume: first.out, backend: 'cpu', threads: 1, steps: 18, onMessage: (m) => messages.push(m), onWarning: () => {} });
  assert.ok(messages.some((m) => m.startsWith('the run trained on reference until now and goes on on cpu with 1 thread')), messages.join('\n'));
});

test('resume takes the default min lr given back as written (lr / 10 rounds), and refuses bpeVocab for a char run', async () => {
  const o = await opts({ lr: 3e-3, minLr: undefined, steps: 10 });
  await stopAfter(o, 5);
  const s = await train({ resume: o.out, backend: 'reference', minLr: 3e-4, steps: 10 });
  assert.equal(s.steps, 10);
  await assert.rejects(train({ resume: o.out, backend: 'reference', bpeVocab: 300, steps: 12 }), /bpeVocab 300 conflicts with the run being resumed: a resumed run keeps its char tokenizer of \d+ tokens/);
});

test('a diverged run\'s history and plot end where it blew up: its last step is logged and loss.svg drawn', async () => {
  const o = await opts({ lr: 1e6, warmup: 0, steps: 100, evalEvery: 1000, logEvery: 1000 });
  await assert.rejects(train(o), /training diverged/);
  const metrics = (await readFile(join(o.out!, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
  assert.ok(metrics.some((m) => m.step === ckpt.training!.step && typeof m.loss === 'number'), `no record of step ${ckpt.training!.step}: ${JSON.stringify(metrics)}`);
  assert.match(await readFile(join(o.out!, 'loss.svg'), 'utf8'), /^<svg/);
});

test('resume keeps the JSONL field the run read (the CLI passed its default "text" over it), and takes text in memory instead of the file without a field', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-resume-field-'));
  const file = join(dir, 'd.jsonl');
  await writeFile(file, CORPUS.split('\n').map((body) => JSON.stringify({ body })).join('\n'));
  const o = await opts({ data: file, textField: 'body', steps: 12 });
  await stopAfter(o, 4);
  const { spawnSync } = await import('node:child_process');
  const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [cli, 'train', '--resume', o.out!, '--steps', '6', '--quiet'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // The same field named again (the CLI's default recorded as "text", or null): nothing to note.
  const messages: string[] = [];
  await train({ resume: o.out, backend: 'reference', textField: 'body', steps: 7, onMessage: (m) => messages.push(m) });
  assert.ok(!messages.some((m) => m.startsWith('reading the field') || m.startsWith('changed since')), messages.join('\n'));
  const s = await train({ resume: o.out, backend: 'reference', text: CORPUS, steps: 8, onMessage: () => {} });
  assert.equal(s.steps, 8);
});

test('a long evaluation lets the event loop turn: a timer\'s abort ends it early, saying so', async () => {
  const { evaluateLoss } = await import('../src/train/evaluate.js');
  const { createModel, setWeights } = await import('../src/model/model.js');
  const { createReferenceBackend } = await import('../src/backend/reference/index.js');
  const { initialWeights } = await import('../src/model/params.js');
  const { createRng } = await import('../src/util/random.js');
  const config = resolveConfig({ ...TINY, vocab_size: 20 });
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, initialWeights(config, model.layout, createRng(1)));
  const tokens = memoryTokens(Int32Array.from({ length: 2_000_000 }, (_, i) => (i * 7) % 20));
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 30);
  const r = await evaluateLoss(model, tokens, 4, 16, Infinity, undefined, stop.signal);
  assert.equal(r.aborted, true);
  assert.ok(r.tokens > 0 && r.tokens < 2_000_000, `${r.tokens} tokens scored`);
  const whole = await evaluateLoss(model, memoryTokens(Int32Array.from({ length: 2000 }, (_, i) => (i * 7) % 20)), 4, 16);
  assert.equal(whole.aborted, false);
});

test('a run recorded before the page-breaks cleaning step (its clean lacks pageBreaks) samples, evaluates and resumes without it', async () => {
  const { rm: remove } = await import('node:fs/promises');
  const { loadModel } = await import('../src/inference.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-pagebreaks-'));
  const file = join(dir, 'pages.txt');
  await writeFile(file, CORPUS.replaceAll('.\n', '.\f'));
  const o = await opts({ data: file, steps: 6 });
  await stopAfter(o, 3);
  const statePath = join(o.out!, 'checkpoint', 'trainer_state.json');
  const state = JSON.parse(await readFile(statePath, 'utf8'));
  assert.equal(state.clean.pageBreaks, true, 'written out');
  delete state.clean.pageBreaks;
  await writeFile(statePath, JSON.stringify(state));
  await remove(join(o.out!, 'checkpoint', 'manifest.json'));
  const loaded = await loadModel(o.out!, { backend: 'reference' });
  assert.equal(loaded.clean?.pageBreaks, false);
  loaded.model.backend.destroy();
  await train({ resume: o.out, backend: 'reference', steps: 5 });
  assert.equal(JSON.parse(await readFile(statePath, 'utf8')).clean.pageBreaks, false, 'the run keeps the cleaning it trained with');
  // Runs before cleaning was recorded at all have no "clean": the defaults of then, without the step.
  const older = JSON.parse(await readFile(statePath, 'utf8'));
  delete older.clean;
  await writeFile(statePath, JSON.stringify(older));
  await remove(join(o.out!, 'checkpoint', 'manifest.json'));
  await train({ resume: o.out, backend: 'reference', steps: 6 });
  assert.equal(JSON.parse(await readFile(statePath, 'utf8')).clean.pageBreaks, false);
});
