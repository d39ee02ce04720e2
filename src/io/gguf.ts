/**
 * GGUF v3 export for llama.cpp (and everything built on it: node-llama-cpp, ollama, LM Studio).
 *
 *   "GGUF" u32 version=3, u64 tensor count, u64 metadata count
 *   metadata: (string key, u32 type, value)*      strings are u64 length + UTF-8
 *   tensor infos: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)*
 *   padding to general.alignment (32), then tensor data, each tensor 32-aligned
 *
 * ne[] lists dimensions fastest-first, so a [out, in] weight is ne = [in, out].
 *
 * Tensors get llama.cpp's names (token_embd, blk.N.attn_q, ..., output_norm, output). llama.cpp
 * applies RoPE to adjacent pairs (x[2i], x[2i+1]) while Hugging Face LLaMA rotates halves
 * (x[i], x[i + hd/2]); like convert_hf_to_gguf.py (LlamaModel.permute), the rows of q_proj and
 * k_proj are permuted within each head, row 2i+h <- row h·hd/2 + i, so both compute the same
 * attention scores. Norm weights are always F32 (as the converter writes them).
 *
 * The tokenizer is tokenizer.ggml.model "gpt2" (byte-level BPE, pre-tokenizer "gpt-2"; for
 * hf-bpe's digits-first split "smollm", for Qwen2's split "qwen2", for Llama 3's "llama-bpe"):
 *   gpt2 / bpe / hf-bpe: byte-level token strings and merges, as in tokenizer.json (hf.ts);
 *         special tokens are CONTROL tokens wherever their ids are
 *   char: each character is the token whose text is its UTF-8 bytes (byte-level strings);
 *         a character of k bytes is assembled by k-1 merges (prefix + next byte), which never
 *         cross a character boundary (the right side is always a continuation byte), so
 *         llama.cpp gives our ids for every character in the vocabulary. A character outside
 *         it has no token: llama.cpp drops it (our tokenizer maps it to unk, or refuses it).
 *         Its "<|endoftext|>" (char tokenizers made for training have it, last id) is a CONTROL
 *         token and BOS/EOS. Without one (checkpoints from before), llama.cpp falls back to id 11
 *         as BOS/EOS for a "gpt2" vocabulary, and there is no key to say "none", so it stops
 *         generating at whatever character has id 11: the export warns (onWarning).
 * Vocabulary slots beyond the tokenizer (config vocab_size > tokenizer size) are "[PAD<i>]"
 * tokens of type UNUSED, as the converter writes them.
 *
 * GELU-MLP models cannot be written: llama.cpp's llama architecture is SwiGLU only and none of
 * its architectures has RMSNorm + RoPE + a non-gated GELU MLP.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { MinigptError, check, checkOptionNames, optionSetting, adviceFor } from '../errors.js';
import { exists, readHead, writeFileAtomic } from '../util/fs.js';
import { headDim, type ModelConfig } from '../model/config.js';
import { paramLayout } from '../model/params.js';
import { endOfTextToken, startOfTextToken, type Tokenizer } from '../data/tokenizer.js';
import { encodeF16 } from '../util/half.js';
import { checkCheckpointArg, recordedClean, type Checkpoint } from './checkpoint.js';
import { byteLevelVocab } from './hf.js';
import { bytesToByteLevel } from '../data/byte-level.js';
import { tokensOnlyWholeWordsReach, type HfBpeTokenizerJson, type HfPretokenizer } from '../data/hf-bpe.js';
import { SP_SPACE, type SpBpeTokenizerJson } from '../data/sp-bpe.js';
import { checkNodeOnly } from '../util/runtime.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

export enum GgufType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** ggml tensor types written here. */
export enum GgmlType { F32 = 0, F16 = 1 }

/** llama.cpp's token types. */
export enum GgufTokenType { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 }

export type GgufValue =
  | { type: GgufType.UINT32 | GgufType.INT32 | GgufType.FLOAT32 | GgufType.UINT8 | GgufType.INT8 | GgufType.UINT16 | GgufType.INT16 | GgufType.FLOAT64; value: number }
  | { type: GgufType.UINT64 | GgufType.INT64; value: bigint }
  | { type: GgufType.BOOL; value: boolean }
  | { type: GgufType.STRING; value: string }
  | { type: GgufType.ARRAY; itemType: GgufType.STRING; value: string[] }
  | { type: GgufType.ARRAY; itemType: GgufType.INT32 | GgufType.UINT32 | GgufType.FLOAT32; value: number[] | Int32Array | Float32Array };

/** One tensor to write: its llama.cpp name, shape, storage type, and f32 data (converted on write). */
export interface GgufTensor {
  name: string;
  /** numpy-style shape, slowest first ([out, in] for a weight); written reversed as ne. */
  shape: number[];
  type: GgmlType;
  data: Float32Array;
}

/** What a GGUF file holds: key/value metadata and tensors, written in this order. */
export interface GgufContents {
  /** Keys such as general.architecture and llama.context_length. */
  metadata: Map<string, GgufValue>;
  tensors: GgufTensor[];
}

const u32 = (value: number): GgufValue => ({ type: GgufType.UINT32, value });
const f32 = (value: number): GgufValue => ({ type: GgufType.FLOAT32, value });
const str = (value: string): GgufValue => ({ type: GgufType.STRING, value });
const bool = (value: boolean): GgufValue => ({ type: GgufType.BOOL, value });

/** A growable little-endian byte writer. */
class Writer {
  buf = new Uint8Array(1 << 16);
  view = new DataView(this.buf.buffer);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.length));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(v: number): void { this.ensure(1); this.view.setUint8(this.length, v); this.length += 1; }
  u16(v: number): void { this.ensure(2); this.view.setUint16(this.length, v, true); this.length += 2; }
  i8(v: number): void { this.ensure(1); this.view.setInt8(this.length, v); this.length += 1; }
  i16(v: number): void { this.ensure(2); this.view.setInt16(this.length, v, true); this.length += 2; }
  u32(v: number): void { this.ensure(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.ensure(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number): void { this.ensure(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  f64(v: number): void { this.ensure(8); this.view.setFloat64(this.length, v, true); this.length += 8; }
  u64(v: number | bigint): void { this.ensure(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  i64(v: bigint): void { this.ensure(8); this.view.setBigInt64(this.length, v, true); this.length += 8; }
  bytes(b: Uint8Array): void { this.ensure(b.length); this.buf.set(b, this.length); this.length += b.length; }
  string(s: string): void { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  pad(alignment: number): void { const n = (alignment - (this.length % alignment)) % alignment; this.ensure(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  result(): Uint8Array { return this.buf.slice(0, this.length); }
}

function writeScalar(w: Writer, type: GgufType, v: number | bigint | boolean | string): void {
  switch (type) {
    case GgufType.UINT8: return w.u8(v as number);
    case GgufType.INT8: return w.i8(v as number);
    case GgufType.UINT16: return w.u16(v as number);
    case GgufType.INT16: return w.i16(v as number);
    case GgufType.UINT32: return w.u32(v as number);
    case GgufType.INT32: return w.i32(v as number);
    case GgufType.FLOAT32: return w.f32(v as number);
    case GgufType.FLOAT64: return w.f64(v as number);
    case GgufType.UINT64: return w.u64(v as bigint);
    case GgufType.INT64: return w.i64(v as bigint);
    case GgufType.BOOL: return w.u8(v ? 1 : 0);
    case GgufType.STRING: return w.string(v as string);
    default: throw new Error(`cannot write GGUF scalar of type ${type}`);
  }
}

/** Serialises a GGUF v3 file (same input, same bytes). */
export function encodeGguf(contents: GgufContents): Uint8Array {
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(contents.tensors.length);
  w.u64(contents.metadata.size);
  for (const [key, v] of contents.metadata) {
    w.string(key);
    w.u32(v.type);
    if (v.type === GgufType.ARRAY) {
      w.u32(v.itemType);
      w.u64(v.value.length);
      for (const item of v.value as unknown as (number | string)[]) writeScalar(w, v.itemType, item as number | string);
    } else {
      writeScalar(w, v.type, v.value);
    }
  }
  const sizes = contents.tensors.map((t) => t.data.length * (t.type === GgmlType.F16 ? 2 : 4));
  let offset = 0;
  const offsets: number[] = [];
  contents.tensors.forEach((t, i) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`tensor ${t.name}: shape [${t.shape}] but ${t.data.length} values`);
    w.string(t.name);
    w.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
    offsets.push(offset);
    offset += Math.ceil(sizes[i]! / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  });
  w.pad(GGUF_ALIGNMENT);
  const dataStart = w.length;
  contents.tensors.forEach((t, i) => {
    w.pad(GGUF_ALIGNMENT);
    if (w.length - dataStart !== offsets[i]) throw new Error('internal: GGUF tensor offset mismatch');
    if (t.type === GgmlType.F16) {
      const bits = encodeF16(t.data, new Uint16Array(t.data.length));
      for (const b of bits) w.u16(b);
    } else {
      for (const x of t.data) w.f32(x);
    }
  });
  w.pad(GGUF_ALIGNMENT);
  return w.result();
}

/**
 * convert_hf_to_gguf.py's LlamaModel.permute: within each of `nHead` heads of `rows / nHead`
 * rows, row 2i+h of the result is row h·(hd/2)+i of `w` (h in {0, 1}): rotate-half RoPE rows
 * reordered for llama.cpp's adjacent-pair RoPE.
 */
export function permuteForGgufRope(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const hd = rows / nHead, half = hd / 2;
  check(Number.isInteger(hd) && hd % 2 === 0, `cannot permute ${rows} rows into ${nHead} heads of even size`);
  const out = new Float32Array(w.length);
  for (let head = 0; head < nHead; head++) {
    for (let i = 0; i < half; i++) {
      for (let h = 0; h < 2; h++) {
        const src = (head * hd + h * half + i) * cols, dst = (head * hd + 2 * i + h) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/**
 * llama.cpp's name for each pre-tokenizer (tokenizer.ggml.pre): "smollm" isolates each digit,
 * then splits as GPT-2; "qwen2" and "llama-bpe" are Qwen2's and Llama 3's regexes ("llama-bpe"
 * with the whole-word lookup of ignore_merges, as Llama 3's tokenizer.json has it).
 */
const GGUF_PRETOKENIZERS: Record<HfPretokenizer, string> = { 'gpt2': 'gpt-2', 'gpt2-digits': 'smollm', 'qwen2': 'qwen2', 'llama3': 'llama-bpe' };

/** llama.cpp's BOS/EOS id for a "gpt2" vocabulary whose GGUF names none. */
export const LLAMA_CPP_DEFAULT_GPT2_EOS = 11;

/**
 * The tokenizer.ggml.* metadata for our tokenizer, padded to `vocabSize` tokens. `onWarning` hears
 * of a char tokenizer without "<|endoftext|>" (llama.cpp would end generation at a character),
 * of an hf-bpe tokenizer with tokens only ignore_merges reaches (llama.cpp tokenizes their text
 * otherwise), and of an sp-bpe tokenizer whose leading "▁" llama.cpp adds otherwise (Metaspace).
 */
export function ggufTokenizerMetadata(tokenizer: Tokenizer, vocabSize: number, onWarning?: (message: string) => void): Map<string, GgufValue> {
  if (tokenizer.kind === 'sp-bpe') return spGgufTokenizerMetadata(tokenizer.toJSON() as SpBpeTokenizerJson, tokenizer, vocabSize, onWarning);
  const tokens: string[] = [];
  const types: number[] = [];
  let merges: string[];
  const md = new Map<string, GgufValue>();
  const hfBpe = tokenizer.kind === 'hf-bpe' ? tokenizer.toJSON() as HfBpeTokenizerJson : null;
  if (tokenizer.kind === 'char') {
    const { vocab, unk, special } = tokenizer.toJSON() as unknown as { vocab: string[]; unk: string | null; special?: Record<string, number> };
    const pieces = unk === null ? vocab : [...vocab, unk];
    const mergeSet = new Set<string>();
    merges = [];
    const utf8 = new TextEncoder();
    for (const ch of pieces) {
      const bytes = utf8.encode(ch);
      tokens.push(bytesToByteLevel(bytes));
      types.push(GgufTokenType.NORMAL);
      for (let k = 1; k < bytes.length; k++) {
        const m = `${bytesToByteLevel(bytes.subarray(0, k))} ${bytesToByteLevel(bytes.subarray(k, k + 1))}`;
        if (!mergeSet.has(m)) {
          mergeSet.add(m);
          merges.push(m);
        }
      }
    }
    for (const [text, id] of Object.entries(special ?? {}).sort((a, b) => a[1] - b[1])) {
      check(id === tokens.length, 'internal: special token ids must follow the characters');
      tokens.push(text);
      types.push(GgufTokenType.CONTROL);
    }
    const eot = special?.['<|endoftext|>'];
    if (eot !== undefined) {
      md.set('tokenizer.ggml.bos_token_id', u32(eot));
      md.set('tokenizer.ggml.eos_token_id', u32(eot));
    } else if (pieces.length > LLAMA_CPP_DEFAULT_GPT2_EOS) {
      const ch = pieces[LLAMA_CPP_DEFAULT_GPT2_EOS]!;
      onWarning?.(
        `this character tokenizer has no "<|endoftext|>" token (a checkpoint from an older minigpt, or one built without it), so llama.cpp will take ` +
          `the character with id ${LLAMA_CPP_DEFAULT_GPT2_EOS}, ${JSON.stringify(ch)}, as end of text and stop generating whenever the model writes it; ` +
          'retraining with a current minigpt (its character tokenizers have "<|endoftext|>") avoids this',
      );
    }
  } else {
    const v = byteLevelVocab(tokenizer);
    const specialIds = new Set(v.special.map(([, id]) => id));
    // Added tokens that are not special: llama.cpp finds USER_DEFINED tokens in any text, as the tokenizers library does.
    const plainIds = new Set(Object.values(hfBpe?.plainAdded ?? {}));
    v.tokens.forEach((t, id) => {
      tokens.push(t);
      types.push(specialIds.has(id) ? GgufTokenType.CONTROL : plainIds.has(id) ? GgufTokenType.USER_DEFINED : GgufTokenType.NORMAL);
    });
    merges = v.merges.map(([a, b]) => `${a} ${b}`);
    // Of the pre-tokenizers here, llama.cpp looks whole words up (ignore_merges) for "llama-bpe" only.
    if (hfBpe && hfBpe.pretokenizer !== 'llama3') {
      const whole = tokensOnlyWholeWordsReach(hfBpe);
      if (whole.length > 0) {
        onWarning?.(
          `${whole.length} of this tokenizer's tokens (such as ${JSON.stringify(whole[0])}) come only from its whole-word lookup (ignore_merges), which llama.cpp does not do ` +
            'for this pre-tokenizer: llama.cpp splits text holding them into other tokens than minigpt and transformers do',
        );
      }
    } else if (hfBpe && !hfBpe.ignoreMerges) {
      // The other way round: llama.cpp's "llama-bpe" always looks whole words up, this tokenizer does not.
      const whole = tokensOnlyWholeWordsReach({ ...hfBpe, ignoreMerges: true });
      if (whole.length > 0) {
        onWarning?.(
          `${whole.length} of this tokenizer's tokens (such as ${JSON.stringify(whole[0])}) are whole words its merges never make, and llama.cpp's "llama-bpe" ` +
            'pre-tokenizer looks whole words up (ignore_merges) where this tokenizer does not: llama.cpp gives those words one token where minigpt and transformers give several',
        );
      }
    }
    const eos = endOfTextToken(tokenizer), bos = startOfTextToken(tokenizer);
    if (bos) md.set('tokenizer.ggml.bos_token_id', u32(bos[1]));
    if (eos) md.set('tokenizer.ggml.eos_token_id', u32(eos[1]));
  }
  check(tokens.length <= vocabSize, `the tokenizer has ${tokens.length} tokens, more than the model's vocab_size ${vocabSize}`);
  for (let i = tokens.length; i < vocabSize; i++) {
    tokens.push(`[PAD${i}]`);
    types.push(GgufTokenType.UNUSED);
  }
  const out = new Map<string, GgufValue>([
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str(GGUF_PRETOKENIZERS[hfBpe?.pretokenizer ?? 'gpt2'])],
    ['tokenizer.ggml.tokens', { type: GgufType.ARRAY, itemType: GgufType.STRING, value: tokens }],
    ['tokenizer.ggml.token_type', { type: GgufType.ARRAY, itemType: GgufType.INT32, value: Int32Array.from(types) }],
    ['tokenizer.ggml.merges', { type: GgufType.ARRAY, itemType: GgufType.STRING, value: merges }],
    ...md,
    ['tokenizer.ggml.add_bos_token', bool(false)],
    ['tokenizer.ggml.add_eos_token', bool(false)],
  ]);
  return out;
}

/**
 * An sp-bpe tokenizer as llama.cpp's "llama" (SentencePiece) vocabulary: its pieces, a BYTE type
 * for "<0x00>".."<0xFF>", and scores that make llama.cpp's merge order the BPE's: llama.cpp joins
 * the adjacent pair whose joined piece scores highest (the leftmost on a tie), so a piece scores
 * minus the rank of the first merge that makes it. That is exactly the BPE where every split of a
 * piece into two pieces is a merge ranked by the piece it makes, as tokenizer.json files converted
 * from SentencePiece models (Llama 2's) have their merges; llama.cpp adds the leading "▁" itself
 * (add_space_prefix) and "<s>" where the tokenizer does.
 */
function spGgufTokenizerMetadata(json: SpBpeTokenizerJson, tokenizer: Tokenizer, vocabSize: number, onWarning?: (message: string) => void): Map<string, GgufValue> {
  check(json.byteFallback, 'llama.cpp\'s SentencePiece vocabulary falls back to bytes for a character it lacks; this sp-bpe tokenizer has an unknown token instead, so llama.cpp could not tokenize such text as minigpt does');
  if (json.spaces !== 'prepend') {
    onWarning?.(`llama.cpp puts "${SP_SPACE}" before every text, also one that starts with a space, where this tokenizer (a Metaspace pre-tokenizer) does not: llama.cpp tokenizes text that starts with a space differently from minigpt and transformers`);
  }
  const idOf = new Map(json.vocab.map((piece, id) => [piece, id]));
  const scores = new Float32Array(vocabSize);
  const made = new Set<number>();
  json.merges.forEach((m, rank) => {
    const id = idOf.get(m.replace(' ', ''))!;
    if (made.has(id)) return;
    made.add(id);
    scores[id] = -rank - 1;
  });
  const specialIds = new Set(Object.values(json.special));
  const unkId = json.unk === undefined ? -1 : idOf.get(json.unk)!; // a special token, or a piece only the vocabulary holds
  const byteToken = /^<0x[0-9A-F]{2}>$/;
  // llama.cpp joins any two adjacent pieces that make a piece; the BPE only those its merges list.
  // Where a piece has a split into two pieces that is no merge, or no merge makes it, llama.cpp may
  // tokenize some text differently (never for files converted from SentencePiece, which list every split).
  const mergeSet = new Set(json.merges);
  const ordinary = (piece: string): boolean => idOf.has(piece) && !specialIds.has(idOf.get(piece)!) && idOf.get(piece) !== unkId && !byteToken.test(piece);
  const unlisted = json.vocab.filter((piece, id) => {
    if (!ordinary(piece)) return false;
    const chars = [...piece];
    if (chars.length < 2) return false;
    if (!made.has(id)) return true;
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join(''), right = chars.slice(k).join('');
      if (ordinary(left) && ordinary(right) && !mergeSet.has(`${left} ${right}`)) return true;
    }
    return false;
  });
  if (unlisted.length > 0) {
    onWarning?.(`${unlisted.length} of this tokenizer's pieces (such as ${JSON.stringify(unlisted[0])}) are made of two pieces its merges do not join, or by no merge: llama.cpp, which joins any two pieces that make a piece, may tokenize text holding them differently from minigpt and transformers`);
  }
  const types = new Int32Array(vocabSize).fill(GgufTokenType.UNUSED);
  const tokens = json.vocab.slice();
  json.vocab.forEach((piece, id) => {
    types[id] = id === unkId ? GgufTokenType.UNKNOWN
      : specialIds.has(id) ? GgufTokenType.CONTROL : byteToken.test(piece) ? GgufTokenType.BYTE : GgufTokenType.NORMAL;
  });
  check(tokens.length <= vocabSize, `the tokenizer has ${tokens.length} tokens, more than the model's vocab_size ${vocabSize}`);
  for (let i = tokens.length; i < vocabSize; i++) tokens.push(`[PAD${i}]`);
  const md = new Map<string, GgufValue>([
    ['tokenizer.ggml.model', str('llama')],
    ['tokenizer.ggml.tokens', { type: GgufType.ARRAY, itemType: GgufType.STRING, value: tokens }],
    ['tokenizer.ggml.scores', { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value: scores }],
    ['tokenizer.ggml.token_type', { type: GgufType.ARRAY, itemType: GgufType.INT32, value: types }],
  ]);
  const eos = endOfTextToken(tokenizer), bos = startOfTextToken(tokenizer);
  if (bos) md.set('tokenizer.ggml.bos_token_id', u32(bos[1]));
  if (eos) md.set('tokenizer.ggml.eos_token_id', u32(eos[1]));
  if (unkId >= 0) md.set('tokenizer.ggml.unknown_token_id', u32(unkId));
  // minigpt's generation ends where the model writes the token every text starts with (a new text,
  // as llama2.c's models end a story); llama.cpp ends at its end-of-turn token too.
  if (json.addBos !== undefined) md.set('tokenizer.ggml.eot_token_id', u32(json.special[json.addBos]!));
  md.set('tokenizer.ggml.add_bos_token', bool(json.addBos !== undefined));
  md.set('tokenizer.ggml.add_eos_token', bool(false));
  md.set('tokenizer.ggml.add_space_prefix', bool(true));
  return md;
}

/** Options of ggufFromCheckpoint and exportGguf. */
export interface GgufExportOptions {
  /** Matrices as F32 (default) or F16; norm weights are always F32. */
  dtype?: 'F32' | 'F16';
  /** general.name. */
  name?: string;
  /** Hears of what works but not fully in llama.cpp (a char tokenizer without "<|endoftext|>"); one line each. */
  onWarning?: (message: string) => void;
  /** exportGguf: replace an existing file (default false: refused). */
  overwrite?: boolean;
}

/** The GGUF contents (metadata and llama.cpp-named tensors) for a checkpoint. */
export function ggufFromCheckpoint(ckpt: Checkpoint, opts: GgufExportOptions = {}): GgufContents {
  checkCheckpointArg(ckpt, 'ggufFromCheckpoint');
  const c: ModelConfig = ckpt.config;
  check(c.mlp === 'swiglu',
    () => `a GELU-MLP model cannot be exported to GGUF: llama.cpp's llama architecture has a SwiGLU (gate/up/down) MLP and none of its architectures combines RMSNorm, RoPE and a non-gated GELU MLP; ${adviceFor('export --format hf', 'use exportHf')} instead (it loads as ArceeForCausalLM)`);
  const dtype = opts.dtype ?? 'F32';
  check(dtype === 'F32' || dtype === 'F16', `a GGUF export's dtype must be F32 or F16 (got ${JSON.stringify(dtype)})`);
  const matrixType = dtype === 'F16' ? GgmlType.F16 : GgmlType.F32;
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', str('llama')],
    ['general.name', str(opts.name ?? 'minigpt')],
    ['general.file_type', u32(dtype === 'F16' ? 1 : 0)],
    ['general.quantization_version', u32(2)],
    ['llama.vocab_size', u32(c.vocab_size)],
    ['llama.context_length', u32(c.context)],
    ['llama.embedding_length', u32(c.d_model)],
    ['llama.block_count', u32(c.n_layers)],
    ['llama.feed_forward_length', u32(c.intermediate_size)],
    ['llama.rope.dimension_count', u32(headDim(c))],
    ['llama.attention.head_count', u32(c.n_heads)],
    ['llama.attention.head_count_kv', u32(c.n_kv_heads)],
    ['llama.attention.layer_norm_rms_epsilon', f32(c.rms_norm_eps)],
    ['llama.rope.freq_base', f32(c.rope_theta)],
    ...ggufTokenizerMetadata(ckpt.tokenizer, c.vocab_size, opts.onWarning),
  ]);

  if (recordedClean(ckpt)?.lowercase) {
    // GGUF has no place for text cleaning, and llama.cpp does none.
    opts.onWarning?.('the model was trained on lowercased text, and llama.cpp does not lowercase prompts: lowercase them yourself (the hf export\'s tokenizer.json does it)');
  }
  const layout = paramLayout(c);
  const byName = new Map(layout.specs.map((s) => [s.name, s]));
  const tensor = (hfName: string, name: string, transform?: (w: Float32Array, rows: number, cols: number) => Float32Array): GgufTensor => {
    const s = byName.get(hfName)!;
    const n = s.shape.reduce((a, b) => a * b, 1);
    let data = ckpt.weights.subarray(s.offset, s.offset + n);
    if (transform) data = transform(data, s.shape[0]!, s.shape[1] ?? 1);
    return { name, shape: s.shape, type: s.kind === 'matrix' ? matrixType : GgmlType.F32, data };
  };
  const tensors: GgufTensor[] = [tensor('model.embed_tokens.weight', 'token_embd.weight')];
  for (let l = 0; l < c.n_layers; l++) {
    const p = `model.layers.${l}.`, b = `blk.${l}.`;
    tensors.push(
      tensor(`${p}input_layernorm.weight`, `${b}attn_norm.weight`),
      tensor(`${p}self_attn.q_proj.weight`, `${b}attn_q.weight`, (w, r, k) => permuteForGgufRope(w, r, k, c.n_heads)),
      tensor(`${p}self_attn.k_proj.weight`, `${b}attn_k.weight`, (w, r, k) => permuteForGgufRope(w, r, k, c.n_kv_heads)),
      tensor(`${p}self_attn.v_proj.weight`, `${b}attn_v.weight`),
      // llama.cpp's llama architecture adds q, k and v biases where the file has them; q's and k's
      // rows are permuted as their weights' are (one column).
      ...(c.qkv_bias ? [
        tensor(`${p}self_attn.q_proj.bias`, `${b}attn_q.bias`, (w, r) => permuteForGgufRope(w, r, 1, c.n_heads)),
        tensor(`${p}self_attn.k_proj.bias`, `${b}attn_k.bias`, (w, r) => permuteForGgufRope(w, r, 1, c.n_kv_heads)),
        tensor(`${p}self_attn.v_proj.bias`, `${b}attn_v.bias`),
      ] : []),
      tensor(`${p}self_attn.o_proj.weight`, `${b}attn_output.weight`),
      tensor(`${p}post_attention_layernorm.weight`, `${b}ffn_norm.weight`),
      tensor(`${p}mlp.gate_proj.weight`, `${b}ffn_gate.weight`),
      tensor(`${p}mlp.up_proj.weight`, `${b}ffn_up.weight`),
      tensor(`${p}mlp.down_proj.weight`, `${b}ffn_down.weight`),
    );
  }
  tensors.push(tensor('model.norm.weight', 'output_norm.weight'));
  // Tied embeddings: no output.weight; llama.cpp then uses token_embd for the LM head.
  if (!c.tie_embeddings) tensors.push(tensor('lm_head.weight', 'output.weight'));
  return { metadata, tensors };
}

/** Writes the GGUF file of `ckpt` to `path` (temporary sibling, then rename). */
export async function exportGguf(ckpt: Checkpoint, path: string, opts: GgufExportOptions = {}): Promise<void> {
  checkNodeOnly('exportGguf()');
  checkCheckpointArg(ckpt, 'exportGguf');
  checkOptionNames(opts, ['dtype', 'name', 'onWarning', 'overwrite'], 'exportGguf');
  path = resolve(path);
  const bytes = encodeGguf(ggufFromCheckpoint(ckpt, opts));
  if (await exists(path)) {
    const info = await stat(path);
    check(!info.isDirectory(), `${path} exists and is a directory; give a file name for the GGUF`);
    check(info.isFile(), `${path} is not a regular file (a device or a pipe); give a file name for the GGUF`);
    check(opts.overwrite, () => `${path} exists; refusing to overwrite it (choose another name or pass ${optionSetting('overwrite', true, '--force')})`);
    // As an hf export replaces only an earlier export: a corpus or a checkpoint's own file is not a GGUF to replace.
    const magic = new TextDecoder().decode(await readHead(path, 4));
    check(magic === 'GGUF', `${path} is not a GGUF file; ${optionSetting('overwrite', true, '--force')} replaces only an earlier GGUF export: choose another name`);
  }
  try {
    await writeFileAtomic(path, bytes);
  } catch (e) {
    throw e instanceof MinigptError ? e : new MinigptError(`cannot write ${path}: ${(e as Error).message}`);
  }
}
