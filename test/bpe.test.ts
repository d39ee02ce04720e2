import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MinigptError } from '../src/errors.js';
import { PairTable, gpt2Pretokens, mergePiece, toWellFormed, trainBpe, type BpeTokenizerJson } from '../src/data/bpe.js';
import { createStreamingDecoder, makeTokenizer, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { tokenizerCommand } from '../src/cli/commands/tokenizer.js';
import { parseFlags } from '../src/cli/args.js';
import { createRng } from '../src/util/random.js';

function assertMinigptError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MinigptError, `expected a MinigptError, got ${String(err)}`);
    for (const pattern of patterns) assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'message is one line');
    return true;
  });
}

/** A corpus of lines of Zipf-distributed words (some accented, some CJK), seeded. */
function corpus(seed: number, lines: number): string[] {
  const rng = createRng(seed);
  const stems = ['the', 'and', 'king', 'queen', 'love', 'death', 'lord', 'sweet', 'night', 'thou', 'art', 'hath',
    'café', 'naïve', 'über', '世界', 'こんにちは', 'speak', 'heaven', 'fortune', 'brother', 'sister', 'crown', 'sword'];
  const suffixes = ['', '', '', 's', 'ed', 'ing', "'s", "'ll", 'eth', 'est'];
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const words: string[] = [];
    const n = 3 + rng.int(10);
    for (let j = 0; j < n; j++) {
      const stem = stems[Math.min(stems.length - 1, Math.floor(stems.length * rng.next() ** 2))]!;
      words.push(stem + suffixes[rng.int(suffixes.length)]!);
    }
    out.push(`${words.join(rng.next() < 0.1 ? ',  ' : ' ')}${rng.next() < 0.3 ? '.' : ''}\n`);
  }
  return out;
}

const TEXT = corpus(1, 1500).join('');

test('trainBpe gives exactly the vocabulary size asked for: bytes, merges, then special tokens', () => {
  const tok = trainBpe(TEXT, { vocabSize: 500 });
  assert.equal(tok.kind, 'bpe');
  assert.equal(tok.vocabSize, 500);
  const json = tok.toJSON() as BpeTokenizerJson;
  assert.equal(json.merges.length, 500 - 256 - 1);
  assert.deepEqual(json.special, { '<|endoftext|>': 499 });
  assert.deepEqual(tok.specialTokens, { '<|endoftext|>': 499 });
  const none = trainBpe(TEXT, { vocabSize: 300, specialTokens: [] });
  assert.equal(none.vocabSize, 300);
  assert.equal((none.toJSON() as BpeTokenizerJson).merges.length, 44);
  assert.deepEqual(none.specialTokens, {});
  // Nothing but bytes is a valid (if useless) tokenizer.
  assert.equal(trainBpe(TEXT, { vocabSize: 256, specialTokens: [] }).vocabSize, 256);
});

test('trainBpe is deterministic: same text, same merges; line order does not matter', () => {
  const a = trainBpe(TEXT, { vocabSize: 400 }).toJSON();
  const b = trainBpe(TEXT, { vocabSize: 400 }).toJSON();
  assert.deepEqual(a, b);
  const lines = corpus(1, 1500);
  const rng = createRng(5);
  for (let i = lines.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [lines[i], lines[j]] = [lines[j]!, lines[i]!];
  }
  assert.deepEqual(trainBpe(lines.join(''), { vocabSize: 400 }).toJSON(), a);
});

test('trainBpe merges the most frequent pair, ties to the smallest ids', () => {
  // "abab": (a,b) twice beats (b,a) once; then the two "ab" tokens merge.
  assert.deepEqual((trainBpe('abab', { vocabSize: 258, specialTokens: [] }).toJSON() as BpeTokenizerJson).merges, ['97 98', '256 256']);
  // "ab cd" is the pre-tokens "ab" and " cd": three pairs seen once each, taken in id order.
  assert.deepEqual(
    (trainBpe('ab cd', { vocabSize: 259, specialTokens: [] }).toJSON() as BpeTokenizerJson).merges,
    ['32 99', '97 98', '256 100'],
  );
  // Pairs never cross pre-token boundaries: "a b" has only " b".
  assert.deepEqual((trainBpe('a b', { vocabSize: 257, specialTokens: [] }).toJSON() as BpeTokenizerJson).merges, ['32 98']);
});

test('more merges compress more: tokens per character drop', () => {
  const chars = [...TEXT].length;
  const bytes = new TextEncoder().encode(TEXT).length;
  const counts = [256, 300, 400, 600].map((v) => trainBpe(TEXT, { vocabSize: v, specialTokens: [] }).encode(TEXT).length);
  assert.equal(counts[0], bytes, 'bytes only: one token per byte');
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i]! < counts[i - 1]!, `vocab step ${i}: ${counts.join(' > ')}`);
  assert.ok(counts[3]! / chars < 0.3, `600 tokens: ${(counts[3]! / chars).toFixed(3)} tokens per character`);
});

test('at the largest vocabulary the text allows, every pre-token of it encodes as one token', () => {
  // The error for too large a vocabulary names the largest that works; at that size training
  // has merged every word of the text whole, and encoding must agree with training.
  let largest = 0;
  assertMinigptError(() => trainBpe(TEXT, { vocabSize: 5000 }), /too little variety/, /at most (\d+) tokens/);
  try {
    trainBpe(TEXT, { vocabSize: 5000 });
  } catch (e) {
    largest = Number(/at most (\d+) tokens/.exec((e as Error).message)![1]);
  }
  const tok = trainBpe(TEXT, { vocabSize: largest });
  assert.equal(tok.vocabSize, largest);
  const words = gpt2Pretokens(TEXT);
  assert.equal(tok.encode(TEXT).length, words.length);
  assert.deepEqual(tok.decode(tok.encode(TEXT)), TEXT);
});

test('a megabyte pre-token (no whitespace at all) trains in seconds and still round-trips', () => {
  // Before pieces and per-site updates, each merge rewrote the whole word: minutes for this.
  const rng = createRng(4);
  const word = Array.from({ length: 1_000_000 }, () => String.fromCharCode(97 + rng.int(26))).join('');
  const start = performance.now();
  const tok = trainBpe(word, { vocabSize: 600 });
  const seconds = (performance.now() - start) / 1000;
  assert.ok(seconds < 15, `took ${seconds.toFixed(1)} s`);
  assert.equal(tok.vocabSize, 600);
  const sample = word.slice(0, 20_000);
  const ids = tok.encode(sample);
  assert.ok(ids.length < 0.85 * sample.length, `${ids.length} tokens for ${sample.length} letters`);
  assert.equal(tok.decode(ids), sample);
});

test('learning from a long pre-token in pieces gives the merges of those pieces', () => {
  // The pieces are counted as words of their own: the same merges as the pieces on separate lines.
  const rng = createRng(5);
  const pieces = Array.from({ length: 40 }, () => Array.from({ length: 64 }, () => 'abcd'[rng.int(4)]).join(''));
  const whole = trainBpe(pieces.join(''), { vocabSize: 320, specialTokens: [] });
  const apart = trainBpe(pieces.join('\n'), { vocabSize: 320, specialTokens: [] });
  assert.deepEqual(whole.toJSON().merges, apart.toJSON().merges);
});

/** Random strings from a mix of scripts, emoji, whitespace, and (with `broken`) lone surrogates. */
function randomText(seed: number, count: number, broken: boolean): string[] {
  const rng = createRng(seed);
  const pool = [
    'a', 'Z', 'é', 'ß', 'ж', '中', 'の', '한', 'ש', 'क', '1', '٣', '½', ' ', ' ', '  ', '\n', '\t', '\r\n', '\u00a0', '\u0085',
    '\u3000', '\ufeff', "'s", "'ll", '.', ',', '!', '<|endoftext|>', '😀', '👍🏽', '👨‍👩‍👧', '🇫🇷', '\u0301', '\u200d', '\u{10FFFF}',
    'the', ' king', 'queen',
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
  for (const s of randomText(8, 200, true)) {
    const once = t.decode(t.encode(s));
    assert.equal(once, toWellFormed(s), JSON.stringify(s));
    assert.equal(t.decode(t.encode(once)), once);
  }
  assert.equal(t.decode(t.encode('a\ud800b')), 'a\uFFFDb');
  for (const s of ['', ' ', '   \n\n\t  \r\n ', ' '.repeat(1000), '😀'.repeat(100), '\ufeffBOM first', 'queen'.repeat(300), '=-'.repeat(2000)]) {
    assert.equal(t.decode(t.encode(s)), s);
  }
}

test('bpe round-trips any text, including characters it never saw; lone surrogates become U+FFFD', () => {
  checkRoundTrips(trainBpe(TEXT, { vocabSize: 600 }));
});

test('special tokens: left out of training, the last ids, encoded only where allowed', () => {
  const text = `${TEXT.slice(0, 5000)}<|endoftext|>${TEXT.slice(5000, 10000)}<|endoftext|>`.repeat(3);
  const tok = trainBpe(text, { vocabSize: 400, specialTokens: ['<|endoftext|>', '<|pad|>'] });
  assert.deepEqual(tok.specialTokens, { '<|endoftext|>': 398, '<|pad|>': 399 });
  const merged = (tok.toJSON() as BpeTokenizerJson).merges.map((m) => m.split(' ').map(Number));
  const bytesOf = (id: number): string => new TextDecoder().decode(tok.tokenBytes(id));
  assert.ok(!merged.some(([a, b]) => (bytesOf(a!) + bytesOf(b!)).includes('<|')), 'no merge learned from the separator');
  const ids = [...tok.encode('one<|endoftext|>two<|pad|>', { allowedSpecial: 'all' })];
  assert.equal(ids.filter((id) => id === 398).length, 1);
  assert.equal(ids.at(-1), 399);
  assert.deepEqual([...tok.encode('x<|pad|>', { allowedSpecial: ['<|pad|>'] })].at(-1), 399);
  assert.ok(![...tok.encode('one<|endoftext|>two')].includes(398), 'plain text by default');
  assert.equal(tok.decode(ids), 'one<|endoftext|>two<|pad|>');
  assertMinigptError(() => tok.encode('x', { allowedSpecial: ['<|eot|>'] }), /"<\|eot\|>" is not a special token of this bpe tokenizer/);
});

test('trainBpe explains what is wrong with its options or text', () => {
  assertMinigptError(() => trainBpe(TEXT, { vocabSize: 256 }), /vocabulary size 256 is out of range; it must be a whole number from 257 \(256 bytes \+ 1 special\)/);
  assertMinigptError(() => trainBpe(TEXT, { vocabSize: 1000.5 }), /out of range/);
  assertMinigptError(() => trainBpe('abab', { vocabSize: 300, specialTokens: [] }), /too little variety for a BPE vocabulary of 300.*at most 258 tokens/);
  assertMinigptError(() => trainBpe(TEXT, { vocabSize: 300, specialTokens: ['<|a|>', '<|a|>'] }), /given twice/);
  assertMinigptError(() => trainBpe(TEXT, { vocabSize: 300, specialTokens: [''] }), /is empty/);
  assertMinigptError(() => makeTokenizer('bpe', TEXT), /needs a vocabulary size/);
  assert.equal(makeTokenizer('bpe', TEXT, { vocabSize: 300 }).vocabSize, 300);
  assert.equal(makeTokenizer('char', 'abca').vocabSize, 4); // a, b, c and <|endoftext|>
  assert.equal(makeTokenizer('char', 'abca', { endOfText: false }).vocabSize, 3);
});

test('bpe JSON round-trips through text and encodes identically', () => {
  const tok = trainBpe(TEXT, { vocabSize: 500 });
  const json = JSON.parse(JSON.stringify(tok.toJSON(), null, 2)) as BpeTokenizerJson;
  assert.equal(json.type, 'bpe');
  assert.equal(json.pretokenizer, 'gpt2');
  assert.match(json.merges[0]!, /^\d+ \d+$/);
  const back = tokenizerFromJson(json, 'tok.json');
  assert.deepEqual(back.toJSON(), tok.toJSON());
  assert.equal(back.vocabSize, 500);
  for (const s of randomText(3, 50, false).concat(TEXT.slice(0, 3000))) assert.deepEqual([...back.encode(s)], [...tok.encode(s)]);
});

test('malformed bpe JSON is a one-line error naming the source and the problem', () => {
  const good = trainBpe(TEXT, { vocabSize: 270 }).toJSON() as BpeTokenizerJson;
  const bad = (patch: Record<string, unknown>): unknown => ({ ...good, ...patch });
  const src = 'run/tokenizer.minigpt.json';
  const cases: [unknown, RegExp][] = [
    [bad({ merges: undefined }), /"merges" must be an array of "a b" id pairs, got nothing/],
    [bad({ merges: '97 98' }), /"merges" must be an array/],
    [bad({ merges: ['97 98', [1, 2]] }), /merges\[1\] must be a string of two token ids like "104 101", got an array/],
    [bad({ merges: ['97 98 99'] }), /merges\[0\] must be a string of two token ids/],
    [bad({ merges: ['97  98'] }), /merges\[0\] must be a string/],
    [bad({ merges: ['097 98'] }), /merges\[0\] must be a string/],
    [bad({ merges: ['97 256'] }), /merges\[0\] "97 256" uses id 256, which does not exist yet; merge 0 may only join ids below 256/],
    [bad({ merges: ['97 98', '97 98'] }), /merges\[1\] "97 98" repeats merges\[0\]/],
    [bad({ special: [] }), /"special" must be an object/],
    [bad({ special: { '<|endoftext|>': 5 } }), /special token "<\|endoftext\|>" has id number 5; special ids must be the whole numbers 269 to 269/],
    [bad({ special: { '<|endoftext|>': '269' } }), /has id string "269"/],
    [bad({ special: { a: 269, b: 269 } }), /special tokens "a" and "b" share id 269/],
    [bad({ special: { '': 269 } }), /empty text/],
    [bad({ pretokenizer: 'gpt4' }), /"pretokenizer" must be "gpt2", got string "gpt4"/],
    [bad({ pretokenizer: undefined }), /"pretokenizer" must be "gpt2", got nothing/],
    [bad({ vocab: {} }), /unknown field "vocab"/],
    [{ type: 'bpe' }, /"pretokenizer" must be "gpt2"/],
  ];
  for (const [json, pattern] of cases) {
    // undefined fields vanish as they would in a file
    const parsed = JSON.parse(JSON.stringify(json)) as unknown;
    assertMinigptError(() => tokenizerFromJson(parsed, src), new RegExp(`^${src.replace(/[./]/g, '\\$&')}: `), pattern);
  }
  // No special tokens at all is fine.
  assert.equal(tokenizerFromJson({ ...good, special: {} }, src).vocabSize, 269);
});

test('the scan and heap merge strategies agree on random merge tables', () => {
  const rng = createRng(11);
  for (let trial = 0; trial < 20; trial++) {
    const alphabet = 2 + rng.int(5);
    const table = new PairTable();
    let next = 256;
    const known = Array.from({ length: alphabet }, (_, i) => i);
    for (let m = 0; m < 40; m++) {
      const a = known[rng.int(known.length)]!, b = known[rng.int(known.length)]!;
      if (table.get(a, b) >= 0) continue;
      table.set(a, b, next);
      known.push(next++);
    }
    for (let k = 0; k < 20; k++) {
      const ids = Array.from({ length: 1 + rng.int(300) }, () => rng.int(alphabet));
      assert.deepEqual(mergePiece([...ids], table, 'heap'), mergePiece([...ids], table, 'scan'));
    }
  }
});

test('with mergedIds (a merge\'s rank is not the id it makes, as in tokenizer.json), scan and heap both merge as the plain rule says', () => {
  const rng = createRng(12);
  // The plain rule: join the adjacent pair whose merge ranks first, the leftmost on a tie; again until none merges.
  const naive = (ids: number[], table: PairTable): number[] => {
    for (;;) {
      let best = -1, at = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = table.get(ids[i]!, ids[i + 1]!);
        if (r >= 0 && (best < 0 || r < best)) { best = r; at = i; }
      }
      if (at < 0) return ids;
      ids.splice(at, 2, table.mergedIds![best]!);
    }
  };
  for (let trial = 0; trial < 20; trial++) {
    const alphabet = 2 + rng.int(5);
    const table = new PairTable();
    const made: number[] = [];
    const known = Array.from({ length: alphabet }, (_, i) => 500 + i);
    for (let rank = 0; made.length < 40 && rank < 200; rank++) {
      const a = known[rng.int(known.length)]!, b = known[rng.int(known.length)]!;
      if (table.get(a, b) >= 0) continue;
      // Ids unrelated to ranks: some below the alphabet's, some far above.
      const id = rng.next() < 0.5 ? made.length : 10_000 + rng.int(90_000);
      if (known.includes(id)) continue;
      table.set(a, b, made.length);
      made.push(id);
      known.push(id);
    }
    table.mergedIds = Int32Array.from(made);
    for (let k = 0; k < 20; k++) {
      const ids = Array.from({ length: 1 + rng.int(300) }, () => 500 + rng.int(alphabet));
      const want = naive([...ids], table);
      assert.deepEqual(mergePiece([...ids], table, 'heap'), want);
      assert.deepEqual(mergePiece([...ids], table, 'scan'), want);
    }
  }
});

test('bpe streams partial characters whole', () => {
  const tok = trainBpe(TEXT, { vocabSize: 400 });
  const text = 'the king 😀 über 世界 \ud800!';
  const ids = [...tok.encode(text)];
  const stream = createStreamingDecoder(tok);
  const pieces = ids.map((id) => stream.push(id));
  assert.equal(pieces.join('') + stream.flush(), tok.decode(ids));
  assert.equal(pieces.join('').split('\uFFFD').length, 2, 'only the lone surrogate is U+FFFD');
});

test('`minigpt tokenizer` trains, encodes and decodes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-tok-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const lines: string[] = [];
  t.mock.method(console, 'log', (...args: unknown[]) => lines.push(args.join(' ')));
  t.mock.method(console, 'error', () => {});
  const cli = (argv: string[]): Promise<number | void> => {
    const { values, positionals } = parseFlags(argv, tokenizerCommand.flags, tokenizerCommand.positionals);
    return tokenizerCommand.run(values, positionals);
  };
  await writeFile(join(dir, 'data.txt'), TEXT);
  const out = join(dir, 'sub', 'tok.json');
  await cli(['train', '--data', join(dir, 'data.txt'), '--vocab', '400', '--out', out]);
  assert.match(lines.pop()!, /trained a BPE tokenizer of 400 tokens \(256 bytes, 143 merges, 1 special\)/);
  const tok = tokenizerFromJson(JSON.parse(await readFile(out, 'utf8')), out);
  assert.equal(tok.vocabSize, 400);

  await cli(['encode', '--tokenizer', out, '--text', 'the king']);
  const ids = JSON.parse(lines.pop()!) as number[];
  assert.deepEqual(ids, [...tok.encode('the king')]);
  await cli(['decode', '--tokenizer', out, '--ids', ids.join(',')]);
  assert.equal(lines.pop(), 'the king');
  await cli(['encode', '--tokenizer', 'gpt2', '--text', 'Hello world<|endoftext|>', '--allow-special']);
  assert.equal(lines.pop(), '[15496,995,50256]');
  await cli(['encode', '--tokenizer', 'gpt2', '--text', '😀', '--pieces']);
  assert.match(lines.join('\n'), /\\xf0/);

  await assert.rejects(cli(['encode', '--tokenizer', 'gpt2', '--vocab', '300', '--text', 'x']), /--vocab is for `minigpt tokenizer train`, not encode/);
  await assert.rejects(cli(['frob']), /unknown tokenizer subcommand "frob"/);
  await assert.rejects(cli(['train', '--data', join(dir, 'data.txt'), '--out', out]), /--vocab N is required/);
  await assert.rejects(cli(['encode', '--tokenizer', join(dir, 'nope.json'), '--text', 'x']), /no such file or folder/);
  await writeFile(join(dir, 'broken.json'), '{"type": "bpe",');
  await assert.rejects(cli(['encode', '--tokenizer', join(dir, 'broken.json'), '--text', 'x']), /broken\.json: not valid JSON/);
  await assert.rejects(cli(['decode', '--tokenizer', 'gpt2', '--ids', '1 x']), /"x" is not a token id/);
  await assert.rejects(cli(['decode', '--tokenizer', 'gpt2', '--ids', ',']), /--ids "," holds no token id/);
  await assert.rejects(cli(['decode', '--tokenizer', 'gpt2', '--ids', '1 100000000000000000000000']), /token id 100000000000000000000000 is out of range; valid ids are 0 to 50256/);
  // A JSONL file's field, as train reads it.
  await writeFile(join(dir, 'body.jsonl'), '{"body": "Hello world"}\n');
  await cli(['encode', '--tokenizer', 'gpt2', '--file', join(dir, 'body.jsonl'), '--text-field', 'body']);
  assert.equal(lines.pop(), '[15496,995]');
});
