/**
 * Pre-tokenized binary shards, for corpora of any size with bounded memory.
 *
 * `prepareShards` streams a text file, a folder of them or JSONL (the same files, order,
 * separators and cleaning as `loadText` + `cleanText`) in chunks, cleans and encodes them piece
 * by piece and writes the tokens to shard files as they fill. `openShards` gives TokenStreams
 * that read windows straight from the files, so training never holds the corpus in memory.
 *
 * A shards directory:
 *   meta.json          { format: "minigpt-shards", version: 1, tokenizer, vocab_size, dtype,
 *                        train: { shards, tokens }, val: { shards, tokens }, source, created, ... }
 *   train_000000.bin   llm.c's format: 256 little-endian int32 (magic 20240520, version, token
 *   train_000001.bin   count, zeros), then the tokens: version 1 = uint16 (llm.c's own format),
 *   val_000000.bin     version 2 = uint32 (our extension, for vocabularies above 65536)
 *
 * Chunking. Text is cut only where it is "safe": just before a line break (LF, or the CR of
 * CRLF) that follows a character that is neither whitespace nor a control character. Every
 * cleaning step is local across such a cut (no CRLF, blank-line run, NFC composition or
 * lowercasing context spans it) and so is the GPT-2 pre-tokenizer (a pre-token never runs from
 * such a character into the line break; hf-bpe's digits-first split cuts next to every digit
 * anyway). Qwen2's and Llama 3's regexes (hf-bpe "qwen2", "llama3") put punctuation and the line
 * breaks after it in one pre-token, so for them (ByteLevelTokenizer.safeCuts "line-start") the
 * safe cut is just after a LF that a character neither whitespace nor control follows: no
 * alternative of their regex matches a line break and then such a character (the letter run's
 * leading character is no line break; punctuation takes only line breaks after it; the
 * whitespace ones end before it), the whitespace before the LF is one pre-token with it
 * (\s*[\r\n]+ comes before \s+(?!\S)) whatever follows, and the cleaning steps stay local (no CRLF
 * or blank-line run goes on past a visible character, NFC composes nothing with a LF, a final
 * sigma looks no further than a LF). Either way the shards hold exactly the tokens train() makes of the data in memory
 * (encodeDocuments(tokenizer, cleanDocuments(loadDocuments(data), separator)): documents joined
 * by a blank line and cleaned for char, each document cleaned on its own with <|endoftext|>
 * between them for the byte-level kinds that have it; for sp-bpe with a start-of-text token, that token
 * before each document and the "▁" in front only at a document's start, exact where its line breaks
 * are byte tokens no merge joins, as in Llama 2's vocabulary), for every kind. A document's end is a cut
 * too. Only a text with no safe cut for 16M characters (e.g. a 16M-character line) is cut
 * elsewhere (relaxedCut): at the first place before a single space, else between two ASCII
 * letters or digits, else between two non-space characters, where cutting changes neither the
 * cleaning nor the tokenizer's pre-tokens of the 64 characters each side (so the tokens stay exact);
 * failing one, at the first such place, where a byte-level tokenizer can tokenize a word
 * differently.
 *
 * Validation split: the last `valFraction` of the input bytes is the validation part, from a safe
 * cut within half the validation part's size of that byte (the first after it, else the last
 * before it), else from a relaxed cut near it (exact where one is), else, with only whitespace
 * near it, from the nearest safe cut however far (in-memory training splits the last 10% of
 * tokens). A JSONL record that holds the split point is split at the same share of its text as
 * the point's share of its line.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { endianness } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { MinigptError, adviceFor, check, checkOptionNames, optionSetting, shownValue } from '../errors.js';
import { commitDir, ioError, makeDirs, recoverInterruptedReplace, siblingPath, writeFileSynced } from '../util/fs.js';
import type { TokenStream } from './batches.js';
import { DOCUMENT_SEPARATORS, START_OF_TEXT_SEPARATOR, documentSeparatorOf, documentSeparatorOfKind, type DocumentSeparator } from './documents.js';
import type { SpBpeTokenizer } from './sp-bpe.js';
import { BLANK_LINE_SEPARATOR, DEFAULT_CLEAN, checkCleanOptions, cleanText, legacyClean, describeJsonValue, describeReplacements, fileSystemError, findTextFiles, jsonlRecordText, noTextFilesError, scanUtf8, statOrThrow, type CleanOptions, type ReplacedBytes } from './text.js';
import {
  END_OF_TEXT,
  charTokenizerFromVocab,
  makeTokenizer,
  tokenizerFromJson,
  UnknownCharacterError,
  textStartIds,
  type Tokenizer,
  type TokenizerJson,
  type TokenizerKind,
} from './tokenizer.js';
import { checkNodeOnly } from '../util/runtime.js';
import { gpt2Pretokens, type ByteLevelTokenizer, type SafeCuts } from './bpe.js';

/** Splits text into a byte-level tokenizer's pre-tokens. */
type Pretokens = (text: string) => string[];

export const SHARDS_FORMAT = 'minigpt-shards';
export const SHARDS_VERSION = 1;
/** llm.c's magic number for token files. */
export const SHARD_MAGIC = 20240520;
export const SHARD_HEADER_INTS = 256;
export const SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4;
export const DEFAULT_SHARD_TOKENS = 50_000_000;
export const DEFAULT_READ_CHUNK_BYTES = 1024 * 1024;
/** The longest stretch of text held while waiting for a safe cut (see the file comment). */
export const DEFAULT_MAX_PENDING_CHARS = 16 * 1024 * 1024;
export const DEFAULT_BPE_SAMPLE_BYTES = 20 * 1024 * 1024;
export const META_FILE = 'meta.json';

export type ShardDType = 'uint16' | 'uint32';
const DTYPE_VERSION: Record<ShardDType, number> = { uint16: 1, uint32: 2 };
const DTYPE_BYTES: Record<ShardDType, number> = { uint16: 2, uint32: 4 };
/** Largest token count a header's int32 can hold. */
const MAX_SHARD_TOKENS = 2 ** 31 - 1;
const SHARD_NAME = /^(train|val)_\d{6}\.bin$/;

export interface PrepareProgress {
  /** 'scan': the first pass (char vocabulary, bpe sample); 'encode': the pass that writes shards. */
  phase: 'scan' | 'encode';
  bytesRead: number;
  bytesTotal: number;
  tokens: number;
}

/** What prepareShards reads, how it tokenizes it, and where it writes the shards. */
export interface PrepareOptions {
  /** A text file, a .jsonl file, or a folder of them (see loadText). */
  data: string;
  /** The shards directory to write (replaced atomically if it is one already). */
  out: string;
  /** A kind to build from the data, or a ready tokenizer (it must round-trip through toJSON). */
  tokenizer: TokenizerKind | Tokenizer;
  /** bpe: vocabulary size to learn. */
  bpeVocab?: number;
  /** bpe: bytes of (cleaned) training text to learn from; default 20 MB. */
  bpeSampleBytes?: number;
  /** Field of each JSONL object that holds the text; default "text". */
  textField?: string;
  /** Last fraction of the input bytes that goes to validation; default 0.1. */
  valFraction?: number;
  /** Tokens per shard file; default 50M. */
  shardTokens?: number;
  /** Token storage; default uint16 when the vocabulary fits, else uint32. */
  dtype?: ShardDType;
  /** Text cleaning, over the defaults (see cleanText). */
  clean?: Partial<CleanOptions>;
  /** Invalid UTF-8: an error (default), or replaced with U+FFFD and reported once through onWarning. */
  invalidUtf8?: 'error' | 'replace';
  /** Receives non-fatal problems (replaced bytes). */
  onWarning?(message: string): void;
  /** Bytes read per chunk; default 1 MB (smaller chunks keep V8's heap smaller; tests make it tiny). */
  chunkBytes?: number;
  /** Characters held while no safe cut comes before cutting elsewhere; default 16M (tests make it small). */
  maxPendingChars?: number;
  /** Called as each pass reads the input. */
  onProgress?(p: PrepareProgress): void;
}

/** One split's shard files (names inside the shards directory) and its total tokens. */
export interface ShardSplitSummary {
  shards: string[];
  tokens: number;
}

/** What prepareShards wrote. */
export interface PrepareSummary {
  /** The shards directory, as an absolute path. */
  out: string;
  /** The tokenizer's kind (the tokenizer itself is in meta.json). */
  tokenizer: TokenizerKind;
  vocabSize: number;
  dtype: ShardDType;
  train: ShardSplitSummary;
  val: ShardSplitSummary;
  /** Input files read, and their bytes. */
  files: number;
  bytes: number;
  /** Wall-clock time taken. */
  seconds: number;
}

export interface ShardsMeta {
  format: typeof SHARDS_FORMAT;
  version: number;
  tokenizer: TokenizerJson;
  vocab_size: number;
  dtype: ShardDType;
  train: ShardSplitSummary;
  val: ShardSplitSummary;
  source: string;
  created: string;
  shard_tokens?: number;
  val_fraction?: number;
  clean?: CleanOptions;
  /** What separates the documents in the tokens (absent in shards prepared before 2026-12-07: a blank line). */
  document_separator?: DocumentSeparator;
}

// ---------------------------------------------------------------------------------------------
// Input files

interface InputFile {
  path: string;
  size: number;
  jsonl: boolean;
}

/** The files loadText would read, in its order, with their sizes. */
async function listInputs(path: string): Promise<InputFile[]> {
  const info = await statOrThrow(path);
  const isJsonl = (p: string) => extname(p).toLowerCase() === '.jsonl';
  if (info.isFile()) {
    check(info.size > 0, `${path}: file is empty; point at a file with training text in it`);
    return [{ path, size: info.size, jsonl: isJsonl(path) }];
  }
  check(info.isDirectory(), `${path}: not a regular file or folder; point at a text file or a folder of them`);
  // The same files, in the same order, as loadText reads: so shards hold the same tokens.
  const { textFiles, otherFileCount } = await findTextFiles(path);
  if (textFiles.length === 0) throw await noTextFilesError(path, otherFileCount);
  const files: InputFile[] = [];
  for (const p of textFiles) files.push({ path: p, size: (await statOrThrow(p)).size, jsonl: isJsonl(p) });
  check(
    files.some((f) => f.size > 0),
    `${path}: all ${files.length} text files in the folder are empty; point at a folder with training text in it`,
  );
  return files;
}

// ---------------------------------------------------------------------------------------------
// Streaming cleaner: cuts text at safe points, cleans each piece, hands it on

type Part = 'train' | 'val';
/** Receives cleaned pieces in order (`startsText`: the first of a document, or of the whole text with blank-line separation); returning false stops the reading. */
type PieceSink = (text: string, part: Part, startsText: boolean) => boolean | void;
/** Receives the separator between two documents (with token separation: <|endoftext|>, or the start-of-text token, which the piece sink writes); false stops the stream, as for PieceSink. */
type SeparatorSink = (part: Part) => boolean | void;

function isWhitespace(c: number): boolean {
  return (
    (c >= 0x09 && c <= 0x0d) || c === 0x20 || c === 0x85 || c === 0xa0 || c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000
  );
}
function isControl(c: number): boolean {
  return c <= 0x1f || (c >= 0x7f && c <= 0x9f);
}
const isSurrogate = (c: number): boolean => c >= 0xd800 && c <= 0xdfff;
const isHighSurrogate = (c: number): boolean => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff;
/** The text each side of a relaxed cut that exactCut compares, and how many places it tries. */
const EXACT_WINDOW = 64;
const EXACT_CHECKS = 10_000;
const isAsciiAlnum = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const MARK = /\p{M}/u;
/** Hangul jamo, which NFC composes with the character before them. */
const isJamo = (c: number): boolean => (c >= 0x1100 && c <= 0x11ff) || (c >= 0xa960 && c <= 0xa97f) || (c >= 0xd7b0 && c <= 0xd7ff);

class StreamCleaner {
  private pending = '';
  /** The split point in `pending` (validation starts at a cut near it, see drain); -1 when not yet or already. */
  private splitAt = -1;
  /** `pending` before this index has no safe cut (after the split point, when one is set). */
  private searched = 0;
  private part: Part = 'train';
  private emitted = false;
  /** Documents started; whether the current one has emitted text; a separator owed before the next text. */
  private documents = 0;
  private documentHasText = false;
  private separatorPending = false;
  stopped = false;

  /** `separatorSink`: documents are separated by a token (each cleaned on its own); without it, by a blank line in the text. */
  constructor(
    private readonly chunkChars: number,
    private readonly maxPending: number,
    /** How far from the split point validation may start (characters): half the validation part. */
    private readonly splitReach: number,
    /** The byte-level tokenizer's pre-tokenizer (gpt2, bpe, hf-bpe); null when the text is tokenized by characters. */
    private readonly pretokens: Pretokens | null,
    /** Where the safe cuts are (SafeCuts, see the file comment). */
    private readonly safeCuts: SafeCuts,
    private readonly clean: CleanOptions,
    private readonly sink: PieceSink,
    private readonly separatorSink?: SeparatorSink,
  ) {}

  /**
   * A new document starts. Blank-line separation: "\n\n" joins it to the one before (loadText's
   * join). Token separation: the document before is cleaned and emitted to its end (a document
   * boundary is always a cut) and, if it had text, a separator is owed before the next text, so
   * documents that clean to nothing add none (cleanDocuments drops them).
   */
  startDocument(): void {
    if (this.stopped) return;
    if (this.documents++ === 0) return;
    if (!this.separatorSink) {
      this.push(BLANK_LINE_SEPARATOR);
      return;
    }
    if (this.splitAt >= 0 && this.splitAt >= this.pending.length) {
      // Validation starts at this boundary.
      this.emit(this.pending, 'train');
      this.splitAt = -1;
      this.part = 'val';
    } else {
      this.drain(true);
    }
    this.pending = '';
    this.searched = 0;
    this.emitted = true;
    if (this.documentHasText) this.separatorPending = true;
    this.documentHasText = false;
  }

  push(text: string): void {
    if (this.stopped || text === '') return;
    this.pending += text;
    if (this.pending.length >= this.chunkChars) this.drain(false);
  }

  /** Everything pushed from now on is validation text (from a cut near here, see drain). */
  markSplit(): void {
    // Right after a cut (a document boundary), validation starts here.
    if (this.part === 'train' && this.splitAt < 0 && this.pending === '' && this.emitted) {
      this.part = 'val';
      return;
    }
    if (this.part === 'train' && this.splitAt < 0) {
      this.splitAt = this.pending.length;
      this.searched = this.splitAt;
    }
  }

  finish(): void {
    this.drain(true);
  }

  /**
   * The safe cut at the newline at `nl`: just before it (or before its CR), when the character
   * before that is neither whitespace nor a control character; for "line-start" cuts, just after
   * it, when the character after it (in `s`) is neither; -1 when there is none.
   */
  private cutAtNewline(s: string, nl: number): number {
    if (this.safeCuts === 'line-start') {
      const y = nl + 1 < s.length ? s.charCodeAt(nl + 1) : 0;
      return isWhitespace(y) || isControl(y) ? -1 : nl + 1;
    }
    let p = nl;
    if (p > 0 && s.charCodeAt(p - 1) === 0x0d) p--;
    if (p <= 0) return -1;
    const x = s.charCodeAt(p - 1);
    return isWhitespace(x) || isControl(x) ? -1 : p;
  }

  /** Where the search for a newline's cut starts when `pending` before `searched` has no safe cut: a "line-start" cut comes after its newline, which may have ended `pending` then. */
  private firstNewlineToSearch(searched: number): number {
    return this.safeCuts === 'line-start' ? Math.max(0, searched - 1) : searched;
  }

  private lastSafeCut(s: string, stopAt: number): number {
    for (let nl = s.lastIndexOf('\n'); nl >= Math.max(this.safeCuts === 'line-start' ? 0 : 1, this.firstNewlineToSearch(stopAt)); nl = s.lastIndexOf('\n', nl - 1)) {
      const cut = this.cutAtNewline(s, nl);
      if (cut > 0) return cut;
    }
    return -1;
  }

  private firstSafeCut(s: string, from: number): number {
    for (let nl = s.indexOf('\n', this.firstNewlineToSearch(from)); nl >= 0; nl = s.indexOf('\n', nl + 1)) {
      const cut = this.cutAtNewline(s, nl);
      if (cut > 0 && cut >= this.splitAt) return cut;
    }
    return -1;
  }

  /**
   * A cut searched from `from` toward `to`: before a single space between two non-space
   * characters if there is one, else between two ASCII letters or digits, else between two
   * non-space, non-control characters: the first such place where the cut changes nothing
   * (exactCut), among the first EXACT_CHECKS; else the first such place; -1 when there is none
   * (only whitespace and controls).
   */
  private relaxedCut(s: string, from: number, to: number): number {
    const step = to >= from ? 1 : -1;
    const inRange = (p: number) => (step > 0 ? p <= to : p >= to);
    const plainBefore = (x: number) => !isWhitespace(x) && !isControl(x) && !isHighSurrogate(x);
    const plainAfter = (y: number) => !isWhitespace(y) && !isControl(y) && !isSurrogate(y) && !isJamo(y) && !MARK.test(String.fromCharCode(y));
    const ok = (p: number, kind: 'space' | 'alnum' | 'plain'): boolean => {
      if (p <= 0 || p >= s.length) return false;
      const x = s.charCodeAt(p - 1);
      const y = s.charCodeAt(p);
      if (kind === 'space') return y === 0x20 && p + 1 < s.length && plainBefore(x) && plainAfter(s.charCodeAt(p + 1));
      if (kind === 'alnum') return isAsciiAlnum(x) && isAsciiAlnum(y);
      return plainBefore(x) && plainAfter(y);
    };
    let first = -1, checks = 0;
    for (const kind of ['space', 'alnum', 'plain'] as const) {
      for (let p = from, n = 0; inRange(p) && n < 1 << 22; p += step, n++) {
        if (!ok(p, kind)) continue;
        if (first < 0) first = p;
        if (checks++ < EXACT_CHECKS && this.exactCut(s, p)) return p;
      }
    }
    return first;
  }

  /**
   * Whether cutting `s` at `p` leaves the text around it (EXACT_WINDOW characters each side)
   * cleaned as it is whole and, for a byte-level tokenizer, split into the same pre-tokens:
   * then the tokenizer makes the same tokens of the two parts as of the whole (a Greek final sigma
   * lowercased, a blank-line run, or for byte-level kinds a word split by the cut would not).
   */
  private exactCut(s: string, p: number): boolean {
    const left = cleanText(s.slice(Math.max(0, p - EXACT_WINDOW), p), this.clean);
    const right = cleanText(s.slice(p, p + EXACT_WINDOW), this.clean);
    const whole = cleanText(s.slice(Math.max(0, p - EXACT_WINDOW), p + EXACT_WINDOW), this.clean);
    if (whole !== left + right) return false;
    if (this.pretokens === null) return true;
    const parts = [...this.pretokens(left), ...this.pretokens(right)];
    const pieces = this.pretokens(whole);
    return parts.length === pieces.length && parts.every((t, i) => t === pieces[i]);
  }

  private emit(text: string, part: Part): void {
    if (this.stopped || text === '') return;
    const cleaned = cleanText(text, this.clean);
    if (cleaned === '') return;
    if (this.separatorPending) {
      this.separatorPending = false;
      if (this.separatorSink!(part) === false) {
        this.stopped = true;
        return;
      }
    }
    const startsText = !this.documentHasText;
    this.documentHasText = true;
    if (this.sink(cleaned, part, startsText) === false) this.stopped = true;
  }

  private cutAndEmit(cut: number, part: Part): void {
    const head = this.pending.slice(0, cut);
    this.pending = this.pending.slice(cut);
    this.searched = 0;
    this.emitted = true;
    this.emit(head, part);
  }

  private drain(final: boolean): void {
    const maxPending = this.maxPending;
    if (this.splitAt >= 0) {
      // Validation starts at a safe cut within splitReach (half the validation part) of the split
      // point: the first one after it, else the last one before it (the start of `pending` is one),
      // else a relaxed cut at it. (A safe cut further off could lie a whole long line away: the
      // newline ending a corpus of long lines left 1 token of validation, and the start of a long
      // line once put 45% of a one-line corpus there.)
      const reach = this.splitReach;
      let cut = this.firstSafeCut(this.pending, this.searched);
      if (cut - this.splitAt > reach) cut = -1;
      if (cut < 0 && (final || this.pending.length - this.splitAt > reach)) {
        cut = this.lastSafeCut(this.pending.slice(0, this.splitAt + 1), Math.max(0, this.splitAt - reach));
        if (cut < 0 && this.splitAt <= reach) cut = 0;
        if (cut < 0 && this.splitAt >= this.pending.length) cut = this.pending.length;
        // A relaxed cut near the split point, exact if one is; in a stretch of only whitespace and
        // controls, none: the nearest safe cut however far (exact, the split off its fraction).
        if (cut < 0) cut = this.relaxedCut(this.pending, this.splitAt, Math.min(this.pending.length - 1, this.splitAt + reach));
        if (cut < 0) cut = this.firstSafeCut(this.pending, this.splitAt);
        if (cut < 0) cut = Math.max(0, this.lastSafeCut(this.pending.slice(0, this.splitAt + 1), 0));
      }
      if (cut < 0) {
        this.searched = Math.max(this.splitAt, this.pending.length - 1);
        // Bound memory while waiting: emit what lies safely before the split point.
        if (this.splitAt >= this.chunkChars) {
          const early = this.lastSafeCut(this.pending.slice(0, this.splitAt + 1), 0);
          if (early > 0) {
            const splitAt = this.splitAt - early;
            this.cutAndEmit(early, 'train');
            this.splitAt = splitAt;
            this.searched = splitAt;
          }
        }
        return;
      }
      this.cutAndEmit(cut, 'train');
      this.splitAt = -1;
      this.part = 'val';
    }
    if (final) {
      this.emit(this.pending, this.part);
      this.pending = '';
      return;
    }
    if (this.pending.length < this.chunkChars) return;
    let cut = this.lastSafeCut(this.pending, this.searched);
    if (cut <= 0 && this.pending.length >= maxPending) {
      cut = this.relaxedCut(this.pending, this.pending.length - 1, 1);
      if (cut < 0) {
        // Only whitespace and controls: cut anywhere not inside CRLF or a surrogate pair.
        cut = this.pending.length - 1;
        while (cut > 1 && (this.pending.charCodeAt(cut - 1) === 0x0d || isLowSurrogate(this.pending.charCodeAt(cut)))) cut--;
      }
    }
    if (cut > 0) this.cutAndEmit(cut, this.part);
    else this.searched = this.pending.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Streaming reader: bytes -> strict UTF-8 -> (JSONL records) -> cleaner

const BINARY_SNIFF_BYTES = 8192;

interface StreamOptions {
  textField: string;
  clean: CleanOptions;
  /** How documents are separated (see documents.ts); but for a blank line, streamCorpus's separatorSink receives each separator. */
  separator: DocumentSeparator;
  chunkBytes: number;
  maxPendingChars: number;
  /** Global input byte at which validation starts; Infinity for none. */
  splitByte: number;
  /** Bytes from splitByte to the end: how far from the split point validation may start is half of it. */
  valBytes: number;
  /** The pre-tokenizer of the byte-level tokenizer that reads the text (a relaxed cut must keep its pre-tokens too); null for char. */
  pretokens: Pretokens | null;
  /** Where its safe cuts are; default "line-end" (see the file comment). */
  safeCuts?: SafeCuts;
  /** 'replace': invalid UTF-8 becomes U+FFFD, recorded per file in `replaced`; else an error. */
  invalidUtf8: 'error' | 'replace';
  replaced?: ReplacedBytes[];
  onBytes?: (bytesRead: number) => void;
}

class JsonlReader {
  private carry = '';
  private lineNo = 0;
  /** Characters of the line being read when the split point came; -1: it has not come, or is placed. */
  private splitInLine = -1;
  documents = 0;
  constructor(
    private readonly path: string,
    private readonly textField: string,
    /** A record's text; `splitAt`: where in it validation starts, when the split point falls in its line. */
    private readonly out: (document: string, splitAt?: number) => void,
    /** The split point falls between records (in a blank line): validation starts with the next one. */
    private readonly markSplit: () => void,
  ) {}

  /**
   * The split point is here, in the middle of the line being read (or at its start): it falls at
   * the same share of the line's record text as of the line (a big record is split, not put in
   * validation whole).
   */
  split(): void {
    this.splitInLine = this.carry.length;
  }

  text(s: string): void {
    const nl = s.lastIndexOf('\n');
    if (nl < 0) {
      this.carry += s;
      return;
    }
    const lines = (this.carry + s.slice(0, nl)).split('\n');
    this.carry = s.slice(nl + 1);
    for (const line of lines) this.line(line);
  }

  end(): void {
    this.line(this.carry);
    this.carry = '';
    check(this.documents > 0, `${this.path}: JSONL file has no records, only blank lines; point at a file with training text in it`);
  }

  private line(raw: string): void {
    this.lineNo++;
    const line = raw.trim();
    if (line === '') {
      if (this.splitInLine >= 0) {
        // Validation starts with the next record, in this file or the next.
        this.splitInLine = -1;
        this.markSplit();
      }
      return;
    }
    const document = jsonlRecordText(line, `${this.path}:${this.lineNo}`, this.textField);
    if (this.splitInLine < 0) {
      this.out(document);
    } else {
      let at = Math.round((document.length * this.splitInLine) / Math.max(1, raw.length));
      if (at > 0 && at < document.length && isLowSurrogate(document.charCodeAt(at))) at--;
      this.splitInLine = -1;
      this.out(document, at);
    }
    this.documents++;
  }
}

/** The 1-based line of byte `offset` in the file at `path`, read again from its start (for an error message only). */
function lineOfByte(path: string, offset: number): number {
  const fd = openSync(path, 'r');
  try {
    const buffer = new Uint8Array(1 << 20);
    let line = 1;
    for (let pos = 0; pos < offset; ) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, offset - pos), pos);
      if (n === 0) break;
      const read = buffer.subarray(0, n);
      for (let i = read.indexOf(0x0a); i >= 0; i = read.indexOf(0x0a, i + 1)) line++;
      pos += n;
    }
    return line;
  } finally {
    closeSync(fd);
  }
}

/**
 * Streams the cleaned text of `files` into `sink`: the documents cleaned and separated as
 * cleanDocuments does for `opts.separator` (a blank line: as cleanText(loadText(...))), each
 * <|endoftext|> separator given to `separatorSink`.
 */
async function streamCorpus(files: InputFile[], opts: StreamOptions, sink: PieceSink, separatorSink?: SeparatorSink): Promise<void> {
  const chunkChars = Math.max(64, opts.chunkBytes);
  check(opts.separator === BLANK_LINE_SEPARATOR || separatorSink !== undefined, 'streamCorpus: token separation needs a separator sink');
  const maxPending = Math.max(2 * chunkChars, opts.maxPendingChars);
  const splitReach = Math.min(maxPending, Math.max(64, Math.floor(opts.valBytes / 2)));
  const cleaner = new StreamCleaner(chunkChars, maxPending, splitReach, opts.pretokens, opts.safeCuts ?? 'line-end', opts.clean, sink, opts.separator === BLANK_LINE_SEPARATOR ? undefined : separatorSink);
  const buffer = new Uint8Array(opts.chunkBytes);
  let globalOffset = 0;
  if (opts.splitByte <= 0) cleaner.markSplit();
  for (const file of files) {
    if (cleaner.stopped) break;
    if (file.size === 0) continue; // loadText skips empty files (no document, no separator)
    const jsonl = file.jsonl
      ? new JsonlReader(file.path, opts.textField, (doc, splitAt) => {
          cleaner.startDocument();
          if (splitAt === undefined) {
            cleaner.push(doc);
          } else {
            cleaner.push(doc.slice(0, splitAt));
            cleaner.markSplit();
            cleaner.push(doc.slice(splitAt));
          }
        }, () => cleaner.markSplit())
      : null;
    if (!jsonl) cleaner.startDocument();
    const handle = (text: string) => (jsonl ? jsonl.text(text) : cleaner.push(text));
    const replace = opts.invalidUtf8 === 'replace';
    const decoder = new TextDecoder('utf-8', { fatal: !replace });
    // The last few bytes decoded, from a character start, to locate an error that began in them.
    let tail = new Uint8Array(0);
    const firstBadByte = (bytes: Uint8Array, at: number): number => {
      const joined = new Uint8Array(tail.length + bytes.length);
      joined.set(tail);
      joined.set(bytes, tail.length);
      return at - tail.length + Math.max(0, scanUtf8(joined).firstOffset);
    };
    // Replace mode: replacements = U+FFFD out - U+FFFD in (the bytes EF BF BD, which always decode
    // to one: EF never continues a character), counted with the last two bytes carried over.
    let replacedHere: ReplacedBytes | null = null;
    let before2 = 0, before1 = 0; // the two bytes before this chunk
    const decode = (bytes: Uint8Array, at: number, last = false): string => {
      let text: string;
      try {
        text = last ? decoder.decode() : decoder.decode(bytes, { stream: true });
      } catch {
        const offset = firstBadByte(bytes, at);
        throw new MinigptError(
          `${file.path}: invalid UTF-8 at byte ${offset} (line ${lineOfByte(file.path, offset)}${last ? ', the file ends inside a character' : ''}); ` +
            `re-encode the file as UTF-8 or pass ${optionSetting('invalidUtf8', 'replace')}`,
        );
      }
      if (replace) {
        let out = 0, literal = 0;
        for (let i = text.indexOf('\uFFFD'); i >= 0; i = text.indexOf('\uFFFD', i + 1)) out++;
        for (let i = bytes.indexOf(0xbd); i >= 0; i = bytes.indexOf(0xbd, i + 1)) {
          const b1 = i >= 1 ? bytes[i - 1]! : before1, b2 = i >= 2 ? bytes[i - 2]! : i === 1 ? before1 : before2;
          if (b1 === 0xbf && b2 === 0xef) literal++;
        }
        if (bytes.length >= 2) [before2, before1] = [bytes[bytes.length - 2]!, bytes[bytes.length - 1]!];
        else if (bytes.length === 1) [before2, before1] = [before1, bytes[0]!];
        const count = out - literal;
        if (count > 0) {
          if (!replacedHere) {
            // At the end: the unfinished character, which began in the bytes kept in `tail`.
            replacedHere = { file: file.path, count: 0, firstOffset: firstBadByte(last ? new Uint8Array(0) : bytes, at) };
            opts.replaced?.push(replacedHere);
          }
          replacedHere.count += count;
        }
      }
      const joined = new Uint8Array(Math.min(4, tail.length + bytes.length));
      const fromBytes = Math.min(joined.length, bytes.length);
      joined.set(tail.subarray(tail.length - (joined.length - fromBytes)));
      joined.set(bytes.subarray(bytes.length - fromBytes), joined.length - fromBytes);
      let startAt = 0;
      while (startAt < joined.length && (joined[startAt]! & 0xc0) === 0x80) startAt++;
      tail = joined.subarray(startAt);
      return text;
    };

    let fh;
    try {
      fh = await open(file.path, 'r');
    } catch (err) {
      throw fileSystemError(file.path, err);
    }
    try {
      let pos = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buffer, 0, buffer.length, pos);
        if (bytesRead === 0) break;
        const chunk = buffer.subarray(0, bytesRead);
        if (pos === 0) {
          const utf16 = (chunk[0] === 0xff && chunk[1] === 0xfe) || (chunk[0] === 0xfe && chunk[1] === 0xff);
          check(!utf16, `${file.path}: file is UTF-16 encoded; re-encode it as UTF-8`);
        }
        if (pos < BINARY_SNIFF_BYTES) {
          const nul = chunk.subarray(0, BINARY_SNIFF_BYTES - pos).indexOf(0);
          check(nul < 0, () => `${file.path}: looks like a binary file (NUL byte at offset ${pos + nul}); point at a UTF-8 text file instead`);
        }
        const start = globalOffset + pos;
        if (opts.splitByte > start && opts.splitByte <= start + bytesRead) {
          const k = opts.splitByte - start;
          handle(decode(chunk.subarray(0, k), pos));
          if (jsonl) jsonl.split();
          else cleaner.markSplit();
          handle(decode(chunk.subarray(k), pos + k));
        } else {
          handle(decode(chunk, pos));
        }
        pos += bytesRead;
        opts.onBytes?.(globalOffset + pos);
        if (cleaner.stopped) break;
      }
      if (!cleaner.stopped) {
        // The split into train and validation was placed by the sizes the files had at the start.
        check(pos === file.size, () => `${file.path} changed while it was being read (${file.size.toLocaleString('en-US')} bytes at the start, ${pos.toLocaleString('en-US')} read); run again once nothing writes to it`);
        handle(decode(new Uint8Array(0), pos, true));
        jsonl?.end();
      }
      globalOffset += Math.max(pos, file.size);
    } finally {
      await fh.close();
    }
  }
  cleaner.finish();
}

// ---------------------------------------------------------------------------------------------
// Shard files

function assertLittleEndian(): void {
  check(endianness() === 'LE', 'token shards are little-endian and this machine is big-endian; it is not supported');
}

class ShardWriter {
  readonly names: string[] = [];
  tokens = 0;
  private fd = -1;
  private count = 0;
  private staged = 0;
  private position = 0;
  private readonly stage: Uint16Array | Uint32Array;

  constructor(
    private readonly dir: string,
    private readonly prefix: Part,
    private readonly dtype: ShardDType,
    private readonly shardTokens: number,
  ) {
    const n = Math.min(1 << 20, shardTokens);
    this.stage = dtype === 'uint16' ? new Uint16Array(n) : new Uint32Array(n);
  }

  write(ids: Int32Array): void {
    let i = 0;
    while (i < ids.length) {
      if (this.fd < 0) this.openNext();
      const n = Math.min(ids.length - i, this.shardTokens - this.count, this.stage.length - this.staged);
      this.stage.set(ids.subarray(i, i + n), this.staged);
      this.staged += n;
      this.count += n;
      this.tokens += n;
      i += n;
      if (this.staged === this.stage.length) this.flushStage();
      if (this.count === this.shardTokens) this.closeShard();
    }
  }

  finish(): void {
    if (this.fd >= 0) this.closeShard();
  }

  /** Closes an open file after a failure (the temporary directory is removed anyway). */
  abort(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  private openNext(): void {
    const name = `${this.prefix}_${String(this.names.length).padStart(6, '0')}.bin`;
    this.names.push(name);
    this.fd = openSync(join(this.dir, name), 'w');
    this.count = 0;
    this.staged = 0;
    // The header stays zero (an invalid magic) until the shard is complete.
    writeSync(this.fd, new Uint8Array(SHARD_HEADER_BYTES), 0, SHARD_HEADER_BYTES, 0);
    this.position = SHARD_HEADER_BYTES;
  }

  private flushStage(): void {
    if (this.staged === 0) return;
    const bytes = new Uint8Array(this.stage.buffer, 0, this.staged * this.stage.BYTES_PER_ELEMENT);
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done, this.position + done);
    this.position += bytes.length;
    this.staged = 0;
  }

  private closeShard(): void {
    this.flushStage();
    const header = new Int32Array(SHARD_HEADER_INTS);
    header[0] = SHARD_MAGIC;
    header[1] = DTYPE_VERSION[this.dtype];
    header[2] = this.count;
    writeSync(this.fd, new Uint8Array(header.buffer), 0, SHARD_HEADER_BYTES, 0);
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * True when `dir` holds shards written by prepareShards (its meta.json says so). A prepare killed
 * while it swapped the folders left the previous shards under a hidden `.dir.old-*` name: they
 * are put back first.
 */
export async function isShardDir(dir: string): Promise<boolean> {
  checkNodeOnly('isShardDir()');
  await recoverInterruptedReplace(resolve(dir), hasShardsMeta).catch(() => {});
  return hasShardsMeta(dir);
}

async function hasShardsMeta(dir: string): Promise<boolean> {
  try {
    const json = JSON.parse(await readFile(join(dir, META_FILE), 'utf8'));
    return json?.format === SHARDS_FORMAT;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// prepareShards

/** Streams `opts.data` into a shards directory at `opts.out`; see the file comment. */
/** Every option prepareShards takes (the Record type keeps it complete). */
const PREPARE_OPTION_NAMES: Record<keyof PrepareOptions, true> = {
  data: true, out: true, tokenizer: true, bpeVocab: true, bpeSampleBytes: true, textField: true, valFraction: true, shardTokens: true,
  dtype: true, clean: true, invalidUtf8: true, onWarning: true, chunkBytes: true, maxPendingChars: true, onProgress: true,
};

export async function prepareShards(opts: PrepareOptions): Promise<PrepareSummary> {
  checkNodeOnly('prepareShards()');
  checkOptionNames(opts, Object.keys(PREPARE_OPTION_NAMES), 'prepareShards');
  check(typeof opts.data === 'string' && typeof opts.out === 'string', () => `prepareShards needs data and out paths (got data ${shownValue(opts.data)}, out ${shownValue(opts.out)})`);
  if (opts.clean !== undefined) checkCleanOptions(opts.clean);
  assertLittleEndian();
  const started = performance.now();
  const valFraction = opts.valFraction ?? 0.1;
  check(
    Number.isFinite(valFraction) && valFraction >= 0 && valFraction < 1,
    `validation fraction ${valFraction} is out of range; use a number from 0 (no validation) up to but not including 1`,
  );
  const shardTokens = opts.shardTokens ?? DEFAULT_SHARD_TOKENS;
  check(
    Number.isInteger(shardTokens) && shardTokens >= 1 && shardTokens <= MAX_SHARD_TOKENS,
    `tokens per shard ${shardTokens} is out of range; use a whole number from 1 to ${MAX_SHARD_TOKENS}`,
  );
  const chunkBytes = opts.chunkBytes ?? DEFAULT_READ_CHUNK_BYTES;
  check(Number.isInteger(chunkBytes) && chunkBytes >= 16, `read chunk size ${chunkBytes} must be a whole number of at least 16 bytes`);
  const clean: CleanOptions = { ...DEFAULT_CLEAN, ...opts.clean };
  const out = resolve(opts.out);

  // Refuse before any work, not after an hour of it.
  const existing = await stat(out).catch(() => null);
  if (existing) {
    const entries = existing.isDirectory() ? await readdir(out) : ['(a file)'];
    check(
      existing.isDirectory() && (entries.length === 0 || (await isShardDir(out))),
      `${out} exists and is not a minigpt shards folder; refusing to overwrite it (choose another output directory)`,
    );
    // The folder is replaced whole: anything in it that prepare did not write would be lost with it.
    const others = entries.filter((name) => name !== META_FILE && !SHARD_NAME.test(name)).sort();
    check(
      others.length === 0,
      () => `${out} is a shards folder, but it also holds ${others.slice(0, 3).join(', ')}${others.length > 3 ? ` and ${others.length - 3} more` : ''}, which prepare did not write; replacing the folder would lose them: move them out, or choose another output directory`,
    );
  }

  const files = await listInputs(opts.data);
  const bytesTotal = files.reduce((s, f) => s + f.size, 0);
  const splitByte = valFraction > 0 ? Math.floor(bytesTotal * (1 - valFraction)) : Infinity;
  const base: Omit<StreamOptions, 'splitByte' | 'onBytes' | 'separator' | 'pretokens'> = {
    valBytes: valFraction > 0 ? bytesTotal - splitByte : 0,
    textField: opts.textField ?? 'text',
    clean,
    chunkBytes,
    maxPendingChars: opts.maxPendingChars ?? DEFAULT_MAX_PENDING_CHARS,
    invalidUtf8: opts.invalidUtf8 ?? 'error',
  };
  const progress = (phase: PrepareProgress['phase'], tokens: () => number) => (bytesRead: number) =>
    opts.onProgress?.({ phase, bytesRead, bytesTotal, tokens: tokens() });
  const noText = `${opts.data}: contains no text, only whitespace; point at a file with training text in it`;

  // The tokenizer: given, fixed, or learned in a first pass.
  let tokenizer: Tokenizer;
  if (typeof opts.tokenizer === 'object') {
    tokenizer = opts.tokenizer;
  } else if (opts.tokenizer === 'char') {
    const seen = new Uint8Array(0x110000);
    let any = false;
    await streamCorpus(files, { ...base, separator: documentSeparatorOfKind('char'), splitByte: Infinity, pretokens: null, onBytes: progress('scan', () => 0) }, (text) => {
      for (let i = 0; i < text.length; i++) {
        let c = text.charCodeAt(i);
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
          const d = text.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
            i++;
          }
        }
        seen[c] = 1;
      }
      if (!any && text.trim() !== '') any = true;
    });
    check(any, noText);
    const vocab: string[] = [];
    for (let cp = 0; cp < seen.length; cp++) if (seen[cp]) vocab.push(String.fromCodePoint(cp));
    // As makeTokenizer('char') makes them for training: the characters, then "<|endoftext|>".
    tokenizer = charTokenizerFromVocab(vocab, null, [END_OF_TEXT]);
  } else if (opts.tokenizer === 'gpt2') {
    tokenizer = makeTokenizer('gpt2', '');
  } else if (opts.tokenizer === 'bpe') {
    check(opts.bpeVocab !== undefined, () => `a BPE tokenizer needs a vocabulary size to learn; give one (e.g. ${optionSetting('bpeVocab', 4096)})`);
    const limit = opts.bpeSampleBytes ?? DEFAULT_BPE_SAMPLE_BYTES;
    const pieces: string[] = [];
    let size = 0;
    // The documents joined by <|endoftext|>, as train() learns a BPE (its special token splits them apart).
    await streamCorpus(files, { ...base, separator: documentSeparatorOfKind('bpe'), splitByte, pretokens: gpt2Pretokens, onBytes: progress('scan', () => 0) }, (text, part) => {
      if (part === 'val') return false;
      pieces.push(text);
      size += text.length;
      return size < limit;
    }, (part) => {
      if (part === 'val') return false;
      pieces.push(END_OF_TEXT);
    });
    const sample = pieces.join('');
    check(sample.trim() !== '', noText);
    tokenizer = makeTokenizer('bpe', sample, { vocabSize: opts.bpeVocab });
  } else {
    throw new MinigptError(`unknown tokenizer kind ${JSON.stringify(opts.tokenizer)}; expected "char", "gpt2" or "bpe"`);
  }

  // Pieces are cut before line breaks and encoded one by one: exact for an sp-bpe tokenizer whose
  // line breaks are byte tokens no merge joins (Llama 2's), its later pieces continuing the first.
  const sp = tokenizer.kind === 'sp-bpe' ? tokenizer as SpBpeTokenizer : null;
  check(sp === null || sp.lineBreaksCutExactly, () => `${opts.data}: this sp-bpe tokenizer's line breaks are not byte tokens that no merge joins (it has no byte fallback, line breaks as pieces, or merges of byte tokens), so prepare cannot cut the text at line breaks and keep its tokens exact; train on the data directly (${adviceFor('--data', 'data')}), which encodes it whole`);
  const separator = documentSeparatorOf(tokenizer);
  const dtype: ShardDType = opts.dtype ?? (tokenizer.vocabSize <= 65536 ? 'uint16' : 'uint32');
  check(
    dtype === 'uint32' || tokenizer.vocabSize <= 65536,
    `a vocabulary of ${tokenizer.vocabSize} tokens does not fit uint16 shards; use uint32`,
  );
  const tokenizerJson = tokenizer.toJSON();

  const tmp = siblingPath(out, 'tmp');
  const writers = {
    train: new ShardWriter(tmp, 'train', dtype, shardTokens),
    val: new ShardWriter(tmp, 'val', dtype, shardTokens),
  };
  let meta: ShardsMeta;
  try {
    await makeDirs(tmp);
    let any = false;
    const tokens = () => writers.train.tokens + writers.val.tokens;
    // The encode pass reads every byte once, so it is the one that reports replaced bytes.
    const replaced: ReplacedBytes[] = [];
    const separatorId = tokenizer.specialTokens?.[END_OF_TEXT];
    const textStart = Int32Array.from(textStartIds(tokenizer));
    // sp-bpe has no pre-tokenizer; GPT-2's word boundaries stand in for where a relaxed cut keeps its tokens.
    const byteLevel = tokenizer as Partial<ByteLevelTokenizer>;
    await streamCorpus(files, { ...base, separator, splitByte, pretokens: tokenizer.kind === 'char' ? null : byteLevel.pretokenize ?? gpt2Pretokens, safeCuts: byteLevel.safeCuts ?? 'line-end', onBytes: progress('encode', tokens), replaced }, (text, part, startsText) => {
      if (!any && text.trim() !== '') any = true;
      let ids: Int32Array;
      try {
        if (sp) {
          // Each document starts with the start-of-text token (textStartIds); the "▁" in front goes to a text's first piece only.
          if (startsText && separator === START_OF_TEXT_SEPARATOR) writers[part].write(textStart);
          ids = sp.encodeOrdinary(text, startsText);
        } else {
          ids = tokenizer.encode(text);
        }
      } catch (e) {
        // The position inside a streamed piece means nothing to the user: name the data and the character.
        if (e instanceof UnknownCharacterError && typeof opts.tokenizer === 'object') {
          throw new MinigptError(`${opts.data}: ${e.unplaced}; the given tokenizer has no token for it; remove such characters from the data, or prepare with a tokenizer that has them`);
        }
        throw e;
      }
      writers[part].write(ids);
    }, (part) => {
      // Between documents: <|endoftext|>; with the start-of-text token, that is written before each document's first piece.
      if (separator === END_OF_TEXT) writers[part].write(Int32Array.of(separatorId!));
    });
    if (replaced.length > 0) opts.onWarning?.(describeReplacements(replaced));
    check(any, noText);
    opts.onProgress?.({ phase: 'encode', bytesRead: bytesTotal, bytesTotal, tokens: tokens() });
    writers.train.finish();
    writers.val.finish();
    check(writers.train.tokens > 0, `${opts.data}: no training tokens are left after the validation split; use a smaller validation fraction`);
    meta = {
      format: SHARDS_FORMAT,
      version: SHARDS_VERSION,
      tokenizer: tokenizerJson,
      vocab_size: tokenizer.vocabSize,
      dtype,
      train: { shards: writers.train.names, tokens: writers.train.tokens },
      val: { shards: writers.val.names, tokens: writers.val.tokens },
      source: opts.data,
      created: new Date().toISOString(),
      shard_tokens: shardTokens,
      val_fraction: valFraction,
      clean,
      document_separator: separator,
    };
    await writeFileSynced(join(tmp, META_FILE), JSON.stringify(meta, null, 2) + '\n');
    await makeDirs(dirname(out));
    await commitDir(tmp, out);
  } catch (e) {
    writers.train.abort();
    writers.val.abort();
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw ioError(e, `write shards to ${out}`);
  }
  return {
    out,
    tokenizer: tokenizer.kind,
    vocabSize: tokenizer.vocabSize,
    dtype,
    train: meta.train,
    val: meta.val,
    files: files.filter((f) => f.size > 0).length,
    bytes: bytesTotal,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// openShards

/** An open shards directory: its meta.json, its tokenizer and a TokenStream per split. */
export interface OpenedShards {
  meta: ShardsMeta;
  tokenizer: Tokenizer;
  train: TokenStream;
  val: TokenStream;
  /** Closes the shard files; the streams cannot be read afterwards. */
  close(): void;
}

interface ShardFile {
  path: string;
  fd: number;
  count: number;
}

/** Advice for shards that cannot be read: prepare them again. */
const reprepare = (): string => `${adviceFor('re-run minigpt prepare', 'run prepareShards again')} to rebuild it`;

/** Opens a shards directory, validating meta.json and every shard header (see the file comment). */
export async function openShards(dir: string): Promise<OpenedShards> {
  checkNodeOnly('openShards()');
  assertLittleEndian();
  await recoverInterruptedReplace(resolve(dir), hasShardsMeta).catch(() => {});
  const metaPath = join(dir, META_FILE);
  let raw: string;
  try {
    raw = await readFile(metaPath, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      const info = await stat(dir).catch(() => null);
      check(info !== null, `${dir}: no such shards folder; check the path, or create it with ${adviceFor('minigpt prepare', 'prepareShards')}`);
      throw new MinigptError(`${dir}: not a minigpt shards folder (it has no ${META_FILE}); create one with ${adviceFor('minigpt prepare', 'prepareShards')}`);
    }
    throw fileSystemError(metaPath, err);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new MinigptError(`${metaPath}: not valid JSON (${(err as Error).message}); the shards folder is damaged, ${reprepare()}`);
  }
  const meta = validateMeta(json, metaPath);
  // Shards prepared before the page-breaks cleaning step were cleaned without it.
  if (meta.clean) meta.clean = legacyClean(meta.clean) as CleanOptions;
  const tokenizer = tokenizerFromJson(meta.tokenizer, `${metaPath}#tokenizer`);
  check(
    tokenizer.vocabSize === meta.vocab_size,
    `${metaPath}: vocab_size is ${meta.vocab_size} but the tokenizer has ${tokenizer.vocabSize} tokens; ${reprepare()}`,
  );

  const opened: ShardFile[] = [];
  try {
    const train = openSplit(dir, meta, 'train', opened);
    const val = openSplit(dir, meta, 'val', opened);
    return {
      meta,
      tokenizer,
      train,
      val,
      close: () => {
        for (const f of opened.splice(0)) closeSync(f.fd);
      },
    };
  } catch (e) {
    for (const f of opened) closeSync(f.fd);
    throw e;
  }
}

function validateMeta(json: unknown, metaPath: string): ShardsMeta {
  const bad = (what: string) => new MinigptError(`${metaPath}: ${what}; the shards folder is damaged, ${reprepare()}`);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(`expected a JSON object, got ${describeJsonValue(json)}`);
  const m = json as Record<string, unknown>;
  check(
    m.format === SHARDS_FORMAT,
    `${metaPath}: not a minigpt shards meta file (format is ${JSON.stringify(m.format)}, expected "${SHARDS_FORMAT}"); ${reprepare()}`,
  );
  check(
    m.version === SHARDS_VERSION,
    `${metaPath}: shards format version ${JSON.stringify(m.version)} is not one this minigpt reads (it reads ${SHARDS_VERSION}); ` +
      `upgrade minigpt, or ${reprepare()}`,
  );
  if (typeof m.tokenizer !== 'object' || m.tokenizer === null) throw bad('"tokenizer" is missing');
  if (!Number.isInteger(m.vocab_size) || (m.vocab_size as number) < 1) throw bad(`"vocab_size" must be a positive integer, got ${JSON.stringify(m.vocab_size)}`);
  if (m.dtype !== 'uint16' && m.dtype !== 'uint32') throw bad(`"dtype" must be "uint16" or "uint32", got ${JSON.stringify(m.dtype)}`);
  if (m.dtype === 'uint16' && (m.vocab_size as number) > 65536) throw bad(`vocab_size ${m.vocab_size} does not fit "dtype": "uint16"`);
  for (const part of ['train', 'val'] as const) {
    const s = m[part] as Record<string, unknown> | undefined;
    if (typeof s !== 'object' || s === null) throw bad(`"${part}" is missing`);
    if (!Array.isArray(s.shards)) throw bad(`"${part}.shards" must be a list of file names`);
    for (const name of s.shards) {
      if (typeof name !== 'string' || !SHARD_NAME.test(name) || !name.startsWith(`${part}_`)) {
        throw bad(`"${part}.shards" has ${JSON.stringify(name)}, expected names like ${part}_000000.bin`);
      }
    }
    if (!Number.isSafeInteger(s.tokens) || (s.tokens as number) < 0) throw bad(`"${part}.tokens" must be a whole number, got ${JSON.stringify(s.tokens)}`);
  }
  if (m.document_separator !== undefined && !DOCUMENT_SEPARATORS.includes(m.document_separator as DocumentSeparator)) {
    throw bad(`"document_separator" must be one of ${DOCUMENT_SEPARATORS.map((d) => JSON.stringify(d)).join(', ')}, got ${JSON.stringify(m.document_separator)}`);
  }
  check((m.train as ShardSplitSummary).shards.length > 0, `${metaPath}: has no training shards; ${reprepare()}`);
  return m as unknown as ShardsMeta;
}

const SAMPLE_TOKENS = 4096;

function openSplit(dir: string, meta: ShardsMeta, part: Part, opened: ShardFile[]): TokenStream {
  const width = DTYPE_BYTES[meta.dtype];
  const version = DTYPE_VERSION[meta.dtype];
  const files: ShardFile[] = [];
  for (const name of meta[part].shards) {
    const path = join(dir, name);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new MinigptError(`${path}: shard file is missing (listed in ${META_FILE}); the shards folder is incomplete, ${reprepare()}`);
      }
      throw fileSystemError(path, err);
    }
    const file: ShardFile = { path, fd, count: 0 };
    opened.push(file);
    const size = fstatSync(fd).size;
    check(
      size >= SHARD_HEADER_BYTES,
      `${path}: shard file is truncated (${size} bytes, shorter than its ${SHARD_HEADER_BYTES}-byte header); ${reprepare()}`,
    );
    const header = new Int32Array(SHARD_HEADER_INTS);
    readFully(file, new Uint8Array(header.buffer), 0);
    check(header[0] === SHARD_MAGIC, `${path}: not a token shard (magic number ${header[0]}, expected ${SHARD_MAGIC}); the file is damaged or incomplete, ${reprepare()}`);
    check(
      header[1] === 1 || header[1] === 2,
      `${path}: unknown shard version ${header[1]} (1 = uint16 tokens, 2 = uint32 tokens); upgrade minigpt, or ${reprepare()}`,
    );
    check(
      header[1] === version,
      `${path}: shard version ${header[1]} holds ${header[1] === 1 ? 'uint16' : 'uint32'} tokens but ${META_FILE} says ${meta.dtype}; ${reprepare()}`,
    );
    const count = header[2]!;
    check(count > 0, `${path}: shard header says ${count} tokens; the file is damaged, ${reprepare()}`);
    const expected = SHARD_HEADER_BYTES + count * width;
    check(
      size === expected,
      `${path}: shard has ${size} bytes but its header says ${count} tokens (${expected} bytes); ` +
        `the file is ${size < expected ? 'truncated' : 'damaged'}, ${reprepare()}`,
    );
    file.count = count;
    files.push(file);
  }
  const total = files.reduce((s, f) => s + f.count, 0);
  check(
    total === meta[part].tokens,
    `${join(dir, META_FILE)}: says ${meta[part].tokens} ${part} tokens but the shards hold ${total}; ${reprepare()}`,
  );
  const stream = shardStream(files, meta.dtype, part, meta.vocab_size);
  // Opening reads the start, middle and end of every shard, so most damage shows at once;
  // the stream checks every id it reads, so the rest shows before a model sees it.
  const window = new Int32Array(SAMPLE_TOKENS);
  let base = 0;
  for (const f of files) {
    const starts = new Set([0, Math.max(0, Math.floor(f.count / 2) - SAMPLE_TOKENS / 2), Math.max(0, f.count - SAMPLE_TOKENS)]);
    for (const s of starts) stream.read(base + s, window.subarray(0, Math.min(SAMPLE_TOKENS, f.count - s)));
    base += f.count;
  }
  return stream;
}

function readFully(file: ShardFile, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(file.fd, into, done, into.length - done, position + done);
    check(n > 0, `${file.path}: shard file ended early (was it changed or truncated while in use?); ${reprepare()}`);
    done += n;
  }
}

/** A TokenStream over the concatenation of `files`, read with positioned reads. */
function shardStream(files: ShardFile[], dtype: ShardDType, part: Part, vocabSize: number): TokenStream {
  const width = DTYPE_BYTES[dtype];
  const starts: number[] = [];
  let length = 0;
  for (const f of files) {
    starts.push(length);
    length += f.count;
  }
  let scratch = new ArrayBuffer(64 * 1024);
  const locate = (offset: number): number => {
    let lo = 0;
    let hi = files.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  return {
    length,
    read(offset: number, out: Int32Array): void {
      if (!Number.isInteger(offset) || offset < 0 || offset + out.length > length) {
        throw new RangeError(`cannot read ${part} tokens [${offset}, ${offset + out.length}): the stream has ${length}`);
      }
      let done = 0;
      let i = out.length > 0 ? locate(offset) : 0;
      while (done < out.length) {
        const f = files[i]!;
        const within = offset + done - starts[i]!;
        const n = Math.min(out.length - done, f.count - within);
        if (n > 0) {
          if (scratch.byteLength < n * width) scratch = new ArrayBuffer(n * width);
          readFully(f, new Uint8Array(scratch, 0, n * width), SHARD_HEADER_BYTES + within * width);
          const read = out.subarray(done, done + n);
          read.set(width === 2 ? new Uint16Array(scratch, 0, n) : new Int32Array(scratch, 0, n));
          // An id the model has no row for must never reach it.
          for (let k = 0; k < n; k++) {
            const id = read[k]!;
            check(
              id >= 0 && id < vocabSize,
              () => `${f.path}: token ${within + k} is ${id >>> 0}, outside the vocabulary of ${vocabSize}; the file is damaged or from another tokenizer, ${reprepare()}`,
            );
          }
          done += n;
        }
        i++;
      }
    },
  };
}
