/**
 * The browser page (web/, bundled into dist/web by scripts/build-web.mjs) trains a tiny model in
 * headless Chromium, in the page's training worker: once on the backend the page picks (WebGPU on
 * a hardware adapter; on a machine without a GPU Chromium's only adapter is SwiftShader, a software
 * one, so the cpu backend), once forced to WebGPU (SwiftShader there), once forced to the
 * reference backend, once forced to the cpu backend (wasm SIMD on nested Web Workers over shared
 * memory, which needs the server's cross-origin isolation headers). Needs the system
 * `chromium` (scripts/setup-webgpu.sh installs it) and playwright-core (a devDependency; it drives
 * that chromium, never a downloaded browser); skipped with a message when either is missing.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Server } from 'node:http';

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
  close(): Promise<void>;
}
interface Page {
  on(event: 'pageerror', fn: (e: Error) => void): void;
  on(event: 'console', fn: (m: { type(): string; text(): string }) => void): void;
  goto(url: string): Promise<unknown>;
  waitForFunction(fn: string, arg: unknown, o: { timeout: number }): Promise<unknown>;
  evaluate<T>(fn: string): Promise<T>;
  fill(selector: string, value: string): Promise<void>;
  click(selector: string): Promise<void>;
  close(): Promise<void>;
}

interface PageState {
  state: string;
  dataName: string;
  backend: string;
  adapter: string;
  backendNote: string;
  losses: number[];
  tokensPerSecond: number;
  sample: string;
  error: string;
}

async function loadPlaywright(): Promise<Chromium | null> {
  try {
    const specifier = 'playwright-core';
    return ((await import(specifier)) as { chromium: Chromium }).chromium;
  } catch {
    return null;
  }
}

/** A tiny model and a few steps: seconds on the reference backend, ~15 s on WebGPU through SwiftShader. */
const STEPS = 8;
const TINY = `steps=${STEPS}&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&warmup=2&sample_tokens=12`;

const chromiumPath = findChromium();
const chromium = await loadPlaywright();
const skip = !chromiumPath ? 'no chromium found (run scripts/setup-webgpu.sh, or set CHROMIUM_PATH)'
  : !chromium ? 'playwright-core is not installed (npm install)' : false;

/** What scripts/build-web.mjs writes: the page, its two workers, the cpu kernels and the corpus. */
const BUILT = ['index.html', 'bundle.js', 'train-worker.js', 'worker.js', 'kernels-simd.wasm', 'kernels-relaxed.wasm', 'corpus.txt'];

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
    const { serveDir } = (await import(pathToFileURL(join(ROOT, 'scripts', 'serve-web.mjs')).href)) as {
      serveDir(dir: string, port?: number): Promise<{ server: Server; url: string }>;
    };
    const { server, url } = await serveDir(WEB);
    // Headless Chromium on Linux offers WebGPU only with --enable-unsafe-webgpu (SwiftShader without a GPU).
    const browser = await chromium!.launch({ executablePath: chromiumPath!, headless: true, args: ['--enable-unsafe-webgpu'] });
    return { browser, server, url };
  })();
  return session;
}

after(async () => {
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
    xTicks: all('#plot svg .x-tick'), legend: all('#plot svg .legend'),
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

/**
 * Opens the page with `query`, does `before` (clicks...), and waits for the run to end; returns its
 * state, what the page shows, any errors the page logged, and whether the page was cross-origin isolated.
 */
async function trainInPage(query: string, before?: (page: Page) => Promise<void>, inBrowser?: Browser): Promise<{ state: PageState; shown: Shown; errors: string[]; isolated: boolean }> {
  const { browser, url } = await open();
  const page = await (inBrowser ?? browser).newPage();
  const errors: string[] = [];
  // An exception outside the page's own handling (a module that fails to load) ends the wait at once.
  const crashed = new Promise<never>((_, reject) => page.on('pageerror', (e) => reject(new Error(`the page threw: ${e.message}`))));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  try {
    await page.goto(`${url}?${query}`);
    await before?.(page);
    const ended = page.waitForFunction("['done', 'error', 'stopped'].includes(window.minigpt?.state)", null, { timeout: 45_000 });
    await Promise.race([ended, crashed]).catch(async (e: Error) => {
      const now = await page.evaluate<PageState | undefined>('window.minigpt');
      throw new Error(`${e.message}\nstate: ${JSON.stringify(now)}`);
    });
    // The chart redraws at most every 250 ms while training, and once more when the run ends.
    return {
      state: await page.evaluate<PageState>('window.minigpt'), shown: await page.evaluate<Shown>(SHOWN), errors,
      isolated: await page.evaluate<boolean>('window.crossOriginIsolated'),
    };
  } finally {
    await page.close();
  }
}

/** The model line pluralizes (TINY has 2 heads, 1 layer) and the chart's step axis has whole-step ticks and only drawn lines in its legend. */
function checkShown(shown: Shown): void {
  assert.match(shown.model, /\b2 heads, 1 layer, /, `model line: ${shown.model}`);
  assert.match(shown.model, new RegExp(`\\b${STEPS} steps\\b`), `model line: ${shown.model}`);
  assert.ok(shown.xTicks.length >= 2, `step ticks: ${JSON.stringify(shown.xTicks)}`);
  for (const t of shown.xTicks) assert.match(t, /^\d+$/, `step tick "${t}" is not a whole step`);
  assert.deepEqual(shown.legend, ['train'], 'the legend lists a line the chart does not draw');
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
}

let referenceLosses: number[] | null = null;

/**
 * Same seed, data and model as the reference run: each step's loss must be the reference's up to
 * f32 rounding. The kernels sum in other orders (SIMD lanes, tiles, per-thread partials; fused
 * multiply-add on relaxed SIMD): ~1e-6 relative per op, which eight steps of AdamW carry to
 * ~1e-5 on a loss of ~4; 1e-3 still catches a wrong kernel or a wrong step (those move it by >1e-2).
 */
function checkMatchesReference(name: string, losses: number[]): number {
  assert.ok(referenceLosses, 'no reference run to compare with');
  let worst = 0;
  for (const [i, l] of losses.entries()) {
    const d = Math.abs(l - referenceLosses[i]);
    worst = Math.max(worst, d);
    assert.ok(d < 1e-3, `step ${i + 1}: ${name} loss ${l}, reference ${referenceLosses[i]}`);
  }
  return worst;
}

test('browser page: trains a tiny model on the reference backend (the fallback without WebGPU)', { skip, timeout: 60_000 }, async (t) => {
  const { state, shown, errors } = await trainInPage(`${TINY}&backend=reference`);
  t.diagnostic(`backend ${state.backend}: loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s`);
  checkRun(state, errors);
  assert.equal(state.backend, 'reference');
  checkShown(shown);
  assert.equal(shown.note, '', 'a forced backend needs no explanation');
  referenceLosses = state.losses;
});

test('browser page: trains a tiny model on the cpu backend (wasm SIMD on Web Workers, cross-origin isolated)', { skip, timeout: 60_000 }, async (t) => {
  // Two threads whatever the machine: the training worker plus one nested kernel worker.
  const { state, errors, isolated } = await trainInPage(`${TINY}&backend=cpu&threads=2`);
  assert.equal(isolated, true, 'the server did not make the page cross-origin isolated');
  checkRun(state, errors);
  assert.equal(state.backend, 'cpu');
  assert.match(state.adapter, /^2 threads, (relaxed )?SIMD$/);
  const worst = checkMatchesReference('cpu', state.losses);
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
  checkShown(shown);
  if (referenceLosses) checkMatchesReference(state.backend, state.losses);
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
  checkShown(shown);
  if (referenceLosses) checkMatchesReference('webgpu', state.losses);
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
    checkMatchesReference('cpu', state.losses);
  } finally {
    await browser.close();
  }
});

test('browser page: the loss chart marks whole steps, and the model line counts in the singular too', { skip, timeout: 60_000 }, async () => {
  // 20 steps: a generic chart puts ticks at 2.5, 7.5...
  const { state, shown, errors } = await trainInPage(`${TINY.replace(`steps=${STEPS}`, 'steps=20')}&backend=reference&sample_tokens=4`);
  assert.deepEqual(errors, []);
  assert.equal(state.state, 'done', state.error);
  assert.deepEqual(shown.xTicks, ['5', '10', '15', '20']);
  assert.deepEqual(shown.legend, ['train']);
  const one = await trainInPage('steps=1&batch=1&context=8&d_model=16&n_heads=1&n_layers=1&sample_tokens=4&backend=reference');
  assert.equal(one.state.state, 'done', one.state.error);
  assert.match(one.shown.model, /\b1 head, 1 layer, .*\b1 step, /, one.shown.model);
  for (const t of one.shown.xTicks) assert.match(t, /^\d+$/, `step tick "${t}"`);
});

test('browser page: Stop ends the run after its current step and still shows a sample', { skip, timeout: 60_000 }, async () => {
  const { state, errors } = await trainInPage('steps=100000&batch=4&context=32&d_model=32&n_heads=2&n_layers=1&sample_tokens=12&sample_every=0&backend=reference', async (page) => {
    await page.waitForFunction('(window.minigpt?.losses.length ?? 0) >= 2', null, { timeout: 30_000 });
    await page.click('#stop');
  });
  assert.deepEqual(errors, []);
  assert.equal(state.state, 'stopped');
  assert.ok(state.losses.length >= 2 && state.losses.length < 100000, `${state.losses.length} steps`);
  assert.ok(state.sample.trim().length > 0, 'the sample is empty after a stop');
});

test('browser page: a bad query parameter is reported on the page, not thrown away', { skip, timeout: 60_000 }, async () => {
  const { state } = await trainInPage('steps=abc');
  assert.equal(state.state, 'error');
  assert.match(state.error, /steps must be a number/);
});

test('browser page: trains on pasted text instead of the default corpus', { skip, timeout: 60_000 }, async () => {
  const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(40);
  const { state, errors } = await trainInPage(`${TINY}&backend=reference&autostart=0`, async (page) => {
    await page.fill('#text', text);
    await page.click('#restart');
  });
  checkRun(state, errors);
  assert.equal(state.dataName, 'pasted text');
  // The character vocabulary comes from the pasted text, so the sample can only use its characters.
  const allowed = new Set(text);
  for (const ch of state.sample) assert.ok(allowed.has(ch), `sample character ${JSON.stringify(ch)} is not in the pasted text`);
});
