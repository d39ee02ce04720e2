/**
 * The browser page: trains the default model (or pasted text) and shows the loss per step,
 * tokens/s and a generated sample. The training itself (web/run.ts) runs in a dedicated Web
 * Worker (web/train-worker.ts, bundled as train-worker.js), which posts its state after every
 * step; this renders it. See web/run.ts for the backend choice and the query string.
 * State is mirrored on `window.minigpt` for tests.
 */
import { MinigptError, cleanText, renderLossPlot } from '../src/index.js';
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
