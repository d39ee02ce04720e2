/**
 * How a corpus of several documents (the files of a folder, the records of a JSONL file) becomes
 * one token stream. With a tokenizer that has "<|endoftext|>" (gpt2, bpe) each document is cleaned
 * on its own and the token goes between documents, as GPT-2 and nanoGPT train: the model learns
 * where a document ends (generation stops there) and what starts one (an empty prompt starts from
 * it). A char tokenizer's "<|endoftext|>" is never trained on (see generate), so char runs, and
 * BPEs made without the token, join documents with a blank line, as loadText does. A tokenizer that
 * starts every text with its start-of-text token (sp-bpe's addBos: Llama 2's "<s>") puts that token
 * before each document instead, as Llama and llama2.c train.
 */
import { check } from '../errors.js';
import { BLANK_LINE_SEPARATOR, cleanText, type CleanOptions } from './text.js';
import { END_OF_TEXT, textStartIds, type Tokenizer, type TokenizerKind } from './tokenizer.js';

/** Each document starts with the tokenizer's start-of-text token (textStartIds), and nothing goes between. */
export const START_OF_TEXT_SEPARATOR = 'start-of-text';

/** What goes between documents: the "<|endoftext|>" token, a blank line in the text, or the start-of-text token before each. */
export type DocumentSeparator = typeof END_OF_TEXT | typeof BLANK_LINE_SEPARATOR | typeof START_OF_TEXT_SEPARATOR;

export const DOCUMENT_SEPARATORS: readonly DocumentSeparator[] = [END_OF_TEXT, BLANK_LINE_SEPARATOR, START_OF_TEXT_SEPARATOR];

/**
 * The separator training with `tokenizer` uses: its start-of-text token before each document where
 * it starts every text with one (sp-bpe), else its <|endoftext|> token where it has one and is not
 * char, else a blank line.
 */
export function documentSeparatorOf(tokenizer: Tokenizer): DocumentSeparator {
  if (textStartIds(tokenizer).length > 0) return START_OF_TEXT_SEPARATOR;
  return tokenizer.kind !== 'char' && tokenizer.specialTokens?.[END_OF_TEXT] !== undefined ? END_OF_TEXT : BLANK_LINE_SEPARATOR;
}

/** The separator for a tokenizer makeTokenizer will make: its gpt2 and bpe have <|endoftext|>. */
export function documentSeparatorOfKind(kind: TokenizerKind): DocumentSeparator {
  return kind === 'char' ? BLANK_LINE_SEPARATOR : END_OF_TEXT;
}

/** A separator for messages ("separated by ..."): "<|endoftext|>", "a blank line" or "a start-of-text token before each". */
export function describeSeparator(separator: DocumentSeparator): string {
  return separator === END_OF_TEXT ? END_OF_TEXT : separator === START_OF_TEXT_SEPARATOR ? 'a start-of-text token before each' : 'a blank line';
}

/**
 * The documents cleaned as training reads them. With a blank line: one text, the documents
 * joined and then cleaned (cleanText(loadText(...)), so a blank-line run across a join collapses).
 * With <|endoftext|> or the start-of-text token: each document cleaned on its own; those left empty
 * are dropped (no two separators in a row, no document of only "<s>").
 */
export function cleanDocuments(documents: readonly string[], separator: DocumentSeparator, clean?: Partial<CleanOptions>): string[] {
  if (separator === BLANK_LINE_SEPARATOR) return [cleanText(documents.join(BLANK_LINE_SEPARATOR), clean)];
  const cleaned: string[] = [];
  for (const d of documents) {
    const c = cleanText(d, clean);
    if (c !== '') cleaned.push(c);
  }
  return cleaned;
}

/**
 * One text for what reads text whole (a char vocabulary, BPE training): the cleaned documents
 * joined by their separator. A BPE learns nothing across "<|endoftext|>" (its special tokens split
 * the training text), so it learns on each document apart.
 */
export function joinDocuments(cleaned: readonly string[], separator: DocumentSeparator): string {
  return cleaned.join(separator === START_OF_TEXT_SEPARATOR ? BLANK_LINE_SEPARATOR : separator);
}

/**
 * The token stream of cleaned documents (cleanDocuments): each encoded by `encode` (default the
 * tokenizer's encode, where a literal "<|endoftext|>" in the text stays text), with the
 * tokenizer's <|endoftext|> id between them; for a tokenizer that starts every text with a token
 * (textStartIds), that token before each instead.
 */
export function encodeDocuments(
  tokenizer: Tokenizer,
  cleaned: readonly string[],
  encode: (text: string, index: number) => Int32Array = (text) => tokenizer.encode(text),
): Int32Array {
  const start = textStartIds(tokenizer);
  if (start.length > 0) return concatIds(cleaned.map((d, i) => encode(d, i)), start, true);
  if (cleaned.length === 1) return encode(cleaned[0]!, 0);
  const separatorId = tokenizer.specialTokens?.[END_OF_TEXT];
  check(separatorId !== undefined, `the ${tokenizer.kind} tokenizer has no ${END_OF_TEXT} to separate ${cleaned.length} documents`);
  return concatIds(cleaned.map((d, i) => encode(d, i)), [separatorId], false);
}

/** `parts` joined, `separator` between them (`before`: before each instead). */
function concatIds(parts: readonly Int32Array[], separator: readonly number[], before: boolean): Int32Array {
  const separators = before ? parts.length : Math.max(0, parts.length - 1);
  let total = separators * separator.length;
  for (const p of parts) total += p.length;
  const out = new Int32Array(total);
  let at = 0;
  parts.forEach((p, i) => {
    if (before || i > 0) {
      out.set(separator, at);
      at += separator.length;
    }
    out.set(p, at);
    at += p.length;
  });
  return out;
}
