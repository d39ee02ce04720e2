import { createInterface } from 'node:readline';
import { MinigptError, check } from '../../errors.js';
import { BACKEND_FLAGS, flagsOnCommandLine, type CommandSpec } from '../args.js';
import { SAMPLE_ON_CPU_MAX_PARAMS, loadModel, type LoadedModel } from '../../inference.js';
import { checkPrompt, generate, preparePrompt, type SampleOptions } from '../../generate.js';
import { findCheckpointDir, latestRun } from '../../train/train.js';
import { onOutputClosed } from '../output.js';
import { eventLoopTurns } from '../../util/runtime.js';
import type { BackendName } from '../../backend/index.js';

export const sampleCommand: CommandSpec = {
  name: 'sample',
  summary: 'generate text from a checkpoint, streamed as it comes (KV cache)',
  usage: 'minigpt sample [--ckpt DIR] [--prompt TEXT [--count N] | --interactive] [--tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop TEXT] [--ignore-eot]',
  flags: {
    ckpt: { type: 'string', value: 'DIR', description: 'run or checkpoint directory, or a .zip of a checkpoint (default: the last run trained from this folder, as runs/latest records it, else the newest run in ./runs)' },
    prompt: { type: 'string', value: 'TEXT', description: 'text to continue', default: '', allowEmpty: true },
    tokens: { type: 'int', min: 1, value: 'N', description: 'most tokens to generate (fewer where the model ends the text)', default: 200 },
    temperature: { type: 'number', min: 0, value: 'T', description: 'sampling temperature (0: greedy)', default: 0.8 },
    'top-k': { type: 'int', min: 0, value: 'K', description: 'sample from the K most likely tokens (0: all)', default: 0 },
    'top-p': { type: 'number', above: 0, max: 1, value: 'P', description: 'nucleus sampling: smallest set with probability P (1: all)', default: 1 },
    seed: { type: 'int', min: 0, value: 'S', description: 'random seed', default: 0 },
    count: { type: 'int', min: 1, max: 10000, value: 'N', description: 'samples of the prompt, the model loaded once: sample n uses --seed + n; a line "---" between them', default: 1 },
    interactive: { type: 'boolean', description: 'read prompts from stdin, one per line, and answer each with a sample (the model is loaded once)' },
    stop: { type: 'string', value: 'TEXT', repeatable: true, description: 'end the sample where the generated text reaches TEXT, which is not written (in bash, --stop $\'\\n\\n\' stops at a blank line)' },
    'ignore-eot': { type: 'boolean', description: 'go on when the model samples <|endoftext|> (or its own end-of-text token; default: stop there, as transformers and llama.cpp do)' },
    'allow-special': { type: 'boolean', description: 'special tokens\' text in the prompt (<|endoftext|>, a chat model\'s <|im_start|>) becomes those tokens, as transformers encodes it (default: plain text)' },
    ...BACKEND_FLAGS,
  },
  details: `With --backend auto, a model of up to ${SAMPLE_ON_CPU_MAX_PARAMS / 1e6}M parameters samples on the cpu backend: one token at a time, it is\nfaster there than on a GPU, where every token waits for a readback.\n\nA model whose tokenizer has <|endoftext|> (GPT-2, a trained BPE, an imported model whose tokenizer has it;\nan imported model's own end-of-text token where its config names another) ends a sample when it samples that token, with a note on stderr; --ignore-eot writes it and goes on.\nChar models never sample it. A tokenizer that starts every text with a token (an imported Llama 2-style one: <s>) puts it\nbefore the prompt, and a sample ends where the model writes it too (a new text starts), as llama2.c's does.\n\nThe prompt is cleaned as the run's training text was: a run trained with --clean lowercase gets a\nlowercased prompt (a note says so).\n\nA prompt longer than the context is conditioned on its last context tokens. --tokens may go past\nthe context: when it fills up, generation restarts the KV cache from the last half-context of\ntokens (so long outputs differ from a one-token sliding window, and from transformers, whose\ngenerate runs on past the model's context).\n\n--interactive reads one prompt per line (from the terminal, or piped: one sample per line of a\nfile); the n-th prompt that gets a sample (from 0) uses --seed + n. In a terminal, Ctrl-C stops the sample being\nwritten (at the prompt it ends the session) and Ctrl-D ends; with piped prompts, Ctrl-C ends the session (exit 130).\nA prompt it cannot encode is an error line and the session goes on; piped, the exit status is then 1.\n\nExamples:\n  minigpt sample --ckpt runs/run-20261127-120000 --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40\n  minigpt sample --prompt "The " --count 5 --tokens 60\n  minigpt sample --prompt "ROMEO:" --stop $'\\n\\n' --tokens 500      # one speech\n  minigpt sample --interactive --tokens 100`,
  async run(v) {
    check(!(v.interactive && flagsOnCommandLine().has('prompt')), '--prompt goes without --interactive (type the prompts at the > instead)');
    check(!(v.interactive && flagsOnCommandLine().has('count')), '--count goes without --interactive (each prompt you type gets one sample; type it again for another)');
    const dir = await findCheckpointDir(typeof v.ckpt === 'string' ? v.ckpt : await latestRun());
    const loaded = await loadModel(dir, { backend: v.backend as BackendName, threads: v.threads as number | undefined, forSampling: true });
    const opts = {
      maxTokens: v.tokens as number, temperature: v.temperature as number, topK: v['top-k'] as number,
      topP: v['top-p'] as number, seed: v.seed as number, stopAtEndOfText: !v['ignore-eot'], allowSpecial: Boolean(v['allow-special']),
      ...(Array.isArray(v.stop) ? { stop: v.stop } : {}),
    };
    // Sample n uses --seed + n: the last one must still be an exact whole number.
    check(opts.seed <= Number.MAX_SAFE_INTEGER - ((v.count as number) - 1), () => `--seed ${opts.seed} with --count ${v.count as number}: the last sample's seed (--seed + ${(v.count as number) - 1}) would pass ${Number.MAX_SAFE_INTEGER}; use a smaller --seed`);
    if (v.interactive) return interactive(loaded, opts);
    const prompt = promptNoting(loaded, v.prompt as string, '--prompt', opts.allowSpecial);
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
    try {
      for (let n = 0; n < (v.count as number) && !controller.signal.aborted; n++) {
        if (n > 0) process.stdout.write('---\n');
        await streamSample(loaded, prompt, { ...opts, seed: opts.seed + n, signal: controller.signal });
      }
    } finally {
      offClosed();
      process.off('SIGINT', onSigint);
    }
    return interrupted ? 130 : 0;
  },
};

/**
 * The prompt to generate from: cleaned as the training text was (preparePrompt), then checked
 * (checkPrompt); their notes (lowercased, longer than the context) on stderr.
 */
function promptNoting(loaded: LoadedModel, typed: string, what: string, allowSpecial: boolean): string {
  const { prompt, note } = preparePrompt(loaded, typed);
  for (const n of [note, checkPrompt(loaded, prompt, what, allowSpecial)]) if (n) process.stderr.write(`minigpt: note: ${n}\n`);
  return prompt;
}

/**
 * Writes the prompt and then each generated token to stdout as it comes, and a newline at the end;
 * a note on stderr where the model ended the text.
 */
async function streamSample(loaded: LoadedModel, prompt: string, opts: SampleOptions): Promise<void> {
  process.stdout.write(prompt);
  let endedAfter = -1, stoppedAfter = -1, endToken = '';
  try {
    // generate() lets the event loop turn every 25 ms, so Ctrl-C, keys and pipe errors are heard
    // within moments; an abort ends the iterator at its next token, or with one more that brings
    // out text it held back (a --stop text's possible start, a character's first bytes).
    let n = 0;
    for await (const t of generate(loaded, prompt, opts)) {
      if (t.endOfText) {
        // Its text is what was held back (a possible --stop start, a character's first bytes).
        process.stdout.write(t.text);
        endedAfter = n;
        endToken = loaded.tokenizer.decode([t.id]); // its end-of-text token, or the "<s>" that starts another text
        break;
      }
      n++;
      process.stdout.write(t.text);
      if (t.stop !== undefined) {
        stoppedAfter = n;
        break;
      }
    }
  } finally {
    process.stdout.write('\n');
  }
  if (stoppedAfter >= 0) process.stderr.write(`minigpt: note: the text reached --stop after ${stoppedAfter} token${stoppedAfter === 1 ? '' : 's'}\n`);
  if (endedAfter >= 0) process.stderr.write(`minigpt: note: the model ended the text (${endToken}) after ${endedAfter} token${endedAfter === 1 ? '' : 's'}; --ignore-eot goes on past it\n`);
}

/**
 * `--interactive`: one prompt per line from stdin, each answered with a sample, the model loaded
 * once. Prompt n samples with seed + n, so the same prompt twice gives two samples. In a
 * terminal, Ctrl-C stops the sample being written; at the prompt, Ctrl-C or Ctrl-D (end of input)
 * ends the session. With piped prompts, Ctrl-C (SIGINT) ends the session (exit 130), as does a
 * reader that closes the output (exit 0): the lines readline has already read are not sampled. A
 * prompt the tokenizer cannot encode is reported and the session goes on.
 */
async function interactive(loaded: LoadedModel, opts: SampleOptions): Promise<number> {
  const terminal = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal, prompt: '> ' });
  let current: AbortController | null = null;
  let interrupted = false;
  let ended = false; // no more prompts, even those readline has read already
  const onInterrupt = (): void => {
    const sampling = current !== null;
    current?.abort();
    if (!sampling || !terminal) {
      interrupted = true;
      ended = true;
      rl.close();
    }
  };
  // A terminal's Ctrl-C reaches readline (raw mode) as its SIGINT event; a signal from elsewhere reaches the process.
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);
  const offClosed = onOutputClosed(() => {
    ended = true;
    current?.abort();
    rl.close();
  });
  if (terminal) {
    process.stderr.write(`${describeModel(loaded)}: type a prompt and press Enter (an empty line samples from nothing); Ctrl-D ends\n`);
    rl.prompt();
  }
  let n = 0, failed = 0;
  try {
    const turn = eventLoopTurns();
    for await (const line of rl) {
      // Lines readline has read come as promises that resolve at once: the event loop must turn
      // for a SIGINT or a closed output to be heard between short samples.
      await turn();
      if (ended) break;
      try {
        const prompt = promptNoting(loaded, line, 'the prompt', opts.allowSpecial ?? false);
        current = new AbortController();
        await streamSample(loaded, prompt, { ...opts, seed: ((opts.seed ?? 0) + n) % (Number.MAX_SAFE_INTEGER + 1), signal: current.signal });
        n++;
      } catch (e) {
        if (!(e instanceof MinigptError)) throw e;
        process.stderr.write(`minigpt: error: ${e.message}\n`);
        failed++;
      } finally {
        current = null;
      }
      if (terminal) rl.prompt();
    }
  } finally {
    offClosed();
    process.off('SIGINT', onInterrupt);
    rl.close();
  }
  if (terminal && !interrupted) process.stdout.write('\n');
  // Piped prompts: a script learns from the exit status that some got no sample.
  return interrupted ? 130 : failed > 0 && !terminal ? 1 : 0;
}

function describeModel(loaded: LoadedModel): string {
  const c = loaded.model.config;
  return `d_model ${c.d_model}, ${c.n_layers} layer${c.n_layers === 1 ? '' : 's'}, context ${c.context}, vocabulary of ${loaded.tokenizer.vocabSize}`;
}
