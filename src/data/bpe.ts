/**
 * Byte-level BPE: the engine shared by the `bpe` tokenizer (trained here, on the user's text),
 * the `gpt2` tokenizer (gpt2.ts, fixed ranks) and `hf-bpe` (hf-bpe.ts, from a tokenizer.json),
 * and the trainer.
 *
 * Text is first made well-formed UTF-16 (each lone surrogate becomes U+FFFD, as tiktoken does),
 * split into pre-tokens (by the GPT-2 regex; hf-bpe may isolate digits first), and each
 * pre-token's UTF-8 bytes are merged by repeatedly joining the adjacent pair with the lowest rank
 * (the leftmost on a tie). For gpt2 and bpe a token's rank is its id; hf-bpe ranks merges by their
 * place in its list (PairTable.mergedIds). So every string, whatever it holds, has an encoding, and
 * decode(encode(x)) === x for every well-formed x (and x with lone surrogates replaced).
 *
 * The trained tokenizer has ids 0-255 for the bytes, 256 + i for merge i, then the special
 * tokens; its JSON is `{ "type": "bpe", "pretokenizer": "gpt2", "merges": ["a b", ...],
 * "special": { "<|endoftext|>": id } }`, where merge i joins token ids a and b.
 */
import { MinigptError, check, checkOptionNames, shownValue } from '../errors.js';
import type { EncodeOptions, Tokenizer, TokenizerJson, TokenizerKind } from './tokenizer.js';

/** GPT-2's document separator. */
export const END_OF_TEXT = '<|endoftext|>';

/**
 * The GPT-2 pre-tokenizer pattern. tiktoken runs it with Rust's regex, where `\s` is Unicode
 * White_Space; JavaScript's `\s` differs (it lacks U+0085 and has U+FEFF), so it is spelled out.
 */
export const GPT2_SPLIT_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+`;

/** Largest vocabulary a byte-level tokenizer may have (ids are packed into 21 bits in places). */
export const MAX_BPE_VOCAB = 1 << 21;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with each unpaired surrogate replaced by U+FFFD (what encoding it as UTF-8 does anyway). */
export function toWellFormed(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}

/** The GPT-2 pre-tokens of `text`, in order; they join back to `text`. */
export function gpt2Pretokens(text: string): string[] {
  return text.match(new RegExp(GPT2_SPLIT_PATTERN, 'gu')) ?? [];
}

// ---------------------------------------------------------------------------------------------
// The merge engine

/**
 * An open-addressing hash map from a pair of token ids to the rank of their merge. The rank is
 * also the id of the token the merge makes, unless `mergedIds` (rank -> id) says otherwise (a
 * tokenizer.json's BPE ranks merges by their place in its list, whatever ids its tokens have).
 */
export class PairTable {
  /** Rank -> id of the merged token; null when every rank is that id. */
  mergedIds: Int32Array | null = null;
  private keysA: Int32Array;
  private keysB: Int32Array;
  private vals: Int32Array;
  private mask: number;
  private count = 0;

  constructor(expected = 1024) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.keysA = new Int32Array(cap).fill(-1);
    this.keysB = new Int32Array(cap);
    this.vals = new Int32Array(cap);
    this.mask = cap - 1;
  }

  get size(): number {
    return this.count;
  }

  private slot(a: number, b: number): number {
    let h = Math.imul(a ^ Math.imul(b, 0x85ebca77), 0x9e3779b1);
    h ^= h >>> 15;
    let i = h & this.mask;
    const keysA = this.keysA, keysB = this.keysB;
    while (keysA[i] !== -1 && (keysA[i] !== a || keysB[i] !== b)) i = (i + 1) & this.mask;
    return i;
  }

  /** The merge's rank, or -1 when the pair does not merge. */
  get(a: number, b: number): number {
    const i = this.slot(a, b);
    return this.keysA[i] === -1 ? -1 : this.vals[i]!;
  }

  set(a: number, b: number, rank: number): void {
    if ((this.count + 1) * 2 > this.keysA.length) this.grow();
    const i = this.slot(a, b);
    if (this.keysA[i] === -1) this.count++;
    this.keysA[i] = a;
    this.keysB[i] = b;
    this.vals[i] = rank;
  }

  private grow(): void {
    const { keysA, keysB, vals } = this;
    this.keysA = new Int32Array(keysA.length * 2).fill(-1);
    this.keysB = new Int32Array(keysA.length * 2);
    this.vals = new Int32Array(keysA.length * 2);
    this.mask = this.keysA.length - 1;
    this.count = 0;
    for (let i = 0; i < keysA.length; i++) if (keysA[i] !== -1) this.set(keysA[i]!, keysB[i]!, vals[i]!);
  }
}

const NO_MERGE = 0x7fffffff;
/** Pieces up to this many bytes are merged by scanning; longer ones with a heap (O(n log n)). */
const SCAN_LIMIT = 64;

/**
 * Merges `ids` (one token per byte to begin with) in place of the lowest-ranked adjacent pair,
 * the leftmost on a tie, until no adjacent pair merges (into the id table.mergedIds gives, else the rank).
 * `strategy` is for tests; both give the same result.
 */
export function mergePiece(ids: number[], table: PairTable, strategy?: 'scan' | 'heap'): number[] {
  if (ids.length < 2) return ids;
  if (strategy === 'heap' || (strategy === undefined && ids.length > SCAN_LIMIT)) return mergeWithHeap(ids, table);
  return mergeByScanning(ids, table);
}

function mergeByScanning(ids: number[], table: PairTable): number[] {
  const mergedIds = table.mergedIds;
  const ranks: number[] = new Array(ids.length - 1);
  for (let i = 0; i < ids.length - 1; i++) {
    const r = table.get(ids[i]!, ids[i + 1]!);
    ranks[i] = r < 0 ? NO_MERGE : r;
  }
  for (;;) {
    let best = NO_MERGE;
    let at = -1;
    for (let i = 0; i < ranks.length; i++) {
      if (ranks[i]! < best) {
        best = ranks[i]!;
        at = i;
      }
    }
    if (at < 0) return ids;
    const made = mergedIds === null ? best : mergedIds[best]!;
    ids[at] = made;
    ids.splice(at + 1, 1);
    ranks.splice(at, 1);
    if (at > 0) {
      const r = table.get(ids[at - 1]!, made);
      ranks[at - 1] = r < 0 ? NO_MERGE : r;
    }
    if (at < ranks.length) {
      const r = table.get(made, ids[at + 1]!);
      ranks[at] = r < 0 ? NO_MERGE : r;
    }
  }
}

const POS_SCALE = 2 ** 32;

/** The same merges for long pieces: a linked list of parts and a min-heap of (rank, position). */
function mergeWithHeap(ids: number[], table: PairTable): number[] {
  const mergedIds = table.mergedIds;
  const n = ids.length;
  const tok = Int32Array.from(ids);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // Entries are rank * 2^32 + position: ordering them orders by rank, then leftmost.
  const heap = new Float64Array(n * 3 + 8);
  let size = 0;
  const push = (v: number): void => {
    let i = size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]! <= v) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = v;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap[--size]!;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && heap[child + 1]! < heap[child]!) child++;
      if (heap[child]! >= last) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  };
  // The heap can hold at most n initial entries plus two per merge (< n merges).
  for (let i = 0; i + 1 < n; i++) {
    const r = table.get(tok[i]!, tok[i + 1]!);
    if (r >= 0) push(r * POS_SCALE + i);
  }
  while (size > 0) {
    const entry = pop();
    const rank = Math.floor(entry / POS_SCALE);
    const pos = entry - rank * POS_SCALE;
    if (tok[pos]! < 0) continue;
    const right = next[pos]!;
    if (right < 0 || table.get(tok[pos]!, tok[right]!) !== rank) continue; // stale
    const made = mergedIds === null ? rank : mergedIds[rank]!;
    tok[pos] = made;
    tok[right] = -1;
    const after = next[right]!;
    next[pos] = after;
    if (after >= 0) prev[after] = pos;
    const before = prev[pos]!;
    if (before >= 0) {
      const r = table.get(tok[before]!, made);
      if (r >= 0) push(r * POS_SCALE + before);
    }
    if (after >= 0) {
      const r = table.get(made, tok[after]!);
      if (r >= 0) push(r * POS_SCALE + pos);
    }
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(tok[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// A byte-level tokenizer from its tables

/** What a byte-level tokenizer is made of. */
export interface ByteLevelModel {
  kind: TokenizerKind;
  /** Ids of the tokens that are one byte, by byte value. */
  byteToId: Int32Array;
  /**
   * The bytes of each token by id, from 0: the ordinary ones, and any special token whose id lies
   * among them (its text's bytes; hf-bpe vocabularies may put special tokens anywhere).
   */
  tokenBytes: readonly Uint8Array[];
  /** Which adjacent pairs merge (PairTable: their rank, and the token they make). */
  pairs: PairTable;
  /** Special tokens by their text; ids after tokenBytes, or among them (see tokenBytes). */
  special: ReadonlyMap<string, number>;
  /** How text is split into pre-tokens before merging; default the GPT-2 regex (gpt2Pretokens). */
  pretokenizer?: Pretokenizer;
  /** Where prepare may cut text for this pre-tokenizer (ByteLevelTokenizer.safeCuts); default "line-end". */
  safeCuts?: SafeCuts;
  /**
   * tiktoken looks a whole pre-token up before merging (gpt2; hf-bpe with ignoreMerges, as the
   * tokenizers library does): bytes as a Latin-1 string -> id. The trained tokenizer leaves it
   * out, so it encodes exactly as it was trained.
   */
  wholePieces?: ReadonlyMap<string, number>;
  /**
   * Added tokens that are not special (Qwen2.5's "<tool_call>"), by their text: the tokenizers
   * library finds them in any text before splitting it, as encode and encodeOrdinary do here.
   * Their ids lie among tokenBytes (their text's bytes).
   */
  plainAdded?: ReadonlyMap<string, number>;
  toJSON(): TokenizerJson;
}

/** Bytes as a string of the characters U+0000-U+00FF (wholePieces' keys). */
export function latin1(bytes: Uint8Array): string {
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

/** Calls `onPiece` with each pre-token of `text`, in order; the pieces join back to `text`. */
export type Pretokenizer = (text: string, onPiece: (piece: string) => void) => void;

/** The pre-tokenizer whose pieces are the matches of `pattern` (a JavaScript regex source, flags "gu"). */
export function makeRegexPretokenizer(pattern: string): Pretokenizer {
  const splitter = new RegExp(pattern, 'gu');
  return (text, onPiece) => {
    splitter.lastIndex = 0;
    for (let m = splitter.exec(text); m !== null; m = splitter.exec(text)) onPiece(m[0]);
  };
}

/** The GPT-2 pre-tokenizer as a Pretokenizer. */
export function makeGpt2Pretokenizer(): Pretokenizer {
  return makeRegexPretokenizer(GPT2_SPLIT_PATTERN);
}

/**
 * Where `minigpt prepare` may cut text into chunks so that every cut is a pre-token boundary
 * (shards.ts): "line-end", just before a line break (LF, or the CR of CRLF) that follows a visible
 * character (GPT-2's regex); "line-start", just before a visible character that follows a LF
 * (Qwen2's and Llama 3's regexes, whose punctuation takes the line breaks after it).
 */
export type SafeCuts = 'line-end' | 'line-start';

/** Extra members of a byte-level tokenizer. */
export interface ByteLevelTokenizer extends Tokenizer {
  /** Where prepare may cut text (SafeCuts); absent: "line-end". */
  readonly safeCuts?: SafeCuts;
  /** The pre-tokens of `text` (well-formed, without special tokens), as encode splits it before
   * merging; a plain added token (hf-bpe's plainAdded) is a piece of its own. */
  pretokenize(text: string): string[];
  /** Encodes special-token text as ordinary text (never as a special id); tiktoken's encode_ordinary. */
  encodeOrdinary(text: string): Int32Array;
  readonly specialTokens: Readonly<Record<string, number>>;
  tokenBytes(id: number): Uint8Array;
}

const CACHE_LIMIT = 200_000;
const CACHEABLE_PIECE = 64;

/** A growable Int32Array. */
class IdBuffer {
  data: Int32Array;
  length = 0;
  constructor(capacity: number) {
    this.data = new Int32Array(Math.max(16, capacity));
  }
  push(id: number): void {
    if (this.length === this.data.length) this.grow(this.length + 1);
    this.data[this.length++] = id;
  }
  pushAll(ids: ArrayLike<number>): void {
    if (this.length + ids.length > this.data.length) this.grow(this.length + ids.length);
    for (let i = 0; i < ids.length; i++) this.data[this.length++] = ids[i]!;
  }
  private grow(min: number): void {
    const bigger = new Int32Array(Math.max(min, this.data.length * 2));
    bigger.set(this.data.subarray(0, this.length));
    this.data = bigger;
  }
  result(): Int32Array {
    return this.data.slice(0, this.length);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

/**
 * For encode with `allowedSpecial`: the regular expression that finds the special tokens it names
 * (null when it names none: all is ordinary text), cached per set of names. Naming a token the
 * tokenizer lacks is an error. Shared by the byte-level and the char tokenizers.
 */
export function specialTokenSplitter(special: ReadonlyMap<string, number>, kind: string): (allowed: EncodeOptions['allowedSpecial']) => RegExp | null {
  const splitters = new Map<string, RegExp>();
  return (allowed) => {
    const names = allowed === 'all' ? [...special.keys()] : [...(allowed ?? [])];
    if (names.length === 0) return null;
    for (const name of names) {
      check(
        special.has(name),
        () =>
          `${JSON.stringify(name)} is not a special token of this ${kind} tokenizer; ` +
          `its special tokens are ${special.size === 0 ? 'none' : [...special.keys()].map((s) => JSON.stringify(s)).join(', ')}`,
      );
    }
    // Longest first, so one special token that starts another cannot cut it short.
    const key = [...new Set(names)].sort((a, b) => b.length - a.length || (a < b ? -1 : 1)).join('\u0000');
    let re = splitters.get(key);
    if (!re) {
      re = new RegExp(key.split('\u0000').map(escapeRegExp).join('|'), 'gu');
      splitters.set(key, re);
    }
    return re;
  };
}

/** Walks `text` in order: `onText` for each stretch of ordinary text (possibly empty), `onSpecial` for each special token `re` finds. */
export function splitAtSpecialTokens(text: string, re: RegExp, special: ReadonlyMap<string, number>, onText: (part: string) => void, onSpecial: (id: number) => void): void {
  let start = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    onText(text.slice(start, m.index));
    onSpecial(special.get(m[0])!);
    start = m.index + m[0].length;
  }
  onText(text.slice(start));
}

/**
 * The pieces by id and the special tokens of a kind read from a tokenizer.json (hf-bpe, sp-bpe),
 * from its JSON fields "vocab" (a non-empty well-formed string per id, none twice) and "special"
 * (text -> id, where the vocab entry is the text); checked, errors naming `what`.
 */
export function readPieces(fields: Record<string, unknown>, what: string): { vocab: string[]; idOf: Map<string, number>; special: Map<string, number>; specialIds: Set<number> } {
  const vocab = fields['vocab'];
  check(Array.isArray(vocab) && vocab.length > 0, () => `${what} "vocab" must be a non-empty array of strings, got ${describeValue(vocab)}`);
  check(vocab.length <= MAX_BPE_VOCAB, () => `${what} has ${vocab.length} tokens; at most ${MAX_BPE_VOCAB} are supported`);
  const idOf = new Map<string, number>();
  vocab.forEach((entry: unknown, id) => {
    check(typeof entry === 'string' && entry.length > 0 && toWellFormed(entry) === entry, () => `${what} vocab[${id}] must be a non-empty well-formed string, got ${describeValue(entry)}`);
    const earlier = idOf.get(entry);
    check(earlier === undefined, () => `${what} vocab[${id}] ${JSON.stringify(entry)} repeats vocab[${earlier}]`);
    idOf.set(entry, id);
  });
  const specialField = fields['special'];
  check(typeof specialField === 'object' && specialField !== null && !Array.isArray(specialField),
    () => `${what} "special" must be an object of special token text -> id ({} for none), got ${describeValue(specialField)}`);
  const special = new Map<string, number>();
  for (const [text, id] of Object.entries(specialField as Record<string, unknown>)) {
    check(typeof id === 'number' && Number.isInteger(id) && vocab[id] === text,
      () => `${what} special token ${JSON.stringify(text)} has id ${typeof id === 'number' ? id : describeValue(id)}, where the vocabulary holds ${typeof id === 'number' && typeof vocab[id] === 'string' ? JSON.stringify(vocab[id]) : 'nothing'}; a special token's vocab entry is its text`);
    special.set(text, id);
  }
  return { vocab: vocab as string[], idOf, special, specialIds: new Set(special.values()) };
}

/** Checks that each field of `names` is absent or the text of one of the special tokens. */
export function checkSpecialTokenFields(fields: Record<string, unknown>, names: readonly string[], special: ReadonlyMap<string, number>, what: string): void {
  for (const name of names) {
    const v = fields[name];
    check(v === undefined || (typeof v === 'string' && special.has(v)), () => `${what} "${name}" must be the text of one of its special tokens, got ${describeValue(v)}`);
  }
}

/**
 * A tokenizer.json's merges ("left right" pieces, the first applied first) as a PairTable whose
 * mergedIds give the piece each makes. `outsideText` are special tokens whose piece is spelled as
 * their text ("<s>"): the tokenizers library splits that text out before merging, so no merge
 * joins them, and a merge that makes one ("<s" ">") never applies there and is left out (minigpt
 * encodes special-token text as text unless asked). Other special tokens ("▁<PRE>", whose text
 * has a space) are pieces like any other. A pair listed twice keeps its later place, as the
 * library builds its merge map.
 */
export function readPieceMerges(merges: unknown, idOf: ReadonlyMap<string, number>, outsideText: ReadonlySet<number>, what: string): PairTable {
  check(Array.isArray(merges), () => `${what} "merges" must be an array of "left right" strings, got ${describeValue(merges)}`);
  const pairs = new PairTable(merges.length);
  const mergedIds = new Int32Array(merges.length);
  const mergeable = (piece: string | undefined): number | undefined => {
    const id = piece === undefined ? undefined : idOf.get(piece);
    return id === undefined || outsideText.has(id) ? undefined : id;
  };
  merges.forEach((entry: unknown, rank) => {
    const parts = typeof entry === 'string' ? entry.split(' ') : [];
    const a = parts.length === 2 ? mergeable(parts[0]) : undefined;
    const b = parts.length === 2 ? mergeable(parts[1]) : undefined;
    const joined = a !== undefined && b !== undefined ? idOf.get(parts[0]! + parts[1]!) : undefined;
    check(joined !== undefined,
      () => `${what} merges[${rank}] ${describeValue(entry)} must be two tokens of the vocabulary (special tokens spelled as their text never merge), separated by a space, whose joined text is a token too`);
    if (outsideText.has(joined)) return;
    pairs.set(a!, b!, rank);
    mergedIds[rank] = joined;
  });
  pairs.mergedIds = mergedIds;
  return pairs;
}

// ignoreBOM: a leading U+FEFF is text like any other, not a byte-order mark to drop.
const utf8Decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** The text of `ids` from each token's bytes (`bytesOf` checks the id), bytes that form no whole UTF-8 character as U+FFFD. */
export function decodeTokenBytes(ids: ArrayLike<number>, bytesOf: (id: number, position: number) => Uint8Array): string {
  checkDecodeInput(ids);
  let total = 0;
  for (let i = 0; i < ids.length; i++) total += bytesOf(ids[i]!, i).length;
  const buf = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < ids.length; i++) {
    const bytes = bytesOf(ids[i]!, i);
    buf.set(bytes, at);
    at += bytes.length;
  }
  return utf8Decoder.decode(buf);
}

export function makeByteLevelTokenizer(model: ByteLevelModel): ByteLevelTokenizer {
  const { byteToId, tokenBytes, pairs, special, wholePieces } = model;
  const ordinaryCount = tokenBytes.length;
  let vocabSize = ordinaryCount;
  for (const id of special.values()) vocabSize = Math.max(vocabSize, id + 1);
  const specialBytes = new Map<number, Uint8Array>();
  const utf8 = new TextEncoder();
  for (const [text, id] of special) specialBytes.set(id, utf8.encode(text));
  const specialTokens = Object.freeze(Object.fromEntries(special));
  let longestWhole = 0;
  if (wholePieces) for (const key of wholePieces.keys()) longestWhole = Math.max(longestWhole, key.length);

  const cache = new Map<string, Int32Array | number>();
  const pretokenizer = model.pretokenizer ?? null;
  const gpt2Splitter = new RegExp(GPT2_SPLIT_PATTERN, 'gu');

  const encodePiece = (piece: string): Int32Array | number => {
    const bytes = utf8.encode(piece);
    if (wholePieces && bytes.length <= longestWhole) {
      const id = wholePieces.get(latin1(bytes));
      if (id !== undefined) return id;
    }
    const ids: number[] = new Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) ids[i] = byteToId[bytes[i]!]!;
    const merged = mergePiece(ids, pairs);
    return merged.length === 1 ? merged[0]! : Int32Array.from(merged);
  };

  /** Appends the ids of well-formed text that holds no special tokens to encode. */
  const addPiece = (piece: string, out: IdBuffer): void => {
    let ids = cache.get(piece);
    if (ids === undefined) {
      ids = encodePiece(piece);
      if (piece.length <= CACHEABLE_PIECE) {
        if (cache.size >= CACHE_LIMIT) cache.clear();
        cache.set(piece, ids);
      }
    }
    if (typeof ids === 'number') out.push(ids);
    else out.pushAll(ids);
  };
  // Plain added tokens are split out first, longest first (as special tokens are).
  const plainAdded = model.plainAdded && model.plainAdded.size > 0 ? model.plainAdded : null;
  const plainSplitter = plainAdded ? specialTokenSplitter(plainAdded, model.kind)('all') : null;
  const plainText = new Map([...(plainAdded ?? [])].map(([text, id]) => [id, text]));
  const encodeInto = (text: string, out: IdBuffer): void => {
    if (plainSplitter) splitAtSpecialTokens(text, plainSplitter, plainAdded!, (part) => encodeText(part, out), (id) => out.push(id));
    else encodeText(text, out);
  };
  const encodeText = (text: string, out: IdBuffer): void => {
    if (pretokenizer) {
      pretokenizer(text, (piece) => addPiece(piece, out));
      return;
    }
    // GPT-2's regex in place (gpt2, bpe): no callback per pre-token on the common path.
    gpt2Splitter.lastIndex = 0;
    for (let m = gpt2Splitter.exec(text); m !== null; m = gpt2Splitter.exec(text)) addPiece(m[0], out);
  };

  const encodeOrdinary = (text: string): Int32Array => {
    const out = new IdBuffer(text.length >> 2);
    encodeInto(toWellFormed(text), out);
    return out.result();
  };

  const allowedSplitter = specialTokenSplitter(special, model.kind);

  const encode = (text: string, opts: EncodeOptions = {}): Int32Array => {
    checkEncodeInput(text);
    const re = allowedSplitter(opts.allowedSpecial);
    if (re === null) return encodeOrdinary(text);
    const out = new IdBuffer(text.length >> 2);
    splitAtSpecialTokens(toWellFormed(text), re, special, (part) => encodeInto(part, out), (id) => out.push(id));
    return out.result();
  };

  const bytesOf = (id: number, position: number | null): Uint8Array => {
    if (Number.isInteger(id) && id >= 0 && id < ordinaryCount) return tokenBytes[id]!;
    const bytes = Number.isInteger(id) ? specialBytes.get(id) : undefined;
    if (bytes) return bytes;
    const where = position === null ? '' : ` at position ${position}`;
    throw new MinigptError(
      `token id ${shownValue(id)}${where} is out of range for this ${model.kind} tokenizer; valid ids are 0 to ${vocabSize - 1}`,
    );
  };

  const decode = (ids: ArrayLike<number>): string => decodeTokenBytes(ids, bytesOf);

  return {
    kind: model.kind,
    vocabSize,
    encode,
    encodeOrdinary,
    ...(model.safeCuts && model.safeCuts !== 'line-end' ? { safeCuts: model.safeCuts } : {}),
    pretokenize: (text) => {
      const split = (part: string): string[] => {
        if (!pretokenizer) return gpt2Pretokens(part);
        const pieces: string[] = [];
        pretokenizer(part, (piece) => pieces.push(piece));
        return pieces;
      };
      if (!plainSplitter) return split(text);
      // A plain added token is one piece, as encode finds it (prepare must not cut inside one).
      const pieces: string[] = [];
      splitAtSpecialTokens(text, plainSplitter, plainAdded!, (part) => { if (part !== '') pieces.push(...split(part)); }, (id) => pieces.push(plainText.get(id)!));
      return pieces;
    },
    decode,
    specialTokens,
    tokenBytes: (id) => bytesOf(id, null).slice(),
    toJSON: () => model.toJSON(),
  };
}

// ---------------------------------------------------------------------------------------------
// The trained tokenizer

export interface BpeTokenizerJson extends TokenizerJson {
  type: 'bpe';
  /** How text is split before merging; only "gpt2" so far. */
  pretokenizer: 'gpt2';
  /** Merge i joins ids "a b" into id 256 + i. */
  merges: string[];
  /** Special tokens: text -> id, ids right after the last merge. */
  special: Record<string, number>;
}

export interface BpeTrainOptions {
  /** Tokens in all: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** Special tokens, given the last ids; default ["<|endoftext|>"]. Their text is left out of training. */
  specialTokens?: readonly string[];
  /** Called now and then with the merges learned so far. */
  onProgress?: (merges: number, totalMerges: number) => void;
}

/** A Tokenizer's encode from plain JS: the text must be a string (a number failed inside, as `text.replace is not a function`). */
export function checkEncodeInput(text: unknown): void {
  check(typeof text === 'string', () => `encode takes a string (got ${shownValue(text)})`);
}

/** A Tokenizer's decode from plain JS: the ids must be an array or typed array (a string is not one). */
export function checkDecodeInput(ids: unknown): void {
  check(typeof ids === 'object' && ids !== null && typeof (ids as ArrayLike<number>).length === 'number', () => `decode takes an array of token ids (got ${shownValue(ids)})`);
}

/**
 * Learns a byte-level BPE on `text`: GPT-2 pre-tokens are counted once each (word -> count),
 * then each step merges the most frequent adjacent pair (ties: the smallest first id, then the
 * smallest second id), updating only the counts of the words that hold the pair. The same text
 * and options always give the same merges. A MinigptError if the text cannot give that many.
 */
export function trainBpe(text: string, opts: BpeTrainOptions): ByteLevelTokenizer {
  check(typeof text === 'string', () => `trainBpe needs the training text as a string (got ${shownValue(text)})`);
  check(typeof opts === 'object' && opts !== null, 'trainBpe needs options with a vocabSize, e.g. trainBpe(text, { vocabSize: 4096 })');
  checkOptionNames(opts, ['vocabSize', 'specialTokens', 'onProgress'], 'trainBpe');
  const specials = [...(opts.specialTokens ?? [END_OF_TEXT])];
  validateSpecialNames(specials, 'special token');
  const vocabSize = opts.vocabSize;
  const minimum = 256 + specials.length;
  check(
    Number.isInteger(vocabSize) && vocabSize >= minimum && vocabSize <= MAX_BPE_VOCAB,
    `BPE vocabulary size ${vocabSize} is out of range; it must be a whole number from ${minimum} ` +
      `(256 bytes${specials.length > 0 ? ` + ${specials.length} special` : ''}) to ${MAX_BPE_VOCAB}`,
  );
  const merges = learnMerges(text, vocabSize - minimum, specials, vocabSize, opts.onProgress);
  const special: Record<string, number> = {};
  specials.forEach((s, i) => (special[s] = 256 + merges.length / 2 + i));
  return buildBpeTokenizer(merges, special);
}

function validateSpecialNames(names: readonly string[], what: string): void {
  const seen = new Set<string>();
  for (const name of names) {
    check(typeof name === 'string' && name.length > 0, `${what} ${JSON.stringify(name)} is empty; a special token needs some text`);
    check(!seen.has(name), `${what} ${JSON.stringify(name)} is given twice`);
    check(toWellFormed(name) === name, `${what} ${JSON.stringify(name)} holds an unpaired surrogate`);
    seen.add(name);
  }
}

/** A max-heap of (count, pair key): the largest count first, then the smallest key. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number {
    return this.keys.length;
  }
  private before(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }
  push(count: number, key: number): void {
    const { counts, keys } = this;
    let i = keys.length;
    counts.push(count);
    keys.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(count, key, counts[p]!, keys[p]!)) break;
      counts[i] = counts[p]!;
      keys[i] = keys[p]!;
      i = p;
    }
    counts[i] = count;
    keys[i] = key;
  }
  /** Removes the top; returns its count and key through `out`. */
  pop(out: { count: number; key: number }): void {
    const { counts, keys } = this;
    out.count = counts[0]!;
    out.key = keys[0]!;
    const c = counts.pop()!;
    const k = keys.pop()!;
    const n = keys.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(counts[child + 1]!, keys[child + 1]!, counts[child]!, keys[child]!)) child++;
      if (!this.before(counts[child]!, keys[child]!, c, k)) break;
      counts[i] = counts[child]!;
      keys[i] = keys[child]!;
      i = child;
    }
    counts[i] = c;
    keys[i] = k;
  }
}

/** Counts of the distinct pre-tokens of `text`, special tokens' text left out. */
function countWords(text: string, specials: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  const wellFormed = toWellFormed(text);
  const segments =
    specials.length === 0
      ? [wellFormed]
      : wellFormed.split(new RegExp([...specials].sort((a, b) => b.length - a.length).map(escapeRegExp).join('|'), 'u'));
  const re = new RegExp(GPT2_SPLIT_PATTERN, 'gu');
  const add = (w: string): void => void counts.set(w, (counts.get(w) ?? 0) + 1);
  for (const segment of segments) {
    re.lastIndex = 0;
    for (let m = re.exec(segment); m !== null; m = re.exec(segment)) {
      const w = m[0];
      if (w.length <= MAX_TRAINING_WORD) {
        add(w);
        continue;
      }
      // A huge pre-token (a line with no spaces, a base64 blob) is counted as pieces, never split
      // inside a surrogate pair: otherwise every merge would rewrite all of it.
      for (let i = 0; i < w.length; ) {
        let end = Math.min(w.length, i + MAX_TRAINING_WORD);
        const c = w.charCodeAt(end - 1);
        if (end < w.length && c >= 0xd800 && c <= 0xdbff) end--;
        add(w.slice(i, end));
        i = end;
      }
    }
  }
  return counts;
}

/**
 * Pre-tokens longer than this (UTF-16 units) are learned from as pieces of this length. Natural
 * text has almost none; without the limit, a multi-megabyte pre-token makes each merge cost
 * its whole length, so training would take hours instead of seconds.
 */
const MAX_TRAINING_WORD = 64;

/** The merges as a flat list [a0, b0, a1, b1, ...]; merge i makes id 256 + i. */
function learnMerges(
  text: string,
  numMerges: number,
  specials: readonly string[],
  vocabSize: number,
  onProgress?: (merges: number, total: number) => void,
): number[] {
  const wordCounts = countWords(text, specials);
  const utf8 = new TextEncoder();
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [w, c] of wordCounts) {
    const bytes = utf8.encode(w);
    if (bytes.length < 2) continue; // no pairs in it, ever
    words.push(Array.from(bytes));
    freqs.push(c);
  }

  // Pair key: a * V + b, so ordering keys orders pairs by first id, then second.
  const V = vocabSize;
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const word = words[w]!;
    const f = freqs[w]!;
    for (let i = 0; i + 1 < word.length; i++) {
      const key = word[i]! * V + word[i + 1]!;
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + f);
      const list = pairWords.get(key);
      if (list === undefined) pairWords.set(key, [w]);
      else if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  const merges: number[] = [];
  const stamp = new Int32Array(words.length).fill(-1);
  const top = { count: 0, key: 0 };
  const delta = new Map<number, number>();
  const progressEvery = Math.max(1, Math.floor(numMerges / 100));
  for (let m = 0; m < numMerges; m++) {
    // The top entry is current only if the pair still has that count; older entries are skipped.
    let found = false;
    while (heap.size > 0) {
      heap.pop(top);
      if (top.count > 0 && pairCounts.get(top.key) === top.count) {
        found = true;
        break;
      }
    }
    if (!found) {
      throw new MinigptError(
        `the training text has too little variety for a BPE vocabulary of ${vocabSize}: every pre-token is a single token ` +
          `after ${m} merges, so at most ${256 + m + specials.length} tokens can be learned; ` +
          `ask for a vocabulary of at most ${256 + m + specials.length}, or train on more text`,
      );
    }
    const key = top.key;
    const a = Math.floor(key / V);
    const b = key - a * V;
    const id = 256 + m;
    merges.push(a, b);
    const list = pairWords.get(key)!;
    pairWords.delete(key);
    delta.clear();
    for (const w of list) {
      if (stamp[w] === m) continue;
      stamp[w] = m;
      const word = words[w]!;
      const f = freqs[w]!;
      // Only pairs touching a merge site change: old pairs (k, k+1) that touch a merged position
      // go, new pairs that touch a new token come. `lastOld`/`lastNew` stop adjacent sites from
      // counting a shared pair twice. So a merge costs a scan of the word plus work per site,
      // not per pair of the word.
      const merged: number[] = [];
      const sites: number[] = [];
      let lastOld = -1;
      const dropOld = (k: number): void => {
        if (k < 0 || k + 1 >= word.length || k <= lastOld) return;
        lastOld = k;
        const key2 = word[k]! * V + word[k + 1]!;
        delta.set(key2, (delta.get(key2) ?? 0) - f);
      };
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
          dropOld(i - 1);
          dropOld(i);
          dropOld(i + 1);
          sites.push(merged.length);
          merged.push(id);
          i += 2;
        } else {
          merged.push(word[i]!);
          i++;
        }
      }
      if (sites.length === 0) continue; // the pair left this word in an earlier merge
      words[w] = merged;
      let lastNew = -1;
      const addNew = (j: number): void => {
        if (j < 0 || j + 1 >= merged.length || j <= lastNew) return;
        lastNew = j;
        const x = merged[j]!, y = merged[j + 1]!;
        const k = x * V + y;
        delta.set(k, (delta.get(k) ?? 0) + f);
        // Pairs with the new token are new to this word; it is already listed under the rest.
        const l = pairWords.get(k);
        if (l === undefined) pairWords.set(k, [w]);
        else if (l[l.length - 1] !== w) l.push(w);
      };
      for (const j of sites) {
        addNew(j - 1);
        addNew(j);
      }
    }
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const c = (pairCounts.get(k) ?? 0) + d;
      if (c > 0) {
        pairCounts.set(k, c);
        heap.push(c, k);
      } else {
        pairCounts.delete(k);
        pairWords.delete(k);
      }
    }
    if (onProgress && ((m + 1) % progressEvery === 0 || m + 1 === numMerges)) onProgress(m + 1, numMerges);
  }
  return merges;
}

/** A trained tokenizer from its merges (flat [a0, b0, ...]) and special tokens; inputs already valid. */
function buildBpeTokenizer(merges: readonly number[], special: Record<string, number>): ByteLevelTokenizer {
  const numMerges = merges.length / 2;
  const tokenBytes: Uint8Array[] = [];
  for (let i = 0; i < 256; i++) tokenBytes.push(Uint8Array.of(i));
  const pairs = new PairTable(numMerges);
  for (let i = 0; i < numMerges; i++) {
    const a = merges[2 * i]!, b = merges[2 * i + 1]!;
    const left = tokenBytes[a]!, right = tokenBytes[b]!;
    const bytes = new Uint8Array(left.length + right.length);
    bytes.set(left);
    bytes.set(right, left.length);
    tokenBytes.push(bytes);
    pairs.set(a, b, 256 + i);
  }
  const byteToId = new Int32Array(256);
  for (let i = 0; i < 256; i++) byteToId[i] = i;
  const mergeStrings: string[] = new Array(numMerges);
  for (let i = 0; i < numMerges; i++) mergeStrings[i] = `${merges[2 * i]} ${merges[2 * i + 1]}`;
  const specialCopy = { ...special };
  return makeByteLevelTokenizer({
    kind: 'bpe',
    byteToId,
    tokenBytes,
    pairs,
    special: new Map(Object.entries(specialCopy)),
    toJSON: (): BpeTokenizerJson => ({
      type: 'bpe',
      pretokenizer: 'gpt2',
      merges: [...mergeStrings],
      special: { ...specialCopy },
    }),
  });
}

const BPE_FIELDS = ['type', 'pretokenizer', 'merges', 'special'];
const MERGE_FORMAT = /^(0|[1-9][0-9]{0,7}) (0|[1-9][0-9]{0,7})$/;

/** Reads the fields of a `bpe` tokenizer's JSON, checking all of it; `source` names it in errors. */
export function bpeTokenizerFromJsonFields(fields: Record<string, unknown>, source: string): ByteLevelTokenizer {
  for (const name of Object.keys(fields)) {
    check(
      BPE_FIELDS.includes(name),
      () => `${source}: bpe tokenizer has an unknown field ${JSON.stringify(name)}; expected only ${BPE_FIELDS.map((f) => `"${f}"`).join(', ')}`,
    );
  }
  const pre = fields['pretokenizer'];
  check(
    pre === 'gpt2',
    () => `${source}: bpe tokenizer "pretokenizer" must be "gpt2", got ${describeValue(pre)}`,
  );
  const mergesField = fields['merges'];
  check(
    Array.isArray(mergesField),
    () => `${source}: bpe tokenizer "merges" must be an array of "a b" id pairs, got ${describeValue(mergesField)}`,
  );
  check(
    256 + mergesField.length <= MAX_BPE_VOCAB,
    () => `${source}: bpe tokenizer has ${mergesField.length} merges; at most ${MAX_BPE_VOCAB - 256} are supported`,
  );
  const merges: number[] = new Array(mergesField.length * 2);
  const seen = new PairTable(mergesField.length);
  mergesField.forEach((entry: unknown, i) => {
    const m = typeof entry === 'string' ? MERGE_FORMAT.exec(entry) : null;
    check(
      m !== null,
      () => `${source}: bpe tokenizer merges[${i}] must be a string of two token ids like "104 101", got ${describeValue(entry)}`,
    );
    const a = Number(m[1]), b = Number(m[2]);
    const known = 256 + i;
    check(
      a < known && b < known,
      () => `${source}: bpe tokenizer merges[${i}] ${JSON.stringify(entry)} uses id ${Math.max(a, b)}, which does not exist yet; merge ${i} may only join ids below ${known}`,
    );
    const earlier = seen.get(a, b);
    check(
      earlier < 0,
      () => `${source}: bpe tokenizer merges[${i}] ${JSON.stringify(entry)} repeats merges[${earlier - 256}]; each pair may be merged once`,
    );
    seen.set(a, b, known);
    merges[2 * i] = a;
    merges[2 * i + 1] = b;
  });
  const specialField = fields['special'];
  check(
    typeof specialField === 'object' && specialField !== null && !Array.isArray(specialField),
    () => `${source}: bpe tokenizer "special" must be an object of special token text -> id ({} for none), got ${describeValue(specialField)}`,
  );
  const entries = Object.entries(specialField as Record<string, unknown>);
  const first = 256 + mergesField.length;
  const used = new Map<number, string>();
  for (const [name, id] of entries) {
    check(name.length > 0, `${source}: bpe tokenizer has a special token with empty text; a special token needs some text`);
    check(
      toWellFormed(name) === name,
      () => `${source}: bpe tokenizer special token ${JSON.stringify(name)} holds an unpaired surrogate`,
    );
    check(
      typeof id === 'number' && Number.isInteger(id) && id >= first && id < first + entries.length,
      () =>
        `${source}: bpe tokenizer special token ${JSON.stringify(name)} has id ${describeValue(id)}; ` +
        `special ids must be the whole numbers ${first} to ${first + entries.length - 1}, right after the ${mergesField.length} merges`,
    );
    const other = used.get(id);
    check(
      other === undefined,
      () => `${source}: bpe tokenizer special tokens ${JSON.stringify(other)} and ${JSON.stringify(name)} share id ${id}; each needs its own`,
    );
    used.set(id, name);
  }
  const ordered: Record<string, number> = {};
  for (const [name, id] of entries.sort((x, y) => (x[1] as number) - (y[1] as number))) ordered[name] = id as number;
  return buildBpeTokenizer(merges, ordered);
}

export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const shown = JSON.stringify(value);
  return `${typeof value} ${shown.length > 40 ? `${shown.slice(0, 37)}...` : shown}`;
}
