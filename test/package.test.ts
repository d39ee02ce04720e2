/**
 * What the published package holds and how a user's tools take it in: `npm pack`'s file list (what
 * the CLI, the library and the page need at run time; no tests, fixtures or dev scripts), and a
 * browser bundle of an app that imports 'minigpt' (the "browser" export: no Node built-ins).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('npm pack ships what the CLI, the library and the page run on, and no tests, fixtures or dev scripts', (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
  if (r.error) return t.skip(`npm is not on PATH (${r.error.message})`);
  assert.equal(r.status, 0, r.stderr);
  const files = new Set((JSON.parse(r.stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path));
  const needed = [
    'package.json', 'README.md', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'dist/src/backend/cpu/worker.js',
    'dist/wasm/kernels-simd.wasm', 'dist/wasm/kernels-relaxed.wasm',
    'dist/web/index.html', 'dist/web/bundle.js', 'dist/web/train-worker.js', 'dist/web/worker.js', 'dist/web/minigpt.js',
    'dist/web/kernels-simd.wasm', 'dist/web/kernels-relaxed.wasm', 'dist/web/corpus.txt', 'dist/web/coi-serviceworker.js',
    'scripts/train_ddp.py', 'src/index.ts',
  ];
  for (const f of needed) assert.ok(files.has(f), `the package lacks ${f}`);
  const stray = [...files].filter((f) => /^(test|dist\/test|bench|\.ci)\//.test(f) || /\.(py|sh)$/.test(f) && f !== 'scripts/train_ddp.py');
  assert.deepEqual(stray, [], 'the package ships tests, benchmarks or dev scripts');
});

test('an app that imports minigpt bundles for the browser (the "browser" export) with no Node built-in left to resolve', async () => {
  const { build } = await import('esbuild');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-bundle-'));
  await mkdir(join(dir, 'node_modules'));
  await symlink(ROOT, join(dir, 'node_modules', 'minigpt'), 'dir');
  await writeFile(join(dir, 'app.js'), [
    "import { buildCharTokenizer, checkpointFromZip, checkpointToZip, createBackend, generate } from 'minigpt';",
    'console.log(buildCharTokenizer, checkpointFromZip, checkpointToZip, createBackend, generate);',
    '',
  ].join('\n'));
  const result = await build({
    entryPoints: [join(dir, 'app.js')], bundle: true, platform: 'browser', format: 'esm', write: false, outdir: join(dir, 'out'), logLevel: 'silent', metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((f) => f.endsWith('dist/web/minigpt.js')), `the bundle took ${inputs.join(', ')}`);
  const js = result.outputFiles.find((f) => f.path.endsWith('.js'))!.text;
  assert.doesNotMatch(js, /from\s*["']node:|import\(\s*["']node:/);
  // The browser bundle is the library: every name Node's entry exports is there.
  const node = await import(join(ROOT, 'dist', 'src', 'index.js'));
  const exported = /export\s*\{([^}]*)\}\s*;?\s*(\/\/# sourceMappingURL=\S+\s*)?$/.exec(await readFile(join(ROOT, 'dist', 'web', 'minigpt.js'), 'utf8'));
  assert.ok(exported, 'minigpt.js ends without an export list');
  const names = new Set(exported[1].split(',').map((e) => e.trim().split(/\s+as\s+/).at(-1)!));
  assert.deepEqual(Object.keys(node).filter((k) => !names.has(k)), []);
});

test('the published types check in a strict project without @types/node (a browser app, or Node without it)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-types-'));
  // A copy, not a link: through a link TypeScript would find the repo's own node_modules/@types/node.
  const pkg = join(dir, 'node_modules', 'minigpt');
  await mkdir(pkg, { recursive: true });
  await cp(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  await cp(join(ROOT, 'dist', 'src'), join(pkg, 'dist', 'src'), { recursive: true, filter: (f) => !f.endsWith('.js') && !f.endsWith('.map') });
  await writeFile(join(dir, 'app.ts'), [
    "import { buildCharTokenizer, generate, train, loadModel, type TrainOptions, type LoadedModel } from 'minigpt';",
    "const options: TrainOptions = { text: 'hello world', steps: 1 };",
    'export async function run(model: LoadedModel): Promise<string> {',
    "  let out = '';",
    "  for await (const t of generate(model, 'he', { maxTokens: 4 })) out += t.text;",
    '  return out;',
    '}',
    'export { options, buildCharTokenizer, train, loadModel };',
    '',
  ].join('\n'));
  for (const [module, moduleResolution] of [['nodenext', 'nodenext'], ['esnext', 'bundler']]) {
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { noEmit: true, strict: true, target: 'es2022', lib: ['es2022', 'dom'], types: [], module, moduleResolution },
      files: ['app.ts'],
    }));
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `${moduleResolution}:\n${r.stdout}${r.stderr}`);
  }
});
