/** The Hugging Face `tokenizers` library (the dev venv's Python), as the oracle for imported tokenizers. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanFromHfNormalizer, hfCleaningNormalizer, hfTokenizerJson, tokenizerFromHfJson } from '../../src/io/hf.js';
import { cleanText } from '../../src/data/text.js';
import { createRng } from '../../src/util/random.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The Python with the tokenizers library, or a reason to skip. */
function findTokenizersPython(): { python?: string; skip?: string } {
  const python = process.env.MINIGPT_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `no Python venv at ${python} (run scripts/setup-venv.sh or set MINIGPT_PYTHON)` };
  const r = spawnSync(python, ['-c', 'import tokenizers'], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} lacks tokenizers` };
  return { python };
}
export const tokenizersPython = findTokenizersPython();

/** What make-hf-tokenizers.py's `mode` (encode, pretokenize) gives for each text with the tokenizer.json text given; files go in `dir`. */
async function runLibrary<T>(mode: 'encode' | 'pretokenize', dir: string, tokenizerJson: string, texts: readonly string[]): Promise<T[]> {
  await writeFile(join(dir, 'tokenizer.json'), tokenizerJson);
  await writeFile(join(dir, 'texts.json'), JSON.stringify(texts));
  const run = spawnSync(tokenizersPython.python!, [join(ROOT, 'scripts', 'make-hf-tokenizers.py'), mode, join(dir, 'tokenizer.json'), join(dir, 'texts.json'), join(dir, 'out.json')], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(await readFile(join(dir, 'out.json'), 'utf8')) as T[];
}

/** The library's ids for each text (special tokens split out, no post-processor), from the tokenizer.json text given; files go in `dir`. */
export function libraryIds(dir: string, tokenizerJson: string, texts: readonly string[]): Promise<number[][]> {
  return runLibrary<number[]>('encode', dir, tokenizerJson, texts);
}

/** The pieces the library's pre-tokenizer makes of each text (byte-level strings; no normalizer, no special tokens), from the tokenizer.json text given; files go in `dir`. */
export function libraryPretokens(dir: string, tokenizerJson: string, texts: readonly string[]): Promise<string[][]> {
  return runLibrary<string[]>('pretokenize', dir, tokenizerJson, texts);
}

/** `count` texts, each 1 to `most` of `pieces` joined at random (seeded). */
export function randomJoins(pieces: readonly string[], count: number, most: number, seed: number): string[] {
  const rng = createRng(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + rng.int(most);
    let s = '';
    for (let k = 0; k < n; k++) s += pieces[rng.int(pieces.length)]!;
    out.push(s);
  }
  return out;
}

/**
 * Asserts minigpt's ids for `texts` (special-token text as special tokens) equal the library's, on
 * each tokenizer.json file and on minigpt's export of it. A file's normalizer is minigpt's cleaning
 * (cleanFromHfNormalizer: what import records, and sampling applies to a prompt), done before encoding.
 */
export async function assertLibraryIds(dir: string, files: readonly [string, Record<string, unknown>][], texts: readonly string[]): Promise<void> {
  for (const [name, file] of files) {
    const tok = tokenizerFromHfJson(file, name);
    const clean = cleanFromHfNormalizer(hfCleaningNormalizer(file, name), name);
    const ours = texts.map((t) => Array.from(tok.encode(clean ? cleanText(t, clean) : t, { allowedSpecial: 'all' })));
    for (const [label, json] of [['original', JSON.stringify(file)], ['export', hfTokenizerJson(tok, clean)]] as const) {
      const theirs = await libraryIds(dir, json, texts);
      for (let i = 0; i < texts.length; i++) assert.deepEqual(ours[i], theirs[i], `${name} (${label}): ids of ${JSON.stringify(texts[i])}`);
    }
    console.log(`# ${name}: ids equal to the tokenizers library's on ${texts.length} random texts (its file and minigpt's export)`);
  }
}
