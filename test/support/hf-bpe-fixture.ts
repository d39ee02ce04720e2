/** The byte-level BPE tokenizers the `tokenizers` library made (test/fixtures/hf-bpe.json, scripts/make-hf-tokenizers.py). */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tokenizerFromHfJson } from '../../src/io/hf.js';
import type { Tokenizer } from '../../src/data/tokenizer.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface HfBpeFixture {
  /** The tokenizer.json the library wrote. */
  tokenizer: Record<string, unknown>;
  texts: string[];
  /** The library's ids for each text (special tokens split out). */
  ids: number[][];
}

/** "smollm-style" (special tokens first, digits one by one) and "gpt2-style" (ignore_merges, a token only that reaches). */
export const HF_BPE_FIXTURE = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'hf-bpe.json'), 'utf8')) as Record<'smollm-style' | 'gpt2-style', HfBpeFixture>;

export function hfBpeFixtureTokenizer(name: keyof typeof HF_BPE_FIXTURE): Tokenizer {
  return tokenizerFromHfJson(HF_BPE_FIXTURE[name].tokenizer, `${name}/tokenizer.json`);
}
