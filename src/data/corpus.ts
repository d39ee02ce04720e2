/**
 * The default corpus: English sentences from the `nlp-corpus` npm package (fiction, speeches,
 * reviews, transcripts...), so `minigpt train` works offline with no data of the user's.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { MinigptError, optionSetting } from '../errors.js';

export const DEFAULT_CORPUS_NAME = 'nlp-corpus (English sentences)';

/** How many of the package's 100 files (about 90 KB each) the default corpus uses. */
const DEFAULT_FILES = 12;

export async function loadDefaultCorpus(files = DEFAULT_FILES): Promise<string> {
  let builds: string;
  try {
    builds = join(dirname(fileURLToPath(import.meta.resolve('nlp-corpus'))), '..', '..', 'builds');
  } catch {
    throw new MinigptError(`the default corpus package nlp-corpus is not installed; run npm install, or pass ${optionSetting('data', 'FILE')}`);
  }
  const parts: string[] = [];
  for (let i = 0; i < files; i++) {
    const sentences = JSON.parse(await readFile(join(builds, `doc-${i}.json`), 'utf8')) as unknown[];
    for (const s of sentences) if (typeof s === 'string' && s.trim()) parts.push(s.trim());
  }
  return parts.join('\n');
}
