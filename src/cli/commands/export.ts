import { check } from '../../errors.js';
import type { CommandSpec } from '../args.js';
import { loadCheckpoint, type WeightDType } from '../../io/checkpoint.js';
import { exportHf } from '../../io/hf.js';
import { exportGguf } from '../../io/gguf.js';
import { findCheckpointDir, latestRun } from '../../train/train.js';

export const exportCommand: CommandSpec = {
  name: 'export',
  summary: 'export a checkpoint for other tools: a Hugging Face transformers directory or a llama.cpp GGUF file',
  usage: 'minigpt export [--ckpt DIR] --out PATH [--format hf|gguf] [--dtype F32|F16|BF16] [--force]',
  flags: {
    ckpt: { type: 'string', value: 'DIR', description: 'run or checkpoint directory, or a .zip of a checkpoint (default: the last run trained from this folder, as runs/latest records it, else the newest run in ./runs)' },
    format: { type: 'string', choices: ['hf', 'gguf'], description: 'hf: a transformers model directory; gguf: one llama.cpp file (default: gguf when --out ends in .gguf, else hf)' },
    out: { type: 'string', value: 'PATH', description: 'directory (hf) or file (gguf) to write' },
    dtype: { type: 'string', choices: ['F32', 'F16', 'BF16'], description: 'weight storage type (gguf: F32 or F16; norms stay F32)', default: 'F32' },
    force: { type: 'boolean', description: 'replace --out if it exists (hf: only a folder of nothing but a transformers model\'s files, an earlier export)' },
  },
  details: [
    'hf: config.json (LlamaForCausalLM; ArceeForCausalLM for --mlp gelu; Qwen2ForCausalLM for --qkv-bias, which needs',
    '    a Qwen2 tokenizer: transformers gives Qwen2 models its own, which cleans text with NFC alone; other cleaning',
    '    the model was trained with is a warning), model.safetensors, generation_config.json,',
    '    tokenizer.json, tokenizer_config.json, special_tokens_map.json: AutoModelForCausalLM and AutoTokenizer load it.',
    'gguf: GGUF v3, llama architecture (with q, k and v biases for --qkv-bias), tokenizer.ggml.model "gpt2" ("llama"',
    '    for an imported SentencePiece-style tokenizer); llama.cpp and node-llama-cpp load it.',
    '',
    'Examples:',
    '  minigpt export --out my-model-hf                  # the latest run, as a transformers directory',
    '  minigpt export --ckpt runs/run-20261127-120000 --dtype F16 --out my-model.gguf',
  ].join('\n'),
  async run(v) {
    check(typeof v.out === 'string', 'give --out PATH (where to write the export)');
    const dtype = (v.dtype ?? 'F32') as WeightDType;
    const ggufName = /\.gguf$/i.test(v.out);
    check(!(v.format === 'hf' && ggufName), `--format hf writes a folder, but --out ${v.out} names a .gguf file; use --format gguf (or leave --format out), or another --out`);
    const format = v.format ?? (ggufName ? 'gguf' : 'hf');
    const dir = await findCheckpointDir(typeof v.ckpt === 'string' ? v.ckpt : await latestRun());
    const ckpt = await loadCheckpoint(dir);
    if (format === 'gguf') {
      check(dtype !== 'BF16', '--dtype BF16 is not written to GGUF here; use F32 or F16');
      await exportGguf(ckpt, v.out, { dtype, overwrite: Boolean(v.force), onWarning: (m) => console.error(`minigpt: warning: ${m}`) });
    } else {
      await exportHf(ckpt, v.out, { dtype, overwrite: Boolean(v.force), onWarning: (m) => console.error(`minigpt: warning: ${m}`) });
    }
    console.log(`exported ${dir} -> ${v.out} (${format}, ${dtype})`);
  },
};
