/**
 * WGSL kernels of the webgpu backend, as bodies plus the tensors and scalars they use. The
 * backend turns each into a shader (see `shaderSource`): tensors are written `name[index]` in the
 * bodies and become `slot[P.o_name + index]`, where `slot` is one storage binding per distinct
 * GPUBuffer (views of one buffer share a binding, which WebGPU needs when one of them is written)
 * and `P.o_name` the view's element offset, passed as a uniform (views need no alignment).
 * Every kernel without `workgroup` runs one invocation per index `i` below `P.n_`.
 * Index expressions use only `+` and `*` at top level (the rewrite prefixes `P.o_name + `).
 */

import { generatedKernels } from './tiled.js';

export interface KernelSpec {
  /** Float tensors, in argument order. */
  tensors: string[];
  /** Int32 tensors (ids, targets). */
  ints?: string[];
  /** Scalars, u32 unless suffixed `:f32`. */
  params: string[];
  body: string;
  /**
   * Workgroups of `size` invocations dispatched over a grid given by the caller, with `wid`
   * (workgroup_id), `nwg` (num_workgroups) and `lid` (local_invocation_index, u32) in scope and
   * `decls` (workgroup arrays) declared before `main`.
   */
  workgroup?: { size: number; decls?: string };
}

/** Largest headDim of the simple attention kernels (private per-invocation accumulators). */
const MAX_HEAD_DIM = 256;

export const HELPERS = /* wgsl */ `
fn hash32(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u; x *= 0x7feb352du; x ^= x >> 15u; x *= 0x846ca68bu; x ^= x >> 16u;
  return x;
}
fn round_bf16(v: f32) -> f32 {
  let bits = bitcast<u32>(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) { return bitcast<f32>(((bits >> 16u) | 0x40u) << 16u); }
  return bitcast<f32>(((bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u) << 16u);
}
fn f32_to_f16_bits(bits: u32) -> u32 {
  let sign = (bits >> 16u) & 0x8000u;
  let a = bits & 0x7fffffffu;
  let e = a >> 23u;
  if (e == 0xffu) {
    if (a == 0x7f800000u) { return sign | 0x7c00u; }
    return sign | 0x7e00u | ((a >> 13u) & 0x3ffu);
  }
  if (a >= 0x477ff000u) { return sign | 0x7c00u; }
  if (e >= 113u) { return sign | ((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u); }
  if (a <= 0x33000000u) { return sign; }
  let sig = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;
  var h = sig >> shift;
  let rem = sig & ((1u << shift) - 1u);
  let halfway = 1u << (shift - 1u);
  if (rem > halfway || (rem == halfway && (h & 1u) == 1u)) { h += 1u; }
  return sign | h;
}
fn f16_bits_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  if (e != 0u) { return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u)); }
  // Subnormal: m * 2^-24 is exact in f32.
  let mag = f32(m) * 5.9604644775390625e-8;
  if (sign != 0u) { return -mag; }
  return mag;
}
fn round_f16(v: f32) -> f32 {
  let bits = bitcast<u32>(v);
  let h = f32_to_f16_bits(bits);
  if ((h & 0x7fffu) == 0u) { return bitcast<f32>((h & 0x8000u) << 16u); }
  return f16_bits_to_f32(h);
}
const GELU_K: f32 = 0.7978845608028654;
/** log(1 + r), accurate for small r (Goldberg's trick). */
fn log1p_(r: f32) -> f32 {
  let u = 1.0 + r;
  if (u == 1.0) { return r; }
  return log(u) * r / (u - 1.0);
}
fn tanh_safe(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }
`;

const ATT_INDEX = /* wgsl */ `
  let t = i % P.T; let bh = i / P.T; let h = bh % P.H; let b = bh / P.H;
  let stride = (P.H + 2u * P.KVH) * P.hd; let group = P.H / P.KVH;
`;

export const KERNELS: Record<string, KernelSpec> = {
  zero: { tensors: ['x'], params: [], body: 'x[i] = 0.0;' },
  copy: { tensors: ['dst', 'src'], params: [], body: 'dst[i] = src[i];' },
  add: { tensors: ['out', 'a', 'b'], params: [], body: 'out[i] = a[i] + b[i];' },
  roundF16: { tensors: ['x'], params: [], body: 'x[i] = round_f16(x[i]);' },
  roundBf16: { tensors: ['x'], params: [], body: 'x[i] = round_bf16(x[i]);' },
  dropout: {
    tensors: ['out', 'inp'], params: ['hseed', 'thr', 'never', 'scale:f32'],
    body: `
  let hv = hash32(i ^ P.hseed);
  var r = 0.0;
  if (P.never == 0u && hv >= P.thr) { r = inp[i] * P.scale; }
  out[i] = r;`,
  },
  embeddingForward: {
    tensors: ['out', 'table'], ints: ['ids'], params: ['C'],
    body: 'let n = i / P.C; let c = i % P.C; out[i] = table[u32(ids[n]) * P.C + c];',
  },
  /**
   * Invocation (c, bucket) adds, in token order, the rows of dout whose id falls in its bucket
   * (id % NB): every table row has one writer (no races, deterministic), and NB buckets give
   * C*NB invocations instead of C. The ids are read by all and stay in cache.
   */
  embeddingBackward: {
    tensors: ['dtable', 'dout'], ints: ['ids'], params: ['N', 'C', 'NB'],
    body: `
  let c = i % P.C; let bk = i / P.C;
  for (var n = 0u; n < P.N; n++) {
    let r = u32(ids[n]);
    if (r % P.NB == bk) { dtable[r * P.C + c] += dout[n * P.C + c]; }
  }`,
  },
  /** One invocation per output element: faster than the tiled kernel on SwiftShader (barriers are costly there). */
  matmulForward: {
    tensors: ['out', 'inp', 'w'], params: ['C', 'OC'],
    body: `
  let n = i / P.OC; let oc = i % P.OC;
  var s = 0.0;
  for (var c = 0u; c < P.C; c++) { s += inp[n * P.C + c] * w[oc * P.C + c]; }
  out[i] = s;`,
  },
  matmulBackwardInput: {
    tensors: ['dinp', 'dout', 'w'], params: ['C', 'OC'],
    body: `
  let n = i / P.C; let c = i % P.C;
  var s = 0.0;
  for (var oc = 0u; oc < P.OC; oc++) { s += dout[n * P.OC + oc] * w[oc * P.C + c]; }
  dinp[i] = s;`,
  },
  matmulBackwardWeight: {
    tensors: ['dw', 'dout', 'inp'], params: ['N', 'C', 'OC'],
    body: `
  let oc = i / P.C; let c = i % P.C;
  var s = 0.0;
  for (var n = 0u; n < P.N; n++) { s += dout[n * P.OC + oc] * inp[n * P.C + c]; }
  dw[i] += s;`,
  },
  addBiasForward: { tensors: ['out', 'bias'], params: ['OC'], body: 'out[i] = out[i] + bias[i % P.OC];' },
  /** One invocation per column, its rows in order (deterministic); a bias is a few thousand columns. */
  addBiasBackward: {
    tensors: ['db', 'dout'], params: ['N', 'OC'],
    body: `
  var s = 0.0;
  for (var n = 0u; n < P.N; n++) { s += dout[n * P.OC + i]; }
  db[i] += s;`,
  },
  rmsnormForward: {
    tensors: ['out', 'rstd', 'inp', 'w'], params: ['C', 'eps:f32'],
    body: `
  let r = i * P.C;
  var ss = 0.0;
  for (var c = 0u; c < P.C; c++) { let v = inp[r + c]; ss += v * v; }
  let s = 1.0 / sqrt(ss / f32(P.C) + P.eps);
  rstd[i] = s;
  for (var c = 0u; c < P.C; c++) { out[r + c] = inp[r + c] * s * w[c]; }`,
  },
  rmsnormBackwardInput: {
    tensors: ['dinp', 'dout', 'inp', 'w', 'rstd'], params: ['C'],
    body: `
  let r = i * P.C;
  let s = rstd[i];
  var dot = 0.0;
  for (var c = 0u; c < P.C; c++) { dot += w[c] * dout[r + c] * inp[r + c]; }
  let k = s * s * s * dot / f32(P.C);
  for (var c = 0u; c < P.C; c++) { dinp[r + c] += s * w[c] * dout[r + c] - k * inp[r + c]; }`,
  },
  rope: {
    tensors: ['x', 'cs'], params: ['T', 'nH', 'hd', 'stride', 'pos0', 'sign:f32'],
    body: `
  let half = P.hd / 2u; let j = i % half; let r = i / half; let h = r % P.nH; let bt = r / P.nH; let t = bt % P.T;
  let base = bt * P.stride + h * P.hd; let tab = (P.pos0 + t) * P.hd;
  let co = cs[tab + j]; let si = P.sign * cs[tab + half + j];
  let x1 = x[base + j]; let x2 = x[base + half + j];
  x[base + j] = x1 * co - x2 * si;
  x[base + half + j] = x2 * co + x1 * si;`,
  },
  attentionForward: {
    tensors: ['out', 'lse', 'qkv'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    body: `${ATT_INDEX}
  let kOff = (P.H + h / group) * P.hd; let vOff = kOff + P.KVH * P.hd;
  let q = (b * P.T + t) * stride + h * P.hd;
  var acc: array<f32, ${MAX_HEAD_DIM}>;
  for (var d = 0u; d < P.hd; d++) { acc[d] = 0.0; }
  var m = -3.0e38; var l = 0.0;
  for (var j = 0u; j <= t; j++) {
    let k = (b * P.T + j) * stride + kOff;
    var dot = 0.0;
    for (var d = 0u; d < P.hd; d++) { dot += qkv[q + d] * qkv[k + d]; }
    let s = dot * P.scale;
    let mNew = max(m, s);
    let corr = exp(m - mNew);
    let p = exp(s - mNew);
    l = l * corr + p;
    let v = (b * P.T + j) * stride + vOff;
    for (var d = 0u; d < P.hd; d++) { acc[d] = acc[d] * corr + p * qkv[v + d]; }
    m = mNew;
  }
  lse[bh * P.T + t] = m + log(l);
  let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
  for (var d = 0u; d < P.hd; d++) { out[ob + d] = acc[d] / l; }`,
  },
  attentionBackwardQ: {
    tensors: ['dqkv', 'dout', 'qkv', 'out', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    body: `${ATT_INDEX}
  let kOff = (P.H + h / group) * P.hd; let vOff = kOff + P.KVH * P.hd;
  let q = (b * P.T + t) * stride + h * P.hd;
  let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
  let L = lse[bh * P.T + t];
  var D = 0.0;
  for (var d = 0u; d < P.hd; d++) { D += dout[ob + d] * out[ob + d]; }
  var dq: array<f32, ${MAX_HEAD_DIM}>;
  for (var d = 0u; d < P.hd; d++) { dq[d] = 0.0; }
  for (var j = 0u; j <= t; j++) {
    let k = (b * P.T + j) * stride + kOff;
    let v = (b * P.T + j) * stride + vOff;
    var dot = 0.0; var dp = 0.0;
    for (var d = 0u; d < P.hd; d++) { dot += qkv[q + d] * qkv[k + d]; dp += dout[ob + d] * qkv[v + d]; }
    let p = exp(dot * P.scale - L);
    let ds = p * (dp - D) * P.scale;
    for (var d = 0u; d < P.hd; d++) { dq[d] += ds * qkv[k + d]; }
  }
  for (var d = 0u; d < P.hd; d++) { dqkv[q + d] = dq[d]; }`,
  },
  attentionBackwardKV: {
    tensors: ['dqkv', 'dout', 'qkv', 'out', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    body: `
  let j = i % P.T; let bk = i / P.T; let kh = bk % P.KVH; let b = bk / P.KVH;
  let stride = (P.H + 2u * P.KVH) * P.hd; let group = P.H / P.KVH;
  let kOff = (P.H + kh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  let k = (b * P.T + j) * stride + kOff;
  let v = (b * P.T + j) * stride + vOff;
  var dk: array<f32, ${MAX_HEAD_DIM}>;
  var dv: array<f32, ${MAX_HEAD_DIM}>;
  for (var d = 0u; d < P.hd; d++) { dk[d] = 0.0; dv[d] = 0.0; }
  for (var g = 0u; g < group; g++) {
    let h = kh * group + g;
    for (var t = j; t < P.T; t++) {
      let q = (b * P.T + t) * stride + h * P.hd;
      let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
      let L = lse[(b * P.H + h) * P.T + t];
      var D = 0.0; var dot = 0.0; var dp = 0.0;
      for (var d = 0u; d < P.hd; d++) {
        D += dout[ob + d] * out[ob + d];
        dot += qkv[q + d] * qkv[k + d];
        dp += dout[ob + d] * qkv[v + d];
      }
      let p = exp(dot * P.scale - L);
      let ds = p * (dp - D) * P.scale;
      for (var d = 0u; d < P.hd; d++) { dv[d] += p * dout[ob + d]; dk[d] += ds * qkv[q + d]; }
    }
  }
  for (var d = 0u; d < P.hd; d++) { dqkv[k + d] = dk[d]; dqkv[v + d] = dv[d]; }`,
  },
  kvCacheWrite: {
    tensors: ['cache', 'qkv'], params: ['T', 'H', 'KVH', 'hd', 'context', 'pos0'],
    body: `
  let width = 2u * P.KVH * P.hd; let e = i % width; let bt = i / width; let t = bt % P.T; let b = bt / P.T;
  let stride = (P.H + 2u * P.KVH) * P.hd;
  cache[(b * P.context + P.pos0 + t) * width + e] = qkv[bt * stride + P.H * P.hd + e];`,
  },
  attentionCached: {
    tensors: ['out', 'qkv', 'cache'], params: ['T', 'H', 'KVH', 'hd', 'context', 'pos0', 'scale:f32'],
    body: `${ATT_INDEX}
  let width = 2u * P.KVH * P.hd;
  let kOff = (h / group) * P.hd; let vOff = kOff + P.KVH * P.hd;
  let q = (b * P.T + t) * stride + h * P.hd;
  var acc: array<f32, ${MAX_HEAD_DIM}>;
  for (var d = 0u; d < P.hd; d++) { acc[d] = 0.0; }
  var m = -3.0e38; var l = 0.0;
  let last = P.pos0 + t;
  for (var j = 0u; j <= last; j++) {
    let k = (b * P.context + j) * width + kOff;
    var dot = 0.0;
    for (var d = 0u; d < P.hd; d++) { dot += qkv[q + d] * cache[k + d]; }
    let s = dot * P.scale;
    let mNew = max(m, s);
    let corr = exp(m - mNew);
    let p = exp(s - mNew);
    l = l * corr + p;
    let v = (b * P.context + j) * width + vOff;
    for (var d = 0u; d < P.hd; d++) { acc[d] = acc[d] * corr + p * cache[v + d]; }
    m = mNew;
  }
  let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
  for (var d = 0u; d < P.hd; d++) { out[ob + d] = acc[d] / l; }`,
  },
  swigluForward: {
    tensors: ['out', 'gu'], params: ['F'],
    body: `
  let n = i / P.F; let f = i % P.F;
  let g = gu[n * 2u * P.F + f]; let u = gu[n * 2u * P.F + P.F + f];
  out[i] = g / (1.0 + exp(-g)) * u;`,
  },
  swigluBackward: {
    tensors: ['dgu', 'dout', 'gu'], params: ['F'],
    body: `
  let n = i / P.F; let f = i % P.F;
  let gi = n * 2u * P.F + f; let ui = gi + P.F;
  let g = gu[gi]; let u = gu[ui]; let sig = 1.0 / (1.0 + exp(-g));
  let gh = dout[i];
  dgu[gi] = gh * u * sig * (1.0 + g * (1.0 - sig));
  dgu[ui] = gh * g * sig;`,
  },
  geluForward: {
    tensors: ['out', 'inp'], params: [],
    body: `
  let x = inp[i];
  out[i] = 0.5 * x * (1.0 + tanh_safe(GELU_K * (x + 0.044715 * x * x * x)));`,
  },
  geluBackward: {
    tensors: ['dinp', 'dout', 'inp'], params: [],
    body: `
  let x = inp[i];
  let th = tanh_safe(GELU_K * (x + 0.044715 * x * x * x));
  dinp[i] = dout[i] * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_K * (1.0 + 3.0 * 0.044715 * x * x));`,
  },
  crossEntropyForward: {
    tensors: ['losses', 'logits'], ints: ['targets'], params: ['V'],
    body: `
  let r = i * P.V;
  var mx = -3.4e38; var am = 0u;
  for (var v = 0u; v < P.V; v++) { let z = logits[r + v]; if (z > mx) { mx = z; am = v; } }
  // log-sum-exp = mx + log1p(sum over v != argmax): precise when the loss is small.
  var s = 0.0;
  for (var v = 0u; v < P.V; v++) { if (v != am) { s += exp(logits[r + v] - mx); } }
  let y = u32(targets[i]);
  losses[i] = log1p_(s) + (mx - logits[r + y]);`,
  },
  crossEntropyBackward: {
    tensors: ['losses', 'dlogits', 'logits'], ints: ['targets'], params: ['V', 'scale:f32'],
    body: `
  let r = i * P.V;
  var mx = -3.4e38; var am = 0u;
  for (var v = 0u; v < P.V; v++) { let z = logits[r + v]; if (z > mx) { mx = z; am = v; } }
  // log-sum-exp = mx + log1p(sum over v != argmax): precise when the loss is small.
  var s = 0.0;
  for (var v = 0u; v < P.V; v++) { if (v != am) { s += exp(logits[r + v] - mx); } }
  let y = u32(targets[i]);
  let lse = mx + log1p_(s);
  losses[i] = log1p_(s) + (mx - logits[r + y]);
  // 1 - p[y] without cancellation when y is the argmax: s / (1 + s).
  var gy = exp(logits[r + y] - lse) - 1.0;
  if (y == am) { gy = -s / (1.0 + s); }
  for (var v = 0u; v < P.V; v++) { dlogits[r + v] = exp(logits[r + v] - lse) * P.scale; }
  dlogits[r + y] = gy * P.scale;`,
  },
  adamw: {
    tensors: ['p', 'g', 'm', 'v'], params: ['lr:f32', 'b1:f32', 'om1:f32', 'b2:f32', 'om2:f32', 'eps:f32', 'decay:f32', 'bc1:f32', 'bc2:f32', 'scale:f32'],
    body: `
  let gi = g[i] * P.scale;
  let mi = P.b1 * m[i] + P.om1 * gi;
  let vi = P.b2 * v[i] + P.om2 * gi * gi;
  m[i] = mi; v[i] = vi;
  p[i] = p[i] * P.decay - (P.lr * (mi / P.bc1)) / (sqrt(vi / P.bc2) + P.eps);`,
  },
  adamwClip: {
    tensors: ['p', 'g', 'm', 'v', 'ns'], params: ['lr:f32', 'b1:f32', 'om1:f32', 'b2:f32', 'om2:f32', 'eps:f32', 'decay:f32', 'bc1:f32', 'bc2:f32', 'scale:f32', 'absScale:f32', 'maxNorm:f32'],
    body: `
  let norm = sqrt(ns[0u]) * P.absScale;
  // A non-finite norm (overflow, NaN loss) skips the update; tested on the bits, which no
  // compiler's float assumptions can fold away.
  if ((bitcast<u32>(norm) & 0x7f800000u) == 0x7f800000u) { return; }
  var sc = P.scale;
  if (P.maxNorm > 0.0) { sc = sc * min(1.0, P.maxNorm / (norm + 1e-6)); }
  let gi = g[i] * sc;
  let mi = P.b1 * m[i] + P.om1 * gi;
  let vi = P.b2 * v[i] + P.om2 * gi * gi;
  m[i] = mi; v[i] = vi;
  p[i] = p[i] * P.decay - (P.lr * (mi / P.bc1)) / (sqrt(vi / P.bc2) + P.eps);`,
  },
  ...generatedKernels(),
};

export type KernelName = string;

export const WORKGROUP = 64;

/** Stores into f16 storage: WGSL leaves f16(v) of an out-of-range v indeterminate, so an overflow
 * goes to ±inf here explicitly (as IEEE round-to-nearest-even does from 65520 on), which is how
 * dynamic loss scaling sees it. */
const HALF_HELPERS = /* wgsl */ `
fn to_f16(v: f32) -> f16 {
  if (abs(v) >= 65520.0) {
    // ±inf from its bits (a constant inf would be a shader-creation error)
    let bits = select(0x7c00u, 0xfc00u, v < 0.0);
    return bitcast<vec2<f16>>(bits | (bits << 16u)).x;
  }
  return f16(v);
}
`;

/** Index of the `]` closing the `[` at `open`. */
function closing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '[' || text[i] === '(') depth++;
    else if (text[i] === ']' || text[i] === ')') if (--depth === 0) return i;
  }
  throw new Error(`unbalanced brackets in kernel body: ${text.slice(open, open + 40)}`);
}
/** Index of the `;` ending the statement that continues at `from`. */
function statementEnd(text: string, from: number): number {
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (c === '[' || c === '(') depth++;
    else if (c === ']' || c === ')') depth--;
    else if (c === ';' && depth === 0) return i;
  }
  throw new Error(`no end of statement in kernel body: ${text.slice(from, from + 40)}`);
}

/**
 * Rewrites the accesses to f16 tensors (`half`: tensor name -> slot) so the body keeps computing
 * in f32: a read `x[e]` becomes `f32(fbS[P.o_x + e])`, a store `x[e] = v;` becomes
 * `fbS[P.o_x + e] = to_f16(v);` and `x[e] += v;` (or -=, *=) a load, the f32 operation and a store.
 */
function rewriteHalfAccesses(body: string, half: Map<string, number>): string {
  if (half.size === 0) return body;
  const pattern = new RegExp(`\\b(${[...half.keys()].join('|')})\\[`, 'g');
  let out = '';
  let at = 0;
  for (;;) {
    pattern.lastIndex = at;
    const m = pattern.exec(body);
    if (!m) return out + body.slice(at);
    const name = m[1];
    const open = m.index + name.length;
    const close = closing(body, open);
    const index = rewriteHalfAccesses(body.slice(open + 1, close), half);
    const ref = `fb${half.get(name)}[P.o_${name} + ${index}]`;
    out += body.slice(at, m.index);
    const op = /^\s*([-+*/]?)=(?!=)/.exec(body.slice(close + 1));
    if (op) {
      const rhsStart = close + 1 + op[0].length;
      const end = statementEnd(body, rhsStart);
      const rhs = rewriteHalfAccesses(body.slice(rhsStart, end), half);
      out += op[1] ? `${ref} = to_f16(f32(${ref}) ${op[1]} (${rhs}))` : `${ref} = to_f16(${rhs})`;
      at = end;
    } else {
      out += `f32(${ref})`;
      at = close + 1;
    }
  }
}

/**
 * WGSL for `spec` when its float tensors live in the buffer slots `slotOf` (tensor index -> slot,
 * slots numbered from 0 in first-use order; int tensors always get their own slots after them).
 * Slots whose `halfSlots` entry is true hold f16 (the adapter's shader-f16): their tensors are
 * loaded into f32 and stored rounded, so the body computes in f32 either way.
 */
export function shaderSource(spec: KernelSpec, slotOf: number[], halfSlots: readonly boolean[] = []): string {
  const ints = spec.ints ?? [];
  const nSlots = slotOf.length === 0 ? 0 : Math.max(...slotOf) + 1;
  const fields = ['n_: u32', ...spec.tensors.map((t) => `o_${t}: u32`), ...ints.map((t) => `o_${t}: u32`),
    ...spec.params.map((p) => { const [name, type = 'u32'] = p.split(':'); return `${name}: ${type}`; })];
  const decls: string[] = [`struct Params { ${fields.join(', ')} }`, '@group(0) @binding(0) var<uniform> P: Params;'];
  for (let s = 0; s < nSlots; s++) decls.push(`@group(0) @binding(${s + 1}) var<storage, read_write> fb${s}: array<${halfSlots[s] ? 'f16' : 'f32'}>;`);
  ints.forEach((_, k) => decls.push(`@group(0) @binding(${nSlots + 1 + k}) var<storage, read_write> ib${k}: array<i32>;`));
  let body = spec.body;
  const half = new Map<string, number>();
  spec.tensors.forEach((t, k) => {
    if (halfSlots[slotOf[k]]) half.set(t, slotOf[k]);
    else body = body.replace(new RegExp(`\\b${t}\\[`, 'g'), `fb${slotOf[k]}[P.o_${t} + `);
  });
  body = rewriteHalfAccesses(body, half);
  ints.forEach((t, k) => { body = body.replace(new RegExp(`\\b${t}\\[`, 'g'), `ib${k}[P.o_${t} + `); });
  const main = spec.workgroup
    ? `${spec.workgroup.decls ?? ''}
@compute @workgroup_size(${spec.workgroup.size}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {${body}
}`
    : `@compute @workgroup_size(${WORKGROUP}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WORKGROUP}u;
  if (i >= P.n_) { return; }${body}
}`;
  const f16 = half.size > 0 ? `enable f16;\n${HALF_HELPERS}` : '';
  return `${f16}${HELPERS}\n${decls.join('\n')}\n${main}\n`;
}
