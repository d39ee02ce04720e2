/**
 * The training run behind the page (web/main.ts), with no DOM: the query string's options, the
 * state the page shows, the backend choice and the step loop. web/train-worker.ts runs it in a
 * dedicated Web Worker and posts every state change to the page: the cpu backend's calling thread
 * blocks in Atomics.wait, which a page's main thread may not, and a worker keeps the page
 * responsive on every backend. It uses the library's own pieces (the same model, backends,
 * optimizer, schedule, batch sampler and sampler as `minigpt train`, though its batches and
 * dropout masks come from seeds of its own, so a page run is not a `minigpt train` run step for
 * step); `train()` itself writes run directories and checkpoints, so this runs the step loop the
 * way src/bench.ts does.
 *
 * Backend (`auto`): webgpu when navigator.gpu gives a hardware adapter; else cpu (wasm SIMD kernels
 * on Web Workers over shared memory) when the runtime has WebAssembly SIMD, SharedArrayBuffer and
 * cross-origin isolation; else webgpu on a software adapter (SwiftShader, llvmpipe, WARP: ~30x
 * slower than the cpu backend, but faster than plain TS); else the plain-TS reference backend.
 * `?backend=cpu|webgpu|reference` forces one; `?threads=N` sets the cpu backend's threads
 * (default navigator.hardwareConcurrency).
 *
 * The query string shrinks the run, e.g. `?steps=20&batch=4&context=32&d_model=32&n_layers=1`:
 * training options `steps batch lr min_lr warmup seed sample_tokens sample_every eval_every
 * threads`, and any model config name (snake_case or the CLI's kebab-case).
 *
 * After a run (or loadCheckpointModel on a checkpoint .zip) the model stays on its backend:
 * web/train-worker.ts generates from it and builds its downloads.
 */
import {
  MinigptError, TRAIN_DEFAULTS, buildCharTokenizer, cleanText, countParams, createBackend, createBatchSampler,
  createModel, createOptimizer, createRng, backward, checkpointFromZip, forward, generate, initialWeights, learningRate, meanLoss,
  memoryTokens, optimizerStepChecked, recordedClean, resolveConfig, setWeights, splitTrainVal, tuneKernels, zeroGrads,
  type Backend, type CleanOptions, type LoadedModel, type ModelConfig, type WebGpuBackend,
} from '../src/index.js';
import { evaluateLoss } from '../src/train/evaluate.js';
import { legacyClean } from '../src/data/text.js';
import { nextTurn } from '../src/util/runtime.js';
import { seedU32 } from '../src/util/random.js';
import { activationValues } from '../src/model/model.js';
import { DIVERGED_TRIES } from '../src/train/train.js';
import { cpuBackendSupported, type CpuBackend } from '../src/backend/cpu/index.js';
import { probeGpu } from '../src/backend/webgpu/gpu.js';

export type PageBackend = 'auto' | 'webgpu' | 'cpu' | 'reference';

export interface PageOptions {
  backend: PageBackend;
  steps: number;
  batch: number;
  lr: number;
  minLr: number;
  warmup: number;
  seed: number;
  sampleTokens: number;
  /** A sample every this many steps (0: only at the end). */
  sampleEvery: number;
  /** A validation loss every this many steps (0: only at the end); by default about a tenth of the steps. */
  evalEvery: number;
  /** The cpu backend's threads, the training worker included (0: navigator.hardwareConcurrency). */
  threads: number;
  model: Partial<ModelConfig>;
}

/** What the page has done so far; mirrored on window.minigpt. */
export interface PageState {
  /** 'loaded': a checkpoint .zip was loaded instead of training. */
  state: 'loading' | 'training' | 'done' | 'stopped' | 'loaded' | 'error';
  backend: string;
  /** The WebGPU adapter (", software" after a software one), or the cpu backend's threads and SIMD build. */
  adapter: string;
  /** Why `auto` did not take the fastest kind of backend (a software WebGPU adapter, no cross-origin isolation...); else empty. */
  backendNote: string;
  config: ModelConfig | null;
  parameters: number;
  dataName: string;
  /** Characters of the text, and its tokens in the training and validation splits (0 before it is read). */
  characters: number;
  trainTokens: number;
  valTokens: number;
  /** Loss of every step, in order (a skipped step, with a non-finite loss or gradient, is NaN). */
  losses: number[];
  /** Validation loss as [step, loss]: the mean over the same EVAL_BATCHES batches of the validation split each time. */
  valLosses: [number, number][];
  /** Why there is no validation loss (the validation split is shorter than one sequence); else empty. */
  valNote: string;
  tokensPerSecond: number;
  sample: string;
  /** The file a loaded model came from ('' for a model trained here). */
  loadedFrom: string;
  /** How a loaded model's prompts are cleaned: as its run's training text was (null: the default cleaning, as for a model trained here). */
  clean: Partial<CleanOptions> | null;
  /** A model is in the worker: it can generate and be downloaded (after a run ends, or a checkpoint loads). */
  hasModel: boolean;
  /** Why a run stopped on its own before its last step (it diverged); else empty. */
  stopReason: string;
  error: string;
}

/** Validation batches per evaluation: their windows are spread evenly over the validation split and the same every time. */
export const EVAL_BATCHES = 4;

const TRAIN_KEYS: Record<string, keyof Omit<PageOptions, 'backend' | 'model'>> = {
  steps: 'steps', batch: 'batch', lr: 'lr', min_lr: 'minLr', warmup: 'warmup', seed: 'seed',
  sample_tokens: 'sampleTokens', sample_every: 'sampleEvery', eval_every: 'evalEvery', threads: 'threads',
};
const MODEL_KEYS = new Set(['vocab_size', 'd_model', 'n_heads', 'n_kv_heads', 'n_layers', 'context', 'mlp', 'intermediate_size',
  'rms_norm_eps', 'rope_theta', 'tie_embeddings', 'qkv_bias', 'dropout', 'init']);
const BACKENDS: readonly PageBackend[] = ['auto', 'webgpu', 'cpu', 'reference'];

/** Where a run's text comes from: the default corpus, text pasted into the page, or a .txt file chosen there. */
export const DATA_SOURCES: readonly string[] = ['corpus', 'text', 'file'];

/** The run the query string asks for: the CLI's defaults (TRAIN_DEFAULTS, DEFAULT_CONFIG) unless overridden. */
export function parseQuery(search: string): PageOptions {
  const o: PageOptions = {
    backend: 'auto', steps: TRAIN_DEFAULTS.steps, batch: TRAIN_DEFAULTS.batch, lr: TRAIN_DEFAULTS.lr, minLr: TRAIN_DEFAULTS.lr / 10,
    warmup: TRAIN_DEFAULTS.warmup, seed: TRAIN_DEFAULTS.seed, sampleTokens: TRAIN_DEFAULTS.sampleTokens,
    sampleEvery: TRAIN_DEFAULTS.sampleEvery, evalEvery: 0, threads: 0, model: {},
  };
  for (const [rawKey, value] of new URLSearchParams(search)) {
    const key = rawKey.replace(/-/g, '_');
    if (key === 'backend') {
      if (!BACKENDS.includes(value as PageBackend)) throw new MinigptError(`backend must be one of ${BACKENDS.join(', ')} in the page (got "${value}")`);
      o.backend = value as PageBackend;
    } else if (key in TRAIN_KEYS) {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new MinigptError(`${rawKey} must be a number (got "${value}")`);
      o[TRAIN_KEYS[key]] = n;
    } else if (MODEL_KEYS.has(key)) {
      const n = Number(value);
      (o.model as Record<string, unknown>)[key] = value === 'true' ? true : value === 'false' ? false : value.trim() !== '' && Number.isFinite(n) ? n : value;
    } else if (key === 'data') {
      // Where the run's text came from (the page's form reads it; the text itself is not in a link).
      if (!DATA_SOURCES.includes(value)) throw new MinigptError(`data must be one of ${DATA_SOURCES.join(', ')} (got "${value}")`);
    } else if (key !== 'autostart') {
      throw new MinigptError(`unknown query parameter "${rawKey}"; use ${[...Object.keys(TRAIN_KEYS), ...MODEL_KEYS, 'backend', 'data', 'autostart'].join(', ')}`);
    }
  }
  // A short run keeps the default schedule's shape: warmup is at most a tenth of the steps.
  const given = new URLSearchParams(search);
  if (!given.has('warmup')) o.warmup = Math.min(o.warmup, Math.floor(o.steps / 10));
  // As in train(): the decay ends at a tenth of the peak unless min_lr says otherwise.
  if (!given.has('min_lr') && !given.has('min-lr')) o.minLr = o.lr / 10;
  if (!given.has('eval_every') && !given.has('eval-every')) o.evalEvery = defaultEvalEvery(o.steps);
  return o;
}

/** About ten validation losses over the run, at least one step apart. */
export function defaultEvalEvery(steps: number): number {
  return Math.max(1, Math.round(steps / 10));
}

const CPU_NEEDS = 'the cpu backend needs WebAssembly SIMD, SharedArrayBuffer and a cross-origin isolated page (COOP same-origin, COEP require-corp)';

/**
 * The backend for `want`, and for `auto` why it is not the fastest kind (empty when it is):
 * webgpu on a hardware adapter; else cpu when this runtime has wasm SIMD and shared memory (a
 * cross-origin isolated page; cpuBackendSupported checks all three); else webgpu on a software
 * adapter (much slower than cpu, but it beats plain TS); else the reference backend. The adapter
 * is requested once (probeGpu caches it); createBackend('webgpu') takes its device from a fresh
 * one. Call it in a worker: the cpu backend blocks. `notIsolated`: why the page is not cross-origin
 * isolated (web/isolation.ts; '' when it is), which the note and a forced cpu backend's error name.
 */
export async function pickBackend(want: PageBackend, threads = 0, notIsolated = ''): Promise<{ backend: Backend; note: string }> {
  const cpuOptions = threads > 0 ? { threads } : {};
  const cpuNeeds = notIsolated ? `${CPU_NEEDS}, and this one is not: ${notIsolated}` : CPU_NEEDS;
  if (want === 'cpu' && notIsolated && !cpuBackendSupported()) throw new MinigptError(cpuNeeds);
  if (want !== 'auto') return { backend: await createBackend(want, want === 'cpu' ? cpuOptions : {}), note: '' };
  const gpu = await probeGpu();
  if (gpu.adapter && !gpu.software) return { backend: await createBackend('webgpu'), note: '' };
  if (cpuBackendSupported()) {
    const note = gpu.adapter
      ? `cpu, not WebGPU: the only adapter here (${gpu.reason}) is a software one, slower than cpu (Backend: webgpu in the settings forces it)`
      : '';
    return { backend: await createBackend('cpu', cpuOptions), note };
  }
  if (gpu.adapter) return { backend: await createBackend('webgpu'), note: `WebGPU on a software adapter (${gpu.reason}): ${cpuNeeds}` };
  return { backend: await createBackend('reference'), note: `plain-TS reference backend (slow): no WebGPU adapter, and ${cpuNeeds}` };
}

/** What the page shows as the backend's details. */
function backendDetails(backend: Backend): string {
  if (backend.name === 'webgpu') {
    const gpu = backend as Partial<WebGpuBackend>;
    return `${gpu.adapterInfo ?? ''}${gpu.software ? ', software' : ''}`;
  }
  if (backend.name === 'cpu') {
    const cpu = backend as CpuBackend;
    return `${cpu.threads} thread${cpu.threads === 1 ? '' : 's'}, ${cpu.variant === 'relaxed' ? 'relaxed SIMD' : 'SIMD'}`;
  }
  return '';
}

export function emptyState(dataName: string, error = ''): PageState {
  return {
    state: error ? 'error' : 'loading', backend: '', adapter: '', backendNote: '', config: null, parameters: 0, dataName,
    characters: 0, trainTokens: 0, valTokens: 0, losses: [], valLosses: [], valNote: '', tokensPerSecond: 0, sample: '',
    loadedFrom: '', clean: null, hasModel: false, stopReason: '', error,
  };
}

export interface RunHooks {
  signal?: AbortSignal;
  /** Called whenever the state changes (after each step, evaluation, sample, or on finishing). */
  onUpdate?(state: PageState): void;
  /** Why the page is not cross-origin isolated ('' or absent when it is): see pickBackend. */
  notIsolated?: string;
}

/**
 * Throws a MinigptError (one line) for options no run can take: counts that are not positive
 * whole numbers, lr 0 or less, a model config resolveConfig refuses. The text (and so the vocabulary)
 * is not known here; the run checks what depends on it.
 */
export function checkOptions(o: PageOptions): void {
  for (const [k, v] of Object.entries({ steps: o.steps, batch: o.batch })) {
    if (!Number.isInteger(v) || v <= 0) throw new MinigptError(`${k} must be a positive integer (got ${v})`);
  }
  if (!Number.isInteger(o.evalEvery) || o.evalEvery < 0) throw new MinigptError(`eval_every must be a whole number (0: only at the end; got ${o.evalEvery})`);
  if (!Number.isInteger(o.threads) || o.threads < 0) throw new MinigptError(`threads must be a whole number (0: navigator.hardwareConcurrency; got ${o.threads})`);
  if (!(o.lr > 0)) throw new MinigptError(`lr must be more than 0 (got ${o.lr})`);
  // As the CLI checks them (a finished run must not fail at its last sample on a setting it took).
  if (!(o.minLr >= 0)) throw new MinigptError(`min_lr must be 0 or more (got ${o.minLr})`);
  if (o.minLr > o.lr) throw new MinigptError(`min_lr ${o.minLr} must be at most lr (${o.lr})`);
  for (const [k, v] of Object.entries({ warmup: o.warmup, sample_every: o.sampleEvery, sample_tokens: o.sampleTokens })) {
    if (!Number.isInteger(v) || v < 0) throw new MinigptError(`${k} must be a whole number, 0 or more (got ${v})`);
  }
  if (!Number.isInteger(o.seed) || o.seed < 0) throw new MinigptError(`seed must be a whole number, 0 or more (got ${o.seed})`);
  // Its messages name the settings as the page's fields and query keys do (n_heads).
  const config = resolveConfig({ ...o.model, vocab_size: o.model.vocab_size ?? 1 });
  // A tab holds a few GiB at most (the cpu backend's wasm32 memory 4): past that a batch fails
  // inside a typed array, after the worker with the last model in it was replaced.
  const bytes = 4 * (activationValues(config, o.batch, config.context) + 4 * countParams(config));
  if (bytes > 4 * 2 ** 30) throw new MinigptError(`batch ${o.batch} of ${config.context}-token sequences needs ~${(bytes / 2 ** 30).toFixed(1)} GiB for this model, more than the 4 GiB a tab holds; use a smaller batch, context or model`);
}

/** A vocab_size the text's characters fit in (the char tokenizer: each character, then <|endoftext|>), or a one-line error. */
export function checkVocabSize(vocabSize: number | undefined, tokens: number): void {
  if (vocabSize !== undefined && vocabSize < tokens) throw new MinigptError(`vocab_size ${vocabSize} is smaller than the text's ${tokens} tokens (its ${tokens - 1} characters and <|endoftext|>); leave vocab_size empty, or make it at least ${tokens}`);
}

/** Text of `train` training tokens gives at least one training sequence of context `T` (+1 target), or a one-line error. */
export function checkTrainTokens(train: number, T: number): void {
  if (train <= T) throw new MinigptError(`the text has ${train} training tokens, fewer than one sequence of ${T + 1}; use more text or a smaller context`);
}

/** An error as the page shows it: a MinigptError's own one-line message, anything else with its name. */
export function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name === 'MinigptError' ? '' : `${e.name}: `}${e.message}` : String(e);
}

/**
 * Trains on `text` on this thread; `dataName` only labels it. Resolves with the final state
 * (errors included) and the trained model, which stays on its backend (null after an error,
 * whose backend is destroyed).
 */
export async function runTraining(o: PageOptions, text: string, dataName: string, hooks: RunHooks = {}): Promise<{ state: PageState; trained: LoadedModel | null }> {
  const s = emptyState(dataName);
  const update = (): void => hooks.onUpdate?.(s);
  let backend: Backend | null = null;
  let trained: LoadedModel | null = null;
  try {
    checkOptions(o);
    const tokenizer = buildCharTokenizer(text, { endOfText: true }); // as makeTokenizer('char'): the CLI's vocabulary
    checkVocabSize(o.model.vocab_size, tokenizer.vocabSize);
    const { train, val } = splitTrainVal(tokenizer.encode(text), 0.1);
    const config = resolveConfig({ ...o.model, vocab_size: o.model.vocab_size ?? tokenizer.vocabSize });
    const B = o.batch, T = config.context;
    s.characters = train.length + val.length; // one token per character (code point; text.length counts UTF-16 units)
    s.trainTokens = train.length;
    s.valTokens = val.length;
    checkTrainTokens(train.length, T);
    if (val.length <= T) s.valNote = `no validation loss: the validation split (the last 10% of the text) has ${val.length} tokens, fewer than one sequence of ${T + 1}`;
    s.config = config;
    s.parameters = countParams(config);
    update();

    const picked = await pickBackend(o.backend, o.threads, hooks.notIsolated);
    backend = picked.backend;
    s.backend = backend.name;
    s.backendNote = picked.note;
    s.adapter = backendDetails(backend);
    const model = createModel(backend, config);
    setWeights(model, initialWeights(config, model.layout, createRng(o.seed)));
    await tuneKernels(model, B, T);
    const opt = createOptimizer(model, { weightDecay: TRAIN_DEFAULTS.weightDecay, gradClip: TRAIN_DEFAULTS.gradClip });
    const sampler = createBatchSampler(memoryTokens(train), B, T, o.seed);
    const valStream = memoryTokens(val);
    const schedule = { lr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps: o.steps };
    const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
    /** Samples along the way end early on a stop; the last one (`final`) always runs, so a stopped run shows what it learned. */
    const sample = async (step: number, final = false): Promise<void> => {
      let out = '';
      for await (const t of generate({ model, tokenizer }, '', { maxTokens: o.sampleTokens, temperature: 0.8, seed: step, signal: final ? undefined : hooks.signal })) out += t.text;
      s.sample = out;
      update();
    };
    /** Validation loss after `step` steps, over the same EVAL_BATCHES batches every time (a forward without dropout, as train() evaluates). */
    const evaluate = async (step: number): Promise<void> => {
      if (s.valNote) return;
      const { loss } = await evaluateLoss(model, valStream, B, T, EVAL_BATCHES * B);
      s.valLosses.push([step, loss]);
      update();
    };

    s.state = 'training';
    update();
    let t0 = performance.now();
    // 'stopped' only once the run has ended: until its last validation loss and sample it is still 'training'.
    let stopped = false;
    let bad = 0;
    for (let step = 1; step <= o.steps; step++) {
      if (hooks.signal?.aborted) { stopped = true; break; }
      zeroGrads(model);
      sampler.next(ids, targets);
      const dropoutSeed = (Math.imul(seedU32(o.seed), 0x9e3779b1) + step) >>> 0;
      forward(model, ids, targets, B, T, { training: true, dropoutSeed });
      backward(model, { training: true, dropoutSeed });
      const loss = await meanLoss(model);
      // As in train(): a non-finite gradient norm skips the update instead of poisoning the weights.
      const gradNorm = await optimizerStepChecked(model, opt, learningRate(schedule, step));
      const finite = Number.isFinite(loss) && Number.isFinite(gradNorm);
      s.losses.push(finite ? loss : NaN);
      s.tokensPerSecond = (step * B * T) / ((performance.now() - t0) / 1000);
      bad = finite ? 0 : bad + 1;
      // As train() stops (the page does not retry a step: each bad step is one try).
      if (bad >= DIVERGED_TRIES) {
        // A skipped step leaves the weights as they were: the model is the last good step's.
        const good = step - bad;
        s.stopReason = `training diverged: steps ${good + 1}-${step} had a non-finite loss or gradient, so the run stopped; the model is that of step ${good}; try a lower lr (now ${o.lr})`;
        stopped = true;
        break;
      }
      update();
      // tokens/s counts training time only, not evaluations and samples.
      const t = performance.now();
      if (o.evalEvery > 0 && step % o.evalEvery === 0 && step < o.steps) await evaluate(step);
      if (o.sampleEvery > 0 && step % o.sampleEvery === 0 && step < o.steps) await sample(step);
      t0 += performance.now() - t;
      // Let this thread take messages (a stop) between steps: the cpu and reference backends compute synchronously.
      await nextTurn();
    }
    // The last validation loss and sample come after the last step taken, a stopped run's too.
    const last = s.losses.length;
    if (last > 0 && s.valLosses.at(-1)?.[0] !== last) await evaluate(last);
    await sample(last, true);
    s.state = stopped ? 'stopped' : 'done';
    s.hasModel = true;
    // The text was cleaned as the CLI cleans a file (main.ts): prompts get the same cleaning.
    trained = { model, tokenizer, clean: {} };
  } catch (e) {
    s.state = 'error';
    s.error = errorText(e);
    s.hasModel = false;
  } finally {
    if (!trained) backend?.destroy();
  }
  update();
  return { state: s, trained };
}

/**
 * Reads a checkpoint .zip (`checkpointToZip`'s, the CLI's, or a folder an OS zipped) and puts its
 * model on the page's backend: the state to show, and the model (null after an error). `fileName`
 * labels it and names it in errors; `notIsolated` as for pickBackend.
 */
/**
 * Loads a checkpoint .zip. `keptClean`: the cleaning kept with it in the browser, for a zip that
 * records none (the page's own zips carry no trainer state), so a restored model cleans prompts
 * as it did when first loaded.
 */
export async function loadCheckpointModel(bytes: Uint8Array, fileName: string, want: PageBackend, threads = 0, notIsolated = '', keptClean: Partial<CleanOptions> | null = null): Promise<{ state: PageState; loaded: LoadedModel | null }> {
  const s = emptyState(`checkpoint ${fileName}`);
  s.loadedFrom = fileName;
  let backend: Backend | null = null;
  try {
    const ckpt = await checkpointFromZip(bytes, fileName);
    s.config = ckpt.config;
    s.parameters = countParams(ckpt.config);
    const picked = await pickBackend(want, threads, notIsolated);
    backend = picked.backend;
    s.backend = backend.name;
    s.backendNote = picked.note;
    s.adapter = backendDetails(backend);
    const model = createModel(backend, ckpt.config);
    setWeights(model, ckpt.weights);
    s.state = 'loaded';
    s.hasModel = true;
    // Prompts are cleaned as the checkpoint's training text was (lowercased, say).
    // A kept cleaning reaches here only for a zip that records none, kept before the page's zips
    // carried it, so before the page-breaks step: read it as such a record is.
    const clean = recordedClean(ckpt) ?? (keptClean ? legacyClean(keptClean) as Partial<CleanOptions> : undefined);
    s.clean = clean ?? null;
    return { state: s, loaded: { model, tokenizer: ckpt.tokenizer, ...(clean ? { clean } : {}) } };
  } catch (e) {
    backend?.destroy();
    s.state = 'error';
    s.error = errorText(e);
    return { state: s, loaded: null };
  }
}
