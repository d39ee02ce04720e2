// A pretrained model from the Hugging Face Hub, as a user brings one in: a folder of SmolLM-135M's
// shape (134.5M parameters, 30 layers, d576, 9 heads / 3 kv heads, vocabulary 49152, context 2048,
// tied embeddings, BF16 safetensors, a SmolLM-style tokenizer.json) with random weights, then
// `minigpt import`, `sample` (32 tokens), `eval --data` (defaults) and a short fine-tune at context
// 128, each a CLI process: wall time and peak RSS.
//   npm run build && node bench/import-model.mjs [DIR]
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRng, exportHf, initialWeights, paramLayout, resolveConfig, tokenizerFromHfJson } from '../dist/src/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = process.argv[2] ?? (await mkdtemp(join(tmpdir(), 'minigpt-import-')));
// The tokenizer: a SmolLM-style one (special tokens first, digits one by one) the tokenizers library trained.
const fixture = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'hf-bpe.json'), 'utf8'))['smollm-style'];
const tokenizer = tokenizerFromHfJson(fixture.tokenizer, 'hf-bpe.json');
const config = resolveConfig({
  vocab_size: 49152, d_model: 576, n_heads: 9, n_kv_heads: 3, n_layers: 30, intermediate_size: 1536, context: 2048, tie_embeddings: true,
});
const hf = join(dir, 'SmolLM-135M-shaped');
await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(0)), tokenizer }, hf, { dtype: 'BF16' });
writeFileSync(join(dir, 'data.txt'), fixture.texts.join('\n').repeat(10));

const cli = join(root, 'dist', 'src', 'cli', 'main.js');
// Each step is a CLI process, preloaded with a hook that writes its peak RSS on exit.
const hook = join(dir, 'rss-hook.cjs'), rssFile = join(dir, 'rss.txt');
writeFileSync(hook, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(rssFile)}, String(process.resourceUsage().maxRSS)));`);
const run = (what, args) => {
  const t = performance.now();
  const r = spawnSync(process.execPath, ['--require', hook, cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  const s = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}): ${r.stderr}`);
  const rss = Number(readFileSync(rssFile, 'utf8'));
  console.log(`${what.padEnd(48)} ${s.toFixed(1).padStart(6)} s   peak RSS ${(rss / 1024).toFixed(0).padStart(5)} MB`);
};
const ckpt = join(dir, 'imported');
run('import (BF16 -> F32 checkpoint)', ['import', '--from', hf, '--out', ckpt]);
run('sample --tokens 32', ['sample', '--ckpt', ckpt, '--prompt', 'The 12 people', '--tokens', '32']);
run('eval --data (validation split, default batch)', ['eval', '--ckpt', ckpt, '--data', join(dir, 'data.txt')]);
run('train --init-from --context 128, 5 steps', ['train', '--init-from', ckpt, '--data', join(dir, 'data.txt'), '--context', '128', '--batch', '4', '--steps', '5', '--eval-every', '0', '--out', join(dir, 'tuned'), '--quiet']);
if (!process.argv[2]) await rm(dir, { recursive: true, force: true });
