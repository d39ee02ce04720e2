// Context 2048 on the cpu backend: attention keeps O(T) state per head (the log-sum-exp), so
// memory grows with T, not T^2. Prints step time and peak RSS.  node bench/long-context.mjs
import { createBackend, resolveConfig, createModel, setWeights, initialWeights, createRng, forward, backward, zeroGrads, createOptimizer, optimizerStep, meanLoss } from '../dist/src/index.js';
const c = resolveConfig({ vocab_size: 65, d_model: 128, n_heads: 8, n_layers: 6, context: 2048 });
const be = await createBackend('cpu');
const m = createModel(be, c);
setWeights(m, initialWeights(c, m.layout, createRng(0)));
const opt = createOptimizer(m);
const B = 2, T = 2048;
const ids = new Int32Array(B*T).map((_, i) => (i * 7) % 65);
for (let s = 0; s < 2; s++) {
  const t0 = performance.now();
  forward(m, ids, ids, B, T, { training: true }); zeroGrads(m); backward(m); optimizerStep(m, opt, 1e-3);
  console.log(`step ${s} loss ${(await meanLoss(m)).toFixed(3)} ${(performance.now()-t0).toFixed(0)} ms, peak RSS ${(process.resourceUsage().maxRSS/1024).toFixed(0)} MB`);
}
be.destroy();
