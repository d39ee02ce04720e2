/**
 * The browser page: trains the default model (or pasted text) and shows the loss per step,
 * tokens/s and a generated sample. The training itself (web/run.ts) runs in a dedicated Web
 * Worker (web/train-worker.ts, bundled as train-worker.js), which posts its state after every
 * step; this renders it. See web/run.ts for the backend choice and the query string.
 * State is mirrored on `window.minigpt` for tests.
 */
import { MinigptError, cleanText } from '../src/index.js';
import { DEFAULT_CORPUS_NAME } from '../src/data/corpus.js';
import { emptyState, parseQuery, type PageOptions, type PageState } from './run.js';
import type { ToTrainWorker } from './train-worker.js';

declare global {
  interface Window { minigpt?: PageState }
}

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html has no #${id}`);
  return e as T;
}

/** `1 layer`, `2 layers`. */
const count = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function render(s: PageState, o: PageOptions): void {
  const c = s.config;
  el('backend').textContent = s.backend ? `${s.backend}${s.adapter ? ` (${s.adapter})` : ''}` : '…';
  el('backend-note').textContent = s.backendNote;
  el('backend-note').hidden = !s.backendNote;
  el('model').textContent = c
    ? `d_model ${c.d_model}, ${count(c.n_heads, 'head')}, ${count(c.n_layers, 'layer')}, context ${c.context}, vocab ${c.vocab_size}: ${(s.parameters / 1e6).toFixed(2)}M parameters; batch ${o.batch}, ${count(o.steps, 'step')}, lr ${o.lr}`
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
  const points = s.losses.flatMap((loss, i): [number, number][] => (Number.isFinite(loss) ? [[i + 1, loss]] : []));
  el('plot').innerHTML = points.length ? lossChart(points, s.losses.length) : '';
  el('losses').textContent = s.losses.map((l, i) => `${i + 1}\t${l.toFixed(4)}`).join('\n');
}

/** About `n` ticks 1, 2 or 5 (or 2.5 where `whole` is false) x 10^k apart over [lo, hi]; whole numbers only where `whole`. */
function ticks(lo: number, hi: number, n: number, whole: boolean): number[] {
  if (!(hi > lo)) return [lo];
  const raw = whole ? Math.max((hi - lo) / n, 1) : (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = (whole ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * mag).find((t) => t >= raw * (1 - 1e-9)) ?? raw;
  const out: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + 1e-9 * step; i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}

/**
 * The training loss against the step, as SVG: whole steps on the step axis, and a legend entry for
 * the one line drawn (the page computes no validation loss). `steps`: the steps run so far
 * (skipped ones included), the axis' end.
 */
function lossChart(points: [number, number][], steps: number): string {
  const W = 760, H = 360, m = { left: 60, right: 20, top: 36, bottom: 48 };
  const x0 = 1, x1 = Math.max(steps, 2);
  let y0 = Math.min(...points.map((p) => p[1])), y1 = Math.max(...points.map((p) => p[1]));
  if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x: number): string => (m.left + ((x - x0) / (x1 - x0)) * (W - m.left - m.right)).toFixed(1);
  const sy = (y: number): string => (H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom)).toFixed(1);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">training loss</text>`,
  ];
  for (const t of ticks(y0, y1, 6, false)) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${sy(t)}" y2="${sy(t)}" stroke="#e5e5e5"/>`,
      `<text class="y-tick" x="${m.left - 6}" y="${(Number(sy(t)) + 4).toFixed(1)}" text-anchor="end">${t}</text>`);
  }
  for (const t of ticks(x0, x1, 8, true).filter((t) => t >= 1)) {
    out.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${m.top}" y2="${H - m.bottom}" stroke="#f0f0f0"/>`,
      `<text class="x-tick" x="${sx(t)}" y="${H - m.bottom + 16}" text-anchor="middle">${t}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="none" stroke="#888"/>`,
    `<text x="${(m.left + W - m.right) / 2}" y="${H - 10}" text-anchor="middle">step</text>`,
    `<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">loss (nats/token)</text>`);
  const d = points.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x)},${sy(y)}`).join('');
  out.push(`<path d="${d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`);
  if (points.length === 1) out.push(`<circle cx="${sx(points[0][0])}" cy="${sy(points[0][1])}" r="3" fill="#1f77b4"/>`);
  const ly = m.top + 14;
  out.push(`<line x1="${W - m.right - 90}" x2="${W - m.right - 70}" y1="${ly - 4}" y2="${ly - 4}" stroke="#1f77b4" stroke-width="1.5"/>`,
    `<text class="legend" x="${W - m.right - 64}" y="${ly}">train</text>`, '</svg>');
  return out.join('\n');
}

async function loadDefaultText(): Promise<string> {
  const res = await fetch(new URL('corpus.txt', document.baseURI));
  if (!res.ok) throw new MinigptError(`could not load corpus.txt (HTTP ${res.status}); rebuild with npm run build:web`);
  return res.text();
}

/** A training run in its own worker. */
interface Run {
  /** Asks the run to end after its current step (it still samples and reports 'stopped'). */
  stop(): void;
  /** Ends it at once. */
  kill(): void;
}

/** Starts train-worker.js on `text`; `onUpdate` gets every state it posts, or an error state if the worker itself fails. */
function startRun(o: PageOptions, text: string, dataName: string, onUpdate: (s: PageState) => void): Run {
  const worker = new Worker(new URL('train-worker.js', import.meta.url), { type: 'module', name: 'minigpt-train' });
  const finish = (s: PageState): void => {
    onUpdate(s);
    if (s.state !== 'loading' && s.state !== 'training') worker.terminate();
  };
  worker.addEventListener('message', (e: MessageEvent<PageState>) => finish(e.data));
  worker.addEventListener('error', (e: ErrorEvent) => {
    e.preventDefault();
    finish(emptyState(dataName, `the training worker failed: ${e.message || 'could not load train-worker.js'}`));
  });
  worker.postMessage({ type: 'start', options: o, text, dataName } satisfies ToTrainWorker);
  return {
    stop: () => worker.postMessage({ type: 'stop' } satisfies ToTrainWorker),
    kill: () => worker.terminate(),
  };
}

async function main(): Promise<void> {
  let running: Run | null = null;
  const start = async (pasted: string | null): Promise<void> => {
    // A restart ends the current run at once (terminating its worker ends the cpu backend's too).
    running?.kill();
    running = null;
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
      running = startRun(o, text, name, onUpdate);
    } catch (e) {
      running = null;
      onUpdate(emptyState('', (e as Error).message));
    }
  };
  el('stop').addEventListener('click', () => running?.stop());
  el('restart').addEventListener('click', () => {
    const pasted = el<HTMLTextAreaElement>('text').value;
    void start(pasted.trim() ? pasted : null);
  });
  if (new URLSearchParams(location.search).get('autostart') !== '0') await start(null);
}

if (typeof document !== 'undefined') void main();
