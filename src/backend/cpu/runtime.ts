/**
 * The cpu backend's Node/browser seam: everything that differs between Node (worker_threads,
 * fs, os, v8) and a browser (Web Workers, fetch, navigator). The pool, the worker loop and the
 * kernels are the same code in both. Node's modules are imported lazily with non-literal
 * specifiers (util/runtime.ts, as webgpu/gpu.ts does), so a browser bundle never loads them.
 */

import { importLazily as nodeModule, isNode } from '../../util/runtime.js';

export { isNode };

/** The browser globals we use, typed here because the project's lib has no DOM. */
interface WebWorker {
  postMessage(message: unknown): void;
  terminate(): void;
  addEventListener(type: 'message' | 'error', fn: (e: { data?: unknown; message?: string }) => void): void;
}
interface BrowserGlobals {
  Worker?: new (url: URL, options: { type: 'module'; name?: string }) => WebWorker;
  navigator?: { hardwareConcurrency?: number };
  crossOriginIsolated?: boolean;
  fetch?: (url: URL) => Promise<{ ok: boolean; status: number; arrayBuffer(): Promise<ArrayBuffer> }>;
  postMessage?: (message: unknown) => void;
  addEventListener?: (type: 'message', fn: (e: { data: unknown }) => void, options?: { once: boolean }) => void;
}
const web = globalThis as unknown as BrowserGlobals;

/** Threads the machine has: os.availableParallelism() in Node, navigator.hardwareConcurrency in a browser. */
export async function hardwareThreads(): Promise<number> {
  if (isNode()) return (await nodeModule<typeof import('node:os')>('node:os')).availableParallelism();
  return web.navigator?.hardwareConcurrency ?? 1;
}

/**
 * Whether this runtime may share memory between threads: always in Node; in a browser only when
 * the page is cross-origin isolated (served with COOP: same-origin and COEP: require-corp).
 */
export function sharedMemoryAllowed(): boolean {
  return typeof SharedArrayBuffer === 'function' && web.crossOriginIsolated !== false;
}

/**
 * Whether this thread may block in Atomics.wait (the pool's calling thread does). A page's main
 * thread may not: there Atomics.wait throws before it looks at the value.
 */
export function canBlock(): boolean {
  if (typeof SharedArrayBuffer !== 'function') return false;
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); // 'not-equal' at once where allowed
    return true;
  } catch {
    return false;
  }
}

/** The bytes at `url`: fs in Node (a file: URL), fetch in a browser. */
export async function readBytes(url: URL): Promise<Uint8Array> {
  if (isNode() && url.protocol === 'file:') {
    const fs = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
    return fs.readFile(url);
  }
  if (!web.fetch) throw new Error(`no fetch to load ${url.href}`);
  const res = await web.fetch(url);
  if (!res.ok) throw new Error(`HTTP ${res.status} for ${url.href}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Turns on a V8 flag at run time in Node; false where that is not possible (a browser). */
export async function setV8Flag(flag: string): Promise<boolean> {
  if (!isNode()) return false;
  try {
    (await nodeModule<typeof import('node:v8')>('node:v8')).setFlagsFromString(flag);
    return true;
  } catch {
    return false;
  }
}

export interface ThreadHandle {
  terminate(): void;
}

/**
 * Starts the worker script at `url` with `data` (Node: a worker_threads Worker with workerData;
 * browser: a module Web Worker sent `data` as its first message) and resolves once it posts
 * 'ready'. `onFailure` reports an error the worker raises after that (a bug in a kernel).
 */
export async function spawnWorker(url: URL, data: unknown, onFailure: (message: string) => void): Promise<ThreadHandle> {
  if (isNode()) {
    const { Worker } = await nodeModule<typeof import('node:worker_threads')>('node:worker_threads');
    const w = new Worker(url, { workerData: data });
    try {
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`cpu backend worker exited (${code}) before it started`)));
      });
    } catch (e) {
      void w.terminate();
      throw e;
    }
    w.removeAllListeners('exit');
    w.removeAllListeners('error');
    w.on('error', (e) => onFailure(e.message));
    w.unref(); // workers never keep the process alive
    return { terminate: () => void w.terminate() };
  }
  if (!web.Worker) throw new Error('cpu backend: this runtime has no Web Workers');
  const w = new web.Worker(url, { type: 'module', name: 'minigpt-cpu' });
  let started = false;
  try {
    await new Promise<void>((resolve, reject) => {
      w.addEventListener('message', () => {
        started = true;
        resolve();
      });
      w.addEventListener('error', (e) => {
        if (started) onFailure(e.message ?? 'error');
        else reject(new Error(`cpu backend worker ${url.href} failed to start: ${e.message ?? 'error'}`));
      });
      w.postMessage(data);
    });
  } catch (e) {
    w.terminate();
    throw e;
  }
  return { terminate: () => w.terminate() };
}

/**
 * The worker side of spawnWorker: resolves with the data the pool sent, and `ready()` to call
 * once the worker can take calls.
 */
export async function receiveWorkerData<T>(): Promise<{ data: T; ready(): void }> {
  if (isNode()) {
    const { workerData, parentPort } = await nodeModule<typeof import('node:worker_threads')>('node:worker_threads');
    return { data: workerData as T, ready: () => parentPort!.postMessage('ready') };
  }
  const data = await new Promise<T>((resolve) => web.addEventListener!('message', (e) => resolve(e.data as T), { once: true }));
  return { data, ready: () => web.postMessage!('ready') };
}

/** Reports a worker failure: a process warning in Node, the console in a browser. */
export function warn(message: string): void {
  if (isNode()) process.emitWarning(message);
  else console.warn(message);
}
