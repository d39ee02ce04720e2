/**
 * Every kernel of the cpu backend against the reference backend on the same random inputs:
 * awkward sizes (not multiples of 4 or 8, N = 1), shapes big enough to cross the blocking (64-row
 * blocks, 128-token chunks, 32-row dweight units, 16-query attention blocks, 512-channel chunks
 * past BIG_OC) and the thread split,
 * inputs that are views at odd offsets, and outputs that start as junk, so an overwrite that
 * accumulates (or the reverse) shows.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReferenceBackend } from '../src/backend/reference/index.js';
import { createCpuBackend, type CpuBackend } from '../src/backend/cpu/index.js';
import type { AttentionShape, Tensor } from '../src/backend/types.js';
import { createRng } from '../src/util/random.js';
import { attentionCase, maker, sameAsReference, type Maker } from './support/kernel-compare.js';

const TOL = 1e-5;

// One single-threaded plain-SIMD backend, one with 3 threads (an uneven split) and relaxed SIMD
// when the runtime has it, and one with the row-at-a-time attention fallback. The threaded ones
// run every kernel on every thread (parallelMinNs: 0; by default these small shapes would run on
// the calling thread alone), and a third threaded one keeps the default, size-based choice.
const cpus: CpuBackend[] = [
  await createCpuBackend({ threads: 1, relaxedSimd: false }),
  await createCpuBackend({ threads: 3, parallelMinNs: 0 }),
  await createCpuBackend({ threads: 2, attention: 'rows', parallelMinNs: 0 }),
  await createCpuBackend({ threads: 2 }),
];
after(() => cpus.forEach((be) => be.destroy()));

/** Runs `kernel` on the reference and on each cpu backend from the same seed; compares every output. */
const same = (what: string, kernel: (m: Maker) => Tensor[], tol = TOL): Promise<void> =>
  sameAsReference(what, kernel, tol, cpus, (be) => `${be.threads} thread(s) ${be.variant}${be.attention === 'rows' ? ' rows attention' : ''}`);

const MATMUL_SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 16, 8], [3, 5, 7], [4, 8, 8], [5, 12, 22], [7, 13, 65], [37, 19, 9], [65, 130, 70], [301, 33, 17], [530, 128, 384],
  [130, 20, 2500], // OC past BIG_OC: dinp reduces over OC in chunks
];

test('matmulForward matches the reference (awkward and blocked shapes, threads)', async () => {
  for (const [N, C, OC] of MATMUL_SHAPES) {
    await same(`matmulForward N=${N} C=${C} OC=${OC}`, ({ be, rand }) => {
      const inp = rand(N * C), w = rand(OC * C), out = rand(N * OC); // out starts as junk: overwrite
      be.matmulForward(out, inp, w, N, C, OC);
      return [out];
    });
  }
});

test('matmulBackward matches the reference: dinp overwrites, dweight accumulates, null dinp', async () => {
  for (const [N, C, OC] of MATMUL_SHAPES) {
    await same(`matmulBackward N=${N} C=${C} OC=${OC}`, ({ be, rand }) => {
      const inp = rand(N * C), w = rand(OC * C), dout = rand(N * OC);
      const dinp = rand(N * C), dw = rand(OC * C);
      be.matmulBackward(dinp, dw, dout, inp, w, N, C, OC);
      be.matmulBackward(null, dw, dout, inp, w, N, C, OC); // accumulates a second time
      return [dinp, dw];
    });
  }
});

test('elementwise kernels, reductions and the optimizer match the reference', async () => {
  await same('zero/copy/add (aliased)', ({ be, rand }) => {
    const a = rand(37), b = rand(37), c = rand(37), z = rand(5);
    be.zero(z);
    be.copy(c, a);
    be.add(a, a, b);
    return [a, c, z];
  });
  await same('sumSquares', ({ be, rand }) => {
    const out = rand(1);
    be.sumSquares(out, [rand(1), rand(1001), rand(13)]);
    return [out];
  });
  await same('dropout', ({ be, rand }) => {
    const x = rand(333), y = rand(333);
    be.dropout(y, x, 0.3, 42);
    be.dropout(x, x, 0.1, 7);
    return [x, y];
  });
  // clip: none, clipping at 0.5, the norm without clipping, and norms that skip the update
  for (const clip of [null, 0.5, Infinity, 'inf', 'nan'] as const) {
    await same(`adamw clip=${clip}`, ({ be, rand }) => {
      const p = rand(101), g = rand(101), m = rand(101, 0.1), v = rand(101, 0.1), ns = rand(1);
      be.zero(v); // v must stay non-negative
      be.sumSquares(ns, [g]);
      if (typeof clip === 'string') be.write(ns, [clip === 'inf' ? Infinity : NaN]);
      const maxNorm = typeof clip === 'number' ? clip : 1;
      be.adamw(p, g, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3, gradScale: 0.5, clip: clip === null ? undefined : { normSquared: ns, maxNorm } });
      return [p, m, v];
    });
  }
  await same('accumulateSum', ({ be, rand }) => {
    const out = rand(1);
    be.accumulateSum(out, rand(1001), 0.25);
    be.accumulateSum(out, rand(5000), -1);
    return [out];
  });
});

test('embedding, rmsnorm, swiglu, gelu and cross-entropy match the reference', async () => {
  for (const [N, C] of [[1, 1], [5, 7], [67, 130]]) {
    await same(`embedding N=${N} C=${C}`, ({ be, rand, ints }) => {
      const table = rand(11 * C), ids = ints(N, 11), out = rand(N * C), dtable = rand(11 * C), dout = rand(N * C);
      be.embeddingForward(out, ids, table, N, C);
      be.embeddingBackward(dtable, dout, ids, N, C);
      return [out, dtable];
    });
    await same(`rmsnorm N=${N} C=${C}`, ({ be, rand }) => {
      const x = rand(N * C), w = rand(C), out = rand(N * C), rstd = rand(N);
      be.rmsnormForward(out, rstd, x, w, N, C, 1e-5);
      const dout = rand(N * C), dinp = rand(N * C), dw = rand(C); // both accumulate
      be.rmsnormBackward(dinp, dw, dout, x, w, rstd, N, C);
      return [out, rstd, dinp, dw];
    });
    await same(`swiglu N=${N} F=${C}`, ({ be, rand }) => {
      const gu = rand(N * 2 * C), out = rand(N * C), dout = rand(N * C), dgu = rand(N * 2 * C);
      be.swigluForward(out, gu, N, C);
      be.swigluBackward(dgu, dout, gu, N, C);
      return [out, dgu];
    });
    await same(`gelu size=${N * C}`, ({ be, rand }) => {
      const x = rand(N * C), out = rand(N * C), dout = rand(N * C), dx = rand(N * C);
      be.geluForward(out, x, N * C);
      be.geluBackward(dx, dout, x, N * C);
      return [out, dx];
    });
    await same(`crossEntropy N=${N} V=${C + 1}`, ({ be, rand, ints }) => {
      const V = C + 1;
      const logits = rand(N * V, 3), targets = ints(N, V), losses = rand(N), losses2 = rand(N), dlogits = rand(N * V);
      be.crossEntropyForward(losses, logits, targets, N, V);
      be.crossEntropyBackward(losses2, dlogits, logits, targets, N, V, 0.25);
      be.crossEntropyBackward(losses2, logits, logits, targets, N, V, 0.25); // dlogits aliases logits
      return [losses, losses2, dlogits, logits];
    });
  }
});

const ATTENTION_SHAPES: AttentionShape[] = [
  { B: 1, T: 1, nHeads: 1, nKvHeads: 1, headDim: 2 },
  { B: 2, T: 7, nHeads: 3, nKvHeads: 3, headDim: 6 },
  { B: 3, T: 33, nHeads: 4, nKvHeads: 2, headDim: 16 }, // GQA
  { B: 2, T: 20, nHeads: 4, nKvHeads: 1, headDim: 10 }, // MQA
  { B: 2, T: 70, nHeads: 2, nKvHeads: 2, headDim: 32 },
  { B: 1, T: 97, nHeads: 2, nKvHeads: 1, headDim: 12 }, // several query blocks, a ragged last one
  { B: 2, T: 50, nHeads: 4, nKvHeads: 2, headDim: 20 }, // a full and a partial 8-column panel of the head, several blocks
];

test('rope and attention (forward, backward, KV cache) match the reference', async () => {
  for (const s of ATTENTION_SHAPES) {
    const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = s;
    const QKV = (H + 2 * KVH) * hd, context = T + 3;
    await same(`rope ${JSON.stringify(s)}`, ({ be, rand }) => {
      const x = rand(B * T * QKV), table = rand(context * hd);
      be.rope(x, table, B, T, H + KVH, hd, QKV, 2, false);
      const y = rand(B * T * QKV);
      be.rope(y, table, B, T, H + KVH, hd, QKV, 0, true);
      return [x, y];
    });
    await same(`attention ${JSON.stringify(s)}`, attentionCase(s));
    await same(`kv cache ${JSON.stringify(s)}`, ({ be, rand }) => {
      const cache = rand(B * context * 2 * KVH * hd), out = rand(B * T * H * hd);
      const first = rand(B * 2 * QKV), rest = rand(B * T * QKV);
      const s2 = { ...s, T: 2 };
      be.kvCacheWrite(cache, first, s2, context, 0);
      be.kvCacheWrite(cache, rest, s, context, 2);
      be.attentionCached(out, rest, cache, s, context, 2);
      return [cache, out];
    });
  }
});

test('results are bit-repeatable for a given thread count (dynamic scheduling included)', async () => {
  const be = cpus[1];
  const run = async (): Promise<Float32Array[]> => {
    const { rand, ints } = maker(be, createRng(11));
    const s: AttentionShape = { B: 2, T: 45, nHeads: 4, nKvHeads: 2, headDim: 16 };
    const N = s.B * s.T, QKV = (s.nHeads + 2 * s.nKvHeads) * s.headDim, HD = s.nHeads * s.headDim;
    const qkv = rand(N * QKV), att = rand(N * HD), lse = rand(s.B * s.nHeads * s.T), datt = rand(N * HD), dqkv = rand(N * QKV);
    be.attentionForward(att, lse, qkv, s);
    be.attentionBackward(dqkv, datt, qkv, att, lse, s);
    const w = rand(2500 * 24), logits = rand(N * 2500), dinp = rand(N * 24), dw = rand(2500 * 24), losses = rand(N);
    be.matmulForward(logits, rand(N * 24), w, N, 24, 2500);
    be.crossEntropyBackward(losses, logits, logits, ints(N, 2500), N, 2500, 0.5);
    be.matmulBackward(dinp, dw, logits, rand(N * 24), w, N, 24, 2500);
    return Promise.all([att, lse, dqkv, logits, dinp, dw, losses].map((t) => be.read(t)));
  };
  const a = await run(), b = await run();
  a.forEach((x, i) => assert.deepEqual(x, b[i], `output ${i} differs between two identical runs`));
});

test('wasm kernels refuse tensors of another backend and tensors too small for the shape', () => {
  const be = cpus[0];
  const other = cpus[1];
  const a = be.alloc(12), w = be.alloc(6), out = be.alloc(4);
  assert.throws(() => be.matmulForward(out, other.alloc(12), w, 2, 6, 1), TypeError);
  assert.throws(() => be.matmulForward(out, createReferenceBackend().alloc(12), w, 2, 6, 1), TypeError);
  assert.throws(() => be.matmulForward(out, a, w, 2, 6, 3), RangeError);
  // the gather kernels check token ids against the table (wasm would read any memory)
  const ids = be.allocInt(2);
  be.writeInt(ids, [0, 3]);
  assert.throws(() => be.embeddingForward(be.alloc(4), ids, be.alloc(6), 2, 2), RangeError);
  assert.throws(() => be.embeddingForward(be.alloc(4), ids, other.alloc(8), 2, 2), TypeError);
  const cache = be.alloc(2 * 4 * 2), qkv = be.alloc(3 * 2);
  assert.throws(() => be.kvCacheWrite(cache, qkv, { B: 1, T: 1, nHeads: 1, nKvHeads: 1, headDim: 2 }, 4, 4), RangeError);
});

test('roundHalf (f16 and bf16) is bit-exact with the reference on edge values and every exponent', async () => {
  const bits = new Uint32Array(4099);
  const special = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x7fa5a5a5, 0x00000001, 0x807fffff,
    0x33000000, 0x33000001, 0x32ffffff, 0x38800000, 0x387fffff, 0x387fe000, 0x387ff000, 0x477fe000, 0x477ff000, 0x477fefff,
    0x477fffff, 0x7f7fffff, 0x7f7f8000, 0x7f7f7fff, 0x3f801000, 0x3f803000, 0x3f808000, 0x3f818000, 0x3f800fff];
  special.forEach((b, i) => { bits[i] = b; });
  const rng = createRng(11);
  // Random sign, every exponent, random mantissa; some mantissas with the rounding bits at a tie.
  for (let i = special.length; i < bits.length; i++) {
    const m = rng.int(1 << 23);
    const tie = i % 3 === 0 ? (m & ~0x1fff) | 0x1000 : i % 3 === 1 ? (m & ~0xffff) | 0x8000 : m;
    bits[i] = ((rng.int(2) << 31) | (rng.int(256) << 23) | tie) >>> 0;
  }
  const ref = createReferenceBackend();
  for (const format of ['f16', 'bf16'] as const) {
    const r = ref.alloc(bits.length);
    ref.write(r, new Float32Array(bits.buffer));
    ref.roundHalf(r, format);
    const want = new Uint32Array((await ref.read(r)).buffer);
    for (const be of cpus) {
      const t = be.view(be.alloc(bits.length + 1), 1, bits.length);
      be.write(t, new Float32Array(bits.buffer));
      be.roundHalf(t, format);
      const got = new Uint32Array((await be.read(t)).buffer);
      for (let i = 0; i < bits.length; i++) {
        if (got[i] !== want[i]) assert.fail(`${format} threads=${be.threads}: input 0x${bits[i]!.toString(16)} gave 0x${got[i]!.toString(16)}, reference 0x${want[i]!.toString(16)}`);
      }
    }
  }
});

test('a new allocation is all zeros after kernels ran on the memory before it (no fill: the bump allocator never hands memory out twice)', async () => {
  // These backends' memories have run every test above: matmuls with packed panels in scratch,
  // attention, the optimizer. What they hand out now must still be zero, whatever its size.
  for (const be of cpus) {
    for (const size of [1, 1000, 300_000]) {
      const t = be.alloc(size), n = be.allocInt(size);
      assert.ok((t as unknown as { data: Float32Array }).data.every((v) => v === 0), `${be.threads} thread(s): alloc(${size})`);
      assert.ok((n as unknown as { data: Int32Array }).data.every((v) => v === 0), `${be.threads} thread(s): allocInt(${size})`);
      be.write(t, new Float32Array(size).fill(7));
    }
  }
});

test('more threads than a few per core is a clear error before any worker starts', async () => {
  const { availableParallelism } = await import('node:os');
  const cores = availableParallelism();
  await assert.rejects(createCpuBackend({ threads: 1000 + 4 * cores }), (e: unknown) => e instanceof Error && e.name === 'MinigptError'
    && new RegExp(`^threads ${1000 + 4 * cores} is more than this machine can use: it has \\d+ hardware threads; give at most \\d+ \\(the default is \\d+\\)$`).test(e.message));
});
