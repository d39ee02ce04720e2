#!/usr/bin/env node
/**
 * Long-run check: trains the nanogpt-cpu-sized model (d128 h4 l4 ctx64, batch 12, char
 * vocabulary) for many steps with periodic evaluation, samples and checkpoints, exactly as
 * `minigpt train` does, sampling RSS and heap every K steps, and says whether memory stays flat.
 *
 *   npx tsc -p . && node scripts/long-run.mjs [--steps 20000] [--every 500] [--threads 1]
 *       [--backend cpu] [--data FILE] [--out DIR] [--save-every 1000] [--eval-every 500]
 *       [--sample-every 2000] [--threshold 1]
 *
 * Memory is read after a full garbage collection (the script re-runs itself under
 * --expose-gc), so what it sees is what is kept, not garbage not yet collected. The verdict is
 * the Theil-Sen (median pairwise) slope of RSS over the second half of the run, in MB per 1000 steps
 * (the first half holds warm-up: JIT, allocator pools, the first checkpoint's buffers); flat
 * means below --threshold (default 1 MB per 1000 steps). Exit 0 when flat, 1 when not.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

if (typeof globalThis.gc !== 'function') {
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const { values: a } = parseArgs({
  options: {
    steps: { type: 'string', default: '20000' },
    every: { type: 'string' },
    threads: { type: 'string', default: '1' },
    backend: { type: 'string', default: 'cpu' },
    data: { type: 'string' },
    out: { type: 'string' },
    'save-every': { type: 'string', default: '1000' },
    'eval-every': { type: 'string', default: '500' },
    'sample-every': { type: 'string', default: '2000' },
    threshold: { type: 'string', default: '1' },
  },
});
const steps = Number(a.steps);
const every = Number(a.every ?? Math.max(10, Math.round(steps / 40)));
const threshold = Number(a.threshold);
for (const [name, v] of [['steps', steps], ['every', every], ['threshold', threshold]]) {
  if (!(v > 0)) throw new Error(`--${name} must be a positive number`);
}

const dist = join(fileURLToPath(new URL('..', import.meta.url)), 'dist', 'src');
const { train } = await import(join(dist, 'train', 'train.js'));

const MB = 1024 * 1024;
const out = a.out ?? join(await mkdtemp(join(tmpdir(), 'minigpt-long-run-')), 'run');
const samples = [];
let saves = 0, evals = 0, generated = 0;
const measure = (step, loss) => {
  // Twice: array buffers' backing stores are released by the collection after the one that finds them dead.
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  const s = { step, rss: m.rss / MB, heap: m.heapUsed / MB, external: m.external / MB, buffers: m.arrayBuffers / MB, loss, seconds: (performance.now() - t0) / 1000 };
  samples.push(s);
  console.log(`${String(step).padStart(7)}  ${s.rss.toFixed(1).padStart(8)}  ${s.heap.toFixed(1).padStart(7)}  ${s.external.toFixed(1).padStart(8)}  ${s.buffers.toFixed(1).padStart(7)}  ${Number.isFinite(loss) ? loss.toFixed(4) : '   -  '}  ${s.seconds.toFixed(0).padStart(6)}`);
};

console.log(`long run: d128 h4 l4 ctx64 batch 12, char vocabulary, ${steps} steps, backend ${a.backend} with ${a.threads} thread(s), ` +
  `memory every ${every} steps; saves every ${a['save-every']}, evals every ${a['eval-every']}, samples every ${a['sample-every']}; run dir ${out}`);
console.log('   step   RSS MB  heap MB  ext. MB  buf. MB  loss     time s');
const t0 = performance.now();
measure(0, NaN);
const summary = await train({
  data: a.data, out, steps, tokenizer: 'char',
  model: { d_model: 128, n_heads: 4, n_layers: 4, context: 64 },
  batch: 12, lr: 1e-3, minLr: 1e-4, warmup: 100,
  backend: a.backend, threads: Number(a.threads),
  saveEvery: Number(a['save-every']), evalEvery: Number(a['eval-every']), sampleEvery: Number(a['sample-every']), sampleTokens: 100,
  onStep: (s) => { if (s.step % every === 0) measure(s.step, s.loss); },
  onSave: () => saves++,
  onEval: () => evals++,
  onSample: () => generated++,
});
const seconds = (performance.now() - t0) / 1000;

/** Theil-Sen slope of y over x: the median of all pairwise slopes, so one spike (a sample taken while a save's buffers were alive) cannot tip it. */
function slope(points) {
  const slopes = [];
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) if (points[j][0] !== points[i][0]) slopes.push((points[j][1] - points[i][1]) / (points[j][0] - points[i][0]));
  }
  slopes.sort((x, y) => x - y);
  const n = slopes.length;
  return n === 0 ? 0 : n % 2 ? slopes[(n - 1) / 2] : (slopes[n / 2 - 1] + slopes[n / 2]) / 2;
}
const late = samples.filter((s) => s.step >= steps / 2);
const per1k = (key) => 1000 * slope(late.map((s) => [s.step, s[key]]));
const rssSlope = per1k('rss'), heapSlope = per1k('heap'), bufSlope = per1k('buffers');
const rss = samples.map((s) => s.rss);
const flat = late.length >= 3 && Math.abs(rssSlope) < threshold;
console.log([
  '',
  `done: ${summary.steps} steps in ${(seconds / 60).toFixed(1)} min (${(summary.tokensSeen / seconds).toFixed(0)} tok/s), final loss ${summary.finalLoss.toFixed(4)}, ` +
    `best val loss ${summary.bestValLoss?.toFixed(4) ?? 'n/a'}; ${saves} checkpoints, ${evals} evaluations, ${generated} samples`,
  `RSS: start ${rss[0].toFixed(1)} MB, peak ${Math.max(...rss).toFixed(1)} MB, end ${rss.at(-1).toFixed(1)} MB`,
  `second half (${late.length} samples from step ${late[0]?.step ?? '-'}): RSS ${rssSlope.toFixed(3)} MB / 1k steps, heap ${heapSlope.toFixed(3)} MB / 1k steps, array buffers ${bufSlope.toFixed(3)} MB / 1k steps`,
  late.length < 3
    ? 'verdict: too few samples to judge (lower --every)'
    : `verdict: ${flat ? 'FLAT' : 'GROWING'} (|RSS slope| ${flat ? '<' : '>='} ${threshold} MB per 1000 steps)`,
].join('\n'));
if (!a.out) await rm(join(out, '..'), { recursive: true, force: true });
process.exitCode = flat ? 0 : 1;
