/**
 * The harness the cpu and webgpu kernel tests share: run one kernel case on the reference backend
 * and on a backend under test from the same seed, and compare every output it returns.
 */
import assert from 'node:assert/strict';
import { createReferenceBackend } from '../../src/backend/reference/index.js';
import type { AttentionShape, Backend, Tensor } from '../../src/backend/types.js';
import { createRng, type Rng } from '../../src/util/random.js';
import { relativeError } from './parity.js';

/** Inputs a case draws from its rng, in the same order on every backend. */
export interface Maker {
  be: Backend;
  /** Random normal values, as a view at offset 3 of a larger tensor (an unaligned pointer, a
   * view off the 256-byte storage alignment). */
  rand(size: number, std?: number): Tensor;
  ints(size: number, below: number): ReturnType<Backend['allocInt']>;
}

export function maker(be: Backend, rng: Rng): Maker {
  return {
    be,
    rand(size, std = 1) {
      const t = be.view(be.alloc(size + 5), 3, size);
      be.write(t, Float32Array.from({ length: size }, () => std * rng.normal()));
      return t;
    },
    ints(size, below) {
      const t = be.allocInt(size);
      be.writeInt(t, Int32Array.from({ length: size }, () => rng.int(below)));
      return t;
    },
  };
}

/**
 * Runs `kernel` on the reference and on each of `backends` from the same seed, and asserts every
 * output within `tol` relative error; `describe` names a backend in the failure message.
 */
export async function sameAsReference<B extends Backend>(
  what: string, kernel: (m: Maker) => Tensor[], tol: number, backends: readonly B[], describe: (be: B) => string,
): Promise<void> {
  const ref = createReferenceBackend();
  const want = await Promise.all(kernel(maker(ref, createRng(7))).map((t) => ref.read(t)));
  for (const be of backends) {
    const got = await Promise.all(kernel(maker(be, createRng(7))).map((t) => be.read(t)));
    got.forEach((g, i) => {
      const err = relativeError(g, want[i]);
      assert.ok(err <= tol, `${what} (${describe(be)}), output ${i}: relative error ${err.toExponential(2)} > ${tol}`);
    });
  }
}

/** The attention case both backends' tests run: forward then backward on shape `s` (out, lse, dqkv). */
export function attentionCase(s: AttentionShape): (m: Maker) => Tensor[] {
  const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = s;
  const QKV = (H + 2 * KVH) * hd;
  return ({ be, rand }) => {
    const qkv = rand(B * T * QKV), out = rand(B * T * H * hd), lse = rand(B * H * T);
    be.attentionForward(out, lse, qkv, s);
    const dout = rand(B * T * H * hd), dqkv = rand(B * T * QKV); // dqkv starts as junk: overwrite
    be.attentionBackward(dqkv, dout, qkv, out, lse, s);
    return [out, lse, dqkv];
  };
}
