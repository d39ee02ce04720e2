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
 *   a read, a sync, or every SUBMIT_EVERY dispatches (so the GPU overlaps the encoding). `read` copies into a pooled staging buffer
 *   and maps it (the only readback); `sync` awaits queue completion. A training step creates no
 *   GPU objects once every shape has been seen.
 * - Two kernel sets (`kernels` option). `tiled` (hardware GPUs, tiled.ts): register-tiled matmul
 *   (128x128 or 64x64 output tiles, split-K through a scratch buffer when the output has few
 *   tiles, a GEMV for N <= 4), one workgroup per row for rmsnorm and cross-entropy, flash-style
 *   attention (`attention` option: `auto` by default: one invocation per query row (`rows`), or
 *   per shape given to `tune` whichever of `rows`, `split` (each row over 4 invocations) and
 *   `blocked` (FlashAttention-2 style; slower on an H200, see BENCHMARKS.md) timed fastest). `simple` (software adapters such as SwiftShader, where barriers and large shaders
 *   are slow): one invocation per output element or row (kernels.ts). Both share the two-stage
 *   sumSquares and rmsnorm weight gradient and the bucketed embedding backward.
 * - One scratch buffer (grown on first use of a larger shape) holds split-K partials, reduction
 *   partials and attention's row sums; kernels run in order, so uses never overlap.
 */
import { MinigptError, check, checkOptionNames, checkWhole, shownValue } from '../../errors.js';
import { hash32 } from '../../util/random.js';
import type { AdamWHyper, AttentionShape, Backend, IntTensor, Tensor } from '../types.js';
import { hardwareGpuPossible, probeGpu, requestAdapter } from './gpu.js';
import { KERNELS, WORKGROUP, shaderSource, type KernelName, type KernelSpec } from './kernels.js';
import {
  ATT_BWD_TILES, ATT_FWD_TILES, ATT_SPLIT_TILES, MM_CONFIGS, ROWS_TILE, attBlockedBytes, attFwdName, attHd, attKVName, attQName, attRowsBytes, attRowsFwdName, attRowsKVName, attRowsQName, attTileName, mmName, rowsTileName,
  type AttTile, type MmTile, type RowsTile,
} from './tiled.js';


// Numeric GPUBufferUsage / GPUMapMode / GPUShaderStage flags (the globals are absent in Node).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 };
const MAP_READ = 0x1;
const STAGE_COMPUTE = 0x4;

/** Bytes of scalars per dispatch (the uniform offset alignment). */
const PARAM_BYTES = 256;
const RING_SLOTS = 2048;
/** Dispatches per submission: the GPU starts on a step's first kernels while later ones are still
 * being encoded (queue order makes reusing the uniform ring's slots after a submit safe). */
const SUBMIT_EVERY = 128;

interface Storage {
  readonly buffer: GPUBuffer;
  /** Elements are f16 (allocHalf), else 32-bit. */
  readonly half: boolean;
}
interface GpuTensor extends Tensor {
  readonly storage: Storage;
  /** Element offset into the storage. */
  readonly offset: number;
  readonly owner: object;
}

export interface WebGpuOptions {
  /**
   * Kernel set. `tiled`: workgroup-cooperative kernels for GPUs (register-tiled matmul, one
   * workgroup per row for rmsnorm and cross-entropy, flash-style attention; see tiled.ts).
   * `simple`: one invocation per output element or row, which is faster on a software adapter
   * such as SwiftShader, where workgroup barriers and large shaders are costly. Default: simple
   * on a software adapter, tiled otherwise.
   */
  kernels?: 'tiled' | 'simple';
  /** Matmul kernels only (default: as `kernels`). */
  matmul?: 'tiled' | 'simple';
  /** Tests and benchmarks: force the tiled matmul's output tile (default: by problem size). */
  matmulTile?: MmTile;
  /** Tests and benchmarks: force the number of K splits of the tiled matmul (default: by problem size). */
  splitK?: number;
  /**
   * Attention kernels of the tiled set (ignored with `kernels: 'simple'`). `rows`: one
   * invocation per query row, K/V tiles shared in workgroup memory, online softmax. `blocked`:
   * FlashAttention-2 style, register-tiled Q K^T and P V products per (query block, head) and a
   * split backward (dK/dV per key block, dQ per query block); head sizes up to 128, larger ones
   * (or a device with too little workgroup memory) use `rows`. Measured on an NVIDIA H200 at
   * B4 T1024 H12 hd64, `rows` took 1.04 / 3.08 ms (forward / backward), `blocked` 1.80 / 5.37 ms.
   * `split`: the row kernels with each row split over 4 invocations (every 4th key, or query for
   * dK/dV), merged in workgroup memory: 4x the invocations and a quarter of the serial loop per
   * invocation, for shapes with few (batch, head, 64-row) blocks; `rows` where it does not fit.
   * `auto` (default): `rows`, and for each shape passed to `tune`, whichever of `rows`, `split`
   * and `blocked` ran fastest there.
   */
  attention?: 'auto' | 'rows' | 'split' | 'blocked';
  /** Tests and benchmarks: force the blocked or split attention's tile (index into the candidates of tiled.ts; default: the first that fits, a smaller one when few workgroups). */
  attentionTile?: number;
}

/** The webgpu backend (WGSL compute shaders): a Backend plus the kernels it chose and its adapter. */
export interface WebGpuBackend extends Backend {
  /** Kernel set in use (see WebGpuOptions.kernels). */
  readonly kernels: 'tiled' | 'simple';
  /** Matmul kernels in use (see WebGpuOptions.matmul). */
  readonly matmul: 'tiled' | 'simple';
  /** Attention kernels in use: `simple` with the simple set, else the `attention` option. */
  readonly attention: 'simple' | 'auto' | 'rows' | 'split' | 'blocked';
  /** The attention kernels a shape runs on, in words: `rows`, `split 32x4` (rows x invocations per row), `blocked 16x8x4`, `simple`. */
  attentionKernels(s: AttentionShape): string;
  /** Times the rows, split and blocked kernels on each attention shape and keeps the fastest (with `attention: 'auto'`; else nothing to do). */
  tune(work: { attention?: AttentionShape[] }): Promise<void>;
  /** The adapter, in words (vendor, architecture, description). */
  readonly adapterInfo: string;
  /** True for a software / CPU adapter such as SwiftShader. */
  readonly software: boolean;
  /** The adapter has `shader-f16`, so allocHalf gives f16 storage. */
  readonly halfStorage: boolean;
  /**
   * A tensor stored as f16 (half the memory and bandwidth); kernels load it into f32 and round what
   * they store (round to nearest even, overflow to ±inf), write/read convert. Throws without
   * `halfStorage`.
   */
  allocHalf(size: number): Tensor;
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

const WEBGPU_OPTION_NAMES: Record<keyof WebGpuOptions, true> = { kernels: true, matmul: true, matmulTile: true, splitK: true, attention: true, attentionTile: true };

/** Checks createWebGpuBackend's options (names and values): a MinigptError for a bad one. */
export function checkWebGpuOptions(options: WebGpuOptions): void {
  checkOptionNames(options, Object.keys(WEBGPU_OPTION_NAMES), 'webgpu');
  const oneOf = (name: string, v: unknown, allowed: readonly (string | number)[]): void =>
    check(v === undefined || allowed.includes(v as string | number), () => `webgpu ${name} must be one of ${allowed.join(', ')} (got ${shownValue(v)})`);
  oneOf('kernels', options.kernels, ['tiled', 'simple']);
  oneOf('matmul', options.matmul, ['tiled', 'simple']);
  oneOf('attention', options.attention, ['auto', 'rows', 'split', 'blocked']);
  oneOf('matmulTile', options.matmulTile, Object.keys(MM_CONFIGS).map(Number));
  checkWhole(options.splitK, 'webgpu splitK', 1);
  checkWhole(options.attentionTile, 'webgpu attentionTile', 0);
}

/**
 * The webgpu backend on a WebGPU adapter (high-performance preferred); a MinigptError when there
 * is none. createBackend('webgpu') calls it.
 */
export async function createWebGpuBackend(options: WebGpuOptions = {}): Promise<WebGpuBackend> {
  checkWebGpuOptions(options);
  const probe = await probeGpu();
  const adapter = probe.adapter ? await requestAdapter() : null;
  if (!adapter) throw new MinigptError(`webgpu backend: no WebGPU adapter: ${probe.reason}`);
  const lim = adapter.limits;
  const halfStorage = adapter.features.has('shader-f16');
  const device = await adapter.requestDevice({
    requiredFeatures: halfStorage ? ['shader-f16'] : [],
    requiredLimits: {
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(lim.maxStorageBuffersPerShaderStage, 8),
      // The blocked attention kernels use up to ~45 KiB (smaller tiles, or the row kernels, when less).
      maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
    },
  });
  let deviceError: string | null = null;
  const onError = (e: GPUUncapturedErrorEvent): void => {
    deviceError ??= e.error.message;
  };
  device.onuncapturederror = onError;
  /** Set when the device is gone: destroyed by destroy(), or lost (a driver reset, a GPU process crash, a kernel the OS killed for running too long). */
  let lost: string | null = null;
  void device.lost.then((info) => {
    lost = info.reason === 'destroyed' ? 'this webgpu backend was destroyed' : `the GPU device was lost${info.message ? `: ${info.message}` : ''}`;
  });
  const checkLost = (): void => {
    if (lost !== null) throw new MinigptError(`webgpu backend: ${lost}`);
  };
  const queue = device.queue;
  const owner = {};

  const storages = new Set<GPUBuffer>();
  const newStorage = (elements: number, half = false): Storage => {
    const bytes = Math.max(16, Math.ceil((elements * (half ? 2 : 4)) / 16) * 16);
    if (bytes > lim.maxStorageBufferBindingSize) {
      throw new MinigptError(`webgpu backend: a tensor of ${elements} floats exceeds this adapter's largest storage binding (${lim.maxStorageBufferBindingSize} bytes)`);
    }
    const buffer = device.createBuffer({ size: bytes, usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST });
    storages.add(buffer);
    return { buffer, half };
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
  /**
   * A kernel's pipeline and bind group for one sequence of storage buffers (its float then int
   * arguments'). A model calls each kernel with a handful of such sequences (one per layer), so
   * `run` finds its call by comparing buffers, starting after the last one found (layers come
   * in order): no key strings to build and hash per dispatch.
   */
  interface Call {
    floats: Storage[];
    ints: Storage[];
    pipe: Pipe;
    bg: GPUBindGroup;
  }
  const calls = new Map<string, { list: Call[]; last: number }>();
  /** Which params of a kernel are f32 (else u32), by kernel name. */
  const f32Params = new Map<string, boolean[]>();
  const dynamicOffset = new Uint32Array(1);

  function pipeFor(name: KernelName, spec: KernelSpec, slotOf: number[], halfSlots: boolean[], key: string): Pipe {
    let p = pipes.get(key);
    if (p) return p;
    const nSlots = slotOf.length === 0 ? 0 : Math.max(...slotOf) + 1;
    const nBindings = nSlots + (spec.ints?.length ?? 0);
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: STAGE_COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: PARAM_BYTES } },
    ];
    for (let b = 1; b <= nBindings; b++) entries.push({ binding: b, visibility: STAGE_COMPUTE, buffer: { type: 'storage' } });
    const layout = device.createBindGroupLayout({ entries, label: name });
    const module = device.createShaderModule({ code: shaderSource(spec, slotOf, halfSlots), label: name });
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

  /** The pipeline and bind group for kernel `name` on these tensors' storage buffers (made on first use). */
  function callFor(name: KernelName, spec: KernelSpec, fs: GpuTensor[], is: GpuTensor[]): Call {
    let cache = calls.get(name);
    if (!cache) calls.set(name, (cache = { list: [], last: 0 }));
    const { list } = cache;
    search: for (let j = 0; j < list.length; j++) {
      const i = (cache.last + 1 + j) % list.length;
      const c = list[i];
      for (let k = 0; k < fs.length; k++) if (c.floats[k] !== fs[k].storage) continue search;
      for (let k = 0; k < is.length; k++) if (c.ints[k] !== is[k].storage) continue search;
      cache.last = i;
      return c;
    }
    // One binding slot per distinct storage buffer, in first-use order.
    const slots: Storage[] = [];
    const slotOf = fs.map((t) => {
      let s = slots.indexOf(t.storage);
      if (s < 0) s = slots.push(t.storage) - 1;
      return s;
    });
    const halfSlots = slots.map((s) => s.half);
    const pipe = pipeFor(name, spec, slotOf, halfSlots, `${name}|${slotOf.join(',')}|${halfSlots.map(Number).join('')}`);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: ring, offset: 0, size: PARAM_BYTES } }];
    const buffers = slots.map((s) => s.buffer).concat(is.map((t) => t.storage.buffer));
    buffers.forEach((buffer, k) => entries.push({ binding: k + 1, resource: { buffer } }));
    const c: Call = { floats: fs.map((t) => t.storage), ints: is.map((t) => t.storage), pipe, bg: device.createBindGroup({ layout: pipe.layout, entries }) };
    cache.last = list.push(c) - 1;
    return c;
  }

  /** Enqueues kernel `name` over `n` invocations, or over the workgroup `grid` (workgroup kernels). */
  function run(name: KernelName, floats: Tensor[], ints: IntTensor[], n: number, params: number[], grid?: [number, number, number?]): void {
    const spec: KernelSpec | undefined = KERNELS[name];
    if (!spec) throw new Error(`webgpu backend: no kernel ${name}`);
    if (n === 0) return;
    if (spec.workgroup && !grid) throw new Error(`webgpu backend: ${name} needs a grid`);
    if (grid && (grid[0] > 65535 || grid[1] > 65535 || (grid[2] ?? 1) > 65535)) throw new MinigptError(`webgpu backend: ${name} grid ${grid} too large`);
    if (grid && (grid[0] === 0 || grid[1] === 0 || grid[2] === 0)) return;
    const fs = floats as GpuTensor[], is = ints as GpuTensor[];
    for (let k = 0; k < fs.length; k++) if (fs[k].owner !== owner) asT(fs[k], `${name} argument ${spec.tensors[k]}`);
    for (let k = 0; k < is.length; k++) if (is[k].owner !== owner) asT(is[k], `${name} argument ${spec.ints![k]}`);
    const call = callFor(name, spec, fs, is);
    if (ringUsed >= Math.min(RING_SLOTS, SUBMIT_EVERY)) flush();
    const base = (ringUsed * PARAM_BYTES) / 4;
    let w = base;
    ringU32[w++] = n;
    for (const t of fs) ringU32[w++] = t.offset;
    for (const t of is) ringU32[w++] = t.offset;
    let isF32 = f32Params.get(name);
    if (!isF32) f32Params.set(name, (isF32 = spec.params.map((p) => p.endsWith(':f32'))));
    for (let k = 0; k < isF32.length; k++) {
      if (isF32[k]) ringF32[w++] = params[k];
      else ringU32[w++] = params[k] >>> 0;
    }
    const slot = ringUsed++;

    if (!pass) pass = getEncoder().beginComputePass();
    pass.setPipeline(call.pipe.pipeline);
    dynamicOffset[0] = slot * PARAM_BYTES;
    pass.setBindGroup(0, call.bg, dynamicOffset, 0, 1);
    if (grid) pass.dispatchWorkgroups(grid[0], grid[1], grid[2] ?? 1);
    else {
      const groups = Math.ceil(n / WORKGROUP);
      if (groups <= 65535) pass.dispatchWorkgroups(groups);
      else pass.dispatchWorkgroups(65535, Math.ceil(groups / 65535));
    }
  }

  /** Staging buffers for `read`, pooled by power-of-two size (a read per step allocates nothing). */
  const stagingPool = new Map<number, GPUBuffer[]>();
  const acquireStaging = (bytes: number): GPUBuffer => {
    let size = 256;
    while (size < bytes) size *= 2;
    const free = stagingPool.get(size);
    return free?.pop() ?? device.createBuffer({ size, usage: USAGE.MAP_READ | USAGE.COPY_DST });
  };
  const releaseStaging = (b: GPUBuffer, ok: boolean): void => {
    const list = stagingPool.get(b.size) ?? [];
    if (!ok || list.length >= 4 || b.size > 1 << 26) {
      b.destroy();
      return;
    }
    list.push(b);
    stagingPool.set(b.size, list);
  };

  const checkError = (): void => {
    if (deviceError !== null) {
      const msg = deviceError;
      deviceError = null;
      throw new MinigptError(`webgpu backend: device error: ${msg}`);
    }
  };

  /** The tiled attention kernels' padded head size (16, 32, 64, 128 or 256) for this shape. */
  const attention = (s: AttentionShape): { HD: number; p: number[] } => {
    const HD = attHd(s.headDim);
    if (!HD) throw new MinigptError(`webgpu backend: headDim ${s.headDim} > 256 is not supported`);
    return { HD, p: [s.T, s.nHeads, s.nKvHeads, s.headDim] };
  };

  /** Destroys a storage buffer and forgets the calls that bound it (pending work is flushed first). */
  const dropStorage = (st: Storage): void => {
    flush(); // recorded work may still use the buffer; destroy() waits for submitted work
    storages.delete(st.buffer);
    st.buffer.destroy();
    for (const c of calls.values()) {
      c.list = c.list.filter((call) => !call.floats.includes(st) && !call.ints.includes(st));
      c.last = 0;
    }
  };

  /**
   * One scratch buffer for split-K partial sums, column and global reduction partials and the
   * attention backward's row sums. Kernels run in call order, so uses never overlap; it grows
   * (doubling) when a call needs more, which happens only on the first calls of a new shape.
   */
  let scratchT: GpuTensor | null = null;
  const scratch = (elements: number): GpuTensor => {
    if (!scratchT || scratchT.size < elements) {
      const size = Math.max(elements, scratchT ? scratchT.size * 2 : 1 << 16);
      if (scratchT) dropStorage(scratchT.storage);
      scratchT = { size, storage: newStorage(size), offset: 0, owner } as GpuTensor;
    }
    return scratchT;
  };
  const scratchView = (offset: number, size: number): GpuTensor => ({ size, storage: scratchT!.storage, offset, owner }) as GpuTensor;
  /** A grid of `rows` workgroups, 2D past 65535 (kernels take row = wid.x + wid.y * nwg.x). */
  const rowsGrid = (rows: number): [number, number] => (rows <= 65535 ? [rows, 1] : [65535, Math.ceil(rows / 65535)]);

  /** Scratch floats a split-K matmul may use (128 MiB). */
  const SPLIT_MAX = 1 << 25;
  /**
   * out[M,NC] (= or +=) A[M,K] @ B[K,NC] with A(m,k) = a[m*sam + k*sak], B(k,n) = b[k*sbk + n*sbn]:
   * the register-tiled kernel (tiled.ts), split over K into the scratch buffer when the output has
   * too few tiles to fill the GPU (weight gradients of small layers: K is the token count).
   */
  const tiled = (out: Tensor, a: Tensor, b: Tensor, M: number, NC: number, K: number, sam: number, sak: number, sbk: number, sbn: number, accum: boolean): void => {
    if (M === 0 || NC === 0) return;
    const tiles = (t: MmTile): number => Math.ceil(M / MM_CONFIGS[t].BM) * Math.ceil(NC / MM_CONFIGS[t].BN);
    const tile: MmTile = options.matmulTile ?? (tiles(128) >= 256 ? 128 : 64);
    const { BM, BN, BK } = MM_CONFIGS[tile];
    let splits = 1;
    if (options.splitK !== undefined) splits = Math.max(1, Math.min(options.splitK, Math.ceil(K / BK)));
    else if (tiles(tile) < 256 && K >= 1024) splits = Math.max(1, Math.min(Math.ceil(512 / tiles(tile)), Math.floor(K / 512), Math.floor(SPLIT_MAX / (M * NC))));
    let kchunk = Math.max(K, 1);
    if (splits > 1) {
      kchunk = Math.ceil(K / splits / BK) * BK;
      splits = Math.ceil(K / kchunk);
    }
    const name = mmName(tile);
    const grid: [number, number, number] = [Math.ceil(NC / BN), Math.ceil(M / BM), splits];
    if (splits === 1) {
      run(name, [out, a, b], [], M * NC, [M, NC, K, sam, sak, sbk, sbn, accum ? 1 : 0, kchunk], grid);
    } else {
      const part = scratch(splits * M * NC);
      run(name, [part, a, b], [], M * NC, [M, NC, K, sam, sak, sbk, sbn, 0, kchunk], grid);
      run('splitReduce', [out, part], [], M * NC, [splits, accum ? 1 : 0]);
    }
  };

  const kernels = options.kernels ?? (probe.software ? 'simple' : 'tiled');
  const matmul = options.matmul ?? kernels;
  const useTiles = matmul === 'tiled';
  const fast = kernels === 'tiled';
  const attentionKind = !fast ? 'simple' : (options.attention ?? 'auto');
  const wgBytes = device.limits.maxComputeWorkgroupStorageSize;
  const shapeKey = (s: AttentionShape): string => `${s.B},${s.T},${s.nHeads},${s.nKvHeads},${s.headDim}`;
  /** With `auto`: the kernels `tune` measured fastest for a shape. */
  const tuned = new Map<string, 'rows' | 'split' | 'blocked'>();
  /** The attention kernels a shape runs on (`auto` resolved; `simple` with the simple set). */
  const kindFor = (s: AttentionShape): 'simple' | 'rows' | 'split' | 'blocked' =>
    attentionKind === 'auto' ? (tuned.get(shapeKey(s)) ?? 'rows') : attentionKind;
  /** The blocked attention tile for this kind of kernel (null: use the row kernels). */
  const attTile = (kind: 'fwd' | 'kv' | 'q', HD: number, s: AttentionShape): AttTile | null =>
    kindFor(s) === 'blocked' ? blockedTile(kind, HD, s) : null;
  const blockedTile = (kind: 'fwd' | 'kv' | 'q', HD: number, s: AttentionShape): AttTile | null => {
    const list = (kind === 'fwd' ? ATT_FWD_TILES : ATT_BWD_TILES)[HD];
    if (!list) return null;
    const fits = list.filter((t) => attBlockedBytes(kind, HD, t) <= wgBytes);
    if (options.attentionTile !== undefined) return fits.includes(list[options.attentionTile]) ? list[options.attentionTile] : fits[fits.length - 1] ?? null;
    if (fits.length === 0) return null;
    // Forward with few workgroups (small B*H or T): the smaller query block doubles them.
    if (kind === 'fwd' && fits.length > 1 && s.B * s.nHeads * Math.ceil(s.T / (4 * fits[0].TY)) < 512) return fits[1];
    return fits[0];
  };
  /** The row kernels' tile: ROWS_TILE, or with `split` the first candidate that fits, a smaller query block while it gives under 1024 workgroups. */
  const rowsTile = (HD: number, s: AttentionShape): RowsTile => (kindFor(s) === 'split' ? splitTile(HD, s) : ROWS_TILE);
  const splitTile = (HD: number, s: AttentionShape): RowsTile => {
    const fits = ATT_SPLIT_TILES.filter((t) => attRowsBytes(HD, t) <= wgBytes);
    if (options.attentionTile !== undefined) return fits.includes(ATT_SPLIT_TILES[options.attentionTile]) ? ATT_SPLIT_TILES[options.attentionTile] : fits[fits.length - 1] ?? ROWS_TILE;
    if (fits.length === 0) return ROWS_TILE;
    const blocks = (t: RowsTile): number => s.B * Math.max(s.nHeads, s.nKvHeads) * Math.ceil(s.T / t.Q);
    return fits.find((t) => blocks(t) >= 1024) ?? fits[fits.length - 1];
  };

  const backend: WebGpuBackend = {
    name: 'webgpu',
    maxTensorBytes: lim.maxStorageBufferBindingSize,
    kernels,
    matmul,
    attention: attentionKind,

    attentionKernels(s) {
      if (!fast) return 'simple';
      const HD = attHd(s.headDim);
      if (!HD) return 'none (head size over 256)';
      const tf = attTile('fwd', HD, s), tkv = attTile('kv', HD, s), tq = attTile('q', HD, s), rt = rowsTile(HD, s);
      const what = tf || (tkv && tq) ? `blocked ${tf ? attTileName(tf) : 'rows'} / ${tkv && tq ? `${attTileName(tq)}, ${attTileName(tkv)}` : 'rows'}`
        : rt.S === 1 ? 'rows' : `split ${rowsTileName(rt)}`;
      return `${attentionKind === 'auto' ? 'auto: ' : ''}${what}`;
    },

    async tune(work) {
      if (attentionKind !== 'auto') return;
      for (const s of work.attention ?? []) {
        const HD = attHd(s.headDim), key = shapeKey(s);
        if (!HD || tuned.has(key) || s.B * s.T === 0) continue;
        const candidates: ('rows' | 'split' | 'blocked')[] = ['rows'];
        if (splitTile(HD, s).S > 1) candidates.push('split');
        if (blockedTile('fwd', HD, s) && blockedTile('kv', HD, s) && blockedTile('q', HD, s)) candidates.push('blocked');
        if (candidates.length === 1) {
          tuned.set(key, 'rows');
          continue;
        }
        const rows = s.B * s.T, QKV = (s.nHeads + 2 * s.nKvHeads) * s.headDim, HDIM = s.nHeads * s.headDim;
        // Tuning must never break a run: errors (no memory for the scratch tensors, a kernel this
        // driver rejects) are caught in error scopes and rule that candidate, or the tuning, out.
        const scopes = ['validation', 'internal', 'out-of-memory'] as const;
        const scoped = async (work: () => Promise<number>): Promise<number> => {
          for (const f of scopes) device.pushErrorScope(f);
          let ms = Infinity;
          try {
            ms = await work();
          } catch {
            ms = Infinity;
          }
          for (let i = 0; i < scopes.length; i++) if (await device.popErrorScope()) ms = Infinity;
          return ms;
        };
        const temp: GpuTensor[] = [];
        const made = await scoped(async () => {
          for (const n of [rows * QKV, rows * HDIM, s.B * s.nHeads * s.T, rows * HDIM, rows * QKV]) temp.push({ size: n, storage: newStorage(n), offset: 0, owner } as GpuTensor);
          return 0;
        });
        if (made === Infinity) {
          for (const t of temp) dropStorage(t.storage);
          tuned.set(key, 'rows');
          continue;
        }
        const [qkv, out, lse, dout, dqkv] = temp;
        /** ms per forward + backward: the best of 3 timings of 4 back to back, after one that compiles. */
        const time = (kind: 'rows' | 'split' | 'blocked'): Promise<number> => scoped(async () => {
          tuned.set(key, kind);
          const step = (): void => {
            backend.attentionForward(out, lse, qkv, s);
            backend.attentionBackward(dqkv, dout, qkv, out, lse, s);
          };
          step();
          await backend.sync();
          let best = Infinity;
          for (let trial = 0; trial < 3; trial++) {
            const t0 = performance.now();
            for (let r = 0; r < 4; r++) step();
            await backend.sync();
            best = Math.min(best, (performance.now() - t0) / 4);
          }
          return best;
        });
        try {
          let best: 'rows' | 'split' | 'blocked' = 'rows', bestMs = Infinity;
          for (const kind of candidates) {
            const ms = await time(kind);
            if (ms < bestMs) [best, bestMs] = [kind, ms];
          }
          tuned.set(key, best);
        } finally {
          for (const t of temp) dropStorage(t.storage);
        }
      }
    },
    adapterInfo: probe.reason,
    software: probe.software,
    halfStorage,

    alloc(size) {
      return { size, storage: newStorage(size), offset: 0, owner } as GpuTensor;
    },
    allocHalf(size) {
      if (!halfStorage) throw new MinigptError('webgpu backend: this adapter has no shader-f16, so no f16 storage');
      return { size, storage: newStorage(size, true), offset: 0, owner } as GpuTensor;
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
      if (g.storage.half) {
        // f32 into the scratch buffer, then a copy kernel rounds it into the f16 tensor (any offset).
        scratch(arr.length);
        const tmp = scratchView(0, arr.length);
        queue.writeBuffer(tmp.storage.buffer, 0, arr.buffer, arr.byteOffset, arr.byteLength);
        run('copy', [backend.view(g, offset, arr.length), tmp], [], arr.length, []);
        return;
      }
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
      let g = asT(t, 'read source');
      if (g.storage.half && t.size > 0) {
        // widened to f32 in the scratch buffer by a copy kernel, and read from there
        scratch(t.size);
        const tmp = scratchView(0, t.size);
        run('copy', [tmp, g], [], t.size, []);
        g = tmp;
      }
      if (t.size === 0) {
        flush();
        return new Float32Array(0);
      }
      const bytes = t.size * 4;
      const staging = acquireStaging(bytes);
      let ok = false;
      if (pass) {
        pass.end();
        pass = null;
      }
      getEncoder().copyBufferToBuffer(g.storage.buffer, g.offset * 4, staging, 0, bytes);
      flush();
      try {
        try {
          await staging.mapAsync(MAP_READ, 0, bytes);
        } catch (e) {
          await Promise.resolve(); // device.lost's callback runs first
          checkLost();
          throw e;
        }
        const data = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
        ok = true;
        checkError();
        return data;
      } finally {
        if (staging.mapState === 'mapped') staging.unmap();
        releaseStaging(staging, ok);
      }
    },
    async sync() {
      flush();
      await queue.onSubmittedWorkDone();
      checkLost();
      checkError();
    },
    destroy() {
      flush();
      for (const b of storages) b.destroy();
      storages.clear();
      for (const list of stagingPool.values()) for (const b of list) b.destroy();
      stagingPool.clear();
      calls.clear();
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
    accumulateSum(out, x, scale) {
      if (x.size === 0) return;
      const groups = Math.max(1, Math.min(1024, Math.ceil(x.size / 4096)));
      scratch(groups);
      run('sumPartial', [scratchView(0, groups), x], [], 1, [x.size], [groups, 1]);
      run('accumulateSumFinal', [backend.view(out, 0, 1), scratchView(0, groups)], [], 1, [groups, scale], [1, 1]);
    },
    sumSquares(out, xs) {
      if (xs.length === 0) return run('zero', [backend.view(out, 0, 1)], [], 1, []);
      // Stage 1: up to 1024 workgroups per tensor, each a partial sum; stage 2: one workgroup adds them.
      const groups = xs.map((x) => Math.max(1, Math.min(1024, Math.ceil(x.size / 4096))));
      const total = groups.reduce((a, g) => a + g, 0);
      scratch(total);
      let off = 0;
      xs.forEach((x, k) => {
        const part = scratchView(off, groups[k]);
        if (x.size === 0) run('zero', [part], [], 1, []);
        else run('sumSquaresPartial', [part, x], [], 1, [x.size], [groups[k], 1]);
        off += groups[k];
      });
      run('sumSquaresFinal', [backend.view(out, 0, 1), scratchView(0, total)], [], 1, [total], [1, 1]);
    },
    dropout(out, inp, p, seed) {
      const thr = Math.ceil(p * 4294967296);
      const never = thr > 0xffffffff ? 1 : 0;
      run('dropout', [out, inp], [], out.size, [hash32(seed >>> 0), never ? 0 : Math.max(0, thr), never, 1 / (1 - p)]);
    },

    embeddingForward: (out, ids, table, N, C) => run('embeddingForward', [out, table], [ids], N * C, [C]),
    embeddingBackward(dtable, dout, ids, N, C) {
      // Buckets of table rows (see kernels.ts): about 32K invocations on a GPU, one per column on a software adapter.
      const NB = fast ? Math.max(1, Math.min(256, Math.ceil(32768 / C), N)) : 1;
      run('embeddingBackward', [dtable, dout], [ids], C * NB, [N, C, NB]);
    },

    addBiasForward(out, bias, N, OC) {
      if (N > 0 && OC > 0) run('addBiasForward', [out, bias], [], N * OC, [OC]);
    },
    addBiasBackward(dbias, dout, N, OC) {
      if (N > 0 && OC > 0) run('addBiasBackward', [dbias, dout], [], OC, [N, OC]);
    },

    matmulForward(out, inp, weight, N, C, OC) {
      if (useTiles && N <= 4 && options.matmulTile === undefined) {
        if (N > 0 && OC > 0) run('gemvSmall', [out, inp, weight], [], N * OC, [N, OC, C], rowsGrid(Math.ceil(OC / 8)));
      } else if (useTiles) tiled(out, inp, weight, N, OC, C, C, 1, 1, C, false);
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

    rmsnormForward(out, rstd, inp, weight, N, C, eps) {
      if (fast) run('rmsnormForwardRow', [out, rstd, inp, weight], [], N, [C, eps], rowsGrid(N));
      else run('rmsnormForward', [out, rstd, inp, weight], [], N, [C, eps]);
    },
    rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C) {
      if (N === 0 || C === 0) return;
      if (fast) run('rmsnormBackwardInputRow', [dinp, dout, inp, weight, rstd], [], N, [C], rowsGrid(N));
      else run('rmsnormBackwardInput', [dinp, dout, inp, weight, rstd], [], N, [C]);
      // dweight: partial column sums over chunks of rows (about 32K invocations), then their sum.
      let chunks = Math.min(N, Math.max(1, Math.ceil(32768 / C)));
      const rows = Math.ceil(N / chunks);
      chunks = Math.ceil(N / rows);
      const part = scratch(chunks * C);
      run('rmsnormWeightPartial', [part, dout, inp, rstd], [], chunks * C, [N, C, rows]);
      run('splitReduce', [dweight, part], [], C, [chunks, 1]);
    },

    rope: (x, cosSin, B, T, nHeads, headDim, rowStride, pos0, inverse) =>
      run('rope', [x, cosSin], [], B * T * nHeads * (headDim >> 1), [T, nHeads, headDim, rowStride, pos0, inverse ? -1 : 1]),

    attentionForward(out, lse, qkv, s) {
      const { HD, p } = attention(s);
      if (!fast) return run('attentionForward', [out, lse, qkv], [], s.B * s.nHeads * s.T, [...p, 1 / Math.sqrt(s.headDim)]);
      const t = attTile('fwd', HD, s);
      if (t) return run(attFwdName(HD, t), [out, lse, qkv], [], s.B * s.nHeads * s.T, [...p, 1 / Math.sqrt(s.headDim)], [Math.ceil(s.T / (4 * t.TY)), s.B * s.nHeads]);
      const rt = rowsTile(HD, s);
      run(attRowsFwdName(HD, rt), [out, lse, qkv], [], s.B * s.nHeads * s.T, [...p, 1 / Math.sqrt(s.headDim)], [Math.ceil(s.T / rt.Q), s.B * s.nHeads]);
    },
    attentionBackward(dqkv, dout, qkv, out, lse, s) {
      const { HD, p } = attention(s);
      const rows = s.B * s.nHeads * s.T;
      if (rows === 0) return;
      if (!fast) {
        const params = [...p, 1 / Math.sqrt(s.headDim)];
        run('attentionBackwardQ', [dqkv, dout, qkv, out, lse], [], rows, params);
        run('attentionBackwardKV', [dqkv, dout, qkv, out, lse], [], s.B * s.nKvHeads * s.T, params);
        return;
      }
      const drow = scratch(rows) && scratchView(0, rows); // D = rowsum(dout * out): attRowDot (blocked) or the rows dq kernel
      const params = [...p, 1 / Math.sqrt(s.headDim)];
      const tkv = attTile('kv', HD, s), tq = attTile('q', HD, s);
      if (tkv && tq) {
        run('attRowDot', [drow, dout, out], [], rows, [s.T, s.nHeads, s.headDim]);
        run(attQName(HD, tq), [dqkv, drow, dout, qkv, lse], [], rows, params, [Math.ceil(s.T / (4 * tq.TY)), s.B * s.nHeads]);
        run(attKVName(HD, tkv), [dqkv, drow, dout, qkv, lse], [], rows, params, [Math.ceil(s.T / (4 * tkv.TY)), s.B * s.nKvHeads]);
        return;
      }
      const rt = rowsTile(HD, s);
      run(attRowsQName(HD, rt), [dqkv, drow, dout, qkv, out, lse], [], rows, params, [Math.ceil(s.T / rt.Q), s.B * s.nHeads]);
      run(attRowsKVName(HD, rt), [dqkv, drow, dout, qkv, lse], [], rows, params, [Math.ceil(s.T / rt.Q), s.B * s.nKvHeads]);
    },
    kvCacheWrite(cache, qkv, s, context, pos0) {
      run('kvCacheWrite', [cache, qkv], [], s.B * s.T * 2 * s.nKvHeads * s.headDim, [...attention(s).p, context, pos0]);
    },
    attentionCached(out, qkv, cache, s, context, pos0) {
      if (!fast) return run('attentionCached', [out, qkv, cache], [], s.B * s.nHeads * s.T, [...attention(s).p, context, pos0, 1 / Math.sqrt(s.headDim)]);
      run('attCachedWg', [out, qkv, cache], [], s.B * s.nHeads * s.T, [...attention(s).p, context, pos0, 1 / Math.sqrt(s.headDim)], [s.T, s.B * s.nHeads]);
    },

    swigluForward: (out, gateUp, N, F) => run('swigluForward', [out, gateUp], [], N * F, [F]),
    swigluBackward: (dgateUp, dout, gateUp, N, F) => run('swigluBackward', [dgateUp, dout, gateUp], [], N * F, [F]),
    geluForward: (out, inp, size) => run('geluForward', [out, inp], [], size, []),
    geluBackward: (dinp, dout, inp, size) => run('geluBackward', [dinp, dout, inp], [], size, []),

    crossEntropyForward(losses, logits, targets, N, V) {
      if (fast) run('crossEntropyForwardRow', [losses, logits], [targets], N, [V], rowsGrid(N));
      else run('crossEntropyForward', [losses, logits], [targets], N, [V]);
    },
    crossEntropyBackward(losses, dlogits, logits, targets, N, V, gradScale) {
      if (fast) run('crossEntropyBackwardRow', [losses, dlogits, logits], [targets], N, [V, gradScale], rowsGrid(N));
      else run('crossEntropyBackward', [losses, dlogits, logits], [targets], N, [V, gradScale]);
    },

    adamw(params, grads, m, v, h: AdamWHyper) {
      const common = [h.lr, h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.eps, 1 - h.lr * h.weightDecay,
        1 - Math.pow(h.beta1, h.step), 1 - Math.pow(h.beta2, h.step), h.gradScale];
      if (h.clip) run('adamwClip', [params, grads, m, v, h.clip.normSquared], [], params.size, [...common, Math.abs(h.gradScale), h.clip.maxNorm > 0 && Number.isFinite(h.clip.maxNorm) ? h.clip.maxNorm : 0]);
      else run('adamw', [params, grads, m, v], [], params.size, common);
    },
  };
  return backend;
}
