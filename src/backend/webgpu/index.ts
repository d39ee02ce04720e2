/// <reference types="@webgpu/types" />
/**
 * The webgpu backend: every kernel of types.ts as a WGSL compute shader (kernels.ts).
 *
 * - A tensor is a GPUBuffer plus an element offset. Kernels bind whole buffers and get element
 *   offsets as uniforms, so views need no storage-offset alignment, and views of one buffer
 *   share one binding (WebGPU rejects a written binding that overlaps another).
 * - One pipeline per (kernel, pattern of shared buffers), created on first use; bind groups are
 *   cached per (pipeline, buffers). Scalars go to a uniform ring bound with a dynamic offset.
 * - Dispatches are recorded into one compute pass and submitted in batches: before a host write,
 *   a read, a sync, or when the uniform ring is full. `read` copies into a staging buffer and maps
 *   it (the only readback); `sync` awaits queue completion.
 */
import { MinigptError } from '../../errors.js';
import { hash32 } from '../reference/index.js';
import type { AdamWHyper, AttentionShape, Backend, IntTensor, Tensor } from '../types.js';
import { hardwareGpuPossible, probeGpu, requestAdapter } from './gpu.js';
import { KERNELS, MAX_HEAD_DIM, TILE, WORKGROUP, shaderSource, type KernelName, type KernelSpec } from './kernels.js';

export { probeGpu, type GpuProbe } from './gpu.js';

// Numeric GPUBufferUsage / GPUMapMode / GPUShaderStage flags (the globals are absent in Node).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 };
const MAP_READ = 0x1;
const STAGE_COMPUTE = 0x4;

/** Bytes of scalars per dispatch (the uniform offset alignment). */
const PARAM_BYTES = 256;
const RING_SLOTS = 2048;

interface Storage {
  readonly id: number;
  readonly buffer: GPUBuffer;
}
interface GpuTensor extends Tensor {
  readonly storage: Storage;
  /** Element offset into the storage. */
  readonly offset: number;
  readonly owner: object;
}

export interface WebGpuOptions {
  /** Matmul kernels: 16x16 tiles in workgroup memory, or one invocation per output element
   * (default: simple on a software adapter, where workgroup barriers are slow; tiled otherwise). */
  matmul?: 'tiled' | 'simple';
}

export interface WebGpuBackend extends Backend {
  readonly matmul: 'tiled' | 'simple';
  /** The adapter, in words (vendor, architecture, description). */
  readonly adapterInfo: string;
  /** True for a software / CPU adapter such as SwiftShader. */
  readonly software: boolean;
}

/** Whether a WebGPU adapter can be had here (any kind, software included). */
export async function webgpuAvailable(): Promise<boolean> {
  return (await probeGpu()).adapter !== null;
}

/** Whether a hardware (not software/CPU) WebGPU adapter exists: only then may `auto` pick webgpu. */
export async function webgpuHardwareAvailable(): Promise<boolean> {
  if (!(await hardwareGpuPossible())) return false;
  const p = await probeGpu();
  return p.adapter !== null && !p.software;
}

export async function createWebGpuBackend(options: WebGpuOptions = {}): Promise<WebGpuBackend> {
  const probe = await probeGpu();
  const adapter = probe.adapter ? await requestAdapter() : null;
  if (!adapter) throw new MinigptError(`webgpu backend: no WebGPU adapter: ${probe.reason}`);
  const lim = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(lim.maxStorageBuffersPerShaderStage, 8),
    },
  });
  let deviceError: string | null = null;
  const onError = (e: GPUUncapturedErrorEvent): void => {
    deviceError ??= e.error.message;
  };
  device.onuncapturederror = onError;
  const queue = device.queue;
  const owner = {};

  const storages = new Set<GPUBuffer>();
  let nextId = 1;
  const newStorage = (elements: number): Storage => {
    const bytes = Math.max(16, Math.ceil((elements * 4) / 16) * 16);
    if (bytes > lim.maxStorageBufferBindingSize) {
      throw new MinigptError(`webgpu backend: a tensor of ${elements} floats exceeds this adapter's largest storage binding (${lim.maxStorageBufferBindingSize} bytes)`);
    }
    const buffer = device.createBuffer({ size: bytes, usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST });
    storages.add(buffer);
    return { id: nextId++, buffer };
  };

  const ring = device.createBuffer({ size: PARAM_BYTES * RING_SLOTS, usage: USAGE.UNIFORM | USAGE.COPY_DST });
  const ringHost = new ArrayBuffer(PARAM_BYTES * RING_SLOTS);
  const ringU32 = new Uint32Array(ringHost);
  const ringF32 = new Float32Array(ringHost);
  let ringUsed = 0;
  let encoder: GPUCommandEncoder | null = null;
  let pass: GPUComputePassEncoder | null = null;

  function flush(): void {
    if (pass) {
      pass.end();
      pass = null;
    }
    if (!encoder) return;
    if (ringUsed > 0) queue.writeBuffer(ring, 0, ringHost, 0, ringUsed * PARAM_BYTES);
    queue.submit([encoder.finish()]);
    encoder = null;
    ringUsed = 0;
  }
  const getEncoder = (): GPUCommandEncoder => (encoder ??= device.createCommandEncoder());

  interface Pipe {
    pipeline: GPUComputePipeline;
    layout: GPUBindGroupLayout;
  }
  const pipes = new Map<string, Pipe>();
  const bindGroups = new Map<string, GPUBindGroup>();

  function pipeFor(name: KernelName, spec: KernelSpec, slotOf: number[], key: string): Pipe {
    let p = pipes.get(key);
    if (p) return p;
    const nSlots = slotOf.length === 0 ? 0 : Math.max(...slotOf) + 1;
    const nBindings = nSlots + (spec.ints?.length ?? 0);
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: STAGE_COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: PARAM_BYTES } },
    ];
    for (let b = 1; b <= nBindings; b++) entries.push({ binding: b, visibility: STAGE_COMPUTE, buffer: { type: 'storage' } });
    const layout = device.createBindGroupLayout({ entries, label: name });
    const module = device.createShaderModule({ code: shaderSource(spec, slotOf), label: name });
    const pipeline = device.createComputePipeline({
      label: name,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    p = { pipeline, layout };
    pipes.set(key, p);
    return p;
  }

  const asT = (t: Tensor | IntTensor, what: string): GpuTensor => {
    const g = t as GpuTensor;
    if (g.owner !== owner) throw new TypeError(`webgpu backend: ${what} is not a tensor of this backend`);
    return g;
  };

  /** Enqueues kernel `name` over `n` invocations (one workgroup for reductions). */
  function run(name: KernelName, floats: Tensor[], ints: IntTensor[], n: number, params: number[], grid?: [number, number]): void {
    const spec: KernelSpec = KERNELS[name];
    if (!spec.reduce && n === 0) return;
    if (grid && (grid[0] > 65535 || grid[1] > 65535)) throw new MinigptError(`webgpu backend: ${name} grid ${grid} too large`);
    const fs = floats.map((t, k) => asT(t, `${name} argument ${spec.tensors[k]}`));
    const is = ints.map((t, k) => asT(t, `${name} argument ${spec.ints![k]}`));
    const slotIds: number[] = [];
    const slotOf = fs.map((t) => {
      let s = slotIds.indexOf(t.storage.id);
      if (s < 0) s = slotIds.push(t.storage.id) - 1;
      return s;
    });
    const key = `${name}|${slotOf.join(',')}`;
    const pipe = pipeFor(name, spec, slotOf, key);
    const bgKey = `${key}|${slotIds.join(',')}|${is.map((t) => t.storage.id).join(',')}`;
    let bg = bindGroups.get(bgKey);
    if (!bg) {
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: ring, offset: 0, size: PARAM_BYTES } }];
      const buffers = slotIds.map((id) => fs.find((t) => t.storage.id === id)!.storage.buffer).concat(is.map((t) => t.storage.buffer));
      buffers.forEach((buffer, k) => entries.push({ binding: k + 1, resource: { buffer } }));
      bg = device.createBindGroup({ layout: pipe.layout, entries });
      bindGroups.set(bgKey, bg);
    }

    if (ringUsed === RING_SLOTS) flush();
    const base = (ringUsed * PARAM_BYTES) / 4;
    let w = base;
    ringU32[w++] = n;
    for (const t of fs) ringU32[w++] = t.offset;
    for (const t of is) ringU32[w++] = t.offset;
    spec.params.forEach((p, k) => {
      if (p.endsWith(':f32')) ringF32[w++] = params[k];
      else ringU32[w++] = params[k] >>> 0;
    });
    const slot = ringUsed++;

    if (!pass) pass = getEncoder().beginComputePass();
    pass.setPipeline(pipe.pipeline);
    pass.setBindGroup(0, bg, [slot * PARAM_BYTES]);
    if (grid) pass.dispatchWorkgroups(grid[0], grid[1]);
    else if (spec.reduce) pass.dispatchWorkgroups(1);
    else {
      const groups = Math.ceil(n / WORKGROUP);
      if (groups <= 65535) pass.dispatchWorkgroups(groups);
      else pass.dispatchWorkgroups(65535, Math.ceil(groups / 65535));
    }
  }

  const checkError = (): void => {
    if (deviceError !== null) {
      const msg = deviceError;
      deviceError = null;
      throw new MinigptError(`webgpu backend: device error: ${msg}`);
    }
  };

  const attention = (s: AttentionShape): number[] => {
    if (s.headDim > MAX_HEAD_DIM) throw new MinigptError(`webgpu backend: headDim ${s.headDim} > ${MAX_HEAD_DIM} is not supported yet`);
    return [s.T, s.nHeads, s.nKvHeads, s.headDim];
  };

  /** out[M,NC] (= or +=) A[M,K] @ B[K,NC], strides as in kernels.ts matmulTiled. */
  const tiled = (out: Tensor, a: Tensor, b: Tensor, M: number, NC: number, K: number, sam: number, sak: number, sbk: number, sbn: number, accum: boolean): void => {
    run('matmulTiled', [out, a, b], [], M * NC, [M, NC, K, sam, sak, sbk, sbn, accum ? 1 : 0], [Math.ceil(NC / TILE), Math.ceil(M / TILE)]);
  };

  const matmul = options.matmul ?? (probe.software ? 'simple' : 'tiled');
  const useTiles = matmul === 'tiled';

  const backend: WebGpuBackend = {
    name: 'webgpu',
    matmul,
    adapterInfo: probe.reason,
    software: probe.software,

    alloc(size) {
      return { size, storage: newStorage(size), offset: 0, owner } as GpuTensor;
    },
    allocInt(size) {
      return { size, storage: newStorage(size), offset: 0, owner } as GpuTensor;
    },
    view(t, offset, size) {
      const g = asT(t, 'view source');
      if (offset < 0 || size < 0 || offset + size > t.size) throw new RangeError(`view [${offset}, ${offset + size}) outside tensor of ${t.size}`);
      return { size, storage: g.storage, offset: g.offset + offset, owner } as GpuTensor;
    },
    write(t, data, offset = 0) {
      const g = asT(t, 'write target');
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      if (data.length === 0) return;
      flush();
      const arr = data instanceof Float32Array ? data : Float32Array.from(data);
      queue.writeBuffer(g.storage.buffer, (g.offset + offset) * 4, arr.buffer, arr.byteOffset, arr.byteLength);
    },
    writeInt(t, data, offset = 0) {
      const g = asT(t, 'writeInt target');
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      if (data.length === 0) return;
      flush();
      const arr = data instanceof Int32Array ? data : Int32Array.from(data);
      queue.writeBuffer(g.storage.buffer, (g.offset + offset) * 4, arr.buffer, arr.byteOffset, arr.byteLength);
    },
    async read(t) {
      const g = asT(t, 'read source');
      if (t.size === 0) {
        flush();
        return new Float32Array(0);
      }
      const bytes = t.size * 4;
      const staging = device.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: USAGE.MAP_READ | USAGE.COPY_DST });
      if (pass) {
        pass.end();
        pass = null;
      }
      getEncoder().copyBufferToBuffer(g.storage.buffer, g.offset * 4, staging, 0, bytes);
      flush();
      try {
        await staging.mapAsync(MAP_READ);
        checkError();
        return new Float32Array(staging.getMappedRange().slice(0));
      } finally {
        if (staging.mapState === 'mapped') staging.unmap();
        staging.destroy();
      }
    },
    async sync() {
      flush();
      await queue.onSubmittedWorkDone();
      checkError();
    },
    destroy() {
      flush();
      for (const b of storages) b.destroy();
      storages.clear();
      bindGroups.clear();
      ring.destroy();
      device.destroy();
    },

    zero: (t) => run('zero', [t], [], t.size, []),
    copy(dst, src) {
      if (src.size > dst.size) throw new RangeError(`copy of ${src.size} into a tensor of ${dst.size}`);
      run('copy', [dst, src], [], src.size, []);
    },
    add: (out, a, b) => run('add', [out, a, b], [], out.size, []),
    roundHalf: (t, format) => run(format === 'f16' ? 'roundF16' : 'roundBf16', [t], [], t.size, []),
    sumSquares(out, xs) {
      if (xs.length === 0) return run('zero', [backend.view(out, 0, 1)], [], 1, []);
      xs.forEach((x, k) => run('sumSquares', [out, x], [], 1, [x.size, k > 0 ? 1 : 0]));
    },
    dropout(out, inp, p, seed) {
      const thr = Math.ceil(p * 4294967296);
      const never = thr > 0xffffffff ? 1 : 0;
      run('dropout', [out, inp], [], out.size, [hash32(seed >>> 0), never ? 0 : Math.max(0, thr), never, 1 / (1 - p)]);
    },

    embeddingForward: (out, ids, table, N, C) => run('embeddingForward', [out, table], [ids], N * C, [C]),
    embeddingBackward: (dtable, dout, ids, N, C) => run('embeddingBackward', [dtable, dout], [ids], C, [N, C]),

    matmulForward(out, inp, weight, N, C, OC) {
      if (useTiles) tiled(out, inp, weight, N, OC, C, C, 1, 1, C, false);
      else run('matmulForward', [out, inp, weight], [], N * OC, [C, OC]);
    },
    matmulBackward(dinp, dweight, dout, inp, weight, N, C, OC) {
      if (useTiles) {
        if (dinp) tiled(dinp, dout, weight, N, C, OC, OC, 1, C, 1, false);
        tiled(dweight, dout, inp, OC, C, N, 1, OC, C, 1, true);
      } else {
        if (dinp) run('matmulBackwardInput', [dinp, dout, weight], [], N * C, [C, OC]);
        run('matmulBackwardWeight', [dweight, dout, inp], [], OC * C, [N, C, OC]);
      }
    },

    rmsnormForward: (out, rstd, inp, weight, N, C, eps) => run('rmsnormForward', [out, rstd, inp, weight], [], N, [C, eps]),
    rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C) {
      run('rmsnormBackwardInput', [dinp, dout, inp, weight, rstd], [], N, [C]);
      run('rmsnormBackwardWeight', [dweight, dout, inp, rstd], [], C, [N, C]);
    },

    rope: (x, cosSin, B, T, nHeads, headDim, rowStride, pos0, inverse) =>
      run('rope', [x, cosSin], [], B * T * nHeads * (headDim >> 1), [T, nHeads, headDim, rowStride, pos0, inverse ? -1 : 1]),

    attentionForward(out, lse, qkv, s) {
      run('attentionForward', [out, lse, qkv], [], s.B * s.nHeads * s.T, [...attention(s), 1 / Math.sqrt(s.headDim)]);
    },
    attentionBackward(dqkv, dout, qkv, out, lse, s) {
      const p = [...attention(s), 1 / Math.sqrt(s.headDim)];
      run('attentionBackwardQ', [dqkv, dout, qkv, out, lse], [], s.B * s.nHeads * s.T, p);
      run('attentionBackwardKV', [dqkv, dout, qkv, out, lse], [], s.B * s.nKvHeads * s.T, p);
    },
    kvCacheWrite(cache, qkv, s, context, pos0) {
      run('kvCacheWrite', [cache, qkv], [], s.B * s.T * 2 * s.nKvHeads * s.headDim, [...attention(s), context, pos0]);
    },
    attentionCached(out, qkv, cache, s, context, pos0) {
      run('attentionCached', [out, qkv, cache], [], s.B * s.nHeads * s.T, [...attention(s), context, pos0, 1 / Math.sqrt(s.headDim)]);
    },

    swigluForward: (out, gateUp, N, F) => run('swigluForward', [out, gateUp], [], N * F, [F]),
    swigluBackward: (dgateUp, dout, gateUp, N, F) => run('swigluBackward', [dgateUp, dout, gateUp], [], N * F, [F]),
    geluForward: (out, inp, size) => run('geluForward', [out, inp], [], size, []),
    geluBackward: (dinp, dout, inp, size) => run('geluBackward', [dinp, dout, inp], [], size, []),

    crossEntropyForward: (losses, logits, targets, N, V) => run('crossEntropyForward', [losses, logits], [targets], N, [V]),
    crossEntropyBackward: (losses, dlogits, logits, targets, N, V, gradScale) =>
      run('crossEntropyBackward', [losses, dlogits, logits], [targets], N, [V, gradScale]),

    adamw(params, grads, m, v, h: AdamWHyper) {
      const common = [h.lr, h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.eps, 1 - h.lr * h.weightDecay,
        1 - Math.pow(h.beta1, h.step), 1 - Math.pow(h.beta2, h.step), h.gradScale];
      if (h.clip) run('adamwClip', [params, grads, m, v, h.clip.normSquared], [], params.size, [...common, Math.abs(h.gradScale), h.clip.maxNorm]);
      else run('adamw', [params, grads, m, v], [], params.size, common);
    },
  };
  return backend;
}
