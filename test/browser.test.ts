/**
 * The browser page (web/, bundled into dist/web by scripts/build-web.mjs) trains a tiny model in
 * headless Chromium, in the page's training worker: once on the backend the page picks (WebGPU on
 * a hardware adapter; on a machine without a GPU Chromium's only adapter is SwiftShader, a software
 * one, so the cpu backend), once forced to WebGPU (SwiftShader there), once forced to the
 * reference backend, once forced to the cpu backend (wasm SIMD on nested Web Workers over shared
 * memory, which needs the server's cross-origin isolation headers). Needs the system
 * `chromium` (scripts/setup-webgpu.sh installs it) and playwright-core (a devDependency; it drives
 * that chromium, never a downloaded browser); skipped with a message when either is missing.
 * Then the page's own keeping: the last model in IndexedDB (offered after a reload, Restore,
 * Forget), the prompt before leaving a run, and cross-origin isolation through the service worker
 * on a server that sends no isolation headers (and no reload loop where that does not work).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Server } from 'node:http';
import {
  buildCharTokenizer, checkpointFromZip, checkpointToZip, countParams, createModel, createReferenceBackend, createRng, generate,
  hfExportFiles, initialWeights, loadCheckpoint, paramLayout, recordedClean, resolveConfig, setWeights, unzipFiles, zipFiles,
} from '../src/index.js';
import { endOfTextModel } from './support/end-of-text-model.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WEB = join(ROOT, 'dist', 'web');

/** Debian's chromium: the real binary (/usr/bin/chromium is a shell wrapper), or CHROMIUM_PATH. */
function findChromium(): string | null {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  return candidates.find((p): p is string => Boolean(p) && existsSync(p!)) ?? null;
}

interface Chromium {
  launch(o: { executablePath: string; headless: boolean; args: string[] }): Promise<Browser>;
}
interface Browser {
  newPage(): Promise<Page>;
  /** A context whose pages share storage, as the tabs of one browser do. */
  newContext(): Promise<{ newPage(): Promise<Page>; close(): Promise<void> }>;
  close(): Promise<void>;
}
interface Page {
  on(event: 'pageerror', fn: (e: Error) => void): void;
  on(event: 'console', fn: (m: { type(): string; text(): string }) => void): void;
  on(event: 'load', fn: () => void): void;
  addInitScript(script: string): Promise<void>;
  goto(url: string): Promise<unknown>;
  reload(): Promise<unknown>;
  waitForFunction(fn: string, arg: unknown, o: { timeout: number }): Promise<unknown>;
  waitForEvent(event: 'download', o: { timeout: number }): Promise<Download>;
  evaluate<T>(fn: string): Promise<T>;
  fill(selector: string, value: string): Promise<void>;
  press(selector: string, key: string): Promise<void>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  click(selector: string): Promise<void>;
  selectOption(selector: string, value: string): Promise<unknown>;
  setInputFiles(selector: string, files: string | { name: string; mimeType: string; buffer: Buffer }): Promise<void>;
  textContent(selector: string): Promise<string | null>;
  addScriptTag(o: { type?: string; content: string }): Promise<unknown>;
  close(): Promise<void>;
}
interface Download {
  suggestedFilename(): string;
  saveAs(path: string): Promise<void>;
}

interface PageState {
  state: string;
  dataName: string;
  backend: string;
  adapter: string;
  backendNote: string;
  config: Record<string, unknown> | null;
  parameters: number;
  characters: number;
  trainTokens: number;
  valTokens: number;
  losses: number[];
  valLosses: [number, number][];
  tokensPerSecond: number;
  sample: string;
  loadedFrom: string;
  hasModel: boolean;
  stopReason: string;
  error: string;
  generation: { state: string; prompt: string; text: string; error: string; note: string };
  download: { state: string; format: string; fileName: string; bytes: number; error: string };
  isolation: string;
  saved: {
    read: boolean;
    info: { savedAt: number; source: string; from: string; ended: string; backend: string; steps: number; plannedSteps: number; trainLoss: number | null; valLoss: number | null; bytes: number } | null;
    current: boolean;
    state: string;
    note: string;
  };
}

async function loadPlaywright(): Promise<Chromium | null> {
  try {
    const specifier = 'playwright-core';
    return ((await import(specifier)) as { chromium: Chromium }).chromium;
  } catch {
    return null;
  }
}

/**
 * A tiny model and a few steps: seconds on the reference backend, ~15 s on WebGPU through
 * SwiftShader. A validation loss at steps 4 and 8 (the default, every tenth of the run, would be
 * every step here).
 */
const STEPS = 8;
const TINY = `steps=${STEPS}&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&warmup=2&sample_tokens=12&eval_every=4`;

const chromiumPath = findChromium();
const chromium = await loadPlaywright();
const skip = !chromiumPath ? 'no chromium found (run scripts/setup-webgpu.sh, or set CHROMIUM_PATH)'
  : !chromium ? 'playwright-core is not installed (npm install)' : false;

/** What scripts/build-web.mjs writes: the page, its two workers, the cpu kernels, the corpus and the isolation service worker. */
const BUILT = ['index.html', 'bundle.js', 'train-worker.js', 'minigpt.js', 'worker.js', 'kernels-simd.wasm', 'kernels-relaxed.wasm', 'corpus.txt', 'coi-serviceworker.js'];

type ServeDir = (dir: string, port?: number, host?: string, options?: { isolation?: boolean }) => Promise<{ server: Server; url: string }>;

async function loadServeDir(): Promise<ServeDir> {
  return ((await import(pathToFileURL(join(ROOT, 'scripts', 'serve-web.mjs')).href)) as { serveDir: ServeDir }).serveDir;
}

async function ensureBuilt(): Promise<void> {
  if (BUILT.every((f) => existsSync(join(WEB, f)))) return;
  const { buildWeb } = (await import(pathToFileURL(join(ROOT, 'scripts', 'build-web.mjs')).href)) as { buildWeb(): Promise<unknown> };
  await buildWeb();
}

let session: Promise<{ browser: Browser; server: Server; url: string }> | undefined;

/** One server and one browser for all the tests here (closed in `after`). */
function open(): Promise<{ browser: Browser; server: Server; url: string }> {
  session ??= (async () => {
    await ensureBuilt();
    const { server, url } = await (await loadServeDir())(WEB);
    // Headless Chromium on Linux offers WebGPU only with --enable-unsafe-webgpu (SwiftShader without a GPU).
    const browser = await chromium!.launch({ executablePath: chromiumPath!, headless: true, args: ['--enable-unsafe-webgpu'] });
    return { browser, server, url };
  })();
  return session;
}

let scratch: string | undefined;
/** A temporary directory for the files the tests write and download (removed in `after`). */
async function scratchDir(): Promise<string> {
  scratch ??= await mkdtemp(join(tmpdir(), 'minigpt-browser-'));
  return scratch;
}

after(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
  if (!session) return;
  const { browser, server } = await session;
  await browser.close();
  server.close();
});

/** What the page shows, read from the DOM once the run has ended. */
interface Shown {
  backend: string;
  /** The line saying why `auto` did not take the fastest kind of backend ('' when hidden). */
  note: string;
  model: string;
  /** The loss chart's step-axis tick labels, and its legend. */
  xTicks: string[];
  legend: string[];
}

const SHOWN = `(() => {
  const text = (sel) => document.querySelector(sel)?.textContent ?? '';
  const all = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
  return {
    backend: text('#backend'), note: document.querySelector('#backend-note')?.hidden ? '' : text('#backend-note'), model: text('#model'),
    xTicks: all('#plot svg .xtick'), legend: all('#plot svg .legend-item text'),
  };
})()`;

/** This Chromium's WebGPU adapter, as the page's worker sees it (null: none), and whether it is a software one. */
const ADAPTER = `(async () => {
  const a = navigator.gpu ? await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }) : null;
  if (!a) return null;
  const i = a.info ?? {};
  const text = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
  return { text, software: Boolean(i.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe|warp|software|cpu/i.test(text) };
})()`;

/** Asks `browser` for its WebGPU adapter from the page itself (navigator.gpu needs a secure context, which about:blank is not). */
async function probeAdapter(browser: Browser): Promise<{ text: string; software: boolean } | null> {
  const { url } = await open();
  const probe = await browser.newPage();
  try {
    await probe.goto(`${url}?autostart=0`);
    return await probe.evaluate<{ text: string; software: boolean } | null>(ADAPTER);
  } finally {
    await probe.close();
  }
}

/** A page of the app, the errors it logged, how many times it has loaded, and a promise that rejects if it throws outside its own handling. */
interface OpenPage {
  page: Page;
  errors: string[];
  loads: { count: number };
  crashed: Promise<never>;
}

interface OpenOptions {
  /** Another browser than the shared one. */
  browser?: Browser;
  /** Another server's address than the shared one's. */
  base?: string;
  /** A script to run in the page before its own (page.addInitScript). */
  init?: string;
}

/** Opens the page with `query` in a fresh browser context (its own storage and service workers). */
async function openPage(query: string, { browser: inBrowser, base, init }: OpenOptions = {}): Promise<OpenPage> {
  const { browser, url } = await open();
  const page = await (inBrowser ?? browser).newPage();
  const errors: string[] = [];
  const loads = { count: 0 };
  // An exception outside the page's own handling (a module that fails to load) ends any wait at once.
  const crashed = new Promise<never>((_, reject) => page.on('pageerror', (e) => reject(new Error(`the page threw: ${e.message}`))));
  crashed.catch(() => {});
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('load', () => { loads.count++; });
  if (init) await page.addInitScript(init);
  await page.goto(`${base ?? url}?${query}`);
  return { page, errors, loads, crashed };
}

/** Waits until `condition` (a JavaScript expression in the page) holds; on a timeout or crash, says what window.minigpt was. */
async function waitFor({ page, crashed }: OpenPage, condition: string, timeout = 45_000): Promise<void> {
  await Promise.race([page.waitForFunction(condition, null, { timeout }), crashed]).catch(async (e: Error) => {
    const now = await page.evaluate<PageState | undefined>('window.minigpt').catch(() => undefined);
    throw new Error(`${e.message}\nwaiting for: ${condition}\nstate: ${JSON.stringify(now)}`);
  });
}

const RUN_ENDED = "['done', 'error', 'stopped'].includes(window.minigpt?.state)";

/**
 * Opens the page with `query`, does `before` (clicks...), and waits for the run to end; returns its
 * state, what the page shows, any errors the page logged, and whether the page was cross-origin isolated.
 */
async function trainInPage(query: string, before?: (page: Page) => Promise<void>, inBrowser?: Browser): Promise<{ state: PageState; shown: Shown; errors: string[]; isolated: boolean }> {
  const opened = await openPage(query, { browser: inBrowser });
  const { page, errors } = opened;
  try {
    await before?.(page);
    await waitFor(opened, RUN_ENDED);
    // The chart redraws at most every 250 ms while training, and once more when the run ends.
    return {
      state: await page.evaluate<PageState>('window.minigpt'), shown: await page.evaluate<Shown>(SHOWN), errors,
      isolated: await page.evaluate<boolean>('window.crossOriginIsolated'),
    };
  } finally {
    await page.close();
  }
}

/** Opens the page with `query`, waits for its run to finish, and hands the page and its state to `fn`. */
async function withTrainedPage(query: string, fn: (opened: OpenPage, state: PageState) => Promise<void>): Promise<void> {
  const opened = await openPage(query);
  try {
    await waitFor(opened, RUN_ENDED);
    const state = await opened.page.evaluate<PageState>('window.minigpt');
    assert.equal(state.state, 'done', `the run did not finish: ${state.error}`);
    await fn(opened, state);
  } finally {
    await opened.page.close();
  }
}

/**
 * The model line pluralizes (TINY has 2 heads, 1 layer) and the chart's step axis has whole-step
 * ticks; its legend lists the lines drawn: train, and val once there is a validation loss.
 */
function checkShown(shown: Shown, state: PageState): void {
  assert.match(shown.model, /\b2 heads, 1 layer, /, `model line: ${shown.model}`);
  assert.match(shown.model, new RegExp(`\\b${STEPS} steps\\b`), `model line: ${shown.model}`);
  assert.ok(shown.xTicks.length >= 2, `step ticks: ${JSON.stringify(shown.xTicks)}`);
  for (const t of shown.xTicks) assert.match(t, /^\d+$/, `step tick "${t}" is not a whole step`);
  assert.deepEqual(shown.legend, state.valLosses.length ? ['train', 'val'] : ['train'], 'the legend lists a line the chart does not draw');
}

function checkRun(state: PageState, errors: string[]): void {
  assert.deepEqual(errors, [], 'the page logged errors');
  assert.equal(state.state, 'done', `the run did not finish: ${state.error}`);
  assert.ok(state.backend.length > 0, 'the page reported no backend');
  assert.equal(state.losses.length, STEPS, 'one loss per step');
  for (const [i, l] of state.losses.entries()) assert.ok(Number.isFinite(l), `loss at step ${i + 1} is ${l}`);
  const first = state.losses[0], last = state.losses[state.losses.length - 1];
  assert.ok(last < first, `loss went from ${first} to ${last}; expected it to go down`);
  assert.ok(state.tokensPerSecond > 0, `tokens/s ${state.tokensPerSecond}`);
  assert.ok(state.sample.trim().length > 0, 'the sample is empty');
  // TINY's eval_every=4: validation losses after steps 4 and 8.
  assert.deepEqual(state.valLosses.map(([step]) => step), [4, STEPS], `validation losses: ${JSON.stringify(state.valLosses)}`);
  for (const [step, loss] of state.valLosses) assert.ok(Number.isFinite(loss), `val loss ${loss} at step ${step}`);
  assert.equal(state.hasModel, true, 'a finished run leaves its model to generate from');
}

let reference: PageState | null = null;

/**
 * Same seed, data and model as the reference run: each step's loss, and each validation loss, must
 * be the reference's up to f32 rounding. The kernels sum in other orders (SIMD lanes, tiles,
 * per-thread partials; fused multiply-add on relaxed SIMD): ~1e-6 relative per op, which eight
 * steps of AdamW carry to ~1e-5 on a loss of ~4; 1e-3 still catches a wrong kernel or a wrong step
 * (those move it by >1e-2).
 */
function checkMatchesReference(name: string, state: PageState): number {
  assert.ok(reference, 'no reference run to compare with');
  let worst = 0;
  for (const [i, l] of state.losses.entries()) {
    const d = Math.abs(l - reference.losses[i]);
    worst = Math.max(worst, d);
    assert.ok(d < 1e-3, `step ${i + 1}: ${name} loss ${l}, reference ${reference.losses[i]}`);
  }
  assert.deepEqual(state.valLosses.map(([step]) => step), reference.valLosses.map(([step]) => step), 'validation losses at other steps');
  for (const [i, [step, l]] of state.valLosses.entries()) {
    const d = Math.abs(l - reference.valLosses[i][1]);
    worst = Math.max(worst, d);
    assert.ok(d < 1e-3, `step ${step}: ${name} val loss ${l}, reference ${reference.valLosses[i][1]}`);
  }
  return worst;
}

test('browser page: trains a tiny model on the reference backend (the fallback without WebGPU)', { skip, timeout: 60_000 }, async (t) => {
  const { state, shown, errors } = await trainInPage(`${TINY}&backend=reference`);
  t.diagnostic(`backend ${state.backend}: loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s`);
  checkRun(state, errors);
  assert.equal(state.backend, 'reference');
  checkShown(shown, state);
  assert.equal(shown.note, '', 'a forced backend needs no explanation');
  reference = state;
});

test('browser page: trains a tiny model on the cpu backend (wasm SIMD on Web Workers, cross-origin isolated)', { skip, timeout: 60_000 }, async (t) => {
  // Two threads whatever the machine: the training worker plus one nested kernel worker.
  const { state, errors, isolated } = await trainInPage(`${TINY}&backend=cpu&threads=2`);
  assert.equal(isolated, true, 'the server did not make the page cross-origin isolated');
  checkRun(state, errors);
  assert.equal(state.backend, 'cpu');
  assert.match(state.adapter, /^2 threads, (relaxed )?SIMD$/);
  const worst = checkMatchesReference('cpu', state);
  t.diagnostic(`backend cpu (${state.adapter}): loss ${state.losses[0].toFixed(3)} -> ${state.losses.at(-1)!.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s, max |loss - reference| ${worst.toExponential(1)}`);
});

test('browser page: trains a tiny model on the backend it picks (WebGPU on a hardware adapter, else cpu; says why when it passes over a software adapter)', { skip, timeout: 60_000 }, async (t) => {
  const adapter = await probeAdapter((await open()).browser);
  const { state, shown, errors, isolated } = await trainInPage(TINY);
  t.diagnostic(`adapter ${adapter ? `${adapter.text}${adapter.software ? ' (software)' : ''}` : 'none'}; backend ${state.backend}${state.adapter ? ` (${state.adapter})` : ''}: loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s; note: ${shown.note || '-'}`);
  checkRun(state, errors);
  // The page is cross-origin isolated, so it never falls back to the reference backend here.
  assert.equal(isolated, true);
  assert.notEqual(state.backend, 'reference');
  if (adapter && !adapter.software) {
    assert.equal(state.backend, 'webgpu', 'a hardware adapter should win');
    assert.equal(shown.note, '');
  } else {
    // SwiftShader (a machine without a GPU): the cpu backend is ~30x faster, and the page says why it took it.
    assert.equal(state.backend, 'cpu', `auto took ${state.backend} over the cpu backend`);
    if (adapter) {
      assert.match(shown.note, /software/, `the page does not say why it passed over WebGPU: ${JSON.stringify(shown.note)}`);
      assert.equal(shown.note, state.backendNote);
      assert.equal(shown.note.split('\n').length, 1, 'the note is one line');
    }
  }
  assert.match(shown.backend, new RegExp(`^${state.backend} \\(`), `the page shows no adapter: ${shown.backend}`);
  checkShown(shown, state);
  if (reference) checkMatchesReference(state.backend, state);
});

test('browser page: ?backend=webgpu trains on WebGPU even on a software adapter', { skip, timeout: 60_000 }, async (t) => {
  const adapter = await probeAdapter((await open()).browser);
  if (!adapter) {
    t.skip('this Chromium offers no WebGPU adapter');
    return;
  }
  const { state, shown, errors } = await trainInPage(`${TINY}&backend=webgpu`);
  t.diagnostic(`backend ${state.backend} (${state.adapter}): loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s`);
  checkRun(state, errors);
  assert.equal(state.backend, 'webgpu');
  assert.equal(state.adapter.endsWith(', software'), adapter.software, `adapter shown as "${state.adapter}"`);
  assert.ok(shown.backend.startsWith('webgpu ('), `the page shows no adapter: ${shown.backend}`);
  assert.equal(shown.note, '');
  checkShown(shown, state);
  if (reference) checkMatchesReference('webgpu', state);
});

test('browser page: without WebGPU the page picks the cpu backend', { skip, timeout: 60_000 }, async (t) => {
  await open();
  // A second Chromium without --enable-unsafe-webgpu: on Linux that has no WebGPU adapter.
  const browser = await chromium!.launch({ executablePath: chromiumPath!, headless: true, args: [] });
  try {
    if (await probeAdapter(browser)) {
      t.skip('this Chromium offers WebGPU without --enable-unsafe-webgpu');
      return;
    }
    const { state, shown, errors } = await trainInPage(TINY, undefined, browser);
    checkRun(state, errors);
    assert.equal(state.backend, 'cpu');
    assert.equal(shown.note, '', 'no adapter was passed over');
    checkMatchesReference('cpu', state);
  } finally {
    await browser.close();
  }
});

test('browser page: the loss chart marks whole steps, and the model line counts in the singular too', { skip, timeout: 60_000 }, async () => {
  // 20 steps: a generic chart puts ticks at 2.5, 7.5...
  const { state, shown, errors } = await trainInPage(`${TINY.replace(`steps=${STEPS}`, 'steps=20').replace('&eval_every=4', '')}&backend=reference&sample_tokens=4`);
  assert.deepEqual(errors, []);
  assert.equal(state.state, 'done', state.error);
  assert.deepEqual(shown.xTicks, ['0', '5', '10', '15', '20']);
  assert.deepEqual(shown.legend, ['train', 'val']);
  // By default a validation loss every tenth of the run.
  assert.deepEqual(state.valLosses.map(([step]) => step), [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
  const one = await trainInPage('steps=1&batch=1&context=8&d_model=16&n_heads=1&n_layers=1&sample_tokens=4&backend=reference');
  assert.equal(one.state.state, 'done', one.state.error);
  assert.match(one.shown.model, /\b1 head, 1 layer, .*\b1 step, /, one.shown.model);
  for (const t of one.shown.xTicks) assert.match(t, /^\d+$/, `step tick "${t}"`);
});

/** The loss chart's size on screen, its step-axis tick labels' boxes, and how wide the page is. */
const CHART_BOXES = `(() => {
  const svg = document.querySelector('#plot svg');
  const boxes = [...document.querySelectorAll('#plot svg .xtick')].map((e) => e.getBoundingClientRect()).map((r) => ({ left: r.left, right: r.right, height: r.height }));
  return { width: svg?.getBoundingClientRect().width ?? 0, ticks: boxes, pageWidth: document.documentElement.scrollWidth };
})()`;

test('browser page: on a phone-wide screen the loss chart is drawn as wide as the screen, its text at full size', { skip, timeout: 60_000 }, async () => {
  await withTrainedPage(`${TINY.replace(`steps=${STEPS}`, 'steps=20').replace('&eval_every=4', '')}&backend=reference&sample_tokens=4`, async ({ page, errors }) => {
    // Narrowed after the run: the chart is redrawn for the new width (its drawn width, the viewBox,
    // not its box: the old drawing is scaled down at once, before the resize handler redraws it).
    await page.setViewportSize({ width: 375, height: 800 });
    await page.waitForFunction("(document.querySelector('#plot svg')?.viewBox.baseVal.width ?? 999) <= 375", null, { timeout: 5_000 });
    const chart = await page.evaluate<{ width: number; ticks: { left: number; right: number; height: number }[]; pageWidth: number }>(CHART_BOXES);
    assert.deepEqual(errors, []);
    assert.equal(chart.pageWidth, 375, 'the page scrolls sideways at 375 px');
    assert.ok(chart.width >= 300, `the chart is ${chart.width} px wide`);
    assert.ok(chart.ticks.length >= 2, 'step ticks');
    for (const t of chart.ticks) assert.ok(t.height >= 10, `a tick label is ${t.height} px tall: too small to read`);
    chart.ticks.forEach((t, i) => assert.ok(i === 0 || t.left > chart.ticks[i - 1].right, `tick labels ${i - 1} and ${i} overlap`));
  });
});

test('browser page: Stop ends the run after its current step and still shows a sample', { skip, timeout: 60_000 }, async () => {
  const { state, errors } = await trainInPage('steps=100000&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&sample_tokens=12&sample_every=0&backend=reference', async (page) => {
    await page.waitForFunction('(window.minigpt?.losses.length ?? 0) >= 2', null, { timeout: 30_000 });
    await page.click('#stop');
    // Until the run ends, the status says it is stopping (not "training ... left"), and Stop is off.
    assert.match((await page.textContent('#status')) ?? '', /^stopp(ing \(a last validation loss and sample first\)|ed): step /);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#stop').disabled"), true);
  });
  assert.deepEqual(errors, []);
  assert.equal(state.state, 'stopped');
  assert.ok(state.losses.length >= 2 && state.losses.length < 100000, `${state.losses.length} steps`);
  assert.ok(state.sample.trim().length > 0, 'the sample is empty after a stop');
  // 'stopped' is posted once the run has ended (its last validation loss and sample taken), with its model.
  assert.equal(state.hasModel, true);
});

test('browser page: a run whose loss stays non-finite stops, says it diverged, and keeps its model (the last good step\'s)', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage('steps=200&lr=1e30&warmup=0&min_lr=0&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&sample_tokens=12&sample_every=0&eval_every=0&backend=reference');
  const { page, errors } = opened;
  try {
    await waitFor(opened, RUN_ENDED);
    const state = await page.evaluate<PageState>('window.minigpt');
    assert.deepEqual(errors, []);
    assert.equal(state.state, 'stopped');
    // lr 1e30: the first update blows the weights up; every later step is skipped, and the fifth ends the run.
    assert.equal(state.losses.length, 6, `${state.losses.length} steps`);
    assert.ok(Number.isFinite(state.losses[0]) && state.losses.slice(1).every(Number.isNaN), JSON.stringify(state.losses));
    assert.equal(state.stopReason, 'training diverged: steps 2-6 had a non-finite loss or gradient, so the run stopped; the model is that of step 1; try a lower lr (now 1e+30)');
    assert.match((await page.textContent('#status')) ?? '', /^stopped: step 6\/200, .*; training diverged: steps 2-6 .*; the model is ready/);
    assert.equal(state.hasModel, true);
  } finally {
    await page.close();
  }
});

test('browser page: while a run trains, Train, Load and Restore wait (each would throw the run away); a link to a run on pasted text waits for the text', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage('steps=100000&batch=2&context=16&d_model=16&n_heads=2&n_layers=1&sample_every=0&backend=reference');
  const { page, errors } = opened;
  try {
    await page.waitForFunction('(window.minigpt?.losses.length ?? 0) >= 2', null, { timeout: 30_000 });
    for (const id of ['train', 'load-file']) assert.equal(await page.evaluate<boolean>(`document.querySelector('#${id}').disabled`), true, `#${id} during a run`);
    assert.equal(await page.evaluate<string>("document.querySelector('#train').title"), 'a run is training: Stop it first');
    // Enter in a settings field submits the form: it must not start over.
    const before = (await page.evaluate<PageState>('window.minigpt')).losses.length;
    await page.press('#f-seed', 'Enter');
    await page.waitForFunction(`(window.minigpt?.losses.length ?? 0) >= ${before + 2}`, null, { timeout: 30_000 });
    assert.equal((await page.evaluate<PageState>('window.minigpt')).state, 'training');
    await page.click('#stop');
    await waitFor(opened, "window.minigpt?.state === 'stopped'", 30_000);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#train').disabled"), false, 'Train after the run');
    // A run on pasted text: the link says so, and opening it waits for the text instead of training on the corpus.
    await page.fill('#text', 'she sells sea shells by the sea shore. '.repeat(20));
    await page.fill('#f-steps', '2');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.state === 'done'", 30_000);
    const search = await page.evaluate<string>('location.search');
    assert.match(search, /[?&]data=text(&|$)/);
    const state = await page.evaluate<PageState>('window.minigpt');
    assert.equal(state.characters, state.trainTokens + state.valTokens);
    const shared = await openPage(search.slice(1));
    try {
      await shared.page.waitForFunction("document.querySelector('#status')?.textContent?.startsWith(\"this link's run trained on pasted text\")", null, { timeout: 20_000 });
      assert.equal(await shared.page.evaluate<boolean>("document.querySelector('#data-text').checked"), true);
      assert.equal((await shared.page.evaluate<PageState>('window.minigpt')).losses.length, 0, 'it started on the corpus');
    } finally {
      await shared.page.close();
    }
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('browser page: a bad query parameter is reported on the page, not thrown away', { skip, timeout: 60_000 }, async () => {
  const { state } = await trainInPage('steps=abc');
  assert.equal(state.state, 'error');
  assert.match(state.error, /steps must be a number/);
  // Values the CLI refuses are refused before anything starts, as the CLI refuses them (before,
  // sample_tokens=-1 trained every step and then lost the model at the final sample).
  for (const [query, message] of [
    ['min_lr=-1', /^min_lr must be 0 or more \(got -1\)$/],
    ['lr=0.001&min_lr=0.01', /^min_lr 0\.01 must be at most lr \(0\.001\)$/],
    ['sample_tokens=-1', /^sample_tokens must be a whole number, 0 or more \(got -1\)$/],
    ['warmup=-5', /^warmup must be a whole number, 0 or more \(got -5\)$/],
    [`${TINY}&vocab_size=10`, /^vocab_size 10 is smaller than the text's \d+ tokens \(its \d+ characters and <\|endoftext\|>\); leave vocab_size empty/],
    ['batch=1000000000', /^batch 1000000000 of 256-token sequences needs ~\d+\.\d GiB for this model, more than the 4 GiB a tab holds/],
  ] as const) {
    const refused = (await trainInPage(query)).state;
    assert.equal(refused.state, 'error', query);
    assert.match(refused.error, message, query);
  }
});

test('browser page: trains on pasted text instead of the default corpus', { skip, timeout: 60_000 }, async () => {
  const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(40);
  const { state, errors } = await trainInPage(`${TINY}&backend=reference&autostart=0`, async (page) => {
    await page.fill('#text', text);
    await page.click('#train');
  });
  checkRun(state, errors);
  assert.equal(state.dataName, 'pasted text');
  // The character vocabulary comes from the pasted text, so the sample can only use its characters.
  const allowed = new Set(text);
  for (const ch of state.sample) assert.ok(allowed.has(ch), `sample character ${JSON.stringify(ch)} is not in the pasted text`);
});

/** The default corpus, as the page trains on it. */
const corpus = (): Promise<string> => readFile(join(WEB, 'corpus.txt'), 'utf8');

/** Types `prompt` and the sampling settings into the Generate panel, presses Generate and waits for it to end; returns window.minigpt.generation. */
async function generateInPage(opened: OpenPage, prompt: string, settings: Record<string, string> = {}): Promise<PageState['generation']> {
  const { page } = opened;
  await page.fill('#prompt', prompt);
  for (const [id, value] of Object.entries(settings)) await page.fill(`#gen-${id}`, value);
  await page.click('#generate');
  await waitFor(opened, "['done', 'stopped', 'error'].includes(window.minigpt?.generation.state)", 30_000);
  return (await page.evaluate<PageState>('window.minigpt')).generation;
}

test('browser page: the settings form sets up the run and the address bar; bad values and a missing file are one-line errors', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage('autostart=0');
  const { page, errors } = opened;
  try {
    const status = async (): Promise<string> => (await page.textContent('#status')) ?? '';
    await page.selectOption('#preset', 'tiny');
    assert.equal(await page.evaluate<string>("document.querySelector('#f-d-model').value"), '64', 'the tiny preset sets the model size');
    await page.selectOption('#f-backend', 'reference');
    for (const [id, value] of Object.entries({ steps: 'abc', batch: '4', context: '32', 'd-model': '32', 'n-heads': '2', 'n-layers': '1' })) await page.fill(`#f-${id}`, value);
    assert.equal(await page.evaluate<string>("document.querySelector('#preset').value"), 'custom');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.state === 'error'", 10_000);
    assert.match(await status(), /^error: steps must be a number \(got "abc"\)$/);
    // A negative seed, as the CLI's --seed refuses it.
    await page.fill('#f-steps', '6');
    await page.fill('#f-seed', '-1');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.error.startsWith('seed')", 10_000);
    assert.match(await status(), /^error: seed must be a whole number, 0 or more \(got -1\)$/);
    await page.fill('#f-seed', '1337');
    // The file source with no file chosen.
    await page.click('#data-file');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.error.startsWith('no file chosen')", 10_000);
    assert.equal((await status()).split('\n').length, 1);
    // A binary file, or one that is not UTF-8, is refused as the CLI refuses it (not trained on as U+FFFD).
    await page.setInputFiles('#text-file', { name: 'photo.txt', mimeType: 'text/plain', buffer: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 1, 2, 3]) });
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.error.startsWith('photo.txt looks like a binary file')", 10_000);
    await page.setInputFiles('#text-file', { name: 'latin1.txt', mimeType: 'text/plain', buffer: Buffer.from('caf\xe9 au lait. '.repeat(20), 'latin1') });
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.error.startsWith('latin1.txt is not UTF-8 text')", 10_000);
    // A narrow (phone) window: nothing is wider than it (the long code names in the download notes wrap).
    await page.setViewportSize({ width: 400, height: 800 });
    assert.deepEqual(await page.evaluate<number[]>('[document.documentElement.scrollWidth, document.documentElement.clientWidth]'), [400, 400], 'the page scrolls sideways at 400 px');
    await page.setViewportSize({ width: 1280, height: 720 });
    // A .txt file, cleaned like pasted text (\r\n becomes \n).
    const text = 'one fish, two fish, red fish, blue fish.\r\n'.repeat(30);
    await page.setInputFiles('#text-file', { name: 'fish.txt', mimeType: 'text/plain', buffer: Buffer.from(text) });
    await page.click('#train');
    // The page is still in the last error until the file is read and the run starts: wait for this run's end.
    await waitFor(opened, `window.minigpt?.dataName === 'file fish.txt' && ${RUN_ENDED}`);
    const state = await page.evaluate<PageState>('window.minigpt');
    assert.deepEqual(errors, []);
    assert.equal(state.state, 'done', state.error);
    assert.equal(state.backend, 'reference');
    assert.equal(state.losses.length, 6);
    assert.equal(state.dataName, 'file fish.txt');
    assert.equal(state.characters, text.replace(/\r/g, '').length);
    assert.equal(state.trainTokens + state.valTokens, state.characters, 'one token per character');
    assert.match((await page.textContent('#data')) ?? '', new RegExp(`^file fish\\.txt: ${state.characters.toLocaleString('en-US')} characters, `));
    const search = new URLSearchParams(await page.evaluate<string>('location.search'));
    // The file is not in the link; that it was a file is (opening the link asks for one).
    assert.deepEqual(Object.fromEntries(search), { backend: 'reference', steps: '6', batch: '4', d_model: '32', n_heads: '2', n_layers: '1', context: '32', data: 'file' });
  } finally {
    await page.close();
  }
});

test('browser page: after a run, generates from a prompt; a character the model does not know is a one-line error', { skip, timeout: 60_000 }, async () => {
  await withTrainedPage(`${TINY}&backend=reference`, async (opened) => {
    const { page, errors } = opened;
    // The status line says what to do next.
    assert.match((await page.textContent('#status')) ?? '', /^done: step \d+\/\d+, .*; the model is ready: type a prompt under Generate, or download it$/);
    // A prompt of the corpus' own characters, longer than the context (32): the model sees its end.
    const text = await corpus();
    const prompt = text.slice(0, 40);
    const g = await generateInPage(opened, prompt, { tokens: '24' });
    assert.equal(g.state, 'done', g.error);
    assert.ok(g.text.length > 0, 'nothing was generated');
    assert.equal(await page.textContent('#gen-output'), prompt + g.text, 'the output shows the prompt and what followed');
    assert.match(g.note, /the model sees only its last 32/);
    // Generate again, then an unknown character: the page says which, in one line, and stays usable.
    assert.ok(!text.includes('\u2603'));
    const bad = await generateInPage(opened, 'the \u2603', { tokens: '8' });
    assert.equal(bad.state, 'error');
    assert.match(bad.error, /^prompt: character "\u2603" .* is not in the tokenizer's vocabulary/);
    assert.equal(((await page.textContent('#gen-status')) ?? '').split('\n').length, 1);
    const again = await generateInPage(opened, 'the ', { tokens: '8', temperature: '0' });
    assert.equal(again.state, 'done', again.error);
    assert.ok(again.text.length > 0);
    // Ctrl+Enter in the prompt generates too.
    await page.evaluate("window.minigpt.generation.state = 'idle'");
    await page.press('#prompt', 'Control+Enter');
    await waitFor(opened, "window.minigpt?.generation.state === 'done'", 20_000);
    // Stop ends a long generation after its current token.
    await page.fill('#gen-tokens', '1000000');
    await page.click('#generate');
    await waitFor(opened, '(window.minigpt?.generation.text.length ?? 0) >= 20', 20_000);
    await page.click('#gen-stop');
    await waitFor(opened, "window.minigpt?.generation.state !== 'generating'", 10_000);
    const stopped = await page.evaluate<PageState>('window.minigpt');
    assert.equal(stopped.generation.state, 'stopped', stopped.generation.error);
    assert.ok(stopped.generation.text.length < 1_000_000);
    // A model config no run can take is an error before anything starts: the trained model stays.
    await page.fill('#f-n-heads', '3');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.state === 'error'", 10_000);
    const refused = await page.evaluate<PageState>('window.minigpt');
    assert.match(refused.error, /^n_heads \(3\) must divide d_model \(32\)/, 'the page names its own fields, not the CLI flags');
    assert.equal(refused.error.split('\n').length, 1);
    assert.equal(refused.hasModel, true);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#generate').disabled"), false, 'Generate is off after a refused run');
    // So is text too short for one sequence: refused before a new run replaces the model.
    await page.fill('#f-n-heads', '2');
    await page.fill('#text', 'hello');
    await page.click('#train');
    await waitFor(opened, "window.minigpt?.error.startsWith('the text has 4 training tokens')", 10_000);
    assert.equal((await page.evaluate<PageState>('window.minigpt')).hasModel, true);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#generate').disabled"), false, 'short text threw away the model');
    assert.deepEqual(errors, []);
  });
});

test('browser page: the downloads are a checkpoint the library loads, a GGUF file and a transformers zip', { skip, timeout: 60_000 }, async () => {
  await withTrainedPage(`${TINY}&backend=reference`, async ({ page, errors }, state) => {
    const dir = await scratchDir();
    const saved: Record<string, string> = {};
    for (const format of ['checkpoint', 'gguf', 'hf']) {
      const download = page.waitForEvent('download', { timeout: 20_000 });
      await page.click(`#download-${format}`);
      const d = await download;
      saved[format] = join(dir, d.suggestedFilename());
      await d.saveAs(saved[format]);
    }
    assert.deepEqual(Object.values(saved).map((p) => p.slice(dir.length + 1)), ['minigpt-model.zip', 'minigpt-model.gguf', 'minigpt-hf.zip']);
    const ckpt = await loadCheckpoint(saved.checkpoint);
    assert.deepEqual(ckpt.config, state.config, 'the checkpoint has another config than the page showed');
    assert.equal(countParams(ckpt.config), state.parameters);
    assert.equal(ckpt.weights.length, state.parameters);
    assert.ok(ckpt.weights.every(Number.isFinite));
    // The page cleans its text as the CLI cleans a file, and says so: the CLI cleans prompts alike.
    assert.deepEqual(recordedClean(ckpt), { pageBreaks: true });
    const gguf = await readFile(saved.gguf);
    assert.equal(gguf.subarray(0, 4).toString('latin1'), 'GGUF');
    const hf = await readFile(saved.hf);
    assert.equal(hf.subarray(0, 2).toString('latin1'), 'PK');
    const hfFiles = [...unzipFiles(hf, 'minigpt-hf.zip').keys()];
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) assert.ok(hfFiles.includes(`minigpt-hf/${f}`), `minigpt-hf.zip has ${hfFiles.join(', ')}`);
    const hfTokenizer = JSON.parse(new TextDecoder().decode(unzipFiles(hf, 'minigpt-hf.zip').get('minigpt-hf/tokenizer.json')));
    assert.equal(hfTokenizer.normalizer?.type, 'Sequence', 'the transformers tokenizer cleans text as the page did');
    assert.match((await page.textContent('#download-status')) ?? '', /^saved minigpt-hf\.zip \(/);
    assert.deepEqual(errors, []);
  });
});

test('browser page on WebGPU (SwiftShader here): generates after a run, and its checkpoint download is the model it generated with', { skip, timeout: 90_000 }, async (t) => {
  const adapter = await probeAdapter((await open()).browser);
  if (!adapter) {
    t.skip('this Chromium offers no WebGPU adapter');
    return;
  }
  await withTrainedPage(`${TINY}&backend=webgpu`, async (opened, state) => {
    const { page, errors } = opened;
    assert.equal(state.backend, 'webgpu');
    const g = await generateInPage(opened, 'the ', { tokens: '6', temperature: '0' });
    assert.equal(g.state, 'done', g.error);
    const download = page.waitForEvent('download', { timeout: 30_000 });
    await page.click('#download-checkpoint');
    const path = join(await scratchDir(), 'webgpu-model.zip');
    await (await download).saveAs(path);
    const ckpt = await loadCheckpoint(path);
    assert.deepEqual(ckpt.config, state.config);
    // The downloaded weights on Node's reference backend generate the page's greedy text (its first
    // tokens: the two backends round differently, so a near tie further on could go either way).
    const model = createModel(createReferenceBackend(), ckpt.config);
    setWeights(model, ckpt.weights);
    let expected = '';
    for await (const tok of generate({ model, tokenizer: ckpt.tokenizer }, 'the ', { maxTokens: 6, temperature: 0 })) expected += tok.text;
    assert.equal(g.text.slice(0, 3), expected.slice(0, 3), `page ${JSON.stringify(g.text)}, node ${JSON.stringify(expected)}`);
    assert.deepEqual(errors, []);
  });
});

test('the library in a browser (minigpt.js, the package\'s "browser" export): reads a checkpoint zip made in Node and generates what Node generates, on the reference and cpu backends, and writes one Node reads', { skip, timeout: 60_000 }, async () => {
  // Its characters cover the README example's prompt, "ROMEO:".
  const text = 'ROMEO: she sells sea shells by the sea shore. '.repeat(10);
  const tokenizer = buildCharTokenizer(text);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 2, n_layers: 2, context: 24 });
  const weights = initialWeights(config, paramLayout(config), createRng(11));
  const zip = await checkpointToZip({ config, weights, tokenizer });
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  let expected = '';
  for await (const t of generate({ model, tokenizer }, 'she sells ', { maxTokens: 30, temperature: 0 })) expected += t.text;

  const { browser, url } = await open();
  const page = await browser.newPage();
  const thrown: string[] = [];
  page.on('pageerror', (e) => thrown.push(e.message));
  try {
    // Any page of the server will do (this one's only failed request is the browser's own for a
    // favicon): the test imports the library into it as an app would; any failure to load the
    // kernels or the worker is an exception, returned as the error.
    await page.goto(`${url}corpus.txt`);
    const got = await page.evaluate<{ texts: Record<string, string>; zip: number[]; plain: string; refusals: string[]; tokens: number; error: string }>(`(async () => {
      try {
        const m = await import('/minigpt.js');
        const ckpt = await m.checkpointFromZip(new Uint8Array(${JSON.stringify([...zip])}), 'node-model.zip');
        const texts = {};
        // The cpu backend on one thread: a page's main thread may not block on other threads.
        for (const [name, backend] of [['reference', m.createReferenceBackend()], ['cpu', await m.createBackend('cpu', { threads: 1 })]]) {
          const model = m.createModel(backend, ckpt.config);
          m.setWeights(model, ckpt.weights);
          let out = '';
          for await (const t of m.generate({ model, tokenizer: ckpt.tokenizer }, 'she sells ', { maxTokens: 30, temperature: 0 })) out += t.text;
          texts[backend.name] = out;
        }
        // Without threads given, the cpu backend takes one on the main thread (it may not block on others).
        const plain = await m.createBackend('cpu');
        // What needs files is a MinigptError naming the call.
        const refusals = [];
        for (const call of [() => m.train({ text: 'abc' }), () => m.loadModel('x')]) {
          try { await call(); refusals.push('no error'); } catch (e) { refusals.push((e instanceof m.MinigptError ? 'MinigptError: ' : 'other: ') + e.message); }
        }
        // A long generation lets the page's event loop turn: an abort from a timer ends it.
        const model = m.createModel(m.createReferenceBackend(), ckpt.config);
        m.setWeights(model, ckpt.weights);
        const ac = new AbortController();
        setTimeout(() => ac.abort(), 50);
        let tokens = 0;
        for await (const t of m.generate({ model, tokenizer: ckpt.tokenizer }, 'she', { maxTokens: 1000000, signal: ac.signal })) tokens++;
        return { texts, zip: [...await m.checkpointToZip(ckpt)], plain: plain.name, refusals, tokens, error: '' };
      } catch (e) {
        return { texts: {}, zip: [], plain: '', refusals: [], tokens: 0, error: String(e && e.stack || e) };
      }
    })()`);
    assert.equal(got.error, '');
    assert.deepEqual(got.texts, { reference: expected, cpu: expected });
    assert.equal(got.plain, 'cpu');
    assert.equal(got.refusals.length, 2);
    for (const r of got.refusals) assert.match(r, /^MinigptError: (train|loadModel)\(\) reads or writes files, which needs Node; in a browser, work on bytes/);
    assert.ok(got.tokens > 0 && got.tokens < 1_000_000, `generated ${got.tokens} tokens: the timer's abort was not heard`);
    const back = await checkpointFromZip(new Uint8Array(got.zip), 'browser-model.zip');
    assert.deepEqual(back.config, config);
    assert.deepEqual([...back.weights], [...weights]);
    assert.equal(back.tokenizer.decode(back.tokenizer.encode(text)), text);

    // The README's browser example, as written but for where it imports from and fetches the zip.
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const example = /In a browser app[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example, 'README has no browser example');
    await page.evaluate(`document.body.textContent = ''`);
    await page.addScriptTag({
      type: 'module',
      content: example.replace("from 'minigpt'", "from '/minigpt.js'").replace("fetch('minigpt-model.zip')", `fetch('data:application/zip;base64,${Buffer.from(zip).toString('base64')}')`)
        + "\ndocument.body.dataset.done = '1';",
    });
    await page.waitForFunction('document.body.dataset.done === "1"', null, { timeout: 30_000 }).catch((e: Error) => {
      throw new Error(`the README example did not finish: ${thrown.join('; ') || e.message}`);
    });
    const shown = await page.evaluate<string>('document.body.textContent');
    assert.ok(shown.length > 0, 'the README example wrote nothing');
  } finally {
    await page.close();
  }
});

test('browser page: loads a checkpoint zip made in Node and generates what Node generates; a bad file is a one-line error', { skip, timeout: 60_000 }, async () => {
  // A tiny model with random weights: greedy decoding still picks one definite token at each step.
  // A GELU MLP, unlike the page's own runs: llama.cpp has no such architecture, so its GGUF download is refused.
  const text = 'she sells sea shells by the sea shore. '.repeat(10);
  const tokenizer = buildCharTokenizer(text);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 2, n_layers: 2, context: 24, mlp: 'gelu' });
  const weights = initialWeights(config, paramLayout(config), createRng(7));
  const path = join(await scratchDir(), 'node-model.zip');
  await writeFile(path, await checkpointToZip({ config, weights, tokenizer }));
  assert.ok((await checkpointFromZip(await readFile(path), path)).weights.length === weights.length);
  const prompt = 'she sells ';
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  let expected = '';
  for await (const t of generate({ model, tokenizer }, prompt, { maxTokens: 40, temperature: 0 })) expected += t.text;

  const opened = await openPage('autostart=0&backend=reference');
  const { page, errors } = opened;
  try {
    await page.setInputFiles('#load-file', { name: 'notes.zip', mimeType: 'application/zip', buffer: Buffer.from('not a zip at all') });
    await waitFor(opened, "window.minigpt?.state === 'error'", 10_000);
    const bad = await page.evaluate<PageState>('window.minigpt');
    assert.match(bad.error, /notes\.zip/);
    assert.equal(bad.error.split('\n').length, 1, bad.error);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#generate').disabled"), true, 'Generate without a model');

    await page.setInputFiles('#load-file', path);
    await waitFor(opened, "window.minigpt?.state === 'loaded'", 20_000);
    const state = await page.evaluate<PageState>('window.minigpt');
    assert.deepEqual(state.config, config);
    assert.equal(state.parameters, countParams(config));
    assert.equal(state.backend, 'reference');
    assert.match((await page.textContent('#model')) ?? '', /; loaded from node-model\.zip$/);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#sample-heading').hidden"), true, 'no "Sample at the end" heading for a loaded model');
    // A loaded checkpoint is kept in the browser, as a trained model is (the bad file was not).
    await waitFor(opened, "window.minigpt?.saved.current === true || window.minigpt?.saved.state === 'error'", 10_000);
    const kept = (await page.evaluate<PageState>('window.minigpt')).saved;
    assert.equal(kept.state, 'idle', kept.note);
    assert.equal(kept.info?.source, 'loaded');
    assert.equal(kept.info?.from, 'node-model.zip');
    assert.match((await page.textContent('#saved-model')) ?? '', /^Kept in this browser: d_model 32, 2 heads, 2 layers, context 24 \(0\.\d\dM parameters\), loaded from node-model\.zip, /);
    const g = await generateInPage(opened, prompt, { tokens: '40', temperature: '0' });
    assert.equal(g.state, 'done', g.error);
    assert.ok(expected.length > 0);
    assert.equal(g.text, expected, 'the page generated other text than Node from the same checkpoint');
    // A file that is no zip (a GGUF download) is refused next to the Load input, and the loaded model stays.
    await page.setInputFiles('#load-file', { name: 'model.gguf', mimeType: 'application/octet-stream', buffer: Buffer.from('GGUF\x03\0\0\0') });
    await waitFor(opened, "window.minigpt?.state === 'error'", 10_000);
    assert.match((await page.textContent('#load-status')) ?? '', /^error: model\.gguf is a GGUF file \(llama\.cpp\), which this page cannot load: /);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#generate').disabled"), false, 'a refused file threw away the loaded model');
    assert.equal(await page.textContent('#data'), 'none here: the model was trained elsewhere (node-model.zip)', 'the data line still describes the model kept');
    // A zip that is no checkpoint (a transformers folder) is refused the same way.
    await page.setInputFiles('#load-file', { name: 'minigpt-hf.zip', mimeType: 'application/zip', buffer: Buffer.from(zipFiles(hfExportFiles({ config, weights, tokenizer }), 'minigpt-hf')) });
    await waitFor(opened, "document.querySelector('#load-status')?.textContent?.includes('minigpt-hf.zip') === true", 10_000);
    assert.match((await page.textContent('#load-status')) ?? '', /^error: minigpt-hf\.zip: minigpt-hf\/config\.json is not a minigpt checkpoint config .*it looks like a Hugging Face model directory/);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#generate').disabled"), false, 'a zip without a checkpoint threw away the loaded model');
    await page.click('#download-gguf');
    await waitFor(opened, "window.minigpt?.download.state === 'error'", 10_000);
    assert.match((await page.textContent('#download-status')) ?? '', /^error: a GELU-MLP model cannot be exported to GGUF: [^\n]*$/);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('browser page: generation ends where the model samples <|endoftext|>, and says so', { skip, timeout: 60_000 }, async () => {
  const m = endOfTextModel();
  const path = join(await scratchDir(), 'ends.zip');
  await writeFile(path, await checkpointToZip({ config: m.config, weights: m.weights, tokenizer: m.tokenizer }));
  const opened = await openPage('autostart=0&backend=reference');
  const { page, errors } = opened;
  try {
    await page.setInputFiles('#load-file', path);
    await waitFor(opened, "window.minigpt?.state === 'loaded'", 20_000);
    const g = await generateInPage(opened, 'p', { tokens: '10', temperature: '0' });
    assert.equal(g.state, 'done', g.error);
    assert.equal(g.text, 'a');
    assert.equal(await page.textContent('#gen-status'), 'done: 1 character; the model ended the text (<|endoftext|>)');
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

// ---- Keeping the last model, leaving a run, isolation without headers ----

/** Waits until the page has read what the browser keeps (the offer, and the autostart decision, follow at once). */
const SAVED_READ = 'window.minigpt?.saved.read === true';
/** Waits until the model of a run that ended (or a loaded checkpoint) is kept, or keeping it failed. */
const KEPT_OR_FAILED = "window.minigpt?.saved.current === true || window.minigpt?.saved.state === 'error'";

test('browser page: the last model is kept in the browser; a reload offers it without a new run, Restore generates what it did before, Forget removes it', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage(`${TINY}&backend=reference`);
  const { page, errors } = opened;
  const { url } = await open();
  try {
    await waitFor(opened, RUN_ENDED);
    await waitFor(opened, KEPT_OR_FAILED, 10_000);
    const trained = await page.evaluate<PageState>('window.minigpt');
    assert.equal(trained.state, 'done', trained.error);
    assert.equal(trained.saved.state, 'idle', trained.saved.note);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#restore').hidden"), true, 'Restore offered for the model already in the page');
    const prompt = (await corpus()).slice(0, 12);
    const before = await generateInPage(opened, prompt, { tokens: '40', temperature: '0' });
    assert.equal(before.state, 'done', before.error);
    assert.ok(before.text.length > 0);

    // A reload (the address names the run): the kept model is offered, and the run does not start over it.
    await page.reload();
    await waitFor(opened, SAVED_READ, 10_000);
    const offered = await page.evaluate<PageState>('window.minigpt');
    assert.equal(offered.state, 'loading', 'a reload started a run over the kept model');
    assert.deepEqual(offered.losses, []);
    assert.match((await page.textContent('#status')) ?? '', /^ready: restore your last model/);
    const info = offered.saved.info;
    assert.ok(info, 'no model is offered after the reload');
    assert.equal(info.source, 'trained');
    assert.equal(info.from, trained.dataName);
    assert.equal(info.steps, STEPS);
    assert.equal(info.trainLoss, trained.losses.at(-1));
    assert.equal(info.valLoss, trained.valLosses.at(-1)![1]);
    assert.ok(Date.now() - info.savedAt < 60_000 && info.bytes > 0, `savedAt ${info.savedAt}, ${info.bytes} bytes`);
    const offer = (await page.textContent('#saved-model')) ?? '';
    assert.match(offer, /^Your last model: d_model 32, 2 heads, 1 layer, context 32 \(0\.\d\dM parameters\), trained on /);
    assert.ok(offer.includes(`trained on ${trained.dataName} for ${STEPS} steps on the reference backend, `), offer);
    assert.ok(offer.endsWith(`: loss ${trained.losses.at(-1)!.toFixed(4)}, val loss ${trained.valLosses.at(-1)![1].toFixed(4)}`), offer);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#saved-offer').hidden"), false);

    // Restore: loaded as a checkpoint .zip is, then greedy generation gives the same text as before the reload.
    await page.click('#restore');
    await waitFor(opened, "window.minigpt?.state === 'loaded' || window.minigpt?.state === 'error'", 20_000);
    const restored = await page.evaluate<PageState>('window.minigpt');
    assert.equal(restored.state, 'loaded', restored.error);
    assert.equal(restored.backend, 'reference');
    assert.deepEqual(restored.config, trained.config);
    assert.equal(restored.saved.current, true);
    assert.match((await page.textContent('#model')) ?? '', new RegExp(`; trained here for ${STEPS} steps, kept in this browser$`));
    assert.match((await page.textContent('#saved-model')) ?? '', /^Kept in this browser: /);
    const after = await generateInPage(opened, prompt, { tokens: '40', temperature: '0' });
    assert.equal(after.state, 'done', after.error);
    assert.equal(after.text, before.text, 'the restored model generates other text than before the reload');

    // A bare address (no run named) with a kept model: offered, and the default run does not start.
    await page.goto(url);
    await waitFor(opened, SAVED_READ, 10_000);
    assert.equal((await page.evaluate<PageState>('window.minigpt')).saved.info?.savedAt, info.savedAt);
    assert.match((await page.textContent('#status')) ?? '', /^ready: restore your last model/);

    // Forget: gone now, and after another load.
    await page.click('#forget');
    await waitFor(opened, 'window.minigpt?.saved.info === null', 10_000);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#saved-offer').hidden"), true);
    await page.goto(`${url}?autostart=0`);
    await waitFor(opened, SAVED_READ, 10_000);
    const forgotten = await page.evaluate<PageState>('window.minigpt');
    assert.equal(forgotten.saved.info, null, 'the model is still offered after Forget');
    assert.equal(forgotten.saved.state, 'idle', forgotten.saved.note);
    assert.equal(await page.evaluate<boolean>("document.querySelector('#saved-offer').hidden"), true);
    // A first visit to the bare address (nothing kept) starts nothing either: the form waits for Train.
    await page.goto(url);
    await waitFor(opened, SAVED_READ, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const firstVisit = await page.evaluate<PageState>('window.minigpt');
    assert.equal(firstVisit.state, 'loading', 'a bare first visit started a run');
    assert.deepEqual(firstVisit.losses, []);
    assert.match((await page.textContent('#status')) ?? '', /^ready: choose the settings and the data, then press Train/);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('browser page: a model trained with lowercase cleaning lowercases prompts, loaded and after Restore (the kept zip records no training)', { skip, timeout: 60_000 }, async () => {
  const tokenizer = buildCharTokenizer('she sells sea shells by the sea shore. ');
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 1, n_layers: 1, context: 16 });
  const weights = initialWeights(config, paramLayout(config), createRng(3));
  const n = weights.length;
  // A training checkpoint as `train --clean lowercase` writes one: its trainer state records the cleaning.
  const path = join(await scratchDir(), 'lower.zip');
  await writeFile(path, await checkpointToZip({
    config, weights, tokenizer,
    training: { step: 1, m: new Float32Array(n), v: new Float32Array(n), trainer: { data: null, clean: { lowercase: true } } },
  }));
  const opened = await openPage('autostart=0&backend=reference');
  const { page, errors } = opened;
  try {
    await page.setInputFiles('#load-file', path);
    await waitFor(opened, "window.minigpt?.state === 'loaded' || window.minigpt?.state === 'error'", 20_000);
    assert.equal((await page.evaluate<PageState>('window.minigpt')).state, 'loaded');
    await waitFor(opened, KEPT_OR_FAILED, 10_000);
    const loaded = await generateInPage(opened, 'She Sells ', { tokens: '10', temperature: '0' });
    assert.equal(loaded.state, 'done', loaded.error);
    await page.reload();
    await waitFor(opened, SAVED_READ, 10_000);
    await page.click('#restore');
    await waitFor(opened, "window.minigpt?.state === 'loaded' || window.minigpt?.state === 'error'", 20_000);
    assert.equal((await page.evaluate<PageState>('window.minigpt')).state, 'loaded');
    const restored = await generateInPage(opened, 'She Sells ', { tokens: '10', temperature: '0' });
    assert.equal(restored.state, 'done', `after Restore: ${restored.error}`);
    assert.equal(restored.text, loaded.text);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

/** Dispatches a cancelable beforeunload in the page, as leaving it does: true when the page asks to stay. */
const LEAVING_PREVENTED = "(() => { const e = new Event('beforeunload', { cancelable: true }); window.dispatchEvent(e); return e.defaultPrevented; })()";

test('browser page: two tabs: a model one keeps is offered in the other at once, and Forget in one clears the other', { skip, timeout: 60_000 }, async () => {
  const { browser, url } = await open();
  const tabs = await browser.newContext();
  try {
    const first = await tabs.newPage(), second = await tabs.newPage();
    const errors: string[] = [];
    for (const p of [first, second]) p.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await first.goto(`${url}?autostart=0`);
    await first.waitForFunction(SAVED_READ, null, { timeout: 10_000 });
    assert.equal(await first.evaluate<unknown>('window.minigpt.saved.info'), null);
    // The second tab trains and keeps its model: the first offers it (it read nothing when it opened).
    await second.goto(`${url}?${TINY}&backend=reference`);
    await second.waitForFunction('window.minigpt?.saved.current === true', null, { timeout: 30_000 });
    await first.waitForFunction('window.minigpt?.saved.info !== null', null, { timeout: 10_000 });
    assert.match((await first.textContent('#saved-model')) ?? '', /^Your last model: d_model 32, 2 heads, 1 layer, /);
    // Forget in the first: the second no longer says its model is kept.
    await first.click('#forget');
    await second.waitForFunction('window.minigpt?.saved.info === null', null, { timeout: 10_000 });
    assert.equal(await second.evaluate<boolean>("document.querySelector('#saved-offer').hidden"), true);
    assert.deepEqual(errors, []);
  } finally {
    await tabs.close();
  }
});

test('browser page: leaving the page asks first while a run trains, and not once it has ended', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage('steps=100000&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&sample_tokens=12&sample_every=0&backend=reference');
  const { page, errors } = opened;
  try {
    await waitFor(opened, '(window.minigpt?.losses.length ?? 0) >= 1', 30_000);
    assert.equal(await page.evaluate<boolean>(LEAVING_PREVENTED), true, 'leaving a training run does not ask');
    await page.click('#stop');
    await waitFor(opened, RUN_ENDED);
    assert.equal((await page.evaluate<PageState>('window.minigpt')).state, 'stopped');
    assert.equal(await page.evaluate<boolean>(LEAVING_PREVENTED), false, 'leaving asks after the run ended');
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('browser page: without IndexedDB the model is not kept, the page says so in one line, and it still generates', { skip, timeout: 60_000 }, async () => {
  const opened = await openPage(`${TINY}&backend=reference`, { init: "Object.defineProperty(window, 'indexedDB', { value: undefined, configurable: true });" });
  const { page, errors } = opened;
  try {
    await waitFor(opened, RUN_ENDED);
    await waitFor(opened, KEPT_OR_FAILED, 10_000);
    const state = await page.evaluate<PageState>('window.minigpt');
    assert.equal(state.state, 'done', state.error);
    assert.equal(state.saved.state, 'error');
    assert.equal(state.saved.current, false);
    assert.match(state.saved.note, /no IndexedDB/);
    const shown = (await page.textContent('#saved-status')) ?? '';
    assert.match(shown, /^error: this browser gives the page no IndexedDB/);
    assert.equal(shown.split('\n').length, 1);
    const g = await generateInPage(opened, 'the ', { tokens: '8', temperature: '0' });
    assert.equal(g.state, 'done', g.error);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('browser page: on a server without the isolation headers, the service worker makes the page cross-origin isolated after one reload, and auto trains on cpu', { skip, timeout: 60_000 }, async () => {
  // minigpt web's server sends the headers: no service worker, no reload.
  const direct = await openPage('autostart=0');
  try {
    await waitFor(direct, SAVED_READ, 10_000);
    assert.equal(await direct.page.evaluate<boolean>('window.crossOriginIsolated'), true);
    assert.equal(await direct.page.evaluate<number>('navigator.serviceWorker.getRegistrations().then((r) => r.length)'), 0, 'a service worker was registered where the headers come from the server');
    assert.equal(direct.loads.count, 1);
  } finally {
    await direct.page.close();
  }
  const adapter = await probeAdapter((await open()).browser);
  const plain = await (await loadServeDir())(WEB, 0, '127.0.0.1', { isolation: false });
  const opened = await openPage(`${TINY}&backend=auto`, { base: plain.url });
  const { page, errors } = opened;
  try {
    await waitFor(opened, `window.crossOriginIsolated === true && ${RUN_ENDED}`);
    const state = await page.evaluate<PageState>('window.minigpt');
    checkRun(state, errors);
    // auto: WebGPU on a hardware adapter; else (SwiftShader or none) the cpu backend, which needs the isolation.
    assert.equal(state.backend, adapter && !adapter.software ? 'webgpu' : 'cpu');
    assert.equal(state.isolation, '');
    assert.equal(opened.loads.count, 2, `the page loaded ${opened.loads.count} times`);
    assert.equal(await page.evaluate<boolean>('navigator.serviceWorker.controller !== null'), true);
    if (reference) checkMatchesReference(state.backend, state);
  } finally {
    await page.close();
    plain.server.close();
  }
});

test('browser page: where the service worker does not isolate the page, it reloads once at most and the backend note says why', { skip, timeout: 60_000 }, async () => {
  // A copy of the page whose service worker passes every response through without the headers.
  const dir = join(await scratchDir(), 'no-isolation');
  await cp(WEB, dir, { recursive: true });
  await writeFile(join(dir, 'coi-serviceworker.js'), [
    "self.addEventListener('install', () => self.skipWaiting());",
    "self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));",
    "self.addEventListener('fetch', () => {});",
  ].join('\n'));
  const plain = await (await loadServeDir())(dir, 0, '127.0.0.1', { isolation: false });
  try {
    const opened = await openPage('autostart=0&backend=reference', { base: plain.url });
    try {
      await waitFor(opened, `${SAVED_READ} && window.minigpt.isolation !== ''`, 20_000);
      // Time for a second reload, if there were one.
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(opened.loads.count, 2, `the page loaded ${opened.loads.count} times`);
      assert.equal(await opened.page.evaluate<boolean>('window.crossOriginIsolated'), false);
      const why = (await opened.page.evaluate<PageState>('window.minigpt')).isolation;
      assert.match(why, /still not isolated after reloading through the service worker/);
      assert.equal(await opened.page.textContent('#backend-note'), `not cross-origin isolated, so no cpu backend: ${why}`);
      // A forced cpu backend says why it cannot be, in one line.
      await opened.page.selectOption('#f-backend', 'cpu');
      await opened.page.setInputFiles('#load-file', { name: 'model.zip', mimeType: 'application/zip', buffer: Buffer.from(await tinyCheckpointZip()) });
      await waitFor(opened, "window.minigpt?.state === 'error'", 10_000);
      const refused = await opened.page.evaluate<PageState>('window.minigpt');
      assert.ok(refused.error.endsWith(`and this one is not: ${why}`), refused.error);
      assert.deepEqual(opened.errors, []);
    } finally {
      await opened.page.close();
    }
    // Without the service worker file: registering fails, so no reload at all.
    await rm(join(dir, 'coi-serviceworker.js'));
    const missing = await openPage('autostart=0', { base: plain.url });
    try {
      await waitFor(missing, `${SAVED_READ} && window.minigpt.isolation !== ''`, 20_000);
      assert.equal(missing.loads.count, 1);
      assert.match((await missing.page.evaluate<PageState>('window.minigpt')).isolation, /^the service worker that adds the COOP\/COEP headers this server does not send failed \(.+\)$/);
    } finally {
      await missing.page.close();
    }
  } finally {
    plain.server.close();
  }
});

/** A checkpoint .zip of a tiny model with random weights. */
async function tinyCheckpointZip(): Promise<Uint8Array> {
  const tokenizer = buildCharTokenizer('abcdefgh ');
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 16, n_heads: 1, n_layers: 1, context: 8 });
  return checkpointToZip({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer });
}
