// Builds the cpu backend's WebAssembly kernels (kernels.ts, AssemblyScript) into dist/wasm/:
// kernels-simd.wasm (128-bit SIMD) and kernels-relaxed.wasm (plus relaxed SIMD: fused
// multiply-add). Run by `npm run build:wasm`, which `prepare` and `test` run before tsc.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..', '..');
const outDir = join(root, 'dist', 'wasm');
mkdirSync(outDir, { recursive: true });
const asc = join(dirname(createRequire(import.meta.url).resolve('assemblyscript/package.json')), 'bin', 'asc.js');

const common = [
  join(here, 'kernels.ts'),
  '-O3', '--noAssert', '--runtime', 'stub', '--use', 'abort=',
  // One shared memory, imported: the main thread and every worker instantiate on it.
  '--importMemory', '--sharedMemory', '--initialMemory', '1', '--maximumMemory', '65536',
  '--enable', 'simd', '--enable', 'threads',
];
// The two builds run side by side; a compile error fails the script with asc's message.
const variants = [['kernels-simd', []], ['kernels-relaxed', ['--enable', 'relaxed-simd']]];
const results = await Promise.allSettled(variants.map(([name, extra]) =>
  promisify(execFile)(process.execPath, [asc, ...common, ...extra, '-o', join(outDir, `${name}.wasm`)])));
for (const r of results) {
  if (r.status === 'rejected') {
    process.stderr.write(`${r.reason.stdout ?? ''}${r.reason.stderr ?? ''}${r.reason.message}\n`);
    process.exit(1);
  }
}
