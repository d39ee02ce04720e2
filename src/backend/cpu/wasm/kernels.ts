// WebAssembly SIMD kernels of the cpu backend, in AssemblyScript (built by build.mjs, not by the
// project's tsc). Every pointer is a byte offset into the one shared memory; every size is in
// elements. Each exported kernel takes (tid, nThreads) last and does only its own share of the
// work, so the main thread and the workers call the same export with different tids; shares
// never write the same bytes, so no kernel needs a lock. `scratch` is the base of a region of
// `scratchBytes` per thread (thread tid uses scratch + tid * scratchBytes) for packed panels.
//
// Built twice: with relaxed SIMD (fused multiply-add) and without; `fma` picks at compile time.

// ---------------------------------------------------------------------------------------------
// helpers

/** a * b + c, fused where the build has relaxed SIMD. */
// @ts-ignore: decorator
@inline function fma(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** Sum of the four lanes. */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.add(s, i32x4.shuffle(s, s, 1, 0, 3, 2)), 0);
}

/** The [lo, hi) share of `units` work units that thread tid of n gets (contiguous, balanced). */
// @ts-ignore: decorator
@inline function shareStart(units: i32, tid: i32, n: i32): i32 {
  return <i32>((<i64>units * tid) / n);
}

/**
 * Byte address of the work counter shared by all threads (in the first page, below the static
 * data at 1024). The pool zeroes it before every kernel call; kernels whose units of work vary
 * in cost, or whose threads may be slowed by other processes, take units from it one at a time
 * (dynamic scheduling) instead of a fixed share.
 */
const WORK_COUNTER: usize = 64;
// @ts-ignore: decorator
@inline function nextUnit(): i32 {
  return atomic.add<i32>(WORK_COUNTER, 1);
}
// @ts-ignore: decorator
@inline function workLeft(units: i32): bool {
  return atomic.load<i32>(WORK_COUNTER) < units;
}

/** Stores the first `n` (0..4) lanes of v at p (p + 4*i); += instead when accumulate. */
function storeLanes(p: usize, v: v128, n: i32, accumulate: bool): void {
  if (n >= 4) {
    if (accumulate) v = f32x4.add(v, v128.load(p));
    v128.store(p, v);
    return;
  }
  if (n <= 0) return;
  if (accumulate) {
    store<f32>(p, load<f32>(p) + f32x4.extract_lane(v, 0));
    if (n > 1) store<f32>(p, load<f32>(p, 4) + f32x4.extract_lane(v, 1), 4);
    if (n > 2) store<f32>(p, load<f32>(p, 8) + f32x4.extract_lane(v, 2), 8);
  } else {
    store<f32>(p, f32x4.extract_lane(v, 0));
    if (n > 1) store<f32>(p, f32x4.extract_lane(v, 1), 4);
    if (n > 2) store<f32>(p, f32x4.extract_lane(v, 2), 8);
  }
}

// ---------------------------------------------------------------------------------------------
// matmul: one register-tiled micro-kernel and panel packing, shared by the three shapes

/** Columns per panel: the micro-kernel's width (two f32x4). */
const NR: i32 = 8;
/** Rows per micro-kernel call. */
const MR: i32 = 4;
/** Rows of A packed at a time by the forward and dinp loops (kept hot while they sweep the panels). */
const MC: i32 = 64;
/** Tokens per chunk of dweight's reduction: a unit's packed dout^T (8 groups x KC x 16 B) and the
 * KC rows of inp that one panel reads stay in L1. */
const KC: i32 = 128;

/** Stores (or adds, with `accumulate`) a 4x8 tile's accumulators to out (rows ldOut bytes apart), clipped to rows x cols. */
@inline function storeTile4x8(out: usize, ldOut: usize, rows: i32, cols: i32, accumulate: bool,
  c00: v128, c01: v128, c10: v128, c11: v128, c20: v128, c21: v128, c30: v128, c31: v128): void {
  if (rows == MR && cols == NR) {
    const o1 = out + ldOut, o2 = out + 2 * ldOut, o3 = out + 3 * ldOut;
    if (accumulate) {
      c00 = f32x4.add(c00, v128.load(out)); c01 = f32x4.add(c01, v128.load(out, 16));
      c10 = f32x4.add(c10, v128.load(o1)); c11 = f32x4.add(c11, v128.load(o1, 16));
      c20 = f32x4.add(c20, v128.load(o2)); c21 = f32x4.add(c21, v128.load(o2, 16));
      c30 = f32x4.add(c30, v128.load(o3)); c31 = f32x4.add(c31, v128.load(o3, 16));
    }
    v128.store(out, c00); v128.store(out, c01, 16);
    v128.store(o1, c10); v128.store(o1, c11, 16);
    v128.store(o2, c20); v128.store(o2, c21, 16);
    v128.store(o3, c30); v128.store(o3, c31, 16);
    return;
  }
  const lo = min(cols, 4), hi = cols - 4;
  storeLanes(out, c00, lo, accumulate); storeLanes(out + 16, c01, hi, accumulate);
  if (rows > 1) { storeLanes(out + ldOut, c10, lo, accumulate); storeLanes(out + ldOut + 16, c11, hi, accumulate); }
  if (rows > 2) { storeLanes(out + 2 * ldOut, c20, lo, accumulate); storeLanes(out + 2 * ldOut + 16, c21, hi, accumulate); }
  if (rows > 3) { storeLanes(out + 3 * ldOut, c30, lo, accumulate); storeLanes(out + 3 * ldOut + 16, c31, hi, accumulate); }
}

/**
 * out[r, 0:cols] (= or +=) sum_k A[r, k] * B[k, 0:8] for r < rows (<= 4), cols <= 8, with A
 * packed as [K][4] (pa) and B rows of 8 floats ldB bytes apart (pb: a packed panel, ldB = 32, or
 * rows of a row-major matrix): every load has a constant offset from one of two pointers, so the
 * loop is 8 multiply-adds, 2 loads of B, 4 broadcasts of A and two increments.
 */
function tile4x8(pa: usize, pb: usize, ldB: usize, K: i32, out: usize, ldOut: usize, rows: i32, cols: i32, accumulate: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const end = pa + <usize>K * 16;
  while (pa < end) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    let x = v128.load32_splat(pa);
    c00 = fma(x, b0, c00); c01 = fma(x, b1, c01);
    x = v128.load32_splat(pa, 4);
    c10 = fma(x, b0, c10); c11 = fma(x, b1, c11);
    x = v128.load32_splat(pa, 8);
    c20 = fma(x, b0, c20); c21 = fma(x, b1, c21);
    x = v128.load32_splat(pa, 12);
    c30 = fma(x, b0, c30); c31 = fma(x, b1, c31);
    pa += 16;
    pb += ldB;
  }
  storeTile4x8(out, ldOut, rows, cols, accumulate, c00, c01, c10, c11, c20, c21, c30, c31);
}

/**
 * tile4x8 with A's rows of 4 `ldA` bytes apart instead of packed (16): attention reads P^T and
 * dS^T, [key][query] row-major, in place as A (four queries per k).
 */
function tileA(pa: usize, ldA: usize, pb: usize, ldB: usize, K: i32, out: usize, ldOut: usize, rows: i32, cols: i32, accumulate: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < K; k++) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    let x = v128.load32_splat(pa);
    c00 = fma(x, b0, c00); c01 = fma(x, b1, c01);
    x = v128.load32_splat(pa, 4);
    c10 = fma(x, b0, c10); c11 = fma(x, b1, c11);
    x = v128.load32_splat(pa, 8);
    c20 = fma(x, b0, c20); c21 = fma(x, b1, c21);
    x = v128.load32_splat(pa, 12);
    c30 = fma(x, b0, c30); c31 = fma(x, b1, c31);
    pa += ldA;
    pb += ldB;
  }
  storeTile4x8(out, ldOut, rows, cols, accumulate, c00, c01, c10, c11, c20, c21, c30, c31);
}

/**
 * tile4x8 with A read in place from a [row][k] matrix whose rows are QB floats apart (attention's
 * P^T and dS^T, [key][query]): A[r, k] at pa + r*QB*4 + k*4, so its four broadcasts have constant
 * offsets too. dK += dS^T Q and dV += P^T dO take their A from there without packing.
 */
function tileRowsQB(pa: usize, pb: usize, ldB: usize, K: i32, out: usize, ldOut: usize, rows: i32, cols: i32, accumulate: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const end = pa + <usize>K * 4;
  while (pa < end) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    let x = v128.load32_splat(pa);
    c00 = fma(x, b0, c00); c01 = fma(x, b1, c01);
    x = v128.load32_splat(pa, QB * 4);
    c10 = fma(x, b0, c10); c11 = fma(x, b1, c11);
    x = v128.load32_splat(pa, 2 * QB * 4);
    c20 = fma(x, b0, c20); c21 = fma(x, b1, c21);
    x = v128.load32_splat(pa, 3 * QB * 4);
    c30 = fma(x, b0, c30); c31 = fma(x, b1, c31);
    pa += 4;
    pb += ldB;
  }
  storeTile4x8(out, ldOut, rows, cols, accumulate, c00, c01, c10, c11, c20, c21, c30, c31);
}

/** dst[k*8 + j] = src[k*rs + j*cs] for k < K, j < cols, and 0 for cols <= j < 8 (strides in bytes). */
function packPanel(dst: usize, src: usize, rs: usize, cs: usize, K: i32, cols: i32): void {
  if (cols == NR && cs == 4) {
    for (let k = 0; k < K; k++) {
      const s = src + <usize>k * rs, d = dst + <usize>k * 32;
      v128.store(d, v128.load(s));
      v128.store(d, v128.load(s, 16), 16);
    }
    return;
  }
  let k0 = 0;
  if (cols == NR && rs == 4) {
    // a transpose (Q^T, dO^T, weight^T): 4x4 blocks of the eight source rows
    const s0 = src, s1 = src + cs, s2 = src + 2 * cs, s3 = src + 3 * cs;
    const s4 = src + 4 * cs, s5 = src + 5 * cs, s6 = src + 6 * cs, s7 = src + 7 * cs;
    for (; k0 + 4 <= K; k0 += 4) {
      const o = <usize>k0 * 4, d = dst + <usize>k0 * 32;
      let r0 = v128.load(s0 + o), r1 = v128.load(s1 + o), r2 = v128.load(s2 + o), r3 = v128.load(s3 + o);
      let t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
      let t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7), t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
      v128.store(d, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
      v128.store(d, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 32);
      v128.store(d, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 64);
      v128.store(d, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 96);
      r0 = v128.load(s4 + o); r1 = v128.load(s5 + o); r2 = v128.load(s6 + o); r3 = v128.load(s7 + o);
      t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5); t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
      t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7); t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
      v128.store(d, i32x4.shuffle(t0, t1, 0, 1, 4, 5), 16);
      v128.store(d, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 48);
      v128.store(d, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 80);
      v128.store(d, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 112);
    }
  }
  for (let k = k0; k < K; k++) {
    const s = src + <usize>k * rs, d = dst + <usize>(k * NR) * 4;
    let j = 0;
    for (; j < cols; j++) store<f32>(d + 4 * j, load<f32>(s + <usize>j * cs));
    for (; j < NR; j++) store<f32>(d + 4 * j, 0);
  }
}

/**
 * A's rows [m0, m0+rows) (rows <= 4) as [K][4]: dst[k*4 + r] = A[m0 + r, k], zeros for r >= rows.
 * A[m, k] is at a + m*rs + k*cs (bytes).
 */
function packRows4(dst: usize, a: usize, rs: usize, cs: usize, K: i32, rows: i32): void {
  if (rows == MR && rs == 4) {
    // four neighbouring rows of one k are contiguous (dout^T): one vector per k
    for (let k = 0; k < K; k++) v128.store(dst + <usize>k * 16, v128.load(a + <usize>k * cs));
    return;
  }
  if (rows == MR && cs == 4) {
    // row-major A: transpose 4x4 blocks
    const a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs;
    let k = 0;
    for (; k + 4 <= K; k += 4) {
      const o = <usize>k * 4;
      const r0 = v128.load(a0 + o), r1 = v128.load(a1 + o), r2 = v128.load(a2 + o), r3 = v128.load(a3 + o);
      const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
      const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7), t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
      const d = dst + <usize>k * 16;
      v128.store(d, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
      v128.store(d, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 16);
      v128.store(d, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 32);
      v128.store(d, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 48);
    }
    for (; k < K; k++) {
      const o = <usize>k * 4, d = dst + <usize>k * 16;
      store<f32>(d, load<f32>(a0 + o)); store<f32>(d, load<f32>(a1 + o), 4);
      store<f32>(d, load<f32>(a2 + o), 8); store<f32>(d, load<f32>(a3 + o), 12);
    }
    return;
  }
  for (let k = 0; k < K; k++) {
    const d = dst + <usize>k * 16;
    for (let r = 0; r < MR; r++) store<f32>(d + 4 * r, r < rows ? load<f32>(a + <usize>r * rs + <usize>k * cs) : 0);
  }
}

/**
 * out[m, 0:NC] (= or +=) A[m, 0:K] @ B for m in [m0, m1). A[m, k] is at a + m*rsA + k*csA
 * (bytes); B is given as packed panels of 8 columns, [K][8] each, panel p at panels +
 * p*panelStride. Packs MC rows of A at a time into packedA ([MC/4][K][4]) and sweeps every panel
 * over them. out row m starts at out + m*ldOut (bytes).
 */
function gemm(out: usize, ldOut: usize, a: usize, rsA: usize, csA: usize, panels: usize, panelStride: usize, packedA: usize, K: i32, NC: i32, m0: i32, m1: i32, accumulate: bool): void {
  const nPanels = (NC + NR - 1) / NR;
  const groupBytes = <usize>K * 16;
  for (let mb = m0; mb < m1; mb += MC) {
    const mEnd = min(mb + MC, m1);
    for (let m = mb; m < mEnd; m += MR) {
      packRows4(packedA + <usize>((m - mb) / MR) * groupBytes, a + <usize>m * rsA, rsA, csA, K, min(MR, mEnd - m));
    }
    for (let p = 0; p < nPanels; p++) {
      const panel = panels + <usize>p * panelStride;
      const cols = min(NR, NC - p * NR);
      for (let m = mb; m < mEnd; m += MR) {
        tile4x8(packedA + <usize>((m - mb) / MR) * groupBytes, panel, NR * 4, K,
          out + <usize>m * ldOut + <usize>(p * NR) * 4, ldOut, min(MR, mEnd - m), cols, accumulate);
      }
    }
  }
}

/** B[k, j] = src[k*rs + j*cs] (bytes) for k < K, j < NC, packed as panels [K][8] (zero-padded). */
function packPanels(dst: usize, src: usize, rs: usize, cs: usize, K: i32, NC: i32): void {
  for (let p = 0; p < (NC + NR - 1) / NR; p++) {
    packPanel(dst + <usize>(p * K * NR) * 4, src + <usize>(p * NR) * cs, rs, cs, K, min(NR, NC - p * NR));
  }
}

/** out[N,OC] = inp[N,C] @ weight[OC,C]^T. Threads take blocks of MC rows; each packs all of weight^T. */
export function matmulForward(out: usize, inp: usize, weight: usize, N: i32, C: i32, OC: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  if (N < SMALL_N) {
    matmulForwardSmallN(out, inp, weight, N, C, OC, tid, nThreads);
    return;
  }
  if (OC > BIG_OC) {
    // Units are (chunk of KB output channels, block of MC rows), chunk-major; a thread packs a
    // chunk's panels when it first takes one of its units (the counter only grows), so the
    // scratch holds one chunk, not all of weight^T (an lm_head over a big vocabulary).
    const rowBlocks = (N + MC - 1) / MC, chunks = (OC + KB - 1) / KB;
    const panels = scratch + <usize>tid * scratchBytes;
    const packedA = panels + <usize>(KB * C) * 4;
    let packed = -1;
    for (let u = nextUnit(); u < rowBlocks * chunks; u = nextUnit()) {
      const ch = u / rowBlocks, rb = u % rowBlocks;
      const o0 = ch * KB, nc = min(KB, OC - o0);
      if (ch != packed) {
        for (let p = 0; p < (nc + NR - 1) / NR; p++) {
          packPanel(panels + <usize>(p * C * NR) * 4, weight + <usize>(o0 + p * NR) * C * 4, 4, <usize>C * 4, C, min(NR, nc - p * NR));
        }
        packed = ch;
      }
      gemm(out + <usize>o0 * 4, <usize>OC * 4, inp, <usize>C * 4, 4, panels, <usize>C * NR * 4, packedA, C, nc, rb * MC, min(N, (rb + 1) * MC), false);
    }
    return;
  }
  const units = (N + MC - 1) / MC;
  if (!workLeft(units)) return;
  const panels = scratch + <usize>tid * scratchBytes;
  const nPanels = (OC + NR - 1) / NR;
  // panel p, [C, 8]: panel[c, j] = weight[8p + j, c]
  for (let p = 0; p < nPanels; p++) {
    packPanel(panels + <usize>(p * C * NR) * 4, weight + <usize>(p * NR * C) * 4, 4, <usize>C * 4, C, min(NR, OC - p * NR));
  }
  const packedA = panels + <usize>(nPanels * NR * C) * 4;
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    gemm(out, <usize>OC * 4, inp, <usize>C * 4, 4, panels, <usize>C * NR * 4, packedA, C, OC, u * MC, min(N, (u + 1) * MC), false);
  }
}

/** Above this many output channels, matmulBackwardInput reduces over OC in chunks of KB. */
const BIG_OC: i32 = 2048;
/** Output channels per chunk of matmulBackwardInput's reduction when OC > BIG_OC: the packed panels (C x KB) and A block (MC x KB) stay in L2. */
const KB: i32 = 512;

/**
 * dinp[N,C] = dout[N,OC] @ weight[OC,C] (overwrite). Threads take blocks of MC rows. With a large
 * OC (an lm_head over a big vocabulary) the reduction over OC runs in chunks of KB, each thread
 * packing each chunk of weight once for its own row blocks (a fixed split: every dinp element sums
 * its chunks in the same order whatever the thread count).
 */
export function matmulBackwardInput(dinp: usize, dout: usize, weight: usize, N: i32, C: i32, OC: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  if (OC > BIG_OC) {
    const units = (N + MC - 1) / MC;
    const u0 = shareStart(units, tid, nThreads), u1 = shareStart(units, tid + 1, nThreads);
    if (u0 >= u1) return;
    const panels = scratch + <usize>tid * scratchBytes;
    const nPanels = (C + NR - 1) / NR;
    const packedA = panels + <usize>(nPanels * NR * KB) * 4;
    for (let k0 = 0; k0 < OC; k0 += KB) {
      const kc = min(KB, OC - k0);
      for (let p = 0; p < nPanels; p++) {
        packPanel(panels + <usize>(p * kc * NR) * 4, weight + (<usize>k0 * C + p * NR) * 4, <usize>C * 4, 4, kc, min(NR, C - p * NR));
      }
      for (let u = u0; u < u1; u++) {
        gemm(dinp, <usize>C * 4, dout + <usize>k0 * 4, <usize>OC * 4, 4, panels, <usize>kc * NR * 4, packedA, kc, C, u * MC, min(N, (u + 1) * MC), k0 > 0);
      }
    }
    return;
  }
  const units = (N + MC - 1) / MC;
  if (!workLeft(units)) return;
  const panels = scratch + <usize>tid * scratchBytes;
  const nPanels = (C + NR - 1) / NR;
  // panel p, [OC, 8]: panel[oc, j] = weight[oc, 8p + j]
  for (let p = 0; p < nPanels; p++) {
    packPanel(panels + <usize>(p * OC * NR) * 4, weight + <usize>(p * NR) * 4, <usize>C * 4, 4, OC, min(NR, C - p * NR));
  }
  const packedA = panels + <usize>(nPanels * NR * OC) * 4;
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    gemm(dinp, <usize>C * 4, dout, <usize>OC * 4, 4, panels, <usize>OC * NR * 4, packedA, OC, C, u * MC, min(N, (u + 1) * MC), false);
  }
}

/** Rows of dweight in a unit of matmulBackwardWeight's work. */
const OCB: i32 = 32;

/**
 * dweight[OC,C] += dout[N,OC]^T @ inp[N,C]. Threads take blocks of OCB rows of dweight, each
 * split into as few column blocks as still give every thread ~4 units (more blocks cost more
 * packing of dout^T: measured -15% on one thread when always split), so each owns what it
 * writes. The reduction over N runs in chunks of KC tokens: per chunk, the thread packs its oc
 * rows of dout^T ([groups][kc][4]); B is the chunk of inp read in place, 8 columns at a time (a
 * packed copy only for the last panel when C is not a multiple of 8).
 */
export function matmulBackwardWeight(dweight: usize, dout: usize, inp: usize, N: i32, C: i32, OC: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const nPanels = (C + NR - 1) / NR, ocBlocks = (OC + OCB - 1) / OCB;
  const cBlocks = min(nPanels, max(1, (4 * nThreads + ocBlocks - 1) / ocBlocks));
  const panelsPerBlock = (nPanels + cBlocks - 1) / cBlocks;
  const units = ocBlocks * cBlocks;
  const tail = scratch + <usize>tid * scratchBytes;
  const packedA = tail + <usize>(NR * KC) * 4;
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    const ob = u / cBlocks, cb = u % cBlocks;
    const g0 = (ob * OCB) / MR, g1 = (min(OC, (ob + 1) * OCB) + MR - 1) / MR;
    const p0 = cb * panelsPerBlock, p1 = min(nPanels, p0 + panelsPerBlock);
    for (let k0 = 0; k0 < N; k0 += KC) {
      const kc = min(KC, N - k0);
      for (let g = g0; g < g1; g++) {
        packRows4(packedA + <usize>((g - g0) * kc * MR) * 4, dout + (<usize>k0 * OC + g * MR) * 4, 4, <usize>OC * 4, kc, min(MR, OC - g * MR));
      }
      for (let p = p0; p < p1; p++) {
        const cols = min(NR, C - p * NR);
        let b = inp + (<usize>k0 * C + p * NR) * 4, ldB = <usize>C * 4;
        if (cols < NR) {
          packPanel(tail, b, ldB, 4, kc, cols);
          b = tail;
          ldB = NR * 4;
        }
        for (let g = g0; g < g1; g++) {
          tile4x8(packedA + <usize>((g - g0) * kc * MR) * 4, b, ldB, kc,
            dweight + (<usize>(g * MR) * C + p * NR) * 4, <usize>C * 4, min(MR, OC - g * MR), cols, true);
        }
      }
    }
  }
}

/** Below this many rows, matmulForward is a set of dot products (packing weight would cost more). */
const SMALL_N: i32 = 8;

/**
 * out[N,OC] = inp[N,C] @ weight[OC,C]^T for small N (generation: one row per sequence): each
 * output is a dot product over C, with no packing. Threads split the output channels at
 * multiples of 4. When C % 4 == 0, four weight rows go at once (four accumulators, transposed
 * and added at the end: the same sum order as dot(), so the result never depends on the split).
 */
function matmulForwardSmallN(out: usize, inp: usize, weight: usize, N: i32, C: i32, OC: i32, tid: i32, nThreads: i32): void {
  const o0 = rangeStart(OC, tid, nThreads), o1 = rangeStart(OC, tid + 1, nThreads);
  const cB = <usize>C * 4;
  let oc = o0;
  if ((C & 3) == 0) {
    // eight rows: eight independent FMA chains (four leave the loop waiting on FMA latency)
    for (; oc + 8 <= o1; oc += 8) {
      const w0 = weight + <usize>oc * cB, w1 = w0 + cB, w2 = w1 + cB, w3 = w2 + cB;
      const w4 = w3 + cB, w5 = w4 + cB, w6 = w5 + cB, w7 = w6 + cB;
      for (let n = 0; n < N; n++) {
        const x = inp + <usize>n * cB;
        let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
        let a4 = f32x4.splat(0), a5 = f32x4.splat(0), a6 = f32x4.splat(0), a7 = f32x4.splat(0);
        for (let i: usize = 0; i < cB; i += 16) {
          const xi = v128.load(x + i);
          a0 = fma(xi, v128.load(w0 + i), a0);
          a1 = fma(xi, v128.load(w1 + i), a1);
          a2 = fma(xi, v128.load(w2 + i), a2);
          a3 = fma(xi, v128.load(w3 + i), a3);
          a4 = fma(xi, v128.load(w4 + i), a4);
          a5 = fma(xi, v128.load(w5 + i), a5);
          a6 = fma(xi, v128.load(w6 + i), a6);
          a7 = fma(xi, v128.load(w7 + i), a7);
        }
        const o = out + (<usize>n * OC + oc) * 4;
        const t0 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
        const t1 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
        v128.store(o, f32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7)));
        const t2 = f32x4.add(i32x4.shuffle(a4, a5, 0, 4, 1, 5), i32x4.shuffle(a4, a5, 2, 6, 3, 7));
        const t3 = f32x4.add(i32x4.shuffle(a6, a7, 0, 4, 1, 5), i32x4.shuffle(a6, a7, 2, 6, 3, 7));
        v128.store(o, f32x4.add(i32x4.shuffle(t2, t3, 0, 1, 4, 5), i32x4.shuffle(t2, t3, 2, 3, 6, 7)), 16);
      }
    }
    for (; oc + 4 <= o1; oc += 4) {
      const w0 = weight + <usize>oc * cB, w1 = w0 + cB, w2 = w1 + cB, w3 = w2 + cB;
      for (let n = 0; n < N; n++) {
        const x = inp + <usize>n * cB;
        let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
        for (let i: usize = 0; i < cB; i += 16) {
          const xi = v128.load(x + i);
          a0 = fma(xi, v128.load(w0 + i), a0);
          a1 = fma(xi, v128.load(w1 + i), a1);
          a2 = fma(xi, v128.load(w2 + i), a2);
          a3 = fma(xi, v128.load(w3 + i), a3);
        }
        const t0 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
        const t1 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
        const o = out + (<usize>n * OC + oc) * 4;
        storeLanes(o, f32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7)), 4, false);
      }
    }
  }
  for (; oc < o1; oc++) {
    const w = weight + <usize>oc * cB;
    for (let n = 0; n < N; n++) store<f32>(out + (<usize>n * OC + oc) * 4, dot(inp + <usize>n * cB, w, C));
  }
}

/** Scratch bytes per thread that the matmul kernels need for these sizes. */
export function matmulScratchBytes(C: i32, OC: i32): usize {
  const cPanels = <usize>((C + NR - 1) / NR) * NR, ocPanels = <usize>((OC + NR - 1) / NR) * NR;
  const fwd = (OC > BIG_OC ? <usize>KB : ocPanels) * C + <usize>MC * C;
  const bwdInput = (cPanels + <usize>MC) * <usize>(OC > BIG_OC ? KB : OC);
  const bwdWeight = <usize>NR * KC + <usize>OCB * KC;
  return max(max(fwd, bwdInput), bwdWeight) * 4;
}

// ---------------------------------------------------------------------------------------------
// naive matmuls: the fallback the tests compare the tiled ones against (single thread)

export function matmulForwardNaive(out: usize, inp: usize, weight: usize, N: i32, C: i32, OC: i32): void {
  for (let n = 0; n < N; n++) {
    for (let oc = 0; oc < OC; oc++) {
      let s: f32 = 0;
      for (let c = 0; c < C; c++) s += load<f32>(inp + (<usize>n * C + c) * 4) * load<f32>(weight + (<usize>oc * C + c) * 4);
      store<f32>(out + (<usize>n * OC + oc) * 4, s);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// exp, vectorised: what softmax spends most of its time in

/**
 * e^x per lane (Cephes expf: x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial; ~1 ulp). Inputs
 * below -87.3 give ~1e-38 instead of 0 (softmax sums never notice), above 88.3 give ~3e38.
 * n is rounded by adding 1.5·2^23 (then n's integer sits in the low mantissa bits), which spares
 * f32x4.nearest and the saturating conversion; pmin/pmax are single instructions, min/max not.
 */
// @ts-ignore: decorator
@inline function expVec(x: v128): v128 {
  x = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88.3)), f32x4.splat(-87.3));
  const magic = f32x4.splat(12582912.0);
  const t = f32x4.add(f32x4.mul(x, f32x4.splat(1.44269504088896341)), magic);
  const n = f32x4.sub(t, magic);
  let r = fma(n, f32x4.splat(-0.693359375), x);
  r = fma(n, f32x4.splat(2.12194440e-4), r);
  let p = f32x4.splat(1.9875691500e-4);
  p = fma(p, r, f32x4.splat(1.3981999507e-3));
  p = fma(p, r, f32x4.splat(8.3334519073e-3));
  p = fma(p, r, f32x4.splat(4.1665795894e-2));
  p = fma(p, r, f32x4.splat(1.6666665459e-1));
  p = fma(p, r, f32x4.splat(5.0000001201e-1));
  const y = f32x4.add(fma(f32x4.mul(p, r), r, r), f32x4.splat(1));
  const pow2n = i32x4.shl(i32x4.add(i32x4.sub(t, magic), i32x4.splat(127)), 23);
  return f32x4.mul(y, pow2n);
}

export function expForTest(out: usize, inp: usize, n: i32): void {
  for (let i = 0; i < n; i += 4) v128.store(out + <usize>i * 4, expVec(v128.load(inp + <usize>i * 4)));
}

// ---------------------------------------------------------------------------------------------
// attention: per (batch, head) rows of causal softmax(q·k·scale)·v, exact (two passes per row)

/** a[0:n] · b[0:n]. */
// @ts-ignore: decorator
@inline function dot(a: usize, b: usize, n: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) acc = fma(v128.load(a + <usize>i * 4), v128.load(b + <usize>i * 4), acc);
  let s = hsum(acc);
  for (; i < n; i++) s += load<f32>(a + <usize>i * 4) * load<f32>(b + <usize>i * 4);
  return s;
}

/** y[0:n] += alpha · x[0:n]. */
// @ts-ignore: decorator
@inline function axpy(y: usize, x: usize, alpha: f32, n: i32): void {
  const a = f32x4.splat(alpha);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(y + <usize>i * 4, fma(a, v128.load(x + <usize>i * 4), v128.load(y + <usize>i * 4)));
  for (; i < n; i++) store<f32>(y + <usize>i * 4, load<f32>(y + <usize>i * 4) + alpha * load<f32>(x + <usize>i * 4));
}

/**
 * s[j] = scale · (x · rows[j]) for j < count, where row j starts at rows + j*stride (bytes);
 * returns max s. Four rows at a time when hd % 4 == 0 (their four partial-sum vectors are
 * transposed and added, so the four scores come out as one vector).
 */
function scoresRow(s: usize, x: usize, rows: usize, stride: usize, count: i32, hd: i32, scale: f32): f32 {
  const sc = f32x4.splat(scale);
  let vmax = f32x4.splat(-Infinity);
  let j = 0;
  if ((hd & 3) == 0) {
    for (; j + 4 <= count; j += 4) {
      const r0 = rows + <usize>j * stride, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let i = 0; i < hd; i += 4) {
        const xi = v128.load(x + <usize>i * 4);
        a0 = fma(xi, v128.load(r0 + <usize>i * 4), a0);
        a1 = fma(xi, v128.load(r1 + <usize>i * 4), a1);
        a2 = fma(xi, v128.load(r2 + <usize>i * 4), a2);
        a3 = fma(xi, v128.load(r3 + <usize>i * 4), a3);
      }
      const t0 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
      const t1 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
      const v = f32x4.mul(f32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7)), sc);
      v128.store(s + <usize>j * 4, v);
      vmax = f32x4.pmax(vmax, v);
    }
  }
  let m = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
  for (; j < count; j++) {
    const v = dot(x, rows + <usize>j * stride, hd) * scale;
    store<f32>(s + <usize>j * 4, v);
    m = max(m, v);
  }
  return m;
}

/**
 * s[j] = exp(s[j] - shift) for j < count (in place); returns their sum. s must have room for
 * count rounded up to 4: the lanes past count are set to exp(-huge) ~ 0 and not summed.
 */
function expRow(s: usize, count: i32, shift: f32): f32 {
  const padded = (count + 3) & ~3;
  for (let j = count; j < padded; j++) store<f32>(s + <usize>j * 4, -1e30);
  const sh = f32x4.splat(shift);
  let sum = f32x4.splat(0);
  for (let j = 0; j < padded; j += 4) {
    const p = expVec(f32x4.sub(v128.load(s + <usize>j * 4), sh));
    v128.store(s + <usize>j * 4, p);
    sum = f32x4.add(sum, p);
  }
  return hsum(sum);
}

/**
 * acc[0:hd] = Σ_{j<count} w[j] · rows[j][0:hd] (row j at rows + j*stride bytes). When hd is a
 * multiple of 16, each 16-float slice of acc stays in four registers across the whole j loop.
 */
function weightedRowSum(acc: usize, w: usize, rows: usize, stride: usize, count: i32, hd: i32): void {
  if ((hd & 15) == 0) {
    for (let i = 0; i < hd; i += 16) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let r = rows + <usize>i * 4;
      for (let j = 0; j < count; j++) {
        const x = v128.load32_splat(w + <usize>j * 4);
        a0 = fma(x, v128.load(r), a0);
        a1 = fma(x, v128.load(r, 16), a1);
        a2 = fma(x, v128.load(r, 32), a2);
        a3 = fma(x, v128.load(r, 48), a3);
        r += stride;
      }
      const d = acc + <usize>i * 4;
      v128.store(d, a0); v128.store(d, a1, 16); v128.store(d, a2, 32); v128.store(d, a3, 48);
    }
    return;
  }
  memory.fill(acc, 0, <usize>hd * 4);
  for (let j = 0; j < count; j++) axpy(acc, rows + <usize>j * stride, load<f32>(w + <usize>j * 4), hd);
}

/**
 * rows[j][0:hd] += w[j] · x[0:hd] for j < count (row j at rows + j*stride bytes). When hd is a
 * multiple of 16, each 16-float slice of x stays in registers across the j loop.
 */
function scatterRows(rows: usize, stride: usize, w: usize, x: usize, count: i32, hd: i32): void {
  if ((hd & 15) == 0) {
    for (let i = 0; i < hd; i += 16) {
      const xo = x + <usize>i * 4;
      const x0 = v128.load(xo), x1 = v128.load(xo, 16), x2 = v128.load(xo, 32), x3 = v128.load(xo, 48);
      let r = rows + <usize>i * 4;
      for (let j = 0; j < count; j++) {
        const a = v128.load32_splat(w + <usize>j * 4);
        v128.store(r, fma(a, x0, v128.load(r)));
        v128.store(r, fma(a, x1, v128.load(r, 16)), 16);
        v128.store(r, fma(a, x2, v128.load(r, 32)), 32);
        v128.store(r, fma(a, x3, v128.load(r, 48)), 48);
        r += stride;
      }
    }
    return;
  }
  for (let j = 0; j < count; j++) axpy(rows + <usize>j * stride, x, load<f32>(w + <usize>j * 4), hd);
}

/**
 * out[B,T,H*hd], lse[B,H,T] from qkv[B,T,(H+2KVH)*hd]. Threads split the (b, h) pairs; each row
 * t: scores s_j = q_t·k_j/sqrt(hd) for j <= t, p = exp(s - max), out = Σ p_j v_j / Σ p_j.
 */
export function attentionForwardRows(out: usize, lse: usize, qkv: usize, B: i32, T: i32, H: i32, KVH: i32, hd: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const units = B * H;
  const u0 = shareStart(units, tid, nThreads), u1 = shareStart(units, tid + 1, nThreads);
  const stride = <usize>(H + 2 * KVH) * hd * 4, outStride = <usize>H * hd * 4;
  const scale = <f32>(1 / Math.sqrt(<f64>hd));
  const group = H / KVH;
  const s = scratch + <usize>tid * scratchBytes;
  const acc = s + <usize>((T + 8) & ~3) * 4;
  for (let u = u0; u < u1; u++) {
    const b = u / H, h = u % H;
    const base = qkv + <usize>b * T * stride;
    const kBase = base + <usize>(H + h / group) * hd * 4, vBase = kBase + <usize>KVH * hd * 4;
    for (let t = 0; t < T; t++) {
      const q = base + <usize>t * stride + <usize>h * hd * 4;
      const count = t + 1;
      const m = scoresRow(s, q, kBase, stride, count, hd, scale);
      const sum = expRow(s, count, m);
      store<f32>(lse + (<usize>(b * H + h) * T + t) * 4, m + Mathf.log(sum));
      weightedRowSum(acc, s, vBase, stride, count, hd);
      const o = out + (<usize>(b * T + t)) * outStride + <usize>h * hd * 4;
      const inv = f32x4.splat(1 / sum);
      let i = 0;
      for (; i + 4 <= hd; i += 4) v128.store(o + <usize>i * 4, f32x4.mul(v128.load(acc + <usize>i * 4), inv));
      for (; i < hd; i++) store<f32>(o + <usize>i * 4, load<f32>(acc + <usize>i * 4) / sum);
    }
  }
}

/** x[0:n] = 0. */
// @ts-ignore: decorator
@inline function zeroRow(x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(x + <usize>i * 4, f32x4.splat(0));
  for (; i < n; i++) store<f32>(x + <usize>i * 4, 0);
}

/**
 * dqkv[B,T,(H+2KVH)*hd] (overwrite) from dout[B,T,H*hd]. Threads split the (b, kv head) pairs,
 * so the dk, dv that a kv head's query heads all add into belong to one thread. Per row t of
 * head h: p_j = exp(s_j - lse_t), dp_j = dout_t·v_j, ds_j = p_j (dp_j - dout_t·out_t) scale;
 * dv_j += p_j dout_t, dk_j += ds_j q_t, dq_t += ds_j k_j.
 */
export function attentionBackwardRows(dqkv: usize, dout: usize, qkv: usize, out: usize, lse: usize, B: i32, T: i32, H: i32, KVH: i32, hd: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const units = B * KVH;
  const u0 = shareStart(units, tid, nThreads), u1 = shareStart(units, tid + 1, nThreads);
  const stride = <usize>(H + 2 * KVH) * hd * 4, outStride = <usize>H * hd * 4, hdB = <usize>hd * 4;
  const scale = <f32>(1 / Math.sqrt(<f64>hd));
  const group = H / KVH;
  const p = scratch + <usize>tid * scratchBytes;
  const ds = p + <usize>((T + 8) & ~3) * 4;
  const acc = ds + <usize>((T + 8) & ~3) * 4;
  for (let u = u0; u < u1; u++) {
    const b = u / KVH, kvh = u % KVH;
    const base = qkv + <usize>b * T * stride, dbase = dqkv + <usize>b * T * stride;
    const kOff = <usize>(H + kvh) * hdB, vOff = kOff + <usize>KVH * hdB;
    // zero this unit's outputs: dk, dv of kv head kvh and dq of its query heads, every t
    for (let t = 0; t < T; t++) {
      const row = dbase + <usize>t * stride;
      memory.fill(row + kOff, 0, hdB);
      memory.fill(row + vOff, 0, hdB);
      memory.fill(row + <usize>kvh * group * hdB, 0, <usize>group * hdB);
    }
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      for (let t = 0; t < T; t++) {
        const q = base + <usize>t * stride + <usize>h * hdB;
        const dq = dbase + <usize>t * stride + <usize>h * hdB;
        const g = dout + <usize>(b * T + t) * outStride + <usize>h * hdB;
        const o = out + <usize>(b * T + t) * outStride + <usize>h * hdB;
        const count = t + 1;
        const D = dot(g, o, hd);
        scoresRow(p, q, base + kOff, stride, count, hd, scale);
        expRow(p, count, load<f32>(lse + (<usize>(b * H + h) * T + t) * 4));
        scoresRow(ds, g, base + vOff, stride, count, hd, 1);
        // ds_j = p_j (dp_j - D) scale, four at a time (the padded lanes have p ~ 0)
        const vD = f32x4.splat(D), vs = f32x4.splat(scale);
        for (let j = 0; j < count; j += 4) {
          const pj = v128.load(p + <usize>j * 4);
          v128.store(ds + <usize>j * 4, f32x4.mul(f32x4.mul(pj, f32x4.sub(v128.load(ds + <usize>j * 4), vD)), vs));
        }
        scatterRows(dbase + vOff, stride, p, g, count, hd); // dv_j += p_j dout_t
        scatterRows(dbase + kOff, stride, ds, q, count, hd); // dk_j += ds_j q_t
        weightedRowSum(acc, ds, base + kOff, stride, count, hd); // dq_t = Σ ds_j k_j
        memory.copy(dq, acc, <usize>hd * 4);
      }
    }
  }
}


// ---------------------------------------------------------------------------------------------
// SwiGLU: h = silu(gate) * up, rows split across threads

/** σ(g) per lane. */
// @ts-ignore: decorator
@inline function sigmoidVec(g: v128): v128 {
  const one = f32x4.splat(1);
  return f32x4.div(one, f32x4.add(one, expVec(f32x4.neg(g))));
}

// @ts-ignore: decorator
@inline function sigmoid(g: f32): f32 {
  return 1 / (1 + Mathf.exp(-g));
}

/** out[N,F] = silu(gateUp[:, :F]) * gateUp[:, F:]. */
export function swigluForward(out: usize, gateUp: usize, N: i32, F: i32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  const fB = <usize>F * 4;
  for (let n = n0; n < n1; n++) {
    const g = gateUp + <usize>n * 2 * fB, u = g + fB, o = out + <usize>n * fB;
    let f = 0;
    for (; f + 4 <= F; f += 4) {
      const gv = v128.load(g + <usize>f * 4);
      v128.store(o + <usize>f * 4, f32x4.mul(f32x4.mul(gv, sigmoidVec(gv)), v128.load(u + <usize>f * 4)));
    }
    for (; f < F; f++) {
      const gs = load<f32>(g + <usize>f * 4);
      store<f32>(o + <usize>f * 4, gs * sigmoid(gs) * load<f32>(u + <usize>f * 4));
    }
  }
}

/** dgateUp[N,2F] (overwrite): dg = dh·u·σ(g)·(1 + g·(1-σ(g))), du = dh·g·σ(g). */
export function swigluBackward(dgateUp: usize, dout: usize, gateUp: usize, N: i32, F: i32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  const fB = <usize>F * 4;
  const one = f32x4.splat(1);
  for (let n = n0; n < n1; n++) {
    const g = gateUp + <usize>n * 2 * fB, u = g + fB, h = dout + <usize>n * fB;
    const dg = dgateUp + <usize>n * 2 * fB, du = dg + fB;
    let f = 0;
    for (; f + 4 <= F; f += 4) {
      const o = <usize>f * 4;
      const gv = v128.load(g + o), uv = v128.load(u + o), hv = v128.load(h + o);
      const sig = sigmoidVec(gv);
      const hsig = f32x4.mul(hv, sig);
      v128.store(dg + o, f32x4.mul(f32x4.mul(hsig, uv), f32x4.add(one, f32x4.mul(gv, f32x4.sub(one, sig)))));
      v128.store(du + o, f32x4.mul(hsig, gv));
    }
    for (; f < F; f++) {
      const o = <usize>f * 4;
      const gs = load<f32>(g + o), us = load<f32>(u + o), hs = load<f32>(h + o);
      const sig = sigmoid(gs);
      store<f32>(dg + o, hs * us * sig * (1 + gs * (1 - sig)));
      store<f32>(du + o, hs * gs * sig);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm and RoPE, rows split across threads

/** out[N,C] = inp / sqrt(mean(inp^2) + eps) * weight; rstd[N] = that 1/sqrt. */
export function rmsnormForward(out: usize, rstd: usize, inp: usize, weight: usize, N: i32, C: i32, eps: f32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  const cB = <usize>C * 4;
  for (let n = n0; n < n1; n++) {
    const x = inp + <usize>n * cB, o = out + <usize>n * cB;
    const s = <f32>(1 / Math.sqrt(<f64>dot(x, x, C) / C + eps));
    store<f32>(rstd + <usize>n * 4, s);
    const sv = f32x4.splat(s);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const i = <usize>c * 4;
      v128.store(o + i, f32x4.mul(f32x4.mul(v128.load(x + i), sv), v128.load(weight + i)));
    }
    for (; c < C; c++) store<f32>(o + <usize>c * 4, load<f32>(x + <usize>c * 4) * s * load<f32>(weight + <usize>c * 4));
  }
}

/**
 * dinp[N,C] += s·(w⊙dy) - s³/C · x · Σ(w⊙dy⊙x); this thread's share of dweight (Σ_n dy⊙x·s over
 * its rows) goes to its scratch [C], summed into dweight by reduceScratch after every thread is done.
 */
export function rmsnormBackward(dinp: usize, dout: usize, inp: usize, weight: usize, rstd: usize, N: i32, C: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  const cB = <usize>C * 4;
  const dw = scratch + <usize>tid * scratchBytes;
  memory.fill(dw, 0, cB);
  for (let n = n0; n < n1; n++) {
    const x = inp + <usize>n * cB, g = dout + <usize>n * cB, dx = dinp + <usize>n * cB;
    const s = load<f32>(rstd + <usize>n * 4);
    let dotv = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const i = <usize>c * 4;
      dotv = fma(f32x4.mul(v128.load(weight + i), v128.load(g + i)), v128.load(x + i), dotv);
    }
    let d = hsum(dotv);
    for (let t = c; t < C; t++) d += load<f32>(weight + <usize>t * 4) * load<f32>(g + <usize>t * 4) * load<f32>(x + <usize>t * 4);
    const k = (s * s * s * d) / <f32>C;
    const sv = f32x4.splat(s), kv = f32x4.splat(k);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const i = <usize>c * 4;
      const xv = v128.load(x + i), gv = v128.load(g + i);
      v128.store(dx + i, f32x4.add(v128.load(dx + i), f32x4.sub(f32x4.mul(f32x4.mul(sv, v128.load(weight + i)), gv), f32x4.mul(kv, xv))));
      v128.store(dw + i, fma(f32x4.mul(gv, xv), sv, v128.load(dw + i)));
    }
    for (; c < C; c++) {
      const i = <usize>c * 4;
      const xs = load<f32>(x + i), gs = load<f32>(g + i);
      store<f32>(dx + i, load<f32>(dx + i) + s * load<f32>(weight + i) * gs - k * xs);
      store<f32>(dw + i, load<f32>(dw + i) + gs * xs * s);
    }
  }
}

/** out[0:n] += Σ_t scratch_t[0:n] over nThreads per-thread scratch regions (single call, not split). */
export function reduceScratch(out: usize, scratch: usize, scratchBytes: usize, n: i32, nThreads: i32): void {
  for (let t = 0; t < nThreads; t++) axpy(out, scratch + <usize>t * scratchBytes, 1, n);
}

/**
 * Rotates, in place, the first nHeads heads of each row of x[B*T, rowStride] by position
 * pos0 + t (rotate-half); cosSin[context, hd] = [cos | sin]; inverse rotates back.
 */
export function rope(x: usize, cosSin: usize, B: i32, T: i32, nHeads: i32, hd: i32, rowStride: i32, pos0: i32, inverse: i32, tid: i32, nThreads: i32): void {
  const rows = B * T;
  const r0 = shareStart(rows, tid, nThreads), r1 = shareStart(rows, tid + 1, nThreads);
  const half = hd / 2, halfB = <usize>half * 4;
  const sgn: f32 = inverse ? -1 : 1;
  const sign = f32x4.splat(sgn);
  for (let r = r0; r < r1; r++) {
    const t = r % T;
    const tab = cosSin + <usize>(pos0 + t) * hd * 4;
    const row = x + <usize>r * rowStride * 4;
    for (let h = 0; h < nHeads; h++) {
      const a = row + <usize>h * hd * 4, b = a + halfB;
      let j = 0;
      for (; j + 4 <= half; j += 4) {
        const o = <usize>j * 4;
        const c = v128.load(tab + o), s = f32x4.mul(sign, v128.load(tab + halfB + o));
        const x1 = v128.load(a + o), x2 = v128.load(b + o);
        v128.store(a + o, f32x4.sub(f32x4.mul(x1, c), f32x4.mul(x2, s)));
        v128.store(b + o, f32x4.add(f32x4.mul(x2, c), f32x4.mul(x1, s)));
      }
      for (; j < half; j++) {
        const o = <usize>j * 4;
        const c = load<f32>(tab + o), s = sgn * load<f32>(tab + halfB + o);
        const x1 = load<f32>(a + o), x2 = load<f32>(b + o);
        store<f32>(a + o, x1 * c - x2 * s);
        store<f32>(b + o, x2 * c + x1 * s);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// attention, blocked: per (batch, head), blocks of QB queries as small matmuls on the 4x8 tile,
// in a transposed layout: S^T = K Q^T is [key][query], so the softmax runs down its columns four
// queries per vector, and P^T (dS^T) is read in place as the A operand of O = P V (dQ = dS K) by
// tileA; backward dP^T = V dO^T the same way, and dK += dS^T Q, dV += P^T dO by tileRowsQB, which
// reads dS^T / P^T in place as A and the rows of Q / dO in place as B (nothing packed). Each
// query block only meets keys up to its last query (causal), so S^T is [t1, QB] and the masked
// triangle of the diagonal block is the only wasted work.

/** Queries per block (16 measured faster than 32 and 64 on seed and nanogpt-cpu shapes). */
const QB: i32 = 16;

// @ts-ignore: decorator
@inline function roundUp8(n: i32): i32 { return (n + 7) & ~7; }
/** Width (floats) of a row of S and dP. */
// @ts-ignore: decorator
@inline function scoreWidth(T: i32): i32 { return roundUp8(T); }

// Where each buffer of the blocked attention kernels starts in this thread's scratch (bytes).
// Globals belong to one instance, i.e. to one thread. (No objects: the stub runtime never frees.)
let scratchS: usize = 0, scratchDp: usize = 0, scratchKT: usize = 0, scratchKP: usize = 0, scratchVT: usize = 0;
let scratchVP: usize = 0, scratchQP: usize = 0, scratchGP: usize = 0;
let scratchGB: usize = 0, scratchStat: usize = 0;

/** Lays the buffers out from `base`; returns the end. */
function attentionScratchLayout(base: usize, T: i32, hd: i32): usize {
  const SW = <usize>scoreWidth(T), T8 = <usize>roundUp8(T), hd8 = <usize>roundUp8(hd), q = <usize>QB;
  let at = base;
  scratchS = at; at += q * SW * 4;
  scratchDp = at; at += q * SW * 4;
  scratchKT = at; at += T8 * <usize>hd * 4;
  scratchKP = at; at += hd8 * <usize>T * 4;
  scratchVT = at; at += T8 * <usize>hd * 4;
  scratchVP = at; at += hd8 * <usize>T * 4;
  scratchQP = at; at += hd8 * q * 4;
  scratchGP = at; at += hd8 * q * 4;
  scratchGB = at; at += hd8 * q * 4;
  scratchStat = at; at += 2 * q * 4;
  return at;
}

/** Scratch bytes per thread for the attention kernels (blocked and rows). */
export function attentionScratchBytes(T: i32, hd: i32): usize {
  return max(attentionScratchLayout(0, T, hd), <usize>(3 * ((T + 8) & ~3) + hd + 8) * 4);
}

/**
 * S^T[key j][query c] for keys [0, t1) and the block's queries (QB columns, ldS = QB*4 bytes):
 * K packed as groups of 4 keys ([hd][4], at kA), Q^T as panels of 8 queries ([hd][8], at qP).
 * Full 4x8 tiles only (S^T has room for every row and column they touch); groups wholly after
 * the last query of a panel are skipped.
 */
function scoresT(sT: usize, kA: usize, qP: usize, hd: i32, t0: i32, t1: i32, rows: i32): void {
  const ldS = <usize>QB * 4, gB = <usize>hd * 16, pB = <usize>hd * 32;
  const panels = (rows + NR - 1) / NR;
  for (let g = 0; g < (t1 + 3) / 4; g++) {
    for (let p = 0; p < panels; p++) {
      if (4 * g > t0 + 8 * p + 7) continue;
      tileA(kA + <usize>g * gB, 16, qP + <usize>p * pB, 32, hd, sT + <usize>(4 * g) * ldS + <usize>p * 32, ldS, MR, NR, false);
    }
  }
}

/** Keys [0, this) that column c (queries t0+4c .. t0+4c+3) of a block ending at t1 sees. */
// @ts-ignore: decorator
@inline function keysOf(t0: i32, t1: i32, c: i32): i32 { return min(t1, t0 + 4 * c + 4); }

/** Lane r (0..3) of v. */
// @ts-ignore: decorator
@inline function lane(v: v128, r: i32): f32 {
  return r == 0 ? f32x4.extract_lane(v, 0) : r == 1 ? f32x4.extract_lane(v, 1) : r == 2 ? f32x4.extract_lane(v, 2) : f32x4.extract_lane(v, 3);
}

/** (t, t+1, t+2, t+3). */
// @ts-ignore: decorator
@inline function iota4(t: i32): v128 { return i32x4.add(i32x4.splat(t), v128(0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0)); }

/**
 * out[B,T,H*hd], lse[B,H,T] from qkv[B,T,(H+2KVH)*hd]; threads take (b, h) pairs one at a time.
 * Per block of QB queries: S^T = K Q^T ([key][query]), then the causal softmax down each column
 * (four queries per vector: no horizontal sums), P^T left in place and read as A by O = P V.
 */
export function attentionForward(out: usize, lse: usize, qkv: usize, B: i32, T: i32, H: i32, KVH: i32, hd: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const units = B * H;
  const stride = <usize>(H + 2 * KVH) * hd * 4, outStride = <usize>H * hd * 4, hdB = <usize>hd * 4;
  const scale = <f32>(1 / Math.sqrt(<f64>hd));
  const group = H / KVH;
  attentionScratchLayout(scratch + <usize>tid * scratchBytes, T, hd);
  const ldS = <usize>QB * 4, vc = f32x4.splat(scale), ninf = f32x4.splat(-Infinity), zero = f32x4.splat(0);
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    const b = u / H, h = u % H;
    const base = qkv + <usize>b * T * stride;
    const kBase = base + <usize>(H + h / group) * hdB, vBase = kBase + <usize>KVH * hdB;
    for (let g = 0; g < (T + 3) / 4; g++) packRows4(scratchKT + <usize>g * hdB * 4, kBase + <usize>(4 * g) * stride, stride, 4, hd, min(MR, T - 4 * g)); // K: groups [hd][4]
    packPanels(scratchVP, vBase, stride, 4, T, hd); // V: [key][i]
    const lrow = lse + <usize>(b * H + h) * T * 4;
    for (let t0 = 0; t0 < T; t0 += QB) {
      const t1 = min(T, t0 + QB), rows = t1 - t0;
      const q = base + <usize>t0 * stride + <usize>h * hdB;
      packPanels(scratchQP, q, 4, stride, hd, rows); // Q^T: [i][query]
      scoresT(scratchS, scratchKT, scratchQP, hd, t0, t1, rows);
      const o = out + <usize>(b * T + t0) * outStride + <usize>h * hdB;
      for (let c = 0; c < (rows + 3) / 4; c++) {
        const col = scratchS + <usize>c * 16, kEnd = keysOf(t0, t1, c);
        const qi = iota4(t0 + 4 * c);
        // each query's max score (keys after the query masked out)
        let vmax = ninf;
        let j = 0;
        for (; j < t0; j++) vmax = f32x4.pmax(vmax, v128.load(col + <usize>j * ldS));
        for (; j < kEnd; j++) vmax = f32x4.pmax(vmax, v128.bitselect(v128.load(col + <usize>j * ldS), ninf, i32x4.le_s(i32x4.splat(j), qi)));
        const vm = f32x4.neg(f32x4.mul(vmax, vc));
        let sum = zero;
        j = 0;
        for (; j < t0; j++) {
          const a = col + <usize>j * ldS;
          const pv = expVec(fma(v128.load(a), vc, vm));
          v128.store(a, pv);
          sum = f32x4.add(sum, pv);
        }
        for (; j < kEnd; j++) {
          const a = col + <usize>j * ldS;
          const pv = v128.bitselect(expVec(fma(v128.load(a), vc, vm)), zero, i32x4.le_s(i32x4.splat(j), qi));
          v128.store(a, pv);
          sum = f32x4.add(sum, pv);
        }
        // lse = m + log Σp; O rows = (P V) / Σp
        const n = min(4, rows - 4 * c);
        const orow = o + <usize>(4 * c) * outStride;
        for (let p = 0; p < (hd + NR - 1) / NR; p++) {
          tileA(col, ldS, scratchVP + <usize>p * T * NR * 4, NR * 4, kEnd, orow + <usize>(p * NR) * 4, outStride, n, min(NR, hd - p * NR), false);
        }
        for (let r = 0; r < n; r++) {
          const sumR = lane(sum, r);
          store<f32>(lrow + <usize>(t0 + 4 * c + r) * 4, Mathf.log(sumR) - lane(vm, r));
          const inv: f32 = 1 / sumR;
          const rr = orow + <usize>r * outStride, vi = f32x4.splat(inv);
          let i = 0;
          for (; i + 4 <= hd; i += 4) v128.store(rr + <usize>i * 4, f32x4.mul(v128.load(rr + <usize>i * 4), vi));
          for (; i < hd; i++) store<f32>(rr + <usize>i * 4, load<f32>(rr + <usize>i * 4) * inv);
        }
      }
    }
  }
}

/**
 * dqkv[B,T,(H+2KVH)*hd] (overwrite) from dout[B,T,H*hd]. Threads take (b, kv head) pairs one at
 * a time, so all the dk, dv a kv head's query heads add into belong to one thread. Per block of
 * QB queries, in the forward's transposed layout: S^T = K Q^T and dP^T = V dO^T ([key][query]),
 * then down each column P = exp(S·scale - lse) and dS = P (dP - dO·O) scale (four queries per
 * vector); dQ = dS K reads dS^T in place; dK += dS^T Q, dV += P^T dO.
 */
export function attentionBackward(dqkv: usize, dout: usize, qkv: usize, out: usize, lse: usize, B: i32, T: i32, H: i32, KVH: i32, hd: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const units = B * KVH;
  const stride = <usize>(H + 2 * KVH) * hd * 4, outStride = <usize>H * hd * 4, hdB = <usize>hd * 4;
  const scale = <f32>(1 / Math.sqrt(<f64>hd));
  const group = H / KVH;
  attentionScratchLayout(scratch + <usize>tid * scratchBytes, T, hd);
  const ldS = <usize>QB * 4, vc = f32x4.splat(scale), zero = f32x4.splat(0);
  const statD = scratchStat, statL = scratchStat + <usize>QB * 4;
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    const b = u / KVH, kvh = u % KVH;
    const base = qkv + <usize>b * T * stride, dbase = dqkv + <usize>b * T * stride;
    const kOff = <usize>(H + kvh) * hdB, vOff = kOff + <usize>KVH * hdB;
    for (let t = 0; t < T; t++) {
      zeroRow(dbase + <usize>t * stride + kOff, hd);
      zeroRow(dbase + <usize>t * stride + vOff, hd);
    }
    for (let g = 0; g < (T + 3) / 4; g++) {
      const rows4 = min(MR, T - 4 * g), src = base + <usize>(4 * g) * stride;
      packRows4(scratchKT + <usize>g * hdB * 4, src + kOff, stride, 4, hd, rows4); // K: groups [hd][4]
      packRows4(scratchVT + <usize>g * hdB * 4, src + vOff, stride, 4, hd, rows4); // V: groups [hd][4]
    }
    packPanels(scratchKP, base + kOff, stride, 4, T, hd); // K: [key][i]
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      const lrow = lse + <usize>(b * H + h) * T * 4;
      for (let t0 = 0; t0 < T; t0 += QB) {
        const t1 = min(T, t0 + QB), rows = t1 - t0;
        const q = base + <usize>t0 * stride + <usize>h * hdB;
        const g = dout + <usize>(b * T + t0) * outStride + <usize>h * hdB;
        const o = out + <usize>(b * T + t0) * outStride + <usize>h * hdB;
        packPanels(scratchQP, q, 4, stride, hd, rows); // Q^T: [i][query]
        packPanels(scratchGP, g, 4, outStride, hd, rows); // dO^T: [i][query]
        scoresT(scratchS, scratchKT, scratchQP, hd, t0, t1, rows);
        scoresT(scratchDp, scratchVT, scratchGP, hd, t0, t1, rows);
        for (let r = 0; r < QB; r++) {
          const live = r < rows;
          store<f32>(statD + <usize>r * 4, live ? dot(g + <usize>r * outStride, o + <usize>r * outStride, hd) : 0);
          store<f32>(statL + <usize>r * 4, live ? load<f32>(lrow + <usize>(t0 + r) * 4) : 0);
        }
        const dq = dbase + <usize>t0 * stride + <usize>h * hdB;
        for (let c = 0; c < (rows + 3) / 4; c++) {
          const colS = scratchS + <usize>c * 16, colD = scratchDp + <usize>c * 16, kEnd = keysOf(t0, t1, c);
          const qi = iota4(t0 + 4 * c);
          const vl = f32x4.neg(v128.load(statL + <usize>c * 16)), vD = v128.load(statD + <usize>c * 16);
          let j = 0;
          for (; j < t0; j++) {
            const a = colS + <usize>j * ldS, d = colD + <usize>j * ldS;
            const p = expVec(fma(v128.load(a), vc, vl));
            v128.store(a, p);
            v128.store(d, f32x4.mul(f32x4.mul(p, f32x4.sub(v128.load(d), vD)), vc));
          }
          for (; j < kEnd; j++) {
            const a = colS + <usize>j * ldS, d = colD + <usize>j * ldS;
            const p = v128.bitselect(expVec(fma(v128.load(a), vc, vl)), zero, i32x4.le_s(i32x4.splat(j), qi));
            v128.store(a, p);
            v128.store(d, f32x4.mul(f32x4.mul(p, f32x4.sub(v128.load(d), vD)), vc));
          }
          for (; j < t1; j++) {
            v128.store(colS + <usize>j * ldS, zero);
            v128.store(colD + <usize>j * ldS, zero);
          }
          // dQ rows of these four queries = dS K (overwrite)
          const n = min(4, rows - 4 * c);
          for (let p = 0; p < (hd + NR - 1) / NR; p++) {
            tileA(colD, ldS, scratchKP + <usize>p * T * NR * 4, NR * 4, kEnd, dq + <usize>(4 * c) * stride + <usize>(p * NR) * 4, stride, n, min(NR, hd - p * NR), false);
          }
        }
        // dK[0:t1] += dS^T Q, dV[0:t1] += P^T dO: A = dS^T / P^T read in place (rows QB floats
        // apart), B = the rows of Q / dO in place, 8 columns at a time (a zero-padded copy
        // [query][8] only for a last panel of fewer than 8 columns)
        for (let p = 0; p < (hd + NR - 1) / NR; p++) {
          const cols = min(NR, hd - p * NR);
          let bq = q + <usize>(p * NR) * 4, ldQ = stride, bg = g + <usize>(p * NR) * 4, ldG = outStride;
          if (cols < NR) {
            packPanel(scratchVP, bq, stride, 4, rows, cols);
            packPanel(scratchGB, bg, outStride, 4, rows, cols);
            bq = scratchVP; ldQ = NR * 4; bg = scratchGB; ldG = NR * 4;
          }
          const dk = dbase + kOff + <usize>(p * NR) * 4, dv = dbase + vOff + <usize>(p * NR) * 4;
          for (let j = 0; j < t1; j += MR) {
            // keys j.. meet only queries >= j (the rest of their row is masked, zeros): start there
            const n = min(MR, t1 - j), q0 = max(0, j - t0);
            tileRowsQB(scratchDp + <usize>j * ldS + <usize>q0 * 4, bq + <usize>q0 * ldQ, ldQ, rows - q0, dk + <usize>j * stride, stride, n, cols, true);
            tileRowsQB(scratchS + <usize>j * ldS + <usize>q0 * 4, bg + <usize>q0 * ldG, ldG, rows - q0, dv + <usize>j * stride, stride, n, cols, true);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// elementwise, reductions, cross-entropy, AdamW: ranges or rows split across threads

/** The [lo, hi) element range of thread tid, cut at multiples of 4 so shares stay vector-aligned. */
// @ts-ignore: decorator
@inline function rangeStart(n: i32, tid: i32, nThreads: i32): i32 {
  return tid >= nThreads ? n : min(n, shareStart((n + 3) >> 2, tid, nThreads) << 2);
}

/** out[i] = a[i] + b[i]; out may alias a or b. */
export function add(out: usize, a: usize, b: usize, n: i32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i * 4;
    v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < i1; i++) store<f32>(out + <usize>i * 4, load<f32>(a + <usize>i * 4) + load<f32>(b + <usize>i * 4));
}

/**
 * Rounds x[0:n] in place to the nearest f16 value (kept as f32), ties to even, as the reference
 * (src/util/half.ts) does: normal range by rounding the f32 bits at mantissa bit 13; the subnormal
 * range (|x| < 2^-14) to a multiple of 2^-24 by (|x| + 0.5) - 0.5, whose sum has exactly that ulp;
 * |x| >= 65520 to ±Inf; NaN quiet with its top 10 payload bits; signs (and -0) kept.
 */
export function roundF16(x: usize, n: i32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  const absMask = i32x4.splat(0x7fffffff), one = i32x4.splat(1), bias = i32x4.splat(0xfff), keep = i32x4.splat(~0x1fff);
  const half = f32x4.splat(0.5), minNormal = i32x4.splat(0x38800000), overflow = i32x4.splat(0x477ff000);
  const inf = i32x4.splat(0x7f800000), quiet = i32x4.splat(0x7fc00000), payload = i32x4.splat(0x007fe000);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const p = x + <usize>i * 4;
    const v = v128.load(p);
    const a = v128.and(v, absMask);
    const normal = v128.and(i32x4.add(i32x4.add(a, bias), v128.and(i32x4.shr_u(a, 13), one)), keep);
    const sub = f32x4.sub(f32x4.add(a, half), half);
    let r = v128.bitselect(sub, normal, i32x4.lt_s(a, minNormal));
    r = v128.bitselect(inf, r, i32x4.ge_s(a, overflow));
    r = v128.bitselect(v128.or(quiet, v128.and(a, payload)), r, i32x4.gt_s(a, inf));
    v128.store(p, v128.or(r, v128.andnot(v, absMask)));
  }
  for (; i < i1; i++) {
    const p = x + <usize>i * 4;
    const v = load<u32>(p);
    const a = v & 0x7fffffff;
    let r: u32;
    if (a > 0x7f800000) r = 0x7fc00000 | (a & 0x007fe000);
    else if (a >= 0x477ff000) r = 0x7f800000;
    else if (a < 0x38800000) r = reinterpret<u32>((reinterpret<f32>(a) + 0.5) - 0.5);
    else r = (a + 0xfff + ((a >> 13) & 1)) & ~0x1fff;
    store<u32>(p, r | (v & 0x80000000));
  }
}

/** Rounds x[0:n] in place to the nearest bf16 value (kept as f32), ties to even; NaN quiet with its top payload bits. */
export function roundBf16(x: usize, n: i32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  const absMask = i32x4.splat(0x7fffffff), one = i32x4.splat(1), bias = i32x4.splat(0x7fff), keep = i32x4.splat(0xffff0000);
  const inf = i32x4.splat(0x7f800000), quiet = i32x4.splat(0x00400000);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const p = x + <usize>i * 4;
    const v = v128.load(p);
    const rounded = v128.and(i32x4.add(i32x4.add(v, bias), v128.and(i32x4.shr_u(v, 16), one)), keep);
    const nan = v128.and(v128.or(v, quiet), keep);
    v128.store(p, v128.bitselect(nan, rounded, i32x4.gt_s(v128.and(v, absMask), inf)));
  }
  for (; i < i1; i++) {
    const p = x + <usize>i * 4;
    const v = load<u32>(p);
    store<u32>(p, (v & 0x7fffffff) > 0x7f800000 ? (v | 0x00400000) & 0xffff0000 : (v + 0x7fff + ((v >> 16) & 1)) & 0xffff0000);
  }
}

/** This thread's Σ x[i]^2 over its range, in f64 (the global gradient norm wants it exact), to
 * scratch as one f64; the caller adds the threads' partials. */
export function sumSquares(x: usize, n: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  let lo = f64x2.splat(0), hi = f64x2.splat(0);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const v = v128.load(x + <usize>i * 4);
    const a = f64x2.promote_low_f32x4(v), b = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
    lo = f64x2.add(lo, f64x2.mul(a, a));
    hi = f64x2.add(hi, f64x2.mul(b, b));
  }
  const s2 = f64x2.add(lo, hi);
  let s = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
  for (; i < i1; i++) {
    const v = <f64>load<f32>(x + <usize>i * 4);
    s += v * v;
  }
  store<f64>(scratch + <usize>tid * scratchBytes, s);
}

/** The max of the row that logSumExpRow saw last (a global: one per instance, i.e. per thread). */
let rowMax: f32 = 0;

/** max z[0:V], four vectors at a time (pmax: NaNs may be skipped, but then they poison the exp sum). */
function rowMaxOf(z: usize, V: i32): f32 {
  const ninf = f32x4.splat(-Infinity);
  let m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
  let v = 0;
  for (; v + 16 <= V; v += 16) {
    const p = z + <usize>v * 4;
    m0 = f32x4.pmax(m0, v128.load(p)); m1 = f32x4.pmax(m1, v128.load(p, 16));
    m2 = f32x4.pmax(m2, v128.load(p, 32)); m3 = f32x4.pmax(m3, v128.load(p, 48));
  }
  for (; v + 4 <= V; v += 4) m0 = f32x4.pmax(m0, v128.load(z + <usize>v * 4));
  const mv = f32x4.pmax(f32x4.pmax(m0, m1), f32x4.pmax(m2, m3));
  let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
  for (; v < V; v++) m = max(m, load<f32>(z + <usize>v * 4));
  return m;
}

/**
 * log Σ_v exp(z[v] - m) over one row of V logits, m = max z (left in rowMax). Kept apart from m
 * so that a loss lse - z[y] = (m - z[y]) + this does not cancel in f32 when it is small.
 * With `e` non-zero, also stores exp(z[v] - m) at e[v] (e may be z).
 */
function logSumExpRow(z: usize, V: i32, e: usize): f32 {
  const m = rowMaxOf(z, V);
  rowMax = m;
  const vm = f32x4.splat(m);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let v = 0;
  if (e) {
    for (; v + 8 <= V; v += 8) {
      const o = <usize>v * 4;
      const a = expVec(f32x4.sub(v128.load(z + o), vm)), b = expVec(f32x4.sub(v128.load(z + o, 16), vm));
      v128.store(e + o, a); v128.store(e + o, b, 16);
      s0 = f32x4.add(s0, a); s1 = f32x4.add(s1, b);
    }
  } else {
    for (; v + 8 <= V; v += 8) {
      const o = <usize>v * 4;
      s0 = f32x4.add(s0, expVec(f32x4.sub(v128.load(z + o), vm)));
      s1 = f32x4.add(s1, expVec(f32x4.sub(v128.load(z + o, 16), vm)));
    }
  }
  let s = hsum(f32x4.add(s0, s1));
  for (; v < V; v++) {
    const x = Mathf.exp(load<f32>(z + <usize>v * 4) - m);
    if (e) store<f32>(e + <usize>v * 4, x);
    s += x;
  }
  return Mathf.log(s);
}

/** losses[N] = lse(logits[n]) - logits[n, targets[n]]. */
export function crossEntropyForward(losses: usize, logits: usize, targets: usize, N: i32, V: i32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  for (let n = n0; n < n1; n++) {
    const z = logits + <usize>n * V * 4;
    const y = load<i32>(targets + <usize>n * 4);
    const logS = logSumExpRow(z, V, 0);
    store<f32>(losses + <usize>n * 4, (rowMax - load<f32>(z + <usize>y * 4)) + logS);
  }
}

/**
 * The same losses and dlogits[n] = (softmax(logits[n]) - onehot) * gradScale; dlogits may alias
 * logits. One exp per logit: exp(z - m) goes to dlogits with the sum, then one multiply by
 * gradScale / Σ.
 */
export function crossEntropyBackward(losses: usize, dlogits: usize, logits: usize, targets: usize, N: i32, V: i32, gradScale: f32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  for (let n = n0; n < n1; n++) {
    const z = logits + <usize>n * V * 4, dz = dlogits + <usize>n * V * 4;
    const y = load<i32>(targets + <usize>n * 4);
    const zy = load<f32>(z + <usize>y * 4); // before dz (maybe z) is overwritten
    const logS = logSumExpRow(z, V, dz), m = rowMax;
    store<f32>(losses + <usize>n * 4, (m - zy) + logS);
    const k = <f32>(<f64>gradScale / Math.exp(<f64>logS));
    const vk = f32x4.splat(k);
    let v = 0;
    for (; v + 8 <= V; v += 8) {
      const o = <usize>v * 4;
      v128.store(dz + o, f32x4.mul(v128.load(dz + o), vk));
      v128.store(dz + o, f32x4.mul(v128.load(dz + o, 16), vk), 16);
    }
    for (; v < V; v++) store<f32>(dz + <usize>v * 4, load<f32>(dz + <usize>v * 4) * k);
    store<f32>(dz + <usize>y * 4, load<f32>(dz + <usize>y * 4) - gradScale);
  }
}

/**
 * AdamW over n parameters: g = grad·scale (scale = gradScale × the clipping factor, worked out by
 * the caller), m = β1 m + (1-β1) g, v = β2 v + (1-β2) g², p = p·decay - lr·(m/bc1)/(sqrt(v/bc2)+eps).
 */
export function adamw(p: usize, g: usize, m: usize, v: usize, n: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, decay: f32, bc1: f32, bc2: f32, scale: f32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  const vb1 = f32x4.splat(beta1), vb1c = f32x4.splat(1 - beta1), vb2 = f32x4.splat(beta2), vb2c = f32x4.splat(1 - beta2);
  const vlr = f32x4.splat(lr / bc1), vbc2 = f32x4.splat(1 / bc2), veps = f32x4.splat(eps), vdecay = f32x4.splat(decay), vscale = f32x4.splat(scale);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i * 4;
    const gi = f32x4.mul(v128.load(g + o), vscale);
    const mi = f32x4.add(f32x4.mul(vb1, v128.load(m + o)), f32x4.mul(vb1c, gi));
    const vi = f32x4.add(f32x4.mul(vb2, v128.load(v + o)), f32x4.mul(vb2c, f32x4.mul(gi, gi)));
    v128.store(m + o, mi);
    v128.store(v + o, vi);
    const step = f32x4.div(f32x4.mul(vlr, mi), f32x4.add(f32x4.sqrt(f32x4.mul(vi, vbc2)), veps));
    v128.store(p + o, f32x4.sub(f32x4.mul(v128.load(p + o), vdecay), step));
  }
  for (; i < i1; i++) {
    const o = <usize>i * 4;
    const gi = load<f32>(g + o) * scale;
    const mi = beta1 * load<f32>(m + o) + (1 - beta1) * gi;
    const vi = beta2 * load<f32>(v + o) + (1 - beta2) * gi * gi;
    store<f32>(m + o, mi);
    store<f32>(v + o, vi);
    store<f32>(p + o, load<f32>(p + o) * decay - (lr / bc1) * mi / (Mathf.sqrt(vi / bc2) + eps));
  }
}

// ---------------------------------------------------------------------------------------------
// GELU (tanh approximation), ranges split across threads

const GELU_K: f32 = 0.7978845608028654; // sqrt(2/pi)
const GELU_C: f32 = 0.044715;

/** tanh per lane, as 1 - 2/(e^{2|y|} + 1) with y's sign (absolute error ~1e-7). */
// @ts-ignore: decorator
@inline function tanhVec(y: v128): v128 {
  const one = f32x4.splat(1);
  const a = f32x4.abs(y);
  const t = f32x4.sub(one, f32x4.div(f32x4.splat(2), f32x4.add(expVec(f32x4.add(a, a)), one)));
  return v128.or(t, v128.and(y, f32x4.splat(-0.0))); // copy the sign of y
}

/** out[i] = 0.5·x·(1 + tanh(k·(x + c·x³))). */
export function geluForward(out: usize, inp: usize, n: i32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  const k = f32x4.splat(GELU_K), c = f32x4.splat(GELU_C), half = f32x4.splat(0.5), one = f32x4.splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i * 4;
    const x = v128.load(inp + o);
    const t = tanhVec(f32x4.mul(k, fma(f32x4.mul(c, x), f32x4.mul(x, x), x)));
    v128.store(out + o, f32x4.mul(f32x4.mul(half, x), f32x4.add(one, t)));
  }
  for (; i < i1; i++) {
    const x = load<f32>(inp + <usize>i * 4);
    store<f32>(out + <usize>i * 4, 0.5 * x * (1 + Mathf.tanh(GELU_K * (x + GELU_C * x * x * x))));
  }
}

/** dinp[i] = dout[i]·(0.5(1+t) + 0.5·x·(1-t²)·k·(1 + 3c·x²)) (overwrite). */
export function geluBackward(dinp: usize, dout: usize, inp: usize, n: i32, tid: i32, nThreads: i32): void {
  const i0 = rangeStart(n, tid, nThreads), i1 = rangeStart(n, tid + 1, nThreads);
  const k = f32x4.splat(GELU_K), c = f32x4.splat(GELU_C), c3 = f32x4.splat(3 * GELU_C), half = f32x4.splat(0.5), one = f32x4.splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i * 4;
    const x = v128.load(inp + o), x2 = f32x4.mul(x, x);
    const t = tanhVec(f32x4.mul(k, fma(f32x4.mul(c, x), x2, x)));
    const left = f32x4.mul(half, f32x4.add(one, t));
    const right = f32x4.mul(f32x4.mul(f32x4.mul(half, x), f32x4.sub(one, f32x4.mul(t, t))), f32x4.mul(k, fma(c3, x2, one)));
    v128.store(dinp + o, f32x4.mul(v128.load(dout + o), f32x4.add(left, right)));
  }
  for (; i < i1; i++) {
    const x = load<f32>(inp + <usize>i * 4);
    const t = Mathf.tanh(GELU_K * (x + GELU_C * x * x * x));
    const grad: f32 = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * x * x);
    store<f32>(dinp + <usize>i * 4, load<f32>(dout + <usize>i * 4) * grad);
  }
}

// ---------------------------------------------------------------------------------------------
// embedding and generation (KV cache)

/** out[N,C] = table[ids[n], :]; threads split the rows. */
export function embeddingForward(out: usize, ids: usize, table: usize, N: i32, C: i32, tid: i32, nThreads: i32): void {
  const n0 = shareStart(N, tid, nThreads), n1 = shareStart(N, tid + 1, nThreads);
  const cB = <usize>C * 4;
  for (let n = n0; n < n1; n++) memory.copy(out + <usize>n * cB, table + <usize>load<i32>(ids + <usize>n * 4) * cB, cB);
}

/**
 * dtable[ids[n], :] += dout[n, :], in n order for every element (as the reference does, so a
 * repeated id sums the same way); threads split the columns, at multiples of 4.
 */
export function embeddingBackward(dtable: usize, dout: usize, ids: usize, N: i32, C: i32, tid: i32, nThreads: i32): void {
  const c0 = rangeStart(C, tid, nThreads), c1 = rangeStart(C, tid + 1, nThreads);
  const cB = <usize>C * 4;
  for (let n = 0; n < N; n++) {
    const d = dtable + <usize>load<i32>(ids + <usize>n * 4) * cB, g = dout + <usize>n * cB;
    let c = c0;
    for (; c + 4 <= c1; c += 4) {
      const o = <usize>c * 4;
      v128.store(d + o, f32x4.add(v128.load(d + o), v128.load(g + o)));
    }
    for (; c < c1; c++) {
      const o = <usize>c * 4;
      store<f32>(d + o, load<f32>(d + o) + load<f32>(g + o));
    }
  }
}

/** cache[B, context, 2·KVH·hd] rows pos0.. = the k|v heads of qkv[B, Tn, (H+2KVH)·hd]; threads split the rows. */
export function kvCacheWrite(cache: usize, qkv: usize, B: i32, Tn: i32, H: i32, KVH: i32, hd: i32, context: i32, pos0: i32, tid: i32, nThreads: i32): void {
  const rows = B * Tn;
  const r0 = shareStart(rows, tid, nThreads), r1 = shareStart(rows, tid + 1, nThreads);
  const stride = <usize>(H + 2 * KVH) * hd * 4, width = <usize>2 * KVH * hd * 4;
  for (let r = r0; r < r1; r++) {
    const b = r / Tn, t = r % Tn;
    memory.copy(cache + <usize>(b * context + pos0 + t) * width, qkv + <usize>r * stride + <usize>H * hd * 4, width);
  }
}

/** Scratch bytes per thread for attentionCached. */
export function attentionCachedScratchBytes(context: i32, hd: i32): usize {
  return <usize>(((context + 8) & ~3) + hd + 8) * 4;
}

/**
 * out[B, Tn, H·hd]: query head h of row (b, t) attends over cache positions 0 .. pos0+t of its kv
 * head. Units are (b, h, t) rows, taken one at a time from the work counter.
 */
export function attentionCached(out: usize, qkv: usize, cache: usize, B: i32, Tn: i32, H: i32, KVH: i32, hd: i32, context: i32, pos0: i32, scratch: usize, scratchBytes: usize, tid: i32, nThreads: i32): void {
  const units = B * H * Tn;
  const stride = <usize>(H + 2 * KVH) * hd * 4, outStride = <usize>H * hd * 4, hdB = <usize>hd * 4;
  const width = <usize>2 * KVH * hd * 4;
  const scale = <f32>(1 / Math.sqrt(<f64>hd));
  const group = H / KVH;
  const s = scratch + <usize>tid * scratchBytes;
  const acc = s + <usize>((context + 8) & ~3) * 4;
  for (let u = nextUnit(); u < units; u = nextUnit()) {
    const t = u % Tn, bh = u / Tn, h = bh % H, b = bh / H;
    const q = qkv + <usize>(b * Tn + t) * stride + <usize>h * hdB;
    const kBase = cache + <usize>b * context * width + <usize>(h / group) * hdB, vBase = kBase + <usize>KVH * hdB;
    const count = pos0 + t + 1;
    const m = scoresRow(s, q, kBase, width, count, hd, scale);
    const sum = expRow(s, count, m);
    weightedRowSum(acc, s, vBase, width, count, hd);
    const o = out + <usize>(b * Tn + t) * outStride + <usize>h * hdB;
    const inv = f32x4.splat(1 / sum);
    let i = 0;
    for (; i + 4 <= hd; i += 4) v128.store(o + <usize>i * 4, f32x4.mul(v128.load(acc + <usize>i * 4), inv));
    for (; i < hd; i++) store<f32>(o + <usize>i * 4, load<f32>(acc + <usize>i * 4) / sum);
  }
}
