/**
 * Text generation with a KV cache: temperature, top-k and top-p (nucleus) sampling, streamed
 * token by token as an async iterator.
 */
import { check, checkAbortSignal, checkOptionNames, adviceFor, shownValue } from './errors.js';
import { createKvCache, forwardCached, type KvCache, type Model } from './model/model.js';
import { checkLoaded, type LoadedModel } from './inference.js';
import { createRng } from './util/random.js';
import { createStreamingDecoder, encodeUserText, endOfTextToken, startOfTextToken, textStartIds } from './data/tokenizer.js';
import { cleanText } from './data/text.js';
import { eventLoopTurns } from './util/runtime.js';

/** How generate samples; every option is optional. */
export interface SampleOptions {
  /** Most tokens to generate (default 200; 0 or more); fewer when <|endoftext|> or `signal` ends it. */
  maxTokens?: number;
  /** Divides the logits before sampling (default 0.8); 0 means greedy (always the most likely token). */
  temperature?: number;
  /**
   * Keep only the k most likely tokens (default 0: all). Exactly k: of tokens with equal logits
   * the lower ids rank first (transformers keeps every token tied with the k-th).
   */
  topK?: number;
  /**
   * Keep the smallest set of tokens whose probability reaches p, after topK (default 1: all; in
   * (0, 1]); the token that crosses p is kept, as in transformers (of equal ones, the lower id).
   */
  topP?: number;
  /** Seed of the random numbers sampling draws (default 0: every call without one draws the same numbers). */
  seed?: number;
  /**
   * Checked before each token: once aborted, generation ends without an error. Where text is held
   * back then (a stop text's possible start, a character's first bytes), one more token is
   * generated to bring it out, as the last token does.
   */
  signal?: AbortSignal;
  /**
   * End when the model samples its tokenizer's <|endoftext|> (an imported model's own end-of-text
   * token where it names another: endOfTextToken; default true), as transformers and
   * llama.cpp end at their end-of-sequence token: the last token yielded is then that one, with
   * `endOfText` set; its text is none of its own, only what earlier tokens left held back (the
   * start of a stop text, an unfinished character as U+FFFD), so join every token's text. false:
   * go on past it (its text, "<|endoftext|>", is yielded).
   * A char model never samples its <|endoftext|>, so this changes nothing for it. A tokenizer that
   * starts every text with a token (sp-bpe's "<s>", textStartIds) ends at that token too.
   */
  stopAtEndOfText?: boolean;
  /**
   * Text that ends generation where it appears in the generated text, as llama.cpp's reverse
   * prompts and transformers' stop_strings do, except that text which begins in the prompt does
   * not count (transformers counts it) and the stop text is not yielded (transformers keeps it):
   * the text before it is yielded and the last token is marked with `stop`. While the text generated so far
   * ends with the start of a stop text, that part is held back, so a token's text may come out with
   * a later token's (all of it by the last token).
   */
  stop?: string | readonly string[];
  /**
   * The prompt's special-token text ("<|im_start|>", "<|endoftext|>") becomes those tokens, as
   * transformers' tokenizers encode it (default false: it is ordinary text, so typed text cannot
   * inject a special token). For prompts in a chat model's format.
   */
  allowSpecial?: boolean;
}

/** Every option generate takes (the Record type keeps it complete). */
const SAMPLE_OPTION_NAMES: Record<keyof SampleOptions, true> = {
  maxTokens: true, temperature: true, topK: true, topP: true, seed: true, signal: true, stopAtEndOfText: true, stop: true, allowSpecial: true,
};

/** One token generate yields. */
export interface GeneratedToken {
  /** The sampled token id. */
  id: number;
  /** The text this token adds (may be '' while a multi-byte character is incomplete; the last token flushes it, an unfinished character as U+FFFD). */
  text: string;
  /** Set on the <|endoftext|> that ended generation (see SampleOptions.stopAtEndOfText). */
  endOfText?: true;
  /** Set on the token that completed a stop text (SampleOptions.stop): the one that ended generation. */
  stop?: string;
}

/**
 * Picks a token id from logits[V] with the given sampling rules. `order` and `probs` are scratch of
 * length V. Candidates are taken in order of probability (ties: the lower id first) from a heap,
 * only as far as top-k, top-p and the draw `u` need: a GPT-2 vocabulary of 50,257 is not sorted
 * whole for every token (that cost 17-22 ms a token).
 */
export function sampleToken(logits: Float32Array, opts: Required<Pick<SampleOptions, 'temperature' | 'topK' | 'topP'>>, u: number, order: Int32Array, probs: Float64Array): number {
  const V = logits.length;
  if (opts.temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  let all = 0;
  for (let i = 0; i < V; i++) { probs[i] = Math.exp((logits[i] - max) / opts.temperature); order[i] = i; all += probs[i]; }
  // A max-heap of ids in order[0, size); each pop moves the next most likely id to order[size].
  const before = (a: number, b: number): boolean => probs[a] > probs[b] || (probs[a] === probs[b] && a < b);
  const siftDown = (at: number, size: number): void => {
    const id = order[at];
    for (;;) {
      let child = 2 * at + 1;
      if (child >= size) break;
      if (child + 1 < size && before(order[child + 1], order[child])) child++;
      if (!before(order[child], id)) break;
      order[at] = order[child];
      at = child;
    }
    order[at] = id;
  };
  for (let i = (V >> 1) - 1; i >= 0; i--) siftDown(i, V);
  let taken = 0;
  /** The i-th most likely id (i from 0), popping the heap as far as needed. */
  const ranked = (i: number): number => {
    while (taken <= i) {
      const size = V - taken, top = order[0];
      order[0] = order[size - 1];
      order[size - 1] = top;
      siftDown(0, size - 1);
      taken++;
    }
    return order[V - 1 - i];
  };
  let keep = opts.topK > 0 ? Math.min(opts.topK, V) : V;
  let total = 0;
  if (keep < V) for (let i = 0; i < keep; i++) total += probs[ranked(i)];
  else total = all;
  if (opts.topP < 1) {
    let cum = 0;
    for (let i = 0; i < keep; i++) {
      cum += probs[ranked(i)] / total;
      if (cum >= opts.topP) { keep = i + 1; break; }
    }
    total = 0;
    for (let i = 0; i < keep; i++) total += probs[ranked(i)];
  }
  let r = u * total;
  for (let i = 0; i < keep; i++) {
    r -= probs[ranked(i)];
    if (r < 0) return ranked(i);
  }
  return ranked(keep - 1);
}

/**
 * The prompt as the model should see it: cleaned as its training text was (loaded.clean; a model
 * trained on lowercased text gets a lowercased prompt), and a note naming it `what` when that
 * changed what was typed ('' otherwise). `minigpt sample` and the page generate from, and show, the cleaned prompt.
 */
export function preparePrompt(loaded: LoadedModel, prompt: string, what = 'the prompt'): { prompt: string; note: string } {
  if (!loaded.clean) return { prompt, note: '' };
  const cleaned = cleanText(prompt, loaded.clean);
  const lowered = Boolean(loaded.clean.lowercase) && cleaned !== cleanText(prompt, { ...loaded.clean, lowercase: false });
  return { prompt: cleaned, note: lowered ? `${what} is lowercased, as the model's training text was (${adviceFor('--clean lowercase', 'clean: { lowercase: true }')})` : '' };
}

/**
 * Checks, before generating, that a prompt someone typed encodes with the model's tokenizer (a
 * one-line error naming `what` and the character it lacks) and to some tokens. Returns a note for
 * a prompt longer than the context ('' for any other): `minigpt sample` and the page show it.
 */
export function checkPrompt(loaded: LoadedModel, prompt: string, what: string, allowSpecial = false): string {
  const ids = encodeUserText(loaded.tokenizer, prompt, what, 'the model knows only the characters it was trained on; leave it out of the prompt', allowSpecial ? { allowedSpecial: 'all' } : {});
  check(prompt.length === 0 || ids.length > 0, 'the prompt encodes to no tokens');
  const context = loaded.model.config.context, count = ids.length + textStartIds(loaded.tokenizer).length;
  return count > context ? `the prompt has ${count} tokens; the model sees only its last ${context} (its context)` : '';
}

/**
 * Generates text after `prompt`. A prompt longer than the context is conditioned on its last
 * `context` tokens. When the context fills up, the cache restarts from the last half-context of
 * tokens, so generation can go on past the context length (each restart costs one forward pass
 * over half a context instead of one token, where a sliding window would recompute every step).
 */
export async function* generate(loaded: LoadedModel, prompt: string, opts: SampleOptions = {}): AsyncGenerator<GeneratedToken, void, undefined> {
  checkLoaded(loaded, 'generate');
  check(typeof prompt === 'string', () => `the prompt must be a string (got ${prompt === null ? 'null' : typeof prompt})`);
  checkOptionNames(opts, Object.keys(SAMPLE_OPTION_NAMES), 'generate');
  const { model, tokenizer } = loaded;
  const c = model.config;
  const temperature = opts.temperature ?? 0.8, topK = opts.topK ?? 0, topP = opts.topP ?? 1, maxTokens = opts.maxTokens ?? 200;
  check(typeof temperature === 'number' && temperature >= 0 && Number.isFinite(temperature), () => `temperature must be a number, 0 or more (got ${shownValue(temperature)})`);
  check(Number.isInteger(topK) && topK >= 0, () => `topK must be a whole number, 0 for no limit (got ${shownValue(topK)})`);
  check(typeof topP === 'number' && topP > 0 && topP <= 1, () => `topP must be a number in (0, 1] (got ${shownValue(topP)})`);
  check(Number.isInteger(maxTokens) && maxTokens >= 0, () => `maxTokens must be a whole number, 0 or more (got ${shownValue(maxTokens)})`);
  check(opts.seed === undefined || (Number.isSafeInteger(opts.seed) && opts.seed >= 0), () => `seed must be a whole number, 0 or more (got ${shownValue(opts.seed)})`);
  checkAbortSignal(opts.signal);
  check(opts.stopAtEndOfText === undefined || typeof opts.stopAtEndOfText === 'boolean', () => `stopAtEndOfText must be true or false (got ${shownValue(opts.stopAtEndOfText)})`);
  check(opts.stop === undefined || typeof opts.stop === 'string' || Array.isArray(opts.stop), () => `stop must be a string or an array of strings (got ${shownValue(opts.stop)})`);
  check(opts.allowSpecial === undefined || typeof opts.allowSpecial === 'boolean', () => `allowSpecial must be true or false (got ${shownValue(opts.allowSpecial)})`);
  const stops = opts.stop === undefined ? [] : typeof opts.stop === 'string' ? [opts.stop] : [...opts.stop];
  check(stops.every((t) => typeof t === 'string' && t.length > 0), 'a stop text must be a non-empty string');
  // With no prompt, start from the start-of-text token (the end-of-text token, or an imported
  // model's BOS) where the tokenizer has one (a document start). Not for char models: their
  // "<|endoftext|>" exists only as llama.cpp's end-of-generation token and never occurs in their
  // training text, so as input its embedding is untrained and the first token after it would be
  // noise; they start from id 0 (usually "\n", the lowest character), as they always have.
  // A tokenizer that starts every text with a token (sp-bpe: Llama's "<s>") starts every prompt with it.
  const start = tokenizer.kind === 'char' ? undefined : startOfTextToken(tokenizer)?.[1];
  const textStart = textStartIds(tokenizer);
  const ids = prompt.length > 0 ? [...textStart, ...tokenizer.encode(prompt, opts.allowSpecial ? { allowedSpecial: 'all' } : {})] : textStart.length > 0 ? textStart : [start ?? 0];
  const history = ids.slice(-c.context);
  const rng = createRng(opts.seed ?? 0);
  // A cache holds keys and values for the whole context, and backends free nothing before
  // destroy(): each model keeps its caches for the next generate. A prompt goes in in pieces of
  // at most PROMPT_CHUNK tokens, so the working buffers stay small for a long context and a large
  // vocabulary (Qwen2's 32768 x 151936 logits would be 20 GB).
  const idle = idleCaches.get(model) ?? [];
  idleCaches.set(model, idle);
  const cache = idle.pop() ?? createKvCache(model, 1, { chunk: PROMPT_CHUNK });
  cache.length = 0;
  try {
    // Only ids the tokenizer has: a vocab_size padded past the tokenizer (50304 for GPT-2's 50257)
    // has logits for ids that stand for no text.
    let V = Math.min(c.vocab_size, tokenizer.vocabSize);
    // Nor a char model's special tokens (its "<|endoftext|>", the last ids): they never occur in its
    // training text, so it learns never to predict them (what llama.cpp needs of an end-of-generation
    // token), but a model early in training still gives them some probability, and a sample would
    // print "<|endoftext|>" amid the characters. It samples characters only, as before it had one.
    if (tokenizer.kind === 'char' && tokenizer.specialTokens) V = Math.min(V, ...Object.values(tokenizer.specialTokens));
    // A char model's <|endoftext|> is past V (above): it never ends a sample here.
    // A tokenizer that starts every text with a token (sp-bpe's "<s>") ends one there too: a model
    // trained on documents that each start with it (llama2.c's stories) writes it where a text ends.
    const stopIds = opts.stopAtEndOfText === false ? [] : [endOfTextToken(tokenizer)?.[1], ...textStart].filter((id) => id !== undefined);
    const order = new Int32Array(V), probs = new Float64Array(V);
    const decoder = createStreamingDecoder(tokenizer);
    let atTextStart = prompt.length === 0 && tokenizer.kind === 'sp-bpe';
    const sampling = { temperature, topK, topP };

    // With stop texts: the text generated so far, and how much of it has been yielded.
    let out = '', released = 0;
    /** The text a token releases: all of it but the end that could still begin a stop text (all of it when `last`). */
    const release = (text: string, last: boolean): { text: string; stop?: string } => {
      if (stops.length === 0) return { text };
      out += text;
      // A stop text can only begin in what is not yet released (what was released began none).
      let at = -1, hit = '';
      for (const t of stops) {
        const i = out.indexOf(t, released);
        if (i >= 0 && (at < 0 || i < at)) { at = i; hit = t; }
      }
      if (at >= 0) {
        const before = out.slice(released, at);
        released = out.length;
        return { text: before, stop: hit };
      }
      let hold = 0;
      if (!last) {
        for (const t of stops) {
          for (let k = Math.min(t.length - 1, out.length - released); k > hold; k--) {
            if (out.endsWith(t.slice(0, k))) { hold = k; break; }
          }
        }
      }
      const piece = out.slice(released, out.length - hold);
      released = out.length - hold;
      return { text: piece };
    };

    let pending = history.slice();
    // Timers, I/O and a page's rendering get a turn now and then (an abort from a timer included):
    // on the cpu backend a read resolves at once and nothing else would run until the end.
    const turn = eventLoopTurns();
    for (let n = 0; n < maxTokens; n++) {
      await turn();
      // Aborted: at once, unless text is held back, which one more token (the last) brings out.
      const aborted = Boolean(opts.signal?.aborted);
      if (aborted && released === out.length && !decoder.pending()) return;
      if (cache.length + pending.length > c.context) {
        cache.length = 0;
        pending = history.slice(-Math.max(1, Math.floor(c.context / 2)));
      }
      let logits = null;
      for (let at = 0; at < pending.length; at += cache.chunk) logits = forwardCached(model, cache, pending.slice(at, at + cache.chunk), Math.min(cache.chunk, pending.length - at));
      // Only the last position's logits are needed: read back that row alone.
      const lastRow = (pending.length - 1) % cache.chunk;
      const last = await model.backend.read(model.backend.view(logits!, lastRow * c.vocab_size, V));
      const id = sampleToken(last, sampling, rng.next(), order, probs);
      if (stopIds.includes(id)) {
        // Text held back (a character's first bytes, a stop text's start) is the text's end.
        yield { id, text: release(decoder.flush(), true).text, endOfText: true };
        return;
      }
      history.push(id);
      if (history.length > c.context) history.shift();
      pending = [id];
      // The last token brings whatever is held back: the generated text joined is decode(ids), an
      // unfinished character as U+FFFD, as transformers' streamer ends.
      const final = n === maxTokens - 1 || aborted;
      let text = decoder.push(id) + (final ? decoder.flush() : '');
      if (atTextStart && text !== '') {
        // An sp-bpe token carries the "▁" added in front of a text: from an empty prompt, the text's
        // first token prints without it, as its decode drops it.
        if (text.startsWith(' ')) text = text.slice(1);
        atTextStart = false;
      }
      const piece = release(text, final);
      if (piece.stop !== undefined) {
        yield { id, text: piece.text, stop: piece.stop };
        return;
      }
      yield { id, text: piece.text };
      if (final) return;
    }
  } finally {
    idle.push(cache);
  }
}

/** KV caches of each model that no generate is using now (one per generate running at once, at most). */
const idleCaches = new WeakMap<Model, KvCache[]>();
/** The most prompt tokens generate runs through the model in one call (see createKvCache's chunk). */
const PROMPT_CHUNK = 256;
