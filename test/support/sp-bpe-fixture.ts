/** The SentencePiece-style BPE tokenizers the `tokenizers` library made (test/fixtures/sp-bpe.json, scripts/make-hf-tokenizers.py sp-fixture). */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tokenizerFromHfJson } from '../../src/io/hf.js';
import type { Tokenizer } from '../../src/data/tokenizer.js';
import type { HfBpeFixture } from './hf-bpe-fixture.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface SpBpeFixture extends HfBpeFixture {
  /** The library's ids with its post-processor (add_special_tokens) for the first three texts. */
  withStart: number[][];
}

/** "llama-style" (Llama 2's legacy layout, "<s>" before every text), "metaspace-first", "metaspace-unk" (no byte fallback). */
export const SP_BPE_FIXTURE = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'sp-bpe.json'), 'utf8')) as Record<'llama-style' | 'metaspace-first' | 'metaspace-unk', SpBpeFixture>;

export function spBpeFixtureTokenizer(name: keyof typeof SP_BPE_FIXTURE): Tokenizer {
  return tokenizerFromHfJson(SP_BPE_FIXTURE[name].tokenizer, `${name}/tokenizer.json`);
}
