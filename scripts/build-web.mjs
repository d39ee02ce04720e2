#!/usr/bin/env node
/**
 * Builds the browser page into dist/web/: index.html, bundle.js (web/main.ts and the library,
 * bundled by esbuild) and corpus.txt (the default corpus, as `minigpt train` loads it).
 *
 *   npm run build:web        # tsc first (the corpus is read through dist/src), then this
 *   node scripts/serve-web.mjs   # serve it at http://127.0.0.1:8080/
 *
 * Node's built-in modules (node:fs, node:worker_threads...) are imported by library modules the
 * page never calls (checkpoints, the cpu backend's threads). They are replaced by stubs with the
 * same export names that throw when called, so the bundle loads in a browser and a call that
 * would need Node says so instead of failing on an unresolvable import.
 */
import { build } from 'esbuild';
import { builtinModules } from 'node:module';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const WEB_OUT = join(ROOT, 'dist', 'web');

const IDENT = /^[A-Za-z_$][\w$]*$/;

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
  await mkdir(out, { recursive: true });
  const result = await build({
    entryPoints: [join(ROOT, 'web', 'main.ts')],
    outfile: join(out, 'bundle.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify,
    sourcemap: true,
    logLevel: 'warning',
    plugins: [nodeBuiltinsStubbed],
    metafile: true,
  });
  await copyFile(join(ROOT, 'web', 'index.html'), join(out, 'index.html'));
  const { loadDefaultCorpus } = await import(pathToFileURL(corpusModule).href);
  await writeFile(join(out, 'corpus.txt'), await loadDefaultCorpus());
  return { out, bytes: result.metafile.outputs[Object.keys(result.metafile.outputs).find((k) => k.endsWith('bundle.js'))].bytes };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { out, bytes } = await buildWeb();
  console.log(`built ${out} (bundle.js ${(bytes / 1024).toFixed(0)} KiB, index.html, corpus.txt)`);
}
