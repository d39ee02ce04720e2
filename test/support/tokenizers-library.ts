/** The Hugging Face `tokenizers` library (the dev venv's Python), as the oracle for imported tokenizers. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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

/** The library's ids for each text (special tokens split out, no post-processor), from the tokenizer.json text given; files go in `dir`. */
export async function libraryIds(dir: string, tokenizerJson: string, texts: readonly string[]): Promise<number[][]> {
  await writeFile(join(dir, 'tokenizer.json'), tokenizerJson);
  await writeFile(join(dir, 'texts.json'), JSON.stringify(texts));
  const run = spawnSync(tokenizersPython.python!, [join(ROOT, 'scripts', 'make-hf-tokenizers.py'), 'encode', join(dir, 'tokenizer.json'), join(dir, 'texts.json'), join(dir, 'ids.json')], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(await readFile(join(dir, 'ids.json'), 'utf8')) as number[][];
}
