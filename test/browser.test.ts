/**
 * The browser page (web/, bundled into dist/web by scripts/build-web.mjs) trains a tiny model in
 * headless Chromium, in the page's training worker: once on the backend the page picks (WebGPU
 * where Chromium offers an adapter, SwiftShader on a machine without a GPU), once forced to the
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

/**
 * Opens the page with `query`, does `before` (clicks...), and waits for the run to end; returns its
 * state, any errors the page logged, and whether the page was cross-origin isolated.
 */
async function trainInPage(query: string, before?: (page: Page) => Promise<void>, inBrowser?: Browser): Promise<{ state: PageState; errors: string[]; isolated: boolean }> {
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
    return { state: await page.evaluate<PageState>('window.minigpt'), errors, isolated: await page.evaluate<boolean>('window.crossOriginIsolated') };
  } finally {
    await page.close();
  }
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
  const { state, errors } = await trainInPage(`${TINY}&backend=reference`);
  t.diagnostic(`backend ${state.backend}: loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s`);
  checkRun(state, errors);
  assert.equal(state.backend, 'reference');
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

test('browser page: trains a tiny model on the backend it picks (WebGPU when Chromium has an adapter, else cpu)', { skip, timeout: 60_000 }, async (t) => {
  const { state, errors } = await trainInPage(TINY);
  t.diagnostic(`backend ${state.backend}${state.adapter ? ` (${state.adapter})` : ''}: loss ${state.losses[0]?.toFixed(3)} -> ${state.losses.at(-1)?.toFixed(3)}, ${state.tokensPerSecond.toFixed(0)} tokens/s`);
  checkRun(state, errors);
  // The page is cross-origin isolated, so it never falls back to the reference backend here.
  assert.notEqual(state.backend, 'reference');
  if (referenceLosses) checkMatchesReference(state.backend, state.losses);
});

test('browser page: without WebGPU the page picks the cpu backend', { skip, timeout: 60_000 }, async (t) => {
  await open();
  // A second Chromium without --enable-unsafe-webgpu: on Linux that has no WebGPU adapter.
  const browser = await chromium!.launch({ executablePath: chromiumPath!, headless: true, args: [] });
  try {
    const probe = await browser.newPage();
    const hasAdapter = await probe.evaluate<boolean>('navigator.gpu ? navigator.gpu.requestAdapter().then((a) => a !== null) : false');
    await probe.close();
    if (hasAdapter) {
      t.skip('this Chromium offers WebGPU without --enable-unsafe-webgpu');
      return;
    }
    const { state, errors } = await trainInPage(TINY, undefined, browser);
    checkRun(state, errors);
    assert.equal(state.backend, 'cpu');
    checkMatchesReference('cpu', state.losses);
  } finally {
    await browser.close();
  }
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
