#!/usr/bin/env node
/**
 * Tokenizer speed on tinyshakespeare (../shared/data/tinyshakespeare.txt, or the path given):
 * BPE training time, and encode/decode throughput for char, gpt2 and bpe, and for the imported
 * kinds hf-bpe and sp-bpe (the test fixtures' tokenizer.json files: SmolLM-style, Qwen2-style and Llama 2-style)
 * against the Hugging Face `tokenizers` library (Rust) encoding the same file with the same
 * tokenizer.json, when the dev venv is there. Not a test: timings depend on the machine. Build first:
 *
 *   npx tsc -p . && node bench/tokenizers.mjs [TEXT_FILE] [--vocab 4096]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { buildCharTokenizer } = await import(join(root, 'dist/src/data/tokenizer.js'));
const { gpt2Tokenizer } = await import(join(root, 'dist/src/data/gpt2.js'));
const { trainBpe } = await import(join(root, 'dist/src/data/bpe.js'));
const { tokenizerFromHfJson } = await import(join(root, 'dist/src/io/hf.js'));

const args = process.argv.slice(2);
const vocabAt = args.indexOf('--vocab');
const vocab = vocabAt >= 0 ? Number(args.splice(vocabAt, 2)[1]) : 4096;
const path = args[0] ?? join(root, '..', 'shared', 'data', 'tinyshakespeare.txt');
if (!existsSync(path)) {
  console.log(`no text at ${path}; give a text file: node bench/tokenizers.mjs FILE`);
  process.exit(0);
}
const text = readFileSync(path, 'utf8');
const mb = new TextEncoder().encode(text).length / 1e6;
console.log(`${path}: ${text.length.toLocaleString('en-US')} characters, ${mb.toFixed(2)} MB; node ${process.version}`);

/** Best of `runs` timings of fn, in seconds. */
function best(runs, fn) {
  let t = Infinity;
  let result;
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    result = fn();
    t = Math.min(t, (performance.now() - start) / 1000);
  }
  return { t, result };
}

const rows = [];
function measure(name, build) {
  const built = best(1, build);
  const tok = built.result;
  // The first encode fills the per-word cache; "cold" is that one, "warm" the best of 3 after.
  const cold = best(1, () => tok.encode(text));
  const warm = best(3, () => tok.encode(text));
  const ids = warm.result;
  const dec = best(3, () => tok.decode(ids));
  if (dec.result !== text) throw new Error(`${name}: decode(encode(text)) differs from the text`);
  rows.push({
    tokenizer: name,
    vocab: tok.vocabSize,
    'build s': built.t.toFixed(3),
    tokens: ids.length,
    'chars/token': (text.length / ids.length).toFixed(2),
    'encode cold Mtok/s': (ids.length / cold.t / 1e6).toFixed(2),
    'encode warm Mtok/s': (ids.length / warm.t / 1e6).toFixed(2),
    'encode warm MB/s': (mb / warm.t).toFixed(1),
    'decode Mtok/s': (ids.length / dec.t / 1e6).toFixed(1),
  });
  Object.defineProperty(rows[rows.length - 1], 'warmSeconds', { value: warm.t, enumerable: false });
}

measure('char', () => buildCharTokenizer(text));
measure('gpt2', () => gpt2Tokenizer());
let trainSeconds = 0;
measure(`bpe ${vocab}`, () => {
  const start = performance.now();
  const tok = trainBpe(text, { vocabSize: vocab });
  trainSeconds = (performance.now() - start) / 1000;
  return tok;
});
// Imported kinds, each beside the tokenizers library on the same tokenizer.json (best of 3 warm encodes, one thread).
const python = process.env.MINIGPT_PYTHON ?? join(root, '.venv', 'bin', 'python');
const tmp = mkdtempSync(join(tmpdir(), 'minigpt-tok-bench-'));
const library = [];
for (const [file, name, kind] of [['hf-bpe.json', 'smollm-style', 'hf-bpe'], ['hf-bpe-split.json', 'qwen2-style', 'hf-bpe qwen2'], ['sp-bpe.json', 'llama-style', 'sp-bpe']]) {
  const json = JSON.parse(readFileSync(join(root, 'test', 'fixtures', file), 'utf8'))[name].tokenizer;
  // The library's NFC normalizer (qwen2-style) is left out on both sides: minigpt does it as cleaning, before encoding.
  if (json.normalizer?.type === 'NFC') json.normalizer = null;
  measure(`${kind} (${name} fixture)`, () => tokenizerFromHfJson(json, file));
  if (!existsSync(python)) continue;
  const tokPath = join(tmp, `${kind.replace(' ', '-')}.json`);
  writeFileSync(tokPath, JSON.stringify(json));
  const script = `import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); text = open(sys.argv[2], encoding="utf-8").read()
lines = text.split("\\n")
ids = tok.encode(text, add_special_tokens=False).ids
def best(f):
    times = []
    for _ in range(3):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return min(times)
whole = best(lambda: tok.encode(text, add_special_tokens=False))
per_line = best(lambda: tok.encode_batch(lines, add_special_tokens=False))
print(len(ids), whole, per_line)`;
  const r = spawnSync(python, ['-c', script, tokPath, path], { encoding: 'utf8', env: { ...process.env, RAYON_NUM_THREADS: '1', TOKENIZERS_PARALLELISM: 'false' } });
  if (r.status !== 0) { console.log(`tokenizers library: ${r.stderr.trim().split('\n').pop()}`); continue; }
  const [count, whole, perLine] = r.stdout.trim().split(' ').map(Number);
  const ours = rows[rows.length - 1];
  const same = count === ours.tokens ? 'same token count' : `DIFFERENT token count (${count})`;
  const tok = tokenizerFromHfJson(json, file), lines = text.split('\n');
  const oursPerLine = best(3, () => { for (const line of lines) tok.encode(line); }).t;
  library.push(`${kind} (${same}): the whole text at once ${(whole / ours.warmSeconds).toFixed(1)}x the tokenizers library's speed ` +
    `(${(count / whole / 1e6).toFixed(2)} Mtok/s there); line by line (its encode_batch, one thread) ${(perLine / oursPerLine).toFixed(1)}x (${(perLine * 1000).toFixed(0)} ms there, ${(oursPerLine * 1000).toFixed(0)} ms here)`);
}
console.table(rows);
console.log(`bpe training to ${vocab} tokens: ${trainSeconds.toFixed(2)} s (one core)`);
for (const line of library) console.log(line);
