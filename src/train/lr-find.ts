/**
 * The learning-rate range test (Smith 2015; fast.ai's lr_find): train a fresh copy of the
 * model while the learning rate grows exponentially from `startLr` to `endLr`, track an
 * exponentially smoothed loss, stop once it diverges, and suggest the rate where the smoothed
 * loss falls fastest. Nothing is saved: no checkpoint is touched.
 */
import type { Backend } from '../backend/types.js';
import { createBackend, type BackendName } from '../backend/index.js';
import { checkBatchFits } from './train.js';
import { eventLoopTurns } from '../util/runtime.js';
import { check, checkOptionNames, checkWhole, shownValue } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { createModel, setWeights, forward, backward, zeroGrads, meanLoss, tuneKernels } from '../model/model.js';
import { initialWeights } from '../model/params.js';
import { createOptimizer, optimizerStepChecked } from './optimizer.js';
import { createBatchSampler, type TokenStream } from '../data/batches.js';
import { createRng, hash32, seedU32 } from '../util/random.js';

/** Settings of the learning-rate range test; each optional one names its default. */
export interface LrFindOptions {
  /** The model to train; each sequence is config.context tokens. */
  config: ModelConfig;
  /** Training tokens (loadTrainingData's `train`). */
  train: TokenStream;
  /** Start from these weights (e.g. a checkpoint's) instead of a fresh init. */
  weights?: Float32Array;
  /** Sequences per step; default 16. */
  batch?: number;
  /** Learning rate of the first step; default 1e-6. */
  startLr?: number;
  /** Learning rate of the last step; default 1. */
  endLr?: number;
  /** Steps of the sweep, at least 10; default 100. */
  steps?: number;
  /**
   * Stop when the smoothed loss exceeds this multiple of the best one; default 4. The sweep also
   * stops when the smoothed loss climbs back past where it started after falling at least 10%
   * below it (a loss that settles near ln(vocabulary) never reaches 4x a low best).
   */
  divergeFactor?: number;
  /** Weight of the past in the loss's moving average; default 0.9. */
  smoothing?: number;
  /** AdamW weight decay; default 0.1. */
  weightDecay?: number;
  /** Max global gradient norm; default 1. */
  gradClip?: number;
  /** Seeds the initial weights and the batches; default 1337. */
  seed?: number;
  /** A backend name (default 'auto'), or a backend to use as is (it is not destroyed afterwards). */
  backend?: BackendName | Backend;
  /** Threads for the cpu backend. */
  threads?: number;
  /** Aborting stops the sweep after the current step, keeping the curve so far. */
  signal?: AbortSignal;
  /** Called after each step with its point, its number (from 1) and the planned steps. */
  onStep?(point: LrPoint, step: number, steps: number): void;
}

/** One step of the sweep. */
export interface LrPoint {
  lr: number;
  /** This step's mean training loss. */
  loss: number;
  /** The bias-corrected exponential moving average of the loss up to this step. */
  smoothed: number;
}

/** What the sweep found. Rates are learning rates, as passed to the optimizer. */
export interface LrFindResult {
  /** One point per completed step. */
  curve: LrPoint[];
  /** Steepest descent of the smoothed loss against log(lr). */
  suggestion: number;
  /** The lr with the lowest smoothed loss (a rate well below it is the usual safe pick). */
  minimum: number;
  /** True when it stopped before `steps`: the loss diverged or was not finite, or `signal` aborted. */
  stoppedEarly: boolean;
}

/**
 * Runs the range test (see the file comment) on a fresh model, or on `o.weights`, and returns the
 * curve with a suggested and a minimum-loss rate. Async: it trains, reading the loss back each step.
 * Throws a MinigptError for bad sweep settings, or when the curve has under 3 points (instant divergence).
 */
export async function findLearningRate(o: LrFindOptions): Promise<LrFindResult> {
  checkOptionNames(o, Object.keys(LR_FIND_OPTION_NAMES), 'findLearningRate');
  const steps = o.steps ?? 100, startLr = o.startLr ?? 1e-6, endLr = o.endLr ?? 1;
  check(typeof startLr === 'number' && typeof endLr === 'number' && startLr > 0 && endLr > startLr && Number.isFinite(endLr), () => `the sweep needs 0 < start lr < end lr (got ${shownValue(startLr)} .. ${shownValue(endLr)})`);
  check(Number.isInteger(steps) && steps >= 10, () => `the sweep needs at least 10 steps (got ${shownValue(steps)})`);
  checkWhole(o.batch, 'batch', 1);
  checkWhole(o.threads, 'threads', 1);
  checkWhole(o.seed, 'seed', 0);
  checkBatchFits(o.config, o.batch ?? 16, o.config.context, true, false);
  const backend = typeof o.backend === 'object' ? o.backend : await createBackend(o.backend ?? 'auto', { threads: o.threads });
  try {
    return await sweep(o, backend, steps, startLr, endLr);
  } finally {
    if (typeof o.backend !== 'object') backend.destroy();
  }
}

/** Every option findLearningRate takes (the Record type keeps it complete). */
const LR_FIND_OPTION_NAMES: Record<keyof LrFindOptions, true> = {
  config: true, train: true, weights: true, batch: true, startLr: true, endLr: true, steps: true, divergeFactor: true, smoothing: true,
  weightDecay: true, gradClip: true, seed: true, backend: true, threads: true, signal: true, onStep: true,
};

async function sweep(o: LrFindOptions, backend: Backend, steps: number, startLr: number, endLr: number): Promise<LrFindResult> {
  const model = createModel(backend, o.config);
  setWeights(model, o.weights ?? initialWeights(o.config, model.layout, createRng(o.seed ?? 1337)));
  const opt = createOptimizer(model, { weightDecay: o.weightDecay ?? 0.1, gradClip: o.gradClip ?? 1 });
  const B = o.batch ?? 16, T = o.config.context;
  await tuneKernels(model, B, T);
  const sampler = createBatchSampler(o.train, B, T, o.seed ?? 1337);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  const beta = o.smoothing ?? 0.9, factor = o.divergeFactor ?? 4;
  const curve: LrPoint[] = [];
  let avg = 0, best = Infinity, stoppedEarly = false, aborted = false;
  const turn = eventLoopTurns(); // an abort from a timer, and the page, get their turn between steps
  for (let i = 0; i < steps; i++) {
    await turn();
    if (o.signal?.aborted) { stoppedEarly = aborted = true; break; }
    const lr = startLr * Math.pow(endLr / startLr, i / (steps - 1));
    sampler.next(ids, targets);
    // A fresh dropout mask each step, as training draws one (seed 0 would drop the same units throughout).
    const dropoutSeed = hash32((seedU32(o.seed ?? 1337) + Math.imul(i, 0x9e3779b1)) >>> 0);
    forward(model, ids, targets, B, T, { training: true, dropoutSeed });
    zeroGrads(model);
    backward(model, { training: true, dropoutSeed });
    const loss = await meanLoss(model);
    if (!Number.isFinite(loss)) { stoppedEarly = true; break; }
    await optimizerStepChecked(model, opt, lr);
    avg = beta * avg + (1 - beta) * loss;
    const smoothed = avg / (1 - Math.pow(beta, i + 1));
    const point = { lr, loss, smoothed };
    curve.push(point);
    o.onStep?.(point, i + 1, steps);
    best = Math.min(best, smoothed);
    const start = curve[0].smoothed;
    if (i > 5 && (smoothed > factor * best || (best < 0.9 * start && smoothed > start))) { stoppedEarly = true; break; }
  }
  check(curve.length >= 3, () => aborted ? `the sweep was stopped after ${curve.length} step${curve.length === 1 ? '' : 's'}, before the 3 a suggestion needs`
    : 'the loss diverged at once; the sweep found no usable learning rate (try a lower start)');
  // Slope of the smoothed loss against log lr, by central differences over a few points.
  const k = Math.max(1, Math.floor(curve.length / 20));
  let steepest = 0, suggestion = curve[0].lr;
  for (let i = k; i < curve.length - k; i++) {
    const slope = (curve[i + k].smoothed - curve[i - k].smoothed) / Math.log(curve[i + k].lr / curve[i - k].lr);
    if (slope < steepest) { steepest = slope; suggestion = curve[i].lr; }
  }
  const minimum = curve.reduce((a, b) => (b.smoothed < a.smoothed ? b : a)).lr;
  return { curve, suggestion, minimum, stoppedEarly };
}
