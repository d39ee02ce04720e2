/**
 * Training and sampling throughput on fixed configs, measured the same way for every backend
 * (and mirrored by bench/torch_train.py for PyTorch, so the two compare as a ratio).
 */
import type { Backend } from './backend/types.js';
import { createBackend, type BackendName } from './backend/index.js';
import { MinigptError } from './errors.js';
import { resolveConfig, type ModelConfig, headDim } from './model/config.js';
import { createModel, setWeights, forward, backward, zeroGrads, meanLoss, createKvCache, forwardCached, tuneKernels, attentionShape } from './model/model.js';
import type { WebGpuBackend } from './backend/webgpu/index.js';
import { initialWeights, paramLayout } from './model/params.js';
import { createOptimizer, optimizerStep } from './train/optimizer.js';
import { createRng } from './util/random.js';
import { eventLoopTurns } from './util/runtime.js';

export interface BenchConfig {
  name: string;
  model: Partial<ModelConfig> & { vocab_size: number };
  batch: number;
}

/** The configs of BENCHMARKS.md; bench/torch_train.py defines the same. */
export const BENCH_CONFIGS: Record<string, BenchConfig> = {
  seed: { name: 'seed', model: { vocab_size: 65, d_model: 128, n_heads: 8, n_layers: 6, context: 256 }, batch: 16 },
  'nanogpt-cpu': { name: 'nanogpt-cpu', model: { vocab_size: 65, d_model: 128, n_heads: 4, n_layers: 4, context: 64 }, batch: 12 },
  medium: { name: 'medium', model: { vocab_size: 65, d_model: 384, n_heads: 6, n_layers: 6, context: 256 }, batch: 8 },
  bpe: { name: 'bpe', model: { vocab_size: 50257, d_model: 128, n_heads: 8, n_layers: 6, context: 256 }, batch: 8 },
  'gpt2-small': { name: 'gpt2-small', model: { vocab_size: 50257, d_model: 768, n_heads: 12, n_layers: 12, context: 1024 }, batch: 4 },
};

export interface BenchResult {
  config: string;
  backend: string;
  /** What the backend runs on: the GPU adapter for webgpu (empty when the backend does not say). */
  device: string;
  parameters: number;
  tokensPerStep: number;
  steps: number;
  msPerStep: number;
  tokensPerSecond: number;
  /** Model FLOPs (nanoGPT's 6N + 12·L·C·T per token) per second. */
  gflops: number;
  peakRssMb: number;
  sampleTokensPerSecond: number;
  amp: string;
  /** fp16 ran on f16 storage (a backend with halfStorage), not emulated in f32. */
  f16Storage: boolean;
  syncEvery: number;
  /** The webgpu backend's attention kernels for this config, in words (`auto: split 32x4`, `rows`, ...); empty on other backends. */
  attention: string;
}

/** Training FLOPs per token: 6 per matmul weight (forward + two backward), plus attention. */
export function flopsPerToken(c: ModelConfig): number {
  const matmulParams = paramLayout(c).specs
    .filter((s) => s.kind === 'matrix' && s.name !== 'model.embed_tokens.weight')
    .reduce((n, s) => n + s.shape[0] * s.shape[1], 0) + (c.tie_embeddings ? c.vocab_size * c.d_model : 0);
  return 6 * matmulParams + 12 * c.n_layers * c.n_heads * headDim(c) * c.context;
}

export interface BenchOptions {
  config: string;
  backend?: BackendName | Backend;
  threads?: number;
  /** Timed steps after the warm-up ones. */
  steps?: number;
  warmup?: number;
  sampleTokens?: number;
  amp?: 'off' | 'fp16' | 'bf16';
  /** Read the loss back every this many steps (default 1, as a training loop that prints every loss). */
  syncEvery?: number;
  /** webgpu only: the attention kernels to measure (default: the backend's, auto). */
  attention?: 'auto' | 'rows' | 'split' | 'blocked';
  /** Called as the measurement goes: which part (`done` of `total`), for a progress bar. */
  onProgress?: (part: 'tuning kernels' | 'warm-up steps' | 'timed steps' | 'sampled tokens', done: number, total: number) => void;
}

const SAMPLE_ROUNDS = 5;

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const bc = BENCH_CONFIGS[o.config];
  if (!bc) throw new MinigptError(`unknown bench config "${o.config}"; choose one of ${Object.keys(BENCH_CONFIGS).join(', ')}`);
  const c = resolveConfig(bc.model);
  const backend = typeof o.backend === 'object' ? o.backend : await createBackend(o.backend ?? 'auto', { threads: o.threads, webgpu: o.attention ? { kernels: 'tiled', attention: o.attention } : undefined });
  const attention = backend.name === 'webgpu' ? ((backend as { attention?: string }).attention ?? '') : '';
  if (o.attention && attention !== o.attention) {
    if (typeof o.backend !== 'object') backend.destroy();
    throw new MinigptError(`--attention ${o.attention} measures the webgpu backend's attention kernels, not the ${backend.name} backend's`);
  }
  const model = createModel(backend, c);
  setWeights(model, initialWeights(c, model.layout, createRng(0)));
  const opt = createOptimizer(model);
  const B = bc.batch, T = c.context;
  const progress = o.onProgress ?? (() => {});
  progress('tuning kernels', 0, 1);
  await tuneKernels(model, B, T);
  const kernels = backend.name === 'webgpu' ? (backend as WebGpuBackend).attentionKernels(attentionShape(c, B, T)) : '';
  const rng = createRng(1);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  const half = o.amp === 'fp16' ? 'f16' : o.amp === 'bf16' ? 'bf16' : undefined;
  const syncEvery = Math.max(1, o.syncEvery ?? 1);
  // Every 25 ms the event loop turns once (microseconds): Ctrl-C reaches the CLI's handler, which
  // the cpu backend's synchronous steps and settled reads would hold off until the end.
  const turn = eventLoopTurns();
  const step = async (n: number): Promise<void> => {
    await turn();
    for (let i = 0; i < ids.length; i++) { ids[i] = rng.int(c.vocab_size); targets[i] = rng.int(c.vocab_size); }
    forward(model, ids, targets, B, T, { training: true, half });
    zeroGrads(model);
    backward(model, { training: true, half });
    optimizerStep(model, opt, 1e-4);
    if ((n + 1) % syncEvery === 0) await meanLoss(model);
  };
  const warmup = o.warmup ?? 2;
  for (let i = 0; i < warmup; i++) {
    progress('warm-up steps', i, warmup);
    await step(i);
  }
  await backend.sync();
  const steps = o.steps ?? 10;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    progress('timed steps', i, steps); // microseconds: a check and, on a terminal, one line
    await step(i);
  }
  await backend.sync();
  const seconds = (performance.now() - t0) / 1000;

  // Sampling: one sequence, a 16-token prompt, then one token at a time through the KV cache,
  // reading each token's logits; the median of SAMPLE_ROUNDS rounds (bench/torch_train.py does the same).
  const sampleTokens = Math.min(o.sampleTokens ?? 128, c.context - 16);
  const sampleRates: number[] = [];
  const cache = createKvCache(model, 1);
  for (let round = 0; round < SAMPLE_ROUNDS; round++) {
    cache.length = 0; // each round starts a new sequence in the same buffers
    await backend.read(forwardCached(model, cache, Array.from({ length: 16 }, (_, i) => i % c.vocab_size), 16));
    const s0 = performance.now();
    for (let i = 0; i < sampleTokens; i++) {
      if (i % 16 === 0) progress('sampled tokens', round * sampleTokens + i, SAMPLE_ROUNDS * sampleTokens);
      await turn();
      await backend.read(forwardCached(model, cache, [i % c.vocab_size], 1));
    }
    sampleRates.push(sampleTokens / ((performance.now() - s0) / 1000));
  }
  sampleRates.sort((x, y) => x - y);

  const tokensPerSecond = (steps * B * T) / seconds;
  const device = (backend as { adapterInfo?: string }).adapterInfo ?? '';
  if (typeof o.backend !== 'object') backend.destroy();
  return {
    config: bc.name, backend: backend.name, device, parameters: paramLayout(c).size, tokensPerStep: B * T, steps,
    msPerStep: (seconds * 1000) / steps, tokensPerSecond, gflops: (tokensPerSecond * flopsPerToken(c)) / 1e9,
    peakRssMb: process.resourceUsage().maxRSS / 1024, sampleTokensPerSecond: sampleRates[SAMPLE_ROUNDS >> 1], amp: o.amp ?? 'off',
    syncEvery, attention: kernels, f16Storage: o.amp === 'fp16' && model.acts !== null && model.acts.halfStored.size > 0,
  };
}
