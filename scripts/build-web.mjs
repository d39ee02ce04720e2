#!/usr/bin/env node
/**
 * Builds the browser page into dist/web/, bundled by esbuild:
 *   index.html
 *   bundle.js            the page (web/main.ts): renders what the training worker posts
 *   train-worker.js      the training run (web/train-worker.ts and the library), a module Web Worker
 *   minigpt.js           the library (src/index.ts) for browsers: package.json's "browser" export,
 *                        which bundlers pick for a browser build (import { ... } from 'minigpt');
 *                        its worker.js and kernels are the ones beside it
 *   worker.js            the cpu backend's thread (src/backend/cpu/worker.ts); the pool starts it
 *                        as new URL('./worker.js', import.meta.url), which from train-worker.js (or
 *                        minigpt.js) is this file, as in Node it is dist/src/backend/cpu/worker.js
 *   kernels-*.wasm       the cpu backend's kernels (dist/wasm/), fetched from beside the bundle
 *   corpus.txt           the default corpus, as `minigpt train` loads it
 *   coi-serviceworker.js the coi-serviceworker package's service worker (MIT; a devDependency), as
 *                        it is: on a host that does not send COOP/COEP, web/isolation.ts registers
 *                        it to add them, so the page is cross-origin isolated for the cpu backend
 *
 *   npm run build:web        # tsc first (the corpus is read through dist/src), then this
 *   npx minigpt web              # serve it at http://127.0.0.1:8080/ (npm install builds it too)
 *
 * Node's built-in modules (node:fs...) are imported by library modules the page never calls
 * (checkpoints, file loading). The cpu and webgpu backends import theirs lazily, only in Node,
 * with non-literal specifiers the bundler leaves alone. Static imports are replaced by stubs with the
 * same export names that throw when called, so the bundle loads in a browser and a call that
 * would need Node says so instead of failing on an unresolvable import.
 */
import { build } from 'esbuild';
import { builtinModules, createRequire } from 'node:module';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const WEB_OUT = join(ROOT, 'dist', 'web');

const IDENT = /^[A-Za-z_$][\w$]*$/;
/** The cpu backend's kernels (npm run build:wasm), copied beside the bundles. */
export const WASM_FILES = ['kernels-simd.wasm', 'kernels-relaxed.wasm'];
/** The service worker that gives the page cross-origin isolation where the host sends no headers; the page registers it by this name. */
export const ISOLATION_WORKER = 'coi-serviceworker.js';

/** The coi-serviceworker package's unminified file (its licence line stays at its top). */
function isolationWorkerSource() {
  try {
    return createRequire(import.meta.url).resolve('coi-serviceworker/coi-serviceworker.js');
  } catch {
    throw new Error('the coi-serviceworker package is missing; run "npm install" (it is a devDependency)');
  }
}

/** An ES module with the export names of Node's module `name`, each a function that throws. */
async function nodeStub(name) {
  const real = await import(name);
  const names = Object.keys(real).filter((k) => k !== 'default' && IDENT.test(k));
  const lines = [
    `const unavailable = (what) => function () { throw new Error(${JSON.stringify(name)} + '.' + what + ' is not available in the browser'); };`,
    ...names.map((k) => `export const ${k} = unavailable(${JSON.stringify(k)});`),
    `export default new Proxy({}, { get: (_, k) => unavailable(String(k)) });`,
  ];
  return lines.join('\n');
}

const nodeBuiltinsStubbed = {
  name: 'node-builtins-stubbed',
  setup(b) {
    const builtins = new Set(builtinModules);
    b.onResolve({ filter: /^[a-z_/]+$|^node:/ }, (args) => {
      const bare = args.path.replace(/^node:/, '');
      if (!builtins.has(bare)) return undefined;
      return { path: `node:${bare}`, namespace: 'node-stub' };
    });
    b.onLoad({ filter: /.*/, namespace: 'node-stub' }, async (args) => ({ contents: await nodeStub(args.path), loader: 'js' }));
  },
};

export async function buildWeb({ out = WEB_OUT, minify = true } = {}) {
  const corpusModule = join(ROOT, 'dist', 'src', 'data', 'corpus.js');
  if (!existsSync(corpusModule)) throw new Error(`${corpusModule} is missing; run "npm run build" (tsc) first`);
  const wasm = WASM_FILES.map((f) => join(ROOT, 'dist', 'wasm', f));
  for (const f of wasm) if (!existsSync(f)) throw new Error(`${f} is missing; run "npm run build:wasm" first`);
  const isolationWorker = isolationWorkerSource();
  await mkdir(out, { recursive: true });
  const result = await build({
    entryPoints: {
      bundle: join(ROOT, 'web', 'main.ts'),
      'train-worker': join(ROOT, 'web', 'train-worker.ts'),
      minigpt: join(ROOT, 'src', 'index.ts'),
      worker: join(ROOT, 'src', 'backend', 'cpu', 'worker.ts'),
    },
    outdir: out,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify,
    // The maps name the sources (src/, web/: the package ships src/) instead of carrying them.
    sourcemap: true,
    sourcesContent: false,
    logLevel: 'warning',
    plugins: [nodeBuiltinsStubbed],
    metafile: true,
  });
  await copyFile(join(ROOT, 'web', 'index.html'), join(out, 'index.html'));
  for (const [i, f] of wasm.entries()) await copyFile(f, join(out, WASM_FILES[i]));
  await copyFile(isolationWorker, join(out, ISOLATION_WORKER));
  const { loadDefaultCorpus } = await import(pathToFileURL(corpusModule).href);
  await writeFile(join(out, 'corpus.txt'), await loadDefaultCorpus());
  const bytes = Object.fromEntries(Object.entries(result.metafile.outputs).filter(([k]) => k.endsWith('.js')).map(([k, v]) => [basename(k), v.bytes]));
  return { out, bytes };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { out, bytes } = await buildWeb();
  const sizes = Object.entries(bytes).map(([k, v]) => `${k} ${(v / 1024).toFixed(0)} KiB`).join(', ');
  console.log(`built ${out} (${sizes}, ${WASM_FILES.join(', ')}, ${ISOLATION_WORKER}, index.html, corpus.txt)`);
}
