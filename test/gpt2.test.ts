import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MinigptError } from '../src/errors.js';
import { GPT2_END_OF_TEXT_ID, GPT2_VOCAB_SIZE, gpt2Tokenizer } from '../src/data/gpt2.js';
import { toWellFormed } from '../src/data/bpe.js';
import { createStreamingDecoder, makeTokenizer, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { createRng } from '../src/util/random.js';

// Tests run from dist/test, fixtures stay in the source tree.
const VECTORS_FILE = fileURLToPath(new URL('../../test/fixtures/gpt2-vectors.json', import.meta.url));

interface Vector {
  text: string;
  ids: number[];
}
const vectors = JSON.parse(readFileSync(VECTORS_FILE, 'utf8')) as { ordinary: Vector[]; special: Vector[] };

function assertMinigptError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MinigptError, `expected a MinigptError, got ${String(err)}`);
    for (const pattern of patterns) assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'message is one line');
    return true;
  });
}

const tok = gpt2Tokenizer();

test('gpt2 has tiktoken\'s vocabulary size and end-of-text id', () => {
  assert.equal(tok.kind, 'gpt2');
  assert.equal(tok.vocabSize, GPT2_VOCAB_SIZE);
  assert.equal(GPT2_VOCAB_SIZE, 50257);
  assert.deepEqual(tok.specialTokens, { '<|endoftext|>': 50256 });
  assert.equal(GPT2_END_OF_TEXT_ID, 50256);
});

test('gpt2 gives well-known GPT-2 ids', () => {
  assert.deepEqual([...tok.encode('Hello world')], [15496, 995]);
  assert.deepEqual([...tok.encode(' the')], [262]);
  assert.deepEqual([...tok.encode('!')], [0]);
  assert.deepEqual([...tok.encode('<|endoftext|>', { allowedSpecial: 'all' })], [50256]);
  assert.equal(tok.decode([50256]), '<|endoftext|>');
});

test(`gpt2 ids equal tiktoken's on all ${vectors.ordinary.length} reference vectors, and decode back`, () => {
  assert.ok(vectors.ordinary.length > 300);
  for (const { text, ids } of vectors.ordinary) {
    assert.deepEqual([...tok.encode(text)], ids, `encoding ${JSON.stringify(text)}`);
    assert.equal(tok.decode(ids), toWellFormed(text), `decoding ${JSON.stringify(text)}`);
  }
});

test('gpt2 encodes special tokens only where allowed, as tiktoken does', () => {
  for (const { text, ids } of vectors.special) {
    assert.deepEqual([...tok.encode(text, { allowedSpecial: 'all' })], ids, JSON.stringify(text));
    assert.deepEqual([...tok.encode(text, { allowedSpecial: ['<|endoftext|>'] })], ids, JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
  // By default it is plain text: 7 ordinary tokens, never 50256.
  const plain = [...tok.encode('a<|endoftext|>b')];
  assert.ok(!plain.includes(50256));
  assert.deepEqual(plain, [...tok.encodeOrdinary('a<|endoftext|>b')]);
  assert.deepEqual([...tok.encode('a<|endoftext|>b', { allowedSpecial: [] })], plain);
  assert.equal(tok.decode(plain), 'a<|endoftext|>b');
  assertMinigptError(() => tok.encode('x', { allowedSpecial: ['<|im_start|>'] }), /"<\|im_start\|>" is not a special token of this gpt2 tokenizer/, /<\|endoftext\|>/);
});

/** Random strings from a mix of scripts, emoji, whitespace, and (with `broken`) lone surrogates. */
function randomText(seed: number, count: number, broken: boolean): string[] {
  const rng = createRng(seed);
  const pool = [
    'a', 'Z', 'é', 'ß', 'ж', '中', 'の', '한', 'ש', 'क', '1', '٣', '½', ' ', ' ', '  ', '\n', '\t', '\r\n', '\u00a0', '\u0085',
    '\u3000', '\ufeff', "'s", "'ll", '.', ',', '!', '<|endoftext|>', '😀', '👍🏽', '👨‍👩‍👧', '🇫🇷', '\u0301', '\u200d', '\u{10FFFF}',
    ...(broken ? ['\ud800', '\udfff', '\ud83d', '\ude00'] : []),
  ];
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const n = rng.int(60);
    for (let j = 0; j < n; j++) s += pool[rng.int(pool.length)]!;
    out.push(s);
  }
  return out;
}

function checkRoundTrips(t: Tokenizer): void {
  for (const s of randomText(7, 300, false)) assert.equal(t.decode(t.encode(s)), s, JSON.stringify(s));
  // Lone surrogates cannot be UTF-8: each becomes U+FFFD, the same way every time.
  for (const s of randomText(8, 200, true)) {
    const once = t.decode(t.encode(s));
    assert.equal(once, toWellFormed(s), JSON.stringify(s));
    assert.equal(t.decode(t.encode(once)), once);
  }
  assert.equal(t.decode(t.encode('a\ud800b')), 'a\uFFFDb');
  for (const s of ['', ' ', '   \n\n\t  \r\n ', ' '.repeat(1000), '\n'.repeat(500), '😀'.repeat(100), '\ufeffBOM first', '=-'.repeat(2000)]) {
    assert.equal(t.decode(t.encode(s)), s);
  }
}

test('gpt2 round-trips random unicode, emoji, whitespace runs; lone surrogates become U+FFFD', () => {
  checkRoundTrips(tok);
});

test('gpt2 matches tiktoken on long pre-tokens (merged with a heap) too', () => {
  // The vectors hold pieces up to 1000 bytes; a very long one must be quick and exact.
  const long = '~'.repeat(50_000);
  const ids = tok.encode(long);
  assert.equal(tok.decode(ids), long);
  const short = [...tok.encode('~'.repeat(500))];
  const vector = vectors.ordinary.find((v) => v.text === '='.repeat(1000));
  assert.ok(vector, 'fixture has a 1000-byte piece');
  assert.deepEqual([...tok.encode(vector.text)], vector.ids);
  assert.ok(short.length < 500 / 4, 'long runs merge');
});

test('streaming decode holds back partial characters and joins to decode()', () => {
  const text = 'Hi 😀 👨‍👩‍👧 naïve 中文 \ud800 end';
  const ids = [...tok.encode(text)];
  const stream = createStreamingDecoder(tok);
  const pieces = ids.map((id) => stream.push(id));
  assert.equal(pieces.join('') + stream.flush(), tok.decode(ids));
  // The one U+FFFD is the lone surrogate's; no piece ends in part of a character.
  assert.equal(pieces.join('').split('\uFFFD').length, 2);
  // The emoji is 4 bytes over several tokens: nothing comes out until its last byte.
  const emoji = [...tok.encode('😀')];
  assert.ok(emoji.length > 1);
  const s2 = createStreamingDecoder(tok);
  assert.deepEqual(emoji.map((id) => s2.push(id)), [...emoji.slice(1).map(() => ''), '😀']);
  // An unfinished character at the end comes out as U+FFFD on flush, as decode() gives.
  const s3 = createStreamingDecoder(tok);
  assert.equal(s3.push(emoji[0]!), '');
  assert.equal(s3.flush(), tok.decode([emoji[0]!]));
  assert.equal(s3.push(15496), 'Hello', 'flush starts afresh');
});

test('gpt2 JSON is just its type; it reads back, and anything else is an error naming the file', () => {
  assert.deepEqual(tok.toJSON(), { type: 'gpt2' });
  const back = tokenizerFromJson(JSON.parse(JSON.stringify(tok.toJSON())), 'tok.json');
  assert.equal(back.kind, 'gpt2');
  assert.deepEqual([...back.encode('Hello world')], [15496, 995]);
  assertMinigptError(() => tokenizerFromJson({ type: 'gpt2', vocab: [] }, 'ckpt/tokenizer.minigpt.json'), /^ckpt\/tokenizer\.minigpt\.json: gpt2 tokenizer has an unknown field "vocab"/);
  assert.equal(makeTokenizer('gpt2', 'ignored').vocabSize, 50257);
});

test('gpt2 decode rejects ids outside the vocabulary', () => {
  assertMinigptError(() => tok.decode([15496, 50257]), /token id 50257 at position 1 is out of range for this gpt2 tokenizer; valid ids are 0 to 50256/);
  assertMinigptError(() => tok.decode([-1]), /token id -1/);
  assertMinigptError(() => tok.decode([1.5]), /token id 1.5/);
  assertMinigptError(() => tok.tokenBytes(60000), /token id 60000 is out of range/);
  assert.deepEqual([...tok.tokenBytes(15496)], [...new TextEncoder().encode('Hello')]);
});
