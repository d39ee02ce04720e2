/**
 * A cpu backend worker: instantiates the kernels on the shared memory, says it is ready, then
 * loops forever on the pool's control block (see pool.ts): wait for a new generation, run its
 * share of that kernel, count itself done. A worker_threads worker in Node, a module Web Worker
 * in a browser (runtime.ts hands it its data either way).
 */
import { instantiateKernels } from './wasm-module.js';
import { ARGS_BYTE, CTL, EXIT, MAX_ARGS, SPINS, type WorkerData } from './pool.js';
import { receiveWorkerData } from './runtime.js';

const { data, ready } = await receiveWorkerData<WorkerData>();
const { module, memory, control, kernelNames, tid } = data;
const kernels = await instantiateKernels(module, memory);
const fns = kernelNames.map((k) => kernels[k]);
const ctl = new Int32Array(control, 0, ARGS_BYTE / 4);
const args = new Float64Array(control, ARGS_BYTE, MAX_ARGS);
const nThreads = ctl[CTL.nThreads];
let seen = Atomics.load(ctl, CTL.generation);
ready();

const callArgs: number[] = [];
for (;;) {
  let spins = 0;
  for (;;) {
    const g = Atomics.load(ctl, CTL.generation);
    if (g !== seen) {
      seen = g;
      break;
    }
    if (++spins > SPINS) Atomics.wait(ctl, CTL.generation, g);
  }
  const kernel = ctl[CTL.kernel];
  if (kernel === EXIT) break;
  const n = ctl[CTL.nArgs];
  callArgs.length = n;
  for (let i = 0; i < n; i++) callArgs[i] = args[i];
  try {
    fns[kernel](...callArgs, tid, nThreads);
  } catch (e) {
    // A trap in a kernel is a bug; tell the main thread instead of leaving it waiting forever.
    Atomics.store(ctl, CTL.failed, 1);
    console.error(e);
  }
  if (Atomics.add(ctl, CTL.done, 1) + 1 === nThreads - 1) Atomics.notify(ctl, CTL.done);
}
