/**
 * The `hf-bpe` tokenizer: a byte-level BPE that came from a Hugging Face tokenizer.json (`minigpt
 * import`) and is neither GPT-2's vocabulary nor laid out like minigpt's trained BPE: SmolLM's,
 * for one, whose special tokens come first and whose digits are split one by one. The ids, the
 * merges and their order, and the special tokens are the file's; encoding is the `tokenizers`
 * library's BPE: pre-tokens, then in each the adjacent pair whose merge comes first in the list is
 * joined (the leftmost on a tie) until none merges; with `ignoreMerges` a pre-token that is a
 * whole token is that token.
 *
 * JSON: { "type": "hf-bpe", "pretokenizer": "gpt2" | "gpt2-digits" | "qwen2" | "llama3", "vocab": [byte-level string
 * of each id], "merges": ["left right", ...] (byte-level strings, first merge first), "special":
 * { text: id }, "ignoreMerges": boolean, "plainAdded"?: { text: id }, "addedOnly"?: [id, ...], "eos"?:
 * text, "bos"?: text }. A special token's vocab entry is its text; plainAdded are the added tokens
 * that are not special (Qwen2.5's "<tool_call>"), whose vocab entry is their text too: the library
 * finds them in any text, before splitting it, so encode and encodeOrdinary do too (special tokens
 * only where encode is asked to); addedOnly lists the added tokens the file's BPE
 * vocabulary lacked (added_tokens alone held them), which its whole-word lookup (ignoreMerges)
 * therefore never finds; eos and bos name the special tokens the model ends and starts a text
 * with (its config's eos_token_id and bos_token_id), where those are not "<|endoftext|>".
 *
 * Pre-tokenizers: "gpt2" is GPT-2's regex (tokenizers' ByteLevel pre-tokenizer with its regex);
 * "gpt2-digits" first isolates every digit (\p{N}: tokenizers' Digits with individual_digits),
 * then applies GPT-2's regex to the rest (SmolLM). Both keep prepare's chunking exact: its safe
 * cuts (before a line break that follows a visible character, shards.ts) are pre-token boundaries
 * of GPT-2's regex, and isolating digits only adds boundaries, the same ones either side of a cut.
 * "qwen2" and "llama3" are the regexes of Qwen2's and Llama 3's tokenizer.json (a Split before a
 * ByteLevel without its own regex; QWEN2_SPLIT_PATTERN, LLAMA3_SPLIT_PATTERN): a letter run takes
 * one character before it that is no line break, letter or digit; digits go one by one (qwen2) or
 * in runs of up to three (llama3); punctuation takes the line breaks after it. That last rule puts
 * a line break in the same pre-token as the punctuation before it, so prepare cuts these texts
 * elsewhere: before a visible character that follows a line feed (safeCuts "line-start"), where no
 * alternative of the regex runs across (none matches a line break followed by a visible character).
 */
import { check } from '../errors.js';
import { checkSpecialTokenFields, describeValue, latin1, makeByteLevelTokenizer, makeGpt2Pretokenizer, makeRegexPretokenizer, readPieceMerges, readPieces, type ByteLevelTokenizer, type Pretokenizer } from './bpe.js';
import { byteLevelToBytes } from './byte-level.js';
import type { TokenizerJson } from './tokenizer.js';

/** How an hf-bpe tokenizer splits text before merging (see the file comment). */
export type HfPretokenizer = 'gpt2' | 'gpt2-digits' | 'qwen2' | 'llama3';
export const HF_PRETOKENIZERS: readonly HfPretokenizer[] = ['gpt2', 'gpt2-digits', 'qwen2', 'llama3'];

/** Qwen2's pre-token regex, spelled as its tokenizer.json spells it (Oniguruma's syntax, which the tokenizers library runs). */
export const QWEN2_SPLIT_PATTERN = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
/** Llama 3's: Qwen2's with digits in runs of up to three. */
export const LLAMA3_SPLIT_PATTERN = QWEN2_SPLIT_PATTERN.replace(String.raw`|\p{N}|`, String.raw`|\p{N}{1,3}|`);

/**
 * A Qwen2-style regex as JavaScript runs it the way the tokenizers library (Oniguruma) runs the
 * file's: `(?i:...)` (which Node 20's RegExp lacks) spelled out case by case; Oniguruma folds case
 * with Unicode's rules, and among the characters only "ſ" (U+017F, long s) folds to one of these
 * letters (checked against the library over every code point); Oniguruma's \s is Unicode's
 * White_Space (JavaScript's \s has U+FEFF and lacks U+0085).
 */
function jsSplitPattern(digits: string): string {
  const ws = String.raw`\p{White_Space}`;
  return [
    String.raw`'(?:[sS\u017F]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])`,
    String.raw`[^\r\n\p{L}\p{N}]?\p{L}+`,
    digits,
    String.raw` ?[^${ws}\p{L}\p{N}]+[\r\n]*`,
    String.raw`${ws}*[\r\n]+`,
    String.raw`${ws}+(?!\P{White_Space})`,
    String.raw`${ws}+`,
  ].join('|');
}
/** QWEN2_SPLIT_PATTERN and LLAMA3_SPLIT_PATTERN for JavaScript's RegExp (flags "gu"). */
export const QWEN2_JS_PATTERN = jsSplitPattern(String.raw`\p{N}`);
export const LLAMA3_JS_PATTERN = jsSplitPattern(String.raw`\p{N}{1,3}`);

function makePretokenizer(pre: HfPretokenizer): Pretokenizer {
  switch (pre) {
    case 'gpt2': return makeGpt2Pretokenizer();
    case 'gpt2-digits': return makeDigitsGpt2Pretokenizer();
    case 'qwen2': return makeRegexPretokenizer(QWEN2_JS_PATTERN);
    case 'llama3': return makeRegexPretokenizer(LLAMA3_JS_PATTERN);
  }
}

export interface HfBpeTokenizerJson extends TokenizerJson {
  type: 'hf-bpe';
  pretokenizer: HfPretokenizer;
  /** The byte-level string of each id (a special token's: its text). */
  vocab: string[];
  /** "left right" byte-level strings, in the order the merges apply. */
  merges: string[];
  /** Special tokens: text -> id. */
  special: Record<string, number>;
  /** Whether a pre-token that is a whole token is taken as it is, unmerged (tokenizers' ignore_merges). */
  ignoreMerges: boolean;
  /** Added tokens that are not special, text -> id (see the file comment); absent for none. */
  plainAdded?: Record<string, number>;
  /** Ids of added tokens outside the BPE model's own vocabulary (see the file comment); absent for none. */
  addedOnly?: number[];
  /** The special token that ends a text, where it is not "<|endoftext|>" (Tokenizer.eos). */
  eos?: string;
  /** The special token a text starts from, where it is not the end-of-text token (Tokenizer.bos). */
  bos?: string;
}

const FIELDS = ['type', 'pretokenizer', 'vocab', 'merges', 'special', 'ignoreMerges', 'plainAdded', 'addedOnly', 'eos', 'bos'];

/** Digits one by one, then GPT-2's regex on the text between them. */
function makeDigitsGpt2Pretokenizer(): Pretokenizer {
  const gpt2 = makeGpt2Pretokenizer();
  const digit = /\p{N}/gu;
  return (text, onPiece) => {
    let start = 0;
    digit.lastIndex = 0;
    for (let m = digit.exec(text); m !== null; m = digit.exec(text)) {
      if (m.index > start) gpt2(text.slice(start, m.index), onPiece);
      onPiece(m[0]);
      start = m.index + m[0].length;
    }
    if (start < text.length) gpt2(start === 0 ? text : text.slice(start), onPiece);
  };
}

/** Reads (and checks all of) an hf-bpe tokenizer's JSON; `source` names it in errors. */
export function hfBpeTokenizerFromJsonFields(fields: Record<string, unknown>, source: string): ByteLevelTokenizer {
  const what = `${source}: hf-bpe tokenizer`;
  for (const name of Object.keys(fields)) {
    check(FIELDS.includes(name), () => `${what} has an unknown field ${JSON.stringify(name)}; expected only ${FIELDS.map((f) => `"${f}"`).join(', ')}`);
  }
  const pre = fields['pretokenizer'];
  check(HF_PRETOKENIZERS.includes(pre as HfPretokenizer), () => `${what} "pretokenizer" must be ${HF_PRETOKENIZERS.map((p) => `"${p}"`).join(', ').replace(/, ([^,]*)$/, ' or $1')}, got ${describeValue(pre)}`);
  const ignoreMerges = fields['ignoreMerges'];
  check(typeof ignoreMerges === 'boolean', () => `${what} "ignoreMerges" must be true or false, got ${describeValue(ignoreMerges)}`);

  const { vocab, idOf, special, specialIds } = readPieces(fields, what);
  const plainField = fields['plainAdded'];
  check(plainField === undefined || (typeof plainField === 'object' && plainField !== null && !Array.isArray(plainField)),
    () => `${what} "plainAdded" must be an object of added token text -> id, got ${describeValue(plainField)}`);
  const plainAdded = new Map<string, number>();
  for (const [text, id] of Object.entries((plainField ?? {}) as Record<string, unknown>)) {
    check(typeof id === 'number' && Number.isInteger(id) && vocab[id] === text && !specialIds.has(id),
      () => `${what} plain added token ${JSON.stringify(text)} has id ${typeof id === 'number' ? id : describeValue(id)}, which is not a vocab entry of that text outside the special tokens`);
    // prepare cuts text at line breaks (shards.ts): a token holding one could span a cut.
    check(!/[\r\n]/.test(text), () => `${what} plain added token ${JSON.stringify(text)} holds a line break; minigpt's hf-bpe takes plain added tokens without them`);
    plainAdded.set(text, id);
  }
  const plainIds = new Set(plainAdded.values());
  const addedOnlyField = fields['addedOnly'];
  check(addedOnlyField === undefined || (Array.isArray(addedOnlyField) && addedOnlyField.every((id, i) => (specialIds.has(id) || plainIds.has(id)) && (i === 0 || id > addedOnlyField[i - 1]))),
    () => `${what} "addedOnly" must list added token ids (special or plain) in increasing order, got ${describeValue(addedOnlyField)}`);
  const addedOnly = new Set((addedOnlyField ?? []) as number[]);
  checkSpecialTokenFields(fields, ['eos', 'bos'], special, what);
  const eos = fields['eos'] as string | undefined, bos = fields['bos'] as string | undefined;

  const utf8 = new TextEncoder();
  const tokenBytes: Uint8Array[] = new Array(vocab.length);
  const byteToId = new Int32Array(256).fill(-1);
  vocab.forEach((entry, id) => {
    if (specialIds.has(id) || plainIds.has(id)) {
      tokenBytes[id] = utf8.encode(entry);
      return;
    }
    const bytes = byteLevelToBytes(entry);
    check(bytes !== null, () => `${what} vocab[${id}] ${JSON.stringify(entry)} is not a byte-level string (GPT-2's alphabet for bytes), nor a special token`);
    tokenBytes[id] = bytes;
    if (bytes.length === 1) byteToId[bytes[0]!] = id;
  });
  const missing = byteToId.indexOf(-1);
  check(missing < 0, () => `${what} has no token for byte ${missing} (0x${missing.toString(16).padStart(2, '0')}); a byte-level BPE needs one for each of the 256 bytes, or some text could not be encoded`);

  const mergesField = fields['merges'] as string[];
  // A special token whose vocab entry is a byte-level string of other text (" zq" as "Ġzq") is one the BPE can make.
  const utf8Text = new TextDecoder('utf-8', { fatal: false });
  const spelledAsText = (text: string): boolean => {
    const bytes = byteLevelToBytes(text);
    return bytes === null || utf8Text.decode(bytes) === text;
  };
  const pairs = readPieceMerges(mergesField, idOf, new Set([...specialIds, ...plainIds].filter((id) => spelledAsText(vocab[id]!))), what);

  let wholePieces: Map<string, number> | undefined;
  if (ignoreMerges) {
    // tokenizers looks the pre-token's byte-level string up in the BPE model's vocabulary: the
    // special tokens it holds too, not those only added_tokens held.
    wholePieces = new Map();
    vocab.forEach((entry, id) => {
      if (addedOnly.has(id)) return;
      const bytes = specialIds.has(id) || plainIds.has(id) ? byteLevelToBytes(entry) : tokenBytes[id]!;
      if (bytes) wholePieces!.set(latin1(bytes), id);
    });
  }

  const json: HfBpeTokenizerJson = {
    type: 'hf-bpe',
    pretokenizer: pre as HfPretokenizer,
    vocab: [...vocab],
    merges: [...mergesField],
    special: Object.fromEntries([...special].sort((x, y) => x[1] - y[1])),
    ignoreMerges,
    ...(plainAdded.size > 0 ? { plainAdded: Object.fromEntries([...plainAdded].sort((x, y) => x[1] - y[1])) } : {}),
    ...(addedOnly.size > 0 ? { addedOnly: [...addedOnly] } : {}),
    ...(eos !== undefined ? { eos } : {}),
    ...(bos !== undefined ? { bos } : {}),
  };
  const tokenizer = makeByteLevelTokenizer({
    kind: 'hf-bpe',
    byteToId,
    tokenBytes,
    pairs,
    special,
    ...(wholePieces ? { wholePieces } : {}),
    ...(plainAdded.size > 0 ? { plainAdded } : {}),
    pretokenizer: makePretokenizer(pre as HfPretokenizer),
    ...(pre === 'qwen2' || pre === 'llama3' ? { safeCuts: 'line-start' as const } : {}),
    toJSON: (): HfBpeTokenizerJson => ({ ...json, vocab: [...json.vocab], merges: [...json.merges], special: { ...json.special },
      ...(json.plainAdded ? { plainAdded: { ...json.plainAdded } } : {}), ...(json.addedOnly ? { addedOnly: [...json.addedOnly] } : {}) }),
  });
  return { ...tokenizer, ...(eos !== undefined ? { eos } : {}), ...(bos !== undefined ? { bos } : {}) };
}

/**
 * With ignoreMerges: the tokens only the whole-word lookup produces (text that is one pre-token and
 * a token, whose bytes the merges make into other tokens). Tools without that lookup (llama.cpp's
 * "gpt-2" pre-tokenizer) split such text differently. Their text, by id.
 */
export function tokensOnlyWholeWordsReach(json: HfBpeTokenizerJson): string[] {
  if (!json.ignoreMerges) return [];
  const merging = hfBpeTokenizerFromJsonFields({ ...json, ignoreMerges: false }, 'hf-bpe tokenizer');
  const special = new Set([...Object.values(json.special), ...Object.values(json.plainAdded ?? {})]);
  const strict = new TextDecoder('utf-8', { fatal: true });
  const found: string[] = [];
  for (let id = 0; id < json.vocab.length; id++) {
    if (special.has(id)) continue;
    let text: string;
    try {
      text = strict.decode(merging.tokenBytes(id));
    } catch {
      continue; // part of a character: never a whole pre-token
    }
    const pieces = merging.pretokenize(text);
    if (pieces.length !== 1) continue;
    const ids = merging.encodeOrdinary(text);
    if (ids.length !== 1 || ids[0] !== id) found.push(text);
  }
  return found;
}
