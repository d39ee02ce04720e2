/**
 * The reference backend: every kernel as the plainest correct loop, in TypeScript. It is the
 * oracle the fast backends are tested against and runs anywhere. With precision 'f64' every
 * buffer is a Float64Array, which makes finite-difference gradient checks tight.
 * Sums are carried in JS numbers (f64) and rounded once when stored.
 */
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, roundToBf16, roundToF16 } from '../../util/half.js';
import type { AdamWHyper, AttentionShape, Backend, IntTensor, Tensor } from '../types.js';
import { hash32 } from '../../util/random.js';

type FloatArray = Float32Array | Float64Array;

interface RefTensor extends Tensor {
  readonly data: FloatArray;
}
interface RefIntTensor extends IntTensor {
  readonly data: Int32Array;
}

export interface ReferenceOptions {
  /** Storage of every tensor: 'f32' (default) or 'f64' (for finite-difference gradient checks). */
  precision?: 'f32' | 'f64';
}

/** The storage behind a reference tensor (tests use it to read f64 values exactly). */
export function referenceData(t: Tensor): FloatArray {
  return (t as RefTensor).data;
}

const d = (t: Tensor): FloatArray => (t as RefTensor).data;
const di = (t: IntTensor): Int32Array => (t as RefIntTensor).data;


/** Whether dropout keeps element i: uniform u32 of (seed, i) at or above p·2^32. */
export function dropoutKeeps(seed: number, i: number, p: number): boolean {
  return hash32((i ^ hash32(seed >>> 0)) >>> 0) >= p * 4294967296;
}

/**
 * The multiplier AdamW applies to the gradients, worked out on the host from the squared norm
 * (the value in hyper.clip.normSquared): gradScale times the clipping coefficient
 * (torch.nn.utils.clip_grad_norm_: max_norm / (norm + 1e-6), only ever shrinking; none for
 * maxNorm 0 or Infinity), or null when the norm is not finite and the update is skipped.
 */
export function adamwGradScale(hyper: AdamWHyper, normSquared: number | undefined): number | null {
  if (!hyper.clip || normSquared === undefined) return hyper.gradScale;
  const norm = Math.sqrt(normSquared) * Math.abs(hyper.gradScale);
  if (!Number.isFinite(norm)) return null;
  const { maxNorm } = hyper.clip;
  return maxNorm > 0 && Number.isFinite(maxNorm) ? hyper.gradScale * Math.min(1, maxNorm / (norm + 1e-6)) : hyper.gradScale;
}

/**
 * The reference backend (see the file comment): plain loops on the calling thread, so every kernel
 * runs at once. Named 'reference', or 'reference-f64' with `precision: 'f64'`. Runs anywhere but is
 * the slowest; 'auto' picks it only where the cpu backend cannot run.
 */
export function createReferenceBackend(options: ReferenceOptions = {}): Backend {
  const f64 = options.precision === 'f64';
  const make = (n: number): FloatArray => (f64 ? new Float64Array(n) : new Float32Array(n));
  let scratch = new Float64Array(0);
  const scratchOf = (n: number): Float64Array => {
    if (scratch.length < n) scratch = new Float64Array(n);
    return scratch;
  };

  const backend: Backend = {
    name: f64 ? 'reference-f64' : 'reference',

    alloc: (size) => ({ size, data: make(size) }) as RefTensor,
    allocInt: (size) => ({ size, data: new Int32Array(size) }) as RefIntTensor,
    view(t, offset, size) {
      if (offset < 0 || size < 0 || offset + size > t.size) throw new RangeError(`view [${offset}, ${offset + size}) outside tensor of ${t.size}`);
      return { size, data: d(t).subarray(offset, offset + size) } as RefTensor;
    },
    write(t, data, offset = 0) {
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      d(t).set(data as ArrayLike<number>, offset);
    },
    writeInt(t, data, offset = 0) {
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      di(t).set(data as ArrayLike<number>, offset);
    },
    read: async (t) => Float32Array.from(d(t)),
    sync: async () => {},
    destroy() {},

    zero: (t) => void d(t).fill(0),
    copy: (dst, src) => void d(dst).set(d(src)),
    add(out, a, b) {
      const o = d(out), x = d(a), y = d(b);
      for (let i = 0; i < o.length; i++) o[i] = x[i] + y[i];
    },
    roundHalf(t, format) {
      const x = d(t);
      if (x instanceof Float32Array) {
        if (format === 'f16') roundToF16(x);
        else roundToBf16(x);
        return;
      }
      for (let i = 0; i < x.length; i++) x[i] = format === 'f16' ? f16BitsToF32(f32ToF16Bits(x[i])) : bf16BitsToF32(f32ToBf16Bits(x[i]));
    },
    accumulateSum(out, x, scale) {
      const v = d(x);
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[i];
      d(out)[0] += scale * s;
    },
    sumSquares(out, xs) {
      let s = 0;
      for (const t of xs) {
        const x = d(t);
        for (let i = 0; i < x.length; i++) s += x[i] * x[i];
      }
      d(out)[0] = s;
    },
    dropout(out, inp, p, seed) {
      const o = d(out), x = d(inp);
      const scale = 1 / (1 - p);
      for (let i = 0; i < o.length; i++) o[i] = dropoutKeeps(seed, i, p) ? x[i] * scale : 0;
    },

    embeddingForward(out, ids, table, N, C) {
      const o = d(out), w = d(table), id = di(ids);
      for (let n = 0; n < N; n++) o.set(w.subarray(id[n] * C, id[n] * C + C), n * C);
    },
    embeddingBackward(dtable, dout, ids, N, C) {
      const dw = d(dtable), g = d(dout), id = di(ids);
      for (let n = 0; n < N; n++) {
        const row = id[n] * C;
        for (let c = 0; c < C; c++) dw[row + c] += g[n * C + c];
      }
    },

    addBiasForward(out, bias, N, OC) {
      const o = d(out), b = d(bias);
      for (let n = 0; n < N; n++) for (let oc = 0; oc < OC; oc++) o[n * OC + oc] += b[oc];
    },
    addBiasBackward(dbias, dout, N, OC) {
      const db = d(dbias), g = d(dout), sum = scratchOf(OC);
      sum.fill(0, 0, OC);
      for (let n = 0; n < N; n++) for (let oc = 0; oc < OC; oc++) sum[oc] += g[n * OC + oc];
      for (let oc = 0; oc < OC; oc++) db[oc] += sum[oc];
    },

    matmulForward(out, inp, weight, N, C, OC) {
      const o = d(out), x = d(inp), w = d(weight);
      for (let n = 0; n < N; n++) {
        const xr = n * C;
        for (let oc = 0; oc < OC; oc++) {
          const wr = oc * C;
          let s = 0;
          for (let c = 0; c < C; c++) s += x[xr + c] * w[wr + c];
          o[n * OC + oc] = s;
        }
      }
    },
    matmulBackward(dinp, dweight, dout, inp, weight, N, C, OC) {
      const g = d(dout), x = d(inp), w = d(weight), dw = d(dweight);
      if (dinp) {
        // dinp[n,c] = sum_oc dout[n,oc] * w[oc,c]
        const dx = d(dinp);
        const acc = scratchOf(C);
        for (let n = 0; n < N; n++) {
          acc.fill(0, 0, C);
          for (let oc = 0; oc < OC; oc++) {
            const go = g[n * OC + oc];
            const wr = oc * C;
            for (let c = 0; c < C; c++) acc[c] += go * w[wr + c];
          }
          for (let c = 0; c < C; c++) dx[n * C + c] = acc[c];
        }
      }
      // dweight[oc,c] += sum_n dout[n,oc] * inp[n,c]
      for (let oc = 0; oc < OC; oc++) {
        const wr = oc * C;
        const acc = scratchOf(C);
        acc.fill(0, 0, C);
        for (let n = 0; n < N; n++) {
          const go = g[n * OC + oc];
          if (go === 0) continue;
          const xr = n * C;
          for (let c = 0; c < C; c++) acc[c] += go * x[xr + c];
        }
        for (let c = 0; c < C; c++) dw[wr + c] += acc[c];
      }
    },

    rmsnormForward(out, rstd, inp, weight, N, C, eps) {
      const o = d(out), r = d(rstd), x = d(inp), w = d(weight);
      for (let n = 0; n < N; n++) {
        const xr = n * C;
        let ss = 0;
        for (let c = 0; c < C; c++) ss += x[xr + c] * x[xr + c];
        const s = 1 / Math.sqrt(ss / C + eps);
        r[n] = s;
        for (let c = 0; c < C; c++) o[xr + c] = x[xr + c] * s * w[c];
      }
    },
    rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C) {
      // y = x·s·w with s = (mean(x²)+eps)^-1/2, so dx = s·(w⊙dy) - s³/C · x · Σ(w⊙dy⊙x).
      const dx = d(dinp), dw = d(dweight), g = d(dout), x = d(inp), w = d(weight), r = d(rstd);
      for (let n = 0; n < N; n++) {
        const xr = n * C;
        const s = r[n];
        let dot = 0;
        for (let c = 0; c < C; c++) dot += w[c] * g[xr + c] * x[xr + c];
        const k = (s * s * s * dot) / C;
        for (let c = 0; c < C; c++) {
          dx[xr + c] += s * w[c] * g[xr + c] - k * x[xr + c];
          dw[c] += g[xr + c] * x[xr + c] * s;
        }
      }
    },

    rope(x, cosSin, B, T, nHeads, headDim, rowStride, pos0, inverse) {
      const a = d(x), cs = d(cosSin);
      const half = headDim / 2;
      const sign = inverse ? -1 : 1;
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const row = (b * T + t) * rowStride;
          const tab = (pos0 + t) * headDim;
          for (let h = 0; h < nHeads; h++) {
            const base = row + h * headDim;
            for (let j = 0; j < half; j++) {
              const c = cs[tab + j], s = sign * cs[tab + half + j];
              const x1 = a[base + j], x2 = a[base + half + j];
              a[base + j] = x1 * c - x2 * s;
              a[base + half + j] = x2 * c + x1 * s;
            }
          }
        }
      }
    },

    attentionForward(out, lse, qkv, shape) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      const o = d(out), l = d(lse), x = d(qkv);
      const stride = (H + 2 * KVH) * hd;
      const group = H / KVH;
      const scale = 1 / Math.sqrt(hd);
      const s = scratchOf(T + hd);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kOff = (H + Math.floor(h / group)) * hd;
          const vOff = kOff + KVH * hd;
          for (let t = 0; t < T; t++) {
            const q = (b * T + t) * stride + h * hd;
            let max = -Infinity;
            for (let j = 0; j <= t; j++) {
              const k = (b * T + j) * stride + kOff;
              let dot = 0;
              for (let i = 0; i < hd; i++) dot += x[q + i] * x[k + i];
              s[j] = dot * scale;
              if (s[j] > max) max = s[j];
            }
            let sum = 0;
            for (let j = 0; j <= t; j++) sum += Math.exp(s[j] - max);
            const logSum = max + Math.log(sum);
            l[(b * H + h) * T + t] = logSum;
            const acc = s.subarray(T, T + hd);
            acc.fill(0);
            for (let j = 0; j <= t; j++) {
              const p = Math.exp(s[j] - logSum);
              const v = (b * T + j) * stride + vOff;
              for (let i = 0; i < hd; i++) acc[i] += p * x[v + i];
            }
            const or = (b * T + t) * H * hd + h * hd;
            for (let i = 0; i < hd; i++) o[or + i] = acc[i];
          }
        }
      }
    },
    attentionBackward(dqkv, dout, qkv, out, lse, shape) {
      // With p_j = exp(s_j - lse): dv_j += p_j·dout, ds_j = p_j·(dout·v_j - dout·out),
      // dq += scale·Σ ds_j k_j, dk_j += scale·ds_j q.
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      const dx = d(dqkv), g = d(dout), x = d(qkv), o = d(out), l = d(lse);
      const stride = (H + 2 * KVH) * hd;
      const group = H / KVH;
      const scale = 1 / Math.sqrt(hd);
      dx.fill(0);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kOff = (H + Math.floor(h / group)) * hd;
          const vOff = kOff + KVH * hd;
          for (let t = 0; t < T; t++) {
            const q = (b * T + t) * stride + h * hd;
            const or = (b * T + t) * H * hd + h * hd;
            const logSum = l[(b * H + h) * T + t];
            let D = 0;
            for (let i = 0; i < hd; i++) D += g[or + i] * o[or + i];
            for (let j = 0; j <= t; j++) {
              const k = (b * T + j) * stride + kOff;
              const v = (b * T + j) * stride + vOff;
              let dot = 0, dp = 0;
              for (let i = 0; i < hd; i++) {
                dot += x[q + i] * x[k + i];
                dp += g[or + i] * x[v + i];
              }
              const p = Math.exp(dot * scale - logSum);
              const ds = p * (dp - D) * scale;
              for (let i = 0; i < hd; i++) {
                dx[v + i] += p * g[or + i];
                dx[q + i] += ds * x[k + i];
                dx[k + i] += ds * x[q + i];
              }
            }
          }
        }
      }
    },

    kvCacheWrite(cache, qkv, shape, context, pos0) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      const kv = d(cache), x = d(qkv);
      const stride = (H + 2 * KVH) * hd, width = 2 * KVH * hd;
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const src = (b * T + t) * stride + H * hd;
          kv.set(x.subarray(src, src + width), (b * context + pos0 + t) * width);
        }
      }
    },
    attentionCached(out, qkv, cache, shape, context, pos0) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      const o = d(out), x = d(qkv), kv = d(cache);
      const stride = (H + 2 * KVH) * hd, width = 2 * KVH * hd;
      const group = H / KVH;
      const scale = 1 / Math.sqrt(hd);
      const s = scratchOf(pos0 + T + hd);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const kOff = Math.floor(h / group) * hd, vOff = kOff + KVH * hd;
          for (let t = 0; t < T; t++) {
            const q = (b * T + t) * stride + h * hd;
            const last = pos0 + t;
            let max = -Infinity;
            for (let j = 0; j <= last; j++) {
              const k = (b * context + j) * width + kOff;
              let dot = 0;
              for (let i = 0; i < hd; i++) dot += x[q + i] * kv[k + i];
              s[j] = dot * scale;
              if (s[j] > max) max = s[j];
            }
            let sum = 0;
            for (let j = 0; j <= last; j++) sum += Math.exp(s[j] - max);
            const logSum = max + Math.log(sum);
            const acc = last + 1;
            s.fill(0, acc, acc + hd);
            for (let j = 0; j <= last; j++) {
              const p = Math.exp(s[j] - logSum);
              const v = (b * context + j) * width + vOff;
              for (let i = 0; i < hd; i++) s[acc + i] += p * kv[v + i];
            }
            const or = (b * T + t) * H * hd + h * hd;
            for (let i = 0; i < hd; i++) o[or + i] = s[acc + i];
          }
        }
      }
    },

    swigluForward(out, gateUp, N, F) {
      const o = d(out), x = d(gateUp);
      for (let n = 0; n < N; n++) {
        for (let f = 0; f < F; f++) {
          const g = x[n * 2 * F + f], u = x[n * 2 * F + F + f];
          o[n * F + f] = (g / (1 + Math.exp(-g))) * u;
        }
      }
    },
    swigluBackward(dgateUp, dout, gateUp, N, F) {
      // h = g·σ(g)·u: dg = dh·u·σ(g)·(1 + g·(1-σ(g))), du = dh·g·σ(g).
      const dx = d(dgateUp), dh = d(dout), x = d(gateUp);
      for (let n = 0; n < N; n++) {
        for (let f = 0; f < F; f++) {
          const gi = n * 2 * F + f, ui = gi + F;
          const g = x[gi], u = x[ui], sig = 1 / (1 + Math.exp(-g));
          const gh = dh[n * F + f];
          dx[gi] = gh * u * sig * (1 + g * (1 - sig));
          dx[ui] = gh * g * sig;
        }
      }
    },
    geluForward(out, inp, size) {
      const o = d(out), x = d(inp);
      for (let i = 0; i < size; i++) o[i] = geluTanh(x[i]);
    },
    geluBackward(dinp, dout, inp, size) {
      const dx = d(dinp), g = d(dout), x = d(inp);
      for (let i = 0; i < size; i++) dx[i] = g[i] * geluTanhGrad(x[i]);
    },

    crossEntropyForward(losses, logits, targets, N, V) {
      const ls = d(losses), z = d(logits), y = di(targets);
      for (let n = 0; n < N; n++) ls[n] = logSumExp(z, n * V, V) - z[n * V + y[n]];
    },
    crossEntropyBackward(losses, dlogits, logits, targets, N, V, gradScale) {
      const ls = d(losses), dz = d(dlogits), z = d(logits), y = di(targets);
      for (let n = 0; n < N; n++) {
        const row = n * V;
        const lse = logSumExp(z, row, V);
        ls[n] = lse - z[row + y[n]];
        for (let v = 0; v < V; v++) dz[row + v] = Math.exp(z[row + v] - lse) * gradScale;
        dz[row + y[n]] -= gradScale;
      }
    },

    adamw(params, grads, m, v, hyper: AdamWHyper) {
      const p = d(params), g = d(grads), mm = d(m), vv = d(v);
      const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
      const scale = adamwGradScale(hyper, hyper.clip && d(hyper.clip.normSquared)[0]);
      if (scale === null) return;
      const bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
      const decay = 1 - lr * weightDecay;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * scale;
        mm[i] = beta1 * mm[i] + (1 - beta1) * gi;
        vv[i] = beta2 * vv[i] + (1 - beta2) * gi * gi;
        p[i] = p[i] * decay - (lr * (mm[i] / bc1)) / (Math.sqrt(vv[i] / bc2) + eps);
      }
    },
  };
  return backend;
}

const GELU_K = Math.sqrt(2 / Math.PI);
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_K * (x + 0.044715 * x * x * x)));
}
export function geluTanhGrad(x: number): number {
  const t = Math.tanh(GELU_K * (x + 0.044715 * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * 0.044715 * x * x);
}

function logSumExp(z: FloatArray, off: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (z[off + i] > max) max = z[off + i];
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(z[off + i] - max);
  return max + Math.log(s);
}
