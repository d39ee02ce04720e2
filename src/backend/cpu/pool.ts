/**
 * The cpu backend's threads: the main thread plus `threads - 1` workers, each with its own
 * instance of the kernels on the one shared memory. `run` hands every thread the same kernel
 * call; the kernel takes (tid, nThreads) last and does only its own share. The main thread does
 * share 0 itself, then waits for the workers. Sync is one control block of Int32s: a generation
 * counter the workers watch (spin briefly, then Atomics.wait) and a done counter the main thread
 * watches the same way, so a kernel call costs a few microseconds when the workers are awake.
 *
 * The same code runs in Node (worker_threads) and in a browser (module Web Workers); runtime.ts
 * is the seam that starts a worker and hands it its data. The calling thread blocks in
 * Atomics.wait, so in a browser it must be a worker itself, not the page's main thread.
 */
import { instantiateKernels, type KernelExports, type WasmMemory, type WasmModule } from './wasm-module.js';
import { canBlock, spawnWorker, warn, type ThreadHandle } from './runtime.js';
import { MinigptError } from '../../errors.js';

/** Control block layout (Int32 indices); the Float64 arguments start at byte ARGS_BYTE. */
export const CTL = { generation: 0, done: 1, kernel: 2, nArgs: 3, nThreads: 4, failed: 5 } as const;
export const ARGS_BYTE = 64;
export const MAX_ARGS = 24;
/** Byte address of the kernels' work counter (WORK_COUNTER in wasm/kernels.ts). */
export const WORK_COUNTER_BYTE = 64;
/** Kernel index that tells the workers to return. */
export const EXIT = -1;
/** Spins before a waiting thread sleeps in Atomics.wait (a few tens of microseconds). */
export const SPINS = 20000;

export interface WorkerData {
  module: WasmModule;
  memory: WasmMemory;
  control: SharedArrayBuffer;
  kernelNames: string[];
  tid: number;
}

export interface ThreadPool {
  readonly nThreads: number;
  /** The main thread's instance of the kernels. */
  readonly kernels: KernelExports;
  /**
   * Runs kernel `name`(...args, tid, nThreads) on every thread and returns when all are done;
   * with `parallel` false (work too small to pay for waking the workers) only on the calling
   * thread, as (…, 0, 1). Returns the thread count the kernel ran with.
   */
  run(name: string, args: readonly number[], parallel?: boolean): number;
  destroy(): void;
}

/**
 * The worker script: worker.js beside this module. In Node that is dist/src/backend/cpu/worker.js;
 * the web build emits src/backend/cpu/worker.ts as its own bundle, worker.js, beside the bundle
 * this module is part of, so the same relative URL finds it.
 */
export const workerUrl = (): URL => new URL('./worker.js', import.meta.url);

export async function createThreadPool(module: WasmModule, memory: WasmMemory, nThreads: number): Promise<ThreadPool> {
  if (nThreads > 1 && !canBlock()) {
    throw new MinigptError('cpu backend: this thread may not block in Atomics.wait (a page\'s main thread); create the backend in a Web Worker, or with threads: 1');
  }
  const kernels = await instantiateKernels(module, memory);
  const kernelNames = Object.keys(kernels).filter((k) => typeof kernels[k] === 'function');
  const kernelIndex = new Map(kernelNames.map((k, i) => [k, i]));
  const control = new SharedArrayBuffer(ARGS_BYTE + 8 * MAX_ARGS);
  const ctl = new Int32Array(control, 0, ARGS_BYTE / 4);
  const args = new Float64Array(control, ARGS_BYTE, MAX_ARGS);
  ctl[CTL.nThreads] = nThreads;
  // The kernels' shared work counter (WORK_COUNTER in kernels.ts): zeroed before every call.
  const workCounter = new Int32Array(memory.buffer, WORK_COUNTER_BYTE, 1);

  // A worker error after it started means a bug in a kernel: say so, never keep the process alive.
  const onFailure = (message: string): void => warn(`cpu backend worker failed: ${message}`);
  const starting = Array.from({ length: nThreads - 1 }, (_, i) => {
    const data: WorkerData = { module, memory, control, kernelNames, tid: i + 1 };
    return spawnWorker(workerUrl(), data, onFailure);
  });
  const started = await Promise.allSettled(starting);
  const workers: ThreadHandle[] = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    for (const w of workers) w.terminate();
    throw failed.reason;
  }

  let destroyed = false;
  const nWorkers = nThreads - 1;
  return {
    nThreads,
    kernels,
    run(name, callArgs, parallel = true) {
      if (destroyed) throw new MinigptError('this cpu backend was destroyed (destroy()); make a new one, or load the model again');
      const fn = kernels[name];
      const index = kernelIndex.get(name);
      if (index === undefined) throw new Error(`no wasm kernel ${name}`);
      if (nWorkers === 0 || !parallel) {
        workCounter[0] = 0;
        fn(...callArgs, 0, 1);
        return 1;
      }
      if (callArgs.length > MAX_ARGS) throw new Error(`kernel ${name}: too many arguments`);
      workCounter[0] = 0;
      for (let i = 0; i < callArgs.length; i++) args[i] = callArgs[i];
      ctl[CTL.kernel] = index;
      ctl[CTL.nArgs] = callArgs.length;
      Atomics.store(ctl, CTL.done, 0);
      Atomics.add(ctl, CTL.generation, 1); // publishes the writes above
      Atomics.notify(ctl, CTL.generation);
      try {
        fn(...callArgs, 0, nThreads);
      } finally {
        // even when share 0 trapped: the workers must be idle before the next call
        let spins = 0;
        for (;;) {
          const done = Atomics.load(ctl, CTL.done);
          if (done === nWorkers) break;
          if (++spins > SPINS) Atomics.wait(ctl, CTL.done, done, 1);
        }
      }
      if (ctl[CTL.failed]) throw new Error(`cpu backend: kernel ${name} failed in a worker`);
      return nThreads;
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      ctl[CTL.kernel] = EXIT;
      Atomics.add(ctl, CTL.generation, 1);
      Atomics.notify(ctl, CTL.generation);
      for (const w of workers) w.terminate();
    },
  };
}
