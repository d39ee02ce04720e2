#!/usr/bin/env node
/**
 * Dev-only: writes test/fixtures/gpt2-vectors.json, the GPT-2 token ids that test/gpt2.test.ts
 * checks minigpt's gpt2 tokenizer against.
 *
 * The ids come from the `tiktoken` npm package: OpenAI's Rust tiktoken core compiled to WASM,
 * the same code and regex engine as Python tiktoken. Each vector is cross-checked against two
 * independent JavaScript implementations, js-tiktoken and gpt-tokenizer; they may differ from
 * tiktoken only on text holding U+0085 or U+FEFF (their regex uses JavaScript's `\s`, which
 * lacks U+0085 and has U+FEFF, unlike Rust's White_Space), and the script stops if they differ
 * anywhere else. It then checks minigpt's own gpt2 tokenizer (from dist/, so build first)
 * against tiktoken on every vector and, when ../shared/data/tinyshakespeare.txt exists, on
 * that whole file.
 *
 *   npm install --no-save tiktoken@1.0.22 gpt-tokenizer@4.0.0   # js-tiktoken is a dependency
 *   npx tsc -p . && node scripts/make-gpt2-vectors.mjs
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const { get_encoding } = require('tiktoken');
const { Tiktoken: JsTiktoken } = await import('js-tiktoken/lite');
const jsRanks = (await import('js-tiktoken/ranks/gpt2')).default;
const gptTokenizer = await import('gpt-tokenizer/encoding/r50k_base');
const { gpt2Tokenizer } = await import(join(root, 'dist/src/data/gpt2.js'));

const version = (name) => JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
const tiktoken = get_encoding('gpt2');
const jsTiktoken = new JsTiktoken(jsRanks);
const ours = gpt2Tokenizer();

// ---- the strings ----

/** sfc32 seeded by splitmix32, so the vectors are the same on every run. */
function rng(seed) {
  let x = seed >>> 0;
  const mix = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = mix(), b = mix(), c = mix(), d = mix();
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
}

const fixed = [
  '', 'Hello world', 'hello world', ' the', 'the', 'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine, we've done what you'd've DONE'S", "don't DON'T can't 'tis", "'s 't 're 've 'm 'll 'd",
  'a  b   c    d', '   leading and trailing   ', '\t\ttabs\tand\nnewlines\n\n\nend\n', '\r\n\r\nwindows\r\n', ' ',
  '  ', '\n', '\n\n', ' \n ', 'x \n y', 'word   ', '    indented code\n        more',
  '1234567890 3.14159 -42 1,000,000 2024-01-01', '٣٤٥ ⅷ ½ ²', 'e=mc² ∑∫√∞ ≤≥≠',
  'naïve café résumé Ångström', 'Здравствуй, мир!', 'こんにちは世界', '你好，世界！', '안녕하세요', 'مرحبا بالعالم', 'שלום עולם',
  'नमस्ते दुनिया', 'ภาษาไทย', 'Ελληνικά',
  '😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇫🇷🇯🇵', 'emoji 😀😃😄 in text 🎉!', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚', '\u{10FFFF}\u{E000}',
  'e\u0301 a\u0308 combining', '\u200b\u200c\u200d zero widths', '\u00a0nbsp\u00a0 \u3000ideographic\u3000space',
  'a\u0085b', ' \u0085x', '\u0085\u0085 y', 'x\u0085 ', '\ufeffbom at start', 'mid\ufeffdle', ' \ufeff ', '  \ufeff',
  '\u2028line sep\u2029para sep', '\u000b\u000c vt ff', '\u0000\u0001\u001f\u007f controls',
  'x\ud800y', '\udc00', '\ud83d', 'a\ud83d b', '\ude00\ud83d', '\ud83d\ud83d\ude00', 'end\ud800',
  '<|endoftext|>', 'one<|endoftext|>two', '<|endoftext|><|endoftext|>', '<|endoftext', 'endoftext|>', '<|endoftext|',
  '<|im_start|>', 'https://example.com/path?q=1&r=2#frag', 'user@example.com', '#include <stdio.h>\nint main() { return 0; }',
  'def f(x):\n    return x ** 2  # square\n', '{"key": [1, 2, 3], "nested": {"a": null}}', '$$\\frac{a}{b}$$',
  '!!!???...,,,;;;', '----------', '==========', '__init__', '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~',
  'ALL CAPS SHOUTING', 'CamelCaseIdentifier snake_case_name kebab-case-name', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  '.'.repeat(200), '='.repeat(1000), ' '.repeat(300), '\n'.repeat(100), 'ab'.repeat(300), '🙂'.repeat(50),
  ' !'.repeat(150), '-_'.repeat(250),
];

const pools = {
  ascii: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  punct: ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
  space: [' ', ' ', ' ', '\t', '\n', '\r', '\u000b', '\u000c', '\u0085', '\u00a0', '\u2000', '\u3000', '\ufeff', '\u200b'],
  words: ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", ' the', ' and', 'ing', 'tion', '<|endoftext|>', '<|', '|>'],
  other: ['é', 'ß', 'ø', 'ñ', 'ж', 'λ', 'ش', 'א', 'क', 'ก', '中', '文', 'の', '한', '½', '²', '٣', '\u0301', '\u200d', '€', '™', '∑'],
  astral: ['😀', '👍', '🏽', '🎉', '𝔘', '𝟘', '\u{1F468}', '\u{1F469}', '\u{10FFFF}', '\u{20000}'],
  broken: ['\ud800', '\udbff', '\udc00', '\udfff', '\ud83d'],
};
const kinds = Object.keys(pools);

function randomString(next, maxLength) {
  const length = 1 + Math.floor(next() * maxLength);
  // Each string favours a few kinds, so runs (of spaces, of punctuation...) happen.
  const weights = kinds.map(() => next() ** 2);
  const total = weights.reduce((s, w) => s + w, 0);
  let out = '';
  while (out.length < length) {
    let r = next() * total;
    let k = 0;
    while (r > weights[k] && k < kinds.length - 1) r -= weights[k++];
    const pool = pools[kinds[k]];
    out += pool[Math.floor(next() * pool.length)];
  }
  return out;
}

const next = rng(20240601);
const random = [];
for (let i = 0; i < 300; i++) random.push(randomString(next, i < 250 ? 40 : 400));

// ---- the ids ----

const hasJsWhitespaceDifference = (s) => /[\u0085\ufeff]/.test(s);
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
let jsDisagreements = 0;

function reference(text, allowedSpecial) {
  const ids = Array.from(allowedSpecial ? tiktoken.encode(text, 'all') : tiktoken.encode_ordinary(text));
  const js = allowedSpecial ? jsTiktoken.encode(text, 'all') : jsTiktoken.encode(text, [], []);
  // gpt-tokenizer 4.0.0's r50k_base never encodes "<|endoftext|>" as 50256, even when allowed,
  // so the vectors with special tokens are cross-checked with js-tiktoken alone.
  const others = [['js-tiktoken', js]];
  if (!allowedSpecial) others.push(['gpt-tokenizer', gptTokenizer.encode(text, { disallowedSpecial: new Set() })]);
  for (const [name, other] of others) {
    if (same(ids, other)) continue;
    if (!hasJsWhitespaceDifference(text)) {
      throw new Error(`${name} and tiktoken disagree on ${JSON.stringify(text)}: ${other} vs ${ids}`);
    }
    jsDisagreements++;
  }
  const mine = Array.from(allowedSpecial ? ours.encode(text, { allowedSpecial: 'all' }) : ours.encode(text));
  if (!same(mine, ids)) throw new Error(`minigpt's gpt2 and tiktoken disagree on ${JSON.stringify(text)}: ${mine} vs ${ids}`);
  return ids;
}

const ordinary = [...fixed, ...random].map((text) => ({ text, ids: reference(text, false) }));
const special = [
  '<|endoftext|>', 'one<|endoftext|>two', '<|endoftext|><|endoftext|>', 'Hello<|endoftext|> world',
  '<|endoftext|>\n\nNext document.', 'a <|endoftext|>b', '<|endoftext|', '<<|endoftext|>>',
].map((text) => ({ text, ids: reference(text, true) }));

// ---- a whole corpus, checked and not stored ----

const corpusPath = join(root, '..', 'shared', 'data', 'tinyshakespeare.txt');
let corpusNote = 'tinyshakespeare not found; skipped';
if (existsSync(corpusPath)) {
  const text = readFileSync(corpusPath, 'utf8');
  const ids = Array.from(tiktoken.encode_ordinary(text));
  const mine = Array.from(ours.encode(text));
  if (!same(ids, mine)) throw new Error('minigpt and tiktoken disagree on tinyshakespeare');
  corpusNote = `tinyshakespeare (${text.length} characters, ${ids.length} tokens): identical`;
}

const fixture = {
  about:
    `GPT-2 token ids from tiktoken ${version('tiktoken')} (Rust core as WASM), cross-checked with js-tiktoken ${version('js-tiktoken')} ` +
    `and gpt-tokenizer ${version('gpt-tokenizer')} (which differ only on text with U+0085/U+FEFF; gpt-tokenizer not on special tokens); written by scripts/make-gpt2-vectors.mjs`,
  ordinary,
  special,
};
const out = join(root, 'test', 'fixtures', 'gpt2-vectors.json');
writeFileSync(out, `${JSON.stringify(fixture)}\n`);
tiktoken.free();
console.log(
  `wrote ${out}: ${ordinary.length} ordinary and ${special.length} special vectors, ` +
    `${ordinary.reduce((s, v) => s + v.ids.length, 0)} ids; ${jsDisagreements} JS-regex whitespace differences (expected); ${corpusNote}`,
);
