import { BACKEND_FLAGS, type CommandSpec } from '../args.js';
import { BENCH_CONFIGS, runBench } from '../../bench.js';
import { AMP_MODES } from '../../train/amp.js';
import { formatRate, progressLine } from '../progress.js';
import type { BackendName } from '../../backend/index.js';

export const benchCommand: CommandSpec = {
  name: 'bench',
  summary: 'measure training tokens/s, ms/step, GFLOP/s, peak RSS and sampling tokens/s',
  usage: 'minigpt bench [--config seed|nanogpt-cpu|medium|bpe|gpt2-small] [--backend B] [--threads N] [--steps N] [--amp M] [--sync-every N] [--attention A] [--json]',
  flags: {
    config: { type: 'string', choices: Object.keys(BENCH_CONFIGS), description: 'model and batch to measure', default: 'seed' },
    ...BACKEND_FLAGS,
    steps: { type: 'int', min: 1, value: 'N', description: 'timed training steps (after 2 warm-up steps)', default: 10 },
    amp: { type: 'string', choices: AMP_MODES, description: 'mixed precision mode to measure', default: 'off' },
    'sync-every': { type: 'int', min: 1, value: 'N', description: 'read the loss back every N steps (as train --sync-every)', default: 1 },
    attention: { type: 'string', choices: ['auto', 'rows', 'split', 'blocked'], description: "webgpu attention kernels to measure, with the tiled kernel set (default: the backend's, auto: the fastest of rows, split and blocked on the config's shape)" },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  details: [
    'Configs: seed = d128 h8 l6 ctx256 b16 vocab 65; nanogpt-cpu = d128 h4 l4 ctx64 b12;',
    'medium = d384 h6 l6 ctx256 b8; bpe = d128 h8 l6 ctx256 b8 vocab 50257; gpt2-small = d768 h12 l12 ctx1024 b4.',
    'bench/compare-torch.mjs runs the same configs in PyTorch and prints the ratios.',
  ].join('\n'),
  async run(v) {
    // On a terminal, a line says which part is measuring (a software GPU adapter takes minutes).
    const bar = process.stderr.isTTY ? progressLine() : undefined;
    const r = await runBench({
      config: v.config as string, backend: v.backend as BackendName, threads: v.threads as number | undefined, steps: v.steps as number,
      amp: v.amp as 'off', syncEvery: v['sync-every'] as number, attention: v.attention as 'rows' | undefined,
      onProgress: bar && ((part, done, total) => bar.update(done, total, part)),
    }).finally(() => bar?.done());
    if (v.json) {
      console.log(JSON.stringify(r));
      return;
    }
    console.log([
      `${r.config} on ${r.backend}${r.device ? ` (${r.device})` : ''}${r.amp !== 'off' ? ` (amp ${r.amp}${r.f16Storage ? ', f16 storage' : ''})` : ''}${r.syncEvery > 1 ? ` (loss read every ${r.syncEvery} steps)` : ''}${r.attention ? ` (attention: ${r.attention})` : ''}: ${r.parameters.toLocaleString('en-US')} parameters, ${r.tokensPerStep} tokens/step`,
      `  training   ${formatRate(r.tokensPerSecond)} tok/s, ${r.msPerStep.toFixed(1)} ms/step, ${r.gflops.toFixed(1)} GFLOP/s`,
      `  sampling   ${r.sampleTokensPerSecond.toFixed(1)} tok/s (KV cache, batch 1)`,
      `  peak RSS   ${r.peakRssMb.toFixed(0)} MB`,
    ].join('\n'));
  },
};
