/**
 * The browser page: a settings form (prefilled from the query string), a run on the default
 * corpus, pasted text or a .txt file with its training and validation loss, then a prompt to
 * generate from the model, downloads of it (checkpoint .zip, llama.cpp GGUF, transformers .zip),
 * and loading a checkpoint .zip trained elsewhere.
 *
 * Nothing made here is lost: the model of every run that ends (done or stopped) and of every
 * checkpoint .zip loaded is kept in the browser's IndexedDB (web/saved-model.ts; the last one only),
 * offered again on the next visit and at once in the page's other tabs (Restore, Forget); leaving
 * the page while a run trains asks first. Where the host does not send COOP/COEP, web/isolation.ts
 * gets cross-origin isolation (for the cpu backend) from a service worker before anything starts.
 *
 * The model lives in a dedicated Web Worker (web/train-worker.ts, bundled as train-worker.js):
 * the page starts a fresh one for each run or loaded checkpoint, and it stays alive afterwards to
 * generate and build the downloads. This renders what it posts. See web/run.ts for the backend
 * choice and the query string. State is mirrored on `window.minigpt` for tests.
 */
import { DEFAULT_CONFIG, MinigptError, TRAIN_DEFAULTS, checkCheckpointZip, cleanText } from '../src/index.js';
import { DEFAULT_CORPUS_NAME } from '../src/data/corpus.js';
import { looksLikeZip } from '../src/io/zip.js';
import { sniffBinary } from '../src/data/text.js';
import { EVAL_BATCHES, checkOptions, checkTrainTokens, checkVocabSize, defaultEvalEvery, emptyState, errorText, parseQuery, type PageBackend, type PageOptions, type PageState } from './run.js';
import type { ExportFormat, FromTrainWorker, GenerateRequest, ToTrainWorker } from './train-worker.js';
import { forgetSavedModel, readSavedInfo, readSavedZip, saveModel, type SavedModelInfo } from './saved-model.js';
import { ensureIsolation } from './isolation.js';
import { renderLineChart, type ChartLine } from '../src/train/plot.js';

/** Generation from the model, as the page shows it. */
export interface GenerationView {
  state: 'idle' | 'generating' | 'done' | 'stopped' | 'error';
  prompt: string;
  /** The text generated after the prompt so far. */
  text: string;
  error: string;
  /** Something to know about the output (a prompt longer than the context); else empty. */
  note: string;
}

/** The last download asked for. */
export interface DownloadView {
  state: 'idle' | 'building' | 'done' | 'error';
  format: ExportFormat | '';
  fileName: string;
  bytes: number;
  error: string;
}

/** The model kept in this browser's storage, as the page shows it. */
export interface SavedView {
  /** The page has read what the browser keeps (the offer waits for it). */
  read: boolean;
  /** The kept model (null: none, or not read yet). */
  info: SavedModelInfo | null;
  /** The page's model is the kept one (it was just kept, or restored). */
  current: boolean;
  /** What the page is doing with it; 'error': the last save, read, restore or forget failed, and `note` says why. */
  state: 'idle' | 'saving' | 'restoring' | 'error';
  note: string;
}

/** What window.minigpt holds: the worker's last state, plus generation, downloads and the kept model. */
export interface PageView extends PageState {
  generation: GenerationView;
  download: DownloadView;
  /** A bad form value met while a run goes on (which it does); shown in the status until the run ends or the next Train. */
  formError: string;
  /** Why the page is not cross-origin isolated, so has no cpu backend ('' when it is, or until the page knows). */
  isolation: string;
  saved: SavedView;
}

declare global {
  interface Window { minigpt?: PageView }
}

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html has no #${id}`);
  return e as T;
}

/** `1 layer`, `2 layers`. */
const count = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/** 12,345 */
const thousands = (n: number): string => n.toLocaleString('en-US');

const idleGeneration = (): GenerationView => ({ state: 'idle', prompt: '', text: '', error: '', note: '' });
const idleDownload = (): DownloadView => ({ state: 'idle', format: '', fileName: '', bytes: 0, error: '' });

/** The page's state; `options` is the run's (null for a loaded checkpoint). */
let view: PageView = {
  ...emptyState(''), generation: idleGeneration(), download: idleDownload(), formError: '', isolation: '',
  saved: { read: false, info: null, current: false, state: 'idle', note: '' },
};
let options: PageOptions | null = null;
let worker: Worker | null = null;
/** The generated text in #gen-output, which tokens are appended to. */
let outputText: Text | null = null;
/** Tokens' text not yet on the page: added once per frame, since adding each token to a growing text node took minutes at 100k characters. */
let outputPending = '';
let outputFrame = 0;

/** Puts the tokens' text that arrived since the last frame on the page. */
function flushOutput(): void {
  if (outputFrame) cancelAnimationFrame(outputFrame);
  outputFrame = 0;
  // A node per batch: appending to one text node copies all of it each time.
  if (outputText?.parentNode && outputPending) outputText.parentNode.appendChild(document.createTextNode(outputPending));
  outputPending = '';
}
/** What the worker's model is to be kept as once it is ready (null: nothing to keep, as for a restored model). */
let toKeep: 'trained' | 'loaded' | null = null;
/** The info of the model whose checkpoint the worker is building to keep. */
let keeping: SavedModelInfo | null = null;
/** The kept model's info, while the page's model is that model restored. */
let restored: SavedModelInfo | null = null;
/** Stop was pressed and the run has not ended yet: it ends after its current step, with a last validation loss and sample. */
let stopping = false;

/** The worker is setting up or running a run, or loading a checkpoint. */
const training = (): boolean => worker !== null && (view.state === 'loading' || view.state === 'training');
/** A run is training (not a checkpoint loading): leaving the page would lose it. */
const runGoing = (): boolean => options !== null && training();

// ---- The settings form ----

/** A form field, its query key and its default (as the form shows it). */
interface Field { id: string; key: string; fallback: string }

const FIELDS: Field[] = [
  { id: 'f-backend', key: 'backend', fallback: 'auto' },
  { id: 'f-steps', key: 'steps', fallback: String(TRAIN_DEFAULTS.steps) },
  { id: 'f-batch', key: 'batch', fallback: String(TRAIN_DEFAULTS.batch) },
  { id: 'f-lr', key: 'lr', fallback: String(TRAIN_DEFAULTS.lr) },
  { id: 'f-eval-every', key: 'eval_every', fallback: '' },
  { id: 'f-seed', key: 'seed', fallback: String(TRAIN_DEFAULTS.seed) },
  { id: 'f-d-model', key: 'd_model', fallback: String(DEFAULT_CONFIG.d_model) },
  { id: 'f-n-heads', key: 'n_heads', fallback: String(DEFAULT_CONFIG.n_heads) },
  { id: 'f-n-layers', key: 'n_layers', fallback: String(DEFAULT_CONFIG.n_layers) },
  { id: 'f-context', key: 'context', fallback: String(DEFAULT_CONFIG.context) },
];

/** Size presets: the fields each one sets. `default` is the CLI's default run. */
const PRESETS: Record<string, Record<string, string>> = {
  tiny: { steps: '200', batch: '16', lr: '0.003', d_model: '64', n_heads: '4', n_layers: '2', context: '64' },
  small: { steps: '400', batch: '16', lr: '0.003', d_model: '128', n_heads: '4', n_layers: '4', context: '128' },
  default: {
    steps: String(TRAIN_DEFAULTS.steps), batch: String(TRAIN_DEFAULTS.batch), lr: String(TRAIN_DEFAULTS.lr), d_model: String(DEFAULT_CONFIG.d_model),
    n_heads: String(DEFAULT_CONFIG.n_heads), n_layers: String(DEFAULT_CONFIG.n_layers), context: String(DEFAULT_CONFIG.context),
  },
};

const field = (f: Field): HTMLInputElement | HTMLSelectElement => el<HTMLInputElement | HTMLSelectElement>(f.id);

/** The same value: numerically for numbers (3e-3 is 0.003), else as text. */
function sameValue(a: string, b: string): boolean {
  const x = Number(a), y = Number(b);
  return a.trim() !== '' && b.trim() !== '' && Number.isFinite(x) && Number.isFinite(y) ? x === y : a.trim() === b.trim();
}

/** Fills the form from the query string (the CLI's kebab-case names too); a field not in it gets its default. */
function fillForm(search: string): void {
  const q = new URLSearchParams(search);
  for (const f of FIELDS) field(f).value = q.get(f.key) ?? q.get(f.key.replace(/_/g, '-')) ?? f.fallback;
  const source = q.get('data');
  if (source === 'text' || source === 'file') el<HTMLInputElement>(`data-${source}`).checked = true;
  showPreset();
}

/** Which data source the form has picked: 'corpus', 'text' or 'file'. */
function dataSource(): string {
  return document.querySelector<HTMLInputElement>('input[name="data-source"]:checked')?.value ?? 'corpus';
}

/**
 * What to tell someone who opened a link to a run on pasted text or a file ('' for the corpus):
 * the link carries the settings, not the text, so that run waits for it instead of starting on
 * the default corpus.
 */
function linkNeedsText(): string {
  const source = new URLSearchParams(location.search).get('data');
  return source === 'text' ? "this link's run trained on pasted text, which a link cannot carry: paste it below and press Train"
    : source === 'file' ? "this link's run trained on a .txt file, which a link cannot carry: choose it below and press Train"
    : '';
}

/** The preset the fields match, else custom; and what eval_every is when left blank. */
function showPreset(): void {
  const values = Object.fromEntries(FIELDS.map((f) => [f.key, field(f).value]));
  const match = Object.entries(PRESETS).find(([, p]) => Object.entries(p).every(([k, v]) => sameValue(values[k] ?? '', v)));
  el<HTMLSelectElement>('preset').value = match ? match[0] : 'custom';
  const steps = Number(values.steps);
  el<HTMLInputElement>('f-eval-every').placeholder = Number.isInteger(steps) && steps > 0 ? `auto: ${defaultEvalEvery(steps)}` : 'auto';
}

/**
 * The query string for the form: the current one (keeping what the form has no field for, such as
 * threads or warmup) with each field set, or left out where it has its default. Throws a
 * MinigptError (one line) when parseQuery refuses it.
 */
function queryFromForm(): string {
  const q = new URLSearchParams(location.search);
  q.delete('autostart');
  for (const f of FIELDS) {
    q.delete(f.key);
    q.delete(f.key.replace(/_/g, '-'));
    const value = field(f).value.trim();
    if (value !== '' && !sameValue(value, f.fallback)) q.set(f.key, value);
  }
  // The pasted text or file cannot travel in a link; the link says the run used one (see linkNeedsText).
  q.delete('data');
  const source = dataSource();
  if (source !== 'corpus') q.set('data', source);
  const query = q.toString();
  parseQuery(query);
  return query;
}

// ---- Data ----

async function loadDefaultText(): Promise<string> {
  const res = await fetch(new URL('corpus.txt', document.baseURI));
  if (!res.ok) throw new MinigptError(`could not load corpus.txt (HTTP ${res.status}); rebuild with npm run build:web`);
  return res.text();
}

/**
 * A .txt file's bytes as text, refused as the CLI refuses them (its default --invalid-utf8 error):
 * UTF-16, a binary file (a NUL byte in its first 8 KiB), or invalid UTF-8. Decoding leniently would
 * train on replacement characters without a word.
 */
function decodeTextFile(name: string, bytes: Uint8Array): string {
  const { utf16, nulOffset: nul } = sniffBinary(bytes);
  if (utf16) throw new MinigptError(`${name} is UTF-16 encoded; re-encode it as UTF-8`);
  if (nul >= 0) throw new MinigptError(`${name} looks like a binary file (NUL byte at offset ${nul}); choose a UTF-8 text file`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new MinigptError(`${name} is not UTF-8 text (invalid UTF-8); re-encode it as UTF-8`);
  }
}

/** The largest text file the page reads. */
const MAX_FILE_BYTES = 64 * 2 ** 20;

/** The text the form's data choice names, cleaned as the CLI cleans a file, and its label. */
async function readData(): Promise<{ text: string; name: string }> {
  const source = dataSource();
  if (source === 'text') {
    const pasted = el<HTMLTextAreaElement>('text').value;
    if (!pasted.trim()) throw new MinigptError('the text box is empty: paste some text into it, or pick the default corpus or a file');
    return { text: cleanText(pasted), name: 'pasted text' };
  }
  if (source === 'file') {
    const file = el<HTMLInputElement>('text-file').files?.[0];
    if (!file) throw new MinigptError('no file chosen: choose a .txt file, or pick the default corpus or pasted text');
    // The text is held several times over (bytes, string, tokens, the worker's copy): a tab crashed
    // on a 120 MB file. The CLI trains on any size (minigpt prepare streams it to shards).
    if (file.size > MAX_FILE_BYTES) {
      throw new MinigptError(`${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MB; the page trains on text files up to ${MAX_FILE_BYTES / 2 ** 20} MB (the CLI takes any size: minigpt prepare, then minigpt train)`);
    }
    const text = cleanText(decodeTextFile(file.name, new Uint8Array(await file.arrayBuffer())));
    if (!text.trim()) throw new MinigptError(`${file.name} has no text`);
    return { text, name: `file ${file.name}` };
  }
  return { text: await loadDefaultText(), name: DEFAULT_CORPUS_NAME };
}

// ---- Rendering ----

function render(): void {
  const s = view, o = options, c = s.config;
  window.minigpt = view;
  el('backend').textContent = s.backend ? `${s.backend}${s.adapter ? ` (${s.adapter})` : ''}` : '…';
  // Until a run or load picks a backend, the note says why the cpu backend is out, if it is.
  const note = s.backendNote || (!s.backend && s.isolation ? `not cross-origin isolated, so no cpu backend: ${s.isolation}` : '');
  el('backend-note').textContent = note;
  el('backend-note').hidden = !note;
  const shape = c ? `d_model ${c.d_model}, ${count(c.n_heads, 'head')}, ${count(c.n_layers, 'layer')}, context ${c.context}, vocab ${c.vocab_size}: ${(s.parameters / 1e6).toFixed(2)}M parameters` : '';
  el('model').textContent = !c ? '…'
    : restored && s.loadedFrom ? `${shape}; ${restored.source === 'trained' ? `trained here for ${count(restored.steps, 'step')}` : `loaded from ${restored.from}`}, kept in this browser`
    : s.loadedFrom ? `${shape}; loaded from ${s.loadedFrom}`
    : `${shape}; batch ${o?.batch}, ${count(o?.steps ?? 0, 'step')}, lr ${o?.lr}`;
  el('data').textContent = restored?.source === 'trained' && s.loadedFrom ? `${restored.from} (what it was trained on)`
    : s.loadedFrom && s.state === 'error' && !s.hasModel ? '…'
    : s.loadedFrom ? `none here: the model was trained elsewhere (${restored?.from ?? s.loadedFrom})`
    : s.characters ? `${s.dataName}: ${thousands(s.characters)} characters, ${thousands(s.trainTokens)} training and ${thousands(s.valTokens)} validation tokens (one per character)${s.valNote ? `; ${s.valNote}` : ''}`
    : s.dataName || '…';
  el('status').textContent = statusLine(s, o);
  el('status').dataset.state = s.state;
  el('sample').textContent = s.sample;
  // A loaded model has no run, so no sample at its end is coming.
  el('sample-heading').hidden = !s.sample && Boolean(s.loadedFrom);
  renderControls();
  renderSaved();
  renderLoad();
}

/** The file being loaded (null: the page's model is not from Load, or a run or Restore came after). */
let loadingFile: string | null = null;

/** Next to the Load input, where the file was chosen: how loading it goes (the status line says it too). */
function renderLoad(): void {
  const s = view, status = el('load-status');
  const text = loadingFile === null ? ''
    : s.formError ? `error: ${s.formError}`
    : s.state === 'error' ? `error: ${s.error}`
    : s.state === 'loading' ? `loading ${loadingFile}…`
    : s.state === 'loaded' ? `loaded ${loadingFile}: Generate and the downloads above use it`
    : '';
  status.textContent = text;
  status.dataset.state = loadingFile !== null && (s.formError || s.state === 'error') ? 'error' : 'idle';
}

function statusLine(s: PageView, o: PageOptions | null): string {
  if (s.formError) return `error: ${s.formError} (the current run goes on)`;
  if (s.state === 'error') return `error: ${s.error}`;
  if (!worker && s.state === 'loading') {
    return s.saved.info ? 'ready: restore your last model (above), or choose the settings and the data and press Train'
      : 'ready: choose the settings and the data, then press Train (or load a checkpoint .zip below)';
  }
  if (s.state === 'loaded') return `loaded ${s.loadedFrom}: type a prompt under Generate, or download it`;
  if (s.state === 'loading' && s.loadedFrom) return `loading ${s.loadedFrom}…`;
  const n = s.losses.length, steps = o?.steps ?? 0;
  if (s.state === 'loading' && n === 0) return `starting a run of ${count(steps, 'step')}: ${s.config ? 'picking the backend and building the model' : 'reading the text'}…`;
  const val = s.valLosses.at(-1);
  // After Stop, the run is still 'training' until its last validation loss and sample.
  const stillStopping = stopping && s.state === 'training';
  const parts = [`${stillStopping ? 'stopping (a last validation loss and sample first)' : s.state}: step ${n}/${steps}`];
  if (n) parts.push(`loss ${s.losses[n - 1].toFixed(4)}`);
  if (val) parts.push(`val ${val[1].toFixed(4)}${val[0] !== n ? ` (step ${val[0]})` : ''}`);
  if (n) parts.push(`${s.tokensPerSecond.toFixed(0)} tokens/s`);
  if (s.state === 'training' && n && o && !stillStopping) parts.push(`${eta(s, o)} left`);
  const next = s.hasModel && (s.state === 'done' || s.state === 'stopped') ? '; the model is ready: type a prompt under Generate, or download it' : '';
  return parts.join(', ') + (s.stopReason ? `; ${s.stopReason}` : '') + next;
}

/**
 * Why a new run, a load or a restore must wait ('' when none has to): each would end the run or
 * the generation going on and lose it.
 */
function busyReason(): string {
  return training() ? 'a run is training: Stop it first' : view.generation.state === 'generating' ? 'the model is generating: Stop it first' : '';
}

/** Buttons on or off for what the page can do now. */
function renderControls(): void {
  const busy = training(), model = view.hasModel && worker !== null;
  const generating = view.generation.state === 'generating';
  el<HTMLButtonElement>('stop').disabled = !busy || stopping;
  const occupied = busyReason();
  el<HTMLButtonElement>('train').disabled = occupied !== '';
  el('train').title = occupied;
  el<HTMLInputElement>('load-file').disabled = occupied !== '';
  el('load-file').title = occupied;
  el<HTMLButtonElement>('generate').disabled = !model || busy || generating;
  el<HTMLButtonElement>('gen-stop').disabled = !generating;
  for (const f of ['checkpoint', 'gguf', 'hf'] as const) el<HTMLButtonElement>(`download-${f}`).disabled = !model || busy || view.download.state === 'building';
  el('model-needed').hidden = model && !busy;
}

/** Time left at the current speed, in words. */
function eta(s: PageState, o: PageOptions): string {
  const seconds = ((o.steps - s.losses.length) * o.batch * (s.config?.context ?? 0)) / Math.max(s.tokensPerSecond, 1e-9);
  return seconds < 90 ? `${seconds.toFixed(0)} s` : seconds < 5400 ? `${(seconds / 60).toFixed(0)} min` : `${(seconds / 3600).toFixed(1)} h`;
}

let plotted = 0;
function renderPlot(force: boolean): void {
  const s = view;
  const now = performance.now();
  if (!force && now - plotted < 250) return;
  plotted = now;
  drawChart();
  const valAt = new Map(s.valLosses);
  el('losses').textContent = ['step\tloss\tval', ...s.losses.map((l, i) => `${i + 1}\t${l.toFixed(4)}${valAt.has(i + 1) ? `\t${valAt.get(i + 1)!.toFixed(4)}` : ''}`)].join('\n');
}

/**
 * Draws the loss chart as wide as its box (300 to 760 px, the CLI's width), so on a phone its text
 * keeps its real size instead of shrinking with the picture.
 */
function drawChart(): void {
  const points = view.losses.flatMap((loss, i): [number, number][] => (Number.isFinite(loss) ? [[i + 1, loss]] : []));
  const val = view.valLosses.filter(([, loss]) => Number.isFinite(loss));
  const plot = el('plot');
  const width = Math.round(Math.min(760, Math.max(300, plot.clientWidth)));
  plot.innerHTML = points.length ? lossChart(points, val, view.losses.length, width) : '';
}

const TRAIN_COLOR = '#1f77b4', VAL_COLOR = '#d62728';

/**
 * The training loss (solid) and validation loss (dashed, with a dot at each evaluation) against
 * the step, as SVG: whole steps on the step axis, and a legend entry for each line drawn.
 * `steps`: the steps run so far (skipped ones included), which the axis reaches.
 */
function lossChart(points: [number, number][], val: [number, number][], steps: number, width: number): string {
  const lines: ChartLine[] = [
    // A single point is a dot (a line through one point draws nothing).
    { label: 'train', color: TRAIN_COLOR, kind: 'train', points, dots: points.length === 1 },
  ];
  if (val.length) lines.push({ label: 'val', color: VAL_COLOR, kind: 'val', thick: true, dashed: true, dots: true, points: val });
  return renderLineChart(lines, {
    title: val.length ? 'training and validation loss' : 'training loss', xLabel: 'step', yLabel: 'loss (nats/token)',
    xMax: steps, width, height: 360,
  });
}

// ---- The worker ----

/** Ends the current worker (its run, generation and model) and starts a fresh one. */
function newWorker(): Worker {
  worker?.terminate();
  stopping = false;
  toKeep = null;
  keeping = null;
  restored = null;
  // The page's model is no longer the kept one (a save in flight ends with the old worker).
  view.saved = { ...view.saved, current: false, state: view.saved.state === 'saving' ? 'idle' : view.saved.state };
  const w = new Worker(new URL('train-worker.js', import.meta.url), { type: 'module', name: 'minigpt-train' });
  worker = w;
  w.addEventListener('message', (e: MessageEvent<FromTrainWorker>) => {
    if (w === worker) onMessage(e.data);
  });
  w.addEventListener('error', (e: ErrorEvent) => {
    e.preventDefault();
    if (w !== worker) return;
    w.terminate();
    worker = null;
    setState(emptyState(view.dataName, `the training worker failed: ${e.message || 'could not load train-worker.js'}`), false);
  });
  return w;
}

const send = (message: ToTrainWorker, transfer: Transferable[] = []): void => worker?.postMessage(message, transfer);

/** Shows the worker's (or the page's own) state; generation and downloads reset with a new model. */
function setState(s: PageState, keep = true): void {
  const running = s.state === 'loading' || s.state === 'training';
  view = {
    ...s, generation: keep ? view.generation : idleGeneration(), download: keep ? view.download : idleDownload(),
    formError: keep && running ? view.formError : '', isolation: view.isolation, saved: view.saved,
  };
  if (!keep) {
    el('gen-output').replaceChildren();
    outputText = null;
    flushOutput();
    renderGeneration();
    renderDownload();
  }
  render();
  renderPlot(s.state !== 'training');
}

function onMessage(m: FromTrainWorker): void {
  switch (m.type) {
    case 'state':
      setState(m.state);
      if (m.state.hasModel && (m.state.state === 'done' || m.state.state === 'stopped' || m.state.state === 'loaded')) modelReady();
      return;
    case 'snapshot':
      void keepSnapshot('bytes' in m ? m.bytes : null, 'error' in m ? m.error : '');
      return;
    case 'token':
      view.generation.text += m.text;
      outputPending += m.text;
      if (!outputFrame) outputFrame = requestAnimationFrame(flushOutput);
      return;
    case 'generated':
      flushOutput();
      Object.assign(view.generation, { state: m.end, error: m.error, note: m.note });
      renderGeneration();
      renderControls();
      return;
    case 'exported':
      if ('error' in m) {
        view.download = { ...idleDownload(), state: 'error', format: m.format, error: m.error };
      } else {
        saveFile(m.bytes, m.fileName);
        view.download = { state: 'done', format: m.format, fileName: m.fileName, bytes: m.bytes.byteLength, error: '' };
      }
      renderDownload();
      renderControls();
      return;
  }
}

/**
 * Text too short for one training sequence is refused here too (the run checks it again), so it
 * does not replace the worker and the model in it. One token per character, as the run's char
 * tokenizer makes, and the same split (the last 10% for validation).
 */
function checkLength(text: string, o: PageOptions): void {
  const tokens = [...text].length, train = tokens - Math.round(tokens * 0.1);
  const T = typeof o.model.context === 'number' ? o.model.context : DEFAULT_CONFIG.context;
  checkTrainTokens(train, T);
  checkVocabSize(o.model.vocab_size, new Set(text).size + 1);
}

/** Starts a run: from the form (Train), or from the query string as it is (on opening the page). */
async function startRun(fromForm: boolean): Promise<void> {
  // Enter in a settings field submits the form even with Train off: not over a run or a generation.
  if (fromForm && busyReason()) return;
  let query: string, o: PageOptions, data: { text: string; name: string };
  loadingFile = null;
  el('status').textContent = 'loading the text…';
  try {
    query = fromForm ? queryFromForm() : location.search;
    o = parseQuery(query);
    // Checked here too, so a bad value does not replace the worker (and the model in it).
    checkOptions(o);
    data = await readData();
    checkLength(data.text, o);
  } catch (e) {
    // A bad value leaves the run going on, or the model there is, as it was: it can still generate.
    if (training()) {
      view.formError = errorText(e);
      render();
    } else {
      setState({ ...view, state: 'error', error: errorText(e) });
    }
    return;
  }
  if (fromForm) history.replaceState(null, '', query ? `?${query}` : location.pathname);
  options = o;
  newWorker();
  toKeep = 'trained';
  setState(emptyState(data.name), false);
  send({ type: 'start', options: o, text: data.text, dataName: data.name, notIsolated: view.isolation });
}

/** Loads a checkpoint .zip in a fresh worker, on the backend the form names. */
async function loadFile(file: File): Promise<void> {
  if (busyReason()) return;
  let bytes: ArrayBuffer;
  try {
    bytes = await file.arrayBuffer();
  } catch (e) {
    setState({ ...view, state: 'error', error: `could not read ${file.name}: ${errorText(e)}` });
    return;
  }
  loadingFile = file.name;
  let notZip = notAZip(file.name, new Uint8Array(bytes, 0, Math.min(4, bytes.byteLength)));
  if (!notZip) {
    // A zip that holds no checkpoint (a transformers folder, anything else) is refused here too: the
    // names and config.json are read, not the weights.
    try {
      checkCheckpointZip(new Uint8Array(bytes), file.name);
    } catch (e) {
      notZip = errorText(e);
    }
  }
  if (notZip) {
    // Refused before a fresh worker replaces the page's model (a trained one can still generate), as a bad form value is.
    if (training()) {
      view.formError = notZip;
      render();
    } else {
      setState({ ...view, state: 'error', error: notZip });
    }
    return;
  }
  loadCheckpoint(bytes, file.name, null);
}

/** Why a file is not a checkpoint .zip, when it does not even start as a zip ('' when it may be one: the worker reads it). */
function notAZip(name: string, head: Uint8Array): string {
  if (looksLikeZip(head)) return '';
  const what = String.fromCharCode(...head) === 'GGUF' ? 'a GGUF file (llama.cpp), which this page cannot load' : 'not a zip file';
  return `${name} is ${what}: load a checkpoint .zip (this page's checkpoint download, or a CLI checkpoint folder compressed into a .zip)`;
}

/** What Restore loads the kept model as (the status and errors name it so). */
const RESTORED_NAME = 'your last model';

/**
 * Loads checkpoint .zip bytes in a fresh worker, on the backend the form names: a file (kept once
 * it has loaded), or the kept model (`restoring` its info; nothing to keep: it is kept already).
 */
function loadCheckpoint(bytes: ArrayBuffer, fileName: string, restoring: SavedModelInfo | null): void {
  let threads = 0;
  try { threads = parseQuery(location.search).threads; } catch { /* the query's error shows when it trains */ }
  options = null;
  newWorker();
  toKeep = restoring ? null : 'loaded';
  restored = restoring;
  setState({ ...emptyState(`checkpoint ${fileName}`), loadedFrom: fileName }, false);
  send({ type: 'load', bytes, fileName, backend: el<HTMLSelectElement>('f-backend').value as PageBackend, threads, notIsolated: view.isolation, keptClean: restoring?.clean ?? null }, [bytes]);
}

// ---- The model kept in this browser ----

/** Updates the page's view of the kept model and shows it. */
function setSaved(change: Partial<SavedView>): void {
  view.saved = { ...view.saved, ...change };
  render();
}

/** The worker's model is ready (a run ended, a checkpoint loaded): asks for its checkpoint .zip to keep it. */
function modelReady(): void {
  if (restored && view.state === 'loaded') setSaved({ current: true, state: 'idle', note: '' });
  const source = toKeep, c = view.config;
  toKeep = null;
  if (!source || !c) return;
  const lastLoss = view.losses.at(-1);
  keeping = {
    savedAt: Date.now(), source, from: source === 'trained' ? view.dataName : view.loadedFrom,
    ended: view.state === 'stopped' ? 'stopped' : view.state === 'done' ? 'done' : 'loaded',
    backend: view.backend, config: c, parameters: view.parameters,
    steps: source === 'trained' ? view.losses.length : 0, plannedSteps: source === 'trained' ? options?.steps ?? 0 : 0,
    trainLoss: lastLoss !== undefined && Number.isFinite(lastLoss) ? lastLoss : null, valLoss: view.valLosses.at(-1)?.[1] ?? null, bytes: 0,
    clean: view.clean,
  };
  setSaved({ state: 'saving', note: '' });
  send({ type: 'snapshot' });
}

/** Keeps the checkpoint .zip the worker built (in place of the model kept before); a failure is a one-line note. */
async function keepSnapshot(zip: ArrayBuffer | null, error: string): Promise<void> {
  const info = keeping;
  keeping = null;
  if (!info) return;
  const failed = (why: string): void => setSaved({
    state: 'error', note: `${why}${view.saved.info ? '; the model kept before stays' : ''}`,
  });
  if (!zip) {
    failed(`could not keep the model in this browser: ${error}`);
    return;
  }
  info.bytes = zip.byteLength;
  try {
    await saveModel(info, zip);
  } catch (e) {
    failed(errorText(e));
    return;
  }
  setSaved({ info, current: true, state: 'idle', note: '' });
  savedChanged();
}

/** Reads what the browser keeps, for the offer; a failure is a one-line note (and no offer). */
async function readSaved(): Promise<void> {
  try {
    const info = await readSavedInfo();
    // A model kept meanwhile (a run that ended first) is newer than what was read.
    setSaved(view.saved.current ? { read: true } : { read: true, info });
  } catch (e) {
    setSaved({ read: true, state: 'error', note: errorText(e) });
  }
}

/** Restore: loads the kept model into a fresh worker, as loading its .zip does. */
async function restoreSaved(): Promise<void> {
  const info = view.saved.info;
  if (!info || busyReason()) return;
  setSaved({ state: 'restoring', note: '' });
  let zip: ArrayBuffer;
  try {
    zip = await readSavedZip();
  } catch (e) {
    setSaved({ state: 'error', note: errorText(e) });
    return;
  }
  setSaved({ state: 'idle' });
  loadingFile = null;
  loadCheckpoint(zip, RESTORED_NAME, info);
}

/** Forget: deletes the kept model (the page's own model, if any, stays). */
async function forgetSaved(): Promise<void> {
  try {
    await forgetSavedModel();
  } catch (e) {
    setSaved({ state: 'error', note: errorText(e) });
    return;
  }
  setSaved({ info: null, current: false, state: 'idle', note: '' });
  savedChanged();
}

/**
 * The other tabs of this page: each keeps its model in the same place, so one that keeps or forgets
 * a model tells the others, which then offer what is kept now (not a model replaced or forgotten).
 */
const tabs = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('minigpt-saved-model');
const savedChanged = (): void => tabs?.postMessage('changed');

/** Another tab kept or forgot a model: shows what this browser keeps now; the page's model is no longer the kept one. */
async function otherTabChangedSaved(): Promise<void> {
  if (view.saved.state === 'saving' || view.saved.state === 'restoring') return;
  try {
    setSaved({ read: true, info: await readSavedInfo(), current: false, state: 'idle', note: '' });
  } catch (e) {
    setSaved({ read: true, info: null, current: false, state: 'error', note: errorText(e) });
  }
}

/** "d_model 64, 4 heads, 2 layers, context 64 (0.10M parameters), trained on X for 200 steps on the cpu backend, Dec 6, 2025, 7:24 PM: loss 1.9000, val loss 2.0000" */
function describeSaved(info: SavedModelInfo): string {
  const c = info.config;
  const shape = `d_model ${c.d_model}, ${count(c.n_heads, 'head')}, ${count(c.n_layers, 'layer')}, context ${c.context} (${(info.parameters / 1e6).toFixed(2)}M parameters)`;
  const when = new Date(info.savedAt).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  if (info.source === 'loaded') return `${shape}, loaded from ${info.from}, ${when}`;
  const steps = info.ended === 'stopped' ? `${info.steps} of ${count(info.plannedSteps, 'step')} (stopped)` : count(info.steps, 'step');
  const losses = [info.trainLoss !== null ? `loss ${info.trainLoss.toFixed(4)}` : '', info.valLoss !== null ? `val loss ${info.valLoss.toFixed(4)}` : ''].filter(Boolean);
  return `${shape}, trained on ${info.from} for ${steps} on the ${info.backend} backend, ${when}${losses.length ? `: ${losses.join(', ')}` : ''}`;
}

function renderSaved(): void {
  const { info, current, state, note } = view.saved;
  el('saved-offer').hidden = !info;
  el('saved-model').textContent = info ? `${current ? 'Kept in this browser' : 'Your last model'}: ${describeSaved(info)}` : '';
  el('restore').hidden = current;
  el<HTMLButtonElement>('restore').disabled = state === 'restoring' || state === 'saving' || busyReason() !== '';
  el<HTMLButtonElement>('forget').disabled = state === 'restoring' || state === 'saving';
  const status = el('saved-status');
  status.dataset.state = state;
  status.textContent = state === 'error' ? `error: ${note}` : state === 'saving' ? 'keeping the model in this browser…' : state === 'restoring' ? 'restoring…' : '';
}

// ---- Generation ----

/** A number field of the generate panel; blank is `fallback`. */
function numberField(id: string, name: string, fallback: number): number {
  const raw = el<HTMLInputElement>(id).value.trim();
  if (raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new MinigptError(`${name} must be a number (got "${raw}")`);
  return n;
}

function startGeneration(): void {
  let req: GenerateRequest;
  try {
    const maxTokens = numberField('gen-tokens', 'max tokens', 200);
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new MinigptError(`max tokens must be a whole number, 1 or more (got ${maxTokens})`);
    req = {
      prompt: el<HTMLTextAreaElement>('prompt').value, maxTokens,
      temperature: numberField('gen-temperature', 'temperature', 0.8), topK: numberField('gen-top-k', 'top-k', 0),
      topP: numberField('gen-top-p', 'top-p', 1), seed: numberField('gen-seed', 'seed', 0),
    };
  } catch (e) {
    view.generation = { ...idleGeneration(), state: 'error', error: errorText(e) };
    renderGeneration();
    return;
  }
  view.generation = { ...idleGeneration(), state: 'generating', prompt: req.prompt };
  const out = el('gen-output');
  out.replaceChildren();
  outputText = null;
  flushOutput();
  const prompt = document.createElement('span');
  prompt.className = 'prompt';
  prompt.textContent = req.prompt;
  outputText = document.createTextNode('');
  out.append(prompt, outputText);
  renderGeneration();
  renderControls();
  send({ type: 'generate', ...req });
}

function renderGeneration(): void {
  const g = view.generation;
  const status = el('gen-status');
  status.dataset.state = g.state;
  status.textContent = g.state === 'error' ? `error: ${g.error}`
    : g.state === 'generating' ? 'generating…'
    : g.state === 'done' || g.state === 'stopped' ? `${g.state}: ${count([...g.text].length, 'character')}${g.note ? `; ${g.note}` : ''}`
    : '';
}

// ---- Downloads ----

function saveFile(bytes: ArrayBuffer, fileName: string): void {
  const url = URL.createObjectURL(new Blob([bytes], { type: fileName.endsWith('.zip') ? 'application/zip' : 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function renderDownload(): void {
  const d = view.download;
  const status = el('download-status');
  status.dataset.state = d.state;
  status.textContent = d.state === 'building' ? `building the ${d.format} download…`
    : d.state === 'error' ? `error: ${d.error}`
    : d.state === 'done' ? `saved ${d.fileName} (${d.bytes < 1 << 20 ? `${(d.bytes / 1024).toFixed(0)} KiB` : `${(d.bytes / (1 << 20)).toFixed(1)} MiB`})`
    : '';
}

function download(format: ExportFormat): void {
  view.download = { ...idleDownload(), state: 'building', format };
  renderDownload();
  renderControls();
  send({ type: 'export', format });
}

// ---- Wiring ----

/** While a run trains, leaving the page (reload, close, another address) asks first: the run would be lost. */
function confirmLeavingRun(e: BeforeUnloadEvent): void {
  if (!runGoing()) return;
  e.preventDefault();
  // Chrome and Edge before 119 ask only when returnValue is set.
  e.returnValue = true;
}

/**
 * Whether opening the page starts the run its address names. ?autostart=0: never; ?autostart=1:
 * always. Otherwise only when the address names a run (a link with settings, opened afresh: that
 * is what a shared or bookmarked link is for), and not when
 *  - the address names no run: a first visit shows the form and waits for Train, since the default
 *    run takes a laptop's CPU for several minutes (a class of students opening one link would each
 *    start it), and a bare address is how one comes back to a kept model; or
 *  - the visitor reloaded the page or came back to it through the history: Train puts the run's
 *    settings in the address, so a reload of a tab that trained would start that run all over
 *    (on the default corpus, if the text was pasted) and replace the model it made.
 * The reload that web/isolation.ts makes is the page's own, not the visitor's.
 */
function shouldAutostart(afterIsolationReload: boolean): boolean {
  const q = new URLSearchParams(location.search);
  const autostart = q.get('autostart');
  if (autostart === '0') return false;
  if (autostart === '1') return true;
  const namesRun = [...q.keys()].some((k) => k !== 'autostart');
  const navigation = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
  const cameBack = !afterIsolationReload && (navigation?.type === 'reload' || navigation?.type === 'back_forward');
  return namesRun && !cameBack;
}

async function main(): Promise<void> {
  el('eval-batches').textContent = String(EVAL_BATCHES);
  el('corpus-name').textContent = DEFAULT_CORPUS_NAME;
  fillForm(location.search);
  render();
  for (const f of FIELDS) field(f).addEventListener('input', showPreset);
  el<HTMLSelectElement>('preset').addEventListener('change', () => {
    const preset = PRESETS[el<HTMLSelectElement>('preset').value];
    if (!preset) return;
    for (const f of FIELDS) if (f.key in preset) field(f).value = preset[f.key];
    showPreset();
  });
  const pick = (source: string): void => { el<HTMLInputElement>(`data-${source}`).checked = true; };
  el('text').addEventListener('input', () => pick('text'));
  el('text-file').addEventListener('change', () => pick('file'));
  el('settings').addEventListener('submit', (e) => {
    e.preventDefault();
    void startRun(true);
  });
  el('stop').addEventListener('click', () => {
    stopping = true;
    send({ type: 'stop' });
    render();
  });
  el('generate').addEventListener('click', startGeneration);
  // Ctrl+Enter (Cmd+Enter on a Mac) in the prompt generates, when Generate is on; Enter alone is a new line.
  el('prompt').addEventListener('keydown', (e: KeyboardEvent) => {
    if (e.key !== 'Enter' || !(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    if (!el<HTMLButtonElement>('generate').disabled) startGeneration();
  });
  el('gen-stop').addEventListener('click', () => send({ type: 'stop-generate' }));
  for (const f of ['checkpoint', 'gguf', 'hf'] as const) el(`download-${f}`).addEventListener('click', () => download(f));
  el<HTMLInputElement>('load-file').addEventListener('change', () => {
    const input = el<HTMLInputElement>('load-file');
    const file = input.files?.[0];
    if (file) void loadFile(file).finally(() => { input.value = ''; });
  });
  el('restore').addEventListener('click', () => void restoreSaved());
  tabs?.addEventListener('message', () => void otherTabChangedSaved());
  el('forget').addEventListener('click', () => void forgetSaved());
  window.addEventListener('beforeunload', confirmLeavingRun);
  // The chart follows its box's width (a phone turned, a window resized).
  window.addEventListener('resize', drawChart);

  // Isolation first: when it takes a reload, nothing may start before it (a run would be cut off).
  const isolation = await ensureIsolation(() => worker === null);
  if (isolation.reloading) {
    el('status').textContent = 'reloading once through a service worker that makes the page cross-origin isolated (for the cpu backend)…';
    return;
  }
  view.isolation = isolation.why;
  render();
  await readSaved();
  // Train, Load or Restore pressed meanwhile: that is what happens.
  if (worker === null && shouldAutostart(isolation.afterIsolationReload)) {
    const needs = linkNeedsText();
    if (needs) el('status').textContent = needs;
    else await startRun(false);
  }
}

if (typeof document !== 'undefined') void main();
