/**
 * f16 storage on the webgpu backend (adapters with `shader-f16`): a store into an f16 tensor
 * rounds exactly as the reference's roundHalf('f16') (nearest even, subnormals, overflow to ±inf,
 * NaN kept), and every kernel given f16 tensors (all of them, or every other one beside f32 ones)
 * computes what the reference computes in f32 from the same f16 values, up to the rounding of
 * what it stores.
 *
 * Needs an adapter with shader-f16: SwiftShader has none; Mesa 25's lavapipe has it (on Debian 12,
 * scripts/setup-webgpu.sh installs it from bookworm-backports), and this file picks it when
 * VK_ICD_FILENAMES is unset. Skips with the reason otherwise.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createReferenceBackend } from '../src/backend/reference/index.js';
import { createWebGpuBackend, type WebGpuBackend } from '../src/backend/webgpu/index.js';
import { probeGpu } from '../src/backend/webgpu/gpu.js';
import type { AttentionShape, Backend, Tensor } from '../src/backend/types.js';
import { createRng, type Rng } from '../src/util/random.js';
import { roundToF16 } from '../src/util/half.js';
import { relativeError } from './support/parity.js';
import { resolveConfig } from '../src/model/config.js';
import { createModel, setWeights, forward, backward, zeroGrads, meanLoss, type Model } from '../src/model/model.js';
import { initialWeights } from '../src/model/params.js';
import { createOptimizer, optimizerStep, lastGradNorm } from '../src/train/optimizer.js';

const LAVAPIPE = '/usr/share/vulkan/icd.d/lvp_icd.json';
if (process.platform === 'linux' && !process.env.VK_ICD_FILENAMES && !process.env.VK_ADD_DRIVER_FILES && existsSync(LAVAPIPE)) {
  process.env.VK_ICD_FILENAMES = LAVAPIPE;
}
const probe = await probeGpu();
const simple: WebGpuBackend | null = probe.adapter ? await createWebGpuBackend({ kernels: 'simple' }) : null;
const skip = !simple ? `no WebGPU adapter: ${probe.reason}`
  : !simple.halfStorage ? `the adapter (${simple.adapterInfo}) has no shader-f16 (Mesa 25's lavapipe has: scripts/setup-webgpu.sh)` : false;
const tiled: WebGpuBackend | null = skip ? null : await createWebGpuBackend({ kernels: 'tiled', attention: 'blocked' });
const rows: WebGpuBackend | null = skip ? null : await createWebGpuBackend({ kernels: 'tiled', attention: 'rows', matmulTile: 128, splitK: 2 });
after(() => [simple, tiled, rows].forEach((be) => be?.destroy()));

/** f32 -> f16 -> f32 as the reference rounds. */
const toHalf = (xs: number[]): Float32Array => roundToF16(Float32Array.from(xs));

test('webgpu f16 storage: writes, kernel stores and reads round as roundHalf does, at any offset', { skip }, async () => {
  const rng = createRng(3);
  const special = [
    0, -0, 1, -1, 0.1, 1 / 3, -2 / 3, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049, 2051, 65504, 65519.99, 65520, -65520, 1e6, -1e30,
    Infinity, -Infinity, NaN, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26, 3 * 2 ** -25, 6.1e-5, -6.0e-5, 1e-9,
    ...Array.from({ length: 200 }, () => rng.normal() * 2 ** rng.int(40) * 2 ** -20),
  ];
  const want = toHalf(special);
  for (const be of [simple!, tiled!]) {
    // An odd element offset: the f16 view starts mid-word.
    const t = be.view(be.allocHalf(special.length + 3), 3, special.length);
    be.write(t, special);
    const got = await be.read(t);
    want.forEach((w, i) => assert.ok(Object.is(w, got[i]), `write then read of ${special[i]}: got ${got[i]}, want ${w}`));
    // A kernel's store (dropout with p = 0: times 1) rounds the same way.
    const src = be.alloc(special.length), out = be.allocHalf(special.length);
    be.write(src, special);
    be.dropout(out, src, 0, 1);
    const stored = await be.read(out);
    want.forEach((w, i) => assert.ok(Object.is(w, stored[i]), `kernel store of ${special[i]}: got ${stored[i]}, want ${w}`));
  }
});

interface Maker {
  be: Backend;
  rand(size: number, std?: number): Tensor;
  ints(size: number, below: number): ReturnType<Backend['allocInt']>;
}

/**
 * Random inputs already rounded to f16, as views at offset 3; on the GPU the tensors for which
 * `half` says so are f16 (all, or every other one, so kernels see f16 and f32 bindings together).
 */
function maker(be: Backend, rng: Rng, half: ((k: number) => boolean) | null): Maker {
  let k = 0;
  return {
    be,
    rand(size, std = 1) {
      const useHalf = half?.(k++) ?? false;
      const base = useHalf ? (be as WebGpuBackend).allocHalf(size + 5) : be.alloc(size + 5);
      const t = be.view(base, 3, size);
      be.write(t, toHalf(Array.from({ length: size }, () => std * rng.normal())));
      return t;
    },
    ints(size, below) {
      const t = be.allocInt(size);
      be.writeInt(t, Int32Array.from({ length: size }, () => rng.int(below)));
      return t;
    },
  };
}

/** The reference in f32 against each GPU backend with f16 tensors (all, then alternating), within `tol`. */
async function same(what: string, kernel: (m: Maker) => Tensor[], tol: number, backends = [simple!, tiled!, rows!]): Promise<void> {
  const ref = createReferenceBackend();
  const want = await Promise.all(kernel(maker(ref, createRng(7), null)).map((t) => ref.read(t)));
  for (const be of backends) {
    // Each layout compiles its own shaders, slowly on lavapipe: the mixed one on the simple set only.
    const layouts = [['all f16', () => true], ['f16 and f32', (k: number) => k % 2 === 0]] as const;
    for (const [layout, half] of be === simple ? layouts : layouts.slice(0, 1)) {
      const got = await Promise.all(kernel(maker(be, createRng(7), half)).map((t) => be.read(t)));
      got.forEach((g, i) => {
        const err = relativeError(g, want[i]);
        assert.ok(err <= tol, `${what} (${be.kernels} kernels, ${be.attention} attention, ${layout}), output ${i}: relative error ${err.toExponential(2)} > ${tol}`);
      });
    }
  }
}

// One rounding of each stored output is 2^-11 relative (4.9e-4); a kernel whose output feeds its
// own later reads (accumulations, two passes) stores more than once.
const TOL = 2e-3;

test('webgpu kernels on f16 tensors: matmuls, norms, activations, cross-entropy, embedding', { skip }, async () => {
  for (const [N, C, OC] of [[3, 5, 7], [65, 70, 33]] as const) {
    await same(`matmul N=${N} C=${C} OC=${OC}`, ({ be, rand }) => {
      const inp = rand(N * C), w = rand(OC * C), out = rand(N * OC), dout = rand(N * OC), dinp = rand(N * C), dw = rand(OC * C);
      be.matmulForward(out, inp, w, N, C, OC);
      be.matmulBackward(dinp, dw, dout, inp, w, N, C, OC);
      return [out, dinp, dw];
    }, TOL);
  }
  const N = 9, C = 24;
  await same('rmsnorm', ({ be, rand }) => {
    const x = rand(N * C), w = rand(C), out = rand(N * C), rstd = rand(N), dout = rand(N * C), dinp = rand(N * C), dw = rand(C);
    be.rmsnormForward(out, rstd, x, w, N, C, 1e-5);
    be.rmsnormBackward(dinp, dw, dout, x, w, rstd, N, C);
    return [out, rstd, dinp, dw];
  }, 4e-3);
  await same('swiglu, gelu, add, dropout', ({ be, rand }) => {
    const gu = rand(N * 2 * C), out = rand(N * C), dout = rand(N * C), dgu = rand(N * 2 * C);
    be.swigluForward(out, gu, N, C);
    be.swigluBackward(dgu, dout, gu, N, C);
    const g = rand(N * C), dg = rand(N * C), sum = rand(N * C), drop = rand(N * C);
    be.geluForward(g, out, N * C);
    be.geluBackward(dg, dout, out, N * C);
    be.add(sum, g, dg);
    be.dropout(drop, sum, 0.25, 9);
    return [out, dgu, g, dg, sum, drop];
  }, TOL);
  await same('crossEntropy', ({ be, rand, ints }) => {
    const V = 41;
    const logits = rand(N * V, 3), targets = ints(N, V), losses = rand(N), dlogits = rand(N * V);
    be.crossEntropyBackward(losses, dlogits, logits, targets, N, V, 0.5);
    return [losses, dlogits];
  }, 4e-3);
  await same('embedding', ({ be, rand, ints }) => {
    const V = 11, ids = ints(N, V), table = rand(V * C), out = rand(N * C), dtable = rand(V * C), dout = rand(N * C);
    be.embeddingForward(out, ids, table, N, C);
    be.embeddingBackward(dtable, dout, ids, N, C);
    return [out, dtable];
  }, TOL);
});

test('webgpu attention on f16 tensors: rope, simple, rows and blocked kernels, KV cache', { skip }, async () => {
  const shapes: AttentionShape[] = [
    { B: 2, T: 7, nHeads: 3, nKvHeads: 3, headDim: 6 },
    { B: 1, T: 33, nHeads: 4, nKvHeads: 2, headDim: 16 },
  ];
  for (const s of shapes) {
    const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = s;
    const QKV = (H + 2 * KVH) * hd, context = T + 3;
    await same(`attention ${JSON.stringify(s)}`, ({ be, rand }) => {
      const qkv = rand(B * T * QKV), table = rand(context * hd, 0.5);
      be.rope(qkv, table, B, T, H + KVH, hd, QKV, 0, false);
      const out = rand(B * T * H * hd), lse = rand(B * H * T);
      be.attentionForward(out, lse, qkv, s);
      const dout = rand(B * T * H * hd), dqkv = rand(B * T * QKV);
      be.attentionBackward(dqkv, dout, qkv, out, lse, s);
      const cache = rand(B * context * 2 * KVH * hd), cached = rand(B * T * H * hd);
      be.kvCacheWrite(cache, qkv, s, context, 0);
      be.attentionCached(cached, qkv, cache, s, context, 0);
      return [qkv, out, lse, dqkv, cached];
    }, 5e-3);
  }
});

test('fp16 mixed precision with f16 activations trains as the reference emulates it', { skip }, async (t) => {
  const config = resolveConfig({ vocab_size: 23, d_model: 16, n_heads: 2, n_kv_heads: 1, n_layers: 2, context: 16, dropout: 0.1 });
  const B = 2, T = 12, scale = 1024;
  const rng = createRng(5);
  const batches = Array.from({ length: 4 }, () => Array.from({ length: 2 }, () => Int32Array.from({ length: B * T }, () => rng.int(config.vocab_size))));
  const run = async (be: Backend): Promise<{ model: Model; losses: number[]; norms: number[] }> => {
    const model = createModel(be, config);
    setWeights(model, initialWeights(config, model.layout, createRng(1)));
    const opt = createOptimizer(model);
    const losses: number[] = [], norms: number[] = [];
    for (const [step, [ids, targets]] of batches.entries()) {
      zeroGrads(model);
      forward(model, ids, targets, B, T, { training: true, dropoutSeed: step, half: 'f16' });
      backward(model, { training: true, dropoutSeed: step, half: 'f16', lossScale: scale });
      losses.push(await meanLoss(model));
      optimizerStep(model, opt, 1e-2, 1 / scale);
      norms.push(await lastGradNorm(model, opt, 1 / scale));
    }
    return { model, losses, norms };
  };
  const want = await run(createReferenceBackend());
  const got = await run(simple!);
  // Every activation and activation gradient that fp16 rounds is f16 storage on the GPU.
  assert.equal(got.model.acts!.halfStored.size, 8 * config.n_layers + 9);
  assert.equal(want.model.acts!.halfStored.size, 0);
  assert.equal(got.model.halfParamsStored, true, 'the f16 weight copy is f16 storage');
  // The same values up to where rounding happens (a store rounds before a kernel's second pass
  // reads it, where the emulation rounds after): 1.2e-5 / 2.5e-5 apart on lavapipe.
  const rel = (x: number[], y: number[]): string => Math.max(...x.map((v, i) => Math.abs(v - y[i]) / Math.abs(y[i]))).toExponential(1);
  t.diagnostic(`largest relative difference: loss ${rel(got.losses, want.losses)}, gradient norm ${rel(got.norms, want.norms)}`);
  for (let i = 0; i < batches.length; i++) {
    assert.ok(Math.abs(got.losses[i] - want.losses[i]) <= 2e-4 * want.losses[i], `step ${i}: loss ${got.losses[i]} vs ${want.losses[i]}`);
    assert.ok(Math.abs(got.norms[i] - want.norms[i]) <= 2e-3 * want.norms[i], `step ${i}: grad norm ${got.norms[i]} vs ${want.norms[i]}`);
  }
});
