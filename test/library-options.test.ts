/** The library's calls check what a caller passes, as the CLI checks its flags: misspelt option names, values out of range, wrong types. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MinigptError, UnknownCharacterError, train, loadModel, createBackend, generate, evaluateText, loadTrainingData, findLearningRate, prepareShards,
  exportHf, exportGguf, cleanText, loadCheckpoint, resolveConfig, computeLogits, trainBpe, buildCharTokenizer, type TrainOptions,
} from '../src/index.js';

const CORPUS = Array.from({ length: 300 }, (_, i) => `the ${['cat', 'dog', 'bird'][i % 3]} sat on the ${['mat', 'log', 'hat'][(i * 7) % 3]}.`).join('\n');
const TINY = { d_model: 16, n_heads: 2, n_layers: 1, context: 16 };

async function setup(): Promise<{ root: string; data: string; base: (over?: Partial<TrainOptions>) => TrainOptions }> {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-options-'));
  const data = join(root, 'corpus.txt');
  await writeFile(data, CORPUS);
  const base = (over: Partial<TrainOptions> = {}): TrainOptions => ({
    data, model: TINY, batch: 4, steps: 3, warmup: 1, evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 4, backend: 'reference', out: join(root, 'run'), ...over,
  });
  return { root, data, base };
}

/** Asserts that `p` rejects with a MinigptError whose message matches `re`. */
async function refuses(p: Promise<unknown> | (() => unknown), re: RegExp): Promise<void> {
  await assert.rejects(async () => { await (typeof p === 'function' ? p() : p); }, (e: unknown) => {
    assert.ok(e instanceof MinigptError, `${(e as Error)?.stack ?? String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

/** Anything, as a caller from plain JS may pass it. */
const loose = <T>(v: unknown): T => v as T;

test('misspelt option names are errors with a guess, in every call that takes options', async () => {
  const { root, data, base } = await setup();
  const summary = await train(base());
  const loaded = await loadModel(summary.checkpoint, { backend: 'reference' });
  const ckpt = await loadCheckpoint(summary.checkpoint);
  const drain = async (it: AsyncIterable<unknown>): Promise<void> => { for await (const _ of it) void _; };
  await refuses(drain(generate(loaded, 'the', loose({ maxtokens: 5 }))), /unknown generate option "maxtokens" \(did you mean "maxTokens"\?\)/);
  await refuses(drain(generate(loaded, 'the', loose({ top_k: 5 }))), /unknown generate option "top_k" \(did you mean "topK"\?\)/);
  await refuses(evaluateText(loaded.model, loaded.tokenizer, CORPUS, loose({ al: true })), /unknown evaluateText option "al" \(did you mean "all"\?\)/);
  await refuses(loadTrainingData(loose({ data, text_field: 'body' })), /unknown loadTrainingData option "text_field" \(did you mean "textField"\?\)/);
  await refuses(loadModel(summary.checkpoint, loose({ forsampling: true })), /unknown loadModel option "forsampling" \(did you mean "forSampling"\?\)/);
  await refuses(createBackend('reference', loose({ thread: 1 })), /unknown createBackend option "thread" \(did you mean "threads"\?\)/);
  await refuses(findLearningRate(loose({ config: loaded.model.config, train: { length: 0 }, stpes: 5 })), /unknown findLearningRate option "stpes" \(did you mean "steps"\?\)/);
  await refuses(prepareShards(loose({ data, out: join(root, 'shards'), tokenizer: 'char', shardtokens: 100 })), /unknown prepareShards option "shardtokens" \(did you mean "shardTokens"\?\)/);
  await refuses(exportHf(ckpt, join(root, 'hf'), loose({ dtpye: 'F16' })), /unknown exportHf option "dtpye"/);
  await refuses(exportGguf(ckpt, join(root, 'm.gguf'), loose({ overwite: true })), /unknown exportGguf option "overwite" \(did you mean "overwrite"\?\)/);
  await refuses(() => cleanText('Hi', loose({ lowercas: true })), /unknown clean option "lowercas" \(did you mean "lowercase"\?\)/);
  await refuses(() => cleanText('Hi', loose({ lowercase: 'yes' })), /clean option lowercase must be true or false \(got "yes"\)/);
  await refuses(train(base({ clean: loose({ lowercas: true }) })), /unknown clean option "lowercas"/);
  await refuses(train(base({ clean: loose('lowercase') })), /clean options must be an object \(got "lowercase"\)/);
  // Nothing was written for the refused calls.
  assert.deepEqual((await readdir(root)).sort(), ['corpus.txt', 'run']);
  loaded.model.backend.destroy();
});

test('values of the wrong type or out of range are one clear error, not a hang or a TypeError from inside', async () => {
  const { data, base } = await setup();
  const summary = await train(base());
  const loaded = await loadModel(summary.checkpoint, { backend: 'reference' });
  // batch 0 looped forever; -1 and 1.5 failed inside typed arrays.
  for (const batch of [0, -1, 1.5, NaN]) {
    await refuses(evaluateText(loaded.model, loaded.tokenizer, CORPUS, { batch }), new RegExp(`batch must be a whole number, 1 or more \\(got ${batch}\\)`));
  }
  await refuses(evaluateText(loaded.model, loaded.tokenizer, CORPUS, loose({ all: 'yes' })), /all must be true or false/);
  for (const threads of [0, -3, '2']) {
    await refuses(loadModel(summary.checkpoint, loose({ threads })), /threads must be a whole number, 1 or more/);
    await refuses(createBackend('reference', loose({ threads })), /threads must be a whole number, 1 or more/);
  }
  await refuses(loadModel(loose(42)), /loadModel needs a checkpoint path \(got 42\)/);
  await refuses(train(base({ steps: NaN })), /steps must be a whole number, 1 or more \(got NaN\)/);
  await refuses(train(base({ data: loose(42) })), /data must be a string \(got 42\)/);
  await refuses(train(base({ initFrom: loose(5) })), /initFrom must be a string \(got 5\)/);
  await refuses(train(base({ textField: loose(5) })), /textField must be a string \(got 5\)/);
  await refuses(train(base({ onStep: loose(5) })), /onStep must be a function \(got 5\)/);
  await refuses(train(base({ signal: loose({}) })), /signal must be an AbortSignal/);
  await refuses(train(base({ tokenizer: loose(42) })), /tokenizer must be one of char, gpt2, bpe, or a Tokenizer \(got 42\)/);
  await refuses(train(base({ tokenizer: 'char', bpeVocab: 300 })), /bpeVocab goes with tokenizer: "bpe" \(got tokenizer: "char"\)/);
  await refuses(train(base({ bpeVocab: 300, out: data + '-run' })), /bpeVocab goes with tokenizer: "bpe" \(the tokenizer here is char\)/);
  await refuses(loadTrainingData(loose({ data: 42 })), /data must be a string \(got 42\)/);
  await refuses(train(base({ backend: loose({}) })), /backend must be one of auto, cpu, webgpu, reference, or a backend from createBackend \(got \{\}\)/);
  await refuses(train(base({ model: loose('small') })), /the model settings must be an object such as \{ d_model: 128 \} \(got "small"\)/);
  await refuses(computeLogits(loose(loaded), [1, 2]), /expected a Model \(loadModel's result has it as \.model; got a LoadedModel\)/);
  await refuses(() => trainBpe(loose(42), { vocabSize: 300 }), /trainBpe needs the training text as a string \(got 42\)/);
  await refuses(() => trainBpe('some text', loose(undefined)), /trainBpe needs options with a vocabSize/);
  await refuses(() => loaded.tokenizer.encode(loose(42)), /^encode takes a string \(got 42\)$/);
  await refuses(() => loaded.tokenizer.decode(loose('12')), /^decode takes an array of token ids \(got "12"\)$/);
  assert.ok((await loadTrainingData({ data })).train.length > 0);
  // Backend options' values, not only their names (a misspelt value was taken silently).
  await refuses(createBackend('cpu', loose({ attention: 'flash' })), /^attention must be "blocked" or "rows" on the cpu backend \(got "flash"\)$/);
  await refuses(createBackend('cpu', loose({ relaxedSimd: 'no' })), /^relaxedSimd must be true or false \(got "no"\)$/);
  await refuses(createBackend('cpu', { parallelMinNs: -5 }), /^parallelMinNs must be a number, 0 or more \(got -5\)$/);
  await refuses(createBackend('reference', loose({ webgpu: { kernels: 'fast' } })), /^webgpu kernels must be one of tiled, simple \(got "fast"\)$/);
  await refuses(createBackend('reference', loose({ webgpu: { tiles: 1 } })), /^unknown webgpu option "tiles"/);
  // Options for both go together (minigpt bench passes webgpu's to every backend): each takes its own.
  const both = await createBackend('cpu', { threads: 1, webgpu: { kernels: 'simple', matmulTile: 128 } });
  assert.equal(both.name, 'cpu');
  both.destroy();
  await refuses(() => buildCharTokenizer(loose(3)), /^buildCharTokenizer needs the text as a string \(got 3\)$/);
  await refuses(() => buildCharTokenizer('abc', loose({ specal: true })), /^unknown buildCharTokenizer option "specal"/);
  await refuses(() => trainBpe('some text', loose({ vocab: 300 })), /^unknown trainBpe option "vocab" \(did you mean "vocabSize"\?\)$/);
  const ckpt = await loadCheckpoint(summary.checkpoint);
  await refuses(exportHf(loose(summary.checkpoint), join(data, '..', 'hf')), /^exportHf needs a checkpoint, \{ config, weights, tokenizer \} as loadCheckpoint\(dir\) or checkpointFromZip\(bytes\) gives it \(got the string ".*": read it with loadCheckpoint first\)$/);
  await refuses(exportGguf(loose(loaded), join(data, '..', 'm.gguf')), /^exportGguf needs a checkpoint, .*\(got a loaded model: readWeights\(model\) gives its weights\)$/);
  assert.ok(ckpt.weights.length > 0);
  await refuses(train(base({ data: undefined, text: CORPUS, textField: 'body' })), /^textField picks the field of JSONL data files; text in memory has none to pick/);
  await refuses(() => resolveConfig({ vocab_size: 10, d_model: NaN }), /^d_model must be a positive integer \(got NaN\)$/);
  loaded.model.backend.destroy();
});

test('long calls let the event loop turn: an abort from a timer stops generate, train and findLearningRate, though no callback or file write comes', async () => {
  const { base } = await setup();
  const summary = await train(base());
  const loaded = await loadModel(summary.checkpoint, { backend: 'reference' });
  const timerAbort = (ms: number): AbortSignal => {
    const c = new AbortController();
    setTimeout(() => c.abort(), ms);
    return c.signal;
  };
  let tokens = 0;
  for await (const _ of generate(loaded, 'the', { maxTokens: 1_000_000, stopAtEndOfText: false, signal: timerAbort(50) })) tokens++;
  assert.ok(tokens > 0 && tokens < 1_000_000, `${tokens} tokens: the abort was not heard`);
  // logEvery past the run: no metrics write gives the loop a turn.
  const run = await train(base({ out: summary.runDir + '-2', steps: 1_000_000, logEvery: 1_000_000, signal: timerAbort(300) }));
  assert.ok(run.interrupted && run.steps < 1_000_000, `stopped at ${run.steps}`);
  const config = resolveConfig({ ...TINY, vocab_size: 20 });
  const ids = Int32Array.from({ length: 2000 }, (_, i) => (i * 7) % 20);
  const stream = { length: ids.length, read: (at: number, out: Int32Array) => out.set(ids.subarray(at, at + out.length)) };
  // 1.5 s: a sweep stopped before its 3rd step has no suggestion and throws; 300 ms left a loaded machine little room.
  const found = await findLearningRate({ config, train: stream, steps: 1_000_000, startLr: 1e-9, endLr: 1e-8, batch: 2, backend: 'reference', signal: timerAbort(1500) });
  assert.ok(found.curve.length >= 3 && found.curve.length < 1_000_000, `${found.curve.length} steps`);
  loaded.model.backend.destroy();
});

test('train checks samplePrompt before the first step, not at the first sample (which came before that step\'s save)', async () => {
  const { base } = await setup();
  let steps = 0;
  await refuses(train(base({ samplePrompt: 'Ω', sampleEvery: 2, onSample: () => {}, onStep: () => { steps++; } })),
    /samplePrompt: character "Ω" .* is not in the tokenizer's vocabulary.*; the run's tokenizer has no token for it/);
  assert.equal(steps, 0);
  // Cleaned as the training text is first: a lowercasing run takes "The" (its text has no "T").
  const samples: string[] = [];
  await train(base({ out: base().out + '-lower', clean: { lowercase: true }, samplePrompt: 'The', sampleEvery: 2, sampleTokens: 4, onSample: (s) => { samples.push(s.text); } }));
  assert.equal(samples.length, 1);
});

test('train awaits a callback\'s promise: one that rejects ends train() with its error and releases the run', async () => {
  const { base, root } = await setup();
  const seen: number[] = [];
  await assert.rejects(train(base({
    steps: 20,
    onStep: async (s) => {
      await new Promise((done) => setTimeout(done, 1));
      seen.push(s.step);
      if (s.step === 3) throw new Error('boom');
    },
  })), /boom/);
  assert.deepEqual(seen, [1, 2, 3], 'each step waited for the callback before it');
  assert.ok(!(await readdir(join(root, 'run'))).includes('.lock'), 'the run lock is released');
  // The run can be trained again at once (a new run in the same folder is refused only as "holds a run" once it has a checkpoint).
  await train(base({ out: join(root, 'again') }));
});

test('findLearningRate stopped before 3 steps says so (it said the loss diverged); bad batch is an option error', async () => {
  const config = resolveConfig({ ...TINY, vocab_size: 20 });
  const tokens = Int32Array.from({ length: 2000 }, (_, i) => (i * 7) % 20);
  const stream = { length: tokens.length, read: (at: number, out: Int32Array) => out.set(tokens.subarray(at, at + out.length)) };
  const stop = new AbortController();
  await refuses(findLearningRate({ config, train: stream, steps: 20, batch: 2, backend: 'reference', signal: stop.signal, onStep: (_p, s) => { if (s === 1) stop.abort(); } }),
    /the sweep was stopped after 1 step, before the 3 a suggestion needs/);
  await refuses(findLearningRate({ config, train: stream, steps: 20, backend: 'reference', signal: AbortSignal.abort() }), /stopped after 0 steps/);
  await refuses(findLearningRate({ config, train: stream, steps: 20, batch: 0, backend: 'reference' }), /batch must be a whole number, 1 or more \(got 0\)/);
  const r = await findLearningRate({ config, train: stream, steps: 10, batch: 2, backend: 'reference' });
  assert.equal(r.curve.length, 10);
});

test('library errors name options as library calls take them, not as CLI flags', async () => {
  const { root, base } = await setup();
  const summary = await train(base());
  await refuses(train(base({ resume: summary.runDir, initFrom: summary.checkpoint })), /^resume and initFrom exclude each other: resume continues a run exactly, initFrom starts/);
  await refuses(train(base()), /already holds a run; continue it with resume: ".*run", or choose another out$/);
  await refuses(train(base({ resume: summary.runDir, out: undefined, batch: 8, model: { ...TINY, d_model: 32 } })),
    /^model\.d_model 32 \(the run has 16\), batch 8 \(the run has 4\): a resumed run keeps its model and training settings so that it continues exactly; drop those options, or start a new run with another out$/);
  await refuses(train(base({ out: join(root, 'long'), model: { ...TINY, context: 100000 } })), /use more data or a smaller model\.context$/);
  const ckpt = await loadCheckpoint(summary.checkpoint);
  await exportGguf(ckpt, join(root, 'm.gguf'));
  await refuses(exportGguf(ckpt, join(root, 'm.gguf')), /refusing to overwrite it \(choose another name or pass overwrite: true\)$/);
  await exportGguf(ckpt, join(root, 'm.gguf'), { overwrite: true });
  // overwrite replaces an earlier GGUF only: not a corpus, not a checkpoint's own weights.
  const { readFile, writeFile } = await import('node:fs/promises');
  await writeFile(join(root, 'corpus.gguf'), 'my text');
  for (const victim of [join(root, 'corpus.gguf'), join(summary.checkpoint, 'model.safetensors')]) {
    const before = await readFile(victim);
    await refuses(exportGguf(ckpt, victim, { overwrite: true }), /is not a GGUF file; overwrite: true replaces only an earlier GGUF export: choose another name$/);
    assert.deepEqual(await readFile(victim), before);
  }
  await refuses(exportGguf(ckpt, '/dev/null', { overwrite: true }), /^\/dev\/null is not a regular file \(a device or a pipe\); give a file name for the GGUF$/);
});

test('UnknownCharacterError is exported, a MinigptError a caller can tell apart', async () => {
  const { buildCharTokenizer } = await import('../src/index.js');
  assert.throws(() => buildCharTokenizer('ab').encode('abc'), (e: unknown) => e instanceof UnknownCharacterError && e instanceof MinigptError);
});

test('train on text held in memory: learns as from a file, resumes exactly with the text given again, and says what it needs without it', async () => {
  const { root, data, base } = await setup();
  const fromText = base({ data: undefined, text: CORPUS, out: join(root, 'text'), steps: 12 });
  const fromFile = base({ out: join(root, 'file'), steps: 12 });
  const names: string[] = [];
  const a = await train({ ...fromText, onStart: (s) => { names.push(s.dataName); } });
  await train(fromFile);
  assert.deepEqual(names, ['the text given in memory']);
  // The same text in a file or in memory: the same run, bit for bit.
  const [wa, wb] = await Promise.all([loadCheckpoint(a.checkpoint), loadCheckpoint(join(root, 'file', 'checkpoint'))]);
  assert.deepEqual(wa.weights, wb.weights);
  // Resume: the text is not in the checkpoint, so it must come again.
  await refuses(train({ resume: a.runDir, steps: 20, backend: 'reference' }), /trained on text given in memory, which its checkpoint does not hold; pass it again as text \(or other training data as data\)/);
  const resumed = await train({ resume: a.runDir, steps: 20, backend: 'reference', text: CORPUS });
  assert.equal(resumed.steps, 20);
  const { evaluateRunData } = await import('../src/train/train.js');
  const loaded = await loadModel(a.checkpoint, { backend: 'reference' });
  await refuses(evaluateRunData(loaded.model, loaded.tokenizer, a.checkpoint), /trained on text given in memory.*score text with evaluateText/);
  // Documents in an array are joined as a folder's files are; bad text is one clear error.
  const docs = await loadTrainingData({ text: ['the cat sat.', 'the dog ran.'], tokenizer: 'char' });
  assert.equal(docs.documentSeparator, '\n\n');
  await refuses(train(base({ text: CORPUS })), /give data or text, not both/);
  await refuses(train(base({ data: undefined, text: loose(42), out: join(root, 'bad') })), /text must be a string or an array of strings \(got 42\)/);
  await refuses(train(base({ data: undefined, text: ['  ', '\n'], out: join(root, 'empty') })), /the text given in memory has no text left after cleaning/);
  void data;
});

test('evaluating on the cpu backend a model whose one window cannot fit its 4 GiB is a one-line refusal that names the context', async () => {
  const { createModel } = await import('../src/model/model.js');
  const tokenizer = buildCharTokenizer('ab ');
  // 8192 positions x 151936 logits: 5 GB for one window.
  const config = resolveConfig({ vocab_size: 151936, d_model: 8, n_heads: 2, n_layers: 1, context: 8192, intermediate_size: 8, tie_embeddings: true });
  const backend = await createBackend('cpu', { threads: 1 });
  try {
    const model = createModel(backend, config);
    await refuses(evaluateText(model, tokenizer, 'ab '.repeat(4000), { all: true }), /^evaluating windows of 8192 tokens needs ~\d+\.\d GiB on the cpu backend, more than the 4 GiB it holds; a model with a shorter context evaluates in shorter windows \(readHfModel's context option\)$/);
  } finally {
    backend.destroy();
  }
});
