/**
 * Hugging Face interop: a minigpt checkpoint <-> a transformers model directory.
 *
 * Export writes what `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`
 * load unchanged:
 *   config.json              LlamaForCausalLM (SwiGLU models) or ArceeForCausalLM (GELU-MLP
 *                            models: Arcee is LLaMA with a non-gated up/down MLP and a
 *                            configurable activation, here "gelu_pytorch_tanh"); Qwen2ForCausalLM
 *                            for SwiGLU models with q, k and v biases (Qwen2 is LLaMA plus those)
 *   model.safetensors        the same Hugging Face names as our checkpoint, metadata {"format":"pt"}
 *   generation_config.json
 *   tokenizer.json           HF `tokenizers` format (see hfTokenizerFiles)
 *   tokenizer_config.json    PreTrainedTokenizerFast, no BOS added
 *   special_tokens_map.json
 *
 * Import reads a LLaMA, Arcee or Qwen2 checkpoint, single-file or sharded safetensors in F32, F16
 * or BF16, and a tokenizer.json that one of our tokenizer kinds represents exactly. Everything
 * else (other biases, rope scaling, sliding-window attention, other architectures and
 * tokenizers) is a MinigptError saying so.
 *
 * export -> import -> export is byte-stable: every file is a function of the checkpoint, and
 * the fields of our config that HF has no name for (init, dropout) travel in config.json under
 * "minigpt".
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { MinigptError, check, checkOptionNames, optionName, optionSetting, adviceFor, shownValue } from '../errors.js';
import { exists, readWholeFile, writeDirFiles } from '../util/fs.js';
import { INIT_STRATEGIES, headDim, resolveConfig, type InitStrategy, type ModelConfig } from '../model/config.js';
import { paramLayout } from '../model/params.js';
import { charTokenizerFromVocab, endOfTextToken, startOfTextToken, tokenizerFromJson, type Tokenizer } from '../data/tokenizer.js';
import { GPT2_VOCAB_SIZE, gpt2Tokenizer } from '../data/gpt2.js';
import { GPT2_SPLIT_PATTERN, type ByteLevelTokenizer } from '../data/bpe.js';
import { byteLevelToBytes, bytesToByteLevel } from '../data/byte-level.js';
import { LLAMA3_SPLIT_PATTERN, QWEN2_SPLIT_PATTERN, type HfBpeTokenizerJson, type HfPretokenizer } from '../data/hf-bpe.js';
import { SP_SPACE, type SpBpeTokenizerJson, type SpSpaces } from '../data/sp-bpe.js';
import { CHECKPOINT_FORMAT, checkCheckpointArg, flatWeights, namedWeights, recordedClean, type Checkpoint, type WeightDType } from './checkpoint.js';
import { CLEAN_STEP_NAMES, DEFAULT_CLEAN, type CleanOptions } from '../data/text.js';
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from './safetensors.js';
import { checkNodeOnly } from '../util/runtime.js';

// ---------------------------------------------------------------------------------------------
// Tokenizer <-> tokenizer.json

/** What a tokenizer looks like as a byte-level BPE: its tokens, merges in rank order, specials. */
export interface ByteLevelVocab {
  /** The byte-level string of each token, by id; a special token's is its text. */
  tokens: string[];
  /** Merges in priority order, as [left, right] byte-level strings. */
  merges: [string, string][];
  /** Special tokens (text, id), by id. */
  special: [string, number][];
}

let gpt2VocabCache: ByteLevelVocab | null = null;

/**
 * The byte-level BPE form of a gpt2, bpe or hf-bpe tokenizer.
 *
 * gpt2: tiktoken has ranks, not merges. Like transformers' TikTokenConverter, every split of a
 * token into two tokens is a merge, ordered by the rank of the token it makes: that is exactly
 * tiktoken's rule (merge the adjacent pair whose joined bytes have the lowest rank), and with
 * `ignore_merges` (whole pre-token looked up first) the HF tokenizer gives tiktoken's ids.
 * bpe: its own merges, in order; merge i makes id 256 + i. hf-bpe: what its tokenizer.json had.
 */
export function byteLevelVocab(tokenizer: Tokenizer): ByteLevelVocab {
  check(tokenizer.kind === 'gpt2' || tokenizer.kind === 'bpe' || tokenizer.kind === 'hf-bpe', `a ${tokenizer.kind} tokenizer is not byte-level BPE`);
  if (tokenizer.kind === 'gpt2' && gpt2VocabCache) return gpt2VocabCache;
  const bl = tokenizer as ByteLevelTokenizer;
  const special = Object.entries(bl.specialTokens).sort((a, b) => a[1] - b[1]);
  if (tokenizer.kind === 'hf-bpe') {
    const json = tokenizer.toJSON() as HfBpeTokenizerJson;
    return { tokens: json.vocab, merges: json.merges.map((m) => m.split(' ') as [string, string]), special };
  }
  const specialIds = new Set(special.map(([, id]) => id));
  const tokens: string[] = new Array(bl.vocabSize);
  for (const [text, id] of special) tokens[id] = text;
  const idOf = new Map<string, number>();
  for (let id = 0; id < bl.vocabSize; id++) {
    if (specialIds.has(id)) continue;
    const t = tokens[id] = bytesToByteLevel(bl.tokenBytes(id));
    const other = idOf.get(t);
    check(other === undefined, () => `tokens ${other} and ${id} of this tokenizer have the same bytes; a tokenizer.json vocabulary cannot hold both`);
    idOf.set(t, id);
  }
  for (const [text, id] of special) check(!idOf.has(text), () => `special token ${JSON.stringify(text)} (id ${id}) is also the byte-level string of token ${idOf.get(text)}; a tokenizer.json vocabulary cannot hold both`);
  let merges: [string, string][];
  if (tokenizer.kind === 'gpt2') {
    const found: [number, number, number][] = [];
    for (const [t, id] of idOf) {
      for (let k = 1; k < t.length; k++) {
        const l = idOf.get(t.slice(0, k)), r = idOf.get(t.slice(k));
        if (l !== undefined && r !== undefined) found.push([id, l, r]);
      }
    }
    found.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    merges = found.map(([, l, r]) => [tokens[l]!, tokens[r]!]);
  } else {
    const json = tokenizer.toJSON() as unknown as { merges: string[] };
    merges = json.merges.map((m) => {
      const [a, b] = m.split(' ').map(Number) as [number, number];
      return [tokens[a]!, tokens[b]!];
    });
  }
  const vocab = { tokens, merges, special };
  if (tokenizer.kind === 'gpt2') gpt2VocabCache = vocab;
  return vocab;
}

/** JSON with the entries of `pairs` in the given order (a JS object would hoist integer-like keys). */
function orderedObject(pairs: [string, unknown][], indent: string): string {
  if (pairs.length === 0) return '{}';
  return `{\n${pairs.map(([k, v]) => `${indent}  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n')}\n${indent}}`;
}

function addedToken(id: number, content: string, special = true): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/** An hf-bpe tokenizer's added tokens that are not special (HfBpeTokenizerJson.plainAdded), [text, id] by id. */
function plainAddedTokens(tokenizer: Tokenizer): [string, number][] {
  if (tokenizer.kind !== 'hf-bpe') return [];
  return Object.entries((tokenizer.toJSON() as HfBpeTokenizerJson).plainAdded ?? {}).sort((a, b) => a[1] - b[1]);
}

/** Where the special tokens of a tokenizer go in config.json and the tokenizer configs. */
export interface HfSpecialTokens {
  bos?: [string, number];
  eos?: [string, number];
  unk?: string;
}

export function hfSpecialTokens(tokenizer: Tokenizer): HfSpecialTokens {
  const out: HfSpecialTokens = {};
  const eos = endOfTextToken(tokenizer), bos = startOfTextToken(tokenizer);
  if (eos) out.eos = eos;
  if (bos) out.bos = bos;
  if (tokenizer.kind === 'char' || tokenizer.kind === 'sp-bpe') {
    const unk = (tokenizer.toJSON() as unknown as { unk?: string | null }).unk;
    // sp-bpe: only a special unknown token (transformers would make a piece named there special).
    if (unk !== null && unk !== undefined && (tokenizer.kind === 'char' || tokenizer.specialTokens?.[unk] !== undefined)) out.unk = unk;
  }
  return out;
}

/**
 * tokenizer.json (HF `tokenizers`) for our tokenizer, as text.
 *
 * Byte-level kinds: the GPT-2 pre-token regex (spelled with \p{White_Space} as tiktoken's Rust
 * regex means it) as a Split (after a Digits step for hf-bpe's "gpt2-digits"; hf-bpe's "qwen2" and
 * "llama3": their own regex, as Qwen2's and Llama 3's files spell it), then ByteLevel
 * without its own regex; a BPE model over byte-level strings, special tokens included in its
 * vocabulary; ByteLevel decoder. Special tokens are added tokens (HF always recognises their
 * text, as our encode does with allowedSpecial: 'all').
 * char: a Split that isolates every code point, a WordLevel model over the characters (the unk
 * character, if any, is its unk_token; otherwise an unknown character is an error, as here) and
 * a Fuse decoder, so ids are exactly ours; its special tokens ("<|endoftext|>") are added tokens
 * after them (outside the WordLevel vocabulary).
 * The normalizer does the cleaning `clean` names (recordedClean: how the model's text was
 * cleaned), so transformers cleans text as minigpt cleans a prompt; none without it.
 */
export function hfTokenizerJson(tokenizer: Tokenizer, clean?: Partial<CleanOptions>): string {
  if (tokenizer.kind === 'char') {
    const { vocab, unk, special } = tokenizer.toJSON() as unknown as { vocab: string[]; unk: string | null; special?: Record<string, number> };
    const pieces = unk === null ? vocab : [...vocab, unk];
    return tokenizerJsonText({
      added: Object.entries(special ?? {}).sort((a, b) => a[1] - b[1]).map(([text, id]) => addedToken(id, text)),
      normalizer: hfNormalizer(clean),
      pre: { type: 'Split', pattern: { Regex: String.raw`[\s\S]` }, behavior: 'Isolated', invert: false },
      post: null,
      decoder: { type: 'Fuse' },
      model: [
        `    "type": "WordLevel",`,
        `    "vocab": ${orderedObject(pieces.map((p, i) => [p, i]), '    ')},`,
        // Without an unk character, the unk token is text no split can produce: unknown characters fail.
        `    "unk_token": ${JSON.stringify(unk ?? '<unk>')}`,
      ],
    });
  }
  if (tokenizer.kind === 'sp-bpe') return spHfTokenizerJson(tokenizer.toJSON() as SpBpeTokenizerJson, clean);
  const v = byteLevelVocab(tokenizer);
  const hfBpe = tokenizer.kind === 'hf-bpe' ? tokenizer.toJSON() as HfBpeTokenizerJson : null;
  // Special tokens the BPE model's own vocabulary lacked stay out of it (a whole-word lookup must not find them).
  const addedOnly = new Set(hfBpe?.addedOnly ?? []);
  const pre = {
    type: 'Sequence',
    pretokenizers: [
      ...(hfBpe?.pretokenizer === 'gpt2-digits' ? [{ type: 'Digits', individual_digits: true }] : []),
      { type: 'Split', pattern: { Regex: hfBpe ? HF_SPLIT_PATTERNS[hfBpe.pretokenizer] : GPT2_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
  const added = [...v.special.map(([text, id]) => addedToken(id, text)), ...plainAddedTokens(tokenizer).map(([text, id]) => addedToken(id, text, false))];
  return tokenizerJsonText({
    added: added.sort((a, b) => (a.id as number) - (b.id as number)),
    normalizer: hfNormalizer(clean),
    pre,
    post: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    model: bpeModelLines({
      unk: null, fuseUnk: false, byteFallback: false, ignoreMerges: hfBpe ? hfBpe.ignoreMerges : tokenizer.kind === 'gpt2',
      vocab: v.tokens.map((t, i): [string, number] => [t, i]).filter(([, id]) => !addedOnly.has(id)),
      merges: v.merges,
    }),
  });
}

/** tokenizer.json's text, its fields in the tokenizers library's order; `model` the lines inside its "model" object. */
function tokenizerJsonText(f: { added: Record<string, unknown>[]; normalizer: unknown; pre: unknown; post: unknown; decoder: unknown; model: string[] }): string {
  return [
    '{',
    `  "version": "1.0",`,
    `  "truncation": null,`,
    `  "padding": null,`,
    `  "added_tokens": ${JSON.stringify(f.added)},`,
    `  "normalizer": ${JSON.stringify(f.normalizer)},`,
    `  "pre_tokenizer": ${JSON.stringify(f.pre)},`,
    `  "post_processor": ${JSON.stringify(f.post)},`,
    `  "decoder": ${JSON.stringify(f.decoder)},`,
    `  "model": {`,
    ...f.model,
    `  }`,
    '}',
  ].join('\n') + '\n';
}

/** The lines of a BPE "model" object: its options, the vocabulary in id order, one merge per line. */
function bpeModelLines(m: { unk: string | null; fuseUnk: boolean; byteFallback: boolean; ignoreMerges: boolean; vocab: [string, number][]; merges: [string, string][] }): string[] {
  return [
    `    "type": "BPE",`,
    `    "dropout": null,`,
    `    "unk_token": ${JSON.stringify(m.unk)},`,
    `    "continuing_subword_prefix": null,`,
    `    "end_of_word_suffix": null,`,
    `    "fuse_unk": ${m.fuseUnk},`,
    `    "byte_fallback": ${m.byteFallback},`,
    `    "ignore_merges": ${m.ignoreMerges},`,
    `    "vocab": ${orderedObject(m.vocab, '    ')},`,
    `    "merges": [\n${m.merges.map((pair) => `      ${JSON.stringify(pair)}`).join(',\n')}\n    ]`,
  ];
}

/**
 * tokenizer.json of an sp-bpe tokenizer, laid out as the file it came from (spLayoutOf reads it
 * back): the legacy normalizer Prepend("▁") + Replace(" ", "▁") after the cleaning steps, or a
 * Metaspace pre-tokenizer; the decoder transformers' converter writes (▁ to a space, byte fallback,
 * one leading space dropped), as minigpt decodes; a BPE model with byte fallback and the unknown token, every
 * token (special ones too) in its vocabulary; the "<s> $A" template where the tokenizer adds one.
 */
function spHfTokenizerJson(json: SpBpeTokenizerJson, clean?: Partial<CleanOptions>): string {
  const cleaning = (hfNormalizer(clean)?.normalizers as Json[] | undefined) ?? [];
  const legacy = json.spaces === 'prepend';
  const spaceSteps = legacy ? [{ type: 'Prepend', prepend: SP_SPACE }, { type: 'Replace', pattern: { String: ' ' }, content: SP_SPACE }] : [];
  const steps = [...cleaning, ...spaceSteps];
  const bos = json.addBos;
  return tokenizerJsonText({
    added: Object.entries(json.special).map(([text, id]) => addedToken(id, text)),
    normalizer: steps.length === 0 ? null : { type: 'Sequence', normalizers: steps },
    pre: legacy ? null : { type: 'Metaspace', replacement: SP_SPACE, prepend_scheme: json.spaces, split: json.split },
    post: bos === undefined ? null : {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [json.special[bos]], tokens: [bos] } },
    },
    // minigpt's decode, for every layout: a Metaspace decoder alone would print byte tokens as "<0x0A>".
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: SP_SPACE }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: bpeModelLines({
      unk: json.unk ?? null, fuseUnk: json.fuseUnk, byteFallback: json.byteFallback, ignoreMerges: false,
      vocab: json.vocab.map((t, i): [string, number] => [t, i]),
      merges: json.merges.map((m) => m.split(' ') as [string, string]),
    }),
  });
}

/** tokenizer_config.json and special_tokens_map.json for our tokenizer. */
export function hfTokenizerConfigs(tokenizer: Tokenizer, context: number): { config: Record<string, unknown>; specialMap: Record<string, unknown> } {
  const s = hfSpecialTokens(tokenizer);
  const specialMap: Record<string, unknown> = {};
  if (s.bos) specialMap.bos_token = s.bos[0];
  if (s.eos) specialMap.eos_token = s.eos[0];
  if (s.unk) specialMap.unk_token = s.unk;
  const addedDecoder: Record<string, unknown> = {};
  // The id is the key here; transformers warns about an "id" field inside the entry.
  const added: [string, number, boolean][] = [...Object.entries(tokenizer.specialTokens ?? {}).map(([text, id]): [string, number, boolean] => [text, id, true]),
    ...plainAddedTokens(tokenizer).map(([text, id]): [string, number, boolean] => [text, id, false])];
  for (const [text, id, special] of added.sort((a, b) => a[1] - b[1])) {
    const { id: _id, ...entry } = addedToken(id, text, special);
    addedDecoder[String(id)] = entry;
  }
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    add_bos_token: tokenizer.addBos !== undefined,
    add_eos_token: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: context,
    ...specialMap,
    minigpt_tokenizer: tokenizer.kind,
  };
  if (Object.keys(addedDecoder).length > 0) config.added_tokens_decoder = addedDecoder;
  return { config, specialMap };
}

type Json = Record<string, unknown>;

/**
 * The Hugging Face normalizer doing each cleaning step, in cleanText's order (tokenizers' regexes
 * are Oniguruma's, hence \x{..}). Lowercase maps each character alone, where cleanText's
 * toLowerCase gives a Greek capital sigma that ends a word its final form (ς); nothing else differs.
 */
const CLEAN_NORMALIZERS: readonly (readonly [keyof CleanOptions, Json])[] = [
  ['newlines', { type: 'Replace', pattern: { Regex: String.raw`\r\n?` }, content: '\n' }],
  ['pageBreaks', { type: 'Replace', pattern: { Regex: String.raw`[\x{B}\x{C}\x{85}]` }, content: '\n' }],
  ['controlChars', { type: 'Replace', pattern: { Regex: String.raw`[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}]` }, content: '' }],
  ['collapseBlankLines', { type: 'Replace', pattern: { Regex: String.raw`\n(?:[ \t]*\n){2,}` }, content: '\n\n' }],
  ['lowercase', { type: 'Lowercase' }],
  ['nfc', { type: 'NFC' }],
];

/** tokenizer.json's normalizer for cleaning `clean` (null: no cleaning recorded, or every step off). */
export function hfNormalizer(clean: Partial<CleanOptions> | undefined): Json | null {
  if (!clean) return null;
  const o = { ...DEFAULT_CLEAN, ...clean };
  const steps = CLEAN_NORMALIZERS.filter(([step]) => o[step]).map(([, n]) => n);
  return steps.length === 0 ? null : { type: 'Sequence', normalizers: steps };
}

/**
 * The cleaning a tokenizer.json's normalizer does, when it is one hfNormalizer writes (its steps,
 * in that order; undefined for none); anything else is a MinigptError.
 */
export function cleanFromHfNormalizer(normalizer: unknown, source: string): CleanOptions | undefined {
  if (normalizer === null || normalizer === undefined) return undefined;
  const list = isObject(normalizer) && normalizer.type === 'Sequence' && Array.isArray(normalizer.normalizers) ? normalizer.normalizers as unknown[] : [normalizer];
  const same = (a: unknown, b: Json): boolean => isObject(a) && a.type === b.type && (a.content ?? null) === (b.content ?? null)
    && (isObject(a.pattern) ? a.pattern.Regex : null) === ((b.pattern as Json | undefined)?.Regex ?? null);
  // Every step off unless its normalizer is there (an export from before the page-breaks step has none for it).
  const clean: CleanOptions = { nfc: false, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false, lowercase: false };
  let next = 0;
  for (const n of list) {
    const at = CLEAN_NORMALIZERS.findIndex(([, ours], i) => i >= next && same(n, ours));
    check(at >= 0, () => `${source} has a normalizer (${isObject(n) ? String(n.type) : JSON.stringify(n)}) that minigpt's text cleaning does not do; it imports only the normalizers its own exports write (line endings, page breaks, control characters, blank lines, lowercase, NFC, in that order)`);
    clean[CLEAN_NORMALIZERS[at]![0]] = true;
    next = at + 1;
  }
  return clean;
}

function isObject(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The Split regex each hf-bpe pre-tokenizer is written with (after a Digits step for gpt2-digits). */
const HF_SPLIT_PATTERNS: Record<HfPretokenizer, string> = {
  'gpt2': GPT2_SPLIT_PATTERN, 'gpt2-digits': GPT2_SPLIT_PATTERN, 'qwen2': QWEN2_SPLIT_PATTERN, 'llama3': LLAMA3_SPLIT_PATTERN,
};

/**
 * Which of hf-bpe's pre-tokenizers a tokenizer.json's pre_tokenizer is, or null for none of them:
 * GPT-2's ByteLevel regex, alone or as a Split before a ByteLevel without its own regex, each
 * optionally after digits one by one; or Qwen2's or Llama 3's regex as such a Split.
 */
function hfPretokenizerOf(pre: unknown): HfPretokenizer | null {
  if (!isObject(pre)) return null;
  const steps = pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? pre.pretokenizers as unknown[] : [pre];
  const first = steps[0];
  const digits = isObject(first) && first.type === 'Digits';
  if (digits && first.individual_digits !== true) return null;
  const rest = digits ? steps.slice(1) : steps;
  const byteLevel = (x: unknown, ownRegex: boolean): boolean =>
    isObject(x) && x.type === 'ByteLevel' && (ownRegex ? x.use_regex !== false : x.use_regex === false) && x.add_prefix_space !== true;
  let gpt2 = false;
  if (rest.length === 1) gpt2 = byteLevel(rest[0], true);
  else if (rest.length === 2 && isObject(rest[0])) {
    const split = rest[0];
    const pattern = split.pattern as Json | undefined;
    const gpt2Regex = pattern?.Regex === GPT2_SPLIT_PATTERN || pattern?.Regex === String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
    const isolated = split.type === 'Split' && split.behavior === 'Isolated' && !split.invert && byteLevel(rest[1], false);
    gpt2 = isolated && gpt2Regex;
    if (isolated && !digits && pattern?.Regex === QWEN2_SPLIT_PATTERN) return 'qwen2';
    if (isolated && !digits && pattern?.Regex === LLAMA3_SPLIT_PATTERN) return 'llama3';
  }
  return gpt2 ? (digits ? 'gpt2-digits' : 'gpt2') : null;
}

/**
 * A BPE tokenizer.json's tokens by id (the added tokens, all special, among them), its merges as
 * "left right" strings, its special tokens by id, and the ids of those only added_tokens held.
 */
function hfBpeVocab(model: Json, added: Json[], hasNormalizer: boolean, source: string, allowPlain = false): { vocab: string[]; merges: string[]; special: Map<number, string>; plain: Map<number, string>; addedOnly: number[] } {
  check(isObject(model.vocab), `${source}: the BPE model has no "vocab" object`);
  // Every id's text: the vocabulary's, and the added tokens' (all special; some vocabularies hold them too).
  const textOf = new Map<number, string>();
  const vocabIdOf = new Map<string, number>();
  for (const [piece, id] of Object.entries(model.vocab as Record<string, unknown>)) {
    check(typeof id === 'number' && Number.isInteger(id) && id >= 0, () => `${source}: vocabulary entry ${JSON.stringify(piece)} has id ${JSON.stringify(id)}, not a whole number`);
    check(!textOf.has(id), () => `${source}: id ${id} is both ${JSON.stringify(textOf.get(id))} and ${JSON.stringify(piece)} in the vocabulary`);
    textOf.set(id, piece);
    vocabIdOf.set(piece, id);
  }
  // The ids the tokenizers library gives added tokens (it does not read their "id"): the
  // vocabulary's for a token it holds, else the next after the vocabulary and every added token
  // before it, in list order. A repeated one is skipped.
  const special = new Map<number, string>(), plain = new Map<number, string>();
  const addedTexts = new Set<string>();
  const addedOnly: number[] = [];
  let lastAdded = -1;
  for (const t of added) {
    check(isObject(t), () => `${source}: added_tokens holds ${JSON.stringify(t)}, not a token object`);
    const isSpecial = t.special === true;
    check(isSpecial || allowPlain, `${source}: added token ${JSON.stringify(t.content)} is not special; minigpt's SentencePiece-style BPE only has special added tokens`);
    const text = t.content as string;
    check(typeof text === 'string' && text !== '', () => `${source}: added token ${JSON.stringify(t)} has no text`);
    const kind = isSpecial ? 'special token' : 'added token';
    check(!t.lstrip && !t.rstrip && !t.single_word,
      () => `${source}: ${kind} ${JSON.stringify(text)} has lstrip, rstrip or single_word set, which change where the tokenizers library finds it; minigpt finds an added token's exact text only`);
    check(!(t.normalized === true && hasNormalizer),
      () => `${source}: ${kind} ${JSON.stringify(text)} is found in the normalized text ("normalized": true), which changes where the tokenizers library finds it; minigpt finds an added token's exact text only`);
    if (addedTexts.has(text)) continue;
    addedTexts.add(text);
    let id = vocabIdOf.get(text);
    if (id === undefined) {
      id = lastAdded >= vocabIdOf.size ? lastAdded + 1 : vocabIdOf.size;
      const given = id;
      check(!textOf.has(given), () => `${source}: added token ${JSON.stringify(text)} gets id ${given} from the tokenizers library, which the vocabulary gives ${JSON.stringify(textOf.get(given))}`);
      addedOnly.push(id);
    }
    lastAdded = Math.max(lastAdded, id);
    textOf.set(id, text);
    (isSpecial ? special : plain).set(id, text);
  }
  const vocab: string[] = new Array(textOf.size);
  for (const [id, text] of textOf) {
    check(id < textOf.size, () => `${source}: the ids of its ${textOf.size} tokens must be 0 to ${textOf.size - 1} without gaps (found id ${id})`);
    vocab[id] = text;
  }
  const mergesRaw = model.merges;
  check(Array.isArray(mergesRaw), `${source}: the BPE model has no "merges" list`);
  const merges = mergesRaw.map((m, i) => {
    const pair = typeof m === 'string' ? m.split(' ') : m;
    check(Array.isArray(pair) && pair.length === 2 && pair.every((x) => typeof x === 'string'), () => `${source}: merges[${i}] ${JSON.stringify(m)} is not a pair of tokens`);
    return `${pair[0]} ${pair[1]}`;
  });
  return { vocab, merges, special, plain, addedOnly };
}

/** How a SentencePiece-style tokenizer.json adds "▁" (sp-bpe's spaces and split), and the normalizer steps before (cleaning, as minigpt's exports write it). */
interface SpLayout { spaces: SpSpaces; split: boolean; cleaning: unknown[] }

/**
 * The SentencePiece-style layout of a BPE tokenizer.json (Llama 2's: byte fallback, "▁" for a
 * space), or null when it is not one. Two layouts are read: the legacy normalizer Prepend("▁") +
 * Replace(" ", "▁") with no pre-tokenizer, and the Metaspace pre-tokenizer ("▁", prepend_scheme
 * "always" or "first") with no normalizer. One that looks SentencePiece-style but is neither is a
 * MinigptError.
 */
function spLayoutOf(json: Json, source: string): SpLayout | null {
  const model = json.model as Json;
  const normalizer = json.normalizer, pre = json.pre_tokenizer;
  const steps = (x: unknown, key: string): unknown[] => (isObject(x) && x.type === 'Sequence' && Array.isArray(x[key]) ? x[key] as unknown[] : x === null || x === undefined ? [] : [x]);
  const normSteps = steps(normalizer, 'normalizers'), preSteps = steps(pre, 'pretokenizers');
  const isPrepend = (n: unknown): boolean => isObject(n) && n.type === 'Prepend' && n.prepend === SP_SPACE;
  const isSpaceReplace = (n: unknown): boolean => isObject(n) && n.type === 'Replace' && isObject(n.pattern) && n.pattern.String === ' ' && n.content === SP_SPACE;
  const isMetaspace = (p: unknown): p is Json => isObject(p) && p.type === 'Metaspace';
  const looksSp = model.byte_fallback === true || normSteps.some((n) => isPrepend(n) || isSpaceReplace(n)) || preSteps.some(isMetaspace);
  if (!looksSp) return null;
  const n = normSteps.length;
  if (n >= 2 && isPrepend(normSteps[n - 2]) && isSpaceReplace(normSteps[n - 1]) && preSteps.length === 0) {
    return { spaces: 'prepend', split: false, cleaning: normSteps.slice(0, -2) };
  }
  const meta = preSteps[0];
  if (!normSteps.some((x) => isPrepend(x) || isSpaceReplace(x)) && preSteps.length === 1 && isMetaspace(meta) && meta.replacement === SP_SPACE) {
    const scheme = meta.prepend_scheme ?? (meta.add_prefix_space === false ? 'never' : 'always');
    check(scheme === 'always' || scheme === 'first', () => `${source}: the Metaspace pre-tokenizer's prepend_scheme is ${JSON.stringify(scheme)}; minigpt's sp-bpe tokenizer adds the leading "${SP_SPACE}" as "always" or "first" only`);
    return { spaces: scheme as SpSpaces, split: meta.split !== false, cleaning: normSteps };
  }
  throw new MinigptError(`${source}: a SentencePiece-style BPE (byte fallback or "${SP_SPACE}" for spaces) whose normalizer and pre-tokenizer (${JSON.stringify(normalizer ?? null).slice(0, 80)}; ${JSON.stringify(pre ?? null).slice(0, 80)}) are neither Llama 2's legacy layout (Prepend and Replace) nor a Metaspace pre-tokenizer; minigpt cannot reproduce it exactly`);
}

/**
 * The part of a tokenizer.json's normalizer that cleans text (cleanFromHfNormalizer reads it), or
 * null for none: all of it, but for a SentencePiece-style one whose space steps are its tokenizer's.
 */
export function hfCleaningNormalizer(json: unknown, source: string): unknown {
  if (!isObject(json)) return null;
  const sp = isObject(json.model) && json.model.type === 'BPE' ? spLayoutOf(json, source) : null;
  if (sp === null) return json.normalizer ?? null;
  return sp.cleaning.length === 0 ? null : { type: 'Sequence', normalizers: sp.cleaning };
}

/** An sp-bpe tokenizer from a SentencePiece-style tokenizer.json (spLayoutOf says it is one). */
function spBpeFromHfJson(json: Json, model: Json, added: Json[], layout: SpLayout, source: string): Tokenizer {
  check(!model.continuing_subword_prefix && !model.end_of_word_suffix && model.dropout == null && !model.ignore_merges,
    `${source}: BPE options (continuing_subword_prefix, end_of_word_suffix, dropout or ignore_merges) that minigpt's sp-bpe tokenizer does not have`);
  const decoder = json.decoder as Json | null | undefined;
  const decoderSteps = isObject(decoder) && decoder.type === 'Sequence' && Array.isArray(decoder.decoders) ? decoder.decoders as unknown[] : [decoder];
  const knownDecoder = (d: unknown): boolean => isObject(d) && (d.type === 'ByteFallback' || d.type === 'Fuse' || d.type === 'Metaspace'
    || (d.type === 'Replace' && isObject(d.pattern) && d.pattern.String === SP_SPACE && d.content === ' ')
    || (d.type === 'Strip' && d.content === ' ' && d.start === 1 && d.stop === 0));
  check(decoderSteps.every(knownDecoder),
    () => `${source}: the decoder (${JSON.stringify(decoder ?? null).slice(0, 120)}) is not SentencePiece's ("${SP_SPACE}" to a space, byte fallback, one leading space dropped); minigpt's sp-bpe tokenizer decodes that way only`);
  const { vocab, merges, special } = hfBpeVocab(model, added, json.normalizer !== null && json.normalizer !== undefined, source);
  const specialId = new Map([...special].map(([id, text]) => [text, id]));
  const unk = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  check(unk === undefined || vocab.includes(unk), () => `${source}: the unknown token ${JSON.stringify(unk)} is not in the vocabulary`);
  // The post-processor: nothing, or a template "<s> $A" that starts every text with a special token.
  const post = json.post_processor as Json | null | undefined;
  let addBos: string | undefined;
  if (isObject(post)) {
    const single = Array.isArray(post.single) ? post.single as unknown[] : [];
    const pieces = single.map((p) => (isObject(p) && isObject(p.SpecialToken) ? `special:${String(p.SpecialToken.id)}` : isObject(p) && isObject(p.Sequence) && p.Sequence.id === 'A' ? 'A' : '?'));
    const bosText = pieces.length === 2 && pieces[1] === 'A' && pieces[0]!.startsWith('special:') ? pieces[0]!.slice('special:'.length) : undefined;
    const templateIds = bosText !== undefined && isObject(post.special_tokens) && isObject(post.special_tokens[bosText]) ? (post.special_tokens[bosText] as Json).ids : undefined;
    check(post.type === 'TemplateProcessing' && (pieces.join(' ') === 'A' || (bosText !== undefined && specialId.has(bosText)
      && Array.isArray(templateIds) && templateIds.length === 1 && templateIds[0] === specialId.get(bosText))),
      () => `${source}: the post-processor (${JSON.stringify(post).slice(0, 120)}) is not a template that adds nothing or one start-of-text token before the text ("<s> $A"); minigpt cannot reproduce it exactly`);
    addBos = bosText;
  }
  return tokenizerFromJson({
    type: 'sp-bpe',
    vocab,
    merges,
    special: Object.fromEntries([...special].sort((a, b) => a[0] - b[0]).map(([id, text]) => [text, id])),
    ...(unk !== undefined ? { unk } : {}),
    byteFallback: model.byte_fallback === true,
    fuseUnk: model.fuse_unk === true,
    spaces: layout.spaces,
    split: layout.split,
    ...(addBos !== undefined ? { addBos } : {}),
  }, source);
}

/**
 * The tokenizer a tokenizer.json stands for, when one of ours represents it exactly: our char
 * export (WordLevel over single characters, split per character), GPT-2's vocabulary (-> gpt2),
 * a byte-level BPE laid out like our trained ones (bytes 0-255 in order, merge i -> 256 + i,
 * special tokens after; -> bpe), or any other byte-level BPE whose pre-tokenizer is GPT-2's,
 * alone or after digits one by one, or Qwen2's or Llama 3's split (-> hf-bpe), or a SentencePiece-style
 * BPE with byte fallback as Llama 2's (-> sp-bpe). Anything else is a MinigptError naming what differs
 * (Llama 3's own file: its post-processor puts <|begin_of_text|> before every text, which byte-level
 * kinds do not do).
 */
export function tokenizerFromHfJson(json: unknown, source: string): Tokenizer {
  check(isObject(json) && isObject(json.model), `${source} is not a Hugging Face tokenizer.json (no "model" object)`);
  const model = json.model as Json;
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as Json[]) : [];
  check(model.type === 'BPE' || model.type === 'WordLevel', `${source}: tokenizer model ${JSON.stringify(model.type)} is not supported; minigpt imports BPE (byte-level as GPT-2's, or SentencePiece-style as Llama 2's) and its own character tokenizer`);
  // SentencePiece-style BPE (Llama 2): its post-processor may add a BOS token, which it records.
  const sp = model.type === 'BPE' ? spLayoutOf(json, source) : null;
  if (sp !== null) return spBpeFromHfJson(json, model, added, sp, source);
  const post = json.post_processor as Json | null | undefined;
  // transformers re-saves a tokenizer without one as a template that adds nothing.
  const addsNothing = (p: Json): boolean => p.type === 'ByteLevel' || (p.type === 'TemplateProcessing' && Array.isArray(p.single)
    && p.single.every((piece) => isObject(piece) && !('SpecialToken' in piece)) && (!isObject(p.special_tokens) || Object.keys(p.special_tokens).length === 0))
    || (p.type === 'Sequence' && Array.isArray(p.processors) && p.processors.every((q) => isObject(q) && addsNothing(q)));
  const addedBy = (p: unknown): string[] => !isObject(p) ? [] : p.type === 'Sequence' && Array.isArray(p.processors) ? p.processors.flatMap(addedBy)
    : Array.isArray(p.single) ? p.single.flatMap((piece) => (isObject(piece) && isObject(piece.SpecialToken) ? [String(piece.SpecialToken.id)] : [])) : [];
  check(post === null || post === undefined || (isObject(post) && addsNothing(post)),
    () => `${source} has a ${isObject(post) ? String(post.type) : 'non-standard'} post-processor, which adds tokens (such as a BOS token) to what it encodes${addedBy(post).length > 0 ? ` (this one: ${addedBy(post).map((t) => JSON.stringify(t)).join(', ')})` : ''}; minigpt's byte-level and character tokenizers add none, so it cannot be imported exactly`);

  if (model.type === 'WordLevel') {
    const pre = json.pre_tokenizer as Json | null;
    check(
      isObject(pre) && pre.type === 'Split' && isObject(pre.pattern) && ['[\\s\\S]', '(?s:.)'].includes(pre.pattern.Regex as string) && pre.behavior === 'Isolated',
      `${source}: a WordLevel tokenizer is imported only as minigpt's character tokenizer (a Split pre-tokenizer isolating every character); this one splits differently`,
    );
    // transformers' save_pretrained lists the unk character as an added token: an added token that
    // is one of the vocabulary's characters under its own id is that. Any other must be a special
    // token ("<|endoftext|>"), with the ids after the characters.
    const wordVocab = model.vocab as Record<string, number>;
    const extra = added.filter((t) => wordVocab[t.content as string] !== t.id || [...(t.content as string)].length !== 1);
    const notSpecial = extra.filter((t) => t.special !== true);
    check(notSpecial.length === 0, `${source}: the character tokenizer has added tokens that are not special (${notSpecial.map((t) => JSON.stringify(t.content)).join(', ')}); minigpt's character tokenizer has only special added tokens`);
    const specialIds = new Set(extra.map((t) => t.id as number));
    const vocab = Object.entries(wordVocab).filter(([, id]) => !specialIds.has(id)).sort((a, b) => a[1] - b[1]);
    const specials = [...extra].sort((a, b) => (a.id as number) - (b.id as number));
    specials.forEach((t, i) => check(t.id === vocab.length + i, `${source}: special token ${JSON.stringify(t.content)} has id ${t.id}; the special token ids must follow the ${vocab.length} characters`));
    const specialNames = specials.map((t) => t.content as string);
    vocab.forEach(([piece, id], i) => {
      check(id === i, `${source}: character vocabulary ids must be 0..${vocab.length - 1} without gaps (found ${id} at position ${i})`);
      check([...piece].length === 1, `${source}: vocabulary entry ${JSON.stringify(piece)} is not one character`);
    });
    const unkToken = model.unk_token as string | undefined;
    const last = vocab[vocab.length - 1]?.[0];
    const hasUnk = unkToken !== undefined && unkToken === last;
    const pieces = vocab.map(([p]) => p);
    return hasUnk ? charTokenizerFromVocab(pieces.slice(0, -1), last!, specialNames) : charTokenizerFromVocab(pieces, null, specialNames);
  }

  const pretokenizer = hfPretokenizerOf(json.pre_tokenizer);
  check(pretokenizer !== null,
    `${source}: the pre-tokenizer is not GPT-2's byte-level one, nor digits one by one and then GPT-2's, nor Qwen2's or Llama 3's split (${JSON.stringify(json.pre_tokenizer).slice(0, 120)}); minigpt's byte-level tokenizers split text with those regexes only, so this tokenizer cannot be reproduced exactly`);
  check(!model.byte_fallback && !model.continuing_subword_prefix && !model.end_of_word_suffix && model.dropout == null,
    `${source}: BPE options (byte_fallback, continuing_subword_prefix, end_of_word_suffix or dropout) that minigpt's byte-level BPE does not have`);
  const decoder = json.decoder as Json | null | undefined;
  check(decoder === null || decoder === undefined || (isObject(decoder) && decoder.type === 'ByteLevel'),
    () => `${source}: the decoder is ${isObject(decoder) ? String(decoder.type) : JSON.stringify(decoder)}, not ByteLevel; minigpt's byte-level tokenizers decode tokens to their bytes, so this tokenizer cannot be reproduced exactly`);

  const { vocab, merges, special, plain, addedOnly } = hfBpeVocab(model, added, json.normalizer !== null && json.normalizer !== undefined, source, true);
  const specialSorted = [...special].sort((a, b) => a[0] - b[0]);
  const ordinaryCount = vocab.length - special.size;
  const specialsLast = specialSorted.every(([id], i) => id === ordinaryCount + i);

  if (pretokenizer === 'gpt2' && specialsLast && plain.size === 0) {
    const tokenBytes = vocab.slice(0, ordinaryCount).map(byteLevelToBytes);
    // GPT-2's vocabulary?
    if (ordinaryCount === GPT2_VOCAB_SIZE - 1 && specialSorted.length === 1 && specialSorted[0]![1] === '<|endoftext|>') {
      const gpt2 = gpt2Tokenizer();
      let same = true;
      for (let id = 0; id < ordinaryCount && same; id++) {
        const a = gpt2.tokenBytes(id), b = tokenBytes[id];
        same = b !== null && b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
      }
      if (same) return gpt2;
    }
    // Laid out like our trained BPE: bytes 0-255 in order, merge i makes id 256 + i?
    const idOf = new Map(vocab.slice(0, ordinaryCount).map((piece, id) => [piece, id]));
    const ours = ordinaryCount >= 256 && merges.length === ordinaryCount - 256
      && tokenBytes.slice(0, 256).every((t, b) => t !== null && t.length === 1 && t[0] === b)
      && merges.every((m, i) => {
        const [l, r] = m.split(' ') as [string, string];
        return idOf.has(l) && idOf.has(r) && idOf.get(l + r) === 256 + i;
      });
    if (ours && !model.ignore_merges) {
      return tokenizerFromJson({
        type: 'bpe',
        pretokenizer: 'gpt2',
        merges: merges.map((m) => m.split(' ').map((piece) => idOf.get(piece)).join(' ')),
        special: Object.fromEntries(specialSorted.map(([id, text]) => [text, id])),
      }, source);
    }
  }
  return tokenizerFromJson({
    type: 'hf-bpe',
    pretokenizer,
    vocab,
    merges,
    special: Object.fromEntries(specialSorted.map(([id, text]) => [text, id])),
    ignoreMerges: model.ignore_merges === true,
    ...(plain.size > 0 ? { plainAdded: Object.fromEntries([...plain].sort((a, b) => a[0] - b[0]).map(([id, text]) => [text, id])) } : {}),
    ...(addedOnly.length > 0 ? { addedOnly: addedOnly.sort((a, b) => a - b) } : {}),
  }, source);
}

// ---------------------------------------------------------------------------------------------
// Config

const TORCH_DTYPE: Record<WeightDType, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** config.json of the HF export. */
export function hfConfig(config: ModelConfig, tokenizer: Tokenizer, dtype: WeightDType = 'F32'): Json {
  const s = hfSpecialTokens(tokenizer);
  const llama = config.mlp === 'swiglu';
  if (config.qkv_bias) {
    check(llama, () => `a GELU-MLP model with q, k and v biases has no Hugging Face architecture (Arcee's attention_bias adds o_proj's too, Qwen2's MLP is SwiGLU); train it with --mlp swiglu to export it`);
    // transformers (5) tokenizes every Qwen2 model with Qwen2's own pipeline (NFC, Qwen2's split,
    // byte-level BPE), whatever tokenizer.json says: only such a tokenizer gives the same ids there.
    const tj = tokenizer.toJSON() as { pretokenizer?: string; ignoreMerges?: boolean };
    check(tokenizer.kind === 'hf-bpe' && tj.pretokenizer === 'qwen2' && tj.ignoreMerges === false,
      () => `a model with q, k and v biases exports as Qwen2ForCausalLM, and transformers tokenizes every Qwen2 model with Qwen2's own tokenizer (its split, NFC), not this ${tokenizer.kind} tokenizer: the ids would differ there; export it to GGUF instead, or train it with a Qwen2 tokenizer (--tokenizer QWEN_DIR/tokenizer.json)`);
    // Qwen2ForCausalLM: LLaMA with q, k and v biases; every layer full attention.
    return {
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      attention_dropout: 0.0,
      bos_token_id: s.bos ? s.bos[1] : null,
      eos_token_id: s.eos ? s.eos[1] : null,
      hidden_act: 'silu',
      hidden_size: config.d_model,
      initializer_range: 0.02,
      intermediate_size: config.intermediate_size,
      max_position_embeddings: config.context,
      max_window_layers: config.n_layers,
      num_attention_heads: config.n_heads,
      num_hidden_layers: config.n_layers,
      num_key_value_heads: config.n_kv_heads,
      rms_norm_eps: config.rms_norm_eps,
      rope_scaling: null,
      rope_theta: config.rope_theta,
      sliding_window: null,
      tie_word_embeddings: config.tie_embeddings,
      torch_dtype: TORCH_DTYPE[dtype],
      use_cache: true,
      use_sliding_window: false,
      vocab_size: config.vocab_size,
      minigpt: { init: config.init, dropout: config.dropout },
    };
  }
  return {
    architectures: [llama ? 'LlamaForCausalLM' : 'ArceeForCausalLM'],
    model_type: llama ? 'llama' : 'arcee',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: s.bos ? s.bos[1] : null,
    eos_token_id: s.eos ? s.eos[1] : null,
    pad_token_id: null,
    head_dim: headDim(config),
    hidden_act: llama ? 'silu' : 'gelu_pytorch_tanh',
    hidden_size: config.d_model,
    initializer_range: 0.02,
    intermediate_size: config.intermediate_size,
    max_position_embeddings: config.context,
    mlp_bias: false,
    num_attention_heads: config.n_heads,
    num_hidden_layers: config.n_layers,
    num_key_value_heads: config.n_kv_heads,
    pretraining_tp: 1,
    rms_norm_eps: config.rms_norm_eps,
    rope_scaling: null,
    rope_theta: config.rope_theta,
    tie_word_embeddings: config.tie_embeddings,
    torch_dtype: TORCH_DTYPE[dtype],
    use_cache: true,
    vocab_size: config.vocab_size,
    minigpt: { init: config.init, dropout: config.dropout },
  };
}

function num(o: Json, key: string, source: string): number {
  const v = o[key];
  check(typeof v === 'number' && Number.isFinite(v), `${source}: "${key}" is missing or not a number`);
  return v;
}

/** Our ModelConfig from a transformers config.json, or a MinigptError saying what we cannot run. */
export function configFromHf(json: unknown, source: string, context?: number): ModelConfig {
  check(isObject(json), `${source} is not a JSON object`);
  const arch = Array.isArray(json.architectures) ? (json.architectures as string[]).join(', ') : '';
  const type = json.model_type;
  check(json.format !== CHECKPOINT_FORMAT, () => `${source} is a minigpt checkpoint's config, not a Hugging Face model's: use the checkpoint as it is (${adviceFor('--ckpt, --init-from', 'loadModel, loadCheckpoint, initFrom')}), no import needed`);
  check(type === 'llama' || type === 'arcee' || type === 'qwen2',
    `${source}: model_type ${JSON.stringify(type)}${arch ? ` (${arch})` : ''} is not supported; minigpt imports LLaMA-architecture models (model_type "llama", "arcee" for a non-gated MLP, or "qwen2" for q, k and v biases)`);
  // transformers builds the class architectures names: a head other than the causal LM one is another model.
  const causal = type === 'llama' ? 'LlamaForCausalLM' : type === 'qwen2' ? 'Qwen2ForCausalLM' : 'ArceeForCausalLM';
  check(!Array.isArray(json.architectures) || json.architectures.length === 0 || json.architectures.includes(causal),
    () => `${source}: architectures ${arch} is not ${causal}; minigpt imports causal language models of model_type ${JSON.stringify(type)}`);
  const act = json.hidden_act ?? 'silu';
  if (type !== 'arcee') check(act === 'silu', `${source}: hidden_act ${JSON.stringify(act)}; minigpt's SwiGLU MLP uses silu`);
  else check(act === 'gelu_pytorch_tanh' || act === 'gelu_new', `${source}: Arcee hidden_act ${JSON.stringify(act)}; minigpt's non-gated MLP is GELU (tanh), "gelu_pytorch_tanh"`);
  if (type === 'qwen2') {
    // Qwen2 attends over a sliding window in the layers from max_window_layers on where
    // use_sliding_window is set: the same as full attention only if the window spans the context
    // (`context`: the one the import keeps, else max_position_embeddings).
    const window = json.sliding_window, used = context ?? json.max_position_embeddings;
    check(!json.use_sliding_window || (typeof window === 'number' && typeof used === 'number' && window >= used),
      () => `${source}: use_sliding_window is true (a window of ${shownValue(window)} tokens); minigpt's attention sees the whole context, so it runs this model exactly only at a context no longer than the window (${optionName('context')})`);
    check(json.layer_types === undefined || json.layer_types === null || (Array.isArray(json.layer_types) && json.layer_types.every((t) => t === 'full_attention')),
      () => `${source}: layer_types ${JSON.stringify(json.layer_types).slice(0, 80)} has layers other than "full_attention"; minigpt's attention sees the whole context`);
  }
  check(!json.attention_bias, `${source}: attention_bias is true (a bias on q, k, v and o_proj); minigpt's models have no o_proj bias`);
  check(!json.mlp_bias, `${source}: mlp_bias is true; minigpt's models have no MLP biases`);
  check(json.pretraining_tp === undefined || json.pretraining_tp === 1, `${source}: pretraining_tp ${json.pretraining_tp} is not supported (only 1)`);
  let ropeTheta = json.rope_theta as number | undefined;
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const rs = json[key];
    if (rs === null || rs === undefined) continue;
    check(isObject(rs), `${source}: "${key}" is not an object`);
    const kind = rs.rope_type ?? rs.type ?? 'default';
    check(kind === 'default', `${source}: rope scaling ${JSON.stringify(kind)} is not supported; minigpt implements plain RoPE (rope_type "default")`);
    if (typeof rs.rope_theta === 'number') ropeTheta = rs.rope_theta;
  }
  check(typeof ropeTheta === 'number', `${source}: no rope_theta`);
  const C = num(json, 'hidden_size', source), H = num(json, 'num_attention_heads', source);
  check(Number.isInteger(H) && H >= 1, `${source}: "num_attention_heads" must be a whole number of at least 1 (got ${H})`);
  if (json.head_dim !== undefined && json.head_dim !== null) {
    check(json.head_dim === C / H, `${source}: head_dim ${json.head_dim} differs from hidden_size / num_attention_heads = ${C / H}; minigpt needs them equal`);
  }
  const extra = isObject(json.minigpt) ? json.minigpt : {};
  const init = INIT_STRATEGIES.includes(extra.init as InitStrategy) ? (extra.init as InitStrategy) : 'gpt2';
  const dropout = typeof extra.dropout === 'number' ? extra.dropout : 0;
  try {
    return resolveConfig({
      vocab_size: num(json, 'vocab_size', source),
      d_model: C,
      n_heads: H,
      n_kv_heads: (json.num_key_value_heads as number | undefined) ?? H,
      n_layers: num(json, 'num_hidden_layers', source),
      context: num(json, 'max_position_embeddings', source),
      mlp: type === 'arcee' ? 'gelu' : 'swiglu',
      intermediate_size: num(json, 'intermediate_size', source),
      rms_norm_eps: num(json, 'rms_norm_eps', source),
      rope_theta: ropeTheta,
      tie_embeddings: Boolean(json.tie_word_embeddings),
      qkv_bias: type === 'qwen2',
      dropout,
      init,
    });
  } catch (e) {
    // num() names the file already; resolveConfig's checks do not.
    if (e instanceof MinigptError) throw e.message.startsWith(`${source}: `) ? e : new MinigptError(`${source}: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Export

/** How hfExportFiles and exportHf write the Hugging Face export. */
export interface HfExportOptions {
  /** Storage type of model.safetensors, also recorded as config.json's torch_dtype (default F32). */
  dtype?: WeightDType;
  /** exportHf: replace an earlier export in the folder (default false: a folder that is not empty is refused). */
  overwrite?: boolean;
  /** Hears of what transformers will do otherwise than minigpt (a Qwen2 model trained on text cleaned otherwise than NFC alone); one line each. */
  onWarning?: (message: string) => void;
}

/**
 * transformers normalizes a Qwen2 model's text with NFC alone, whatever tokenizer.json says: where
 * the model was trained on text cleaned otherwise (minigpt's default cleaning of line endings,
 * page breaks, control characters and blank lines; lowercase; no NFC), such text gets other ids
 * there than minigpt gives its cleaned prompts.
 */
function warnQwen2Cleaning(ckpt: Checkpoint, onWarning: ((message: string) => void) | undefined): void {
  const recorded = recordedClean(ckpt);
  const clean: CleanOptions = recorded ? { ...DEFAULT_CLEAN, ...recorded } : { nfc: false, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false, lowercase: false };
  const names = (Object.entries(CLEAN_STEP_NAMES) as [string, keyof CleanOptions][]).filter(([, key]) => key !== 'nfc' && clean[key]).map(([name]) => name);
  if (names.length === 0 && clean.nfc) return;
  onWarning?.(`transformers tokenizes a Qwen2 model's text with NFC alone, and this model's text was cleaned ${names.length > 0 ? `with ${names.join(', ')}` : 'without NFC'}: ` +
    `clean prompts for it as minigpt does (text those steps change gets other ids in transformers than here)`);
}

/** The files of the HF export, name -> bytes (what exportHf writes). */
export function hfExportFiles(ckpt: Checkpoint, opts: HfExportOptions = {}): Map<string, Uint8Array> {
  checkCheckpointArg(ckpt, 'hfExportFiles');
  const dtype = opts.dtype ?? 'F32';
  check(dtype === 'F32' || dtype === 'F16' || dtype === 'BF16', `a Hugging Face export's dtype must be F32, F16 or BF16 (got ${shownValue(dtype)})`);
  const { config, tokenizer } = ckpt;
  check(tokenizer.vocabSize <= config.vocab_size, `the tokenizer has ${tokenizer.vocabSize} tokens, more than the model's vocab_size ${config.vocab_size}`);
  const text = (s: string): Uint8Array => new TextEncoder().encode(s);
  const json = (o: unknown): Uint8Array => text(JSON.stringify(o, null, 2) + '\n');
  const files = new Map<string, Uint8Array>();
  const cfg = hfConfig(config, tokenizer, dtype);
  if (config.qkv_bias) warnQwen2Cleaning(ckpt, opts.onWarning);
  files.set('config.json', json(cfg));
  // No max_length: with one set, every generate(max_new_tokens=...) in transformers warns that both are.
  // Sampling as `minigpt sample` does by default: temperature 0.8, every token (transformers' own default top_k is 50).
  const gen: Json = { _from_model_config: true, do_sample: true, temperature: 0.8, top_k: 0, top_p: 1.0 };
  if (cfg.bos_token_id !== null) gen.bos_token_id = cfg.bos_token_id;
  if (cfg.eos_token_id !== null) gen.eos_token_id = cfg.eos_token_id;
  files.set('generation_config.json', json(gen));
  files.set('model.safetensors', encodeSafetensors(namedWeights(config, ckpt.weights, dtype), { format: 'pt' }));
  files.set('tokenizer.json', text(hfTokenizerJson(tokenizer, recordedClean(ckpt))));
  const { config: tokConfig, specialMap } = hfTokenizerConfigs(tokenizer, config.context);
  files.set('tokenizer_config.json', json(tokConfig));
  files.set('special_tokens_map.json', json(specialMap));
  return files;
}

/**
 * What a transformers model directory holds: our export's files, and what save_pretrained adds
 * (sharded weights and their index, slow-tokenizer files, a chat template).
 */
const HF_EXPORT_FILE = /^(config\.json|generation_config\.json|model\.safetensors|model\.safetensors\.index\.json|model-\d+-of-\d+\.safetensors|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja)$/;

/**
 * Writes `files` as directory `dir`, atomically (temporary sibling, then rename). A non-empty
 * directory is replaced only with `overwrite`, and only when it is a model export (nothing but a
 * transformers model's files): never a checkpoint, a run, or a folder with anything else in it.
 */
export async function writeDirAtomic(dir: string, files: Map<string, Uint8Array>, opts: { overwrite?: boolean } = {}): Promise<void> {
  dir = resolve(dir);
  if (await exists(dir)) {
    const info = await stat(dir);
    check(info.isDirectory(), `${dir} exists and is a file; choose another output directory`);
    const entries = await readdir(dir);
    if (entries.length > 0) {
      check(opts.overwrite, () => `${dir} exists and is not empty; refusing to overwrite it (choose another output directory or pass ${optionSetting('overwrite', true, '--force')})`);
      const others = entries.filter((name) => !HF_EXPORT_FILE.test(name)).sort();
      const list = others.slice(0, 3).join(', ') + (others.length > 3 ? `, and ${others.length - 3} more` : '');
      check(others.length === 0, () => `${dir} holds ${list}, which no model export has; ${optionSetting('overwrite', true, '--force')} replaces only an earlier export, so nothing else is lost: choose another output directory`);
      let config: unknown = null;
      try {
        config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
      } catch { /* no config.json, or not JSON: a half-written export */ }
      check((config as { format?: unknown } | null)?.format !== CHECKPOINT_FORMAT, () => `${dir} is a minigpt checkpoint, not an export; ${optionSetting('overwrite', true, '--force')} does not replace it: choose another output directory`);
    }
  }
  try {
    await writeDirFiles(dir, files, dir);
  } catch (e) {
    throw e instanceof MinigptError ? e : new MinigptError(`cannot write ${dir}: ${(e as Error).message}`);
  }
}

/** Writes the HF export of `ckpt` to `outDir` (see the file comment). */
export async function exportHf(ckpt: Checkpoint, outDir: string, opts: HfExportOptions = {}): Promise<void> {
  checkNodeOnly('exportHf()');
  checkCheckpointArg(ckpt, 'exportHf');
  checkOptionNames(opts, ['dtype', 'overwrite', 'onWarning'], 'exportHf');
  await writeDirAtomic(outDir, hfExportFiles(ckpt, opts), opts);
}

// ---------------------------------------------------------------------------------------------
// Import

async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MinigptError(`${path} is missing; ${what}`);
    throw new MinigptError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new MinigptError(`${path} is not valid JSON`);
  }
}

/** All tensors of an HF model directory: model.safetensors, or the shards model.safetensors.index.json lists. */
export async function readHfTensors(dir: string): Promise<Map<string, NamedTensor>> {
  const index = join(dir, 'model.safetensors.index.json');
  const single = join(dir, 'model.safetensors');
  let files: string[];
  if (await exists(index)) {
    const json = (await readJsonFile(index, '')) as Json;
    check(isObject(json.weight_map), `${index} has no "weight_map"`);
    files = [...new Set(Object.values(json.weight_map as Record<string, unknown>))].map(String).sort();
    // Shards live beside the index: a name with a path in it could read any file.
    for (const f of files) check(/^[^/\\]+$/.test(f) && f !== '.' && f !== '..', () => `${index}: weight_map names ${JSON.stringify(f)}, not a file beside it; the model folder is broken`);
  } else if (await exists(single)) {
    files = ['model.safetensors'];
  } else {
    const bin = (await readdir(dir)).find((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.pth'));
    throw new MinigptError(
      bin
        ? `${dir} holds PyTorch pickles (${bin}), not safetensors; convert with model.save_pretrained(dir, safe_serialization=True) first`
        : `${dir} has neither model.safetensors nor model.safetensors.index.json`,
    );
  }
  const out = new Map<string, NamedTensor>();
  for (const f of files) {
    const path = join(dir, f);
    let bytes: Uint8Array;
    try {
      bytes = await readWholeFile(path);
    } catch (e) {
      if (e instanceof MinigptError) throw e;
      throw new MinigptError(`cannot read ${path}: ${(e as Error).message}`);
    }
    for (const [name, t] of decodeSafetensors(bytes, path).tensors) {
      check(!out.has(name), `${name} appears in more than one shard of ${dir}`);
      out.set(name, t);
    }
  }
  return out;
}

/**
 * The model's own eos_token_id and bos_token_id: generation_config.json's (what transformers'
 * generate uses), else config.json's; the first of a list.
 */
async function readModelEndTokenIds(dir: string, config: Json): Promise<{ eos?: number; bos?: number }> {
  const first = (v: unknown): number | undefined => (typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : undefined);
  const genPath = join(dir, 'generation_config.json');
  const gen = (await exists(genPath)) ? (await readJsonFile(genPath, '')) as Json : {};
  const pick = (key: string): number | undefined => first(isObject(gen) ? gen[key] : undefined) ?? first(config[key]);
  const eos = pick('eos_token_id'), bos = pick('bos_token_id');
  return { ...(eos !== undefined ? { eos } : {}), ...(bos !== undefined ? { bos } : {}) };
}

/**
 * An imported hf-bpe or sp-bpe tokenizer with the model's end-of-text and start-of-text tokens recorded
 * where they differ from what minigpt takes by default (<|endoftext|> for both): a chat model's
 * "<|im_end|>". Ids that are no special token of the tokenizer are left out; other kinds as they are.
 */
function withModelEndTokens(tokenizer: Tokenizer, ids: { eos?: number; bos?: number }): Tokenizer {
  if (tokenizer.kind !== 'hf-bpe' && tokenizer.kind !== 'sp-bpe') return tokenizer;
  const textOf = new Map(Object.entries(tokenizer.specialTokens ?? {}).map(([text, id]) => [id, text]));
  const given = (id: number | undefined): string | undefined => (id === undefined ? undefined : textOf.get(id));
  // Recorded only where they differ from the default: eos from <|endoftext|>, bos from the token
  // every text starts with (sp-bpe's addBos), else the end-of-text token (startOfTextToken).
  const defaultEos = endOfTextToken(tokenizer)?.[0];
  const eos = given(ids.eos) !== defaultEos ? given(ids.eos) : undefined;
  const bos = given(ids.bos) !== (tokenizer.addBos ?? eos ?? defaultEos) ? given(ids.bos) : undefined;
  if (eos === undefined && bos === undefined) return tokenizer;
  return tokenizerFromJson({ ...tokenizer.toJSON(), ...(eos !== undefined ? { eos } : {}), ...(bos !== undefined ? { bos } : {}) }, 'the imported tokenizer');
}

/** What readHfModel returns. */
export interface HfImportResult {
  /** The model as a minigpt checkpoint in memory (no training state). */
  checkpoint: Checkpoint;
  /** The weight dtype found in the files (the one all tensors share, else F32). */
  dtype: WeightDType;
}

/** How readHfModel reads a model. */
export interface HfImportOptions {
  /** Use at most this many positions (default: the model's max_position_embeddings). The weights
   * do not depend on it; evaluation windows, training batches and the KV cache are sized by it. */
  context?: number;
}

/** Reads an HF LLaMA model directory as a minigpt checkpoint (in memory). */
export async function readHfModel(dir: string, opts: HfImportOptions = {}): Promise<HfImportResult> {
  checkNodeOnly('readHfModel()');
  checkOptionNames(opts, ['context'], 'readHfModel');
  dir = resolve(dir);
  check(await exists(dir), `${dir} does not exist`);
  const configPath = join(dir, 'config.json');
  const configJson = await readJsonFile(configPath, 'a Hugging Face model directory has config.json');
  let config = configFromHf(configJson, configPath, opts.context);
  if (opts.context !== undefined) {
    check(Number.isInteger(opts.context) && opts.context >= 1 && opts.context <= config.context,
      () => `${optionName('context')} must be a whole number from 1 to the model's ${config.context} (its max_position_embeddings; got ${shownValue(opts.context)})`);
    config = { ...config, context: opts.context };
  }
  const tokPath = join(dir, 'tokenizer.json');
  check(await exists(tokPath), `${tokPath} is missing; minigpt imports the tokenizer from tokenizer.json (a fast tokenizer); sentencepiece-only models are not supported`);
  const tokJson = await readJsonFile(tokPath, '');
  const tokenizer = withModelEndTokens(tokenizerFromHfJson(tokJson, tokPath), await readModelEndTokenIds(dir, configJson as Json));
  const clean = cleanFromHfNormalizer(hfCleaningNormalizer(tokJson, tokPath), tokPath);
  check(tokenizer.vocabSize <= config.vocab_size, `${tokPath} has ${tokenizer.vocabSize} tokens but config.json's vocab_size is ${config.vocab_size}`);

  const raw = await readHfTensors(dir);
  const tensors = new Map<string, NamedTensor>();
  const dtypes = new Set<string>();
  for (const [name, t] of raw) {
    if (name.endsWith('.rotary_emb.inv_freq')) continue; // old transformers saved this buffer; it is recomputed
    check(!name.endsWith('.bias') || (config.qkv_bias && /\.self_attn\.[qkv]_proj\.bias$/.test(name)),
      () => `${dir}: tensor ${name} is a bias; minigpt's models have none but Qwen2's q, k and v biases`);
    if (name === 'lm_head.weight' && config.tie_embeddings) {
      const e = raw.get('model.embed_tokens.weight');
      const same = e && e.data.length === t.data.length && e.data.every((x, i) => x === t.data[i]);
      check(same, `${dir}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight`);
      continue;
    }
    dtypes.add(t.dtype);
    tensors.set(name, t);
  }
  const weights = flatWeights(config, tensors, dir);
  const dtype = dtypes.size === 1 ? ([...dtypes][0] as WeightDType) : 'F32';
  check(paramLayout(config).size === weights.length, 'internal: layout size');
  return { checkpoint: { config, weights, tokenizer, ...(clean ? { recorded: { clean } } : {}) }, dtype: dtype === ('I32' as WeightDType) ? 'F32' : dtype };
}
