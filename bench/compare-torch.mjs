#!/usr/bin/env node
// minigpt against PyTorch on the same machine, back to back, as ratios.
//   node bench/compare-torch.mjs [--configs seed,nanogpt-cpu,medium,bpe] [--threads 2] [--no-compile] [--backend auto]
//     [--torch-device cpu|cuda] [--tf32] [--sync-every N] [--attention rows|split|blocked]
// --sync-every N: both sides read the loss back every N steps instead of every step (what
// `minigpt train --sync-every N` does); on a GPU that lets the queue run ahead of the host.
// --attention: the webgpu backend's attention kernels (minigpt bench --attention).
// On a GPU machine: --backend webgpu --torch-device cuda compares the webgpu backend with PyTorch on CUDA
// (plain fp32 matmuls unless --tf32, since WebGPU has no TF32 tensor cores).
// Sampling (batch 1, KV cache, each token's logits read back; median of 5 rounds) is compared too,
// against the same model's KV-cache decode loop in PyTorch eager.
// PyTorch comes from the dev venv (.venv, see DEVELOPERS.md) or $PYTHON.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    configs: { type: 'string', default: 'seed,nanogpt-cpu,medium,bpe' },
    threads: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'auto' },
    steps: { type: 'string', default: '10' },
    'no-compile': { type: 'boolean', default: false },
    'torch-device': { type: 'string', default: 'cpu' },
    tf32: { type: 'boolean', default: false },
    'sync-every': { type: 'string', default: '1' },
    attention: { type: 'string' },
  },
});
const python = process.env.PYTHON ?? join(root, '.venv', 'bin', 'python');
const torchArgs = ['--device', a['torch-device'], '--sync-every', a['sync-every'], ...(a.tf32 ? ['--tf32'] : [])];
if (!existsSync(python)) {
  console.error(`no PyTorch python at ${python}; set up the dev venv (DEVELOPERS.md) or set PYTHON`);
  process.exit(1);
}
const json = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: root, maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
};
const rows = [];
for (const config of a.configs.split(',')) {
  const eager = json(python, ['bench/torch_train.py', '--config', config, '--threads', a.threads, '--steps', a.steps, ...torchArgs]);
  const compiled = a['no-compile'] ? null : json(python, ['bench/torch_train.py', '--config', config, '--threads', a.threads, '--steps', a.steps, '--compile', ...torchArgs]);
  const ours = json(process.execPath, ['dist/src/cli/main.js', 'bench', '--config', config, '--backend', a.backend, '--threads', a.threads, '--steps', a.steps, '--sync-every', a['sync-every'], ...(a.attention ? ['--attention', a.attention] : []), '--json']);
  if (rows.length === 0) console.log(`torch ${eager.torch} (${eager.device === 'cuda' ? `${eager.device_name}, tf32 ${eager.tf32}` : `${eager.blas}, ${eager.threads} threads`}); minigpt backend ${ours.backend}, ${a.threads} threads; node ${process.version}`);
  rows.push({ config, ours, eager, compiled });
  const f = (x) => (x / 1000).toFixed(2) + 'k';
  console.log(
    `${config.padEnd(12)} minigpt ${f(ours.tokensPerSecond)} tok/s (${ours.gflops.toFixed(1)} GFLOP/s, ${ours.peakRssMb.toFixed(0)} MB) | ` +
      `torch eager ${f(eager.tokens_per_second)} (${eager.peak_rss_mb.toFixed(0)} MB) -> ${(ours.tokensPerSecond / eager.tokens_per_second).toFixed(2)}x` +
      (compiled ? ` | torch.compile ${f(compiled.tokens_per_second)} -> ${(ours.tokensPerSecond / compiled.tokens_per_second).toFixed(2)}x` : '') +
      (eager.sample_tokens_per_second ? ` | sampling ${f(ours.sampleTokensPerSecond)} vs torch eager ${f(eager.sample_tokens_per_second)} -> ${(ours.sampleTokensPerSecond / eager.sample_tokens_per_second).toFixed(2)}x` : ''),
  );
}
