/**
 * AdamW (decoupled weight decay, as torch.optim.AdamW) over the flat parameter buffer, with
 * global-norm gradient clipping done on the device. Weight decay applies to matrices only:
 * the layout puts them in one span [0, decaySize) and the norm weights after it.
 */
import type { Backend, Tensor } from '../backend/types.js';
import type { Model } from '../model/model.js';

/** AdamW's settings (torch.optim.AdamW's betas, eps and weight_decay) and the clipping threshold. */
export interface AdamWConfig {
  /** Decay rates of the first and second moment averages. */
  beta1: number;
  beta2: number;
  /** Added to sqrt(v) in the denominator. */
  eps: number;
  /** Decoupled weight decay, applied to matrices only (not to norm weights). */
  weightDecay: number;
  /** Max global gradient norm; 0 or Infinity disables clipping. */
  gradClip: number;
}

/** The settings createOptimizer starts from: betas 0.9 and 0.95, eps 1e-8, weight decay 0.1, clipping at norm 1. */
export const DEFAULT_ADAMW: AdamWConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1.0 };

/** AdamW's state for one model: its settings, moments and step count (training checkpoints save m and v). */
export interface OptimizerState {
  config: AdamWConfig;
  /** First and second moments, laid out like the parameters. */
  m: Tensor;
  v: Tensor;
  /** Optimizer steps taken so far. */
  step: number;
  /** Device scalar: sum of squared gradients of the last step. */
  normSquared: Tensor;
  /** [params, grads, m, v] views of the decayed span (matrices) and the undecayed one (norms). */
  spans: { decay: Tensor[]; noDecay: Tensor[] | null };
}

/**
 * A fresh AdamW state for `model` (step 0), with `config` over DEFAULT_ADAMW. Allocates on the
 * model's backend the moments m and v (zero, each the size of the parameters) and a norm scalar;
 * its views tie it to this model's parameter and gradient buffers, so make one per model.
 */
export function createOptimizer(model: Model, config: Partial<AdamWConfig> = {}): OptimizerState {
  const be = model.backend;
  const { size, decaySize } = model.layout;
  const m = be.alloc(size), v = be.alloc(size);
  const span = (from: number, to: number): Tensor[] =>
    [model.params.all, model.grads.all, m, v].map((t) => be.view(t, from, to - from));
  return {
    config: { ...DEFAULT_ADAMW, ...config },
    m,
    v,
    step: 0,
    normSquared: be.alloc(1),
    spans: { decay: span(0, decaySize), noDecay: size > decaySize ? span(decaySize, size) : null },
  };
}

/**
 * One AdamW update from model.grads. `gradScale` undoes loss scaling / averages accumulated
 * micro-batches; the clipping threshold applies to the gradient after that scaling. The device
 * skips the update when the gradient norm is not finite (an overflow under loss scaling, a NaN
 * loss): weights and moments stay as they were, with no read back. Given `loss` (a device
 * scalar), a non-finite loss skips the update too. `opt.step` counts the update
 * either way; a caller that learns of the skip (from the norm) takes it back with `undoSkippedStep`.
 */
export function optimizerStep(model: Model, opt: OptimizerState, lr: number, gradScale = 1, loss?: Tensor): void {
  const be: Backend = model.backend;
  const c = opt.config;
  opt.step += 1;
  be.sumSquares(opt.normSquared, [model.grads.all]);
  // norm² + 0·loss: unchanged for a finite loss, NaN for a NaN or infinite one, so the device
  // skips a step whose loss is not finite even when its gradients are.
  if (loss) be.accumulateSum(opt.normSquared, loss, 0);
  const clip = { normSquared: opt.normSquared, maxNorm: c.gradClip > 0 && Number.isFinite(c.gradClip) ? c.gradClip : Infinity };
  const base = { lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, step: opt.step, gradScale, clip };
  const [p, g, m, v] = opt.spans.decay;
  be.adamw(p, g, m, v, { ...base, weightDecay: c.weightDecay });
  if (opt.spans.noDecay) {
    const [pn, gn, mn, vn] = opt.spans.noDecay;
    be.adamw(pn, gn, mn, vn, { ...base, weightDecay: 0 });
  }
}

/** Takes back the step count of an update the device skipped (its gradient norm was not finite). */
export function undoSkippedStep(opt: OptimizerState): void {
  opt.step -= 1;
}

/**
 * optimizerStep, then the gradient norm read back: when it is not finite the device skipped the
 * update (the weights and moments stay as they were) and the step does not count. Returns the
 * gradient norm (after gradScale).
 */
export async function optimizerStepChecked(model: Model, opt: OptimizerState, lr: number, gradScale = 1): Promise<number> {
  optimizerStep(model, opt, lr, gradScale);
  const norm = await lastGradNorm(model, opt, gradScale);
  if (!Number.isFinite(norm)) undoSkippedStep(opt);
  return norm;
}

/** The global gradient norm of the last optimizer step (after gradScale, before clipping). */
export async function lastGradNorm(model: Model, opt: OptimizerState, gradScale = 1): Promise<number> {
  const [s] = await model.backend.read(opt.normSquared);
  return Math.sqrt(s) * Math.abs(gradScale);
}
