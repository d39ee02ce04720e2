// Per-kernel timings of the webgpu backend (run `npx tsc -p .` first):
//   node bench/webgpu-kernels.mjs [--config gpt2-small|seed|medium|bpe|nanogpt-cpu] [--reps N] [--batch B]
//                                 [--kernels tiled|simple] [--tile 64|128] [--split K] [--attention rows|split|blocked[:I][,...]]
//                                 [--attention-tile I] [--only matmul,attention,...] [--json]
// For each kernel at the config's training sizes (N = batch x context tokens): the matmul of every
// weight (forward, grad-weight alone, grad-input + grad-weight) with achieved GFLOP/s, attention forward and backward
// (causal FLOPs), cross-entropy, rmsnorm, AdamW and sumSquares over all parameters with GB/s.
// Timing: one warm-up call (compiles the pipeline), then `reps` calls enqueued back to back
// between two `await backend.sync()`; the wall time over the calls is reported per call. With no
// --reps, reps is chosen so that each measurement takes about 100 ms (3 to 200 calls).
// --batch overrides the config's batch (e.g. `--config seed --batch 1 --reps 1` on SwiftShader);
// --tile and --split force the tiled matmul's output tile and K splits (default: by problem size).
// --attention picks the tiled set's attention kernels (default: the backend's, rows); a comma list
// (rows,split,blocked) times each in the attention section of one run; NAME:I forces that entry's tile
// candidate (index into ATT_SPLIT_TILES, or ATT_FWD_TILES / ATT_BWD_TILES of
// src/backend/webgpu/tiled.ts), --attention-tile I every entry's. A split or blocked kernel that does not
// fit the device's workgroup memory falls back (split: to a smaller tile, then to rows).
// Sections: matmul, attention, sample (attention over the KV cache), crossentropy, rmsnorm, optimizer.
import { createWebGpuBackend } from '../dist/src/backend/webgpu/index.js';
import { BENCH_CONFIGS } from '../dist/src/bench.js';
import { resolveConfig, headDim } from '../dist/src/model/config.js';
import { paramLayout } from '../dist/src/model/params.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? dflt : argv[i + 1];
};
const configName = opt('config', 'gpt2-small');
const repsArg = opt('reps', undefined);
const json = argv.includes('--json');
const kernels = opt('kernels', undefined);
const only = opt('only', undefined)?.split(',');
const bc = BENCH_CONFIGS[configName];
if (!bc) {
  console.error(`unknown config ${configName}; choose one of ${Object.keys(BENCH_CONFIGS).join(', ')}`);
  process.exit(2);
}
const c = resolveConfig(bc.model);
const B = Number(opt('batch', bc.batch)), T = c.context, N = B * T;
const C = c.d_model, H = c.n_heads, KVH = c.n_kv_heads, hd = headDim(c), F = c.intermediate_size, V = c.vocab_size;
const P = paramLayout(c).size;

const tile = opt('tile', undefined), split = opt('split', undefined);
const attentions = opt('attention', undefined)?.split(',') ?? [undefined];
const attTile = opt('attention-tile', undefined);
for (const a of attentions) {
  if (a !== undefined && !/^(rows|split(:\d+)?|blocked(:\d+)?)$/.test(a)) {
    console.error(`--attention takes rows, split[:I], blocked[:I] or a comma list of them, not ${a}`);
    process.exit(2);
  }
}
const options = (entry) => {
  const [attention, entryTile] = entry?.split(':') ?? [];
  const t = entryTile ?? attTile;
  return {
    // Choosing attention kernels means the tiled set (a software adapter defaults to the simple one).
    ...(kernels ? { kernels } : attention ? { kernels: 'tiled' } : {}),
    ...(tile ? { matmulTile: Number(tile) } : {}),
    ...(split ? { splitK: Number(split) } : {}),
    ...(attention ? { attention } : {}),
    ...(t !== undefined ? { attentionTile: Number(t) } : {}),
  };
};
let be = await createWebGpuBackend(options(attentions[0]));
const log = (...a) => { if (!json) console.log(...a); };
log(`adapter: ${be.adapterInfo}${be.software ? ' (software)' : ''}; kernels: ${be.kernels}, matmul: ${be.matmul}, attention: ${attentions.map((a) => a ?? be.attention).join(',')}${tile ? `, tile ${tile}` : ''}${split ? `, split-K ${split}` : ''}`);
log(`config ${configName}: d${C} h${H} kv${KVH} hd${hd} l${c.n_layers} ctx${T} batch ${B} (N=${N} tokens), vocab ${V}, mlp ${c.mlp} F=${F}, ${(P / 1e6).toFixed(1)}M params`);

/** A tensor of n floats filled with a repeating random pattern (written once, then doubled on the device). */
function rand(n, std = 1) {
  const t = be.alloc(n);
  const chunk = Math.min(n, 1 << 16);
  be.write(t, Float32Array.from({ length: chunk }, () => std * (Math.random() * 2 - 1)));
  for (let have = chunk; have < n; have *= 2) {
    const len = Math.min(have, n - have);
    be.copy(be.view(t, have, len), be.view(t, 0, len));
  }
  return t;
}
function ints(n, below) {
  const t = be.allocInt(n);
  be.writeInt(t, Int32Array.from({ length: n }, () => Math.floor(Math.random() * below)));
  return t;
}

/** Seconds per call of fn (enqueues kernels), synchronised with the GPU around the timed calls. */
async function timeIt(fn) {
  fn();
  await be.sync(); // warm-up: pipeline compilation, first-use allocations
  let reps = repsArg ? Number(repsArg) : 0;
  if (!reps) {
    const t0 = performance.now();
    fn();
    await be.sync();
    const one = Math.max(performance.now() - t0, 0.01);
    reps = Math.max(3, Math.min(200, Math.ceil(100 / one)));
  }
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  await be.sync();
  return (performance.now() - t0) / 1000 / reps;
}

const rows = [];
function report(section, kernel, shape, seconds, flops, bytes) {
  const row = { section, kernel, shape, ms: seconds * 1e3, gflops: flops ? flops / seconds / 1e9 : null, gbps: bytes ? bytes / seconds / 1e9 : null };
  rows.push(row);
  const num = (x) => (x >= 100 ? x.toFixed(0) : x.toPrecision(3));
  log(`${kernel.padEnd(26)} ${shape.padEnd(30)} ${row.ms.toFixed(3).padStart(10)} ms ${row.gflops ? num(row.gflops).padStart(8) + ' GFLOP/s' : ''.padStart(16)} ${row.gbps ? num(row.gbps).padStart(6) + ' GB/s' : ''}`);
}
const want = (s) => !only || only.includes(s);
const t00 = performance.now();
log(`\n${'kernel'.padEnd(26)} ${'shape'.padEnd(30)} ${'time'.padStart(13)} ${'rate'.padStart(16)}`);

if (want('matmul')) {
  const qkvOut = (H + 2 * KVH) * hd;
  const up = c.mlp === 'swiglu' ? 2 * F : F;
  const shapes = [['qkv', C, qkvOut], ['o_proj', H * hd, C], [c.mlp === 'swiglu' ? 'gate|up' : 'up', C, up], ['down', F, C], ['lm_head', C, V]];
  for (const [name, K, OC] of shapes) {
    const inp = rand(N * K), w = rand(OC * K, 0.02), out = rand(N * OC), dinp = be.alloc(N * K), dw = be.alloc(OC * K);
    const flops = 2 * N * K * OC;
    const shape = `${N}x${K} -> ${OC}`;
    const fwd = await timeIt(() => be.matmulForward(out, inp, w, N, K, OC));
    report('matmul', `matmul ${name} fwd`, shape, fwd, flops);
    const dW = await timeIt(() => be.matmulBackward(null, dw, out, inp, w, N, K, OC));
    report('matmul', `matmul ${name} dweight`, shape, dW, flops);
    const both = await timeIt(() => be.matmulBackward(dinp, dw, out, inp, w, N, K, OC));
    report('matmul', `matmul ${name} dinp+dweight`, shape, both, 2 * flops);
  }
}

if (want('attention')) {
  const main = be;
  for (const a of attentions) {
    if (a !== attentions[0]) be = await createWebGpuBackend(options(a));
    const s = { B, T, nHeads: H, nKvHeads: KVH, headDim: hd };
    const QKV = (H + 2 * KVH) * hd;
    const qkv = rand(B * T * QKV), out = rand(B * T * H * hd), lse = rand(B * H * T), dout = rand(B * T * H * hd), dqkv = rand(B * T * QKV);
    const flops = 2 * B * H * T * T * hd; // causal: half of 2 matmuls of 2·T·T·hd
    const shape = `B${B} T${T} H${H}/${KVH} hd${hd}`;
    const tag = attentions.length > 1 ? ` ${a ?? be.attention}` : '';
    report('attention', `attention fwd${tag}`, shape, await timeIt(() => be.attentionForward(out, lse, qkv, s)), flops);
    report('attention', `attention bwd${tag}`, shape, await timeIt(() => be.attentionBackward(dqkv, dout, qkv, out, lse, s)), 2.5 * flops);
    if (be !== main) be.destroy();
  }
  be = main;
}

if (want('sample')) {
  // One new token attending over a nearly full cache (sampling), batch 1.
  const s = { B: 1, T: 1, nHeads: H, nKvHeads: KVH, headDim: hd };
  const cache = rand(T * 2 * KVH * hd), qkv = rand((H + 2 * KVH) * hd), out = rand(H * hd);
  report('sample', 'attentionCached', `1 query over ${T - 1} keys`, await timeIt(() => be.attentionCached(out, qkv, cache, s, T, T - 1)), 4 * H * T * hd, 2 * T * KVH * hd * 4);
}

if (want('crossentropy')) {
  const logits = rand(N * V, 3), targets = ints(N, V), losses = rand(N), dlogits = be.alloc(N * V);
  const shape = `${N} x ${V}`;
  report('crossentropy', 'crossEntropy fwd', shape, await timeIt(() => be.crossEntropyForward(losses, logits, targets, N, V)), 0, N * V * 4);
  report('crossentropy', 'crossEntropy bwd', shape, await timeIt(() => be.crossEntropyBackward(losses, dlogits, logits, targets, N, V, 1 / N)), 0, 2 * N * V * 4);
}

if (want('rmsnorm')) {
  const x = rand(N * C), w = rand(C), out = rand(N * C), rstd = rand(N), dout = rand(N * C), dx = rand(N * C), dw = be.alloc(C);
  const shape = `${N} x ${C}`;
  report('rmsnorm', 'rmsnorm fwd', shape, await timeIt(() => be.rmsnormForward(out, rstd, x, w, N, C, 1e-5)), 0, 2 * N * C * 4);
  report('rmsnorm', 'rmsnorm bwd', shape, await timeIt(() => be.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C)), 0, 5 * N * C * 4);
}

if (want('optimizer')) {
  const p = rand(P, 0.02), g = rand(P, 1e-3), m = be.alloc(P), v = be.alloc(P), ns = be.alloc(1);
  const shape = `${P} params`;
  report('optimizer', 'sumSquares', shape, await timeIt(() => be.sumSquares(ns, [g])), 0, P * 4);
  let step = 1;
  const hyper = () => ({ lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: step++, gradScale: 1, clip: { normSquared: ns, maxNorm: 1 } });
  report('optimizer', 'adamw (clipped)', shape, await timeIt(() => be.adamw(p, g, m, v, hyper())), 0, 7 * P * 4);
}

const total = (performance.now() - t00) / 1000;
if (json) {
  console.log(JSON.stringify({ adapter: be.adapterInfo, software: be.software, kernels: be.kernels, matmul: be.matmul, attention: be.attention, config: configName, B, T, N, seconds: total, rows }, null, 1));
} else {
  log(`\n${rows.length} measurements in ${total.toFixed(1)} s`);
}
be.destroy();
