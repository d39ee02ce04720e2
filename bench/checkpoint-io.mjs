// Saving and loading a GPT-2-small-sized checkpoint (162M parameters; with the AdamW moments a
// training checkpoint is 1.95 GB of F32): times init, save (with training state), load and load
// for training, and prints peak RSS.  npm run build && node bench/checkpoint-io.mjs [DIR]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCharTokenizer, createRng, initialWeights, loadCheckpoint, paramLayout, resolveConfig, saveCheckpoint } from '../dist/src/index.js';

const dir = process.argv[2] ?? (await mkdtemp(join(tmpdir(), 'minigpt-ckpt-io-')));
const config = resolveConfig({ vocab_size: 50304, d_model: 768, n_heads: 12, n_layers: 12, context: 1024 });
const tokenizer = buildCharTokenizer('abcdefghijklmnopqrstuvwxyz ');
const time = async (what, f) => {
  const t = performance.now();
  const r = await f();
  console.log(`${what.padEnd(24)} ${((performance.now() - t) / 1000).toFixed(2)} s`);
  return r;
};
const weights = await time('init (initialWeights)', () => initialWeights(config, paramLayout(config), createRng(0)));
const m = weights.map((x) => x * 0.1), v = weights.map((x) => x * x);
const out = join(dir, 'checkpoint');
await time('save with training state', () => saveCheckpoint(out, { config, weights, tokenizer, training: { step: 1, m, v, trainer: {} } }));
await time('load (weights)', () => loadCheckpoint(out));
await time('load for training', () => loadCheckpoint(out, { training: true }));
console.log(`${(weights.length / 1e6).toFixed(1)}M parameters, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
if (!process.argv[2]) await rm(dir, { recursive: true, force: true });
