/**
 * The kernel seam. Model code only ever calls these functions; a backend is one folder that
 * implements them. Tensors live on the backend's device: kernels are enqueued in call order
 * and may run later (a GPU queue, worker threads), and the only way back to the host is the
 * async `read`. A plain-TS backend runs them at once; nothing in the model may depend on that.
 *
 * Shapes are given in comments as in llm.c. Conventions:
 * - N = B*T rows (batch x time), C = d_model, OC = output channels, V = vocab.
 * - Weights are [out, in] like nn.Linear, so a matmul is out = inp @ weight^T.
 * - Backward kernels overwrite the input gradient unless marked "+=" (accumulate), and always
 *   accumulate weight gradients, so gradient accumulation over micro-batches is free.
 */

/** A float buffer (or a view into one) on the backend's device. Opaque outside its backend. */
export interface Tensor {
  readonly size: number;
}

/** An int32 buffer on the device (token ids, targets). */
export interface IntTensor {
  readonly size: number;
}

/** Shape of one attention call. Heads are interleaved per row as [q heads | k heads | v heads]. */
export interface AttentionShape {
  B: number;
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/** One AdamW update's settings, as the optimizer passes them to Backend.adamw. */
export interface AdamWHyper {
  lr: number;
  /** Decay rates of the first and second moment averages. */
  beta1: number;
  beta2: number;
  /** Added to sqrt(v) in the denominator. */
  eps: number;
  /** Decoupled: params are multiplied by 1 - lr·weightDecay before the update. */
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
  /** Multiplies gradients before use (1/lossScale under mixed precision, 1/accumSteps, ...). */
  gradScale: number;
  /** The device scalar holding sum(grad^2) (before gradScale), and the global-norm clipping
   * threshold (0 or Infinity: no clipping). When this is given and the norm is not finite (an overflow
   * under loss scaling, a NaN loss), the update is skipped on the device: params, m and v stay as
   * they were, so the host needs no read back to decide. */
  clip?: { normSquared: Tensor; maxNorm: number };
}

/** The kernels a backend implements (see the file comment). Get one from createBackend. */
export interface Backend {
  /** 'cpu', 'webgpu', 'reference' or 'reference-f64'. */
  readonly name: string;

  // --- memory ---
  /** The most bytes its tensors can hold in all, where the backend has such a bound (cpu: one wasm32 memory, 4 GiB). */
  readonly memoryLimit?: number;
  /** The most bytes one tensor can hold, where the backend has such a bound (webgpu: the adapter's largest storage binding). */
  readonly maxTensorBytes?: number;
  /** A zero-filled float tensor of `size` elements. */
  alloc(size: number): Tensor;
  /** True where the device stores f16 natively (webgpu with shader-f16): then allocHalf works. */
  readonly halfStorage?: boolean;
  /** A tensor stored as f16: kernels load it as f32 and round what they store to f16 (nearest
   * even, overflow to ±inf, exactly as roundHalf('f16')); write and read convert. */
  allocHalf?(size: number): Tensor;
  /** An int32 tensor of `size` elements (token ids, targets). */
  allocInt(size: number): IntTensor;
  /** A view of `size` elements starting at `offset`, sharing storage with `t`. */
  view(t: Tensor, offset: number, size: number): Tensor;
  /** Host -> device copy into t[offset ...]. */
  write(t: Tensor, data: ArrayLike<number>, offset?: number): void;
  /** Host -> device copy of int32 values into t[offset ...]. */
  writeInt(t: IntTensor, data: ArrayLike<number>, offset?: number): void;
  /** Device -> host copy of the whole tensor, after every kernel enqueued before it has run. */
  read(t: Tensor): Promise<Float32Array>;
  /** Resolves once every enqueued kernel has finished. */
  sync(): Promise<void>;
  /** Releases device memory held by tensors allocated so far (the backend is unusable after). */
  destroy(): void;

  // --- elementwise and reductions ---
  /** t = 0. */
  zero(t: Tensor): void;
  /** dst = src (tensors of the same size). */
  copy(dst: Tensor, src: Tensor): void;
  /** out = a + b (residual connections). out may alias a or b. */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** Rounds every element, in place, to the nearest value of the half format (f16 overflows to
   * ±inf), emulating storage in that format for mixed precision. */
  roundHalf(t: Tensor, format: 'f16' | 'bf16'): void;
  /** out[0] += scale * sum(x) (a step's mean loss, kept on the device until it is read). */
  accumulateSum(out: Tensor, x: Tensor, scale: number): void;
  /** out[0] = sum(x^2), summed over every tensor in xs (global gradient norm). */
  sumSquares(out: Tensor, xs: readonly Tensor[]): void;
  /** Inverted dropout with a counter-based mask: out = inp * keep(seed, i) / (1 - p). Applied to a
   * gradient with the same seed it is its own backward. out may alias inp. */
  dropout(out: Tensor, inp: Tensor, p: number, seed: number): void;

  // --- layers ---
  /** out[N,C] = table[ids[n], :]. */
  embeddingForward(out: Tensor, ids: IntTensor, table: Tensor, N: number, C: number): void;
  /** dtable[ids[n], :] += dout[n, :]. */
  embeddingBackward(dtable: Tensor, dout: Tensor, ids: IntTensor, N: number, C: number): void;

  /** out[N,OC] = inp[N,C] @ weight[OC,C]^T. */
  matmulForward(out: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, OC: number): void;
  /** dinp[N,C] = dout @ weight (overwrite; skipped when dinp is null), dweight[OC,C] += dout^T @ inp. */
  matmulBackward(dinp: Tensor | null, dweight: Tensor, dout: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, OC: number): void;

  /** out[N,OC] += bias[OC] on every row (Qwen2's q|k|v bias). */
  addBiasForward(out: Tensor, bias: Tensor, N: number, OC: number): void;
  /** dbias[OC] += sum over the N rows of dout[N,OC]. */
  addBiasBackward(dbias: Tensor, dout: Tensor, N: number, OC: number): void;

  /** out[N,C] = inp / sqrt(mean(inp^2) + eps) * weight; rstd[N] keeps 1/sqrt(...) for the backward. */
  rmsnormForward(out: Tensor, rstd: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, eps: number): void;
  /** dinp += ..., dweight += ... (inp is the residual stream, whose gradient is a sum). */
  rmsnormBackward(dinp: Tensor, dweight: Tensor, dout: Tensor, inp: Tensor, weight: Tensor, rstd: Tensor, N: number, C: number): void;

  /** Rotates, in place, the first `nHeads` heads of each row of x[B,T,rowStride] by their position
   * (pos0 + t), Hugging Face rotate-half convention. cosSin[context, headDim] holds cos in the first
   * headDim/2 columns and sin in the rest. With inverse=true it undoes the rotation (the backward). */
  rope(x: Tensor, cosSin: Tensor, B: number, T: number, nHeads: number, headDim: number, rowStride: number, pos0: number, inverse: boolean): void;

  /** Causal attention. qkv[B,T,(H+2KVH)*hd] (RoPE applied), out[B,T,H*hd], lse[B,H,T] the
   * log-sum-exp of each row's scores, kept so the backward can recompute probabilities. */
  attentionForward(out: Tensor, lse: Tensor, qkv: Tensor, shape: AttentionShape): void;
  /** dqkv[B,T,(H+2KVH)*hd] (overwrite) from dout[B,T,H*hd]. */
  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, shape: AttentionShape): void;
  /**
   * Optional: where a backend has several kernels for the same work, time them on these shapes and
   * keep the fastest for each (webgpu: the attention kernels). Results agree to float rounding
   * whichever is kept. Called before training; a shape never tuned uses the default kernels.
   */
  tune?(work: { attention?: AttentionShape[] }): Promise<void>;

  /** Generation with a KV cache. cache[B, context, 2·KVH·hd] holds, per position, the (roped) k
   * heads then the v heads. Copies the k and v of qkv[B, Tn, (H+2KVH)·hd] to positions
   * pos0 .. pos0+Tn-1. */
  kvCacheWrite(cache: Tensor, qkv: Tensor, shape: AttentionShape, context: number, pos0: number): void;
  /** out[B, Tn, H·hd]: the q heads of qkv (at positions pos0 + t) attend causally over the cache
   * positions 0 .. pos0+t. shape.T is Tn. */
  attentionCached(out: Tensor, qkv: Tensor, cache: Tensor, shape: AttentionShape, context: number, pos0: number): void;

  /** out[N,F] = silu(gateUp[:, :F]) * gateUp[:, F:]. */
  swigluForward(out: Tensor, gateUp: Tensor, N: number, F: number): void;
  /** dgateUp[N,2F] (overwrite). */
  swigluBackward(dgateUp: Tensor, dout: Tensor, gateUp: Tensor, N: number, F: number): void;
  /** out = gelu_tanh(inp). */
  geluForward(out: Tensor, inp: Tensor, size: number): void;
  /** dinp (overwrite). */
  geluBackward(dinp: Tensor, dout: Tensor, inp: Tensor, size: number): void;

  /** losses[N] = -log softmax(logits[N,V])[targets[n]]. */
  crossEntropyForward(losses: Tensor, logits: Tensor, targets: IntTensor, N: number, V: number): void;
  /** Same losses, and dlogits[N,V] = (softmax - onehot) * gradScale, written in one pass over the row.
   * dlogits may alias logits. */
  crossEntropyBackward(losses: Tensor, dlogits: Tensor, logits: Tensor, targets: IntTensor, N: number, V: number, gradScale: number): void;

  // --- optimizer ---
  /** AdamW with decoupled weight decay, over one contiguous span of parameters. */
  adamw(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, hyper: AdamWHyper): void;
}
