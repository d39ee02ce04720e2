/** Every kernel's backward against central differences of its forward (reference backend, f64). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f64Backend, gradcheck, randomTensor, values } from './support/gradcheck.js';
import { createRng } from '../src/util/random.js';
import { createReferenceBackend, referenceData } from '../src/backend/reference/index.js';
import type { AttentionShape } from '../src/backend/types.js';

const rng = createRng(1234);

test('matmul: dinp and dweight match finite differences; dweight accumulates', () => {
  const be = f64Backend();
  const N = 5, C = 7, OC = 3;
  const inp = randomTensor(be, N * C, rng), weight = randomTensor(be, OC * C, rng);
  const out = be.alloc(N * OC);
  gradcheck({
    be, inputs: { inp, weight },
    forward: () => (be.matmulForward(out, inp, weight, N, C, OC), out),
    backward: (dout) => {
      const dinp = randomTensor(be, N * C, rng); // overwritten
      const dweight = be.alloc(OC * C);
      be.matmulBackward(dinp, dweight, dout, inp, weight, N, C, OC);
      const once = values(dweight);
      be.matmulBackward(null, dweight, dout, inp, weight, N, C, OC);
      values(dweight).forEach((v, i) => assert.ok(Math.abs(v - 2 * once[i]) < 1e-12, 'dweight must accumulate'));
      be.write(dweight, once);
      return { inp: dinp, weight: dweight };
    },
  });
});

test('bias: dbias matches finite differences and accumulates; the forward adds to every row', () => {
  const be = f64Backend();
  const N = 4, OC = 5;
  const base = randomTensor(be, N * OC, rng), bias = randomTensor(be, OC, rng);
  const out = be.alloc(N * OC);
  gradcheck({
    be, inputs: { bias },
    forward: () => (be.copy(out, base), be.addBiasForward(out, bias, N, OC), out),
    backward: (dout) => {
      const dbias = be.alloc(OC);
      be.addBiasBackward(dbias, dout, N, OC);
      const once = values(dbias);
      be.addBiasBackward(dbias, dout, N, OC);
      values(dbias).forEach((v, i) => assert.ok(Math.abs(v - 2 * once[i]) < 1e-12, 'dbias must accumulate'));
      be.write(dbias, once);
      return { bias: dbias };
    },
  });
  const b = values(bias), x = values(base), o = values(out);
  o.forEach((v, i) => assert.ok(Math.abs(v - (x[i] + b[i % OC])) < 1e-12, `out[${i}] is the input plus the bias`));
});

test('rmsnorm: dinp and dweight match finite differences; both accumulate', () => {
  const be = f64Backend();
  const N = 4, C = 6;
  const inp = randomTensor(be, N * C, rng), weight = randomTensor(be, C, rng, 0.3, 1);
  const out = be.alloc(N * C), rstd = be.alloc(N);
  gradcheck({
    be, inputs: { inp, weight },
    forward: () => (be.rmsnormForward(out, rstd, inp, weight, N, C, 1e-5), out),
    backward: (dout) => {
      const dinp = be.alloc(N * C), dweight = be.alloc(C);
      be.rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C);
      const once = values(dinp);
      be.rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C);
      values(dinp).forEach((v, i) => assert.ok(Math.abs(v - 2 * once[i]) < 1e-12, 'dinp must accumulate'));
      be.write(dinp, once);
      const dw = values(dweight).map((v) => v / 2);
      be.write(dweight, dw);
      return { inp: dinp, weight: dweight };
    },
  });
});

test('rmsnorm output has unit root-mean-square before the weight', () => {
  const be = f64Backend();
  const N = 3, C = 8;
  const inp = randomTensor(be, N * C, rng, 5), w = be.alloc(C), out = be.alloc(N * C), rstd = be.alloc(N);
  be.write(w, new Float64Array(C).fill(1));
  be.rmsnormForward(out, rstd, inp, w, N, C, 0);
  const o = values(out);
  for (let n = 0; n < N; n++) {
    const ms = o.subarray(n * C, n * C + C).reduce((s, v) => s + v * v, 0) / C;
    assert.ok(Math.abs(ms - 1) < 1e-12);
  }
});

function ropeTableF64(T: number, hd: number, theta: number): Float64Array {
  const t = new Float64Array(T * hd);
  for (let p = 0; p < T; p++) for (let i = 0; i < hd / 2; i++) {
    const a = p * Math.pow(theta, (-2 * i) / hd);
    t[p * hd + i] = Math.cos(a);
    t[p * hd + hd / 2 + i] = Math.sin(a);
  }
  return t;
}

test('rope: backward (inverse rotation) matches finite differences and leaves unrotated columns alone', () => {
  const be = f64Backend();
  const B = 2, T = 5, hd = 4, nHeads = 3, stride = 4 * hd; // the 4th head (like v) is not rotated
  const table = be.alloc(T * hd);
  be.write(table, ropeTableF64(T, hd, 100));
  const x = randomTensor(be, B * T * stride, rng), out = be.alloc(B * T * stride);
  gradcheck({
    be, inputs: { x },
    samples: 60,
    forward: () => (be.copy(out, x), be.rope(out, table, B, T, nHeads, hd, stride, 0, false), out),
    backward: (dout) => {
      const dx = be.alloc(dout.size);
      be.copy(dx, dout);
      be.rope(dx, table, B, T, nHeads, hd, stride, 0, true);
      return { x: dx };
    },
  });
  const xv = values(x), ov = values(out);
  for (let row = 0; row < B * T; row++) for (let i = nHeads * hd; i < stride; i++) assert.equal(ov[row * stride + i], xv[row * stride + i]);
});

test('rope: position 0 is the identity and the rotation keeps each pair\'s length', () => {
  const be = f64Backend();
  const hd = 8, T = 3;
  const table = be.alloc(T * hd);
  be.write(table, ropeTableF64(T, hd, 10000));
  const x = randomTensor(be, T * hd, rng), y = be.alloc(T * hd);
  be.copy(y, x);
  be.rope(y, table, 1, T, 1, hd, hd, 0, false);
  const xv = values(x), yv = values(y);
  for (let i = 0; i < hd; i++) assert.equal(yv[i], xv[i]);
  for (let t = 1; t < T; t++) for (let j = 0; j < hd / 2; j++) {
    const a = t * hd + j, b = a + hd / 2;
    assert.ok(Math.abs(Math.hypot(xv[a], xv[b]) - Math.hypot(yv[a], yv[b])) < 1e-12);
  }
});

for (const [H, KVH] of [[2, 2], [4, 2], [4, 1]]) {
  test(`attention (${H} heads, ${KVH} kv heads): dq, dk, dv match finite differences`, () => {
    const be = f64Backend();
    const shape: AttentionShape = { B: 2, T: 5, nHeads: H, nKvHeads: KVH, headDim: 4 };
    const stride = (H + 2 * KVH) * 4, N = shape.B * shape.T;
    const qkv = randomTensor(be, N * stride, rng), out = be.alloc(N * H * 4), lse = be.alloc(shape.B * H * shape.T);
    gradcheck({
      be, inputs: { qkv },
      samples: 80,
      forward: () => (be.attentionForward(out, lse, qkv, shape), out),
      backward: (dout) => {
        const dqkv = randomTensor(be, qkv.size, rng); // overwritten
        be.attentionBackward(dqkv, dout, qkv, out, lse, shape);
        return { qkv: dqkv };
      },
    });
  });
}

test('attention is causal: changing a later token does not change earlier outputs', () => {
  const be = f64Backend();
  const shape: AttentionShape = { B: 1, T: 6, nHeads: 2, nKvHeads: 1, headDim: 4 };
  const stride = 4 * 4;
  const qkv = randomTensor(be, 6 * stride, rng), out = be.alloc(6 * 8), lse = be.alloc(12);
  be.attentionForward(out, lse, qkv, shape);
  const before = values(out);
  referenceData(qkv).fill(3, 4 * stride, 6 * stride); // tokens 4 and 5
  be.attentionForward(out, lse, qkv, shape);
  const after = values(out);
  for (let i = 0; i < 4 * 8; i++) assert.equal(after[i], before[i]);
  assert.notEqual(after[5 * 8], before[5 * 8]);
});

test('swiglu: backward matches finite differences', () => {
  const be = f64Backend();
  const N = 3, F = 5;
  const gateUp = randomTensor(be, N * 2 * F, rng, 2), out = be.alloc(N * F);
  gradcheck({
    be, inputs: { gateUp }, samples: 30,
    forward: () => (be.swigluForward(out, gateUp, N, F), out),
    backward: (dout) => {
      const d = be.alloc(gateUp.size);
      be.swigluBackward(d, dout, gateUp, N, F);
      return { gateUp: d };
    },
  });
});

test('gelu (tanh approximation): backward matches finite differences and known values', () => {
  const be = f64Backend();
  const inp = randomTensor(be, 40, rng, 2), out = be.alloc(40);
  gradcheck({
    be, inputs: { inp }, samples: 40,
    forward: () => (be.geluForward(out, inp, 40), out),
    backward: (dout) => {
      const d = be.alloc(40);
      be.geluBackward(d, dout, inp, 40);
      return { inp: d };
    },
  });
  const x = be.alloc(3), y = be.alloc(3);
  be.write(x, [0, 1, -1]);
  be.geluForward(y, x, 3);
  // torch.nn.functional.gelu(torch.tensor([0., 1., -1.], dtype=torch.float64), approximate='tanh')
  const want = [0, 0.8411919906082768, -0.15880800939172324];
  values(y).forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-15));
});

test('cross-entropy: dlogits is gradScale x d(sum of losses), by finite differences, also in place', () => {
  const be = f64Backend();
  const N = 4, V = 7, scale = 0.25;
  const logits = randomTensor(be, N * V, rng, 3), targets = be.allocInt(N);
  be.writeInt(targets, [0, 6, 3, 3]);
  const losses = be.alloc(N), dl = be.alloc(N * V), l2 = be.alloc(N);
  be.crossEntropyBackward(l2, dl, logits, targets, N, V, scale);
  const x = referenceData(logits), g = values(dl);
  const sum = (): number => (be.crossEntropyForward(losses, logits, targets, N, V), values(losses).reduce((a, b) => a + b, 0));
  sum();
  assert.deepEqual(values(l2), values(losses));
  for (let i = 0; i < N * V; i++) {
    const o = x[i];
    x[i] = o + 1e-6; const p = sum();
    x[i] = o - 1e-6; const m = sum();
    x[i] = o;
    assert.ok(Math.abs(((p - m) / 2e-6) * scale - g[i]) < 1e-8, `dlogits[${i}]: numeric ${((p - m) / 2e-6) * scale}, analytic ${g[i]}`);
  }
  be.crossEntropyBackward(l2, logits, logits, targets, N, V, scale);
  assert.deepEqual(values(logits), g);
});

test('cross-entropy of uniform logits is log(V)', () => {
  const be = f64Backend();
  const logits = be.alloc(2 * 50), targets = be.allocInt(2), losses = be.alloc(2);
  be.writeInt(targets, [3, 49]);
  be.crossEntropyForward(losses, logits, targets, 2, 50);
  values(losses).forEach((l) => assert.ok(Math.abs(l - Math.log(50)) < 1e-12));
});

test('embedding: backward scatters and accumulates rows, matching finite differences', () => {
  const be = f64Backend();
  const V = 6, C = 3, N = 5;
  const table = randomTensor(be, V * C, rng), ids = be.allocInt(N), out = be.alloc(N * C);
  be.writeInt(ids, [1, 4, 1, 0, 5]);
  gradcheck({
    be, inputs: { table }, samples: V * C,
    forward: () => (be.embeddingForward(out, ids, table, N, C), out),
    backward: (dout) => {
      const d = be.alloc(V * C);
      be.embeddingBackward(d, dout, ids, N, C);
      return { table: d };
    },
  });
});

test('dropout: keeps about 1-p of elements scaled by 1/(1-p), deterministically, and is its own backward', () => {
  const be = f64Backend();
  const n = 20000, p = 0.3;
  const x = be.alloc(n), y = be.alloc(n), z = be.alloc(n);
  be.write(x, new Float64Array(n).fill(1));
  be.dropout(y, x, p, 42);
  be.dropout(z, x, p, 42);
  const yv = values(y);
  assert.deepEqual(yv, values(z));
  const kept = yv.filter((v) => v !== 0);
  assert.ok(Math.abs(kept.length / n - (1 - p)) < 0.015, `kept ${kept.length / n}`);
  kept.forEach((v) => assert.ok(Math.abs(v - 1 / (1 - p)) < 1e-12));
  be.dropout(z, x, p, 43);
  assert.notDeepEqual(values(z), yv);
  const inp = randomTensor(be, 50, rng), out = be.alloc(50);
  gradcheck({
    be, inputs: { inp }, samples: 50,
    forward: () => (be.dropout(out, inp, 0.5, 9), out),
    backward: (dout) => {
      const d = be.alloc(50);
      be.dropout(d, dout, 0.5, 9);
      return { inp: d };
    },
  });
});

test('sumSquares sums over several tensors', () => {
  const be = f64Backend();
  const a = be.alloc(3), b = be.alloc(2), out = be.alloc(1);
  be.write(a, [1, 2, 3]);
  be.write(b, [-4, 0.5]);
  be.sumSquares(out, [a, b]);
  assert.equal(values(out)[0], 1 + 4 + 9 + 16 + 0.25);
});

test('adamw: first step moves each weight by lr·sign(g) plus decoupled decay; clipping scales gradients', () => {
  const be = f64Backend();
  const p = be.alloc(3), g = be.alloc(3), m = be.alloc(3), v = be.alloc(3), nsq = be.alloc(1);
  be.write(p, [1, -2, 0.5]);
  be.write(g, [3, -4, 0]);
  const lr = 0.1, wd = 0.5;
  be.adamw(p, g, m, v, { lr, beta1: 0.9, beta2: 0.99, eps: 1e-12, weightDecay: wd, step: 1, gradScale: 1 });
  const got = values(p);
  const want = [1 * (1 - lr * wd) - lr, -2 * (1 - lr * wd) + lr, 0.5 * (1 - lr * wd)];
  got.forEach((x, i) => assert.ok(Math.abs(x - want[i]) < 1e-10, `p[${i}] = ${x}, want ${want[i]}`));
  // Clipping to norm 1 of a norm-5 gradient: the first moment holds (1-beta1)·g/5.
  be.zero(m); be.zero(v);
  be.sumSquares(nsq, [g]);
  be.adamw(p, g, m, v, { lr, beta1: 0.9, beta2: 0.99, eps: 1e-12, weightDecay: 0, step: 1, gradScale: 1, clip: { normSquared: nsq, maxNorm: 1 } });
  const mv = values(m);
  assert.ok(Math.abs(mv[0] - 0.1 * 3 / (5 + 1e-6)) < 1e-12);
  assert.ok(Math.abs(mv[1] - 0.1 * -4 / (5 + 1e-6)) < 1e-12);
});

test('adamw skips the update (weights and moments untouched) when the gradient norm is not finite', () => {
  for (const bad of [Infinity, NaN]) {
    const be = f64Backend();
    const p = be.alloc(2), g = be.alloc(2), m = be.alloc(2), v = be.alloc(2), nsq = be.alloc(1);
    be.write(p, [1, -2]); be.write(g, [3, -4]); be.write(m, [0.5, 0.25]); be.write(v, [1, 2]);
    be.write(nsq, [bad]);
    for (const maxNorm of [1, Infinity]) {
      be.adamw(p, g, m, v, { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, step: 2, gradScale: 1, clip: { normSquared: nsq, maxNorm } });
    }
    assert.deepEqual([...values(p), ...values(m), ...values(v)], [1, -2, 0.5, 0.25, 1, 2]);
  }
});

test('accumulateSum adds scale · sum(x) to out[0]', () => {
  const be = f64Backend();
  const x = be.alloc(3), out = be.alloc(1);
  be.write(x, [1, 2, 4]);
  be.write(out, [10]);
  be.accumulateSum(out, x, 0.5);
  assert.equal(values(out)[0], 13.5);
  be.accumulateSum(out, x, 0);
  assert.equal(values(out)[0], 13.5);
  be.write(x, [1, Infinity, 0]);
  be.accumulateSum(out, x, 0);
  assert.ok(Number.isNaN(values(out)[0]), '0 · inf poisons the sum, as optimizerStep relies on');
});

test('the f32 reference rounds every stored value to f32', () => {
  const be = createReferenceBackend();
  const t = be.alloc(1);
  be.write(t, [0.1]);
  assert.equal(referenceData(t)[0], Math.fround(0.1));
});
