import { stat } from 'node:fs/promises';
import { check } from '../../errors.js';
import { checkCheckpointOut } from './init.js';
import type { CommandSpec } from '../args.js';
import { saveCheckpoint } from '../../io/checkpoint.js';
import { readHfModel } from '../../io/hf.js';

export const importCommand: CommandSpec = {
  name: 'import',
  summary: 'read a Hugging Face LLaMA model directory (safetensors) into a minigpt checkpoint',
  usage: 'minigpt import --from HF_DIR --out DIR [--context N] [--force]',
  flags: {
    from: { type: 'string', value: 'HF_DIR', description: 'Hugging Face model directory: config.json, tokenizer.json, model.safetensors (or shards + index)' },
    out: { type: 'string', value: 'DIR', description: 'checkpoint directory to write' },
    context: { type: 'int', min: 1, value: 'N', description: 'use at most N positions (default: the model\'s max_position_embeddings; a long one, as Qwen2\'s 32768, sizes evaluation windows and training batches)' },
    force: { type: 'boolean', description: 'replace --out if it already holds a checkpoint (its weights and training state are lost)' },
  },
  details: [
    'Reads LlamaForCausalLM (ArceeForCausalLM with a GELU MLP, Qwen2ForCausalLM with its q, k and v biases) in F32,',
    'F16 or BF16, single-file or sharded.',
    'The tokenizer comes from tokenizer.json: GPT-2\'s vocabulary becomes "gpt2", a minigpt-style byte-level BPE "bpe",',
    'minigpt\'s character export "char", any other byte-level BPE split as GPT-2 splits (digits one by one first, as',
    'SmolLM\'s, or not) or as Qwen2 or Llama 3 split "hf-bpe" with the file\'s ids (a normalizer such as Qwen2\'s NFC',
    'becomes the cleaning prompts get; added tokens that are not special, as Qwen2.5\'s <tool_call>, are found in any',
    'text as the tokenizers library finds them), a SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama,',
    'Mistral, llama2.c\'s TinyStories models) "sp-bpe", its "<s>" put before every prompt, scored text and training',
    'document. Other biases, rope scaling, sliding-window attention, other architectures and tokenizers (a byte-level',
    'BPE whose template adds a BOS token, as Llama 3\'s file does) are refused.',
    '',
    'Examples:',
    '  minigpt import --from ddp-out/final --out runs/imported',
    '  minigpt import --from SmolLM-135M --out runs/smollm      # a folder downloaded from the Hugging Face Hub',
    '  minigpt import --from stories15M --out runs/stories      # llama2.c\'s 15M TinyStories model in HF format',
    '  minigpt import --from Qwen2.5-0.5B --out runs/qwen --context 2048   # fewer than its 32768 positions',
    '  minigpt sample --ckpt runs/imported --prompt "Once upon a time"',
  ].join('\n'),
  async run(v) {
    check(typeof v.from === 'string', 'give --from HF_DIR (the Hugging Face model directory to read)');
    check(typeof v.out === 'string', 'give --out DIR (the checkpoint directory to write)');
    const from = await stat(v.from).catch(() => null);
    const want = 'a Hugging Face model directory (config.json + *.safetensors)';
    check(from !== null, `--from ${v.from} does not exist; --from must be ${want}`);
    check(from.isDirectory(), `--from ${v.from} is a file; --from must be ${want}`);
    await checkCheckpointOut(v.out, Boolean(v.force));
    const { checkpoint, dtype } = await readHfModel(v.from, v.context === undefined ? {} : { context: v.context as number });
    await saveCheckpoint(v.out, checkpoint, { dtype });
    const c = checkpoint.config;
    console.log(`imported ${v.from} -> ${v.out}: ${c.n_layers} layer${c.n_layers === 1 ? '' : 's'}, d_model ${c.d_model}, ${c.n_heads} heads (${c.n_kv_heads} kv), vocab ${c.vocab_size}, context ${c.context}, ${checkpoint.tokenizer.kind} tokenizer, ${dtype} weights`);
  },
};
