#!/usr/bin/env node
/**
 * Long fuzz run of the loaders, beyond what the suite runs (test/support/fuzz.ts has the cases):
 *
 *   npx tsc -p . && node scripts/fuzz.mjs --cases 50000 --seed 1 [--target safetensors|checkpoint|checkpoint-zip|shards|tokenizer|all]
 *       [--timeout-ms 5000] [--memory-mb 1024] [--case N]
 *
 * Case i of a run is a pure function of (seed, i); with --target all the targets take turns.
 * Cases run in a worker thread with a heap limit; the main thread watches each case's time, so a
 * hang (no progress for --timeout-ms) or an out-of-memory is caught, reported with the case,
 * and the run goes on from the next case in a fresh worker. Counts: clear errors (MinigptError),
 * clean loads, and failures (anything else, hangs, out-of-memory), each failure printed with
 * the command that replays it alone. Exit 1 when anything failed.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const support = join(fileURLToPath(new URL('..', import.meta.url)), 'dist', 'test', 'support', 'fuzz.js');

if (!isMainThread) {
  // Worker: runs cases [from, to), writing the current case into shared memory before each.
  const { caseSeed, createFuzzContext, runFuzzCase } = await import(support);
  const { seed, targets, from, to, progress, only } = workerData;
  const current = new Int32Array(progress); // [case, heartbeat, loaded, rejected]
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-fuzz-'));
  const ctx = await createFuzzContext(dir);
  for (let i = from; i < to; i++) {
    if (only !== undefined && i !== only) continue;
    Atomics.store(current, 0, i);
    Atomics.add(current, 1, 1); // heartbeat: a new case started
    const target = targets[i % targets.length];
    try {
      Atomics.add(current, (await runFuzzCase(target, caseSeed(seed, i), ctx)) === 'loaded' ? 2 : 3, 1);
    } catch (e) {
      parentPort.postMessage({ type: 'failure', index: i, target, message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    }
  }
  await rm(dir, { recursive: true, force: true });
  parentPort.postMessage({ type: 'done' });
} else {
  const { values: a } = parseArgs({
    options: {
      cases: { type: 'string', default: '10000' },
      seed: { type: 'string', default: '1' },
      target: { type: 'string', default: 'all' },
      'timeout-ms': { type: 'string', default: '5000' },
      'memory-mb': { type: 'string', default: '1024' },
      case: { type: 'string' },
    },
  });
  const { FUZZ_TARGETS } = await import(support);
  const targets = a.target === 'all' ? [...FUZZ_TARGETS] : [a.target];
  if (!targets.every((t) => FUZZ_TARGETS.includes(t))) throw new Error(`--target must be one of ${FUZZ_TARGETS.join(', ')} or all`);
  const seed = Number(a.seed), cases = Number(a.cases), timeoutMs = Number(a['timeout-ms']);
  const only = a.case === undefined ? undefined : Number(a.case);
  const total = only === undefined ? cases : 1;
  const counts = { loaded: 0, rejected: 0 };
  const failures = [];
  const replay = (i) => `node scripts/fuzz.mjs --seed ${seed} --target ${a.target} --cases ${Math.max(cases, i + 1)} --case ${i}`;
  const start = performance.now();
  let from = only ?? 0;
  const to = only === undefined ? cases : only + 1;
  console.log(`fuzzing ${targets.join(', ')}: ${total} cases from seed ${seed}, ${timeoutMs} ms and ${a['memory-mb']} MB heap per case`);

  while (from < to) {
    const progress = new SharedArrayBuffer(16);
    const current = new Int32Array(progress);
    Atomics.store(current, 0, from);
    const worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { seed, targets, from, to, progress, only },
      resourceLimits: { maxOldGenerationSizeMb: Number(a['memory-mb']) },
    });
    const next = await new Promise((resolve) => {
      let beat = -1, since = performance.now(), settled = false;
      const finish = (value) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        resolve(value);
      };
      const timer = setInterval(() => {
        const now = performance.now();
        const b = Atomics.load(current, 1);
        if (b !== beat) { beat = b; since = now; return; }
        // The first case also pays for building the fuzz context.
        if (now - since > timeoutMs * (b <= 1 ? 10 : 1)) {
          const i = Atomics.load(current, 0);
          failures.push({ index: i, target: targets[i % targets.length], message: `hang: no progress for ${timeoutMs} ms` });
          worker.terminate();
          finish(i + 1);
        }
      }, Math.min(200, timeoutMs / 4));
      worker.on('message', (m) => {
        if (m.type === 'failure') failures.push(m);
        else if (m.type === 'done') finish(to);
      });
      worker.on('error', (e) => {
        const i = Atomics.load(current, 0);
        failures.push({ index: i, target: targets[i % targets.length], message: `worker died: ${e.code ?? ''} ${e.message}` });
        finish(i + 1);
      });
      worker.on('exit', () => finish(Atomics.load(current, 0) + 1));
    });
    counts.loaded += Atomics.load(current, 2);
    counts.rejected += Atomics.load(current, 3);
    from = next;
  }

  const seconds = (performance.now() - start) / 1000;
  for (const f of failures) console.log(`FAILURE case ${f.index} (${f.target}): ${f.message.split('\n').slice(0, 6).join('\n    ')}\n  replay: ${replay(f.index)}`);
  console.log(`${total} cases in ${seconds.toFixed(1)} s: ${counts.rejected} clear errors (MinigptError), ${counts.loaded} clean loads, ${failures.length} failures`);
  process.exitCode = failures.length > 0 ? 1 : 0;
}
