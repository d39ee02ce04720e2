/** The byte-level BPE tokenizers the `tokenizers` library made (test/fixtures/hf-bpe.json and hf-bpe-split.json, scripts/make-hf-tokenizers.py). */
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

/**
 * "qwen2-style" (Qwen2's split regex and NFC normalizer) and "llama3-style" (Llama 3's split regex,
 * ignore_merges, a token only that reaches); the ids are the library's after its normalizer.
 */
export const HF_BPE_SPLIT_FIXTURE = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'hf-bpe-split.json'), 'utf8')) as Record<'qwen2-style' | 'llama3-style', HfBpeFixture>;

export function hfBpeFixtureTokenizer(name: keyof typeof HF_BPE_FIXTURE | keyof typeof HF_BPE_SPLIT_FIXTURE): Tokenizer {
  const fixture = name === 'qwen2-style' || name === 'llama3-style' ? HF_BPE_SPLIT_FIXTURE[name] : HF_BPE_FIXTURE[name];
  return tokenizerFromHfJson(fixture.tokenizer, `${name}/tokenizer.json`);
}
