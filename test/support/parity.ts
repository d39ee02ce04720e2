/**
 * PyTorch parity, reusable by every backend: loads the fixtures written by
 * scripts/make-fixtures.py (float64 PyTorch) and checks logits, loss, every parameter gradient,
 * the gradient norm and the weights after one clipped AdamW step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { decodeSafetensors, type NamedTensor } from '../../src/io/safetensors.js';
import { resolveConfig, type ModelConfig } from '../../src/model/config.js';
import { createModel, setWeights, forward, backward, zeroGrads, meanLoss } from '../../src/model/model.js';
import { createOptimizer, optimizerStep, lastGradNorm } from '../../src/train/optimizer.js';
import type { Backend } from '../../src/backend/types.js';

// Compiled to dist/test/support; the fixtures stay in the source tree.
export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures');

export interface Fixture {
  name: string;
  config: ModelConfig;
  B: number;
  T: number;
  hyper: { lr: number; beta1: number; beta2: number; eps: number; weight_decay: number; max_norm: number };
  tensors: Map<string, NamedTensor>;
}

export function loadFixtures(): Fixture[] {
  return readdirSync(FIXTURE_DIR)
    .filter((f) => f.startsWith('model-') && f.endsWith('.safetensors'))
    .sort()
    .map((f) => {
      const { tensors, metadata } = decodeSafetensors(readFileSync(join(FIXTURE_DIR, f)), f);
      const m = JSON.parse(metadata.config);
      const config = resolveConfig({
        vocab_size: m.vocab_size, d_model: m.d_model, n_heads: m.n_heads, n_kv_heads: m.n_kv_heads,
        n_layers: m.n_layers, context: m.context, mlp: m.mlp, intermediate_size: m.intermediate_size,
        rms_norm_eps: m.rms_norm_eps, rope_theta: m.rope_theta, tie_embeddings: m.tie_embeddings, qkv_bias: m.qkv_bias ?? false,
      });
      return { name: f.replace('.safetensors', ''), config, B: m.batch, T: m.seq, hyper: m, tensors };
    });
}

export function fixtureTensor(fx: Fixture, name: string): Float32Array {
  const t = fx.tensors.get(name);
  if (!t) throw new Error(`${fx.name}: no tensor ${name}`);
  return Float32Array.from(t.data);
}

/** Max |a - b| over max |b|: a relative error that is not blown up by entries near zero. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

function assertClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void {
  const err = relativeError(got, want);
  assert.ok(err <= tol, `${what}: relative error ${err.toExponential(2)} > ${tol}`);
}

/** Registers one test per fixture for `backendName`. The factory may be async. */
export function paritySuite(backendName: string, makeBackend: () => Backend | Promise<Backend>, tol: number): void {
  for (const fx of loadFixtures()) {
    test(`${backendName} matches PyTorch on ${fx.name}: logits, loss, gradients, AdamW step (within ${tol})`, async () => {
      const be = await makeBackend();
      const model = createModel(be, fx.config);
      const weights = new Float32Array(model.layout.size);
      for (const s of model.layout.specs) weights.set(fixtureTensor(fx, `weights.${s.name}`), s.offset);
      setWeights(model, weights);

      const ids = fx.tensors.get('input_ids')!.data, targets = fx.tensors.get('targets')!.data;
      const acts = forward(model, ids, targets, fx.B, fx.T);
      assertClose('logits', await be.read(acts.logits), fixtureTensor(fx, 'logits'), tol);
      assertClose('loss', [await meanLoss(model)], fixtureTensor(fx, 'loss'), tol);

      zeroGrads(model);
      backward(model);
      const grads = await be.read(model.grads.all);
      for (const s of model.layout.specs) {
        const n = s.shape.reduce((a, b) => a * b, 1);
        assertClose(`grad of ${s.name}`, grads.subarray(s.offset, s.offset + n), fixtureTensor(fx, `grads.${s.name}`), tol);
      }

      const h = fx.hyper;
      const opt = createOptimizer(model, { beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weight_decay, gradClip: h.max_norm });
      optimizerStep(model, opt, h.lr);
      assertClose('grad norm', [await lastGradNorm(model, opt)], fixtureTensor(fx, 'grad_norm'), tol);
      const updated = await be.read(model.params.all);
      for (const s of model.layout.specs) {
        const n = s.shape.reduce((a, b) => a * b, 1);
        assertClose(`updated ${s.name}`, updated.subarray(s.offset, s.offset + n), fixtureTensor(fx, `updated.${s.name}`), tol);
      }
      be.destroy();
    });
  }
}
