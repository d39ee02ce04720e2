/** Mean next-token loss over fixed windows of a token stream (validation loss). */
import type { Model } from '../model/model.js';
import { forward } from '../model/model.js';
import { evalOffsets, type TokenStream } from '../data/batches.js';
import { check } from '../errors.js';
import { eventLoopTurns } from '../util/runtime.js';
import { targetBytes, type TextByteCounts } from '../data/tokenizer.js';

/**
 * Evaluates up to `maxWindows` windows of T tokens, B at a time (the same B as training keeps
 * the activation buffers). A last, partial batch is padded by repeating windows and the
 * padding's losses are ignored. With `byteCounts` (textByteCounts), `bytes` is the UTF-8
 * bytes of the scored targets' text (0 without it). An aborted `signal` ends it early: `aborted`,
 * with the loss of the windows scored so far.
 */
export async function evaluateLoss(model: Model, stream: TokenStream, B: number, T: number, maxWindows = Infinity, byteCounts?: TextByteCounts, signal?: AbortSignal): Promise<{ loss: number; tokens: number; bytes: number; aborted: boolean }> {
  const offsets = evalOffsets(stream.length, T, maxWindows);
  check(offsets.length > 0, `the evaluation data has ${stream.length} tokens, fewer than one window of ${T + 1}`);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T), window = new Int32Array(T + 1);
  let sum = 0, count = 0, bytes = 0;
  // A long evaluation (4,096 windows of a large model) lets Ctrl-C and timers in; `signal` cuts it short.
  const turn = eventLoopTurns();
  for (let start = 0; start < offsets.length; start += B) {
    await turn();
    if (signal?.aborted) return { loss: count > 0 ? sum / count : NaN, tokens: count, bytes, aborted: true };
    const valid = Math.min(B, offsets.length - start);
    for (let b = 0; b < B; b++) {
      stream.read(offsets[start + (b % valid)], window);
      ids.set(window.subarray(0, T), b * T);
      targets.set(window.subarray(1), b * T);
    }
    const acts = forward(model, ids, targets, B, T, { forwardOnly: true });
    const losses = await model.backend.read(acts.losses);
    for (let i = 0; i < valid * T; i++) sum += losses[i];
    if (byteCounts) for (let i = 0; i < valid * T; i++) bytes += targetBytes(byteCounts, ids[i]!, targets[i]!);
    count += valid * T;
  }
  return { loss: sum / count, tokens: count, bytes, aborted: false };
}
