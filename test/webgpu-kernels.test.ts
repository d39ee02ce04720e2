/**
 * Every kernel of the webgpu backend against the reference backend on the same small random
 * inputs: awkward sizes, N = 1, grouped-query attention, inputs that are views at odd offsets
 * (not aligned to the 256-byte storage offset alignment), outputs that start as junk (so an
 * overwrite that accumulates, or the reverse, shows) and aliased outputs.
 *
 * Skips when no WebGPU adapter can be had (on Linux, scripts/setup-webgpu.sh installs
 * SwiftShader). Shapes stay tiny: SwiftShader runs the shaders on the CPU.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReferenceBackend } from '../src/backend/reference/index.js';
import { createWebGpuBackend, type WebGpuBackend } from '../src/backend/webgpu/index.js';
import { probeGpu } from '../src/backend/webgpu/gpu.js';
import { ATT_SPLIT_TILES, attRowsBytes } from '../src/backend/webgpu/tiled.js';
import { MinigptError } from '../src/errors.js';
import { createRng } from '../src/util/random.js';
import type { AttentionShape, Tensor } from '../src/backend/types.js';
import { attentionCase, sameAsReference, type Maker } from './support/kernel-compare.js';

const TOL = 1e-5;
/** Kernels whose result goes through exp/log: WGSL allows exp 3 + 2|x| ULP and log 3 ULP (or 2^-21
 * absolute near 1), and an NVIDIA driver uses that room (2.4e-5 seen on cross-entropy, H200). */
const EXP_TOL = 1e-4;

const probe = await probeGpu();
const skip = probe.adapter ? false : `no WebGPU adapter: ${probe.reason}`;
const gpu: WebGpuBackend | null = probe.adapter ? await createWebGpuBackend() : null;
// The other kernel set than the adapter's default, so both are checked on any adapter (the tiled
// one with its blocked attention kernels).
const gpu2: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: gpu.kernels === 'tiled' ? 'simple' : 'tiled', attention: 'blocked' }) : null;
// The tiled matmul with the other tile size (128x128) and split-K forced, for the matmul tests;
// also the tiled set's row attention kernels (its default).
const gpu3: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: 'tiled', matmulTile: 128, splitK: 3, attention: 'rows' }) : null;
// The blocked attention with its first tile candidates forced (64-query forward blocks).
const gpu4: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: 'tiled', attention: 'blocked', attentionTile: 0 }) : null;
// The split row kernels (each row over 4 invocations): the default pick (16-row blocks on the small
// shapes here), and 64- and 32-row blocks forced.
const gpu5: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: 'tiled', attention: 'split' }) : null;
const gpu6: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: 'tiled', attention: 'split', attentionTile: 0 }) : null;
const gpu7: WebGpuBackend | null = gpu ? await createWebGpuBackend({ kernels: 'tiled', attention: 'split', attentionTile: 1 }) : null;
after(() => {
  gpu5?.destroy();
  gpu6?.destroy();
  gpu7?.destroy();
  gpu?.destroy();
  gpu2?.destroy();
  gpu3?.destroy();
  gpu4?.destroy();
});
const tiledSet = (): WebGpuBackend => (gpu!.kernels === 'tiled' ? gpu! : gpu2!);

/** Runs `kernel` on the reference and on the webgpu backends from the same seed; compares every output. */
const same = (what: string, kernel: (m: Maker) => Tensor[], tol = TOL, backends = [gpu!, gpu2!]): Promise<void> =>
  sameAsReference(what, kernel, tol, backends, (be) =>
    `${be.kernels} kernels, ${be.matmul} matmul, ${be.attention} attention${be === gpu3 ? ', 128 tiles, split-K' : ''}${be === gpu4 ? ', first attention tiles' : ''}${be === gpu6 || be === gpu7 ? `, split tile ${be === gpu6 ? 0 : 1}` : ''}`);

// [N, C, OC]: edges of the 64- and 128-wide tiles and of the K steps (8, 16); 1030 tokens make the
// weight gradient split over K by default (few output tiles, K >= 1024).
const MATMUL_SHAPES: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [4, 8, 8], [7, 13, 65], [37, 19, 9], [65, 70, 33], [130, 129, 67], [1030, 5, 7]];

test('webgpu matmulForward matches the reference', { skip }, async () => {
  for (const [N, C, OC] of MATMUL_SHAPES) {
    await same(`matmulForward N=${N} C=${C} OC=${OC}`, ({ be, rand }) => {
      const inp = rand(N * C), w = rand(OC * C), out = rand(N * OC); // out starts as junk: overwrite
      be.matmulForward(out, inp, w, N, C, OC);
      return [out];
    }, TOL, [gpu!, gpu2!, gpu3!]);
  }
});

test('webgpu matmulBackward matches the reference: dinp overwrites, dweight accumulates, null dinp', { skip }, async () => {
  for (const [N, C, OC] of MATMUL_SHAPES) {
    await same(`matmulBackward N=${N} C=${C} OC=${OC}`, ({ be, rand }) => {
      const inp = rand(N * C), w = rand(OC * C), dout = rand(N * OC);
      const dinp = rand(N * C), dw = rand(OC * C);
      be.matmulBackward(dinp, dw, dout, inp, w, N, C, OC);
      be.matmulBackward(null, dw, dout, inp, w, N, C, OC); // accumulates a second time
      return [dinp, dw];
    }, TOL, [gpu!, gpu2!, gpu3!]);
  }
});

test('webgpu elementwise kernels, reductions, roundHalf and the optimizer match the reference', { skip }, async () => {
  await same('zero/copy/add (aliased)', ({ be, rand }) => {
    const a = rand(37), b = rand(37), c = rand(37), z = rand(5);
    be.zero(z);
    be.copy(c, a);
    be.add(a, a, b);
    return [a, c, z];
  });
  await same('views of one buffer, written and read in one kernel', ({ be }) => {
    const all = be.alloc(200);
    be.write(all, Float32Array.from({ length: 200 }, (_, i) => Math.sin(i)));
    const a = be.view(all, 1, 50), b = be.view(all, 67, 50), out = be.view(all, 130, 50);
    be.add(out, a, b);
    return [all];
  });
  await same('sumSquares', ({ be, rand }) => {
    const out = rand(1);
    be.sumSquares(out, [rand(1), rand(1001), rand(13), rand(70000)]);
    return [out];
  });
  await same('dropout', ({ be, rand }) => {
    const x = rand(333), y = rand(333);
    be.dropout(y, x, 0.3, 42);
    be.dropout(x, x, 0.1, 7);
    return [x, y];
  });
  await same('roundHalf f16 / bf16 of random values', ({ be, rand }) => {
    const a = rand(200, 10), b = rand(200, 1e-5), e = rand(200, 100);
    be.roundHalf(a, 'f16');
    be.roundHalf(b, 'f16');
    be.roundHalf(e, 'bf16');
    return [a, b, e];
  }, 0);
  // Exact, bit for bit (signed zeros, subnormals, ties, overflow to infinity, NaN).
  const special = [0, -0, 1, -1, 65504, 65519, 65520, 1e6, -1e6, 1e-8, -3e-6, 6.1e-5, 2 ** -25, 2 ** -24, 3 * 2 ** -26, 1 + 2 ** -11,
    1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, -3.4e38, 1e-40, Infinity, -Infinity, NaN];
  for (const format of ['f16', 'bf16'] as const) {
    const ref = createReferenceBackend(), be = gpu!;
    const r = ref.alloc(special.length), g = be.alloc(special.length);
    ref.write(r, special);
    be.write(g, special);
    ref.roundHalf(r, format);
    be.roundHalf(g, format);
    const want = await ref.read(r), got = await be.read(g);
    want.forEach((w, i) => assert.ok(Object.is(w, got[i]), `roundHalf ${format} of ${special[i]}: got ${got[i]}, want ${w}`));
  }
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

test('webgpu embedding, bias, rmsnorm, swiglu, gelu and cross-entropy match the reference', { skip }, async () => {
  for (const [N, C] of [[1, 1], [5, 7], [67, 130], [3, 600]]) {
    await same(`bias N=${N} OC=${C}`, ({ be, rand }) => {
      const out = rand(N * C), bias = rand(C), dout = rand(N * C), dbias = rand(C); // out and dbias accumulate
      be.addBiasForward(out, bias, N, C);
      be.addBiasBackward(dbias, dout, N, C);
      return [out, dbias];
    });
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
      const x = rand(N * C, 3), out = rand(N * C), dout = rand(N * C), dx = rand(N * C);
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
    }, EXP_TOL);
  }
  // Ties for the maximum (all logits equal in row 0, two equal maxima in row 1): the first is the argmax.
  await same('crossEntropy with tied maxima', ({ be, rand, ints }) => {
    const N = 2, V = 300;
    const logits = rand(N * V), targets = ints(N, V), losses = rand(N), dlogits = rand(N * V);
    const rows = new Float32Array(N * V);
    rows[V + 5] = 4;
    rows[V + 280] = 4;
    be.write(logits, rows);
    be.crossEntropyForward(losses, logits, targets, N, V);
    be.crossEntropyBackward(losses, dlogits, logits, targets, N, V, 1);
    return [losses, dlogits];
  }, EXP_TOL);
});

const ATTENTION_SHAPES: AttentionShape[] = [
  { B: 1, T: 1, nHeads: 1, nKvHeads: 1, headDim: 2 },
  { B: 2, T: 7, nHeads: 3, nKvHeads: 3, headDim: 6 },
  { B: 3, T: 17, nHeads: 4, nKvHeads: 2, headDim: 16 }, // GQA
  { B: 2, T: 20, nHeads: 4, nKvHeads: 1, headDim: 10 }, // MQA
  { B: 1, T: 70, nHeads: 2, nKvHeads: 1, headDim: 8 }, // two query blocks of 64, the second partial
  { B: 1, T: 5, nHeads: 2, nKvHeads: 2, headDim: 32 },
  { B: 1, T: 33, nHeads: 2, nKvHeads: 1, headDim: 64 }, // several key tiles of 16
];

/** Attention forward then backward (out, lse, dqkv) on `backends` against the reference. */
const sameAttention = (s: AttentionShape, backends: WebGpuBackend[]): Promise<void> =>
  same(`attention ${JSON.stringify(s)}`, attentionCase(s), TOL, backends);

test('webgpu rope and attention (forward, backward, KV cache) match the reference', { skip }, async () => {
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
    await sameAttention(s, [gpu!, gpu2!]);
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

// Blocked attention (tiled.ts) at block edges: T = 130 makes partial query and key blocks of
// 32 and 64 and several blocks per row, with GQA (the dK/dV kernel sums a group's heads) and
// B*H > 1, head sizes 16, 32 and 64; the first tile candidates (64-query forward blocks; on an
// adapter with 32 KiB of workgroup memory such as SwiftShader, the head-64 ones fall back to the
// second candidates, which the default tiled backend runs); also the tiled set's row kernels.
test('webgpu blocked and row attention kernels at block edges match the reference', { skip }, async () => {
  assert.equal(tiledSet().attention, 'blocked');
  assert.equal(gpu3!.attention, 'rows');
  const shapes: [AttentionShape, WebGpuBackend[]][] = [
    [{ B: 2, T: 130, nHeads: 4, nKvHeads: 2, headDim: 16 }, [tiledSet(), gpu4!]],
    [{ B: 1, T: 65, nHeads: 3, nKvHeads: 1, headDim: 12 }, [tiledSet(), gpu4!]], // MQA, one past a block of 64
    [{ B: 2, T: 70, nHeads: 2, nKvHeads: 2, headDim: 32 }, [tiledSet(), gpu4!]],
    [{ B: 1, T: 130, nHeads: 4, nKvHeads: 1, headDim: 64 }, [tiledSet()]],
    [{ B: 1, T: 40, nHeads: 2, nKvHeads: 1, headDim: 100 }, [tiledSet()]], // head size padded to 128
    [{ B: 2, T: 20, nHeads: 4, nKvHeads: 2, headDim: 16 }, [gpu3!]],
  ];
  for (const [s, backends] of shapes) await sameAttention(s, backends);
});

// Split row kernels: S = 4 invocations per row take every 4th key (query for dK/dV) and merge in
// workgroup memory. T = 130 gives partial blocks of 16, 32 and 64 rows, T = 3 rows whose slices
// see no unmasked key, GQA/MQA sums over a group's heads, head sizes 16 (12 padded), 32, 64, 128.
test('webgpu split row attention kernels match the reference', { skip }, async () => {
  assert.equal(gpu5!.attention, 'split');
  // The adapters tested on (SwiftShader, lavapipe) have 32 KiB of workgroup memory: the split
  // kernels, not the row fallback, run at every head size below (64-row blocks fall back at 128).
  for (const hd of [16, 32, 64, 128]) assert.ok(attRowsBytes(hd, ATT_SPLIT_TILES[1]) <= 32768, `split tile 1 at head ${hd} fits 32 KiB`);
  // 64-row blocks (tile 0) fit 32 KiB only at heads 16 and 32; elsewhere it would repeat the default.
  const shapes: [AttentionShape, WebGpuBackend[]][] = [
    [{ B: 2, T: 130, nHeads: 4, nKvHeads: 2, headDim: 16 }, [gpu5!, gpu6!, gpu7!]],
    [{ B: 1, T: 65, nHeads: 3, nKvHeads: 1, headDim: 12 }, [gpu5!]],
    [{ B: 1, T: 3, nHeads: 2, nKvHeads: 2, headDim: 32 }, [gpu6!]],
    [{ B: 1, T: 130, nHeads: 2, nKvHeads: 1, headDim: 64 }, [gpu5!, gpu7!]],
    [{ B: 1, T: 40, nHeads: 2, nKvHeads: 1, headDim: 100 }, [gpu7!]],
  ];
  for (const [s, backends] of shapes) await sameAttention(s, backends);
});

// attention: 'auto' (the tiled set's default) runs the row kernels until `tune` has timed the
// rows, split and blocked kernels on a shape; then that shape runs the fastest, and still
// matches the reference.
test('webgpu auto attention: tune times rows, split and blocked per shape and keeps the fastest', { skip }, async () => {
  const be = await createWebGpuBackend({ kernels: 'tiled' });
  try {
    assert.equal(be.attention, 'auto');
    const s: AttentionShape = { B: 1, T: 70, nHeads: 2, nKvHeads: 1, headDim: 16 }, other = { ...s, T: 20 };
    assert.equal(be.attentionKernels(s), 'auto: rows');
    await be.tune({ attention: [s] });
    assert.match(be.attentionKernels(s), /^auto: (rows|split \d+x4|blocked \d+x\d+x\d+ \/ \d+x\d+x\d+, \d+x\d+x\d+)$/);
    assert.equal(be.attentionKernels(other), 'auto: rows', 'a shape not tuned keeps the row kernels');
    await sameAttention(s, [be]);
    // A shape whose scratch tensors this adapter cannot hold: tuning gives up quietly, rows stay.
    const huge: AttentionShape = { B: 1, T: 1 << 20, nHeads: 64, nKvHeads: 64, headDim: 64 };
    await be.tune({ attention: [huge] });
    assert.equal(be.attentionKernels(huge), 'auto: rows');
    assert.deepEqual([...(await be.read(be.alloc(2)))], [0, 0], 'the device is still usable');
    const rows = await createWebGpuBackend({ kernels: 'tiled', attention: 'rows' });
    await rows.tune({ attention: [s] });
    assert.equal(rows.attentionKernels(s), 'rows', 'tune leaves an explicit choice alone');
    rows.destroy();
  } finally {
    be.destroy();
  }
});

test('webgpu attention over a long KV cache (more keys than a workgroup)', { skip }, async () => {
  const s: AttentionShape = { B: 2, T: 2, nHeads: 2, nKvHeads: 1, headDim: 8 }, context = 300, pos0 = 290;
  const QKV = (s.nHeads + 2 * s.nKvHeads) * s.headDim;
  await same('kv cache of 292 positions', ({ be, rand }) => {
    const cache = rand(s.B * context * 2 * s.nKvHeads * s.headDim), out = rand(s.B * s.T * s.nHeads * s.headDim), qkv = rand(s.B * s.T * QKV);
    be.kvCacheWrite(cache, qkv, s, context, pos0);
    be.attentionCached(out, qkv, cache, s, context, pos0);
    return [out];
  });
});

test('webgpu refuses tensors of another backend', { skip }, () => {
  const be = gpu!;
  const w = be.alloc(6), out = be.alloc(4);
  assert.throws(() => be.matmulForward(out, createReferenceBackend().alloc(12), w, 2, 6, 1), TypeError);
});

// A lost device (driver reset, GPU process crash) and a destroyed one end the same way: reads and
// syncs reject with a one-line MinigptError instead of an empty DOMException.
test('webgpu read and sync after the device is gone reject with a clear error', { skip }, async () => {
  const be = await createWebGpuBackend();
  const t = be.alloc(16);
  be.write(t, new Float32Array(16).fill(1));
  assert.deepEqual([...(await be.read(t))], new Array(16).fill(1));
  be.destroy();
  await assert.rejects(be.read(t), (e: Error) => e instanceof MinigptError && /webgpu backend: this webgpu backend was destroyed/.test(e.message));
  await assert.rejects(be.sync(), (e: Error) => e instanceof MinigptError && /destroyed/.test(e.message));
});

// The scratch buffer (split-K partials) grows by replacing its storage: a kernel called before the
// growth on the same tensors gets the same result after it, through the new buffer.
test('webgpu calls made before the scratch buffer grows still work after', { skip }, async () => {
  const be = await createWebGpuBackend({ kernels: 'tiled', matmulTile: 64, splitK: 3 });
  try {
    const rng = createRng(5);
    const tensor = (size: number): Tensor => {
      const t = be.alloc(size);
      be.write(t, Float32Array.from({ length: size }, () => rng.normal()));
      return t;
    };
    const C = 64, small = { inp: tensor(8 * C), w: tensor(8 * C), out: be.alloc(64) };
    be.matmulForward(small.out, small.inp, small.w, 8, C, 8); // 3 x 64 partials: the first scratch buffer
    const before = await be.read(small.out);
    const big = be.alloc(200 * 200);
    be.matmulForward(big, tensor(200 * C), tensor(200 * C), 200, C, 200); // 3 x 40000 partials: a bigger one
    await be.read(big);
    be.zero(small.out);
    be.matmulForward(small.out, small.inp, small.w, 8, C, 8);
    assert.deepEqual(await be.read(small.out), before);
  } finally {
    be.destroy();
  }
});
