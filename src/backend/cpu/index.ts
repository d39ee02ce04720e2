/**
 * The cpu backend: WebAssembly SIMD kernels (wasm/kernels.ts, AssemblyScript) on every core.
 *
 * Memory is one shared WebAssembly.Memory. A tensor is a span of it, `{ size, data, ptr, memory }`:
 * `data` a Float32Array (or Int32Array) view of the span, `ptr` its byte offset for the wasm side
 * and `memory` the owner, checked before a pointer goes to wasm. Because the shape matches the reference backend's tensors, any kernel that has no wasm
 * version yet runs the reference implementation on the same memory: the backend is complete,
 * and kernels move to wasm one at a time (matmuls first: they are most of the FLOPs).
 *
 * Kernels run at once, on the calling thread plus the worker pool (pool.ts), and return when
 * done, so `read` and `sync` have nothing to wait for.
 */
import type { AdamWHyper, Backend, IntTensor, Tensor } from '../types.js';
import { MinigptError, check, checkOptionNames, checkWhole, optionName, optionSetting, shownValue } from '../../errors.js';
import { adamwGradScale, createReferenceBackend } from '../reference/index.js';
import { compileKernels, cpuBackendSupported, createSharedMemory, relaxedSimdSupported, type WasmVariant } from './wasm-module.js';
import { createThreadPool, type ThreadPool } from './pool.js';
import { canBlock, hardwareThreads } from './runtime.js';

export { cpuBackendSupported } from './wasm-module.js';

export interface CpuOptions {
  /** Threads, the calling one included (default: os.availableParallelism() in Node, navigator.hardwareConcurrency in a browser's worker, 1 on a page's main thread, which may not block). */
  threads?: number;
  /**
   * Use the relaxed-SIMD build (fused multiply-add) where the runtime allows it (default true).
   * On Node 20 that means turning on V8's --experimental-wasm-relaxed-simd at run time.
   */
  relaxedSimd?: boolean;
  /**
   * Attention kernels: 'blocked' (default; blocks of queries as small matmuls) or 'rows' (one
   * query row at a time; the simpler fallback, kept for tests and comparisons).
   */
  attention?: 'blocked' | 'rows';
  /**
   * A kernel whose estimated single-thread time (ns) is below this runs on the calling thread
   * alone (default 30000; 0: every kernel on every thread). For benchmarks and tests.
   */
  parallelMinNs?: number;
}

/** A cpu tensor: a view of the shared memory plus its byte offset there, and whose memory it is. */
export interface CpuTensor extends Tensor {
  readonly data: Float32Array;
  readonly ptr: number;
  readonly memory: object;
}
export interface CpuIntTensor extends IntTensor {
  readonly data: Int32Array;
  readonly ptr: number;
  readonly memory: object;
}

/** The cpu backend with the details tests and benchmarks look at. */
export interface CpuBackend extends Backend {
  readonly threads: number;
  readonly variant: WasmVariant;
  readonly attention: 'blocked' | 'rows';
}

const PAGE = 65536;
/** Max pages of a wasm32 memory (4 GiB); shared memories reserve their maximum up front. */
const MAX_PAGES = 65536;
/** The first page is left to the module's static data (AssemblyScript puts its math tables at 1024). */
const HEAP_BASE = PAGE;
const ALIGN = 64;

/**
 * A kernel runs on every thread only when it is worth waking the workers: when its estimated
 * single-thread time, in ns, is at least this. (A call on all threads costs a few µs when the
 * workers are spinning and tens of µs when they sleep; generation's one-row kernels cost less.)
 * Which way a kernel runs depends only on its shape, so results stay bit-repeatable.
 */
const PARALLEL_MIN_NS = 30000;
/** Rough single-thread costs: ns per element of a streaming elementwise kernel, per multiply-add. */
const NS_PER_ELEMENT = 0.5, NS_PER_MAC = 0.1;

const f32 = (t: Tensor): CpuTensor => t as CpuTensor;
const i32 = (t: IntTensor): CpuIntTensor => t as CpuIntTensor;

/** Checks createCpuBackend's options (names and values): a MinigptError for a bad one. */
export function checkCpuOptions(options: CpuOptions, what = 'createCpuBackend'): void {
  checkOptionNames(options, Object.keys(CPU_OPTION_NAMES), what);
  checkWhole(options.threads, 'threads', 1);
  check(options.relaxedSimd === undefined || typeof options.relaxedSimd === 'boolean', () => `relaxedSimd must be true or false (got ${shownValue(options.relaxedSimd)})`);
  check(options.attention === undefined || options.attention === 'blocked' || options.attention === 'rows', () => `attention must be "blocked" or "rows" on the cpu backend (got ${shownValue(options.attention)})`);
  check(options.parallelMinNs === undefined || (typeof options.parallelMinNs === 'number' && options.parallelMinNs >= 0), () => `parallelMinNs must be a number, 0 or more (got ${shownValue(options.parallelMinNs)})`);
}
const CPU_OPTION_NAMES: Record<keyof CpuOptions, true> = { threads: true, relaxedSimd: true, attention: true, parallelMinNs: true };

export async function createCpuBackend(options: CpuOptions = {}): Promise<CpuBackend> {
  checkCpuOptions(options);
  if (!cpuBackendSupported()) throw new MinigptError('cpu backend: this runtime lacks WebAssembly SIMD or SharedArrayBuffer (a page must be cross-origin isolated: COOP same-origin, COEP require-corp; the reference backend runs without)');
  const cores = await hardwareThreads();
  // A page's main thread may not block in Atomics.wait, which the other threads' pool needs: one thread there unless asked.
  const defaultThreads = canBlock() ? cores : 1;
  const threads = Math.max(1, Math.floor(options.threads ?? defaultThreads));
  // Each thread is a worker with its own stack and a share of every kernel: past a few per core
  // they only slow each step (1000 made a 1 s run take minutes) and delay Ctrl-C.
  const maxThreads = Math.max(8, 4 * cores);
  if (threads > maxThreads) throw new MinigptError(`${optionName('threads')} ${threads} is more than this machine can use: it has ${cores} hardware threads; give at most ${maxThreads} (the default is ${defaultThreads})`);
  const variant: WasmVariant = (options.relaxedSimd ?? true) && (await relaxedSimdSupported(true)) ? 'relaxed' : 'simd';
  let memory: ReturnType<typeof createSharedMemory>;
  try {
    memory = createSharedMemory(256, MAX_PAGES);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    // A wasm32 memory reserves its whole address range with guard pages (~10 GiB) up front, though
    // it commits only what the model uses; a virtual-memory limit below that refuses any size
    // (Node 24 falls back to a smaller reservation).
    throw new MinigptError(`the cpu backend could not reserve its WebAssembly memory (${e.message}): a wasm memory reserves far more address space than it uses (~10 GiB on Node 20 and 22), so a virtual-memory limit (ulimit -v, prlimit --as) below that refuses it; raise the limit, or use ${optionSetting('backend', 'reference')} (much slower)`);
  }
  const pool: ThreadPool = await createThreadPool(await compileKernels(variant), memory, threads);
  const wasm = pool.kernels;
  const ref = createReferenceBackend();
  const attentionSuffix = options.attention === 'rows' ? 'Rows' : '';
  const minNs = options.parallelMinNs ?? PARALLEL_MIN_NS;
  const byElements = (n: number): boolean => threads > 1 && n * NS_PER_ELEMENT >= minNs;
  const byMacs = (n: number): boolean => threads > 1 && n * NS_PER_MAC >= minNs;

  // --- memory: a bump allocator (the model allocates once per shape and never frees) ---
  // What it hands out is zero without a fill: a wasm memory starts and grows zeroed, nothing is
  // freed or handed out twice, and the kernels allocate nothing of their own. (A fill would touch
  // every page up front: seconds of page faults for a GPT-2-small model, buffers sized for a
  // whole context included, where sampling writes a few rows.)
  let top = HEAP_BASE;
  const allocBytes = (bytes: number): number => {
    const ptr = Math.ceil(top / ALIGN) * ALIGN;
    const end = ptr + Math.max(bytes, 0);
    const have = memory.buffer.byteLength;
    if (end > have) {
      // Grow by at least half again, so a model's many allocations grow the memory a few times.
      const pages = Math.max(Math.ceil((end - have) / PAGE), Math.ceil(have / PAGE / 2));
      const grow = Math.min(pages, MAX_PAGES - have / PAGE);
      if (have + grow * PAGE < end) {
        throw new MinigptError(`the cpu backend's memory is full: ${(end / 2 ** 30).toFixed(1)} GiB wanted, past the 4 GiB a wasm32 memory holds; use a smaller batch (${optionName('accum')} keeps the tokens per step), context or model`);
      }
      memory.grow(grow);
    }
    top = end;
    return ptr;
  };
  const allocF32 = (size: number): CpuTensor => {
    const ptr = allocBytes(size * 4);
    const data = new Float32Array(memory.buffer, ptr, size);
    return { size, data, ptr, memory };
  };

  // Per-thread scratch for packed matmul panels, grown on demand.
  let scratch = 0, scratchBytes = 0;
  const scratchFor = (bytesPerThread: number): void => {
    if (bytesPerThread <= scratchBytes) return;
    scratchBytes = Math.ceil(bytesPerThread / ALIGN) * ALIGN;
    scratch = allocBytes(scratchBytes * threads);
  };

  /** A wasm kernel gets raw pointers: check each tensor is this backend's and big enough. */
  const need = (what: string, t: Tensor | IntTensor, size: number): void => {
    if ((t as CpuTensor).memory !== memory) throw new TypeError(`${what}: not a tensor of this cpu backend`);
    if (t.size < size) throw new RangeError(`${what}: tensor of ${t.size} elements, kernel needs ${size}`);
  };

  // Every kernel not defined below runs the reference implementation on the same memory.
  const backend: CpuBackend = {
    ...ref,
    name: 'cpu',
    memoryLimit: MAX_PAGES * PAGE - HEAP_BASE,
    threads,
    variant,
    attention: options.attention ?? 'blocked',

    alloc: allocF32,
    allocInt(size) {
      const ptr = allocBytes(size * 4);
      const data = new Int32Array(memory.buffer, ptr, size);
      return { size, data, ptr, memory } as CpuIntTensor;
    },
    view(t, offset, size) {
      if (offset < 0 || size < 0 || offset + size > t.size) throw new RangeError(`view [${offset}, ${offset + size}) outside tensor of ${t.size}`);
      const s = f32(t);
      return { size, data: s.data.subarray(offset, offset + size), ptr: s.ptr + offset * 4, memory } as CpuTensor;
    },
    write(t, data, offset = 0) {
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      f32(t).data.set(data as ArrayLike<number>, offset);
    },
    writeInt(t, data, offset = 0) {
      if (offset + data.length > t.size) throw new RangeError(`write of ${data.length} at ${offset} outside tensor of ${t.size}`);
      i32(t).data.set(data as ArrayLike<number>, offset);
    },
    read: async (t) => f32(t).data.slice(),
    sync: async () => {},
    destroy() {
      pool.destroy();
    },

    zero: (t) => void f32(t).data.fill(0),
    copy: (dst, src) => void f32(dst).data.set(f32(src).data),
    roundHalf(t, format) {
      pool.run(format === 'f16' ? 'roundF16' : 'roundBf16', [f32(t).ptr, t.size], byElements(t.size));
    },
    add(out, a, b) {
      need('add out', out, out.size); need('add a', a, out.size); need('add b', b, out.size);
      pool.run('add', [f32(out).ptr, f32(a).ptr, f32(b).ptr, out.size], byElements(out.size));
    },
    accumulateSum(out, x, scale) {
      need('accumulateSum x', x, x.size);
      const v = f32(x).data;
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[i];
      f32(out).data[0] += scale * s;
    },
    sumSquares(out, xs) {
      // each thread leaves an f64 partial in its scratch; summed here in f64 like the reference
      scratchFor(8);
      let total = 0;
      for (const x of xs) {
        need('sumSquares x', x, x.size);
        const used = pool.run('sumSquares', [f32(x).ptr, x.size, scratch, scratchBytes], byElements(x.size));
        for (let t = 0; t < used; t++) total += new Float64Array(memory.buffer, scratch + t * scratchBytes, 1)[0];
      }
      f32(out).data[0] = total;
    },

    matmulForward(out, inp, weight, N, C, OC) {
      need('matmulForward out', out, N * OC); need('matmulForward inp', inp, N * C); need('matmulForward weight', weight, OC * C);
      if (N === 0 || OC === 0) return;
      scratchFor(wasm.matmulScratchBytes(C, OC) as number);
      pool.run('matmulForward', [f32(out).ptr, f32(inp).ptr, f32(weight).ptr, N, C, OC, scratch, scratchBytes], byMacs(N * C * OC));
    },
    matmulBackward(dinp, dweight, dout, inp, weight, N, C, OC) {
      need('matmulBackward dweight', dweight, OC * C); need('matmulBackward dout', dout, N * OC);
      need('matmulBackward inp', inp, N * C); need('matmulBackward weight', weight, OC * C);
      scratchFor(wasm.matmulScratchBytes(C, OC) as number);
      if (dinp) {
        need('matmulBackward dinp', dinp, N * C);
        pool.run('matmulBackwardInput', [f32(dinp).ptr, f32(dout).ptr, f32(weight).ptr, N, C, OC, scratch, scratchBytes], byMacs(N * C * OC));
      }
      pool.run('matmulBackwardWeight', [f32(dweight).ptr, f32(dout).ptr, f32(inp).ptr, N, C, OC, scratch, scratchBytes], byMacs(N * C * OC));
    },

    rmsnormForward(out, rstd, inp, weight, N, C, eps) {
      need('rmsnormForward out', out, N * C); need('rmsnormForward rstd', rstd, N);
      need('rmsnormForward inp', inp, N * C); need('rmsnormForward weight', weight, C);
      pool.run('rmsnormForward', [f32(out).ptr, f32(rstd).ptr, f32(inp).ptr, f32(weight).ptr, N, C, eps], byElements(2 * N * C));
    },
    rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C) {
      need('rmsnormBackward dinp', dinp, N * C); need('rmsnormBackward dweight', dweight, C);
      need('rmsnormBackward dout', dout, N * C); need('rmsnormBackward inp', inp, N * C);
      need('rmsnormBackward weight', weight, C); need('rmsnormBackward rstd', rstd, N);
      // each thread sums its rows' dweight into its scratch; then one pass adds them all
      scratchFor(C * 4);
      const used = pool.run('rmsnormBackward', [f32(dinp).ptr, f32(dout).ptr, f32(inp).ptr, f32(weight).ptr, f32(rstd).ptr, N, C, scratch, scratchBytes], byElements(4 * N * C));
      wasm.reduceScratch(f32(dweight).ptr, scratch, scratchBytes, C, used);
    },
    rope(x, cosSin, B, T, nHeads, headDim, rowStride, pos0, inverse) {
      need('rope x', x, B * T * rowStride); need('rope cosSin', cosSin, (pos0 + T) * headDim);
      pool.run('rope', [f32(x).ptr, f32(cosSin).ptr, B, T, nHeads, headDim, rowStride, pos0, inverse ? 1 : 0], byElements(2 * B * T * nHeads * headDim));
    },

    swigluForward(out, gateUp, N, F) {
      need('swigluForward out', out, N * F); need('swigluForward gateUp', gateUp, N * 2 * F);
      pool.run('swigluForward', [f32(out).ptr, f32(gateUp).ptr, N, F], byElements(4 * N * F));
    },
    swigluBackward(dgateUp, dout, gateUp, N, F) {
      need('swigluBackward dgateUp', dgateUp, N * 2 * F); need('swigluBackward dout', dout, N * F);
      need('swigluBackward gateUp', gateUp, N * 2 * F);
      pool.run('swigluBackward', [f32(dgateUp).ptr, f32(dout).ptr, f32(gateUp).ptr, N, F], byElements(6 * N * F));
    },

    crossEntropyForward(losses, logits, targets, N, V) {
      need('crossEntropyForward losses', losses, N); need('crossEntropyForward logits', logits, N * V);
      need('crossEntropyForward targets', targets, N);
      pool.run('crossEntropyForward', [f32(losses).ptr, f32(logits).ptr, i32(targets).ptr, N, V], byElements(3 * N * V));
    },
    crossEntropyBackward(losses, dlogits, logits, targets, N, V, gradScale) {
      need('crossEntropyBackward losses', losses, N); need('crossEntropyBackward dlogits', dlogits, N * V);
      need('crossEntropyBackward logits', logits, N * V);
      need('crossEntropyBackward targets', targets, N);
      pool.run('crossEntropyBackward', [f32(losses).ptr, f32(dlogits).ptr, f32(logits).ptr, i32(targets).ptr, N, V, gradScale], byElements(4 * N * V));
    },

    adamw(params, grads, m, v, hyper: AdamWHyper) {
      const n = params.size;
      need('adamw params', params, n); need('adamw grads', grads, n); need('adamw m', m, n); need('adamw v', v, n);
      const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
      const scale = adamwGradScale(hyper, hyper.clip && f32(hyper.clip.normSquared).data[0]);
      if (scale === null) return;
      const bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
      pool.run('adamw', [f32(params).ptr, f32(grads).ptr, f32(m).ptr, f32(v).ptr, n, lr, beta1, beta2, eps, 1 - lr * weightDecay, bc1, bc2, scale], byElements(4 * n));
    },

    geluForward(out, inp, size) {
      need('geluForward out', out, size); need('geluForward inp', inp, size);
      pool.run('geluForward', [f32(out).ptr, f32(inp).ptr, size], byElements(4 * size));
    },
    geluBackward(dinp, dout, inp, size) {
      need('geluBackward dinp', dinp, size); need('geluBackward dout', dout, size); need('geluBackward inp', inp, size);
      pool.run('geluBackward', [f32(dinp).ptr, f32(dout).ptr, f32(inp).ptr, size], byElements(6 * size));
    },

    attentionForward(out, lse, qkv, shape) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      need('attentionForward out', out, B * T * H * hd); need('attentionForward lse', lse, B * H * T);
      need('attentionForward qkv', qkv, B * T * (H + 2 * KVH) * hd);
      scratchFor(wasm.attentionScratchBytes(T, hd) as number);
      pool.run(`attentionForward${attentionSuffix}`, [f32(out).ptr, f32(lse).ptr, f32(qkv).ptr, B, T, H, KVH, hd, scratch, scratchBytes], byMacs(B * H * T * T * hd));
    },
    attentionBackward(dqkv, dout, qkv, out, lse, shape) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      need('attentionBackward dqkv', dqkv, B * T * (H + 2 * KVH) * hd); need('attentionBackward dout', dout, B * T * H * hd);
      need('attentionBackward qkv', qkv, B * T * (H + 2 * KVH) * hd); need('attentionBackward out', out, B * T * H * hd);
      need('attentionBackward lse', lse, B * H * T);
      scratchFor(wasm.attentionScratchBytes(T, hd) as number);
      pool.run(`attentionBackward${attentionSuffix}`, [f32(dqkv).ptr, f32(dout).ptr, f32(qkv).ptr, f32(out).ptr, f32(lse).ptr, B, T, H, KVH, hd, scratch, scratchBytes], byMacs(2 * B * H * T * T * hd));
    },

    embeddingForward(out, ids, table, N, C) {
      need('embeddingForward out', out, N * C); need('embeddingForward ids', ids, N); need('embeddingForward table', table, C);
      const id = i32(ids).data, V = table.size / C;
      for (let n = 0; n < N; n++) if (!(id[n] >= 0 && id[n] < V)) throw new RangeError(`embeddingForward: token id ${id[n]} outside the table of ${V} rows`);
      pool.run('embeddingForward', [f32(out).ptr, i32(ids).ptr, f32(table).ptr, N, C], byElements(2 * N * C));
    },
    embeddingBackward(dtable, dout, ids, N, C) {
      need('embeddingBackward dout', dout, N * C); need('embeddingBackward ids', ids, N); need('embeddingBackward dtable', dtable, C);
      const id = i32(ids).data, V = dtable.size / C;
      for (let n = 0; n < N; n++) if (!(id[n] >= 0 && id[n] < V)) throw new RangeError(`embeddingBackward: token id ${id[n]} outside the table of ${V} rows`);
      pool.run('embeddingBackward', [f32(dtable).ptr, f32(dout).ptr, i32(ids).ptr, N, C], byElements(3 * N * C));
    },

    kvCacheWrite(cache, qkv, shape, context, pos0) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      need('kvCacheWrite qkv', qkv, B * T * (H + 2 * KVH) * hd);
      need('kvCacheWrite cache', cache, B * context * 2 * KVH * hd);
      if (pos0 < 0 || pos0 + T > context) throw new RangeError(`kvCacheWrite: positions ${pos0}..${pos0 + T} outside the context ${context}`);
      pool.run('kvCacheWrite', [f32(cache).ptr, f32(qkv).ptr, B, T, H, KVH, hd, context, pos0], byElements(4 * B * T * KVH * hd));
    },
    attentionCached(out, qkv, cache, shape, context, pos0) {
      const { B, T, nHeads: H, nKvHeads: KVH, headDim: hd } = shape;
      need('attentionCached out', out, B * T * H * hd); need('attentionCached qkv', qkv, B * T * (H + 2 * KVH) * hd);
      need('attentionCached cache', cache, B * context * 2 * KVH * hd);
      if (pos0 < 0 || pos0 + T > context) throw new RangeError(`attentionCached: positions ${pos0}..${pos0 + T} outside the context ${context}`);
      scratchFor(wasm.attentionCachedScratchBytes(context, hd) as number);
      pool.run('attentionCached', [f32(out).ptr, f32(qkv).ptr, f32(cache).ptr, B, T, H, KVH, hd, context, pos0, scratch, scratchBytes], byMacs(2 * B * H * T * (pos0 + T) * hd));
    },
  };
  return backend;
}
