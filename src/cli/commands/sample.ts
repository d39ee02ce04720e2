import { check } from '../../errors.js';
import { encodeUserText } from '../../data/tokenizer.js';
import { BACKEND_FLAGS, type CommandSpec } from '../args.js';
import { SAMPLE_ON_CPU_MAX_PARAMS, loadModel } from '../../inference.js';
import { generate } from '../../generate.js';
import { findCheckpointDir, latestRun } from '../../train/train.js';
import { onOutputClosed } from '../output.js';

/** Longest stretch of generation without a turn of the event loop (for Ctrl-C and closed pipes). */
const YIELD_MS = 25;

export const sampleCommand: CommandSpec = {
  name: 'sample',
  summary: 'generate text from a checkpoint, streamed as it comes (KV cache)',
  usage: 'minigpt sample [--ckpt DIR] [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]',
  flags: {
    ckpt: { type: 'string', value: 'DIR', description: 'run or checkpoint directory, or a .zip of a checkpoint (default: the latest run in ./runs)' },
    prompt: { type: 'string', value: 'TEXT', description: 'text to continue', default: '' },
    tokens: { type: 'int', min: 1, value: 'N', description: 'tokens to generate', default: 200 },
    temperature: { type: 'number', min: 0, value: 'T', description: 'sampling temperature (0: greedy)', default: 0.8 },
    'top-k': { type: 'int', min: 0, value: 'K', description: 'sample from the K most likely tokens (0: all)', default: 0 },
    'top-p': { type: 'number', above: 0, max: 1, value: 'P', description: 'nucleus sampling: smallest set with probability P (1: all)', default: 1 },
    seed: { type: 'int', min: 0, value: 'S', description: 'random seed', default: 0 },
    ...BACKEND_FLAGS,
  },
  details: `With --backend auto, a model of up to ${SAMPLE_ON_CPU_MAX_PARAMS / 1e6}M parameters samples on the cpu backend: one token at a time, it is\nfaster there than on a GPU, where every token waits for a readback.\n\nA prompt longer than the context is conditioned on its last context tokens. --tokens may go past\nthe context: when it fills up, generation restarts the KV cache from the last half-context of\ntokens (so long outputs differ from a one-token sliding window, as in transformers or llama.cpp).\n\nExample:\n  minigpt sample --ckpt runs/run-20261127-120000 --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40`,
  async run(v) {
    const dir = await findCheckpointDir(typeof v.ckpt === 'string' ? v.ckpt : await latestRun());
    const loaded = await loadModel(dir, { backend: v.backend as string, threads: v.threads as number | undefined, forSampling: true });
    const prompt = v.prompt as string;
    const ids = encodeUserText(loaded.tokenizer, prompt, '--prompt', 'the model knows only the characters it was trained on; leave it out of the prompt');
    check(prompt.length === 0 || ids.length > 0, 'the prompt encodes to no tokens');
    const context = loaded.model.config.context;
    if (ids.length > context) process.stderr.write(`minigpt: note: the prompt has ${ids.length} tokens; the model sees only its last ${context} (its context)\n`);
    const controller = new AbortController();
    // Ctrl-C stops generation after the current token (exit 130); a second one exits at once.
    let interrupted = false;
    const onSigint = (): void => {
      if (interrupted) process.exit(130);
      interrupted = true;
      controller.abort();
    };
    process.on('SIGINT', onSigint);
    // A reader that went away (`| head`) stops generation too, quietly (exit 0).
    const offClosed = onOutputClosed(() => controller.abort());
    process.stdout.write(prompt);
    try {
      // The model runs on promises that resolve without the event loop, so signals and pipe
      // errors would wait until the end: give the loop a turn every YIELD_MS of generation.
      let lastYield = performance.now();
      for await (const t of generate(loaded, prompt, {
        maxTokens: v.tokens as number, temperature: v.temperature as number, topK: v['top-k'] as number,
        topP: v['top-p'] as number, seed: v.seed as number, signal: controller.signal,
      })) {
        process.stdout.write(t.text);
        if (performance.now() - lastYield >= YIELD_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          lastYield = performance.now();
          if (controller.signal.aborted) break;
        }
      }
    } finally {
      offClosed();
      process.off('SIGINT', onSigint);
      process.stdout.write('\n');
    }
    return interrupted ? 130 : 0;
  },
};
