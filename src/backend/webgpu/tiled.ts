/**
 * The workgroup-cooperative kernels of the webgpu backend (see kernels.ts for the conventions:
 * tensors are written `name[index]`, scalars are `P.name`; these use the `workgroup` mode, so
 * `wid`, `nwg` and `lid` are in scope and the caller dispatches the grid).
 *
 * - Register-tiled matmul: out[M,NC] (=, or +=) A[M,K] @ B[K,NC] with generic strides, one
 *   workgroup of 256 invocations per BMxBN output tile (128x128 with 8x8 per invocation, or 64x64
 *   with 4x4), K staged through workgroup memory BK at a time with the next tile's global loads
 *   issued before the current tile's arithmetic; optional split-K over wid.z into a scratch buffer.
 * - Row reductions (rmsnorm, cross-entropy): one workgroup of 256 per row, tree reductions in
 *   workgroup memory; column and global reductions in two stages through a scratch buffer.
 * - Attention, `rows` (WebGpuOptions.attention): flash-style, one workgroup of 64 invocations
 *   per (batch, head, 64 queries), one invocation per query row, K/V tiles in workgroup memory,
 *   online softmax, causal tiles skipped; the backward as a dQ kernel (per query row, also writing
 *   D = rowsum(dO * O)) and a dK/dV kernel (per key row, over the group's query heads).
 * - Attention, `split`: the same three kernels with each row split over S = 4 invocations
 *   (RowsTile Q x S: Q rows per workgroup, Q*S invocations) that take every S-th staged key (query
 *   for dK/dV), KT of them per tile; staged rows padded by one vec4; at the end the slices merge
 *   through workgroup memory (forward: common max, rescaled l and O; gradients: sums), one slice
 *   after another. More invocations in flight and a quarter of each serial loop, for shapes whose
 *   (batch, head, 64-row) blocks are too few to fill a GPU (medium: 192 of them).
 * - Attention, `blocked` (FlashAttention-2 style, head sizes padded to 16, 32, 64 or
 *   128): every product is a register-tiled small matmul over workgroup tiles, invocation
 *   (tx, ty) owning 4 rows (ty + TY*i) by SC columns (tx + TX*c) of a score tile, or 4 rows by
 *   HD/TX columns of an output tile (vec4s 4*(tx + TX*g) when HD/TX >= 4). Tiles (AttTile
 *   TYxTXxSC, picked per head size from ATT_FWD_TILES / ATT_BWD_TILES as the first that fits the
 *   device's workgroup memory):
 *   . attBlkF (forward): one workgroup per (R = 4*TY queries, batch*head), longest causal ranges
 *     dispatched first; Q*scale resident; per block of C = TX*SC keys up to the diagonal: K, V
 *     staged (coalesced rows), S = Q K^T, causal mask, row max across the TX invocations of a
 *     row (workgroup array), online softmax (O rescaled in registers), P over the K tile, O += P V;
 *     4 barriers per key block; lse = m + log(l) per row as the rows kernel. 16x8x4 (128
 *     invocations, 64 queries x 32 keys, 37 KiB at head 64) or 8x16x2 (32 x 32, 28 KiB), the
 *     latter also when the first gives under 512 workgroups (small batch*heads or T).
 *   . attRowDot: D = rowsum(dO * O), one invocation per row.
 *   . attBlkQ (dQ): one workgroup per (R queries, batch*head); Q*scale and dO resident, lse and D
 *     in registers; per key block up to the diagonal: S = Q K^T, dP = dO V^T, dS = P (dP - D)
 *     to workgroup memory, dQ += dS K; 3 barriers per key block.
 *   . attBlkKV (dK, dV): one workgroup per (R keys, batch*kv head); K, V resident, dK, dV in
 *     registers; for each query head of the group (GQA/MQA sum) and each block of C queries from
 *     the first key on: S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - D),
 *     dV += P^T dO, dK += dS^T Q; 3 barriers per query block. 8x16x2 (32 x 32, 44 KiB at head
 *     64) or 8x16x1 (32 keys x 16 queries, 31 KiB).
 *   Shared tiles are row-major with rows padded by one vec4, so the distinct rows a warp reads
 *   fall in distinct banks; global loads are consecutive along the head dimension.
 */
import type { KernelSpec } from './kernels.js';

/** The register-tiled matmuls' output tile sizes (MM_CONFIGS). */
export type MmTile = 128 | 64;
/** Register-tiled matmul configurations: output tile BMxBN, TMxTN per invocation, K step BK. */
export const MM_CONFIGS = {
  128: { BM: 128, BN: 128, TM: 8, TN: 8, BK: 8 },
  64: { BM: 64, BN: 64, TM: 4, TN: 4, BK: 16 },
} as const satisfies Record<MmTile, object>;

/** Name of the matmul kernel with output tile `tile`. */
export const mmName = (tile: MmTile): string => `mm${tile}`;

/**
 * out[z*M*NC + m*NC + n] (=, or += when accum) sum over k in [z*kchunk, min(K, (z+1)*kchunk)) of
 * A(m,k) B(k,n), A(m,k) = a[m*sam + k*sak], B(k,n) = b[k*sbk + n*sbn]. Grid: (ceil(NC/BN),
 * ceil(M/BM), splits). aK (uniform): A is contiguous along k, so consecutive invocations load
 * consecutive k (else consecutive m); bK likewise for B. The load coordinates are fixed per
 * invocation, computed once. Workgroup tiles are k-major (As[k][m], Bs[k][n]) arrays of vec4,
 * rows padded by 4 floats so stores along k do not conflict; invocation (tx, ty) owns the rows
 * 64g + 4ty .. 64g + 4ty + 3 and the columns 64g + 4tx .. 64g + 4tx + 3 (g < TM/4), so each K
 * step reads TM/4 + TN/4 vec4s from workgroup memory for TM*TN fmas.
 */
function matmulKernel(tile: MmTile): KernelSpec {
  const { BM, BN, TM, TN, BK } = MM_CONFIGS[tile];
  const TX = BN / TN, TY = BM / TM; // 16 x 16
  if (TX * TY !== 256) throw new Error('matmul tile needs 256 invocations');
  const AS = BM + 4, BS = BN + 4, AS4 = AS / 4, BS4 = BS / 4;
  const LA = (BM * BK) / 256, LB = (BN * BK) / 256;
  const coords: string[] = [];
  for (let r = 0; r < LA; r++) {
    const e = `${r * 256}u + lid`;
    coords.push(`let akk${r} = select((${e}) / ${BM}u, (${e}) % ${BK}u, aK); let amm${r} = select((${e}) % ${BM}u, (${e}) / ${BK}u, aK);`);
  }
  for (let r = 0; r < LB; r++) {
    const e = `${r * 256}u + lid`;
    coords.push(`let bkk${r} = select((${e}) / ${BN}u, (${e}) % ${BK}u, bK); let bnn${r} = select((${e}) % ${BN}u, (${e}) / ${BK}u, bK);`);
  }
  const loads = (): string[] => {
    const out: string[] = [];
    for (let r = 0; r < LA; r++) {
      out.push(`{ let gr = m0 + amm${r}; let gk = k0 + akk${r}; var v = 0.0; if (gr < P.M && gk < kEnd) { v = a[gr * P.sam + gk * P.sak]; } ra${r} = v; }`);
    }
    for (let r = 0; r < LB; r++) {
      out.push(`{ let gc = n0 + bnn${r}; let gk = k0 + bkk${r}; var v = 0.0; if (gc < P.NC && gk < kEnd) { v = b[gk * P.sbk + gc * P.sbn]; } rb${r} = v; }`);
    }
    return out;
  };
  const stores: string[] = [];
  for (let r = 0; r < LA; r++) stores.push(`As[akk${r} * ${AS4}u + amm${r} / 4u][amm${r} % 4u] = ra${r};`);
  for (let r = 0; r < LB; r++) stores.push(`Bs[bkk${r} * ${BS4}u + bnn${r} / 4u][bnn${r} % 4u] = rb${r};`);
  const acc: string[] = [];
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) acc.push(`var c${i}_${j} = 0.0;`);
  const inner: string[] = [];
  const comp = 'xyzw';
  for (let g = 0; g < TM / 4; g++) inner.push(`let a${g} = As[kk * ${AS4}u + ty + ${g * TY}u];`);
  for (let g = 0; g < TN / 4; g++) inner.push(`let b${g} = Bs[kk * ${BS4}u + tx + ${g * TX}u];`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) inner.push(`c${i}_${j} = fma(a${i >> 2}.${comp[i & 3]}, b${j >> 2}.${comp[j & 3]}, c${i}_${j});`);
  const store: string[] = [];
  for (let i = 0; i < TM; i++) {
    store.push(`{ let gr = m0 + ty * 4u + ${(i >> 2) * TY * 4 + (i & 3)}u; if (gr < P.M) {`);
    for (let j = 0; j < TN; j++) {
      store.push(`  { let gc = n0 + tx * 4u + ${(j >> 2) * TX * 4 + (j & 3)}u; if (gc < P.NC) { let o = zoff + gr * P.NC + gc;
    if (P.accum != 0u) { out[o] += c${i}_${j}; } else { out[o] = c${i}_${j}; } } }`);
    }
    store.push('} }');
  }
  return {
    tensors: ['out', 'a', 'b'],
    params: ['M', 'NC', 'K', 'sam', 'sak', 'sbk', 'sbn', 'accum', 'kchunk'],
    workgroup: { size: 256, decls: `var<workgroup> As: array<vec4<f32>, ${AS4 * BK}>;\nvar<workgroup> Bs: array<vec4<f32>, ${BS4 * BK}>;` },
    body: `
  let tx = lid % ${TX}u; let ty = lid / ${TX}u;
  let m0 = wid.y * ${BM}u; let n0 = wid.x * ${BN}u;
  let kBegin = wid.z * P.kchunk; let kEnd = min(P.K, kBegin + P.kchunk);
  let zoff = wid.z * P.M * P.NC;
  let aK = P.sak == 1u; let bK = P.sbk == 1u;
  ${coords.join('\n  ')}
  ${acc.join(' ')}
  ${Array.from({ length: LA }, (_, r) => `var ra${r} = 0.0;`).join(' ')}
  ${Array.from({ length: LB }, (_, r) => `var rb${r} = 0.0;`).join(' ')}
  var k0 = kBegin;
  ${loads().join('\n  ')}
  loop {
    if (k0 >= kEnd) { break; }
    ${stores.join(' ')}
    workgroupBarrier();
    k0 += ${BK}u;
    ${loads().join('\n    ')}
    for (var kk = 0u; kk < ${BK}u; kk++) {
      ${inner.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${store.join('\n  ')}`,
  };
}

/** Tree reduction of workgroup array `arr` (256 entries) into arr[0] with `op` ('+' or 'max'); every invocation must reach it. */
const tree = (arr: string, op: '+' | 'max'): string => `
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (lid < w) { ${op === '+' ? `${arr}[lid] += ${arr}[lid + w];` : `${arr}[lid] = max(${arr}[lid], ${arr}[lid + w]);`} }
    workgroupBarrier();
  }`;

/** The row of a one-workgroup-per-row kernel (a 2D grid past 65535 rows); returns when past the last (uniform). */
const ROW = `
  let row = wid.x + wid.y * nwg.x;
  if (row >= P.n_) { return; }`;

const RED = 'var<workgroup> red: array<f32, 256>;';

/** Cross-entropy of one row per workgroup: online (max, argmax, sum of exp over the rest) per invocation, then merged. */
function crossEntropyKernel(backward: boolean): KernelSpec {
  return {
    tensors: backward ? ['losses', 'dlogits', 'logits'] : ['losses', 'logits'], ints: ['targets'],
    params: backward ? ['V', 'scale:f32'] : ['V'],
    workgroup: { size: 256, decls: 'var<workgroup> rm: array<f32, 256>;\nvar<workgroup> ra: array<u32, 256>;\nvar<workgroup> rs: array<f32, 256>;' },
    body: `${ROW}
  let r = row * P.V;
  let y = u32(targets[row]);
  let zy = logits[r + y];
  // Per invocation: m its max, am the first index of it, s = sum over its other elements of exp(z - m).
  var m = -3.4e38; var am = 0xffffffffu; var s = 0.0;
  for (var v = lid; v < P.V; v += 256u) {
    let z = logits[r + v];
    if (z > m) { s = (s + 1.0) * exp(m - z); m = z; am = v; } else { s += exp(z - m); }
  }
  if (am == 0xffffffffu) { s = 0.0; }
  rm[lid] = m; ra[lid] = am; rs[lid] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (lid < w && ra[lid + w] != 0xffffffffu) {
      let m1 = rm[lid]; let m2 = rm[lid + w]; let a1 = ra[lid]; let a2 = ra[lid + w];
      let s1 = rs[lid]; let s2 = rs[lid + w];
      if (a1 == 0xffffffffu) { rm[lid] = m2; ra[lid] = a2; rs[lid] = s2; }
      else if (m2 > m1 || (m2 == m1 && a2 < a1)) { rm[lid] = m2; ra[lid] = a2; rs[lid] = s2 + (s1 + 1.0) * exp(m1 - m2); }
      else { rs[lid] = s1 + (s2 + 1.0) * exp(m2 - m1); }
    }
    workgroupBarrier();
  }
  let mx = rm[0]; let amx = ra[0]; let st = rs[0];
  // log-sum-exp = mx + log1p(sum over v != argmax): precise when the loss is small.
  let l1 = log1p_(st);
  if (lid == 0u) { losses[row] = l1 + (mx - zy); }${backward ? `
  storageBarrier();
  let lse = mx + l1;
  // 1 - p[y] without cancellation when y is the argmax: s / (1 + s).
  var gy = exp(zy - lse) - 1.0;
  if (y == amx) { gy = -st / (1.0 + st); }
  for (var v = lid; v < P.V; v += 256u) {
    var g = exp(logits[r + v] - lse);
    if (v == y) { g = gy; }
    dlogits[r + v] = g * P.scale;
  }` : ''}`,
  };
}

const I4 = [0, 1, 2, 3];
const rng = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Attention tiles: headDim padded to HD; BC keys (or queries) per workgroup-memory tile (8 KiB for K and V). */
export const ATT_HDS = [16, 32, 64, 128, 256] as const;
export const ATT_ROWS = 64;
export const attHd = (hd: number): number => ATT_HDS.find((h) => hd <= h) ?? 0;
const attBc = (HD: number): number => 1024 / HD;

const ATT_HEAD = `
  let bh = wid.y; let h = bh % P.H; let b = bh / P.H;
  let stride = (P.H + 2u * P.KVH) * P.hd; let group = P.H / P.KVH; let kvh = h / group;`;

/** `n` copies of f(i), joined: loops over private arrays are unrolled in the source so every index is a constant (registers, not local memory). */
const unroll = (n: number, f: (i: number) => string, sep = '\n    '): string => Array.from({ length: n }, (_, i) => f(i)).join(sep);
/** vec4 of t[base + 4*d4 .. +3], zero past hd, times `mul`. */
const load4 = (t: string, base: string, d4: number, mul = ''): string =>
  `vec4<f32>(${[0, 1, 2, 3].map((c) => `select(0.0, ${t}[min(${base} + ${d4 * 4 + c}u, ${base} + P.hd - 1u)]${mul}, ${d4 * 4 + c}u < P.hd)`).join(', ')})`;
/** Stores vec4 expression v to t[base + 4*d4 ...] below hd. */
const store4 = (t: string, base: string, d4: number, v: string): string =>
  `{ let v = ${v}; ${[0, 1, 2, 3].map((c) => `if (${d4 * 4 + c}u < P.hd) { ${t}[${base} + ${d4 * 4 + c}u] = v.${'xyzw'[c]}; }`).join(' ')} }`;
/** Cooperative load of rows r0 .. r0+R-1 (R*HD floats, zero padded) into workgroup vec4 arrays. */
const stage = (R: number, HD: number, threads: number, row: string, assigns: string): string => `
    for (var e = lid; e < ${R * HD}u; e += ${threads}u) {
      let rr = e / ${HD}u; let d = e % ${HD}u; ${row}
      ${assigns}
    }`;

/**
 * A row-attention tile: Q query rows (key rows for dK/dV) per workgroup, each row split over S
 * invocations. S = 1 is the `rows` kernel set (one invocation per row, Q = ATT_ROWS); S > 1 the
 * `split` set: the S invocations of a row take every S-th key of each staged tile (every S-th
 * query for dK/dV), so a workgroup has Q*S invocations and each a 1/S share of the serial loop,
 * and they merge at the end through workgroup memory (online-softmax rescale for the forward, a
 * sum for the gradients), slice by slice.
 */
export interface RowsTile { Q: number; S: number }
export const ROWS_TILE: RowsTile = { Q: ATT_ROWS, S: 1 };
/** Split tile candidates, best first (see index.ts for the pick). */
export const ATT_SPLIT_TILES: RowsTile[] = [{ Q: 64, S: 4 }, { Q: 32, S: 4 }, { Q: 16, S: 4 }];
export const rowsTileName = (t: RowsTile): string => `${t.Q}x${t.S}`;
/** Keys (queries for dK/dV) one invocation takes from each staged tile. */
const rowsKt = (HD: number, t: RowsTile): number => (t.S === 1 ? attBc(HD) : Math.min(16, Math.max(2, 512 / HD)));
/** Staged rows' pitch in vec4s: padded by one vec4 when S > 1, so the S rows a warp reads at once fall in distinct banks. */
const rowsPitch = (HD: number, t: RowsTile): number => HD / 4 + (t.S > 1 ? 1 : 0);
/** Rows of the first staged array (it is also the merge buffer of the split kernels, one row per query or key). */
const rowsFirst = (HD: number, t: RowsTile): number => Math.max(rowsKt(HD, t) * t.S, t.S > 1 ? t.Q : 0);
/** Upper bound of a row-attention kernel's workgroup memory (bytes): two staged tiles (the first also the merge buffer) and two float arrays. */
export function attRowsBytes(HD: number, t: RowsTile): number {
  const BC = rowsKt(HD, t) * t.S;
  return 16 * rowsPitch(HD, t) * (rowsFirst(HD, t) + BC) + 8 * Math.max(BC, t.Q * t.S);
}
const rowsName = (base: string, HD: number, t: RowsTile): string =>
  t.S === 1 && t.Q === ATT_ROWS ? `${base}${HD}` : `${base}${HD}_${rowsTileName(t)}`;
export const attRowsFwdName = (HD: number, t: RowsTile): string => rowsName('attForward', HD, t);
export const attRowsQName = (HD: number, t: RowsTile): string => rowsName('attBackwardQ', HD, t);
export const attRowsKVName = (HD: number, t: RowsTile): string => rowsName('attBackwardKV', HD, t);

/** The invocation's row `v` (query or key index), and with S > 1 its row in the workgroup `qi` and slice `sl`. */
const rowsIds = (t: RowsTile, v: string): string =>
  t.S > 1 ? `let qi = lid / ${t.S}u; let sl = lid % ${t.S}u; let ${v} = wid.x * ${t.Q}u + qi;` : `let ${v} = wid.x * ${t.Q}u + lid;`;
/** Staged row of the u-th key (query) the invocation takes from a tile. */
const rowsJ = (t: RowsTile): string => (t.S > 1 ? `u * ${t.S}u + sl` : 'u');
/** Index into a staged array for the element e = rr*HD + d being staged. */
const rowsStageAt = (HD: number, t: RowsTile): string => (t.S > 1 ? `rr * ${rowsPitch(HD, t)}u + d / 4u` : 'e / 4u');
/**
 * Split kernels: sums each (private vec4 array acc, times `scale`) over the S invocations of a row
 * into workgroup array buf (row qi at qi*KP), one slice after another, S barriers.
 */
function sliceSum(t: RowsTile, HD: number, pairs: { acc: string; buf: string }[], scale = ''): string {
  const KP = rowsPitch(HD, t);
  const lines = pairs.flatMap(({ acc, buf }) =>
    rng(HD / 4).map((i) => `${buf}[qi * ${KP}u + ${i}u] = select(${buf}[qi * ${KP}u + ${i}u], vec4<f32>(0.0), k == 0u) + ${acc}[${i}]${scale};`));
  return `
  for (var k = 0u; k < ${t.S}u; k++) {
    if (sl == k) {
      ${lines.join('\n      ')}
    }
    workgroupBarrier();
  }`;
}
/** Stores a row's HD/4 vec4s (row `i` given by `value(i)`) to t[base ...]; split kernels share them out over the slices. */
const rowsStore = (t: RowsTile, HD: number, dst: string, base: string, value: (i: number) => string): string =>
  rng(HD / 4).map((i) => (t.S > 1 ? `if (sl == ${i % t.S}u) ${store4(dst, base, i, value(i))}` : store4(dst, base, i, value(i)))).join('\n    ');

/** Cooperative load of keys j0 .. j0+BC-1 of this (batch, kv head) into Ks and Vs (forward and dQ kernels). */
const stageKV = (BC: number, HD: number, NT: number, at: string): string =>
  stage(BC, HD, NT, 'let j = j0 + rr; var kv = 0.0; var vv = 0.0; if (j < P.T && d < P.hd) { let base = (b * P.T + j) * stride; kv = qkv[base + kOff + d]; vv = qkv[base + vOff + d]; }',
    `Ks[${at}][e % 4u] = kv; Vs[${at}][e % 4u] = vv;`);

function attentionForwardKernel(HD: number, tile: RowsTile = ROWS_TILE): KernelSpec {
  const H4 = HD / 4, KP = rowsPitch(HD, tile), KT = rowsKt(HD, tile), BC = KT * tile.S, NT = tile.Q * tile.S, split = tile.S > 1;
  const at = rowsStageAt(HD, tile);
  return {
    tensors: ['out', 'lse', 'qkv'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: {
      size: NT,
      decls: `var<workgroup> Ks: array<vec4<f32>, ${rowsFirst(HD, tile) * KP}>;\nvar<workgroup> Vs: array<vec4<f32>, ${BC * KP}>;${split ? `\nvar<workgroup> Ms: array<f32, ${NT}>;\nvar<workgroup> Ls: array<f32, ${NT}>;` : ''}`,
    },
    body: `${ATT_HEAD}
  ${rowsIds(tile, 't')} let tq = min(t, P.T - 1u);
  let qb = (b * P.T + tq) * stride + h * P.hd;
  var pq: array<vec4<f32>, ${H4}>; var acc: array<vec4<f32>, ${H4}>;
  ${unroll(H4, (i) => `pq[${i}] = ${load4('qkv', 'qb', i, ' * P.scale')}; acc[${i}] = vec4<f32>(0.0);`, '\n  ')}
  var m = -3.0e38; var l = 0.0;
  let kEnd = min(P.T, wid.x * ${tile.Q}u + ${tile.Q}u);
  let kOff = (P.H + kvh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  for (var j0 = 0u; j0 < kEnd; j0 += ${BC}u) {${stageKV(BC, HD, NT, at)}
    workgroupBarrier();
    var sc: array<f32, ${KT}>;
    var mt = m;
    for (var u = 0u; u < ${KT}u; u++) {
      let jj = ${rowsJ(tile)};
      var s4 = vec4<f32>(0.0);
      ${unroll(H4, (i) => `s4 = fma(pq[${i}], Ks[jj * ${KP}u + ${i}u], s4);`, '\n      ')}
      let sv = (s4.x + s4.y) + (s4.z + s4.w);
      sc[u] = sv;
      if (j0 + jj <= t) { mt = max(mt, sv); }
    }
    let corr = exp(m - mt);
    l *= corr;
    ${unroll(H4, (i) => `acc[${i}] *= corr;`, ' ')}
    for (var u = 0u; u < ${KT}u; u++) {
      let jj = ${rowsJ(tile)};
      var p = 0.0;
      if (j0 + jj <= t) { p = exp(sc[u] - mt); }
      l += p;
      let pv = vec4<f32>(p);
      ${unroll(H4, (i) => `acc[${i}] = fma(pv, Vs[jj * ${KP}u + ${i}u], acc[${i}]);`, '\n      ')}
    }
    m = mt;
    workgroupBarrier();
  }${split ? `
  // Merge the slices of a row: common max, each slice's l and acc rescaled to it, summed (slice 0
  // always holds key 0, so the max is finite; a slice with no unmasked key adds exp(-3e38 - max) * 0).
  Ms[lid] = m;
  workgroupBarrier();
  var mx = Ms[qi * ${tile.S}u];
  ${unroll(tile.S - 1, (k) => `mx = max(mx, Ms[qi * ${tile.S}u + ${k + 1}u]);`, ' ')}
  let f = exp(m - mx);
  Ls[lid] = l * f;${sliceSum(tile, HD, [{ acc: 'acc', buf: 'Ks' }], ' * f')}
  var lt = 0.0;
  ${unroll(tile.S, (k) => `lt += Ls[qi * ${tile.S}u + ${k}u];`, ' ')}
  if (t < P.T) {
    if (sl == 0u) { lse[bh * P.T + t] = mx + log(lt); }
    let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
    let inv = 1.0 / lt;
    ${rowsStore(tile, HD, 'out', 'ob', (i) => `Ks[qi * ${KP}u + ${i}u] * inv`)}
  }` : `
  if (t < P.T) {
    lse[bh * P.T + t] = m + log(l);
    let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
    let inv = 1.0 / l;
    ${rowsStore(tile, HD, 'out', 'ob', (i) => `acc[${i}] * inv`)}
  }`}`,
  };
}

/** dq per query row (row-attention tile, K/V tiles shared); also writes D = rowsum(dout * out) to `drow` for the KV kernel. */
function attentionBackwardQKernel(HD: number, tile: RowsTile = ROWS_TILE): KernelSpec {
  const H4 = HD / 4, KP = rowsPitch(HD, tile), KT = rowsKt(HD, tile), BC = KT * tile.S, NT = tile.Q * tile.S, split = tile.S > 1;
  const at = rowsStageAt(HD, tile);
  return {
    tensors: ['dqkv', 'drow', 'dout', 'qkv', 'out', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: { size: NT, decls: `var<workgroup> Ks: array<vec4<f32>, ${rowsFirst(HD, tile) * KP}>;\nvar<workgroup> Vs: array<vec4<f32>, ${BC * KP}>;` },
    body: `${ATT_HEAD}
  ${rowsIds(tile, 't')} let tq = min(t, P.T - 1u);
  let qb = (b * P.T + tq) * stride + h * P.hd;
  let ob = (b * P.T + tq) * P.H * P.hd + h * P.hd;
  var pq: array<vec4<f32>, ${H4}>; var po: array<vec4<f32>, ${H4}>; var dq: array<vec4<f32>, ${H4}>;
  var D4 = vec4<f32>(0.0);
  ${unroll(H4, (i) => `pq[${i}] = ${load4('qkv', 'qb', i, ' * P.scale')}; po[${i}] = ${load4('dout', 'ob', i)}; D4 = fma(po[${i}], ${load4('out', 'ob', i)}, D4); dq[${i}] = vec4<f32>(0.0);`, '\n  ')}
  let D = (D4.x + D4.y) + (D4.z + D4.w);
  let L = lse[bh * P.T + tq];
  let kEnd = min(P.T, wid.x * ${tile.Q}u + ${tile.Q}u);
  let kOff = (P.H + kvh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  for (var j0 = 0u; j0 < kEnd; j0 += ${BC}u) {${stageKV(BC, HD, NT, at)}
    workgroupBarrier();
    for (var u = 0u; u < ${KT}u; u++) {
      let jj = ${rowsJ(tile)};
      if (j0 + jj <= t) {
        var s4 = vec4<f32>(0.0); var p4 = vec4<f32>(0.0);
        ${unroll(H4, (i) => `s4 = fma(pq[${i}], Ks[jj * ${KP}u + ${i}u], s4); p4 = fma(po[${i}], Vs[jj * ${KP}u + ${i}u], p4);`, '\n        ')}
        let p = exp((s4.x + s4.y) + (s4.z + s4.w) - L);
        let ds = vec4<f32>(p * ((p4.x + p4.y) + (p4.z + p4.w) - D) * P.scale);
        ${unroll(H4, (i) => `dq[${i}] = fma(ds, Ks[jj * ${KP}u + ${i}u], dq[${i}]);`, '\n        ')}
      }
    }
    workgroupBarrier();
  }${split ? sliceSum(tile, HD, [{ acc: 'dq', buf: 'Ks' }]) : ''}
  if (t < P.T) {
    ${split ? 'if (sl == 0u) { drow[bh * P.T + t] = D; }' : 'drow[bh * P.T + t] = D;'}
    ${rowsStore(tile, HD, 'dqkv', 'qb', (i) => (split ? `Ks[qi * ${KP}u + ${i}u]` : `dq[${i}]`))}
  }`,
  };
}

/** dk, dv per key row (row-attention tile: S invocations per key split the queries), over the group's query heads, Q/dout tiles shared. */
function attentionBackwardKVKernel(HD: number, tile: RowsTile = ROWS_TILE): KernelSpec {
  const H4 = HD / 4, KP = rowsPitch(HD, tile), KT = rowsKt(HD, tile), BQ = KT * tile.S, NT = tile.Q * tile.S, split = tile.S > 1;
  if (NT < BQ) throw new Error(`attention tile ${rowsTileName(tile)}: ${NT} invocations cannot load ${BQ} row statistics`);
  const at = rowsStageAt(HD, tile), first = rowsFirst(HD, tile);
  return {
    tensors: ['dqkv', 'drow', 'dout', 'qkv', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: {
      size: NT,
      decls: `var<workgroup> Qs: array<vec4<f32>, ${first * KP}>;\nvar<workgroup> Gs: array<vec4<f32>, ${BQ * KP}>;\nvar<workgroup> Ls: array<f32, ${BQ}>;\nvar<workgroup> Ds: array<f32, ${BQ}>;`,
    },
    body: `
  let bk = wid.y; let kvh = bk % P.KVH; let b = bk / P.KVH;
  let stride = (P.H + 2u * P.KVH) * P.hd; let group = P.H / P.KVH;
  ${rowsIds(tile, 'j')} let jq = min(j, P.T - 1u);
  let kb = (b * P.T + jq) * stride + (P.H + kvh) * P.hd; let vb = kb + P.KVH * P.hd;
  var pk: array<vec4<f32>, ${H4}>; var pv: array<vec4<f32>, ${H4}>; var dk: array<vec4<f32>, ${H4}>; var dv: array<vec4<f32>, ${H4}>;
  ${unroll(H4, (i) => `pk[${i}] = ${load4('qkv', 'kb', i)}; pv[${i}] = ${load4('qkv', 'vb', i)}; dk[${i}] = vec4<f32>(0.0); dv[${i}] = vec4<f32>(0.0);`, '\n  ')}
  let tBegin = wid.x * ${tile.Q}u;
  for (var g = 0u; g < group; g++) {
    let h = kvh * group + g; let bh = b * P.H + h;
    for (var t0 = tBegin; t0 < P.T; t0 += ${BQ}u) {${stage(BQ, HD, NT, 'let t = t0 + rr; var qv = 0.0; var gv = 0.0; if (t < P.T && d < P.hd) { qv = qkv[(b * P.T + t) * stride + h * P.hd + d] * P.scale; gv = dout[(b * P.T + t) * P.H * P.hd + h * P.hd + d]; }',
    `Qs[${at}][e % 4u] = qv; Gs[${at}][e % 4u] = gv;`)}
      if (lid < ${BQ}u) {
        let t = t0 + lid;
        var lv = 3.0e38; var dv0 = 0.0;
        if (t < P.T) { lv = lse[bh * P.T + t]; dv0 = drow[bh * P.T + t]; }
        Ls[lid] = lv; Ds[lid] = dv0;
      }
      workgroupBarrier();
      for (var u = 0u; u < ${KT}u; u++) {
        let tt = ${rowsJ(tile)};
        if (t0 + tt >= j && t0 + tt < P.T) {
          var s4 = vec4<f32>(0.0); var p4 = vec4<f32>(0.0);
          ${unroll(H4, (i) => `s4 = fma(pk[${i}], Qs[tt * ${KP}u + ${i}u], s4); p4 = fma(pv[${i}], Gs[tt * ${KP}u + ${i}u], p4);`, '\n          ')}
          let p = exp((s4.x + s4.y) + (s4.z + s4.w) - Ls[tt]);
          let ds = vec4<f32>(p * ((p4.x + p4.y) + (p4.z + p4.w) - Ds[tt]));
          let pp = vec4<f32>(p);
          ${unroll(H4, (i) => `dv[${i}] = fma(pp, Gs[tt * ${KP}u + ${i}u], dv[${i}]); dk[${i}] = fma(ds, Qs[tt * ${KP}u + ${i}u], dk[${i}]);`, '\n          ')}
        }
      }
      workgroupBarrier();
    }
  }${split ? `${sliceSum(tile, HD, [{ acc: 'dk', buf: 'Qs' }])}
  if (j < P.T) {
    ${rowsStore(tile, HD, 'dqkv', 'kb', (i) => `Qs[qi * ${KP}u + ${i}u]`)}
  }
  workgroupBarrier();${sliceSum(tile, HD, [{ acc: 'dv', buf: 'Qs' }])}
  if (j < P.T) {
    ${rowsStore(tile, HD, 'dqkv', 'vb', (i) => `Qs[qi * ${KP}u + ${i}u]`)}
  }` : `
  if (j < P.T) {
    ${rowsStore(tile, HD, 'dqkv', 'kb', (i) => `dk[${i}]`)}
    ${rowsStore(tile, HD, 'dqkv', 'vb', (i) => `dv[${i}]`)}
  }`}`,
  };
}


// ---------------------------------------------------------------------------------------------
// Blocked attention (FlashAttention-2 style). See the header. Every product is a register-tiled
// small matmul over workgroup tiles: invocation (tx, ty) = (lid % TX, lid / TX) owns the 4 rows
// ty + TY*i (i < 4) of the result, interleaved so the 8-16 distinct rows read by a warp fall in
// distinct banks. Q, K, V, dO tiles are stored row-major [row][d] as vec4, rows padded by 4
// floats (stride HD/4 + 1 vec4s: consecutive rows start in different banks).
// - `dd` products (reduction over d, S = Q K^T, dP = dO V^T): columns tx + TX*c (c < SC); per 4
//   d, 4 + SC vec4 loads for 16*SC fmas.
// - `dn` products (reduction over keys or queries, O += P V, dK += dS^T Q, ...): A is a score tile
//   stored [row][k] (stride K/4 + 1 vec4s), B a natural [k][d] tile; the columns are the vec4s
//   tx + TX*g (g < HD/(4 TX)) when HD/TX >= 4, else the scalars tx + TX*c.
// ---------------------------------------------------------------------------------------------

/** A blocked-attention tile: TY*TX invocations; result tiles of 4*TY rows by TX*SC columns. */
export interface AttTile { TY: number; TX: number; SC: number }
export const attTileName = (t: AttTile): string => `${t.TY}x${t.TX}x${t.SC}`;
/**
 * A tile's shape: R = 4*TY result rows, C = TX*SC result columns, NT invocations; and the WGSL
 * index of an invocation's i-th row (rows ty, ty + TY, ...) and c-th column (tx, tx + TX, ...).
 */
function tileGeometry(t: AttTile): { R: number; C: number; NT: number; rows(i: number): string; col(c: number): string } {
  return {
    R: 4 * t.TY, C: t.TX * t.SC, NT: t.TX * t.TY,
    rows: (i) => `(ty + ${i * t.TY}u)`,
    col: (c) => `(tx + ${c * t.TX}u)`,
  };
}
/** Head sizes of the blocked kernels (headDim padded up to one of these). */
export const ATT_BLOCKED_HDS = [16, 32, 64, 128] as const;
/** Tile candidates, best first: the backend takes the first that fits the device's workgroup memory. */
export const ATT_FWD_TILES: Record<number, AttTile[]> = {
  16: [{ TY: 16, TX: 8, SC: 4 }, { TY: 8, TX: 16, SC: 2 }],
  32: [{ TY: 16, TX: 8, SC: 4 }, { TY: 8, TX: 16, SC: 2 }],
  64: [{ TY: 16, TX: 8, SC: 4 }, { TY: 8, TX: 16, SC: 2 }],
  128: [{ TY: 8, TX: 16, SC: 1 }, { TY: 4, TX: 16, SC: 1 }],
};
export const ATT_BWD_TILES: Record<number, AttTile[]> = {
  16: [{ TY: 8, TX: 16, SC: 2 }, { TY: 8, TX: 16, SC: 1 }],
  32: [{ TY: 8, TX: 16, SC: 2 }, { TY: 8, TX: 16, SC: 1 }],
  64: [{ TY: 8, TX: 16, SC: 2 }, { TY: 8, TX: 16, SC: 1 }],
  128: [{ TY: 4, TX: 16, SC: 1 }],
};
/** Workgroup memory (bytes) of each blocked kernel. */
export function attBlockedBytes(kind: 'fwd' | 'kv' | 'q', HD: number, t: AttTile): number {
  const { R, C } = tileGeometry(t), row = HD + 4;
  if (kind === 'fwd') return 4 * (R * row + Math.max(C * row, R * (C + 4)) + C * row + t.TX * R);
  if (kind === 'kv') return 4 * (2 * R * row + 2 * C * row + 2 * R * (C + 4) + 2 * C);
  return 4 * (2 * R * row + 2 * C * row + R * (C + 4));
}
export const attFwdName = (HD: number, t: AttTile): string => `attBlkF${HD}_${attTileName(t)}`;
export const attKVName = (HD: number, t: AttTile): string => `attBlkKV${HD}_${attTileName(t)}`;
export const attQName = (HD: number, t: AttTile): string => `attBlkQ${HD}_${attTileName(t)}`;

/** Accumulators `name` of a dd product: scalars name_i_c. */
const ddDecl = (name: string, SC: number): string => I4.map((i) => rng(SC).map((c) => `var ${name}${i}_${c} = 0.0;`).join(' ')).join(' ');
/** acc_i_c += dot(A[row i], B[col c]) over HD, for each (acc, A, B). */
function dd(pairs: { acc: string; A: string; B: string }[], t: AttTile, HD: number): string {
  const S4 = HD / 4 + 1;
  const lines: string[] = [];
  for (const { acc, A, B } of pairs) {
    for (const i of I4) lines.push(`let ${A}a${i} = ${A}[(ty + ${i * t.TY}u) * ${S4}u + k4];`);
    for (const c of rng(t.SC)) lines.push(`let ${B}b${c} = ${B}[(tx + ${c * t.TX}u) * ${S4}u + k4];`);
    for (const i of I4) for (const c of rng(t.SC)) lines.push(`${acc}${i}_${c} += dot(${A}a${i}, ${B}b${c});`);
  }
  return `for (var k4 = 0u; k4 < ${HD / 4}u; k4++) {\n      ${lines.join('\n      ')}\n    }`;
}
/** Column count of a dn product per invocation, and whether it is held as vec4s. */
const dnShape = (t: AttTile, HD: number): { OC: number; vec: boolean; n: number } => {
  const OC = HD / t.TX;
  return OC >= 4 ? { OC, vec: true, n: OC / 4 } : { OC, vec: false, n: OC };
};
const dnDecl = (name: string, t: AttTile, HD: number): string => {
  const { vec, n } = dnShape(t, HD);
  return I4.map((i) => rng(n).map((g) => `var ${name}${i}_${g} = ${vec ? 'vec4<f32>(0.0)' : '0.0'};`).join(' ')).join(' ');
};
/** Column (in 0..HD) of element e of dn accumulator g (e < 4 for vec4s, else 0): vec4 groups tx + TX*g, or the OC < 4 contiguous scalars tx*OC + g. */
const dnCol = (t: AttTile, HD: number, g: number, e: number): string =>
  dnShape(t, HD).vec ? `(4u * (tx + ${g * t.TX}u) + ${e}u)` : `(tx * ${HD / t.TX}u + ${g}u)`;
/** The OC < 4 scalars of vec4 `v` an invocation owns (components (tx*OC) % 4 ..), by selects (no dynamic indexing). */
const dnPick = (OC: number, v: string): string[] => {
  if (OC === 2) return [`select(${v}.x, ${v}.z, (tx & 1u) == 1u)`, `select(${v}.y, ${v}.w, (tx & 1u) == 1u)`];
  return [`select(select(${v}.x, ${v}.y, (tx & 1u) == 1u), select(${v}.z, ${v}.w, (tx & 1u) == 1u), (tx & 2u) == 2u)`];
};
/** acc_i_g += sum over k < K of A[row i][k] * B[k][cols g], for each (acc, A, B); A rows stride K/4+1 vec4s. */
function dn(pairs: { acc: string; A: string; B: string }[], t: AttTile, HD: number, K: number): string {
  const SA4 = K / 4 + 1, SB4 = HD / 4 + 1;
  const { vec, n } = dnShape(t, HD);
  const lines: string[] = [];
  for (const { acc, A, B } of pairs) {
    for (const i of I4) lines.push(`let ${A}a${i} = ${A}[(ty + ${i * t.TY}u) * ${SA4}u + k4];`);
    for (const e of I4) {
      if (vec) {
        for (const g of rng(n)) {
          lines.push(`{ let bv = ${B}[(k4 * 4u + ${e}u) * ${SB4}u + tx + ${g * t.TX}u];`);
          for (const i of I4) lines.push(`  ${acc}${i}_${g} = fma(vec4<f32>(${A}a${i}.${'xyzw'[e]}), bv, ${acc}${i}_${g});`);
          lines.push('}');
        }
      } else {
        lines.push(`{ let bw = ${B}[(k4 * 4u + ${e}u) * ${SB4}u + tx / ${4 / n}u];`);
        dnPick(n, 'bw').forEach((bv, g) => { lines.push(`  let bs${g} = ${bv};`); for (const i of I4) lines.push(`  ${acc}${i}_${g} = fma(${A}a${i}.${'xyzw'[e]}, bs${g}, ${acc}${i}_${g});`); });
        lines.push('}');
      }
    }
  }
  return `for (var k4 = 0u; k4 < ${K / 4}u; k4++) {\n      ${lines.join('\n      ')}\n    }`;
}
/** Stores (or `op`s) dn accumulator `name` times `mul` (per row i) to t[base(i) + col] for rows where ok(i), cols below hd. */
function dnStore(name: string, t: AttTile, HD: number, ok: (i: number) => string, base: (i: number) => string, mul: (i: number) => string): string {
  const { vec, n } = dnShape(t, HD);
  const out: string[] = [];
  for (const i of I4) {
    out.push(`if (${ok(i)}) { let ob = ${base(i)}; let mu = ${mul(i)};`);
    for (const g of rng(n)) {
      if (vec) for (const e of I4) out.push(`  { let cc = ${dnCol(t, HD, g, e)}; if (cc < P.hd) { DST[ob + cc] = ${name}${i}_${g}.${'xyzw'[e]} * mu; } }`);
      else out.push(`  { let cc = ${dnCol(t, HD, g, 0)}; if (cc < P.hd) { DST[ob + cc] = ${name}${i}_${g} * mu; } }`);
    }
    out.push('}');
  }
  return out.join('\n  ');
}
/** Cooperative load of `rows` rows (row r -> global element base(r) + d, zero when !ok(r) or d >= hd) into natural tiles. */
function loadRows(NT: number, rows: number, HD: number, row: string, targets: { arr: string; src: string }[]): string {
  const S4 = HD / 4 + 1;
  return `for (var e = lid; e < ${rows * HD}u; e += ${NT}u) {
      let rr = e / ${HD}u; let d = e % ${HD}u; ${row}
      ${targets.map(({ arr, src }) => `{ var v = 0.0; if (ok && d < P.hd) { v = ${src}; } ${arr}[rr * ${S4}u + d / 4u][d % 4u] = v; }`).join('\n      ')}
    }`;
}
const natDecl = (name: string, rows: number, HD: number): string => `var<workgroup> ${name}: array<vec4<f32>, ${rows * (HD / 4 + 1)}>;`;
const scoreDecl = (name: string, rows: number, cols: number): string => `var<workgroup> ${name}: array<vec4<f32>, ${rows * (cols / 4 + 1)}>;`;
/** Scalar element (row, col) of a score tile with `cols` columns. */
const scoreAt = (name: string, cols: number, row: string, col: string): string => `${name}[(${row}) * ${cols / 4 + 1}u + (${col}) / 4u][(${col}) % 4u]`;

/**
 * Forward: one workgroup per (query block of R = 4*TY rows, b*h), blocks in reverse order (the
 * longest causal ranges first). Q (times scale) stays in workgroup memory; per key block of C =
 * TX*SC keys: K and V staged, S = Q K^T (dd), causal mask, row max over the TX invocations of a
 * row through `Ms`, P = exp(S - m) written over the K tile, O (registers) rescaled, O += P V (dn);
 * 4 barriers per key block. lse = m + log(l) with l summed over the row's invocations at the end.
 */
function attBlockedForward(HD: number, t: AttTile): KernelSpec {
  const { R, C, NT, rows, col } = tileGeometry(t);
  const kpLen = Math.max(C * (HD / 4 + 1), R * (C / 4 + 1));
  const body: string[] = [];
  for (const i of I4) for (const c of rng(t.SC)) body.push(`let ok${i}_${c} = j0 + ${col(c)} <= q0 + ${rows(i)} && j0 + ${col(c)} < P.T;`);
  const maskMax = I4.map((i) => `{ var mx = m${i}; ${rng(t.SC).map((c) => `if (ok${i}_${c}) { mx = max(mx, s${i}_${c}); }`).join(' ')} Ms[tx * ${R}u + ${rows(i)}] = mx; }`);
  const soft = I4.map((i) => `{ var mn = m${i}; for (var x = 0u; x < ${t.TX}u; x++) { mn = max(mn, Ms[x * ${R}u + ${rows(i)}]); }
    let corr = exp(m${i} - mn); m${i} = mn; l${i} *= corr;
    ${rng(dnShape(t, HD).n).map((g) => `o${i}_${g} *= corr;`).join(' ')}
    ${rng(t.SC).map((c) => `{ let p = select(0.0, exp(s${i}_${c} - mn), ok${i}_${c}); l${i} += p; ${scoreAt('KP', C, rows(i), col(c))} = p; }`).join('\n    ')} }`);
  return {
    tensors: ['out', 'lse', 'qkv'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: {
      size: NT,
      decls: [natDecl('Qs', R, HD), `var<workgroup> KP: array<vec4<f32>, ${kpLen}>;`, natDecl('Vs', C, HD), `var<workgroup> Ms: array<f32, ${t.TX * R}>;`].join('\n'),
    },
    body: `${ATT_HEAD}
  let tx = lid % ${t.TX}u; let ty = lid / ${t.TX}u;
  let q0 = (nwg.x - 1u - wid.x) * ${R}u;
  let kOff = (P.H + kvh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  ${loadRows(NT, R, HD, `let tq = q0 + rr; let ok = tq < P.T; let gb = (b * P.T + min(tq, P.T - 1u)) * stride + h * P.hd + d;`, [{ arr: 'Qs', src: 'qkv[gb] * P.scale' }])}
  ${I4.map((i) => `var m${i} = -3.0e38; var l${i} = 0.0;`).join(' ')}
  ${dnDecl('o', t, HD)}
  let kEnd = min(P.T, q0 + ${R}u);
  for (var j0 = 0u; j0 < kEnd; j0 += ${C}u) {
    ${loadRows(NT, C, HD, `let j = j0 + rr; let ok = j < P.T; let gb = (b * P.T + min(j, P.T - 1u)) * stride + d;`, [{ arr: 'KP', src: 'qkv[gb + kOff]' }, { arr: 'Vs', src: 'qkv[gb + vOff]' }])}
    workgroupBarrier();
    ${ddDecl('s', t.SC)}
    ${dd([{ acc: 's', A: 'Qs', B: 'KP' }], t, HD)}
    ${body.join(' ')}
    ${maskMax.join('\n    ')}
    workgroupBarrier();
    ${soft.join('\n    ')}
    workgroupBarrier();
    ${dn([{ acc: 'o', A: 'KP', B: 'Vs' }], t, HD, C)}
    workgroupBarrier();
  }
  ${I4.map((i) => `Ms[tx * ${R}u + ${rows(i)}] = l${i};`).join(' ')}
  workgroupBarrier();
  ${I4.map((i) => `var L${i} = 0.0; for (var x = 0u; x < ${t.TX}u; x++) { L${i} += Ms[x * ${R}u + ${rows(i)}]; }`).join('\n  ')}
  ${I4.map((i) => `if (tx == 0u && q0 + ${rows(i)} < P.T) { lse[bh * P.T + q0 + ${rows(i)}] = m${i} + log(L${i}); }`).join('\n  ')}
  ${dnStore('o', t, HD, (i) => `q0 + ${rows(i)} < P.T`, (i) => `(b * P.T + q0 + ${rows(i)}) * P.H * P.hd + h * P.hd`, (i) => `1.0 / L${i}`).replace(/DST\[/g, 'out[')}`,
  };
}

/**
 * Backward dK, dV: one workgroup per (key block of R = 4*TY keys, b*kvh); K, V stay in workgroup
 * memory, dK and dV in registers. For each query head of the group and each block of C = TX*SC
 * queries from the key block's first key on: Q (times scale) and dO staged with their lse and D,
 * S^T = K Q^T and dP^T = V dO^T (dd), P^T = exp(S^T - lse), dS^T = P^T (dP^T - D), both written
 * to workgroup memory, then dV += P^T dO and dK += dS^T Q (dn). 3 barriers per query block.
 */
function attBlockedBackwardKV(HD: number, t: AttTile): KernelSpec {
  const { R, C, NT, rows, col } = tileGeometry(t);
  const ps: string[] = [];
  for (const i of I4) for (const c of rng(t.SC)) {
    ps.push(`{ let q = q0 + ${col(c)}; let ok = q >= j0 + ${rows(i)} && q < P.T;
      let p = select(0.0, exp(s${i}_${c} - Ls[${col(c)}]), ok);
      ${scoreAt('Ps', C, rows(i), col(c))} = p; ${scoreAt('Ss', C, rows(i), col(c))} = p * (g${i}_${c} - Ds[${col(c)}]); }`);
  }
  return {
    tensors: ['dqkv', 'drow', 'dout', 'qkv', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: {
      size: NT,
      decls: [natDecl('Ks', R, HD), natDecl('Vs', R, HD), natDecl('Qs', C, HD), natDecl('Gs', C, HD), scoreDecl('Ps', R, C), scoreDecl('Ss', R, C),
        `var<workgroup> Ls: array<f32, ${C}>;`, `var<workgroup> Ds: array<f32, ${C}>;`].join('\n'),
    },
    body: `
  let bk = wid.y; let kvh = bk % P.KVH; let b = bk / P.KVH;
  let stride = (P.H + 2u * P.KVH) * P.hd; let group = P.H / P.KVH;
  let tx = lid % ${t.TX}u; let ty = lid / ${t.TX}u;
  let j0 = wid.x * ${R}u;
  let kOff = (P.H + kvh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  ${loadRows(NT, R, HD, `let j = j0 + rr; let ok = j < P.T; let gb = (b * P.T + min(j, P.T - 1u)) * stride + d;`, [{ arr: 'Ks', src: 'qkv[gb + kOff]' }, { arr: 'Vs', src: 'qkv[gb + vOff]' }])}
  ${dnDecl('dk', t, HD)}
  ${dnDecl('dv', t, HD)}
  for (var hg = 0u; hg < group; hg++) {
    let h = kvh * group + hg; let bh = b * P.H + h;
    for (var q0 = j0; q0 < P.T; q0 += ${C}u) {
    ${loadRows(NT, C, HD, `let tq = q0 + rr; let ok = tq < P.T; let tc = min(tq, P.T - 1u);`, [{ arr: 'Qs', src: 'qkv[(b * P.T + tc) * stride + h * P.hd + d] * P.scale' }, { arr: 'Gs', src: 'dout[(b * P.T + tc) * P.H * P.hd + h * P.hd + d]' }])}
    if (lid < ${C}u) {
      let tq = q0 + lid; var lv = 3.0e38; var dv0 = 0.0;
      if (tq < P.T) { lv = lse[bh * P.T + tq]; dv0 = drow[bh * P.T + tq]; }
      Ls[lid] = lv; Ds[lid] = dv0;
    }
    workgroupBarrier();
    ${ddDecl('s', t.SC)} ${ddDecl('g', t.SC)}
    ${dd([{ acc: 's', A: 'Ks', B: 'Qs' }, { acc: 'g', A: 'Vs', B: 'Gs' }], t, HD)}
    ${ps.join('\n    ')}
    workgroupBarrier();
    ${dn([{ acc: 'dv', A: 'Ps', B: 'Gs' }, { acc: 'dk', A: 'Ss', B: 'Qs' }], t, HD, C)}
    workgroupBarrier();
    }
  }
  ${dnStore('dk', t, HD, (i) => `j0 + ${rows(i)} < P.T`, (i) => `(b * P.T + j0 + ${rows(i)}) * stride + kOff`, () => '1.0').replace(/DST\[/g, 'dqkv[')}
  ${dnStore('dv', t, HD, (i) => `j0 + ${rows(i)} < P.T`, (i) => `(b * P.T + j0 + ${rows(i)}) * stride + vOff`, () => '1.0').replace(/DST\[/g, 'dqkv[')}`,
  };
}

/**
 * Backward dQ: one workgroup per (query block of R = 4*TY queries, b*h), reverse order; Q (times
 * scale) and dO in workgroup memory, lse and D per row in registers, dQ in registers. Per key block
 * of C = TX*SC keys up to the diagonal: K, V staged, S = Q K^T and dP = dO V^T (dd), dS = P (dP -
 * D) to workgroup memory, dQ += dS K (dn); times scale at the store. 3 barriers per key block.
 */
function attBlockedBackwardQ(HD: number, t: AttTile): KernelSpec {
  const { R, C, NT, rows, col } = tileGeometry(t);
  const ps: string[] = [];
  for (const i of I4) for (const c of rng(t.SC)) {
    ps.push(`{ let j = j0 + ${col(c)}; let ok = j <= q0 + ${rows(i)} && j < P.T;
      let p = select(0.0, exp(s${i}_${c} - L${i}), ok);
      ${scoreAt('Ss', C, rows(i), col(c))} = p * (g${i}_${c} - D${i}); }`);
  }
  return {
    tensors: ['dqkv', 'drow', 'dout', 'qkv', 'lse'], params: ['T', 'H', 'KVH', 'hd', 'scale:f32'],
    workgroup: { size: NT, decls: [natDecl('Qs', R, HD), natDecl('Gs', R, HD), natDecl('Ks', C, HD), natDecl('Vs', C, HD), scoreDecl('Ss', R, C)].join('\n') },
    body: `${ATT_HEAD}
  let tx = lid % ${t.TX}u; let ty = lid / ${t.TX}u;
  let q0 = (nwg.x - 1u - wid.x) * ${R}u;
  let kOff = (P.H + kvh) * P.hd; let vOff = kOff + P.KVH * P.hd;
  ${loadRows(NT, R, HD, `let tq = q0 + rr; let ok = tq < P.T; let tc = min(tq, P.T - 1u);`, [{ arr: 'Qs', src: 'qkv[(b * P.T + tc) * stride + h * P.hd + d] * P.scale' }, { arr: 'Gs', src: 'dout[(b * P.T + tc) * P.H * P.hd + h * P.hd + d]' }])}
  ${I4.map((i) => `var L${i} = 3.0e38; var D${i} = 0.0; if (q0 + ${rows(i)} < P.T) { L${i} = lse[bh * P.T + q0 + ${rows(i)}]; D${i} = drow[bh * P.T + q0 + ${rows(i)}]; }`).join('\n  ')}
  ${dnDecl('dq', t, HD)}
  let kEnd = min(P.T, q0 + ${R}u);
  for (var j0 = 0u; j0 < kEnd; j0 += ${C}u) {
    ${loadRows(NT, C, HD, `let j = j0 + rr; let ok = j < P.T; let gb = (b * P.T + min(j, P.T - 1u)) * stride + d;`, [{ arr: 'Ks', src: 'qkv[gb + kOff]' }, { arr: 'Vs', src: 'qkv[gb + vOff]' }])}
    workgroupBarrier();
    ${ddDecl('s', t.SC)} ${ddDecl('g', t.SC)}
    ${dd([{ acc: 's', A: 'Qs', B: 'Ks' }, { acc: 'g', A: 'Gs', B: 'Vs' }], t, HD)}
    ${ps.join('\n    ')}
    workgroupBarrier();
    ${dn([{ acc: 'dq', A: 'Ss', B: 'Ks' }], t, HD, C)}
    workgroupBarrier();
  }
  ${dnStore('dq', t, HD, (i) => `q0 + ${rows(i)} < P.T`, (i) => `(b * P.T + q0 + ${rows(i)}) * stride + h * P.hd`, () => 'P.scale').replace(/DST\[/g, 'dqkv[')}`,
  };
}

/** D = rowsum(dout * out) per (b, h, t), one invocation each (lanes along t: i = bh*T + t), into drow[bh*T + t]. */
const attRowDot: KernelSpec = {
  tensors: ['drow', 'dout', 'out'], params: ['T', 'H', 'hd'],
  body: `
  let t = i % P.T; let bh = i / P.T; let h = bh % P.H; let b = bh / P.H;
  let ob = (b * P.T + t) * P.H * P.hd + h * P.hd;
  var s = 0.0;
  for (var d = 0u; d < P.hd; d++) { s = fma(dout[ob + d], out[ob + d], s); }
  drow[i] = s;`,
};

function blockedKernels(k: Record<string, KernelSpec>): void {
  for (const HD of ATT_BLOCKED_HDS) {
    for (const t of ATT_FWD_TILES[HD]) k[attFwdName(HD, t)] = attBlockedForward(HD, t);
    for (const t of ATT_BWD_TILES[HD]) {
      k[attKVName(HD, t)] = attBlockedBackwardKV(HD, t);
      k[attQName(HD, t)] = attBlockedBackwardQ(HD, t);
    }
  }
  k.attRowDot = attRowDot;
}

export function generatedKernels(): Record<string, KernelSpec> {
  const k: Record<string, KernelSpec> = {};
  for (const tile of [64, 128] as const) k[mmName(tile)] = matmulKernel(tile);
  /** out[i] (= or +=) sum over z < splits of part[z*MN + i]. */
  k.splitReduce = {
    tensors: ['out', 'part'], params: ['splits', 'accum'],
    body: `
  var s = 0.0;
  for (var z = 0u; z < P.splits; z++) { s += part[z * P.n_ + i]; }
  if (P.accum != 0u) { out[i] += s; } else { out[i] = s; }`,
  };
  /**
   * out[M,NC] = a[M,K] @ w[NC,K]^T for M <= 4 (sampling): 8 outputs per workgroup, 32 invocations
   * each striding along K (coalesced rows of w), then a tree over the 32.
   */
  k.gemvSmall = {
    tensors: ['out', 'a', 'w'], params: ['M', 'NC', 'K'],
    workgroup: { size: 256, decls: 'var<workgroup> red4: array<vec4<f32>, 256>;' },
    body: `
  let g = lid / 32u; let lane = lid % 32u;
  let n = (wid.x + wid.y * nwg.x) * 8u + g;
  var s = vec4<f32>(0.0);
  if (n < P.NC) {
    let wb = n * P.K;
    for (var k = lane; k < P.K; k += 32u) {
      let wv = w[wb + k];
      s.x = fma(a[k], wv, s.x);
      if (P.M > 1u) { s.y = fma(a[P.K + k], wv, s.y); }
      if (P.M > 2u) { s.z = fma(a[2u * P.K + k], wv, s.z); }
      if (P.M > 3u) { s.w = fma(a[3u * P.K + k], wv, s.w); }
    }
  }
  red4[lid] = s;
  workgroupBarrier();
  for (var w2 = 16u; w2 > 0u; w2 >>= 1u) {
    if (lane < w2) { red4[lid] += red4[lid + w2]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < P.NC) {
    let r = red4[lid];
    for (var m = 0u; m < P.M; m++) { out[m * P.NC + n] = r[m]; }
  }`,
  };
  k.rmsnormForwardRow = {
    tensors: ['out', 'rstd', 'inp', 'w'], params: ['C', 'eps:f32'], workgroup: { size: 256, decls: RED },
    body: `${ROW}
  let r = row * P.C;
  var ss = 0.0;
  for (var c = lid; c < P.C; c += 256u) { let v = inp[r + c]; ss += v * v; }
  red[lid] = ss;${tree('red', '+')}
  let s = 1.0 / sqrt(red[0] / f32(P.C) + P.eps);
  if (lid == 0u) { rstd[row] = s; }
  for (var c = lid; c < P.C; c += 256u) { out[r + c] = inp[r + c] * s * w[c]; }`,
  };
  k.rmsnormBackwardInputRow = {
    tensors: ['dinp', 'dout', 'inp', 'w', 'rstd'], params: ['C'], workgroup: { size: 256, decls: RED },
    body: `${ROW}
  let r = row * P.C;
  let s = rstd[row];
  var dot = 0.0;
  for (var c = lid; c < P.C; c += 256u) { dot += w[c] * dout[r + c] * inp[r + c]; }
  red[lid] = dot;${tree('red', '+')}
  let k = s * s * s * red[0] / f32(P.C);
  for (var c = lid; c < P.C; c += 256u) { dinp[r + c] += s * w[c] * dout[r + c] - k * inp[r + c]; }`,
  };
  /** part[ch*C + c] = sum over rows [ch*rows, ...) of dout*inp*rstd (i over C*chunks). */
  k.rmsnormWeightPartial = {
    tensors: ['part', 'dout', 'inp', 'rstd'], params: ['N', 'C', 'rows'],
    body: `
  let c = i % P.C; let ch = i / P.C;
  let n1 = min(P.N, (ch + 1u) * P.rows);
  var s = 0.0;
  for (var n = ch * P.rows; n < n1; n++) { s += dout[n * P.C + c] * inp[n * P.C + c] * rstd[n]; }
  part[i] = s;`,
  };
  /** part[wid.x] = this workgroup's share of the sum over x of `term` (of v = x[k]). */
  const partialSum = (term: string): KernelSpec => ({
    tensors: ['part', 'x'], params: ['len'], workgroup: { size: 256, decls: RED },
    body: `
  var s = 0.0;
  for (var k = wid.x * 256u + lid; k < P.len; k += nwg.x * 256u) { ${term} }
  red[lid] = s;${tree('red', '+')}
  if (lid == 0u) { part[wid.x] = red[0]; }`,
  });
  /** One workgroup adds the partials and `store`s their sum `red[0]` into out[0]. */
  const finalSum = (params: string[], store: string): KernelSpec => ({
    tensors: ['out', 'part'], params: ['len', ...params], workgroup: { size: 256, decls: RED },
    body: `
  var s = 0.0;
  for (var k = lid; k < P.len; k += 256u) { s += part[k]; }
  red[lid] = s;${tree('red', '+')}
  if (lid == 0u) { ${store} }`,
  });
  k.sumSquaresPartial = partialSum('let v = x[k]; s = fma(v, v, s);');
  k.sumPartial = partialSum('s += x[k];');
  /** out[0] += scale * (sum of the partials). */
  k.accumulateSumFinal = finalSum(['scale:f32'], 'out[0u] += P.scale * red[0];');
  k.sumSquaresFinal = finalSum([], 'out[0u] = red[0];');
  k.crossEntropyForwardRow = crossEntropyKernel(false);
  k.crossEntropyBackwardRow = crossEntropyKernel(true);
  for (const HD of ATT_HDS) {
    for (const t of [ROWS_TILE, ...ATT_SPLIT_TILES]) {
      k[attRowsFwdName(HD, t)] = attentionForwardKernel(HD, t);
      k[attRowsQName(HD, t)] = attentionBackwardQKernel(HD, t);
      k[attRowsKVName(HD, t)] = attentionBackwardKVKernel(HD, t);
    }
  }
  blockedKernels(k);
  /** One workgroup per query (grid T x B*H): keys 256 at a time, one per invocation; then invocation d accumulates output dim d. */
  k.attCachedWg = {
    tensors: ['out', 'qkv', 'cache'], params: ['T', 'H', 'KVH', 'hd', 'context', 'pos0', 'scale:f32'],
    workgroup: { size: 256, decls: `${RED}\nvar<workgroup> qs: array<f32, 256>;\nvar<workgroup> ps: array<f32, 256>;` },
    body: `${ATT_HEAD}
  let t = wid.x;
  let width = 2u * P.KVH * P.hd;
  let kOff = kvh * P.hd; let vOff = kOff + P.KVH * P.hd;
  var qv = 0.0;
  if (lid < P.hd) { qv = qkv[(b * P.T + t) * stride + h * P.hd + lid] * P.scale; }
  qs[lid] = qv;
  workgroupBarrier();
  let nkeys = P.pos0 + t + 1u;
  var m = -3.0e38; var l = 0.0; var acc = 0.0;
  for (var j0 = 0u; j0 < nkeys; j0 += 256u) {
    let j = j0 + lid;
    var s = -3.0e38;
    if (j < nkeys) {
      let kb = (b * P.context + j) * width + kOff;
      var dot = 0.0;
      for (var d = 0u; d < P.hd; d++) { dot = fma(qs[d], cache[kb + d], dot); }
      s = dot;
    }
    red[lid] = s;${tree('red', 'max')}
    let mt = max(m, red[0]);
    workgroupBarrier();
    var p = 0.0;
    if (j < nkeys) { p = exp(s - mt); }
    ps[lid] = p; red[lid] = p;${tree('red', '+')}
    let corr = exp(m - mt);
    l = l * corr + red[0];
    if (lid < P.hd) {
      var a = acc * corr;
      let cnt = min(256u, nkeys - j0);
      for (var jj = 0u; jj < cnt; jj++) { a = fma(ps[jj], cache[(b * P.context + j0 + jj) * width + vOff + lid], a); }
      acc = a;
    }
    m = mt;
    workgroupBarrier();
  }
  if (lid < P.hd) { out[(b * P.T + t) * P.H * P.hd + h * P.hd + lid] = acc / l; }`,
  };
  return k;
}
