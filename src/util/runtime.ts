/**
 * Where the code runs, for the modules that work both in Node and in a browser (the cpu and
 * webgpu backends). Imports nothing from Node itself, so a browser bundle can include it.
 */
import { MinigptError } from '../errors.js';

export function isNode(): boolean {
  return typeof process !== 'undefined' && Boolean(process.versions?.node);
}

/**
 * A module (a Node built-in, or a Node-only package) imported only when called, through a
 * non-literal specifier that bundlers do not follow: a browser bundle never loads it.
 */
export function importLazily<T>(name: string): Promise<T> {
  return import(name) as Promise<T>;
}

/** How long a long computation (training, generation) runs before letting the event loop turn. */
export const EVENT_LOOP_TURN_MS = 25;

/**
 * A function a long-running loop awaits between steps: every EVENT_LOOP_TURN_MS of computing it
 * lets the event loop turn once (setImmediate in Node, a zero timeout elsewhere), so timers, I/O,
 * an AbortController's abort from a timer or a button, and a browser page's rendering get their
 * turn; otherwise it resolves at once. The cpu backend computes synchronously and its reads
 * resolve at once, so without it a loop would hold the thread until it ends.
 */
export function eventLoopTurns(everyMs = EVENT_LOOP_TURN_MS): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    if (performance.now() - last < everyMs) return undefined;
    return nextTurn().then(() => { last = performance.now(); });
  };
}

/** Resolves after one turn of the event loop (setImmediate in Node, a zero timeout elsewhere). */
export function nextTurn(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  return new Promise<void>((done) => { if (immediate) immediate(done); else setTimeout(done, 0); });
}

/**
 * For a library call that reads or writes files: a MinigptError in a browser (no file system),
 * naming the call and what works on bytes instead, rather than a failure deep in a stubbed node:fs.
 */
export function checkNodeOnly(call: string): void {
  if (isNode()) return;
  throw new MinigptError(`${call} reads or writes files, which needs Node; in a browser, work on bytes: checkpointFromZip / checkpointToZip for checkpoints, hfExportFiles and ggufFromCheckpoint + encodeGguf for exports, and for training the pieces minigpt's page uses (createModel, forward, backward, optimizerStepChecked; see web/run.ts)`);
}
