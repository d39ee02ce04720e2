/** Loading a checkpoint and running the model on token ids: the library's front door. */
import { cpuBackendSupported, createBackend, type BackendName } from './backend/index.js';
import type { Backend } from './backend/types.js';
import { check, checkOptionNames, checkWhole, shownValue } from './errors.js';
import { loadCheckpoint, recordedClean, type Checkpoint } from './io/checkpoint.js';
import { createModel, forward, setWeights, type Model } from './model/model.js';
import { paramLayout } from './model/params.js';
import type { ModelConfig } from './model/config.js';
import { bitsPerByte, targetBytes, textByteCounts, textStartIds, type Tokenizer } from './data/tokenizer.js';
import type { CleanOptions } from './data/text.js';
import { checkNodeOnly } from './util/runtime.js';

/** A checkpoint's model on a backend, with its tokenizer: what loadModel returns. */
export interface LoadedModel {
  /** The model with the checkpoint's config and weights, on the backend loadModel chose. */
  model: Model;
  /** The checkpoint's tokenizer. */
  tokenizer: Tokenizer;
  /**
   * How the training text was cleaned (lowercased, say), when the checkpoint records it.
   * preparePrompt (generate.ts) cleans a prompt or text the same way; generate and scoreText
   * use their text as given.
   */
  clean?: Partial<CleanOptions>;
}

/**
 * A clear error where a call that needs a loaded model (loadModel's result: a model on a backend
 * and its tokenizer) gets something else, most likely a checkpoint from loadCheckpoint.
 */
export function checkLoaded(loaded: LoadedModel, what: string): void {
  const l = loaded as Partial<LoadedModel> & { weights?: unknown } | null | undefined;
  check(
    typeof l === 'object' && l !== null && typeof l.model === 'object' && l.model !== null && typeof l.tokenizer === 'object' && l.tokenizer !== null,
    () => `${what} needs a loaded model, { model, tokenizer } as loadModel(dir) gives it${l && typeof l === 'object' && 'weights' in l ? ' (this is a checkpoint from loadCheckpoint: its files, not a model on a backend)' : ''}`,
  );
}

/**
 * Sampling (batch 1, one token at a time) is latency-bound on a GPU: every token waits for a
 * readback, 216-758 tokens/s on an H200 (BENCHMARKS.md), while the cpu backend reads a small
 * model's weights faster (5.9k tokens/s for the default model on 2 cores, 810 for the 14M
 * parameters of the bpe config; BENCHMARKS.md). So `auto` samples models up to this many parameters on the cpu backend.
 */
export const SAMPLE_ON_CPU_MAX_PARAMS = 8_000_000;

/** The backend name to sample `config` with: `auto` becomes `cpu` for a model small enough (see SAMPLE_ON_CPU_MAX_PARAMS). */
export function samplingBackendName(name: BackendName, config: ModelConfig): BackendName {
  return name === 'auto' && paramLayout(config).size <= SAMPLE_ON_CPU_MAX_PARAMS && cpuBackendSupported() ? 'cpu' : name;
}

/** Options of loadModel. */
export interface LoadModelOptions {
  /** A backend name (default 'auto': the fastest available), or a backend you made (the model uses it; release it with its destroy()). A backend keeps every buffer made on it until destroy(), so loading model after model onto one backend grows its memory each time. */
  backend?: Backend | BackendName;
  /** Threads for the cpu backend (default: all cores). */
  threads?: number;
  /** Pick the fastest backend for batch-1 sampling instead (the cpu backend for a small model, even beside a GPU). */
  forSampling?: boolean;
}

/**
 * Loads the checkpoint in `dir` onto a backend (by default the fastest available; with
 * `forSampling`, the fastest for batch-1 sampling: the cpu backend for a small model). The model
 * holds its backend's threads and memory until `loaded.model.backend.destroy()` (a process can
 * exit without it: the cpu backend's threads do not keep it alive).
 */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  checkNodeOnly('loadModel()');
  check(typeof dir === 'string', () => `loadModel needs a checkpoint path (got ${shownValue(dir)})`);
  checkOptionNames(opts, ['backend', 'threads', 'forSampling'], 'loadModel');
  checkWhole(opts.threads, 'threads', 1);
  const ckpt = await loadCheckpoint(dir);
  const name = opts.backend ?? 'auto';
  const backend = typeof name === 'object' ? name : await createBackend(opts.forSampling ? samplingBackendName(name, ckpt.config) : name, { threads: opts.threads });
  const model = createModel(backend, ckpt.config);
  setWeights(model, ckpt.weights);
  const clean = recordedClean(ckpt);
  return { model, tokenizer: ckpt.tokenizer, ...(clean ? { clean } : {}) };
}

/** Token ids the model can run on: some, each in the vocabulary, and (unless `anyLength`) within the context. */
function checkIds(model: Model, ids: ArrayLike<number>, anyLength = false): void {
  check(typeof model?.config === 'object' && typeof model.backend === 'object', () => `expected a Model (loadModel's result has it as .model; got ${'tokenizer' in Object(model) ? 'a LoadedModel' : shownValue(model)})`);
  const { context, vocab_size } = model.config;
  check(ids.length > 0, 'no tokens to run the model on');
  check(anyLength || ids.length <= context, `${ids.length} tokens is longer than the model's context of ${context}; shorten the input`);
  for (let i = 0; i < ids.length; i++) {
    check(Number.isInteger(ids[i]) && ids[i] >= 0 && ids[i] < vocab_size, `token id ${ids[i]} at position ${i} is outside the vocabulary [0, ${vocab_size})`);
  }
}

/** Logits [T, V] (row-major) of one sequence of T token ids. */
export async function computeLogits(model: Model, ids: ArrayLike<number>): Promise<Float32Array> {
  checkIds(model, ids);
  const acts = forward(model, ids, null, 1, ids.length, { forwardOnly: true });
  return model.backend.read(acts.logits);
}

/** What scoreText returns: how likely the model finds each token of the text. */
export interface TextScore {
  /** The text's token ids (special-token text encoded as ordinary text), after the start-of-text token where the tokenizer starts every text with one (sp-bpe). */
  ids: number[];
  /** logprobs[i] = log p(ids[i+1] | ids[0..i]): one fewer than ids. */
  logprobs: number[];
  /** Mean negative log-probability of the scored tokens (all but the first), in nats. */
  loss: number;
  /** The same in bits per UTF-8 byte of the scored tokens' text (all but the first token): comparable across tokenizers; null when they stand for no text. */
  bitsPerByte: number | null;
}

/**
 * Scores `text`: the log-probability of each token given the ones before it. Text longer than the
 * context is scored in windows of `context` tokens that overlap by half: each token after the
 * first window is scored once, seeing at least half a context of the tokens before it.
 */
export async function scoreText(loaded: LoadedModel, text: string): Promise<TextScore> {
  checkLoaded(loaded, 'scoreText');
  check(typeof text === 'string', () => `scoreText needs the text as a string (got ${typeof text})`);
  // A tokenizer that starts every text with a token (sp-bpe: Llama's "<s>") has it before the text, as in training.
  const start = textStartIds(loaded.tokenizer);
  const ids = [...start, ...loaded.tokenizer.encode(text)];
  const own = ids.length - start.length, need = 2 - start.length;
  check(own >= need, `the text is ${own} token${own === 1 ? '' : 's'} long; scoring needs at least ${need}${start.length > 0 ? ' after the start-of-text token' : ''}`);
  const { model } = loaded;
  checkIds(model, ids, true);
  const C = model.config.context, targets = ids.length - 1;
  const logprobs = new Array<number>(targets);
  // Window inputs [start, end) predict targets start+1 .. end; logprobs[p] belongs to target p+1.
  for (let start = 0, scored = 0; scored < targets;) {
    const end = Math.min(start + C, targets);
    forward(model, ids.slice(start, end), ids.slice(start + 1, end + 1), 1, end - start, { forwardOnly: true });
    const losses = await model.backend.read(model.acts!.losses);
    for (let p = scored; p < end; p++) logprobs[p] = -losses[p - start];
    scored = end;
    start = Math.max(0, Math.min(end - Math.floor(C / 2), targets - C));
  }
  const loss = -logprobs.reduce((a, b) => a + b, 0) / logprobs.length;
  const byteCounts = textByteCounts(loaded.tokenizer);
  let bytes = 0;
  for (let i = 1; i < ids.length; i++) bytes += targetBytes(byteCounts, ids[i - 1]!, ids[i]!);
  return { ids, logprobs, loss, bitsPerByte: bitsPerByte(loss, logprobs.length, bytes) };
}
