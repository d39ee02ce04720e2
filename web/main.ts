/**
 * The browser page: trains the default model in the tab with the library's own pieces (the same
 * model, backends, optimizer, schedule, batch sampler and sampler as `minigpt train`), showing
 * the loss per step, tokens/s and a generated sample. `train()` itself writes run directories and
 * checkpoints, so the page runs the step loop the way src/bench.ts does.
 *
 * Backend: webgpu when navigator.gpu gives an adapter (a software one included), else the
 * reference backend (the cpu backend needs Node's worker_threads). `?backend=reference` forces it.
 *
 * The query string shrinks the run, e.g. `?steps=20&batch=4&context=32&d_model=32&n_layers=1`:
 * training options `steps batch lr min_lr warmup seed sample_tokens sample_every`, and any model
 * config name (snake_case or the CLI's kebab-case). State is mirrored on `window.minigpt` for tests.
 */
import {
  MinigptError, TRAIN_DEFAULTS, buildCharTokenizer, cleanText, countParams, createBackend, createBatchSampler,
  createModel, createOptimizer, createRng, backward, forward, generate, initialWeights, learningRate, meanLoss, memoryTokens,
  optimizerStepChecked, renderLossPlot, resolveConfig, setWeights, splitTrainVal, webgpuAvailable, zeroGrads,
  type Backend, type ModelConfig, type WebGpuBackend,
} from '../src/index.js';
import { DEFAULT_CORPUS_NAME } from '../src/data/corpus.js';

export type PageBackend = 'auto' | 'webgpu' | 'reference';

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
  model: Partial<ModelConfig>;
}

/** What the page has done so far; mirrored on window.minigpt. */
export interface PageState {
  state: 'loading' | 'training' | 'done' | 'stopped' | 'error';
  backend: string;
  adapter: string;
  config: ModelConfig | null;
  parameters: number;
  dataName: string;
  /** Loss of every step, in order (a skipped step, with a non-finite loss or gradient, is NaN). */
  losses: number[];
  tokensPerSecond: number;
  sample: string;
  error: string;
}

const TRAIN_KEYS: Record<string, keyof Omit<PageOptions, 'backend' | 'model'>> = {
  steps: 'steps', batch: 'batch', lr: 'lr', min_lr: 'minLr', warmup: 'warmup', seed: 'seed',
  sample_tokens: 'sampleTokens', sample_every: 'sampleEvery',
};
const MODEL_KEYS = new Set(['vocab_size', 'd_model', 'n_heads', 'n_kv_heads', 'n_layers', 'context', 'mlp', 'intermediate_size',
  'rms_norm_eps', 'rope_theta', 'tie_embeddings', 'dropout', 'init']);
const BACKENDS: readonly PageBackend[] = ['auto', 'webgpu', 'reference'];

/** The run the query string asks for: the CLI's defaults (TRAIN_DEFAULTS, DEFAULT_CONFIG) unless overridden. */
export function parseQuery(search: string): PageOptions {
  const o: PageOptions = {
    backend: 'auto', steps: TRAIN_DEFAULTS.steps, batch: TRAIN_DEFAULTS.batch, lr: TRAIN_DEFAULTS.lr, minLr: TRAIN_DEFAULTS.minLr,
    warmup: TRAIN_DEFAULTS.warmup, seed: TRAIN_DEFAULTS.seed, sampleTokens: TRAIN_DEFAULTS.sampleTokens,
    sampleEvery: TRAIN_DEFAULTS.sampleEvery, model: {},
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
    } else if (key !== 'autostart') {
      throw new MinigptError(`unknown query parameter "${rawKey}"; use ${[...Object.keys(TRAIN_KEYS), ...MODEL_KEYS, 'backend', 'autostart'].join(', ')}`);
    }
  }
  // A short run keeps the default schedule's shape: warmup is at most a tenth of the steps.
  if (!new URLSearchParams(search).has('warmup')) o.warmup = Math.min(o.warmup, Math.floor(o.steps / 10));
  return o;
}

/** webgpu when an adapter exists (software ones too: in a page it beats plain TS), else the reference backend. */
export async function pickBackend(want: PageBackend): Promise<Backend> {
  if (want === 'webgpu' || (want === 'auto' && (await webgpuAvailable()))) return createBackend('webgpu');
  return createBackend('reference');
}

function emptyState(dataName: string, error = ''): PageState {
  return {
    state: error ? 'error' : 'loading', backend: '', adapter: '', config: null, parameters: 0, dataName,
    losses: [], tokensPerSecond: 0, sample: '', error,
  };
}

export interface RunHooks {
  signal?: AbortSignal;
  /** Called whenever the state changes (after each step, sample, or on finishing). */
  onUpdate?(state: PageState): void;
}

/** Trains on `text` in this tab; `dataName` only labels it. Resolves with the final state (errors included). */
export async function runInPage(o: PageOptions, text: string, dataName: string, hooks: RunHooks = {}): Promise<PageState> {
  const s = emptyState(dataName);
  const update = (): void => hooks.onUpdate?.(s);
  let backend: Backend | null = null;
  try {
    for (const [k, v] of Object.entries({ steps: o.steps, batch: o.batch })) {
      if (!Number.isInteger(v) || v <= 0) throw new MinigptError(`${k} must be a positive integer (got ${v})`);
    }
    const tokenizer = buildCharTokenizer(text);
    const { train } = splitTrainVal(tokenizer.encode(text), 0.1);
    const config = resolveConfig({ ...o.model, vocab_size: o.model.vocab_size ?? tokenizer.vocabSize });
    const B = o.batch, T = config.context;
    if (train.length <= T) throw new MinigptError(`the text has ${train.length} training tokens, fewer than one sequence of ${T + 1}; paste more text or lower context`);
    s.config = config;
    s.parameters = countParams(config);
    update();

    backend = await pickBackend(o.backend);
    s.backend = backend.name;
    s.adapter = (backend as Partial<WebGpuBackend>).adapterInfo ?? '';
    const model = createModel(backend, config);
    setWeights(model, initialWeights(config, model.layout, createRng(o.seed)));
    const opt = createOptimizer(model, { weightDecay: TRAIN_DEFAULTS.weightDecay, gradClip: TRAIN_DEFAULTS.gradClip });
    const sampler = createBatchSampler(memoryTokens(train), B, T, o.seed);
    const schedule = { lr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps: o.steps };
    const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
    const sample = async (step: number): Promise<void> => {
      let out = '';
      for await (const t of generate({ model, tokenizer }, '', { maxTokens: o.sampleTokens, temperature: 0.8, seed: step, signal: hooks.signal })) out += t.text;
      s.sample = out;
      update();
    };

    s.state = 'training';
    update();
    let t0 = performance.now();
    for (let step = 1; step <= o.steps; step++) {
      if (hooks.signal?.aborted) { s.state = 'stopped'; break; }
      zeroGrads(model);
      sampler.next(ids, targets);
      const dropoutSeed = (Math.imul(o.seed, 0x9e3779b1) + step) >>> 0;
      forward(model, ids, targets, B, T, { training: true, dropoutSeed });
      backward(model, { training: true, dropoutSeed });
      const loss = await meanLoss(model);
      // As in train(): a non-finite gradient norm skips the update instead of poisoning the weights.
      const gradNorm = await optimizerStepChecked(model, opt, learningRate(schedule, step));
      s.losses.push(Number.isFinite(loss) && Number.isFinite(gradNorm) ? loss : NaN);
      s.tokensPerSecond = (step * B * T) / ((performance.now() - t0) / 1000);
      update();
      if (o.sampleEvery > 0 && step % o.sampleEvery === 0 && step < o.steps) {
        const t = performance.now();
        await sample(step);
        t0 += performance.now() - t; // tokens/s counts training time only
      }
      // Let the page repaint (the reference backend computes synchronously).
      await new Promise((r) => setTimeout(r, 0));
    }
    await sample(s.losses.length);
    if (s.state === 'training') s.state = 'done';
  } catch (e) {
    s.state = 'error';
    s.error = e instanceof Error ? `${e.name === 'MinigptError' ? '' : `${e.name}: `}${e.message}` : String(e);
  } finally {
    backend?.destroy();
  }
  update();
  return s;
}

// ---------------------------------------------------------------------------------------------
// The page itself (only when loaded in a document).

declare global {
  interface Window { minigpt?: PageState }
}

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html has no #${id}`);
  return e as T;
}

function render(s: PageState, o: PageOptions): void {
  const c = s.config;
  el('backend').textContent = s.backend ? `${s.backend}${s.adapter ? ` (${s.adapter})` : ''}` : '…';
  el('model').textContent = c
    ? `d_model ${c.d_model}, ${c.n_heads} heads, ${c.n_layers} layers, context ${c.context}, vocab ${c.vocab_size}: ${(s.parameters / 1e6).toFixed(2)}M parameters; batch ${o.batch}, ${o.steps} steps, lr ${o.lr}`
    : '…';
  el('data').textContent = s.dataName;
  const n = s.losses.length;
  const last = n ? s.losses[n - 1] : NaN;
  el('status').textContent = s.state === 'error' ? `error: ${s.error}`
    : `${s.state}: step ${n}/${o.steps}${n ? `, loss ${last.toFixed(4)}, ${s.tokensPerSecond.toFixed(0)} tokens/s` : ''}${s.state === 'training' && n ? `, ${eta(s, o)} left` : ''}`;
  el('status').dataset.state = s.state;
  el('sample').textContent = s.sample;
}

/** Time left at the current speed, in words. */
function eta(s: PageState, o: PageOptions): string {
  const seconds = ((o.steps - s.losses.length) * o.batch * (s.config?.context ?? 0)) / Math.max(s.tokensPerSecond, 1e-9);
  return seconds < 90 ? `${seconds.toFixed(0)} s` : seconds < 5400 ? `${(seconds / 60).toFixed(0)} min` : `${(seconds / 3600).toFixed(1)} h`;
}

let plotted = 0;
function renderPlot(s: PageState, force: boolean): void {
  const now = performance.now();
  if (!force && now - plotted < 250) return;
  plotted = now;
  const records = s.losses.flatMap((loss, i) => (Number.isFinite(loss) ? [{ step: i + 1, loss }] : []));
  el('plot').innerHTML = records.length ? renderLossPlot([{ name: 'train', records }], { title: 'training loss' }) : '';
  el('losses').textContent = s.losses.map((l, i) => `${i + 1}\t${l.toFixed(4)}`).join('\n');
}

async function loadDefaultText(): Promise<string> {
  const res = await fetch(new URL('corpus.txt', document.baseURI));
  if (!res.ok) throw new MinigptError(`could not load corpus.txt (HTTP ${res.status}); rebuild with npm run build:web`);
  return res.text();
}

async function main(): Promise<void> {
  let controller: AbortController | null = null;
  let running: Promise<PageState> | null = null;
  const start = async (pasted: string | null): Promise<void> => {
    controller?.abort();
    await running;
    controller = new AbortController();
    let o = parseQuery('');
    const onUpdate = (s: PageState): void => {
      window.minigpt = s;
      render(s, o);
      renderPlot(s, s.state !== 'training');
    };
    el('status').textContent = 'loading the text…';
    try {
      o = parseQuery(location.search);
      const [text, name] = pasted !== null ? [cleanText(pasted), 'pasted text'] : [await loadDefaultText(), DEFAULT_CORPUS_NAME];
      running = runInPage(o, text, name, { signal: controller.signal, onUpdate });
    } catch (e) {
      running = null;
      onUpdate(emptyState('', (e as Error).message));
    }
  };
  el('stop').addEventListener('click', () => controller?.abort());
  el('restart').addEventListener('click', () => {
    const pasted = el<HTMLTextAreaElement>('text').value;
    void start(pasted.trim() ? pasted : null);
  });
  if (new URLSearchParams(location.search).get('autostart') !== '0') await start(null);
}

if (typeof document !== 'undefined') void main();
