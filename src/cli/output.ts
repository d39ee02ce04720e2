/**
 * Guards for stdout and stderr closing under us (`minigpt sample | head`): a closed pipe is not an
 * error the user needs to see. When a stream reports EPIPE, further writes to it become no-ops and
 * the callbacks registered with onOutputClosed run once (a command stops its work, saves what it
 * must). With no callback registered, a closed stdout ends the process quietly with exit code 0,
 * the way `yes | head` does.
 */

import { fstatSync, writeSync } from 'node:fs';
import { MinigptError } from '../errors.js';
import { ioError } from '../util/fs.js';

type Guarded = NodeJS.WriteStream;

const callbacks = new Set<() => void>();
const closedStreams = new Set<Guarded>();
let installed = false;
let notified = false;

/** A reader that went away: a closed pipe, or a terminal that hung up (its writes fail with EIO). */
function isClosedOutput(stream: Guarded, e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || (code === 'EIO' && Boolean(stream.isTTY));
}

/** Makes every later write to `stream` succeed without writing anything. */
function silence(stream: Guarded): void {
  const noop = (...args: unknown[]): boolean => {
    const cb = args.find((a) => typeof a === 'function') as (() => void) | undefined;
    if (cb) process.nextTick(cb);
    return true;
  };
  stream.write = noop as Guarded['write'];
}

function closed(stream: Guarded): void {
  if (closedStreams.has(stream)) return;
  closedStreams.add(stream);
  silence(stream);
  if (!notified && callbacks.size > 0) {
    notified = true;
    for (const cb of [...callbacks]) {
      try {
        cb();
      } catch {
        // A callback that fails must not turn a closed pipe into a crash.
      }
    }
    return;
  }
  // Nobody is listening: a closed stdout means the reader is done with us.
  if (!notified && stream === process.stdout) process.exit(0);
}

/**
 * Node writes a stream redirected to a file with one writeSync per chunk and ignores a short
 * count: on a full disk the rest of a large output (eval --json, tokenizer encode) was dropped
 * with exit 0. This writes the rest, so the disk's ENOSPC reaches the stream's error handler.
 */
function writeWhole(stream: Guarded): void {
  const fd = (stream as { fd?: unknown }).fd;
  if (typeof fd !== 'number') return;
  let isFile = false;
  try {
    isFile = fstatSync(fd).isFile();
  } catch {
    return;
  }
  if (!isFile) return;
  (stream as unknown as { _write: (chunk: Uint8Array, encoding: string, cb: (e?: Error) => void) => void })._write = (chunk, _encoding, cb) => {
    try {
      for (let at = 0; at < chunk.length;) at += writeSync(fd, chunk, at);
    } catch (e) {
      cb(e as Error);
      return;
    }
    cb();
  };
}

/** Attaches the guards to process.stdout and process.stderr; call once, early (later calls do nothing). */
export function installOutputGuards(): void {
  if (installed) return;
  installed = true;
  for (const stream of [process.stdout, process.stderr] as Guarded[]) {
    writeWhole(stream);
    stream.on('error', (e: unknown) => {
      if (isClosedOutput(stream, e)) {
        closed(stream);
        return;
      }
      // Any other write error on our own output: report it where we still can, once, and stop.
      if (stream !== process.stderr && !closedStreams.has(process.stderr)) {
        const mapped = ioError(e, 'write output');
        process.stderr.write(`minigpt: error: ${mapped instanceof MinigptError ? mapped.message : `cannot write output: ${(e as Error)?.message ?? String(e)}`}\n`);
      }
      closedStreams.add(stream);
      silence(stream);
      process.exit(1);
    });
  }
}

/**
 * Runs `cb` once when stdout or stderr turns out to be closed (EPIPE). Returns a function that
 * unregisters it. While at least one callback is registered, a closed stdout does not end the
 * process: the callbacks decide how to stop.
 */
export function onOutputClosed(cb: () => void): () => void {
  const entry = (): void => cb();
  callbacks.add(entry);
  // Registered after the pipe already closed: tell it straight away (but not synchronously).
  if (closedStreams.size > 0) {
    process.nextTick(() => {
      if (callbacks.has(entry)) entry();
    });
  }
  return () => {
    callbacks.delete(entry);
  };
}

/** Whether stdout or stderr was found closed; writes to a closed one do nothing. */
export function outputClosed(): boolean {
  return closedStreams.size > 0;
}
