/**
 * Finite-difference checks in f64 on the reference backend. A kernel's forward is a function of
 * named inputs; the scalar checked is L = Σ r ⊙ output for a fixed random r, whose gradient
 * with respect to the output is r itself.
 */
import assert from 'node:assert/strict';
import { createReferenceBackend, referenceData } from '../../src/backend/reference/index.js';
import type { Backend, Tensor } from '../../src/backend/types.js';
import { createRng, type Rng } from '../../src/util/random.js';

export const f64Backend = (): Backend => createReferenceBackend({ precision: 'f64' });

export function randomTensor(be: Backend, size: number, rng: Rng, std = 1, mean = 0): Tensor {
  const t = be.alloc(size);
  const data = new Float64Array(size);
  for (let i = 0; i < size; i++) data[i] = mean + std * rng.normal();
  be.write(t, data);
  return t;
}

export const values = (t: Tensor): Float64Array => Float64Array.from(referenceData(t));

function dotWith(out: Tensor, r: Float64Array): number {
  const o = referenceData(out);
  let s = 0;
  for (let i = 0; i < o.length; i++) s += o[i] * r[i];
  return s;
}

export interface GradcheckCase {
  be: Backend;
  inputs: Record<string, Tensor>;
  /** Runs the forward from the current input values and returns the output tensor. */
  forward: () => Tensor;
  /** Given dout (= r), returns the analytic gradient of each input to check. */
  backward: (dout: Tensor) => Record<string, Tensor>;
  seed?: number;
  /** Elements checked per input (spread over the tensor). */
  samples?: number;
  tolerance?: number;
}

/** Asserts analytic and central-difference gradients agree to `tolerance` relative. */
export function gradcheck(c: GradcheckCase): void {
  const rng = createRng(c.seed ?? 7);
  const out = c.forward();
  const r = new Float64Array(out.size);
  for (let i = 0; i < r.length; i++) r[i] = rng.normal();
  const dout = c.be.alloc(out.size);
  c.be.write(dout, r);
  const analytic = Object.fromEntries(Object.entries(c.backward(dout)).map(([k, t]) => [k, values(t)]));
  const h = 1e-6;
  const tol = c.tolerance ?? 1e-6;
  for (const [name, grad] of Object.entries(analytic)) {
    const x = referenceData(c.inputs[name]);
    const n = Math.min(c.samples ?? 24, x.length);
    let scale = 0;
    for (const g of grad) scale = Math.max(scale, Math.abs(g));
    for (let s = 0; s < n; s++) {
      const i = n === x.length ? s : rng.int(x.length);
      const orig = x[i];
      x[i] = orig + h;
      const plus = dotWith(c.forward(), r);
      x[i] = orig - h;
      const minus = dotWith(c.forward(), r);
      x[i] = orig;
      const numeric = (plus - minus) / (2 * h);
      const err = Math.abs(numeric - grad[i]) / Math.max(scale, 1e-3);
      assert.ok(err < tol, `d/d${name}[${i}]: analytic ${grad[i]}, numeric ${numeric} (error ${err.toExponential(2)} relative to max |grad| ${scale.toExponential(2)})`);
    }
  }
  c.forward();
}
