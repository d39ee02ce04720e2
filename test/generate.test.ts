/** Sampling rules and streamed generation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrompt, sampleToken, generate } from '../src/generate.js';
import { createReferenceBackend } from '../src/backend/reference/index.js';
import { createModel, setWeights } from '../src/model/model.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights } from '../src/model/params.js';
import { createRng, seedU32 } from '../src/util/random.js';
import { buildCharTokenizer, endOfTextToken, makeTokenizer, startOfTextToken, tokenizerFromJson } from '../src/data/tokenizer.js';
import { hfBpeFixtureTokenizer } from './support/hf-bpe-fixture.js';
import { SAMPLE_ON_CPU_MAX_PARAMS, samplingBackendName, scoreText, computeLogits } from '../src/inference.js';
import { cpuBackendSupported } from '../src/backend/index.js';
import { paramLayout } from '../src/model/params.js';
import { endOfTextModel } from './support/end-of-text-model.js';
import { MinigptError } from '../src/errors.js';

const logits = Float32Array.from([1, 3, 2, 0.5, 2.9]);
const scratch = (): [Int32Array, Float64Array] => [new Int32Array(5), new Float64Array(5)];
const draw = (opts: { temperature: number; topK: number; topP: number }, n = 4000): number[] => {
  const counts = [0, 0, 0, 0, 0];
  const rng = createRng(3);
  const [o, p] = scratch();
  for (let i = 0; i < n; i++) counts[sampleToken(logits, opts, rng.next(), o, p)]++;
  return counts;
};

test('temperature 0 is greedy', () => {
  const [o, p] = scratch();
  assert.equal(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, 0.99, o, p), 1);
});

test('top-k keeps only the k most likely tokens', () => {
  const counts = draw({ temperature: 1, topK: 2, topP: 1 });
  assert.deepEqual([counts[0], counts[2], counts[3]], [0, 0, 0]);
  assert.ok(counts[1] > 1500 && counts[4] > 1500);
});

test('top-p keeps the smallest set reaching probability p', () => {
  // softmax: token 1 ≈ 0.40, token 4 ≈ 0.36, token 2 ≈ 0.15: p = 0.5 keeps tokens 1 and 4.
  const counts = draw({ temperature: 1, topK: 0, topP: 0.5 });
  assert.deepEqual([counts[0], counts[2], counts[3]], [0, 0, 0]);
  assert.ok(counts[1] > counts[4]);
});

test('sampling frequencies follow softmax(logits / temperature)', () => {
  const n = 20000, counts = draw({ temperature: 2, topK: 0, topP: 1 }, n);
  const e = Array.from(logits, (x) => Math.exp(x / 2)), z = e.reduce((a, b) => a + b);
  counts.forEach((c, i) => assert.ok(Math.abs(c / n - e[i] / z) < 0.015, `token ${i}: ${c / n} vs ${e[i] / z}`));
});

test('generation is reproducible by seed, streams text, and runs past the context length', async () => {
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights({ ...c, init: 'kaiming-normal' }, model.layout, createRng(1)));
  const run = async (seed: number): Promise<string> => {
    let s = '';
    for await (const t of generate({ model, tokenizer: tok }, 'abc', { maxTokens: 20, seed })) s += t.text;
    return s;
  };
  const a = await run(1);
  assert.equal(a.length, 20);
  assert.equal(await run(1), a);
  assert.notEqual(await run(2), a);
  // Seeds past 2^32 are seeds of their own, not the low 32 bits again (2^32 + 1 was seed 1).
  assert.notEqual(await run(2 ** 32 + 1), a);
  assert.equal(await run(2 ** 32 + 1), await run(2 ** 32 + 1));
  for (const seed of [0, 1, 12345, 2 ** 31, 2 ** 32 - 1]) assert.equal(seedU32(seed), seed, 'seeds below 2^32 keep their sequences');
  assert.notEqual(seedU32(2 ** 32), 0);
  assert.notEqual(seedU32(2 ** 33 + 7), seedU32(2 ** 32 + 7));
});

test('generate reuses its KV cache: a thousand samples allocate what one does (backends free nothing before destroy)', async () => {
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const backend = createReferenceBackend();
  const model = createModel(backend, c);
  setWeights(model, initialWeights(c, model.layout, createRng(1)));
  let allocated = 0;
  const alloc = backend.alloc.bind(backend), allocInt = backend.allocInt.bind(backend);
  backend.alloc = (n) => { allocated += n; return alloc(n); };
  backend.allocInt = (n) => { allocated += n; return allocInt(n); };
  const sample = async (seed: number, stopEarly = false): Promise<string> => {
    let s = '';
    for await (const t of generate({ model, tokenizer: tok }, 'abc', { maxTokens: 12, seed })) {
      s += t.text;
      if (stopEarly) break; // an abandoned loop gives its cache back too
    }
    return s;
  };
  const first = await sample(1);
  const once = allocated;
  assert.ok(once > 0);
  for (let i = 0; i < 1000; i++) await sample(i % 7, i % 3 === 0);
  assert.equal(allocated, once);
  assert.equal(await sample(1), first, 'a reused cache starts empty');
  // Two at once each get their own.
  const a = generate({ model, tokenizer: tok }, 'abc', { maxTokens: 12, seed: 1 }), b = generate({ model, tokenizer: tok }, 'abc', { maxTokens: 12, seed: 1 });
  let sa = '', sb = '';
  for (;;) {
    const [x, y] = [await a.next(), await b.next()];
    if (x.done || y.done) break;
    sa += x.value.text; sb += y.value.text;
  }
  assert.equal(sa, first);
  assert.equal(sb, first);
});

test('a prompt longer than generate\'s prompt chunk (256 tokens) goes in in pieces: greedy tokens are the full forward\'s argmax', async () => {
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 2, context: 640, qkv_bias: true });
  const backend = createReferenceBackend();
  const model = createModel(backend, c);
  const w = initialWeights(c, model.layout, createRng(3));
  for (const s of model.layout.specs) if (s.kind === 'bias') for (let i = 0; i < s.shape[0]!; i++) w[s.offset + i] = Math.sin(i);
  setWeights(model, w);
  const rng = createRng(4);
  const prompt = Array.from({ length: 600 }, () => 'abcdefgh '[rng.int(9)]).join('');
  const got: number[] = [];
  for await (const t of generate({ model, tokenizer: tok }, prompt, { maxTokens: 4, temperature: 0 })) got.push(t.id);
  const ids = Array.from(tok.encode(prompt));
  const want: number[] = [];
  for (let n = 0; n < 4; n++) {
    const logits = await computeLogits(model, ids);
    const row = logits.subarray((ids.length - 1) * c.vocab_size, ids.length * c.vocab_size);
    let best = 0;
    for (let v = 1; v < tok.vocabSize; v++) if (row[v]! > row[best]!) best = v;
    want.push(best);
    ids.push(best);
  }
  assert.deepEqual(got, want);
});

test('top-k and top-p take the most likely ids (ties: the lower id first) as a full sort would, from a large vocabulary', () => {
  const V = 5000, rng = createRng(11);
  const big = Float32Array.from({ length: V }, () => Math.round(rng.next() * 40) / 4);
  const order = new Int32Array(V), probs = new Float64Array(V), max = Math.max(...big);
  for (const opts of [{ temperature: 0.7, topK: 0, topP: 1 }, { temperature: 1, topK: 25, topP: 1 }, { temperature: 1.2, topK: 0, topP: 0.3 }, { temperature: 0.9, topK: 100, topP: 0.8 }]) {
    for (let k = 0; k < 50; k++) {
      const u = rng.next();
      // The reference: every id sorted by probability, ties by id, then the same walk.
      const p = Array.from(big, (x) => Math.exp((x - max) / opts.temperature));
      const sorted = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
      let keep = opts.topK > 0 ? opts.topK : V, total = sorted.slice(0, keep).reduce((s, i) => s + p[i], 0);
      if (opts.topP < 1) {
        let cum = 0;
        for (let i = 0; i < keep; i++) { cum += p[sorted[i]] / total; if (cum >= opts.topP) { keep = i + 1; break; } }
        total = sorted.slice(0, keep).reduce((s, i) => s + p[i], 0);
      }
      let r = u * total, want = sorted[keep - 1];
      for (let i = 0; i < keep; i++) { r -= p[sorted[i]]; if (r < 0) { want = sorted[i]; break; } }
      assert.equal(sampleToken(big, opts, u, order, probs), want, `${JSON.stringify(opts)} u ${u}`);
    }
  }
});

test('auto samples a small model on the cpu backend (batch 1 is latency-bound on a GPU) and leaves big ones and explicit choices alone', () => {
  const small = resolveConfig({ vocab_size: 65 }), big = resolveConfig({ vocab_size: 50257, d_model: 768, n_heads: 12, n_layers: 12, context: 1024 });
  assert.ok(paramLayout(small).size <= SAMPLE_ON_CPU_MAX_PARAMS && paramLayout(big).size > SAMPLE_ON_CPU_MAX_PARAMS);
  assert.equal(samplingBackendName('auto', small), cpuBackendSupported() ? 'cpu' : 'auto');
  assert.equal(samplingBackendName('auto', big), 'auto');
  assert.equal(samplingBackendName('webgpu', small), 'webgpu');
  assert.equal(samplingBackendName('reference', small), 'reference');
});

test('generate checks maxTokens and seed', async () => {
  const tok = buildCharTokenizer('ab');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 8, n_heads: 2, n_layers: 1, context: 8 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights(c, model.layout, createRng(1)));
  const drain = async (opts: object) => { for await (const _ of generate({ model, tokenizer: tok }, 'a', opts)) { /* consume */ } };
  await assert.rejects(drain({ maxTokens: -5 }), /maxTokens must be a whole number/);
  await assert.rejects(drain({ maxTokens: 2.5 }), /maxTokens must be a whole number/);
  await assert.rejects(drain({ seed: 'abc' }), /seed must be a whole number/);
});

test('scoreText scores text longer than the context in windows overlapping by half', async () => {
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights({ ...c, init: 'kaiming-normal' }, model.layout, createRng(1)));
  const text = 'abcdefgh abcdefgh hgfedcba ab'; // 29 tokens, 28 predictions
  const ids = Array.from(tok.encode(text));
  const { logprobs, loss, bitsPerByte } = await scoreText({ model, tokenizer: tok }, text);
  assert.equal(logprobs.length, ids.length - 1);
  // One byte per token here (ASCII characters), the first not scored: bits per byte = loss / ln 2.
  assert.ok(Math.abs(bitsPerByte! - loss / Math.LN2) < 1e-12, `${bitsPerByte} vs ${loss / Math.LN2}`);
  assert.ok(Math.abs(loss + logprobs.reduce((a, b) => a + b) / logprobs.length) < 1e-12);
  // log p(ids[p+1] | window) from full logits over the window that scores target p+1.
  const expected = async (start: number, p: number): Promise<number> => {
    const win = ids.slice(start, start + 8);
    const l = await computeLogits(model, win);
    const row = Array.from(l.subarray((p - start) * tok.vocabSize, (p - start + 1) * tok.vocabSize));
    const m = Math.max(...row);
    return row[ids[p + 1]] - m - Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
  };
  // Windows start at 0, 4, 8, ..., the last at 28 - 8 = 20: target p+1 is scored in the first window covering p with p >= scored.
  const starts = [0, 4, 8, 12, 16, 20];
  for (let p = 0; p < logprobs.length; p++) {
    const start = p < 8 ? 0 : starts.filter((s) => s + 4 <= p && p < s + 8).at(-1) ?? starts.filter((s) => p < s + 8).at(-1)!;
    assert.ok(Math.abs(logprobs[p] - (await expected(start, p))) < 1e-5, `target ${p + 1}`);
    if (p >= 8) assert.ok(p - start >= 4, `target ${p + 1} sees at least half a context`);
  }
});

test('a vocab_size padded past the tokenizer never samples an id the tokenizer lacks', async () => {
  const tokenizer = buildCharTokenizer('abc');
  const config = resolveConfig({ vocab_size: 64, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  const model = createModel(createReferenceBackend(), config);
  const weights = initialWeights(config, paramLayout(config), createRng(5));
  // Make the padded ids the most likely ones, as an untrained model may.
  const head = paramLayout(config).specs.find((s) => s.name === 'lm_head.weight')!;
  for (let id = tokenizer.vocabSize; id < 64; id++) weights.fill(1, head.offset + id * 16, head.offset + (id + 1) * 16);
  setWeights(model, weights);
  for (const temperature of [0, 1.5]) {
    const ids: number[] = [];
    for await (const t of generate({ model, tokenizer }, 'ab', { maxTokens: 40, temperature, seed: 2 })) ids.push(t.id);
    assert.equal(ids.length, 40);
    assert.ok(ids.every((id) => id < tokenizer.vocabSize), `ids ${ids}`);
  }
});

test('a char model never samples its <|endoftext|>, and an empty prompt starts from id 0, not from it', async () => {
  const tokenizer = makeTokenizer('char', 'abc');
  const eot = tokenizer.specialTokens!['<|endoftext|>']!;
  assert.equal(eot, 3);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  const model = createModel(createReferenceBackend(), config);
  const weights = initialWeights(config, paramLayout(config), createRng(5));
  // Make <|endoftext|> the most likely next token, as a model early in training may give it some probability.
  const head = paramLayout(config).specs.find((s) => s.name === 'lm_head.weight')!;
  weights.fill(1, head.offset + eot * 16, head.offset + (eot + 1) * 16);
  setWeights(model, weights);
  for (const temperature of [0, 1.5]) {
    const ids: number[] = [];
    let text = '';
    for await (const t of generate({ model, tokenizer }, '', { maxTokens: 40, temperature, seed: 2 })) {
      ids.push(t.id);
      text += t.text;
    }
    assert.equal(ids.length, 40);
    assert.ok(ids.every((id) => id < eot), `ids ${ids}`);
    assert.match(text, /^[abc]{40}$/);
  }
  // The first token after an empty prompt is the one after id 0 ("a"), as without <|endoftext|>.
  const first = async (prompt: string): Promise<number> => {
    for await (const t of generate({ model, tokenizer }, prompt, { maxTokens: 1, temperature: 0 })) return t.id;
    throw new Error('no token');
  };
  assert.equal(await first(''), await first('a'));
});

test('generation ends where the model samples <|endoftext|>, unless told to go on', async () => {
  const { config, weights, tokenizer, a, eot } = endOfTextModel();
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  const run = async (opts: object) => {
    const out: { id: number; text: string; endOfText?: true }[] = [];
    for await (const t of generate({ model, tokenizer }, 'p', { maxTokens: 5, temperature: 0, ...opts })) out.push(t);
    return out;
  };
  assert.deepEqual(await run({}), [{ id: a, text: 'a' }, { id: eot, text: '', endOfText: true }]);
  const onward = await run({ stopAtEndOfText: false });
  assert.deepEqual(onward.map((t) => t.id), [a, eot, eot, eot, eot]);
  assert.equal(onward.map((t) => t.text).join(''), 'a<|endoftext|><|endoftext|><|endoftext|><|endoftext|>');
  assert.ok(onward.every((t) => !t.endOfText));
});

test('an imported model whose end-of-text token is another (a chat model\'s <|im_end|>) ends there, and starts an empty prompt from its own BOS', async () => {
  const base = hfBpeFixtureTokenizer('smollm-style');
  const chat = tokenizerFromJson({ ...base.toJSON(), eos: '<|im_end|>', bos: '<|im_start|>' }, 'chat');
  assert.deepEqual(endOfTextToken(chat), ['<|im_end|>', 2]);
  assert.deepEqual(startOfTextToken(chat), ['<|im_start|>', 1]);
  assert.deepEqual([endOfTextToken(base), startOfTextToken(base)], [['<|endoftext|>', 0], ['<|endoftext|>', 0]]);
  const { config, weights, tokenizer, a, eot } = endOfTextModel(chat);
  assert.equal(eot, 2);
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  const out: { id: number; text: string; endOfText?: true }[] = [];
  for await (const t of generate({ model, tokenizer }, 'p', { maxTokens: 5, temperature: 0 })) out.push(t);
  assert.deepEqual(out, [{ id: a, text: 'a' }, { id: 2, text: '', endOfText: true }]);
  // From nothing it starts from <|im_start|>, which this model (made to) continue as it does "p".
  const embed = paramLayout(config).specs.find((sp) => sp.name === 'model.embed_tokens.weight')!.offset, C = config.d_model;
  weights[embed + 1 * C] = 0;
  weights[embed + 1 * C + 1] = 1;
  setWeights(model, weights);
  const first: number[] = [];
  for await (const t of generate({ model, tokenizer }, '', { maxTokens: 3, temperature: 0, stopAtEndOfText: false })) first.push(t.id);
  assert.deepEqual(first, [a, 2, 2]);
  assert.throws(() => tokenizerFromJson({ ...base.toJSON(), eos: '<nope>' }, 't.json'), /"eos" must be the text of one of its special tokens, got string "<nope>"/);
});

test('generate and scoreText say what is wrong with what they were given, not a TypeError from deep inside', async () => {
  const tokenizer = buildCharTokenizer('abc ');
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const weights = initialWeights(config, paramLayout(config), createRng(1));
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  const drain = async (loaded: unknown, prompt: unknown, opts: object = {}): Promise<void> => {
    for await (const _ of generate(loaded as never, prompt as never, { maxTokens: 2, ...opts })) { /* consume */ }
  };
  const refused = async (run: Promise<unknown>, re: RegExp): Promise<void> => {
    await assert.rejects(run, (e: unknown) => e instanceof MinigptError && re.test(e.message));
  };
  await refused(drain({ config, weights, tokenizer }, 'ab'), /^generate needs a loaded model, \{ model, tokenizer \} as loadModel\(dir\) gives it \(this is a checkpoint from loadCheckpoint/);
  await refused(drain({ model, tokenizer }, null), /^the prompt must be a string \(got null\)$/);
  await refused(drain({ model, tokenizer }, 42), /^the prompt must be a string \(got number\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { temperature: '0.5' }), /^temperature must be a number, 0 or more \(got "0\.5"\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { topP: '0.9' }), /^topP must be a number in \(0, 1\] \(got "0\.9"\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { topK: '40' }), /^topK must be a whole number, 0 for no limit \(got "40"\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { stop: null }), /^stop must be a string or an array of strings \(got null\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { signal: 5 }), /^signal must be an AbortSignal \(got 5\)$/);
  await refused(drain({ model, tokenizer }, 'ab', { stopAtEndOfText: 'no' }), /^stopAtEndOfText must be true or false \(got "no"\)$/);
  await refused(scoreText({ config, weights, tokenizer } as never, 'abc'), /^scoreText needs a loaded model/);
  await refused(scoreText({ model, tokenizer }, 123 as never), /^scoreText needs the text as a string \(got number\)$/);
});

test('evaluateLoss counts the bytes of the targets it scores (for bits per byte), padding windows left out', async () => {
  const { evaluateLoss } = await import('../src/train/evaluate.js');
  const { memoryTokens, evalOffsets } = await import('../src/data/batches.js');
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights(c, model.layout, createRng(2)));
  const ids = Int32Array.from({ length: 61 }, (_, i) => (i * 7) % tok.vocabSize);
  const byteLengths = Uint32Array.from({ length: tok.vocabSize }, (_, id) => id + 1);
  const T = 4, B = 3; // 15 windows of 4: a last batch of 3 is full; of 5 windows, padded
  // A target right after token 3 counts `afterStart` (as after sp-bpe's "<s>"); with startId -1, none does.
  const afterStart = byteLengths.map((n) => n + 100);
  for (const [maxWindows, startId] of [[Infinity, -1], [5, -1], [Infinity, 3], [5, 3]] as const) {
    const r = await evaluateLoss(model, memoryTokens(ids), B, T, maxWindows, { lengths: byteLengths, startId, afterStart });
    let expected = 0;
    for (const off of evalOffsets(ids.length, T, maxWindows)) for (let i = 1; i <= T; i++) expected += (ids[off + i - 1] === startId ? afterStart : byteLengths)[ids[off + i]!]!;
    assert.equal(r.bytes, expected);
    assert.equal(r.tokens, evalOffsets(ids.length, T, maxWindows).length * T);
  }
  assert.equal((await evaluateLoss(model, memoryTokens(ids), B, T)).bytes, 0, 'no byte lengths, no bytes');
});

test('stop texts end generation where the generated text reaches one: the text before it comes out, the stop text does not', async () => {
  const tok = buildCharTokenizer('abcdefgh ');
  const c = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 8 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights({ ...c, init: 'kaiming-normal' }, model.layout, createRng(1)));
  const run = async (opts: object): Promise<{ id: number; text: string; stop?: string }[]> => {
    const out: { id: number; text: string; stop?: string }[] = [];
    for await (const t of generate({ model, tokenizer: tok }, 'abc', { maxTokens: 40, seed: 5, ...opts })) out.push(t);
    return out;
  };
  const full = (await run({})).map((t) => t.text).join('');
  assert.equal(full.length, 40);
  for (const [from, length] of [[0, 1], [3, 2], [10, 3], [25, 4]]) {
    const stop = full.slice(from, from + length);
    const at = full.indexOf(stop);
    const got = await run({ stop: [stop] });
    assert.equal(got.map((t) => t.text).join(''), full.slice(0, at), `stop ${JSON.stringify(stop)}`);
    // One token per character: the token that completes the stop text is the last, marked.
    assert.equal(got.length, at + length);
    assert.equal(got.at(-1)!.stop, stop);
    assert.ok(got.slice(0, -1).every((t) => t.stop === undefined));
    // The same ids as without a stop text, up to there.
    assert.deepEqual(got.map((t) => t.id), (await run({})).slice(0, at + length).map((t) => t.id));
  }
  // Of several stop texts, the one that comes first ends it.
  const first = full.slice(20, 22), later = full.slice(30, 32);
  const both = await run({ stop: [later, first] });
  assert.equal(both.at(-1)!.stop, full.indexOf(first) <= full.indexOf(later) ? first : later);
  // A stop text that never comes: all the text comes out, what was held back by the last token.
  const never = await run({ stop: 'zz' + full.slice(-1) });
  assert.equal(never.map((t) => t.text).join(''), full);
  assert.ok(never.every((t) => t.stop === undefined));
  // Aborted while a token's text is held back (a stop text's possible start): one more token, the
  // last, brings it out; aborted with nothing held back, generation ends at once.
  for (const j of [4, 17]) {
    const stop = new AbortController();
    const got: { id: number; text: string }[] = [];
    for await (const t of generate({ model, tokenizer: tok }, 'abc', { maxTokens: 40, seed: 5, stop: full[j] + 'zz', signal: stop.signal })) {
      got.push(t);
      if (got.length === j + 1) stop.abort();
    }
    assert.equal(got.length, j + 2, `abort after token ${j}`);
    assert.equal(got.map((t) => t.text).join(''), full.slice(0, j + 2));
    const plain = new AbortController();
    let count = 0;
    for await (const _ of generate({ model, tokenizer: tok }, 'abc', { maxTokens: 40, seed: 5, signal: plain.signal })) if (++count === j + 1) plain.abort();
    assert.equal(count, j + 1);
  }
  // A stop text in the prompt does not count.
  const inPrompt = await run({ stop: 'abc' });
  assert.equal(inPrompt.map((t) => t.text).join(''), full.includes('abc') ? full.slice(0, full.indexOf('abc')) : full);
  await assert.rejects(async () => { for await (const _ of generate({ model, tokenizer: tok }, 'a', { stop: [''] })) void _; }, (e: unknown) => e instanceof MinigptError && /stop text must be a non-empty string/.test(e.message));
});

test('text held back for a stop text comes out with the <|endoftext|> that ends generation first', async () => {
  const { config, weights, tokenizer, a, eot } = endOfTextModel();
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  const out: { id: number; text: string; endOfText?: true }[] = [];
  for await (const t of generate({ model, tokenizer }, 'p', { maxTokens: 5, temperature: 0, stop: 'ab' })) out.push(t);
  assert.deepEqual(out, [{ id: a, text: '' }, { id: eot, text: 'a', endOfText: true }]);
});

test('the generated text joined is the decode of the ids, a character cut off by maxTokens included (as U+FFFD)', async () => {
  const { gpt2Tokenizer } = await import('../src/data/gpt2.js');
  const tokenizer = gpt2Tokenizer();
  const partial = tokenizer.encode('😀')[0]!; // the emoji's first bytes: never a whole character alone
  assert.ok(tokenizer.decode([partial]).includes('\uFFFD'));
  // Every position's residual is its embedding's dim 0; lm_head gives `partial` the top logit: greedy repeats it.
  const C = 16;
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: C, n_heads: 2, n_layers: 1, context: 16 });
  const layout = paramLayout(config);
  const weights = new Float32Array(layout.size);
  const at = (name: string): number => layout.specs.find((s) => s.name === name)!.offset;
  for (let id = 0; id < config.vocab_size; id++) weights[at('model.embed_tokens.weight') + id * C] = 1;
  for (const norm of ['model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight']) weights.fill(1, at(norm), at(norm) + C);
  weights[at('model.norm.weight')] = 1;
  weights[at('lm_head.weight') + partial * C] = 10;
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  for (const maxTokens of [1, 2, 3]) {
    const out: { id: number; text: string }[] = [];
    for await (const t of generate({ model, tokenizer }, 'Hi', { maxTokens, temperature: 0 })) out.push(t);
    assert.deepEqual(out.map((t) => t.id), Array(maxTokens).fill(partial));
    assert.equal(out.map((t) => t.text).join(''), tokenizer.decode(out.map((t) => t.id)), `maxTokens ${maxTokens}`);
  }
  // Aborted with a character's first bytes held back: one more token brings them out.
  const stop = new AbortController();
  const out: { id: number; text: string }[] = [];
  for await (const t of generate({ model, tokenizer }, 'Hi', { maxTokens: 10, temperature: 0, signal: stop.signal })) {
    out.push(t);
    stop.abort();
  }
  assert.equal(out.length, 2);
  assert.equal(out.map((t) => t.text).join(''), tokenizer.decode(out.map((t) => t.id)));
});

test('the streaming decoder says when a character\'s first bytes wait for the rest', async () => {
  const { gpt2Tokenizer } = await import('../src/data/gpt2.js');
  const { createStreamingDecoder } = await import('../src/data/tokenizer.js');
  const tokenizer = gpt2Tokenizer();
  const ids = Array.from(tokenizer.encode('a é 😀 字b'));
  const decoder = createStreamingDecoder(tokenizer);
  let text = '', held = 0;
  for (let i = 0; i < ids.length; i++) {
    text += decoder.push(ids[i]!);
    // Held back exactly when the ids so far decode to more than came out (an unfinished character, as U+FFFD).
    const pending = tokenizer.decode(ids.slice(0, i + 1)) !== text;
    assert.equal(decoder.pending(), pending, `after ${JSON.stringify(text)}`);
    if (pending) held++;
  }
  assert.ok(held > 0, 'the emoji spans tokens');
  assert.equal(text, 'a é 😀 字b');
  assert.equal(decoder.pending(), false);
  assert.equal(createStreamingDecoder(buildCharTokenizer('ab')).pending(), false);
});

test('allowSpecial: the prompt\'s special-token text becomes those tokens (as an empty prompt starts from <|endoftext|>), else it is text', async () => {
  const tokenizer = makeTokenizer('bpe', 'the cat sat on the mat. the dog sat on the log.', { vocabSize: 270 });
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 2, n_layers: 2, context: 16 });
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, initialWeights(config, paramLayout(config), createRng(5)));
  const loaded = { model, tokenizer };
  const ids = async (prompt: string, opts: object): Promise<number[]> => {
    const out: number[] = [];
    for await (const t of generate(loaded, prompt, { maxTokens: 8, temperature: 0, stopAtEndOfText: false, ...opts })) out.push(t.id);
    return out;
  };
  const fromNothing = await ids('', {});
  assert.deepEqual(await ids('<|endoftext|>', { allowSpecial: true }), fromNothing);
  assert.notDeepEqual(await ids('<|endoftext|>', {}), fromNothing, 'the text "<|endoftext|>" is seven ordinary tokens');
  // checkPrompt counts the prompt's tokens the same way.
  const eots = '<|endoftext|>'.repeat(17);
  assert.equal(checkPrompt(loaded, eots, 'p', true), 'the prompt has 17 tokens; the model sees only its last 16 (its context)');
  assert.match(checkPrompt(loaded, eots, 'p'), /^the prompt has \d{3} tokens/);
  await assert.rejects(async () => { for await (const _ of generate(loaded, 'x', { allowSpecial: 'yes' as never })) { /* nothing */ } }, /allowSpecial must be true or false \(got "yes"\)/);
});
