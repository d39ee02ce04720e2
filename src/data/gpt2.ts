/**
 * The GPT-2 tokenizer: byte-level BPE whose ids are those of tiktoken's "gpt2" encoding
 * (50257 tokens; "<|endoftext|>" is 50256). The ranks come from the js-tiktoken package, not
 * from the checkpoint, whose JSON is just `{ "type": "gpt2" }`; the merging is bpe.ts's engine,
 * which keeps tiktoken's exact rules (the whole pre-token is looked up first, then the
 * lowest-ranked adjacent pair is merged, the leftmost on a tie) in O(n log n) for long
 * pre-tokens, and its pre-tokenizer treats whitespace as tiktoken's Rust regex does.
 *
 * "<|endoftext|>" in the text is encoded as ordinary text (7 tokens) unless the caller asks
 * for it: `encode(text, { allowedSpecial: 'all' })` (or `['<|endoftext|>']`) gives 50256.
 * tiktoken's own default is to throw; plain text can never smuggle in a document break here.
 * Lone surrogates are encoded as U+FFFD, as tiktoken does.
 */
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { check } from '../errors.js';
import type { TokenizerJson } from './tokenizer.js';
import { END_OF_TEXT, PairTable, describeValue, makeByteLevelTokenizer, type ByteLevelTokenizer } from './bpe.js';

export const GPT2_VOCAB_SIZE = 50257;
export const GPT2_END_OF_TEXT_ID = 50256;

export interface Gpt2TokenizerJson extends TokenizerJson {
  type: 'gpt2';
}

let instance: ByteLevelTokenizer | null = null;

/** The GPT-2 tokenizer; built on first use (about 50 ms), then shared. */
export function gpt2Tokenizer(): ByteLevelTokenizer {
  instance ??= buildGpt2Tokenizer();
  return instance;
}

function buildGpt2Tokenizer(): ByteLevelTokenizer {
  // Lines of "<name> <first id> <base64 token> <base64 token> ...", ids consecutive on a line.
  const ranks = new Map<string, number>(); // token bytes as a Latin-1 string -> id
  const tokenBytes: Uint8Array[] = [];
  for (const line of gpt2Ranks.bpe_ranks.split('\n')) {
    if (line === '') continue;
    const parts = line.split(' ');
    const first = Number.parseInt(parts[1]!, 10);
    for (let i = 2; i < parts.length; i++) {
      const latin1 = atob(parts[i]!);
      const id = first + i - 2;
      ranks.set(latin1, id);
      const bytes = new Uint8Array(latin1.length);
      for (let j = 0; j < latin1.length; j++) bytes[j] = latin1.charCodeAt(j);
      tokenBytes[id] = bytes;
    }
  }
  const eot = gpt2Ranks.special_tokens[END_OF_TEXT];
  // Not the user's doing: the package's data is not what this code was written against.
  if (ranks.size !== GPT2_VOCAB_SIZE - 1 || tokenBytes.length !== GPT2_VOCAB_SIZE - 1 || eot !== GPT2_END_OF_TEXT_ID) {
    throw new Error(`js-tiktoken's gpt2 ranks have ${ranks.size} tokens and <|endoftext|> = ${eot}; expected 50256 and 50256`);
  }
  const byteToId = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const id = ranks.get(String.fromCharCode(b));
    if (id === undefined) throw new Error(`js-tiktoken's gpt2 ranks have no token for byte ${b}`);
    byteToId[b] = id;
  }
  // tiktoken merges two adjacent parts when their joined bytes are a token; list every such pair.
  const pairs = new PairTable(150_000);
  for (const [latin1, id] of ranks) {
    for (let k = 1; k < latin1.length; k++) {
      const left = ranks.get(latin1.slice(0, k));
      if (left === undefined) continue;
      const right = ranks.get(latin1.slice(k));
      if (right !== undefined) pairs.set(left, right, id);
    }
  }
  return makeByteLevelTokenizer({
    kind: 'gpt2',
    byteToId,
    tokenBytes,
    pairs,
    special: new Map([[END_OF_TEXT, GPT2_END_OF_TEXT_ID]]),
    wholePieces: ranks,
    toJSON: (): Gpt2TokenizerJson => ({ type: 'gpt2' }),
  });
}

/** Checks a `gpt2` tokenizer's JSON (nothing but its type) and returns the tokenizer. */
export function gpt2TokenizerFromJsonFields(fields: Record<string, unknown>, source: string): ByteLevelTokenizer {
  for (const name of Object.keys(fields)) {
    check(
      name === 'type',
      () =>
        `${source}: gpt2 tokenizer has an unknown field ${JSON.stringify(name)} (${describeValue(fields[name])}); ` +
        `its JSON is just {"type": "gpt2"}, the vocabulary is built in`,
    );
  }
  return gpt2Tokenizer();
}
