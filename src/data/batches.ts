/**
 * Training batches: random windows of T+1 tokens from a token stream (inputs and the same
 * tokens shifted by one as targets), drawn by a seeded generator whose state is saved in
 * checkpoints, so a resumed run sees exactly the batches an uninterrupted run would.
 */
import { check, optionName } from '../errors.js';
import { createRng, type Rng, type RngState } from '../util/random.js';

/** Tokens that may live in memory or in shards on disk. */
export interface TokenStream {
  readonly length: number;
  /** Fills `out` with tokens [offset, offset + out.length). */
  read(offset: number, out: Int32Array): void;
}

/** A TokenStream over tokens already in memory (no copy: it reads `tokens` itself). */
export function memoryTokens(tokens: Int32Array): TokenStream {
  return { length: tokens.length, read: (offset, out) => out.set(tokens.subarray(offset, offset + out.length)) };
}

/** Draws training batches from a seeded generator. */
export interface BatchSampler {
  /** Fills ids and targets, each [B, T]. */
  next(ids: Int32Array, targets: Int32Array): void;
  /** The generator's state, for createBatchSampler to continue from (saved in checkpoints). */
  state(): RngState;
}

/**
 * A sampler of B windows of T+1 tokens from `stream`, each at a uniformly random start (windows
 * may overlap and repeat). `seed` is a number or a saved state() to resume the same sequence.
 * Throws a MinigptError when the stream has fewer than T+1 tokens.
 */
export function createBatchSampler(stream: TokenStream, B: number, T: number, seed: number | RngState): BatchSampler {
  check(stream.length > T, () => `the training data has ${stream.length} tokens, fewer than the ${T + 1} one sequence needs; use more data or a smaller ${optionName('model.context')}`);
  const rng: Rng = createRng(seed);
  const window = new Int32Array(T + 1);
  return {
    next(ids, targets) {
      for (let b = 0; b < B; b++) {
        stream.read(rng.int(stream.length - T), window);
        ids.set(window.subarray(0, T), b * T);
        targets.set(window.subarray(1), b * T);
      }
    },
    state: () => rng.state(),
  };
}

/** Start offsets of evaluation windows: all of them (up to `limit`) evenly spread, same every call. */
export function evalOffsets(length: number, T: number, limit: number): number[] {
  const count = Math.floor((length - 1) / T);
  if (count <= limit) return Array.from({ length: count }, (_, i) => i * T);
  return Array.from({ length: limit }, (_, i) => Math.floor((i * count) / limit) * T);
}
