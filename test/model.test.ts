/** The whole model: gradients by finite differences, layout, init, and no allocation per step. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createReferenceBackend, referenceData } from '../src/backend/reference/index.js';
import { resolveConfig, type ModelConfig, defaultIntermediateSize } from '../src/model/config.js';
import { activationsFor, activationValues, createModel, setWeights, forward, backward, zeroGrads, meanLoss } from '../src/model/model.js';
import { paramLayout, initialWeights } from '../src/model/params.js';
import { createOptimizer, optimizerStep } from '../src/train/optimizer.js';
import { createRng } from '../src/util/random.js';
import { MinigptError } from '../src/errors.js';
import { roundToF16, roundToBf16 } from '../src/util/half.js';

const tiny = (over: Partial<ModelConfig> = {}): ModelConfig =>
  resolveConfig({ vocab_size: 11, d_model: 8, n_heads: 2, n_layers: 2, context: 8, intermediate_size: 12, ...over });

function randomWeights(c: ModelConfig, seed: number): Float32Array {
  const layout = paramLayout(c), rng = createRng(seed);
  const w = new Float32Array(layout.size);
  for (const s of layout.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < n; i++) w[s.offset + i] = s.kind === 'norm' ? 1 + 0.2 * rng.normal() : 0.4 * rng.normal();
  }
  return w;
}

function wholeModelGradcheck(c: ModelConfig, opts: { training?: boolean; dropoutSeed?: number } = {}): void {
  const be = createReferenceBackend({ precision: 'f64' });
  const model = createModel(be, c);
  setWeights(model, randomWeights(c, 3));
  const B = 2, T = 6;
  const rng = createRng(5);
  const ids = Array.from({ length: B * T }, () => rng.int(c.vocab_size));
  const targets = Array.from({ length: B * T }, () => rng.int(c.vocab_size));
  const loss = (): number => {
    forward(model, ids, targets, B, T, opts);
    const l = referenceData(model.acts!.losses);
    let s = 0;
    for (let i = 0; i < l.length; i++) s += l[i];
    return s / l.length;
  };
  loss();
  zeroGrads(model);
  backward(model, opts);
  const grads = Float64Array.from(referenceData(model.grads.all));
  const w = referenceData(model.params.all);
  for (const s of model.layout.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    let scale = 0;
    for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(grads[s.offset + i]));
    assert.ok(scale > 1e-6, `${s.name} gets no gradient`);
    for (let k = 0; k < 6; k++) {
      const i = s.offset + rng.int(n);
      const orig = w[i];
      w[i] = orig + 1e-6; const plus = loss();
      w[i] = orig - 1e-6; const minus = loss();
      w[i] = orig;
      const numeric = (plus - minus) / 2e-6;
      const err = Math.abs(numeric - grads[i]) / scale;
      assert.ok(err < 1e-6, `${s.name}[${i - s.offset}]: analytic ${grads[i]}, numeric ${numeric}`);
    }
  }
}

test('whole model (SwiGLU, untied): every parameter gradient matches finite differences', () => wholeModelGradcheck(tiny()));
test('whole model (GELU, tied): every parameter gradient matches finite differences', () =>
  wholeModelGradcheck(tiny({ mlp: 'gelu', intermediate_size: 16, tie_embeddings: true })));
test('whole model (GQA, 4 heads over 2 kv heads): every parameter gradient matches finite differences', () =>
  wholeModelGradcheck(tiny({ d_model: 16, n_heads: 4, n_kv_heads: 2 })));
test('whole model with dropout 0.3 in training: gradients match finite differences under a fixed mask', () =>
  wholeModelGradcheck(tiny({ dropout: 0.3 }), { training: true, dropoutSeed: 77 }));

test('mixed precision with accumulation: each micro-batch gradient is rounded to half on its own and summed in FP32', async () => {
  for (const half of ['f16', 'bf16'] as const) {
    const c = tiny();
    const be = createReferenceBackend();
    const model = createModel(be, c);
    setWeights(model, randomWeights(c, 7));
    const B = 2, T = 6, rng = createRng(9);
    const batches = Array.from({ length: 3 }, () => ({
      ids: Array.from({ length: B * T }, () => rng.int(c.vocab_size)), targets: Array.from({ length: B * T }, () => rng.int(c.vocab_size)),
    }));
    const lossScale = 1024 / 3;
    const alone: Float32Array[] = [];
    for (const b of batches) {
      zeroGrads(model);
      forward(model, b.ids, b.targets, B, T, { half });
      backward(model, { half, lossScale });
      alone.push(await be.read(model.grads.all));
    }
    zeroGrads(model);
    batches.forEach((b, k) => {
      forward(model, b.ids, b.targets, B, T, { half });
      backward(model, { half, lossScale, accumulate: k > 0 });
    });
    const summed = await be.read(model.grads.all);
    for (let i = 0; i < summed.length; i++) assert.equal(summed[i], Math.fround(Math.fround(alone[0][i] + alone[1][i]) + alone[2][i]), `${half} gradient ${i}`);
    // Most FP32 sums lie off the half grid: rounding the running sum instead would change them.
    const onGrid = (half === 'f16' ? roundToF16 : roundToBf16)(summed.slice());
    const differs = summed.filter((g, i) => g !== onGrid[i]).length;
    assert.ok(differs > summed.length / 4, `only ${differs} of ${summed.length} sums lie off the ${half} grid`);
  }
});

test('activationValues counts what activationsFor allocates (the memory check before training relies on it)', () => {
  for (const over of [{}, { mlp: 'gelu' as const }, { n_kv_heads: 1 }]) {
    const c = tiny(over);
    const be = createReferenceBackend();
    const model = createModel(be, c);
    let values = 0;
    const alloc = be.alloc.bind(be), allocInt = be.allocInt.bind(be);
    be.alloc = (n) => { values += n; return alloc(n); };
    be.allocInt = (n) => { values += n; return allocInt(n); };
    activationsFor(model, 3, 7);
    assert.equal(activationValues(c, 3, 7), values, JSON.stringify(over));
    const alone = createModel(be, c);
    values = 0;
    activationsFor(alone, 3, 7, false, true);
    assert.equal(activationValues(c, 3, 7, true), values, `forward only, ${JSON.stringify(over)}`);
  }
});

test('forwardOnly: one layer\'s buffers serve every layer, logits and losses are the full forward\'s, a backward after it is refused, and training buffers serve it', async () => {
  const c = tiny({ n_layers: 3, qkv_bias: true, n_kv_heads: 1 });
  const be = createReferenceBackend();
  const ids = [1, 2, 3, 4, 5, 6], targets = [2, 3, 4, 5, 6, 7];
  const full = createModel(be, c), alone = createModel(be, c);
  setWeights(full, randomWeights(c, 4));
  setWeights(alone, randomWeights(c, 4));
  const want = await be.read(forward(full, ids, targets, 2, 3).logits);
  const a = forward(alone, ids, targets, 2, 3, { forwardOnly: true });
  assert.ok(a.forwardOnly && a.qkv[0] === a.qkv[2] && a.residual[0] === a.residual[6]);
  assert.deepEqual(await be.read(a.logits), want);
  assert.equal(await meanLoss(alone), await meanLoss(full));
  assert.throws(() => backward(alone), /backward after a forward with forwardOnly/);
  // A training forward then gets buffers of its own, and a forward alone reuses those.
  const t = forward(alone, ids, targets, 2, 3);
  assert.ok(!t.forwardOnly && t.qkv[0] !== t.qkv[2]);
  assert.equal(forward(alone, ids, targets, 2, 3, { forwardOnly: true }), t);
  zeroGrads(alone);
  backward(alone);
});

test('dropout is off outside training and changes the loss in training', async () => {
  const c = tiny({ dropout: 0.5 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, randomWeights(c, 1));
  const ids = [1, 2, 3, 4], targets = [2, 3, 4, 5];
  forward(model, ids, targets, 1, 4);
  const evalLoss = await meanLoss(model);
  forward(model, ids, targets, 1, 4);
  assert.equal(await meanLoss(model), evalLoss);
  forward(model, ids, targets, 1, 4, { training: true, dropoutSeed: 1 });
  assert.notEqual(await meanLoss(model), evalLoss);
});

test('the default config is d_model 128, 8 heads, 6 layers, context 256, SwiGLU 352 wide, RoPE theta 10000', () => {
  const c = resolveConfig({ vocab_size: 65 });
  assert.deepEqual(
    [c.d_model, c.n_heads, c.n_kv_heads, c.n_layers, c.context, c.mlp, c.intermediate_size, c.rope_theta, c.tie_embeddings, c.dropout],
    [128, 8, 8, 6, 256, 'swiglu', 352, 10000, false, 0],
  );
  assert.equal(defaultIntermediateSize(128, 'gelu'), 512);
  assert.equal(defaultIntermediateSize(384, 'swiglu'), 1024);
});

test('invalid configs are MinigptErrors naming the setting (by its config name, or as the CLI names it)', () => {
  const bad: [Partial<ModelConfig>, RegExp][] = [
    [{ n_layers: 0 }, /^n_layers must be a positive integer/],
    [{ d_model: 100, n_heads: 8 }, /^n_heads \(8\) must divide d_model \(100\)/],
    [{ n_heads: 8, n_kv_heads: 3 }, /^n_kv_heads \(3\) must divide n_heads/],
    [{ dropout: 1 }, /^dropout must be in \[0, 1\)/],
    [{ mlp: 'relu' as never }, /^mlp must be one of swiglu, gelu/],
    [{ init: 'zeros' as never }, /^init must be one of/],
  ];
  for (const [over, msg] of bad) {
    assert.throws(() => resolveConfig({ vocab_size: 10, ...over }), (e: unknown) => e instanceof MinigptError && msg.test(e.message));
  }
  const flag = (key: string): string => `--${key.replace(/_/g, '-')}`;
  assert.throws(() => resolveConfig({ vocab_size: 10, d_model: 100, n_heads: 8 }, { name: flag }), { message: '--n-heads (8) must divide --d-model (100)' });
  assert.throws(() => resolveConfig({ vocab_size: 10, mlp: 'relu' as never }, { name: flag }), { message: '--mlp must be one of swiglu, gelu (got "relu")' });
});

test('layout: Hugging Face names, matrices before norms, tied models have no lm_head', () => {
  const untied = paramLayout(tiny()), tied = paramLayout(tiny({ tie_embeddings: true }));
  const names = untied.specs.map((s) => s.name);
  assert.equal(names[0], 'model.embed_tokens.weight');
  assert.ok(names.includes('model.layers.1.self_attn.k_proj.weight'));
  assert.ok(names.includes('model.layers.0.mlp.gate_proj.weight'));
  assert.ok(names.includes('lm_head.weight'));
  assert.ok(!tied.specs.some((s) => s.name === 'lm_head.weight'));
  assert.equal(tied.lmHead, tied.embed);
  for (const s of untied.specs) assert.equal(s.kind === 'norm', s.offset >= untied.decaySize, s.name);
  assert.equal(untied.size - tied.size, 11 * 8);
});

test('init strategies: norms start at 1 and matrices have the specified standard deviation', () => {
  const c = resolveConfig({ vocab_size: 64, d_model: 64, n_heads: 4, n_layers: 4, intermediate_size: 128 });
  const std = (a: Float32Array): number => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
  const tensor = (w: Float32Array, name: string): Float32Array => {
    const s = paramLayout(c).specs.find((x) => x.name === name)!;
    return w.subarray(s.offset, s.offset + s.shape.reduce((a, b) => a * b, 1));
  };
  const cases: [ModelConfig['init'], string, number][] = [
    ['gpt2', 'model.layers.0.self_attn.q_proj.weight', 0.02],
    ['gpt2', 'model.layers.0.self_attn.o_proj.weight', 0.02 / Math.sqrt(8)],
    ['gpt2', 'model.layers.0.mlp.down_proj.weight', 0.02 / Math.sqrt(8)],
    ['xavier-normal', 'model.layers.0.mlp.up_proj.weight', Math.sqrt(2 / (64 + 128))],
    ['xavier-uniform', 'model.layers.0.mlp.up_proj.weight', Math.sqrt(6 / (64 + 128)) / Math.sqrt(3)],
    ['kaiming-normal', 'model.layers.0.mlp.down_proj.weight', Math.sqrt(2 / 128)],
  ];
  for (const [init, name, want] of cases) {
    const w = initialWeights({ ...c, init }, paramLayout(c), createRng(1));
    const got = std(tensor(w, name));
    assert.ok(Math.abs(got / want - 1) < 0.05, `${init} ${name}: std ${got}, want ${want}`);
    assert.ok(tensor(w, 'model.norm.weight').every((v) => v === 1));
  }
  const a = initialWeights(c, paramLayout(c), createRng(9)), b = initialWeights(c, paramLayout(c), createRng(9));
  assert.deepEqual(a, b);
});

test('training steps allocate nothing: heap and RSS flat between step 10 and step 200', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const c = resolveConfig({ vocab_size: 32, d_model: 32, n_heads: 4, n_layers: 2, context: 16 });
  const model = createModel(createReferenceBackend(), c);
  setWeights(model, initialWeights(c, model.layout, createRng(0)));
  const opt = createOptimizer(model);
  const rng = createRng(1);
  const B = 2, T = 16;
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  let heap10 = 0, rss10 = 0;
  for (let step = 1; step <= 200; step++) {
    for (let i = 0; i < ids.length; i++) { ids[i] = rng.int(32); targets[i] = (ids[i] + 1) % 32; }
    forward(model, ids, targets, B, T, { training: true });
    zeroGrads(model);
    backward(model, { training: true });
    optimizerStep(model, opt, 1e-3);
    await meanLoss(model);
    if (step === 10 || step === 200) {
      gc();
      const { heapUsed, rss } = process.memoryUsage();
      if (step === 10) { heap10 = heapUsed; rss10 = rss; }
      else {
        assert.ok(heapUsed - heap10 < 256 * 1024, `heap grew by ${heapUsed - heap10} bytes`);
        assert.ok(rss - rss10 < 4 * 1024 * 1024, `RSS grew by ${rss - rss10} bytes`);
      }
    }
  }
  assert.ok((await meanLoss(model)) < Math.log(32) - 1, 'the model learned the next-token rule');
});

test('KV-cached generation gives the same logits as the full forward, for prefill and token by token', async () => {
  const { createKvCache, forwardCached } = await import('../src/model/model.js');
  for (const c of [tiny({ context: 12 }), tiny({ d_model: 16, n_heads: 4, n_kv_heads: 2, mlp: 'gelu', intermediate_size: 20, context: 12 }), tiny({ n_kv_heads: 2, qkv_bias: true, context: 12 })]) {
    const be = createReferenceBackend();
    const model = createModel(be, c);
    setWeights(model, randomWeights(c, 8));
    const B = 2, T = 10, rng = createRng(2);
    const ids = Array.from({ length: B * T }, () => rng.int(c.vocab_size));
    const full = await be.read(forward(model, ids, null, B, T).logits);
    const cache = createKvCache(model, B);
    const V = c.vocab_size, prefill = 4;
    const rowsOf = (t0: number, n: number): number[] => Array.from({ length: B }, (_, b) => ids.slice(b * T + t0, b * T + t0 + n)).flat();
    const got = new Float32Array(B * T * V);
    const place = (logits: Float32Array, t0: number, n: number): void => {
      for (let b = 0; b < B; b++) got.set(logits.subarray(b * n * V, (b + 1) * n * V), (b * T + t0) * V);
    };
    place(await be.read(forwardCached(model, cache, rowsOf(0, prefill), prefill)), 0, prefill);
    for (let t = prefill; t < T; t++) place(await be.read(forwardCached(model, cache, rowsOf(t, 1), 1)), t, 1);
    let err = 0;
    for (let i = 0; i < full.length; i++) err = Math.max(err, Math.abs(full[i] - got[i]));
    assert.ok(err < 1e-5, `max difference ${err}`);
    assert.equal(cache.length, T);
  }
});

test('a KV cache with a small chunk takes a prompt in pieces: the same logits as the full forward', async () => {
  const { createKvCache, forwardCached } = await import('../src/model/model.js');
  const c = tiny({ n_kv_heads: 1, qkv_bias: true, context: 12 });
  const be = createReferenceBackend();
  const model = createModel(be, c);
  setWeights(model, randomWeights(c, 9));
  const T = 11, V = c.vocab_size, rng = createRng(5);
  const ids = Array.from({ length: T }, () => rng.int(V));
  const full = await be.read(forward(model, ids, null, 1, T).logits);
  const cache = createKvCache(model, 1, { chunk: 3 });
  assert.equal(cache.chunk, 3);
  assert.throws(() => forwardCached(model, cache, ids.slice(0, 4), 4), /4 new tokens, more than the cache's chunk of 3/);
  let err = 0;
  for (let t0 = 0; t0 < T; t0 += 3) {
    const n = Math.min(3, T - t0);
    const got = await be.read(forwardCached(model, cache, ids.slice(t0, t0 + n), n));
    for (let i = 0; i < n * V; i++) err = Math.max(err, Math.abs(got[i]! - full[t0 * V + i]!));
  }
  assert.ok(err < 1e-5, `max difference ${err}`);
  assert.equal(cache.length, T);
  assert.equal(createKvCache(model, 1, { chunk: 100 }).chunk, c.context, 'a chunk is at most the context');
});

test('rng.fillNormal draws exactly what normal() * std draws, spare value and state included', () => {
  for (const lengths of [[7], [8], [1, 4, 3], [5, 5], [0, 2, 1]]) {
    const a = createRng(11), b = createRng(11);
    for (const n of lengths) {
      const want = new Float32Array(n), got = new Float32Array(n);
      for (let i = 0; i < n; i++) want[i] = a.normal() * 0.02;
      b.fillNormal(got, 0.02);
      assert.deepEqual(got, want, `lengths ${lengths}`);
      assert.deepEqual(b.state(), a.state(), `state after lengths ${lengths}`);
    }
  }
});

test('forward, setWeights and createModel refuse wrong sizes and hand-made configs in one clear MinigptError', () => {
  const c = resolveConfig({ vocab_size: 11, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  const m = createModel(createReferenceBackend(), c);
  const ids = new Int32Array(64);
  const refused = (f: () => unknown, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof MinigptError && re.test(e.message));
  refused(() => forward(m, ids.subarray(0, 10), null, 4, 16), /^forward: 10 token ids for B×T = 4×16 = 64$/);
  refused(() => forward(m, ids, ids.subarray(0, 63), 4, 16), /^forward: 63 targets for B×T = 4×16 = 64$/);
  refused(() => forward(m, new Int32Array(4 * 32), null, 4, 32), /^sequence length 32 exceeds the model's context 16$/);
  refused(() => setWeights(m, new Float32Array(10)), /^setWeights: the model has \d+ parameters, the weights 10 values/);
  refused(() => createModel(createReferenceBackend(), { d_model: 16 } as ModelConfig), /must be a positive integer/);
});
