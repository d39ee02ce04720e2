// A pretrained model from the Hugging Face Hub, as a user brings one in: a folder of the shape of
// one (random weights, BF16 safetensors, a tokenizer.json of its kind the tokenizers library
// trained, from the test fixtures), then `minigpt import`, `sample` (32 tokens), `eval --data`
// (defaults) and a short fine-tune at context 128, each a CLI process: wall time and peak RSS.
//   --shape smollm     SmolLM-135M (default): 134.5M parameters, 30 layers, d576, 9 heads / 3 kv
//                      heads, vocabulary 49152, context 2048, tied embeddings, a SmolLM-style
//                      byte-level BPE (hf-bpe)
//   --shape stories15M llama2.c's stories15M: 15M parameters, 6 layers, d288, 6 heads, hidden 768,
//                      vocabulary 32000, context 256, a Llama 2-style SentencePiece BPE (sp-bpe)
//   --shape qwen2.5-0.5b Qwen2.5-0.5B: 494M parameters, 24 layers, d896, 14 heads / 2 kv heads,
//                      hidden 4864, vocabulary 151936, context 32768 (imported with --context 1024),
//                      tied embeddings, q/k/v biases, a Qwen2-style byte-level BPE (hf-bpe); no
//                      fine-tune (weights, gradients and AdamW's moments: 8 GB, past the cpu
//                      backend's 4 GiB)
//   npm run build && node bench/import-model.mjs [--shape NAME] [DIR]
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createRng, exportHf, initialWeights, paramLayout, resolveConfig, tokenizerFromHfJson } from '../dist/src/index.js';

const { values, positionals } = parseArgs({ options: { shape: { type: 'string', default: 'smollm' } }, allowPositionals: true });
const SHAPES = {
  smollm: {
    name: 'SmolLM-135M-shaped', fixture: ['hf-bpe.json', 'smollm-style'], prompt: 'The 12 people',
    config: { vocab_size: 49152, d_model: 576, n_heads: 9, n_kv_heads: 3, n_layers: 30, intermediate_size: 1536, context: 2048, tie_embeddings: true },
  },
  stories15M: {
    name: 'stories15M-shaped', fixture: ['sp-bpe.json', 'llama-style'], prompt: 'Once upon a time',
    config: { vocab_size: 32000, d_model: 288, n_heads: 6, n_kv_heads: 6, n_layers: 6, intermediate_size: 768, context: 256 },
  },
  'qwen2.5-0.5b': {
    name: 'Qwen2.5-0.5B-shaped', fixture: ['hf-bpe-split.json', 'qwen2-style'], prompt: 'The 12 people', importContext: 1024, dataRepeat: 15, noFinetune: true,
    config: { vocab_size: 151936, d_model: 896, n_heads: 14, n_kv_heads: 2, n_layers: 24, intermediate_size: 4864, context: 32768, tie_embeddings: true, qkv_bias: true },
  },
};
const shape = SHAPES[values.shape];
if (!shape) throw new Error(`--shape must be ${Object.keys(SHAPES).join(' or ')}`);

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = positionals[0] ?? (await mkdtemp(join(tmpdir(), 'minigpt-import-')));
const fixture = JSON.parse(readFileSync(join(root, 'test', 'fixtures', shape.fixture[0]), 'utf8'))[shape.fixture[1]];
const tokenizer = tokenizerFromHfJson(fixture.tokenizer, shape.fixture[0]);
const config = resolveConfig(shape.config);
const hf = join(dir, shape.name);
await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(0)), tokenizer }, hf, { dtype: 'BF16' });
writeFileSync(join(dir, 'data.txt'), fixture.texts.join('\n').repeat(shape.dataRepeat ?? 10));

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
const context = shape.importContext ? ['--context', String(shape.importContext)] : [];
run(`import (BF16 checkpoint)${context.length ? ` ${context.join(' ')}` : ''}`, ['import', '--from', hf, '--out', ckpt, ...context]);
run('sample --tokens 32', ['sample', '--ckpt', ckpt, '--prompt', shape.prompt, '--tokens', '32']);
const evalBatch = shape.evalBatch ? ['--batch', String(shape.evalBatch)] : [];
run(`eval --data (validation split, ${evalBatch.length ? evalBatch.join(' ') : 'default batch'})`, ['eval', '--ckpt', ckpt, '--data', join(dir, 'data.txt'), ...evalBatch]);
if (!shape.noFinetune) run('train --init-from --context 128, 5 steps', ['train', '--init-from', ckpt, '--data', join(dir, 'data.txt'), '--context', '128', '--batch', '4', '--steps', '5', '--eval-every', '0', '--out', join(dir, 'tuned'), '--quiet']);
if (!positionals[0]) await rm(dir, { recursive: true, force: true });
