/**
 * The tokenizer seam (text <-> token ids) and the character-level tokenizer.
 * A tokenizer travels with its model as TokenizerJson; tokenizerFromJson is the one place
 * that turns such JSON back into a tokenizer, so new kinds are added in its switch.
 * The byte-level kinds live in bpe.ts (trained BPE and the shared engine) and gpt2.ts;
 * makeTokenizer builds any kind for training, createStreamingDecoder streams any kind's output.
 */
import { MinigptError, check, checkOptionNames, shownValue } from '../errors.js';
import { END_OF_TEXT, bpeTokenizerFromJsonFields, checkDecodeInput, checkEncodeInput, specialTokenSplitter, splitAtSpecialTokens, toWellFormed, trainBpe, type BpeTrainOptions } from './bpe.js';
import { gpt2Tokenizer, gpt2TokenizerFromJsonFields } from './gpt2.js';
import { hfBpeTokenizerFromJsonFields } from './hf-bpe.js';
import { spBpeTokenizerFromJsonFields } from './sp-bpe.js';

export { END_OF_TEXT } from './bpe.js';

/**
 * hf-bpe: a byte-level BPE imported from a Hugging Face tokenizer.json (hf-bpe.ts); sp-bpe: a
 * SentencePiece-style BPE imported the same way (sp-bpe.ts); neither is made for training.
 */
export type TokenizerKind = 'char' | 'gpt2' | 'bpe' | 'hf-bpe' | 'sp-bpe';
/** The kinds a training run can make (every TokenizerKind but hf-bpe and sp-bpe, which only come with an imported model or a tokenizer.json). */
export const TOKENIZER_KINDS: readonly TokenizerKind[] = ['char', 'gpt2', 'bpe'];

/** A tokenizer as plain JSON; `type` says which kind reads the rest. */
export interface TokenizerJson {
  type: TokenizerKind;
  [field: string]: unknown;
}

/**
 * Ids are positions in `vocab`; with `unk`, the id after the last vocab entry is the unknown token;
 * special tokens (`special`, text -> id) come last. JSON without "special" (written before char
 * tokenizers had an end-of-text token) has none.
 */
export interface CharTokenizerJson extends TokenizerJson {
  type: 'char';
  /** Each entry exactly one Unicode code point; buildCharTokenizer writes them sorted by code point. */
  vocab: string[];
  unk: string | null;
  /** Special tokens, text -> id, ids right after the vocab (and unk); left out when there are none. */
  special?: Record<string, number>;
}

/** Options of Tokenizer.encode. */
export interface EncodeOptions {
  /**
   * Special tokens (such as "<|endoftext|>") to encode as their special id where their text
   * occurs: 'all', or a list of them. By default none is: their text is encoded as ordinary
   * text, so text from users can never inject a special token. Naming one that the tokenizer
   * does not have is an error.
   */
  allowedSpecial?: 'all' | readonly string[];
}

/**
 * Turns text into token ids and back. Make one with makeTokenizer or buildCharTokenizer, or read
 * one back from its JSON with tokenizerFromJson; a loaded model carries its own.
 */
export interface Tokenizer {
  /** Which kind it is; also the `type` of its JSON. */
  readonly kind: TokenizerKind;
  /** Number of token ids, special tokens included: the ids are 0 to vocabSize - 1. */
  readonly vocabSize: number;
  /**
   * The token ids of `text`. Special-token text is encoded as ordinary text unless
   * `opts.allowedSpecial` names it. A char tokenizer without an unknown-character token throws
   * UnknownCharacterError for a character not in its vocabulary; the byte-level kinds (gpt2, bpe,
   * hf-bpe) and sp-bpe encode any text (sp-bpe without byte fallback: its unknown token for a character it lacks).
   */
  encode(text: string, opts?: EncodeOptions): Int32Array;
  /**
   * The text of `ids`, special tokens as their text. An id outside 0 to vocabSize - 1 is a
   * MinigptError; for the byte-level kinds, bytes that do not form whole UTF-8 characters become U+FFFD.
   */
  decode(ids: ArrayLike<number>): string;
  /**
   * Decodes one id, for tokenizers whose every token is whole characters (char). Byte-level
   * tokenizers (gpt2, bpe, hf-bpe, sp-bpe) leave it out, as a token may be part of a character: stream with
   * createStreamingDecoder, which works for every tokenizer.
   */
  decodeToken?(id: number): string;
  /** The UTF-8 bytes of one token, for byte-level tokenizers (gpt2, bpe, hf-bpe) and sp-bpe (a space as a space, a byte token its byte). */
  tokenBytes?(id: number): Uint8Array;
  /**
   * Special tokens, text -> id (gpt2 and bpe: "<|endoftext|>"; char: "<|endoftext|>" when built
   * for training; hf-bpe, sp-bpe: its tokenizer.json's); absent or empty when there are none.
   */
  readonly specialTokens?: Readonly<Record<string, number>>;
  /**
   * hf-bpe, sp-bpe: the special token an imported model ends a text with (its eos_token_id), where that is
   * not "<|endoftext|>"; see endOfTextToken.
   */
  readonly eos?: string;
  /** hf-bpe, sp-bpe: the special token an imported model starts a text from (its bos_token_id), where that is not its end-of-text token. */
  readonly bos?: string;
  /**
   * sp-bpe: the special token every text starts with (Llama's "<s>"): generate, scoreText and
   * training put it before a prompt, a scored text and each document (textStartIds); encode does not.
   */
  readonly addBos?: string;
  /** The tokenizer as plain JSON, which tokenizerFromJson reads back (a checkpoint's tokenizer.minigpt.json). */
  toJSON(): TokenizerJson;
}

/**
 * The special token that ends a text, [text, id]: generation stops where the model samples it and
 * exports name it EOS. An imported model's own (Tokenizer.eos, such as a chat model's
 * "<|im_end|>"), else "<|endoftext|>" where the tokenizer has it. (A char model never samples
 * its <|endoftext|>: see generate.)
 */
export function endOfTextToken(t: Tokenizer): [string, number] | undefined {
  const text = t.eos ?? END_OF_TEXT;
  const id = t.specialTokens?.[text];
  return id === undefined ? undefined : [text, id];
}

/**
 * The special token a text starts from, [text, id] (an empty prompt; exports' BOS): an imported
 * model's own (Tokenizer.bos), else the one the tokenizer starts every text with (Tokenizer.addBos),
 * else the end-of-text token.
 */
export function startOfTextToken(t: Tokenizer): [string, number] | undefined {
  const text = t.bos ?? t.addBos;
  const id = text === undefined ? undefined : t.specialTokens?.[text];
  return id === undefined ? endOfTextToken(t) : [text!, id];
}

/** The ids a text starts with before its own: [the addBos token's id] for a tokenizer that adds one (sp-bpe), else none. */
export function textStartIds(t: Tokenizer): number[] {
  const id = t.addBos === undefined ? undefined : t.specialTokens?.[t.addBos];
  return id === undefined ? [] : [id];
}

export interface CharTokenizerOptions {
  /**
   * A character that stands for every character outside the vocabulary. It gets the last id.
   * Without it, encoding an unknown character is an error.
   */
  unk?: string;
  /**
   * Adds the special token "<|endoftext|>" with the last id (after the characters and the unk
   * token), as the BPE tokenizers have it. Ordinary encoding never produces it, so a model trained
   * with it learns never to predict it: exactly what llama.cpp needs of an end-of-generation token
   * (a GGUF without one makes llama.cpp stop at the character with id 11). Default false here, so
   * this function keeps making one token per character; makeTokenizer('char') (minigpt train,
   * init, prepare and the web page) turns it on.
   */
  endOfText?: boolean;
}

/**
 * A tokenizer with one token per distinct code point of `text` (so an emoji is one token,
 * not two UTF-16 halves), ids in code-point order so the same text always gives the same ids.
 */
export function buildCharTokenizer(text: string, opts: CharTokenizerOptions = {}): Tokenizer {
  check(typeof text === 'string', () => `buildCharTokenizer needs the text as a string (got ${shownValue(text)})`);
  checkOptionNames(opts, ['unk', 'endOfText'], 'buildCharTokenizer');
  check(opts.endOfText === undefined || typeof opts.endOfText === 'boolean', () => `endOfText must be true or false (got ${shownValue(opts.endOfText)})`);
  const unk = opts.unk ?? null;
  if (unk !== null) checkSingleCodePoint(unk, (m) => `unknown-character token ${JSON.stringify(unk)} ${m}`);
  const codePoints = new Set<number>();
  for (const ch of text) codePoints.add(ch.codePointAt(0)!);
  // The unk character stays out of the sorted vocabulary: it is always the last id.
  if (unk !== null) codePoints.delete(unk.codePointAt(0)!);
  check(codePoints.size > 0, 'cannot build a character tokenizer from empty text; give it the training text');
  const vocab = [...codePoints].sort((a, b) => a - b).map((cp) => String.fromCodePoint(cp));
  return makeCharTokenizer(vocab, unk, opts.endOfText ? [END_OF_TEXT] : []);
}

/**
 * A character tokenizer with the given vocabulary (ids are array positions), then `unk`, then the
 * special tokens `special` in order; validated.
 */
export function charTokenizerFromVocab(vocab: readonly string[], unk: string | null = null, special: readonly string[] = []): Tokenizer {
  const first = vocab.length + (unk === null ? 0 : 1);
  return charTokenizerFromJsonFields(vocab, unk, Object.fromEntries(special.map((s, i) => [s, first + i])), 'character vocabulary');
}

/**
 * Reads a tokenizer written by `toJSON()`. `source` (a file name, "checkpoint.json#tokenizer")
 * names the JSON in error messages.
 */
export function tokenizerFromJson(json: unknown, source: string): Tokenizer {
  check(
    typeof json === 'object' && json !== null && !Array.isArray(json),
    `${source}: tokenizer must be a JSON object with a "type" field, got ${describeJsonValue(json)}`,
  );
  const fields = json as Record<string, unknown>;
  const type = fields['type'];
  check(
    typeof type === 'string',
    `${source}: tokenizer has no "type" string; expected "type": "char", "gpt2", "bpe", "hf-bpe" or "sp-bpe"`,
  );
  switch (type) {
    case 'char':
      return charTokenizerFromJsonFields(fields['vocab'], fields['unk'], fields['special'], source);
    case 'gpt2':
      return gpt2TokenizerFromJsonFields(fields, source);
    case 'bpe':
      return bpeTokenizerFromJsonFields(fields, source);
    case 'hf-bpe':
      return hfBpeTokenizerFromJsonFields(fields, source);
    case 'sp-bpe':
      return spBpeTokenizerFromJsonFields(fields, source);
    default:
      throw new MinigptError(
        `${source}: unknown tokenizer type ${JSON.stringify(type)}; expected "char", "gpt2", "bpe", "hf-bpe" or "sp-bpe"`,
      );
  }
}

export interface MakeTokenizerOptions {
  /** bpe: tokens in all (256 bytes + merges + special tokens); required for bpe. */
  vocabSize?: number;
  /** bpe: its special tokens; default ["<|endoftext|>"]. */
  specialTokens?: readonly string[];
  /** char: a character standing for every character not in the text. */
  unk?: string;
  /** char: add the special token "<|endoftext|>" (see CharTokenizerOptions); default true. */
  endOfText?: boolean;
  /** bpe: progress of the training, in merges. */
  onProgress?: BpeTrainOptions['onProgress'];
}

/**
 * The tokenizer for training on `text`: char builds its vocabulary from the text, gpt2 is
 * fixed (the text is not used), bpe learns `vocabSize` tokens from the text.
 */
export function makeTokenizer(kind: TokenizerKind, text: string, opts: MakeTokenizerOptions = {}): Tokenizer {
  switch (kind) {
    case 'char':
      return buildCharTokenizer(text, { ...(opts.unk === undefined ? {} : { unk: opts.unk }), endOfText: opts.endOfText ?? true });
    case 'gpt2':
      return gpt2Tokenizer();
    case 'bpe':
      check(opts.vocabSize !== undefined, 'a BPE tokenizer needs a vocabulary size to learn; give one (e.g. 4096)');
      return trainBpe(text, {
        vocabSize: opts.vocabSize,
        ...(opts.specialTokens ? { specialTokens: opts.specialTokens } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      });
    default:
      check(kind !== 'hf-bpe' && kind !== 'sp-bpe', () => `an ${kind} tokenizer comes only with an imported model or a Hugging Face tokenizer.json; give that instead of the kind`);
      throw new MinigptError(`unknown tokenizer kind ${JSON.stringify(kind)}; expected "char", "gpt2" or "bpe"`);
  }
}

/** Turns ids into text one at a time; see createStreamingDecoder. */
export interface StreamingDecoder {
  /** The text that `id` completes: possibly "" while a character's bytes are still arriving. */
  push(id: number): string;
  /** Whatever is still held back (an unfinished character becomes U+FFFD); then starts afresh. */
  flush(): string;
  /** Whether a character's first bytes are held back, waiting for the rest (what flush would give as U+FFFD). */
  pending(): boolean;
}

/**
 * Decodes a stream of ids piece by piece, for printing generated text as it comes. A byte-level
 * token can end in the middle of a character (an emoji is often 2-4 tokens); those bytes are
 * held back until the character is complete, so the pieces joined, plus flush(), are exactly
 * decode(all ids).
 */
export function createStreamingDecoder(tokenizer: Tokenizer): StreamingDecoder {
  if (tokenizer.tokenBytes) {
    const tokenBytes = tokenizer.tokenBytes.bind(tokenizer);
    let decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    // Continuation bytes the last character begun still needs (UTF-8's lead byte says how many).
    let needs = 0;
    return {
      push: (id) => {
        const bytes = tokenBytes(id);
        for (const b of bytes) needs = needs > 0 && (b & 0xc0) === 0x80 ? needs - 1 : b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
        return decoder.decode(bytes, { stream: true });
      },
      flush: () => {
        const rest = decoder.decode();
        decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
        needs = 0;
        return rest;
      },
      pending: () => needs > 0,
    };
  }
  const decodeOne = tokenizer.decodeToken ? tokenizer.decodeToken.bind(tokenizer) : (id: number) => tokenizer.decode([id]);
  return { push: decodeOne, flush: () => '', pending: () => false };
}

function charTokenizerFromJsonFields(vocab: unknown, unk: unknown, special: unknown, source: string): Tokenizer {
  check(Array.isArray(vocab), `${source}: char tokenizer "vocab" must be an array of single characters, got ${describeJsonValue(vocab)}`);
  check(vocab.length > 0, `${source}: char tokenizer "vocab" is empty; it needs at least one character`);
  const seen = new Map<string, number>();
  vocab.forEach((entry: unknown, index) => {
    check(
      typeof entry === 'string',
      () => `${source}: char tokenizer vocab[${index}] must be a string, got ${describeJsonValue(entry)}`,
    );
    checkSingleCodePoint(entry, (m) => `${source}: char tokenizer vocab[${index}] ${JSON.stringify(entry)} ${m}`);
    const earlier = seen.get(entry);
    check(
      earlier === undefined,
      () => `${source}: char tokenizer vocab[${index}] ${JSON.stringify(entry)} repeats vocab[${earlier}]; each character may appear once`,
    );
    seen.set(entry, index);
  });
  // An absent "unk" means none, as null does.
  check(
    unk === undefined || unk === null || typeof unk === 'string',
    () => `${source}: char tokenizer "unk" must be a single character or null, got ${describeJsonValue(unk)}`,
  );
  if (typeof unk === 'string') {
    checkSingleCodePoint(unk, (m) => `${source}: char tokenizer "unk" ${JSON.stringify(unk)} ${m}`);
    check(
      !seen.has(unk),
      () => `${source}: char tokenizer "unk" ${JSON.stringify(unk)} is also vocab[${seen.get(unk)}]; the unknown token must be separate`,
    );
  }
  // An absent "special" means none (JSON written before char tokenizers had an end-of-text token).
  check(
    special === undefined || (typeof special === 'object' && special !== null && !Array.isArray(special)),
    () => `${source}: char tokenizer "special" must be an object of special token text -> id, got ${describeJsonValue(special)}`,
  );
  const first = vocab.length + (typeof unk === 'string' ? 1 : 0);
  const entries = Object.entries((special ?? {}) as Record<string, unknown>);
  const specials: string[] = new Array(entries.length);
  for (const [name, id] of entries) {
    check(name.length > 0, `${source}: char tokenizer has a special token with empty text; a special token needs some text`);
    check(toWellFormed(name) === name, () => `${source}: char tokenizer special token ${JSON.stringify(name)} holds an unpaired surrogate`);
    check(
      !seen.has(name) && name !== unk,
      () => `${source}: char tokenizer special token ${JSON.stringify(name)} is also an ordinary character of the vocabulary; it must be separate`,
    );
    check(
      typeof id === 'number' && Number.isInteger(id) && id >= first && id < first + entries.length && specials[id - first] === undefined,
      () =>
        `${source}: char tokenizer special token ${JSON.stringify(name)} has id ${describeJsonValue(id)}; ` +
        `special ids must be the whole numbers ${first} to ${first + entries.length - 1}, each once, right after the ${first} characters`,
    );
    specials[(id as number) - first] = name;
  }
  return makeCharTokenizer(vocab as string[], typeof unk === 'string' ? unk : null, specials);
}

function checkSingleCodePoint(value: string, describe: (problem: string) => string): void {
  const chars = [...value];
  if (chars.length === 1) return;
  if (chars.length === 0) throw new MinigptError(describe('is empty; it must be exactly one character'));
  // Code points make look-alikes visible: a decomposed "é" prints like the single character.
  const codePoints = chars.slice(0, 8).map((ch) => codePointLabel(ch.codePointAt(0)!));
  const listed = `${codePoints.join(' ')}${chars.length > 8 ? ' ...' : ''}`;
  throw new MinigptError(describe(`has ${chars.length} characters (${listed}); it must be exactly one`));
}

function codePointLabel(cp: number): string {
  return `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Makes the tokenizer; `vocab`, `unk` and the special tokens `specials` (in id order, after them) are already valid. */
function makeCharTokenizer(vocab: readonly string[], unk: string | null, specials: readonly string[] = []): Tokenizer {
  const frozenVocab = Object.freeze([...vocab]);
  const unkId = unk === null ? -1 : frozenVocab.length;
  const characters: readonly string[] = unk === null ? frozenVocab : [...frozenVocab, unk];
  // Special tokens decode to their text, as the BPE tokenizers' do.
  const pieces: readonly string[] = [...characters, ...specials];
  const vocabSize = pieces.length;
  const special = new Map(specials.map((s, i) => [s, characters.length + i]));
  const specialTokens = special.size === 0 ? undefined : Object.freeze(Object.fromEntries(special));

  // Dense table for the Basic Multilingual Plane (nearly all text), a Map above it.
  const bmpIds = new Int32Array(0x10000).fill(-1);
  const astralIds = new Map<number, number>();
  characters.forEach((ch, id) => {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x10000) bmpIds[cp] = id;
    else astralIds.set(cp, id);
  });

  const encodeOrdinary = (text: string): Int32Array => {
    const ids = new Int32Array(text.length); // code points <= UTF-16 units
    let count = 0;
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i)!;
      let id = cp < 0x10000 ? bmpIds[cp]! : astralIds.get(cp) ?? -1;
      if (id < 0) {
        if (unkId < 0) throw unknownCharacterError(text, i, cp, frozenVocab.length);
        id = unkId;
      }
      ids[count++] = id;
      i += cp > 0xffff ? 2 : 1;
    }
    return ids.slice(0, count);
  };

  // As the BPE tokenizers (bpe.ts): special-token text is ordinary text unless allowedSpecial names it.
  const allowedSplitter = specialTokenSplitter(special, 'char');
  const encode = (text: string, opts: EncodeOptions = {}): Int32Array => {
    checkEncodeInput(text);
    const re = allowedSplitter(opts.allowedSpecial);
    if (re === null) return encodeOrdinary(text);
    const ids: number[] = [];
    splitAtSpecialTokens(text, re, special, (part) => {
      for (const id of encodeOrdinary(part)) ids.push(id);
    }, (id) => ids.push(id));
    return Int32Array.from(ids);
  };

  const decodeToken = (id: number): string => {
    check(
      Number.isInteger(id) && id >= 0 && id < vocabSize,
      () => `token id ${shownValue(id)} is out of range for this character tokenizer; valid ids are 0 to ${vocabSize - 1}`,
    );
    return pieces[id]!;
  };

  const decode = (ids: ArrayLike<number>): string => {
    checkDecodeInput(ids);
    const out: string[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      check(
        Number.isInteger(id) && id >= 0 && id < vocabSize,
        () => `token id ${shownValue(id)} at position ${i} is out of range for this character tokenizer; valid ids are 0 to ${vocabSize - 1}`,
      );
      out[i] = pieces[id]!;
    }
    return out.join('');
  };

  return {
    kind: 'char',
    vocabSize,
    encode,
    decode,
    decodeToken,
    ...(specialTokens ? { specialTokens } : {}),
    toJSON: (): CharTokenizerJson => ({
      type: 'char',
      vocab: [...frozenVocab],
      unk,
      ...(specialTokens ? { special: { ...specialTokens } } : {}),
    }),
  };
}

/** Names the character, its code point and where it is (line:column and code-point index, 1-based/0-based). */
function unknownCharacterError(text: string, unitIndex: number, cp: number, vocabLength: number): MinigptError {
  let line = 1;
  let column = 1;
  let codePointIndex = 0;
  for (let i = 0; i < unitIndex; ) {
    const c = text.codePointAt(i)!;
    if (c === 0x0a) {
      line++;
      column = 1;
    } else {
      column++;
    }
    codePointIndex++;
    i += c > 0xffff ? 2 : 1;
  }
  const character = `character ${JSON.stringify(String.fromCodePoint(cp))} (${codePointLabel(cp)})`;
  const missing = `is not in the tokenizer's vocabulary (its ${vocabLength} characters)`;
  return new UnknownCharacterError(
    `${character} at line ${line}, column ${column} (character ${codePointIndex + 1} of the text) ${missing}`,
    'a character tokenizer encodes only the characters of the text it was built from: build it from text that has this one, or use a BPE tokenizer, which encodes any text',
    `${character} ${missing}`,
  );
}

/**
 * How tokenizer `a` differs from `b` where describeTokenizer says the same of both (the same kind
 * and size): for char tokenizers, characters one has and the other lacks, else that the ids differ.
 * '' when the descriptions already differ or the tokenizers are the same.
 */
export function tokenizerDifference(a: Tokenizer, b: Tokenizer, aName: string, bName: string): string {
  if (describeTokenizer(a) !== describeTokenizer(b) || sameTokenizer(a, b)) return '';
  if (a.kind === 'char' && b.kind === 'char') {
    const va = (a.toJSON() as CharTokenizerJson).vocab, vb = (b.toJSON() as CharTokenizerJson).vocab;
    const only = (x: string[], y: string[]): string => {
      const missing = x.filter((c) => !y.includes(c));
      return missing.slice(0, 5).map((c) => JSON.stringify(c)).join(', ') + (missing.length > 5 ? `, and ${missing.length - 5} more` : '');
    };
    const aOnly = only(va, vb), bOnly = only(vb, va);
    if (aOnly || bOnly) return `other characters: ${[aOnly && `${aOnly} only in ${aName}`, bOnly && `${bOnly} only in ${bName}`].filter(Boolean).join('; ')}`;
    return 'the same characters under other ids';
  }
  return 'the same size, but other tokens or ids';
}

/**
 * True when two tokenizers give every text the same ids: their JSON is the same but for eos and
 * bos, which name an imported model's end tokens and change no encoding (shards prepared with a
 * Hugging Face folder's tokenizer.json fit the model imported from it).
 */
export function sameTokenizer(a: Tokenizer, b: Tokenizer): boolean {
  const encoding = (t: Tokenizer): string => JSON.stringify({ ...t.toJSON(), eos: undefined, bos: undefined });
  return a === b || encoding(a) === encoding(b);
}

/** "char tokenizer of 65 tokens": which tokenizer, for messages about two that differ. */
export function describeTokenizer(t: Tokenizer): string {
  return `${t.kind} tokenizer of ${t.vocabSize} tokens`;
}

/**
 * A character tokenizer met a character it has no token for. `problem` is the message without its
 * advice; `unplaced` is the problem without the position, for text whose positions mean nothing to
 * the user (a piece of a streamed file).
 */
export class UnknownCharacterError extends MinigptError {
  constructor(readonly problem: string, advice: string, readonly unplaced: string) {
    super(`${problem}; ${advice}`);
  }
}

/**
 * Encodes text the user gave to a fixed tokenizer (a checkpoint's): a character it cannot encode
 * is reported as `what: <the character and where>; advice`, since rebuilding the tokenizer is
 * not the fix there.
 */
export function encodeUserText(tokenizer: Tokenizer, text: string, what: string, advice: string, opts: EncodeOptions = {}): Int32Array {
  try {
    return tokenizer.encode(text, opts);
  } catch (e) {
    if (e instanceof UnknownCharacterError) throw new MinigptError(`${what}: ${e.problem}; ${advice}`);
    throw e;
  }
}

function describeJsonValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const shown = JSON.stringify(value);
  return `${typeof value} ${shown.length > 40 ? `${shown.slice(0, 37)}...` : shown}`;
}

/**
 * The UTF-8 bytes of text each id stands for (0 for special tokens, which stand for none). A loss
 * summed over tokens and divided by these bytes (bits per byte) compares models whose tokenizers
 * differ: a char model's loss per token and a BPE model's are not comparable, per byte they are.
 * The loss of predicting a special token (<|endoftext|> between documents) is counted with its 0
 * bytes, as a char model's "\n\n" separator is counted with its 2: each model pays for knowing
 * where a document ends.
 */
export function tokenByteLengths(tokenizer: Tokenizer): Uint32Array {
  const lengths = new Uint32Array(tokenizer.vocabSize);
  const special = new Set(Object.values(tokenizer.specialTokens ?? {}));
  const utf8 = new TextEncoder();
  for (let id = 0; id < lengths.length; id++) {
    if (special.has(id)) continue;
    lengths[id] = tokenizer.tokenBytes ? tokenizer.tokenBytes(id).length : utf8.encode(tokenizer.decodeToken ? tokenizer.decodeToken(id) : tokenizer.decode([id])).length;
  }
  return lengths;
}

/**
 * The UTF-8 bytes of text a target token stands for: `lengths` (tokenByteLengths), and `afterStart`
 * for a token right after the start-of-text token `startId` where the tokenizer adds a "▁" in front
 * of each text (sp-bpe with addBos): one fewer where the token begins with that space, which the
 * text does not have. (For a Metaspace layout, a text that itself begins with a space gets no "▁"
 * added; its first space is then not counted either.)
 */
export interface TextByteCounts {
  lengths: Uint32Array;
  startId: number;
  afterStart: Uint32Array | null;
}

export function textByteCounts(tokenizer: Tokenizer): TextByteCounts {
  const lengths = tokenByteLengths(tokenizer);
  const [startId] = textStartIds(tokenizer);
  if (startId === undefined || tokenizer.kind !== 'sp-bpe' || !tokenizer.tokenBytes) return { lengths, startId: -1, afterStart: null };
  const afterStart = lengths.slice();
  for (let id = 0; id < afterStart.length; id++) if (afterStart[id]! > 0 && tokenizer.tokenBytes(id)[0] === 0x20) afterStart[id]!--;
  return { lengths, startId, afterStart };
}

/** The bytes `counts` gives target `target` after input token `input`. */
export function targetBytes(counts: TextByteCounts, input: number, target: number): number {
  return ((input === counts.startId ? counts.afterStart : null) ?? counts.lengths)[target] ?? 0;
}

/** Bits per byte of a loss (nats, mean over `tokens`) over text of `bytes` UTF-8 bytes; null when there are none. */
export function bitsPerByte(loss: number, tokens: number, bytes: number): number | null {
  return bytes > 0 ? (loss * tokens) / (bytes * Math.LN2) : null;
}
