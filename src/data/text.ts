/**
 * Loading and cleaning training text: a file, a folder of files, or JSONL documents.
 * Everything that can go wrong with the user's data is a MinigptError naming the file,
 * so a long training run never starts on a half-read or mis-decoded corpus.
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { MinigptError, adviceFor, check, checkOptionNames, optionSetting, shownValue } from '../errors.js';
import { checkNodeOnly } from '../util/runtime.js';
import { toWellFormed } from './bpe.js';

export interface LoadTextOptions {
  /** Field of each JSONL object that holds the text; default "text". */
  textField?: string;
  /** 'error' (default) rejects invalid UTF-8; 'replace' substitutes U+FFFD and warns once. */
  invalidUtf8?: 'error' | 'replace';
  /** Receives non-fatal problems (replaced bytes); default: ignored. */
  onWarning?: (message: string) => void;
}

/** Extensions taken from a folder. A single file named directly is read whatever its extension. */
export const TEXT_FILE_EXTENSIONS: readonly string[] = ['.txt', '.md', '.text', '.jsonl'];

/**
 * Separator between documents (the files of a folder, the records of a JSONL file) in loadText's
 * one string: one blank line, a paragraph break. Training with a tokenizer that has
 * "<|endoftext|>" separates them by that token instead (see documentSeparatorOf).
 */
export const BLANK_LINE_SEPARATOR = '\n\n';

/** How much of a file is searched for NUL bytes; the same window `git` and `grep` use. */
const BINARY_SNIFF_BYTES = 8192;

/**
 * Reads training text from `path`: a text file, a .jsonl file of `{ "text": ... }` objects,
 * or a folder searched recursively for TEXT_FILE_EXTENSIONS files, which are read in sorted
 * path order (so the corpus, and hence training, is the same on every machine) and joined
 * with a blank line. loadDocuments gives the documents apart.
 */
export async function loadText(path: string, opts: LoadTextOptions = {}): Promise<string> {
  checkNodeOnly('loadText()');
  return (await loadDocuments(path, opts)).join(BLANK_LINE_SEPARATOR);
}

/**
 * The documents at `path`, in loadText's order: a text file is one document, a JSONL file one per
 * record, a folder those of each of its files (empty files have none).
 */
export async function loadDocuments(path: string, opts: LoadTextOptions = {}): Promise<string[]> {
  checkNodeOnly('loadDocuments()');
  const info = await statOrThrow(path);
  const replaced: ReplacedBytes[] = [];

  let documents: string[];
  if (info.isDirectory()) {
    documents = await loadFolder(path, opts, replaced);
  } else if (info.isFile()) {
    const fileDocuments = await loadFile(path, opts, replaced);
    check(fileDocuments !== null, `${path}: file is empty; point at a file with text in it`);
    documents = fileDocuments;
  } else {
    throw new MinigptError(`${path}: not a regular file or folder; point at a text file or a folder of them`);
  }

  if (replaced.length > 0) opts.onWarning?.(describeReplacements(replaced));
  check(documents.some((d) => d.trim() !== ''), `${path}: contains no text, only whitespace; point at a file with text in it`);
  return documents;
}

/** Invalid UTF-8 replaced with U+FFFD in one file (for the one warning `describeReplacements` makes). */
export interface ReplacedBytes {
  file: string;
  count: number;
  firstOffset: number;
}

export function describeReplacements(replaced: ReplacedBytes[]): string {
  const total = replaced.reduce((sum, r) => sum + r.count, 0);
  const sequences = total === 1 ? 'sequence' : 'sequences';
  const first = replaced[0]!;
  if (replaced.length === 1) {
    return `${first.file}: replaced ${total} invalid UTF-8 ${sequences} with U+FFFD (first at byte ${first.firstOffset})`;
  }
  return (
    `replaced ${total} invalid UTF-8 ${sequences} with U+FFFD in ${replaced.length} files ` +
    `(first in ${first.file} at byte ${first.firstOffset})`
  );
}

/**
 * The error for a folder given as text that holds none: a folder of `minigpt prepare`'s shard
 * files whose meta.json is missing or broken is named as such (it is read as text only because
 * meta.json did not say it is shards).
 */
export async function noTextFilesError(folder: string, otherFileCount: number): Promise<MinigptError> {
  const names = await readdir(folder).catch(() => [] as string[]);
  // A valid shards folder where text is wanted (prepare, tokenizer train): its meta.json is fine.
  const meta = names.includes('meta.json') ? await readFile(join(folder, 'meta.json'), 'utf8').then((t) => JSON.parse(t) as unknown, () => null) : null;
  if ((meta as { format?: unknown } | null)?.format === 'minigpt-shards') {
    return new MinigptError(`${folder} is a shards folder from minigpt prepare (token ids, not text); this needs the text itself: give the text file or folder it was prepared from`);
  }
  if (names.some((n) => /^(train|val)_\d{6}\.bin$/.test(n))) {
    return new MinigptError(`${folder} looks like a shards folder from minigpt prepare, but its meta.json is ${names.includes('meta.json') ? 'not a valid shards meta.json' : 'missing'}; prepare the data again`);
  }
  const others = otherFileCount > 0 ? ` (it has ${otherFileCount} other files)` : '';
  return new MinigptError(
    `${folder}: folder has no text files (${TEXT_FILE_EXTENSIONS.join(', ')}) in it or its subfolders${others}; ` +
      `point at a text file or a folder that contains some`,
  );
}

async function loadFolder(folder: string, opts: LoadTextOptions, replaced: ReplacedBytes[]): Promise<string[]> {
  const { textFiles, otherFileCount } = await findTextFiles(folder);
  if (textFiles.length === 0) throw await noTextFilesError(folder, otherFileCount);
  const documents: string[] = [];
  let nonEmpty = 0;
  for (const file of textFiles) {
    // An empty file in a large folder is harmless; only an all-empty folder is an error.
    const fileDocuments = await loadFile(file, opts, replaced);
    if (fileDocuments === null) continue;
    nonEmpty++;
    for (const d of fileDocuments) documents.push(d);
  }
  check(
    nonEmpty > 0,
    `${folder}: all ${textFiles.length} text files in the folder are empty; point at a folder with text in it`,
  );
  return documents;
}

/** Text files under `folder`, sorted by path. Hidden entries (".git", ".DS_Store") are skipped. */
export async function findTextFiles(folder: string): Promise<{ textFiles: string[]; otherFileCount: number }> {
  const textFiles: string[] = [];
  let otherFileCount = 0;
  // Symlinks are followed, to files and to folders; a folder reached twice (a link to an ancestor,
  // two links to one place) is read once, so a loop cannot recurse forever.
  const seen = new Set<string>();
  const visit = async (dir: string): Promise<void> => {
    const real = await realpath(dir).catch(() => dir);
    if (seen.has(real)) return;
    seen.add(real);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      throw fileSystemError(dir, err);
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const path = join(dir, entry.name);
      let isFile = entry.isFile(), isDirectory = entry.isDirectory();
      if (entry.isSymbolicLink()) {
        const target = await stat(path).catch(() => null);
        isFile = target?.isFile() ?? false;
        isDirectory = target?.isDirectory() ?? false;
      }
      if (isDirectory) {
        await visit(path);
      } else if (isFile) {
        if (TEXT_FILE_EXTENSIONS.includes(extname(entry.name).toLowerCase())) textFiles.push(path);
        else otherFileCount++;
      }
    }
  };
  await visit(folder);
  // Code-unit order, not localeCompare: the same on every machine whatever its locale.
  textFiles.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { textFiles, otherFileCount };
}

/** The documents of one file (a JSONL file's records, else its text), or null when the file has no bytes. */
async function loadFile(path: string, opts: LoadTextOptions, replaced: ReplacedBytes[]): Promise<string[] | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw fileSystemError(path, err);
  }
  if (bytes.length === 0) return null;
  rejectBinary(path, bytes);
  const text = decodeUtf8(path, bytes, opts.invalidUtf8 ?? 'error', replaced);
  return extname(path).toLowerCase() === '.jsonl' ? jsonlDocuments(path, text, opts.textField ?? DEFAULT_TEXT_FIELD) : [text];
}

/**
 * What makes a file's bytes no UTF-8 text at a glance: a UTF-16 byte-order mark (UTF-16 text is
 * full of NUL bytes too, but the fix for it is different), else the offset of a NUL byte in the
 * first BINARY_SNIFF_BYTES (-1: none). Browser-safe: the page checks a chosen file with it.
 */
export function sniffBinary(bytes: Uint8Array): { utf16: boolean; nulOffset: number } {
  const utf16 = (bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff);
  return { utf16, nulOffset: utf16 ? -1 : bytes.subarray(0, BINARY_SNIFF_BYTES).indexOf(0) };
}

function rejectBinary(path: string, bytes: Uint8Array): void {
  const { utf16, nulOffset: nul } = sniffBinary(bytes);
  check(!utf16, `${path}: file is UTF-16 encoded; re-encode it as UTF-8`);
  check(
    nul < 0,
    () => `${path}: looks like a binary file (NUL byte at offset ${nul}); point at a UTF-8 text file instead`,
  );
}

/** Why a text past what one JavaScript string holds cannot be loaded, and what to do instead. */
export function tooLargeForText(): string {
  return `too large to load as text in memory (a JavaScript string holds at most ~512 MiB); split it, or ${adviceFor(
    'prepare it into token shards (minigpt prepare --data PATH --out DIR, which reads in bounded memory), which train and eval read',
    'prepare it into token shards with prepareShards() (bounded memory), which train() and evaluateShards() read')}`;
}

function decodeUtf8(path: string, bytes: Uint8Array, mode: 'error' | 'replace', replaced: ReplacedBytes[]): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_STRING_TOO_LONG') throw fileSystemError(path, e);
    // The decoder does not say where it failed; find the offset ourselves (only on this slow path).
  }
  const scan = scanUtf8(bytes);
  if (mode === 'error') {
    const line = lineNumberAt(bytes, scan.firstOffset);
    throw new MinigptError(
      `${path}: invalid UTF-8 at byte ${scan.firstOffset} (line ${line}); ` +
        `re-encode the file as UTF-8 or pass ${optionSetting('invalidUtf8', 'replace')}`,
    );
  }
  replaced.push({ file: path, count: scan.errorCount, firstOffset: scan.firstOffset });
  try {
    return new TextDecoder('utf-8').decode(bytes);
  } catch (e) {
    throw fileSystemError(path, e);
  }
}

function lineNumberAt(bytes: Uint8Array, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
  return line;
}

/**
 * Walks `bytes` the way the WHATWG UTF-8 decoder does, so `errorCount` is exactly the number
 * of U+FFFD that a replacing TextDecoder emits, and `firstOffset` is the byte where the first
 * bad sequence starts (-1 when the bytes are valid).
 */
export function scanUtf8(bytes: Uint8Array): { firstOffset: number; errorCount: number } {
  let firstOffset = -1;
  let errorCount = 0;
  const fail = (at: number): void => {
    if (firstOffset < 0) firstOffset = at;
    errorCount++;
  };
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i]!;
    let needed: number;
    let lower = 0x80;
    let upper = 0xbf;
    if (lead <= 0x7f) {
      i++;
      continue;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      needed = 1;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      needed = 2;
      if (lead === 0xe0) lower = 0xa0; // overlong
      if (lead === 0xed) upper = 0x9f; // UTF-16 surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      needed = 3;
      if (lead === 0xf0) lower = 0x90; // overlong
      if (lead === 0xf4) upper = 0x8f; // above U+10FFFF
    } else {
      fail(i);
      i++;
      continue;
    }
    const start = i;
    i++;
    let seen = 0;
    while (seen < needed && i < bytes.length) {
      const b = bytes[i]!;
      if (b < lower || b > upper) break;
      lower = 0x80;
      upper = 0xbf;
      i++;
      seen++;
    }
    // A truncated sequence is one error; the byte that broke it starts the next sequence.
    if (seen < needed) fail(start);
  }
  return { firstOffset, errorCount };
}

/** The texts of a JSONL file's documents; each non-blank line must be a JSON object. */
function jsonlDocuments(path: string, text: string, textField: string): string[] {
  const documents: string[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.trim(); // trim also drops the "\r" of CRLF files
    if (line === '') continue;
    documents.push(jsonlRecordText(line, `${path}:${index + 1}`, textField));
  }
  check(documents.length > 0, `${path}: JSONL file has no records, only blank lines; point at a file with text in it`);
  return documents;
}

/**
 * The text field of one non-blank JSONL line; `where` ("file:line") starts every error.
 * Shared by loadText and the streaming `prepare`, so both accept and reject the same lines.
 */
export function jsonlRecordText(line: string, where: string, textField: string): string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new MinigptError(
      `${where}: line is not valid JSON (${(err as Error).message}); each line of a .jsonl file must be one JSON object`,
    );
  }
  check(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    () => `${where}: expected a JSON object, got ${describeJsonValue(value)}; each line of a .jsonl file must be one JSON object`,
  );
  const record = value as Record<string, unknown>;
  check(
    Object.hasOwn(record, textField),
    () =>
      `${where}: object has no "${textField}" field (it has ${describeKeys(record)}); ` +
      `pass ${optionSetting('textField', 'NAME')} to choose the field that holds the text`,
  );
  const document = record[textField];
  check(
    typeof document === 'string',
    () => `${where}: field "${textField}" is ${describeJsonValue(document)}, expected a string`,
  );
  return document;
}

/** "null", "an array", "an object", "a number"...: what a JSON value is, for error messages. */
export function describeJsonValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

function describeKeys(record: Record<string, unknown>): string {
  const keys = Object.keys(record);
  if (keys.length === 0) return 'no fields';
  const shown = keys.slice(0, 8).map((k) => JSON.stringify(k));
  return `fields ${shown.join(', ')}${keys.length > 8 ? ', ...' : ''}`;
}

/** What statOrThrow tells of a path (a node:fs Stats; spelt out so the published types need no @types/node). */
export interface PathInfo {
  size: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

/** stat, with the errors a user can fix (missing path, permissions...) as MinigptErrors. */
export async function statOrThrow(path: string): Promise<PathInfo> {
  try {
    return await stat(path);
  } catch (err) {
    throw fileSystemError(path, err);
  }
}

export function fileSystemError(path: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return new MinigptError(`${path}: no such file or folder; check the path`);
    case 'ENOTDIR':
      return new MinigptError(`${path}: a parent of this path is a file, not a folder; check the path`);
    case 'EACCES':
    case 'EPERM':
      return new MinigptError(`${path}: permission denied; check the permissions of the file and its folders`);
    case 'EISDIR':
      return new MinigptError(`${path}: is a folder where a file was expected; check the path`);
    case 'ERR_FS_FILE_TOO_LARGE':
    case 'ERR_STRING_TOO_LONG':
      return new MinigptError(`${path}: ${tooLargeForText()}`);
    default:
      // Anything else (EIO, EMFILE...) is not the user's data; keep the original error and stack.
      return err instanceof Error ? err : new Error(String(err));
  }
}

/** The field of a JSONL record that holds its text, unless textField names another. */
export const DEFAULT_TEXT_FIELD = 'text';

/** The cleaning steps; each can be switched off on its own. */
export interface CleanOptions {
  /** Unicode NFC, so "é" typed two ways is one character (and one token). */
  nfc: boolean;
  /** CRLF and lone CR become LF. */
  newlines: boolean;
  /**
   * The control characters that break lines or pages (vertical tab, form feed, NEL) become LF, so
   * "Page one.\fPage two." stays two words (control-chars alone drops them). Records written
   * before this step existed lack it: read back, a missing pageBreaks means off (legacyClean).
   */
  pageBreaks: boolean;
  /** Drop C0/C1 control characters and DEL, keeping tab, LF and CR. */
  controlChars: boolean;
  /** Runs of two or more blank lines (which may hold spaces/tabs) become one blank line. */
  collapseBlankLines: boolean;
  /** Lowercase everything (off by default; a model trained so gets its prompts lowercased too). */
  lowercase: boolean;
}

export const DEFAULT_CLEAN: Readonly<CleanOptions> = Object.freeze({
  nfc: true,
  newlines: true,
  pageBreaks: true,
  controlChars: true,
  collapseBlankLines: true,
  lowercase: false,
});

/** The cleaning steps by the names `--clean` gives them (`--clean nfc,lowercase`), to their CleanOptions keys. */
export const CLEAN_STEP_NAMES = { nfc: 'nfc', newlines: 'newlines', 'page-breaks': 'pageBreaks', 'control-chars': 'controlChars', 'blank-lines': 'collapseBlankLines', lowercase: 'lowercase' } as const satisfies Record<string, keyof CleanOptions>;

// CR stays: line endings are the `newlines` step's business, so switching that off keeps them.
const CONTROL_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/g;
const PAGE_BREAKS = /[\u000B\u000C\u0085]/g;
// A newline, then two or more lines holding only spaces/tabs, each ending in a newline.
const BLANK_LINE_RUN = /\n(?:[ \t]*\n){2,}/g;

/**
 * Cleaning as a record holds it (trainer_state.json, a shards meta.json), for writing: every step
 * not given is the default, and pageBreaks is written out, so that reading it back (legacyClean)
 * cannot take it for a record from before that step.
 */
export function cleanRecord(clean: Partial<CleanOptions> | null | undefined): Partial<CleanOptions> {
  return { ...(clean ?? {}), pageBreaks: clean?.pageBreaks ?? DEFAULT_CLEAN.pageBreaks };
}

/**
 * A record's cleaning as read back: a record written before the pageBreaks step (null for the
 * defaults then, or steps without it) cleaned without it, so it gets pageBreaks: false. Anything
 * that is not null or an object is returned as it is, for the caller's check to refuse.
 */
export function legacyClean(recorded: unknown): unknown {
  if (recorded === null) return { pageBreaks: false };
  if (typeof recorded !== 'object' || Array.isArray(recorded)) return recorded;
  const r = recorded as Partial<CleanOptions>;
  return 'pageBreaks' in r ? r : { ...r, pageBreaks: false };
}

/** Checks cleaning options given by a library caller: known step names, each true or false. */
export function checkCleanOptions(opts: unknown): void {
  checkOptionNames(opts, Object.keys(DEFAULT_CLEAN), 'clean');
  for (const [k, v] of Object.entries(opts ?? {})) check(v === undefined || typeof v === 'boolean', () => `clean option ${k} must be true or false (got ${shownValue(v)})`);
}

/**
 * Normalizes text before tokenization; see CleanOptions for the steps. Whatever the steps (none
 * too), each unpaired surrogate (a JSON string's "\ud800", a string in memory) first becomes U+FFFD,
 * as writing the text as UTF-8 makes it: no tokenizer or export can hold one, and removing a
 * control character between two must not join them into a character the text never had.
 */
export function cleanText(text: string, opts: Partial<CleanOptions> = {}): string {
  checkCleanOptions(opts);
  const o: CleanOptions = { ...DEFAULT_CLEAN, ...opts };
  let out = toWellFormed(text);
  if (o.newlines) out = out.replace(/\r\n?/g, '\n');
  if (o.pageBreaks) out = out.replace(PAGE_BREAKS, '\n');
  if (o.controlChars) out = out.replace(CONTROL_CHARS, '');
  if (o.collapseBlankLines) out = out.replace(BLANK_LINE_RUN, '\n\n');
  if (o.lowercase) out = out.toLowerCase();
  // Last: removing controls can join a combining mark to a new base, and lowercasing can
  // produce decomposed sequences; both must be normalized after they happen.
  if (o.nfc) out = out.normalize('NFC');
  return out;
}

/**
 * Splits a token stream into training and validation parts: the last `valFraction` of the
 * tokens (rounded) is validation. Contiguous rather than random so no validation text leaks
 * into training through overlapping context windows. Both parts are views of one buffer.
 */
export function splitTrainVal(
  tokens: Int32Array | number[],
  valFraction = 0.1,
): { train: Int32Array; val: Int32Array } {
  check(
    Number.isFinite(valFraction) && valFraction >= 0 && valFraction < 1,
    `validation fraction ${valFraction} is out of range; use a number from 0 (no validation) up to but not including 1`,
  );
  const all = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
  const valCount = Math.round(all.length * valFraction);
  const boundary = all.length - valCount;
  return { train: all.subarray(0, boundary), val: all.subarray(boundary) };
}
