/**
 * The `sp-bpe` tokenizer: a SentencePiece-style BPE imported from a Hugging Face tokenizer.json
 * (`minigpt import`): Llama 2's, TinyLlama's, Mistral's and the llama2.c TinyStories models'.
 * Unlike the byte-level kinds, its tokens are Unicode text in which "▁" (U+2581) stands for a
 * space, a character missing from the vocabulary becomes its UTF-8 bytes as the tokens
 * "<0x00>".."<0xFF>" (byte fallback) or the unknown token, and a text starts with a space ("▁")
 * added before it. Encoding is the `tokenizers` library's:
 *
 *   1. Special-token text that encode is allowed to match splits the text (EncodeOptions); each
 *      stretch between is encoded on its own.
 *   2. Spaces become "▁", and a "▁" is added in front (`spaces`):
 *        "prepend"  the legacy layout (normalizer Prepend("▁") + Replace(" ", "▁")): every
 *                   non-empty stretch gets one, even one that starts with a space;
 *        "always"   Metaspace with prepend_scheme "always": a stretch that does not start with "▁";
 *        "first"    Metaspace with prepend_scheme "first": the same, for the text's first stretch only.
 *      With `split` (Metaspace's split) the stretch is cut into words before each "▁".
 *   3. Each word is a sequence of characters (the vocabulary's id of each; else its bytes' tokens
 *      with byteFallback, else the unknown token, one for a run of them with fuseUnk), merged as
 *      BPE does: the adjacent pair whose merge comes first in the list is joined (the leftmost on a
 *      tie) until none merges.
 *
 * Where a text starts, the model expects its start-of-text token (`addBos`, from the file's
 * TemplateProcessing post-processor, "<s> $A"): textStartIds gives it to the callers that begin a
 * text (generate, scoreText, training documents); encode itself never adds it, like tokenizers'
 * encode with add_special_tokens=False.
 *
 * Decoding: "▁" becomes a space, byte tokens their byte, special tokens their text; one space at
 * the very start is dropped (the decoders' Strip or Metaspace), so decode(encode(x)) === x for
 * well-formed x without characters the vocabulary lacks (with byteFallback: any x) whose
 * spaces the layout keeps (see `spaces`). tokenBytes, which streams output, keeps every space.
 *
 * JSON: { "type": "sp-bpe", "vocab": [piece of each id], "merges": ["left right", ...],
 * "special": { text: id }, "unk"?: text, "byteFallback": boolean, "fuseUnk": boolean,
 * "spaces": "prepend" | "always" | "first", "split": boolean, "addBos"?: text, "eos"?: text,
 * "bos"?: text }. A special token's vocab entry is its text; addBos, eos and bos name special
 * tokens, unk a piece of the vocabulary (a special token or not, as the file had it).
 */
import { MinigptError, check, shownValue } from '../errors.js';
import { checkEncodeInput, checkSpecialTokenFields, decodeTokenBytes, describeValue, mergePiece, readPieceMerges, readPieces, specialTokenSplitter, splitAtSpecialTokens, toWellFormed } from './bpe.js';
import type { EncodeOptions, Tokenizer, TokenizerJson } from './tokenizer.js';

/** Where a "▁" is added in front of text (see the file comment). */
export type SpSpaces = 'prepend' | 'always' | 'first';
export const SP_SPACES: readonly SpSpaces[] = ['prepend', 'always', 'first'];

/** SentencePiece's space. */
export const SP_SPACE = '\u2581';

export interface SpBpeTokenizerJson extends TokenizerJson {
  type: 'sp-bpe';
  /** The piece of each id ("▁" for a space; a byte token "<0xAB>"; a special token its text). */
  vocab: string[];
  /** "left right" pieces, in the order the merges apply. */
  merges: string[];
  /** Special tokens: text -> id. */
  special: Record<string, number>;
  /** The unknown token's piece (special or not); absent for none. */
  unk?: string;
  /** Whether a character missing from the vocabulary becomes its bytes' tokens "<0x00>".."<0xFF>". */
  byteFallback: boolean;
  /** Whether a run of unknown characters is one unknown token. */
  fuseUnk: boolean;
  spaces: SpSpaces;
  /** Whether text is cut into words before each "▁" before merging (Metaspace's split). */
  split: boolean;
  /** The special token a text starts with (the post-processor's "<s> $A"); absent for none. */
  addBos?: string;
  /** The special token that ends a text, where it is not "<|endoftext|>" (Tokenizer.eos). */
  eos?: string;
  /** The special token a text starts from (Tokenizer.bos). */
  bos?: string;
}

/** An sp-bpe tokenizer's extra members. */
export interface SpBpeTokenizer extends Tokenizer {
  readonly kind: 'sp-bpe';
  readonly specialTokens: Readonly<Record<string, number>>;
  tokenBytes(id: number): Uint8Array;
  /** The special token every text starts with, where the tokenizer adds one (textStartIds). */
  readonly addBos?: string;
  /**
   * Encodes special-token text as ordinary text. `atStart` false: the text continues one already
   * encoded (prepare's pieces of a document), so no "▁" is added in front of it.
   */
  encodeOrdinary(text: string, atStart?: boolean): Int32Array;
  /**
   * Whether a text cut just before a line break encodes as the two parts do (the second continuing
   * the first): line breaks are byte tokens (not pieces) and no merge joins a byte token, as in
   * Llama 2's vocabulary. prepare cuts text there.
   */
  readonly lineBreaksCutExactly: boolean;

  toJSON(): SpBpeTokenizerJson;
}

const FIELDS = ['type', 'vocab', 'merges', 'special', 'unk', 'byteFallback', 'fuseUnk', 'spaces', 'split', 'addBos', 'eos', 'bos'];

/** The piece of a byte-fallback token, as the tokenizers library names it: "<0x0A>". */
export function byteTokenPiece(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
}

const WORD_CACHE_LIMIT = 100_000;
const CACHEABLE_WORD = 64;

/** Reads (and checks all of) an sp-bpe tokenizer's JSON; `source` names it in errors. */
export function spBpeTokenizerFromJsonFields(fields: Record<string, unknown>, source: string): SpBpeTokenizer {
  const what = `${source}: sp-bpe tokenizer`;
  for (const name of Object.keys(fields)) {
    check(FIELDS.includes(name), () => `${what} has an unknown field ${JSON.stringify(name)}; expected only ${FIELDS.map((f) => `"${f}"`).join(', ')}`);
  }
  for (const name of ['byteFallback', 'fuseUnk', 'split'] as const) {
    check(typeof fields[name] === 'boolean', () => `${what} "${name}" must be true or false, got ${describeValue(fields[name])}`);
  }
  const byteFallback = fields['byteFallback'] as boolean, fuseUnk = fields['fuseUnk'] as boolean, split = fields['split'] as boolean;
  const spaces = fields['spaces'];
  check(SP_SPACES.includes(spaces as SpSpaces), () => `${what} "spaces" must be ${SP_SPACES.map((s) => `"${s}"`).join(', ')}, got ${describeValue(spaces)}`);

  const { vocab, idOf, special, specialIds } = readPieces(fields, what);
  checkSpecialTokenFields(fields, ['addBos', 'eos', 'bos'], special, what);
  const unk = fields['unk'];
  check(unk === undefined || (typeof unk === 'string' && idOf.has(unk)), () => `${what} "unk" must be a piece of its vocabulary, got ${describeValue(unk)}`);
  const addBos = fields['addBos'] as string | undefined;
  const eos = fields['eos'] as string | undefined, bos = fields['bos'] as string | undefined;
  const unkId = unk === undefined ? -1 : idOf.get(unk as string)!;

  // Byte tokens: byteIds[b] is "<0xBB>"'s id (-1 where missing).
  const byteIds = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const id = idOf.get(byteTokenPiece(b));
    if (id !== undefined && !specialIds.has(id)) byteIds[b] = id;
  }
  if (byteFallback) {
    const missing = byteIds.indexOf(-1);
    check(missing < 0, () => `${what} falls back to bytes but has no token ${byteTokenPiece(missing)}; byte fallback needs all 256 byte tokens`);
  } else {
    check(unk !== undefined, () => `${what} has neither byte fallback nor an unknown token, so some text could not be encoded`);
  }

  const mergesField = fields['merges'] as string[];
  // A special token whose piece holds "▁" ("▁<PRE>": text " <PRE>") is one the BPE can make; one spelled as its text ("<s>") is not.
  const outsideText = new Set([...specialIds].filter((id) => !vocab[id]!.includes(SP_SPACE)));
  const pairs = readPieceMerges(mergesField, idOf, outsideText, what);

  // The token of each character the vocabulary holds as a piece (special tokens spelled as their text are not characters).
  const charIds = new Map<number, number>();
  vocab.forEach((entry, id) => {
    if (outsideText.has(id)) return;
    const cp = entry.codePointAt(0)!;
    if (entry.length === (cp > 0xffff ? 2 : 1)) charIds.set(cp, id);
  });

  // Whether every piece's "▁"s come first in it (SentencePiece's pieces for whitespace-split
  // training: "▁the", "▁▁▁▁"), so a text's BPE is that of its words (see encodeStretch).
  // (A run of unknown characters fused into one token must not be cut either: it cannot hold a "▁"
  // where "▁" is a piece or falls back to bytes.)
  const piecesStayInWords = vocab.every((entry, id) => outsideText.has(id) || !/[^\u2581]\u2581/.test(entry))
    && (byteFallback || !fuseUnk || charIds.has(0x2581));

  const utf8 = new TextEncoder();
  const charBytes = new Uint8Array(4);
  /** The BPE of one word (a string of well-formed text with its spaces as "▁"). */
  const encodeWord = (word: string): number[] => {
    const ids: number[] = [];
    let unknownRun = false;
    for (let i = 0; i < word.length; i++) {
      const cp = word.codePointAt(i)!;
      if (cp > 0xffff) i++;
      const id = charIds.get(cp);
      if (id !== undefined) {
        ids.push(id);
        unknownRun = false;
      } else if (byteFallback) {
        const n = utf8.encodeInto(String.fromCodePoint(cp), charBytes).written;
        for (let k = 0; k < n; k++) ids.push(byteIds[charBytes[k]!]!);
        unknownRun = false;
      } else {
        if (!(fuseUnk && unknownRun)) ids.push(unkId);
        unknownRun = true;
      }
    }
    return mergePiece(ids, pairs);
  };
  const cache = new Map<string, number[]>();
  const encodeCachedWord = (word: string, out: number[]): void => {
    let ids = cache.get(word);
    if (ids === undefined) {
      ids = encodeWord(word);
      if (word.length <= CACHEABLE_WORD) {
        if (cache.size >= WORD_CACHE_LIMIT) cache.clear();
        cache.set(word, ids);
      }
    }
    for (const id of ids) out.push(id);
  };

  /**
   * Appends the ids of one stretch of text (no special tokens in it). `first`: it begins the text;
   * `continues`: it continues text already encoded (no "▁" in front whatever the layout).
   */
  const encodeStretch = (text: string, first: boolean, out: number[], continues = false): void => {
    if (text === '') return;
    let s = text.replaceAll(' ', SP_SPACE);
    if (!continues && (spaces === 'prepend' || ((spaces === 'always' || first) && !s.startsWith(SP_SPACE)))) s = SP_SPACE + s;
    if (!split && !piecesStayInWords) {
      for (const id of encodeWord(s)) out.push(id);
      return;
    }
    // Words: split cuts before every "▁"; without split, cutting before a "▁" that follows another
    // character changes nothing where no piece holds such a "▁" (piecesStayInWords): no merge can
    // join across the cut, and merges on either side do not depend on each other. Words repeat, so
    // their ids are cached.
    let start = 0;
    for (let i = s.indexOf(SP_SPACE, 1); i >= 0; i = s.indexOf(SP_SPACE, i + 1)) {
      if (!split && s[i - 1] === SP_SPACE) continue;
      encodeCachedWord(s.slice(start, i), out);
      start = i;
    }
    encodeCachedWord(start === 0 ? s : s.slice(start), out);
  };

  const encodeOrdinary = (text: string, atStart = true): Int32Array => {
    const out: number[] = [];
    encodeStretch(toWellFormed(text), true, out, !atStart);
    return Int32Array.from(out);
  };
  const byteIdSet = new Set(byteIds);
  const mergesJoinBytes = mergesField.some((m) => m.split(' ').some((piece) => byteIdSet.has(idOf.get(piece)!)));
  const lineBreaksCutExactly = byteFallback && !charIds.has(0x0a) && !charIds.has(0x0d) && !mergesJoinBytes;

  const allowedSplitter = specialTokenSplitter(special, 'sp-bpe');
  const encode = (text: string, opts: EncodeOptions = {}): Int32Array => {
    checkEncodeInput(text);
    const re = allowedSplitter(opts.allowedSpecial);
    if (re === null) return encodeOrdinary(text);
    const out: number[] = [];
    let first = true;
    splitAtSpecialTokens(toWellFormed(text), re, special, (part) => {
      encodeStretch(part, first, out);
      first = false;
    }, (id) => {
      out.push(id);
      first = false;
    });
    return Int32Array.from(out);
  };

  // Each token's bytes: a piece's text with "▁" as a space (a special token's that holds "▁" too, as
  // the library's decoder reads it), a byte token's byte, another special token's text.
  const tokenBytes: Uint8Array[] = vocab.map((entry, id) => {
    if (outsideText.has(id)) return utf8.encode(entry);
    const byte = byteIds.indexOf(id);
    if (byte >= 0) return Uint8Array.of(byte);
    return utf8.encode(entry.replaceAll(SP_SPACE, ' '));
  });
  const vocabSize = vocab.length;
  const bytesOf = (id: number, position: number | null): Uint8Array => {
    if (Number.isInteger(id) && id >= 0 && id < vocabSize) return tokenBytes[id]!;
    const where = position === null ? '' : ` at position ${position}`;
    throw new MinigptError(`token id ${shownValue(id)}${where} is out of range for this sp-bpe tokenizer; valid ids are 0 to ${vocabSize - 1}`);
  };
  const decode = (ids: ArrayLike<number>): string => {
    const text = decodeTokenBytes(ids, bytesOf);
    return text.startsWith(' ') ? text.slice(1) : text;
  };

  const json: SpBpeTokenizerJson = {
    type: 'sp-bpe',
    vocab: [...vocab],
    merges: [...mergesField],
    special: Object.fromEntries([...special].sort((x, y) => x[1] - y[1])),
    ...(unk !== undefined ? { unk: unk as string } : {}),
    byteFallback,
    fuseUnk,
    spaces: spaces as SpSpaces,
    split,
    ...(addBos !== undefined ? { addBos } : {}),
    ...(eos !== undefined ? { eos } : {}),
    ...(bos !== undefined ? { bos } : {}),
  };
  return {
    kind: 'sp-bpe',
    vocabSize,
    encode,
    encodeOrdinary,
    lineBreaksCutExactly,
    decode,
    specialTokens: Object.freeze(Object.fromEntries(special)),
    tokenBytes: (id) => bytesOf(id, null).slice(),
    ...(addBos !== undefined ? { addBos } : {}),
    ...(eos !== undefined ? { eos } : {}),
    ...(bos !== undefined ? { bos } : {}),
    toJSON: () => ({ ...json, vocab: [...json.vocab], merges: [...json.merges], special: { ...json.special } }),
  };
}
