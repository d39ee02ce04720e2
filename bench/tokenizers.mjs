#!/usr/bin/env node
/**
 * Tokenizer speed on tinyshakespeare (../shared/data/tinyshakespeare.txt, or the path given):
 * BPE training time, and encode/decode throughput for char, gpt2 and bpe. Not a test: timings
 * depend on the machine. Build first:
 *
 *   npx tsc -p . && node bench/tokenizers.mjs [TEXT_FILE] [--vocab 4096]
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { buildCharTokenizer } = await import(join(root, 'dist/src/data/tokenizer.js'));
const { gpt2Tokenizer } = await import(join(root, 'dist/src/data/gpt2.js'));
const { trainBpe } = await import(join(root, 'dist/src/data/bpe.js'));

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
console.table(rows);
console.log(`bpe training to ${vocab} tokens: ${trainSeconds.toFixed(2)} s (one core)`);
