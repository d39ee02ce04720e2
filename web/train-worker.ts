/**
 * The page's training worker (a module Web Worker, bundled as train-worker.js): the page posts
 * `{ type: 'start', options, text, dataName }`, this runs web/run.ts's loop here, off the page's
 * main thread (the cpu backend's threads block in Atomics.wait, which only a worker may), and
 * posts every state change back; `{ type: 'stop' }` ends the run after the current step.
 */
import { runTraining, type PageOptions, type PageState } from './run.js';

export type ToTrainWorker = { type: 'start'; options: PageOptions; text: string; dataName: string } | { type: 'stop' };

/** The worker's global scope, typed here (web/tsconfig's lib is the page's DOM). */
const scope = globalThis as unknown as {
  postMessage(state: PageState): void;
  addEventListener(type: 'message', fn: (e: { data: ToTrainWorker }) => void): void;
};

let controller: AbortController | null = null;
scope.addEventListener('message', ({ data }) => {
  if (data.type === 'stop') {
    controller?.abort();
    return;
  }
  controller?.abort();
  const run = new AbortController();
  controller = run;
  void runTraining(data.options, data.text, data.dataName, { signal: run.signal, onUpdate: (s) => scope.postMessage(s) });
});
