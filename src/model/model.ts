/**
 * The LLaMA-style model, forward and backward, top to bottom, as calls into the kernel seam.
 *
 *   tokens -> embed_tokens -> [RMSNorm -> attention (RoPE) -> +residual
 *                              RMSNorm -> MLP (SwiGLU | GELU) -> +residual] x n_layers
 *          -> RMSNorm -> lm_head -> logits -> cross-entropy
 *
 * All parameters live in one device buffer (layout in params.ts), their gradients in another.
 * Activations live in buffers allocated once per (B, T) shape and reused every step: a training
 * step allocates nothing.
 */
import type { Backend, IntTensor, Tensor, AttentionShape } from '../backend/types.js';
import type { ModelConfig } from './config.js';
import { headDim, qkvDim, validateConfig } from './config.js';
import { check } from '../errors.js';
import { paramLayout, type ParamLayout } from './params.js';
import { hash32 } from '../util/random.js';

export interface LayerTensors {
  qkv: Tensor;
  /** The q|k|v bias (config.qkv_bias), else null. */
  qkvBias: Tensor | null;
  o: Tensor;
  mlpIn: Tensor;
  down: Tensor;
  ln1: Tensor;
  ln2: Tensor;
}

export interface ParamTensors {
  /** The whole flat buffer. */
  all: Tensor;
  embed: Tensor;
  lmHead: Tensor;
  norm: Tensor;
  layers: LayerTensors[];
}

/** Per-(B,T) buffers: what the forward keeps for the backward, and the backward's scratch. */
export interface Activations {
  B: number;
  T: number;
  ids: IntTensor;
  targets: IntTensor;
  /** residual[2l] enters layer l, residual[2l+1] is after its attention, residual[2L] is the output. */
  residual: Tensor[];
  ln1: Tensor[];
  ln1Rstd: Tensor[];
  qkv: Tensor[];
  att: Tensor[];
  lse: Tensor[];
  ln2: Tensor[];
  ln2Rstd: Tensor[];
  /** MLP pre-activation: [N, 2F] gate|up for SwiGLU, [N, F] for GELU. */
  mlpIn: Tensor[];
  /** MLP activation output [N, F]. */
  mlpAct: Tensor[];
  lnf: Tensor;
  lnfRstd: Tensor;
  /** [N, V]; overwritten by dlogits in the backward. */
  logits: Tensor;
  losses: Tensor;
  /** Output of o_proj / down_proj before dropout and the residual add. */
  branch: Tensor;
  // gradient scratch, reused by every layer
  dresidual: Tensor;
  dbranch: Tensor;
  dln: Tensor;
  dqkv: Tensor;
  datt: Tensor;
  dmlpIn: Tensor;
  dmlpAct: Tensor;
  /** The tensors stored as f16 (mixed precision on a device with f16 storage): what the forward
   * and backward would round to f16 anyway, so their roundHalf is skipped. Empty otherwise. */
  halfStored: Set<Tensor>;
  /** Made for forwards alone (ForwardOptions.forwardOnly): every layer shares one layer's buffers,
   * so no backward can run on them. */
  forwardOnly: boolean;
}

/** A model on a backend: its parameter and gradient buffers and its activation buffers. Make one with createModel. */
export interface Model {
  config: ModelConfig;
  backend: Backend;
  /** Where each parameter lives in params.all (and grads.all). */
  layout: ParamLayout;
  /** Views of the FP32 weights, all in one flat buffer. */
  params: ParamTensors;
  /** Gradients, laid out like params; backward adds to them. Allocated on first use, so a model
   * that only runs forward (sampling, evaluation) holds its weights alone. */
  readonly grads: ParamTensors;
  /** [context, headDim]: cos in the first half of each row, sin in the second. */
  ropeTable: Tensor;
  /** The activation buffers of the last (B, T) run; null before the first forward. */
  acts: Activations | null;
  /** Mixed precision: the weights rounded to the half format, used by forward and backward. */
  halfParams: ParamTensors | null;
  /** halfParams is f16 storage (fp16 on a backend with halfStorage), not f32 holding f16 values. */
  halfParamsStored: boolean;
  /** Mixed precision with accumulation: where a later micro-batch's gradients are computed and
   * rounded before they are added to grads (kept in FP32, as PyTorch keeps .grad). Made on first use. */
  halfMicroGrads: ParamTensors | null;
}

function paramViews(backend: Backend, all: Tensor, layout: ParamLayout, c: ModelConfig): ParamTensors {
  const C = c.d_model, V = c.vocab_size, F = c.intermediate_size, hd = headDim(c);
  const v = (offset: number, size: number): Tensor => backend.view(all, offset, size);
  const mlpRows = c.mlp === 'swiglu' ? 2 * F : F;
  return {
    all,
    embed: v(layout.embed, V * C),
    lmHead: v(layout.lmHead, V * C),
    norm: v(layout.norm, C),
    layers: layout.layers.map((l) => ({
      qkv: v(l.qkv, qkvDim(c) * C),
      qkvBias: l.qkvBias >= 0 ? v(l.qkvBias, qkvDim(c)) : null,
      o: v(l.o, C * c.n_heads * hd),
      mlpIn: v(l.mlpIn, mlpRows * C),
      down: v(l.down, C * F),
      ln1: v(l.ln1, C),
      ln2: v(l.ln2, C),
    })),
  };
}

/** cos/sin of pos·theta^(-2i/hd), computed in f64 and stored once. */
export function ropeTable(c: ModelConfig): Float32Array {
  const hd = headDim(c), half = hd / 2;
  const t = new Float32Array(c.context * hd);
  for (let pos = 0; pos < c.context; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * Math.pow(c.rope_theta, (-2 * i) / hd);
      t[pos * hd + i] = Math.cos(angle);
      t[pos * hd + half + i] = Math.sin(angle);
    }
  }
  return t;
}

/** A model with zeroed parameters on `backend`; load or initialise weights with `setWeights`. */
export function createModel(backend: Backend, config: ModelConfig): Model {
  // A hand-made config (not from resolveConfig) is checked as resolveConfig checks it.
  validateConfig(config);
  const layout = paramLayout(config);
  const params = paramViews(backend, backend.alloc(layout.size), layout, config);
  let grads: ParamTensors | null = null;
  const table = backend.alloc(config.context * headDim(config));
  backend.write(table, ropeTable(config));
  return {
    config, backend, layout, params, ropeTable: table, acts: null, halfParams: null, halfParamsStored: false, halfMicroGrads: null,
    get grads() {
      grads ??= paramViews(backend, backend.alloc(layout.size), layout, config);
      return grads;
    },
  };
}

/**
 * Copies `weights` (a host array laid out as model.layout, e.g. from initialWeights or a checkpoint)
 * into the parameter buffer. Throws unless it has exactly model.layout.size elements.
 */
export function setWeights(model: Model, weights: Float32Array): void {
  check(weights.length === model.layout.size, () => `setWeights: the model has ${model.layout.size} parameters, the weights ${weights.length} values (weights of another config?)`);
  model.backend.write(model.params.all, weights);
}

/**
 * A host copy of the weights, laid out as model.layout. Async: reads back from the device after
 * every kernel enqueued before it has run.
 */
export function readWeights(model: Model): Promise<Float32Array> {
  return model.backend.read(model.params.all);
}

/** The backend's allocator of f16 tensors where it stores f16 natively, else null. */
function f16Alloc(be: Backend): ((size: number) => Tensor) | null {
  return be.halfStorage && be.allocHalf ? (size) => be.allocHalf!(size) : null;
}

/** How many 4-byte values activationsFor allocates for a batch of B sequences of T tokens (f32
 * storage); with `forwardOnly`, as forwards alone need them (one layer's buffers for all). */
export function activationValues(c: ModelConfig, B: number, T: number, forwardOnly = false): number {
  const N = B * T, C = c.d_model, L = forwardOnly ? 1 : c.n_layers, F = c.intermediate_size, QKV = qkvDim(c), HD = c.n_heads * headDim(c);
  const mlpIn = c.mlp === 'swiglu' ? 2 * F : F;
  // Each layer's two residual buffers (forwards alone: the one residual buffer, counted below).
  const residuals = forwardOnly ? 0 : 2 * C;
  const perLayer = N * (residuals + C + 1 + QKV + HD + C + 1 + mlpIn + F) + B * c.n_heads * T;
  return N * (2 + 6 * C + 1 + c.vocab_size + 1 + QKV + HD + mlpIn + F) + L * perLayer;
}

/**
 * The activation buffers for (B, T), allocated on first use and kept while the shape holds. With
 * `f16` (fp16 mixed precision) on a backend that stores f16, the activations and activation
 * gradients that mixed precision rounds to f16 are allocated as f16: half the memory and
 * bandwidth; norms' rstd, attention's lse, the losses and the pre-residual branch stay f32.
 */
export function activationsFor(model: Model, B: number, T: number, f16 = false, forwardOnly = false): Activations {
  // Buffers made for a backward serve a forward alone too (a periodic evaluation in training).
  if (model.acts && model.acts.B === B && model.acts.T === T && (forwardOnly || !model.acts.forwardOnly)) return model.acts;
  const { backend: be, config: c } = model;
  const halfStored = new Set<Tensor>();
  const allocF16 = f16 ? f16Alloc(be) : null;
  const h = (size: number): Tensor => {
    if (!allocF16) return be.alloc(size);
    const t = allocF16(size);
    halfStored.add(t);
    return t;
  };
  // Forwards alone: each layer reads only what the layer before left, so one set of buffers serves all.
  const perLayer = (n: number, make: () => Tensor): Tensor[] => forwardOnly ? new Array<Tensor>(n).fill(make()) : Array.from({ length: n }, make);
  const manyHalf = (n: number, size: number): Tensor[] => perLayer(n, () => h(size));
  check(T <= c.context, () => `sequence length ${T} exceeds the model's context ${c.context}`);
  const N = B * T, C = c.d_model, L = c.n_layers, V = c.vocab_size, F = c.intermediate_size;
  const QKV = qkvDim(c), HD = c.n_heads * headDim(c);
  const mlpInDim = c.mlp === 'swiglu' ? 2 * F : F;
  const many = (n: number, size: number): Tensor[] => perLayer(n, () => be.alloc(size));
  model.acts = {
    B, T,
    ids: be.allocInt(N),
    targets: be.allocInt(N),
    residual: manyHalf(2 * L + 1, N * C),
    ln1: manyHalf(L, N * C),
    ln1Rstd: many(L, N),
    qkv: manyHalf(L, N * QKV),
    att: manyHalf(L, N * HD),
    lse: many(L, B * c.n_heads * T),
    ln2: manyHalf(L, N * C),
    ln2Rstd: many(L, N),
    mlpIn: manyHalf(L, N * mlpInDim),
    mlpAct: manyHalf(L, N * F),
    lnf: h(N * C),
    lnfRstd: be.alloc(N),
    logits: h(N * V),
    losses: be.alloc(N),
    branch: be.alloc(N * C),
    dresidual: h(N * C),
    dbranch: be.alloc(N * C),
    dln: h(N * C),
    dqkv: h(N * QKV),
    datt: h(N * HD),
    dmlpIn: h(N * mlpInDim),
    dmlpAct: h(N * F),
    halfStored,
    forwardOnly,
  };
  return model.acts;
}

export interface ForwardOptions {
  /** Dropout is applied only when training and config.dropout > 0. */
  training?: boolean;
  /** Seeds this step's dropout masks; the backward must get the same value. */
  dropoutSeed?: number;
  /** Mixed precision: weights, activations and gradients rounded to this format. */
  half?: 'f16' | 'bf16';
  /** No backward follows (sampling, evaluation): unless the model has buffers for this (B, T)
   * already, every layer shares one layer's activation buffers (about n_layers times less memory). */
  forwardOnly?: boolean;
}

/** The FP32 master weights rounded to `format`, refreshed at every forward. */
function halfWeights(model: Model, format: 'f16' | 'bf16'): ParamTensors {
  const be = model.backend;
  // f16 storage rounds on the copy itself; bf16 (or no f16 storage) is rounded in f32 buffers.
  const allocF16 = format === 'f16' ? f16Alloc(be) : null;
  const stored = allocF16 !== null;
  if (!model.halfParams || model.halfParamsStored !== stored) {
    model.halfParams = paramViews(be, allocF16 ? allocF16(model.layout.size) : be.alloc(model.layout.size), model.layout, model.config);
    model.halfParamsStored = stored;
  }
  be.copy(model.halfParams.all, model.params.all);
  if (!stored) be.roundHalf(model.halfParams.all, format);
  return model.halfParams;
}

/** The attention shape of a batch of B sequences of T tokens. */
export function attentionShape(c: ModelConfig, B: number, T: number): AttentionShape {
  return { B, T, nHeads: c.n_heads, nKvHeads: c.n_kv_heads, headDim: headDim(c) };
}

/** Lets the backend pick its fastest kernels for training batches of [B, T] (Backend.tune; a no-op on most backends). */
export async function tuneKernels(model: Model, B: number, T: number): Promise<void> {
  await model.backend.tune?.({ attention: [attentionShape(model.config, B, T)] });
}

/** Dropout sites: 0 is the embedding, 1 + 2l layer l's attention branch, 2 + 2l its MLP branch. */
function siteSeed(stepSeed: number, site: number): number {
  return hash32((stepSeed ^ Math.imul(site + 1, 0x9e3779b9)) >>> 0);
}

/**
 * Runs the model on `ids` ([B, T], row-major), leaving logits in acts.logits.
 * With `targets` it also leaves each position's loss in acts.losses.
 */
export function forward(model: Model, ids: ArrayLike<number>, targets: ArrayLike<number> | null, B: number, T: number, opts: ForwardOptions = {}): Activations {
  const { backend: be, config: c } = model;
  const w = opts.half ? halfWeights(model, opts.half) : model.params;
  const a = activationsFor(model, B, T, opts.half === 'f16', opts.forwardOnly === true);
  const half = opts.half;
  const r = (t: Tensor): void => { if (half && !a.halfStored.has(t)) be.roundHalf(t, half); };
  const N = B * T, C = c.d_model, F = c.intermediate_size, hd = headDim(c), QKV = qkvDim(c), HD = c.n_heads * hd;
  const shape = attentionShape(c, B, T);
  const p = opts.training ? c.dropout : 0;
  const seed = opts.dropoutSeed ?? 0;

  check(ids.length === N, () => `forward: ${ids.length} token ids for B×T = ${B}×${T} = ${N}`);
  check(targets === null || targets.length === N, () => `forward: ${targets!.length} targets for B×T = ${B}×${T} = ${N}`);
  be.writeInt(a.ids, ids);
  be.embeddingForward(a.residual[0], a.ids, w.embed, N, C);
  if (p > 0) be.dropout(a.residual[0], a.residual[0], p, siteSeed(seed, 0));
  r(a.residual[0]);

  for (let l = 0; l < c.n_layers; l++) {
    const lw = w.layers[l];
    // attention branch
    be.rmsnormForward(a.ln1[l], a.ln1Rstd[l], a.residual[2 * l], lw.ln1, N, C, c.rms_norm_eps);
    r(a.ln1[l]);
    be.matmulForward(a.qkv[l], a.ln1[l], lw.qkv, N, C, QKV);
    if (lw.qkvBias) be.addBiasForward(a.qkv[l], lw.qkvBias, N, QKV);
    be.rope(a.qkv[l], model.ropeTable, B, T, c.n_heads + c.n_kv_heads, hd, QKV, 0, false);
    r(a.qkv[l]);
    be.attentionForward(a.att[l], a.lse[l], a.qkv[l], shape);
    r(a.att[l]);
    be.matmulForward(a.branch, a.att[l], lw.o, N, HD, C);
    if (p > 0) be.dropout(a.branch, a.branch, p, siteSeed(seed, 1 + 2 * l));
    be.add(a.residual[2 * l + 1], a.residual[2 * l], a.branch);
    r(a.residual[2 * l + 1]);
    // MLP branch
    be.rmsnormForward(a.ln2[l], a.ln2Rstd[l], a.residual[2 * l + 1], lw.ln2, N, C, c.rms_norm_eps);
    r(a.ln2[l]);
    if (c.mlp === 'swiglu') {
      be.matmulForward(a.mlpIn[l], a.ln2[l], lw.mlpIn, N, C, 2 * F);
      r(a.mlpIn[l]);
      be.swigluForward(a.mlpAct[l], a.mlpIn[l], N, F);
    } else {
      be.matmulForward(a.mlpIn[l], a.ln2[l], lw.mlpIn, N, C, F);
      r(a.mlpIn[l]);
      be.geluForward(a.mlpAct[l], a.mlpIn[l], N * F);
    }
    r(a.mlpAct[l]);
    be.matmulForward(a.branch, a.mlpAct[l], lw.down, N, F, C);
    if (p > 0) be.dropout(a.branch, a.branch, p, siteSeed(seed, 2 + 2 * l));
    be.add(a.residual[2 * l + 2], a.residual[2 * l + 1], a.branch);
    r(a.residual[2 * l + 2]);
  }

  be.rmsnormForward(a.lnf, a.lnfRstd, a.residual[2 * c.n_layers], w.norm, N, C, c.rms_norm_eps);
  r(a.lnf);
  be.matmulForward(a.logits, a.lnf, w.lmHead, N, C, c.vocab_size);
  r(a.logits);
  if (targets) {
    be.writeInt(a.targets, targets);
    be.crossEntropyForward(a.losses, a.logits, a.targets, N, c.vocab_size);
  }
  return a;
}

/**
 * Gradients of (mean loss × lossScale) with respect to every parameter, ADDED to model.grads
 * (zero them with zeroGrads first; leaving them accumulates micro-batches). Needs the forward
 * of the same batch just before, with targets; overwrites acts.logits with dlogits.
 *
 * Under mixed precision the gradients are rounded to the half format (FP16 overflows to inf
 * there). Pass `accumulate` for every micro-batch after a step's first: its gradients are then
 * rounded on their own and added in FP32, as PyTorch adds half-precision gradients into FP32
 * .grad, instead of rounding the running sum.
 */
export function backward(model: Model, opts: ForwardOptions & { lossScale?: number; accumulate?: boolean } = {}): void {
  const a = model.acts;
  if (!a) throw new Error('backward called before forward');
  if (a.forwardOnly) throw new Error('backward after a forward with forwardOnly: its activations were not kept');
  const half = opts.half;
  if (half && !model.halfParams) throw new Error('backward with half precision needs a forward with it');
  if (half && opts.accumulate) {
    const be = model.backend;
    model.halfMicroGrads ??= paramViews(be, be.alloc(model.layout.size), model.layout, model.config);
    const micro = model.halfMicroGrads;
    be.zero(micro.all);
    backwardInto(model, micro, opts);
    be.add(model.grads.all, model.grads.all, micro.all);
    return;
  }
  backwardInto(model, model.grads, opts);
}

function backwardInto(model: Model, g: ParamTensors, opts: ForwardOptions & { lossScale?: number }): void {
  const { backend: be, config: c } = model;
  const a = model.acts!;
  const half = opts.half;
  const w = half ? model.halfParams! : model.params;
  // Gradients in the half format, as they would be stored; FP16 overflows to inf here.
  const r = (t: Tensor): void => { if (half && !a.halfStored.has(t)) be.roundHalf(t, half); };
  const { B, T } = a;
  const N = B * T, C = c.d_model, F = c.intermediate_size, hd = headDim(c), QKV = qkvDim(c), HD = c.n_heads * hd;
  const shape = attentionShape(c, B, T);
  const p = opts.training ? c.dropout : 0;
  const seed = opts.dropoutSeed ?? 0;
  // Dropout is linear with a fixed mask, so its backward is the same mask on the gradient.
  const throughDropout = (site: number): Tensor => {
    if (p === 0) return a.dresidual;
    be.dropout(a.dbranch, a.dresidual, p, siteSeed(seed, site));
    return a.dbranch;
  };

  // dlogits = (softmax - onehot) · lossScale / N, in place of the logits.
  be.crossEntropyBackward(a.losses, a.logits, a.logits, a.targets, N, c.vocab_size, (opts.lossScale ?? 1) / N);
  r(a.logits);
  be.matmulBackward(a.dln, g.lmHead, a.logits, a.lnf, w.lmHead, N, C, c.vocab_size);
  be.zero(a.dresidual);
  r(a.dln);
  be.rmsnormBackward(a.dresidual, g.norm, a.dln, a.residual[2 * c.n_layers], w.norm, a.lnfRstd, N, C);
  r(a.dresidual);

  for (let l = c.n_layers - 1; l >= 0; l--) {
    const lw = w.layers[l], lg = g.layers[l];
    // MLP branch: residual[2l+2] = residual[2l+1] + down(act(mlpIn(ln2(residual[2l+1]))))
    be.matmulBackward(a.dmlpAct, lg.down, throughDropout(2 + 2 * l), a.mlpAct[l], lw.down, N, F, C);
    if (c.mlp === 'swiglu') {
      r(a.dmlpAct);
      be.swigluBackward(a.dmlpIn, a.dmlpAct, a.mlpIn[l], N, F);
      r(a.dmlpIn);
      be.matmulBackward(a.dln, lg.mlpIn, a.dmlpIn, a.ln2[l], lw.mlpIn, N, C, 2 * F);
    } else {
      r(a.dmlpAct);
      be.geluBackward(a.dmlpIn, a.dmlpAct, a.mlpIn[l], N * F);
      r(a.dmlpIn);
      be.matmulBackward(a.dln, lg.mlpIn, a.dmlpIn, a.ln2[l], lw.mlpIn, N, C, F);
    }
    r(a.dln);
    be.rmsnormBackward(a.dresidual, lg.ln2, a.dln, a.residual[2 * l + 1], lw.ln2, a.ln2Rstd[l], N, C);
    r(a.dresidual);
    // attention branch: residual[2l+1] = residual[2l] + o(attention(rope(qkv(ln1(residual[2l])) + qkvBias)))
    be.matmulBackward(a.datt, lg.o, throughDropout(1 + 2 * l), a.att[l], lw.o, N, HD, C);
    r(a.datt);
    be.attentionBackward(a.dqkv, a.datt, a.qkv[l], a.att[l], a.lse[l], shape);
    r(a.dqkv);
    be.rope(a.dqkv, model.ropeTable, B, T, c.n_heads + c.n_kv_heads, hd, QKV, 0, true);
    if (lg.qkvBias) be.addBiasBackward(lg.qkvBias, a.dqkv, N, QKV);
    be.matmulBackward(a.dln, lg.qkv, a.dqkv, a.ln1[l], lw.qkv, N, C, QKV);
    r(a.dln);
    be.rmsnormBackward(a.dresidual, lg.ln1, a.dln, a.residual[2 * l], lw.ln1, a.ln1Rstd[l], N, C);
    r(a.dresidual);
  }
  be.embeddingBackward(g.embed, throughDropout(0), a.ids, N, C);
  r(g.all);
}

/** Sets model.grads to zero (enqueued). backward adds to the gradients, so call this before each step's first backward. */
export function zeroGrads(model: Model): void {
  model.backend.zero(model.grads.all);
}

/** Mean loss of the last forward with targets (async: the one read back of a step). */
export async function meanLoss(model: Model): Promise<number> {
  if (!model.acts) throw new Error('no forward has run');
  const losses = await model.backend.read(model.acts.losses);
  let s = 0;
  for (let i = 0; i < losses.length; i++) s += losses[i];
  return s / losses.length;
}

/** out[0] += weight · (mean loss of the last forward with targets), on the device: no read back. */
export function accumulateMeanLoss(model: Model, out: Tensor, weight = 1): void {
  if (!model.acts) throw new Error('no forward has run');
  model.backend.accumulateSum(out, model.acts.losses, weight / model.acts.losses.size);
}

/** Keys and values of every layer for incremental generation, plus the buffers it runs in. */
export interface KvCache {
  B: number;
  /** Positions already in the cache. */
  length: number;
  /** The most new tokens per sequence one forwardCached call takes (its working buffers' rows per sequence). */
  chunk: number;
  /** Per layer [B, context, 2·KVH·hd]. */
  layers: Tensor[];
  // Working buffers sized for B·chunk rows; a call with Tn new tokens uses the first B·Tn.
  x: Tensor; ln: Tensor; rstd: Tensor; qkv: Tensor; att: Tensor; mlpIn: Tensor; mlpAct: Tensor; branch: Tensor; logits: Tensor;
  ids: IntTensor;
}

/**
 * An empty KV cache (length 0) for generating B sequences at once with forwardCached. Allocates
 * once: per layer B·context·2·n_kv_heads·headDim floats for the whole context, plus working
 * buffers for `chunk` new tokens per sequence in one call (logits alone B·chunk·vocab_size;
 * default and most: the context). Set `length` to 0 to start new sequences in it.
 */
export function createKvCache(model: Model, B: number, opts: { chunk?: number } = {}): KvCache {
  const { backend: be, config: c } = model;
  const chunk = Math.min(c.context, opts.chunk ?? c.context);
  check(Number.isInteger(chunk) && chunk >= 1, () => `createKvCache: chunk must be a whole number of at least 1 (got ${opts.chunk})`);
  const rows = B * chunk, F = c.intermediate_size;
  return {
    B, length: 0, chunk,
    layers: Array.from({ length: c.n_layers }, () => be.alloc(B * c.context * 2 * c.n_kv_heads * headDim(c))),
    x: be.alloc(rows * c.d_model), ln: be.alloc(rows * c.d_model), rstd: be.alloc(rows),
    qkv: be.alloc(rows * qkvDim(c)), att: be.alloc(rows * c.n_heads * headDim(c)),
    mlpIn: be.alloc(rows * (c.mlp === 'swiglu' ? 2 * F : F)), mlpAct: be.alloc(rows * F),
    branch: be.alloc(rows * c.d_model), logits: be.alloc(rows * c.vocab_size), ids: be.allocInt(rows),
  };
}

/**
 * Runs Tn new tokens per sequence (ids [B, Tn]) at positions cache.length.., appending their keys
 * and values to the cache. Returns the logits [B, Tn, V] (a view valid until the next call).
 */
export function forwardCached(model: Model, cache: KvCache, ids: ArrayLike<number>, Tn: number): Tensor {
  const { backend: be, config: c, params: w } = model;
  const B = cache.B, N = B * Tn, C = c.d_model, F = c.intermediate_size, hd = headDim(c), QKV = qkvDim(c), HD = c.n_heads * hd;
  const pos0 = cache.length;
  if (pos0 + Tn > c.context) throw new Error(`generation past the context: ${pos0} + ${Tn} > ${c.context}`);
  if (Tn > cache.chunk) throw new Error(`forwardCached: ${Tn} new tokens, more than the cache's chunk of ${cache.chunk} (feed them in pieces)`);
  // The views of the working buffers and the attention shape for this Tn, made once per Tn and
  // kept on the cache (generation calls this once per token with Tn = 1).
  type Views = { x: Tensor; ln: Tensor; rstd: Tensor; qkv: Tensor; att: Tensor; mlpIn: Tensor; mlpAct: Tensor; branch: Tensor; logits: Tensor; shape: AttentionShape };
  const memo = ((cache as KvCache & { viewsByTn?: Map<number, Views> }).viewsByTn ??= new Map<number, Views>());
  let views = memo.get(Tn);
  if (!views) {
    const v = (t: Tensor, n: number): Tensor => be.view(t, 0, n);
    views = {
      x: v(cache.x, N * C), ln: v(cache.ln, N * C), rstd: v(cache.rstd, N), qkv: v(cache.qkv, N * QKV), att: v(cache.att, N * HD),
      mlpIn: v(cache.mlpIn, N * (c.mlp === 'swiglu' ? 2 * F : F)), mlpAct: v(cache.mlpAct, N * F), branch: v(cache.branch, N * C),
      logits: v(cache.logits, N * c.vocab_size),
      shape: attentionShape(c, B, Tn),
    };
    memo.set(Tn, views);
  }
  const { x, ln, rstd, qkv, att, mlpIn, mlpAct, branch, logits, shape } = views;

  be.writeInt(cache.ids, ids);
  be.embeddingForward(x, cache.ids, w.embed, N, C);
  for (let l = 0; l < c.n_layers; l++) {
    const lw = w.layers[l];
    be.rmsnormForward(ln, rstd, x, lw.ln1, N, C, c.rms_norm_eps);
    be.matmulForward(qkv, ln, lw.qkv, N, C, QKV);
    if (lw.qkvBias) be.addBiasForward(qkv, lw.qkvBias, N, QKV);
    be.rope(qkv, model.ropeTable, B, Tn, c.n_heads + c.n_kv_heads, hd, QKV, pos0, false);
    be.kvCacheWrite(cache.layers[l], qkv, shape, c.context, pos0);
    be.attentionCached(att, qkv, cache.layers[l], shape, c.context, pos0);
    be.matmulForward(branch, att, lw.o, N, HD, C);
    be.add(x, x, branch);
    be.rmsnormForward(ln, rstd, x, lw.ln2, N, C, c.rms_norm_eps);
    if (c.mlp === 'swiglu') {
      be.matmulForward(mlpIn, ln, lw.mlpIn, N, C, 2 * F);
      be.swigluForward(mlpAct, mlpIn, N, F);
    } else {
      be.matmulForward(mlpIn, ln, lw.mlpIn, N, C, F);
      be.geluForward(mlpAct, mlpIn, N * F);
    }
    be.matmulForward(branch, mlpAct, lw.down, N, F, C);
    be.add(x, x, branch);
  }
  be.rmsnormForward(ln, rstd, x, w.norm, N, C, c.rms_norm_eps);
  be.matmulForward(logits, ln, w.lmHead, N, C, c.vocab_size);
  cache.length += Tn;
  return logits;
}
