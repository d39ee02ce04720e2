/** Token shards: streamed prepare, shard-backed TokenStreams, strict validation on open. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, readFile, readdir, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { appendFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { MinigptError } from '../src/errors.js';
import { BLANK_LINE_SEPARATOR, cleanText, loadDocuments, loadText } from '../src/data/text.js';
import { cleanDocuments, documentSeparatorOf, encodeDocuments } from '../src/data/documents.js';
import { buildCharTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import type { TokenStream } from '../src/data/batches.js';
import {
  SHARD_HEADER_BYTES,
  SHARD_MAGIC,
  isShardDir,
  openShards,
  prepareShards,
  type PrepareOptions,
  type PrepareProgress,
} from '../src/data/shards.js';
import { prepareCommand } from '../src/cli/commands/prepare.js';
import { spBpeFixtureTokenizer } from './support/sp-bpe-fixture.js';
import { hfBpeFixtureTokenizer } from './support/hf-bpe-fixture.js';
import type { ByteLevelTokenizer } from '../src/data/bpe.js';

async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-shards-'));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function assertMinigptError(promise: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof MinigptError, `expected a MinigptError, got ${String(err)}`);
    for (const pattern of patterns) assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'message is one line');
    return true;
  });
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A seeded generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Text with everything cleaning and chunking must get right across cuts: CRLF and lone CR,
 * runs of blank lines (some holding spaces), indented lines, trailing spaces, control
 * characters, decomposed accents (NFC), emoji (4-byte UTF-8, surrogate pairs), CJK, tabs.
 */
function generateCorpus(seed: number, lines: number): string {
  const r = rng(seed);
  const words = ['the', 'quick', 'brown', 'fox', 'jumps', 'über', 'cafe\u0301', 'naïve', '中文', '😀', 'Σίσυφος', "don't", '42', '3.14', '—', 'x\u0007y', 'tab\there'];
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const n = 1 + Math.floor(r() * 12);
    let line = Array.from({ length: n }, () => words[Math.floor(r() * words.length)]).join(' ');
    const k = r();
    if (k < 0.1) line = '    ' + line;
    else if (k < 0.15) line += '  ';
    else if (k < 0.2) line = '';
    else if (k < 0.23) line = ' \t ';
    const eol = r() < 0.15 ? '\r\n' : r() < 0.03 ? '\r' : '\n';
    out.push(line + eol);
    if (r() < 0.05) out.push('\n\n\n');
  }
  return out.join('');
}

function readAll(stream: TokenStream): Int32Array {
  const out = new Int32Array(stream.length);
  stream.read(0, out);
  return out;
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Every window of `size` (at every `step`) and every shard boundary window matches `expected`. */
function checkWindows(stream: TokenStream, expected: Int32Array, size: number, step: number): void {
  assert.equal(stream.length, expected.length);
  const w = new Int32Array(size);
  for (let offset = 0; offset + size <= stream.length; offset += step) {
    stream.read(offset, w);
    for (let i = 0; i < size; i++) {
      if (w[i] !== expected[offset + i]) assert.fail(`window at ${offset}: token ${i} is ${w[i]}, expected ${expected[offset + i]}`);
    }
  }
}

/**
 * prepare + open, then the shards must equal the in-memory encoding: for char,
 * tokenizer.encode(cleanText(loadText(data))); for gpt2 and bpe, each document cleaned and encoded
 * with <|endoftext|> between them.
 */
async function roundTrip(dir: string, data: string, opts: Partial<PrepareOptions> & Pick<PrepareOptions, 'tokenizer'>) {
  const out = join(dir, 'shards');
  const summary = await prepareShards({ data, out, shardTokens: 3000, chunkBytes: 257, ...opts });
  const opened = await openShards(out);
  const separator = documentSeparatorOf(opened.tokenizer);
  assert.equal(opened.meta.document_separator, separator);
  const documents = cleanDocuments(await loadDocuments(data, { ...(opts.textField ? { textField: opts.textField } : {}), ...(opts.invalidUtf8 ? { invalidUtf8: opts.invalidUtf8 } : {}) }), separator, opts.clean ?? {});
  const cleaned = documents.join(separator);
  if (separator === BLANK_LINE_SEPARATOR) {
    assert.equal(cleaned, cleanText(await loadText(data, { ...(opts.textField ? { textField: opts.textField } : {}), ...(opts.invalidUtf8 ? { invalidUtf8: opts.invalidUtf8 } : {}) }), opts.clean ?? {}));
  }
  const expected = encodeDocuments(opened.tokenizer, documents);
  const all = concat(readAll(opened.train), readAll(opened.val));
  assert.equal(all.length, expected.length, 'token count equals the in-memory encoding');
  assert.deepEqual(all, expected, 'train + val tokens equal the in-memory encoding');
  return { summary, opened, expected, cleaned, out };
}

test('char shards hold exactly the in-memory encoding of the cleaned text, across several shards', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    const text = generateCorpus(1, 2500);
    await writeFile(file, text);
    const progress: PrepareProgress[] = [];
    const { summary, opened, expected, cleaned, out } = await roundTrip(dir, file, {
      tokenizer: 'char',
      onProgress: (p) => progress.push(p),
    });
    // The vocabulary is the one makeTokenizer('char') makes from the whole cleaned text (with <|endoftext|>).
    assert.deepEqual(opened.tokenizer.toJSON(), buildCharTokenizer(cleaned, { endOfText: true }).toJSON());
    assert.ok(summary.train.shards.length >= 3, `several train shards (${summary.train.shards.length})`);
    assert.deepEqual(summary.train.shards.slice(0, 2), ['train_000000.bin', 'train_000001.bin']);
    assert.equal(summary.val.shards[0], 'val_000000.bin');
    assert.equal(summary.dtype, 'uint16');
    assert.equal(opened.meta.dtype, 'uint16');
    assert.equal(opened.meta.format, 'minigpt-shards');
    assert.equal(opened.meta.vocab_size, opened.tokenizer.vocabSize);
    assert.equal(opened.train.length, summary.train.tokens);
    assert.equal(opened.val.length, summary.val.tokens);
    // Validation is about the last 10% (cut at a line boundary).
    const valShare = opened.val.length / expected.length;
    assert.ok(valShare > 0.07 && valShare < 0.13, `val share ${valShare}`);
    // Every window, including those spanning shard boundaries and the train/val seam.
    checkWindows(opened.train, expected.subarray(0, opened.train.length), 50, 7);
    checkWindows(opened.val, expected.subarray(opened.train.length), 50, 3);
    const span = new Int32Array(3000 * 2 + 10); // covers one shard whole and parts of two others
    opened.train.read(2995, span);
    assert.deepEqual(span, expected.subarray(2995, 2995 + span.length));
    for (let b = 3000; b < opened.train.length; b += 3000) {
      const w = new Int32Array(2);
      opened.train.read(b - 1, w);
      assert.deepEqual(w, expected.subarray(b - 1, b + 1));
    }
    assert.throws(() => opened.train.read(opened.train.length - 1, new Int32Array(2)), RangeError);
    // Shard files are llm.c's format: header then uint16 tokens.
    const bytes = await readFile(join(out, 'train_000000.bin'));
    const header = new Int32Array(bytes.buffer, bytes.byteOffset, 256);
    assert.deepEqual([header[0], header[1], header[2]], [SHARD_MAGIC, 1, 3000]);
    assert.equal(bytes.length, SHARD_HEADER_BYTES + 3000 * 2);
    // Progress: two passes (vocabulary scan, encode), ending at the total.
    const last = progress.at(-1)!;
    assert.equal(last.phase, 'encode');
    assert.equal(last.bytesRead, last.bytesTotal);
    assert.equal(last.tokens, expected.length);
    assert.ok(progress.some((p) => p.phase === 'scan'));
    assert.ok(await isShardDir(out));
    assert.ok(!(await isShardDir(dir)));
    opened.close();
  });
});

test('a line far longer than the chunk size (no line boundary to cut at) still round-trips for char', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'long.txt');
    const r = rng(7);
    const long = Array.from({ length: 3000 }, () => (r() < 0.2 ? ' ' : 'abcdé😀'[Math.floor(r() * 6)])).join('');
    await writeFile(file, `start\n${long}\n\n\n${long.toUpperCase()}\nend\n`);
    await roundTrip(dir, file, { tokenizer: 'char', chunkBytes: 64, maxPendingChars: 256 });
  });
});

test('a corpus on one line (no safe cut after the split point) still gets about --val-fraction of validation, not all the text held in memory', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'one-line.txt');
    const r = rng(11);
    const words = ['alpha', 'beta', 'gamma', 'δέλτα', '日本'];
    // A newline every ~80 words early on, then none: the last safe cut before the split lies far back.
    const head = Array.from({ length: 40 }, () => Array.from({ length: 80 }, () => words[Math.floor(r() * 5)]).join(' ')).join('\n');
    const tail = Array.from({ length: 20_000 }, () => words[Math.floor(r() * 5)]).join(' ');
    await writeFile(file, `${head}\n${tail}`);
    const { opened } = await roundTrip(dir, file, { tokenizer: 'char', chunkBytes: 512, maxPendingChars: 200_000, valFraction: 0.1 });
    const share = opened.val.length / (opened.train.length + opened.val.length);
    assert.ok(share > 0.09 && share < 0.11, `validation is ${(share * 100).toFixed(1)}% of the tokens`);
    opened.close();
  });
});

test('long lines and one big JSONL record: validation is about --val-fraction (not the 1-token newline at the end, not the whole record), and every kind still equals the in-memory encoding', async () => {
  await withTempDir(async (dir) => {
    const r = rng(23);
    const words = ['alpha', 'beta,', 'gamma.', 'δέλτα', '日本', "it's"];
    const line = () => Array.from({ length: 2_000 }, () => words[Math.floor(r() * words.length)]).join(' ');
    // Ten ~13k-character lines, each ending in a newline: the split point falls inside the last one.
    await writeFile(join(dir, 'books.txt'), Array.from({ length: 10 }, line).join('\n') + '\n');
    await writeFile(join(dir, 'one.jsonl'), `${JSON.stringify({ text: Array.from({ length: 6 }, line).join('\n') })}\n`);
    // The split point in the blank lines that end a JSONL file, with a text file after it.
    await mkdir(join(dir, 'mixed'));
    await writeFile(join(dir, 'mixed', 'a.jsonl'), `${JSON.stringify({ text: line() })}\n${'\n'.repeat(3000)}`);
    await writeFile(join(dir, 'mixed', 'b.txt'), 'the text after it\n'.repeat(30));
    const mixed = await roundTrip(dir, join(dir, 'mixed'), { tokenizer: 'char', chunkBytes: 1000, valFraction: 0.1 });
    assert.ok(mixed.opened.val.length > 0, 'validation is not lost');
    mixed.opened.close();
    await rm(mixed.out, { recursive: true });
    // One line where a cut between letters would lowercase a final sigma differently, and a
    // whitespace-only stretch around the split point: the tokens stay exact.
    await writeFile(join(dir, 'sigma.txt'), 'ΑΣ.Β'.repeat(5000));
    await roundTrip(dir, join(dir, 'sigma.txt'), { tokenizer: 'char', clean: { lowercase: true }, chunkBytes: 1000, valFraction: 0.1 }).then(({ opened, out }) => (opened.close(), rm(out, { recursive: true })));
    await writeFile(join(dir, 'blank.txt'), `a${'\n'.repeat(12_000)}b`);
    await roundTrip(dir, join(dir, 'blank.txt'), { tokenizer: 'char', chunkBytes: 1000, valFraction: 0.1 }).then(({ opened, out }) => (opened.close(), rm(out, { recursive: true })));
    for (const data of ['books.txt', 'one.jsonl']) {
      for (const tokenizer of ['char', 'gpt2'] as const) {
        const { opened, out } = await roundTrip(dir, join(dir, data), { tokenizer, chunkBytes: 1000, valFraction: 0.1 });
        const share = opened.val.length / (opened.train.length + opened.val.length);
        assert.ok(share > 0.07 && share < 0.13, `${data}, ${tokenizer}: validation is ${(share * 100).toFixed(2)}% of the tokens`);
        opened.close();
        await rm(out, { recursive: true });
      }
    }
  });
});

test('a --val-data text beside shards is cleaned as the shards were (lowercase shards: an uppercase validation text is lowercased)', async () => {
  const { loadTrainingData } = await import('../src/train/train.js');
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'corpus.txt'), generateCorpus(3, 400).toLowerCase());
    await writeFile(join(dir, 'val.txt'), 'THE QUICK BROWN FOX\r\n');
    await prepareShards({ data: join(dir, 'corpus.txt'), out: join(dir, 'shards'), tokenizer: 'char', clean: { lowercase: true } });
    const loaded = await loadTrainingData({ data: join(dir, 'shards'), valData: join(dir, 'val.txt') });
    assert.deepEqual(readAll(loaded.val), loaded.tokenizer.encode('the quick brown fox\n'));
  });
});

test('page breaks (form feed, vertical tab, NEL) round-trip through the streaming cleaner as the in-memory cleaning makes them, at any chunk size', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'pages.txt');
    const r = rng(5);
    const pieces = ['word', ' ', '\n', '\f', '\u000b', '\u0085', '\r\n', '\n\n\n', 'é', '\u0007'];
    await writeFile(file, Array.from({ length: 4000 }, () => pieces[Math.floor(r() * pieces.length)]).join(''));
    for (const chunkBytes of [64, 97, 300]) {
      const sub = join(dir, `c${chunkBytes}`);
      await mkdir(sub);
      await roundTrip(sub, file, { tokenizer: 'char', chunkBytes, maxPendingChars: 256 });
      await roundTrip(join(sub, '..'), file, { tokenizer: 'char', chunkBytes, clean: { pageBreaks: false } });
    }
  });
});

test('uint32 shards (forced) round-trip and are marked version 2', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, generateCorpus(2, 800));
    const { out, summary } = await roundTrip(dir, file, { tokenizer: 'char', dtype: 'uint32' });
    assert.equal(summary.dtype, 'uint32');
    const bytes = await readFile(join(out, 'train_000000.bin'));
    const header = new Int32Array(bytes.buffer, bytes.byteOffset, 256);
    assert.deepEqual([header[0], header[1], header[2]], [SHARD_MAGIC, 2, 3000]);
    assert.equal(bytes.length, SHARD_HEADER_BYTES + 3000 * 4);
  });
});

test('a big-vocabulary tokenizer gets uint32 shards automatically', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, 'abc\nabd\n');
    // Ids above 65535: a char tokenizer over 70000 code points.
    const vocab = Array.from({ length: 70000 }, (_, i) => String.fromCodePoint(i < 0xd800 ? i : i + 0x800));
    const big: Tokenizer = buildCharTokenizer(vocab.join(''));
    const out = join(dir, 'big');
    const summary = await prepareShards({ data: file, out, tokenizer: big, valFraction: 0 });
    assert.equal(summary.dtype, 'uint32');
    const opened = await openShards(out);
    assert.deepEqual(readAll(opened.train), big.encode('abc\nabd\n'));
    assert.equal(opened.val.length, 0);
    opened.close();
  });
});

test('folder input: recursive, sorted, same files and separators as loadText', async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await mkdir(join(data, 'b', 'deeper'), { recursive: true });
    await mkdir(join(data, 'a'));
    await writeFile(join(data, 'b', 'deeper', 'z.txt'), generateCorpus(3, 300));
    await writeFile(join(data, 'a', 'one.md'), generateCorpus(4, 200) + '\n\n\n');
    await writeFile(join(data, 'a', 'empty.txt'), '');
    await writeFile(join(data, 'c.text'), '\n\ntrailing file\n');
    await writeFile(join(data, 'image.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0]));
    await writeFile(join(data, '.hidden.txt'), 'never read');
    await writeFile(join(data, 'docs.jsonl'), '{"text": "json one"}\n{"text": "json\\n\\n\\ntwo"}\n');
    const { cleaned } = await roundTrip(dir, data, { tokenizer: 'char' });
    assert.ok(!cleaned.includes('never read'));
  });
});

test('JSONL input: records joined with a blank line, --text-field, CRLF and blank lines', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    const r = rng(5);
    const lines: string[] = [];
    for (let i = 0; i < 400; i++) {
      if (r() < 0.1) lines.push('');
      lines.push(JSON.stringify({ id: i, body: generateCorpus(100 + i, 1 + Math.floor(r() * 5)) }));
    }
    await writeFile(file, lines.join(r() < 0.5 ? '\r\n' : '\n'));
    const { opened } = await roundTrip(dir, file, { tokenizer: 'char', textField: 'body', chunkBytes: 100 });
    assert.ok(opened.val.length > 0);
    await assertMinigptError(
      prepareShards({ data: file, out: join(dir, 'x'), tokenizer: 'char' }),
      new RegExp(`^${escapeRegExp(file)}:1: object has no "text" field`),
    );
  });
});

test('bpe (trained on a sample) and gpt2 shards equal encoding the whole cleaned text', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, generateCorpus(6, 1500));
    // Cuts fall before a newline that follows a non-blank character, where GPT-2's pre-tokenizer
    // splits anyway, so byte-level tokenization is exact too, not just character tokenization.
    const bpe = await roundTrip(dir, file, { tokenizer: 'bpe', bpeVocab: 320, bpeSampleBytes: 20_000, chunkBytes: 300 });
    assert.equal(bpe.opened.tokenizer.kind, 'bpe');
    assert.equal(bpe.opened.tokenizer.vocabSize, 320);
    await rm(bpe.out, { recursive: true });
    const gpt2 = await roundTrip(dir, file, { tokenizer: 'gpt2', chunkBytes: 300 });
    assert.equal(gpt2.summary.dtype, 'uint16');
    assert.equal(gpt2.opened.meta.vocab_size, 50257);
  });
});

test('documents: gpt2 and bpe shards put <|endoftext|> between documents (as training in memory does), char a blank line', async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await mkdir(data);
    // Files and JSONL records are documents; a record that cleans to nothing (only control
    // characters) adds no separator, a literal "<|endoftext|>" in a text stays text.
    await writeFile(join(data, 'a.txt'), generateCorpus(11, 60) + '\n\n\n');
    await writeFile(join(data, 'b.jsonl'), [
      JSON.stringify({ text: 'first record\n' }),
      JSON.stringify({ text: '\u0001\u0002' }),
      JSON.stringify({ text: '\n\nsecond <|endoftext|> record' }),
      JSON.stringify({ text: generateCorpus(12, 40) }),
    ].join('\n'));
    await writeFile(join(data, 'c.txt'), 'last file\n');
    const expectedDocuments = 4 + 1; // a.txt, three records with text, c.txt
    for (const tokenizer of ['gpt2', 'bpe'] as const) {
      // Chunks small enough that documents end mid-chunk and whole chunks hold several; the split
      // at several places, one of them at a document boundary.
      for (const [chunkBytes, valFraction] of [[64, 0.1], [300, 0.3], [4096, 0.5], [97, 0]] as const) {
        const sub = join(dir, `${tokenizer}-${chunkBytes}`);
        await mkdir(sub);
        const { opened, expected } = await roundTrip(sub, data, { tokenizer, chunkBytes, valFraction, ...(tokenizer === 'bpe' ? { bpeVocab: 300 } : {}) });
        const eot = opened.tokenizer.specialTokens!['<|endoftext|>']!;
        assert.equal(expected.filter((id) => id === eot).length, expectedDocuments - 1, `${tokenizer}: one <|endoftext|> between each two documents`);
        assert.equal(opened.meta.document_separator, '<|endoftext|>');
        if (valFraction === 0) assert.equal(opened.val.length, 0);
        opened.close();
      }
    }
    // Validation starting exactly at a document boundary: the first document is all training,
    // validation starts with the separator.
    const two = join(dir, 'two');
    await mkdir(two);
    await writeFile(join(two, 'a.txt'), 'x'.repeat(899) + '\n');
    await writeFile(join(two, 'b.txt'), 'y'.repeat(99) + '\n');
    for (const chunkBytes of [64, 100, 4096]) {
      const sub = join(dir, `two-${chunkBytes}`);
      await mkdir(sub);
      const { opened } = await roundTrip(sub, two, { tokenizer: 'gpt2', chunkBytes, valFraction: 0.1 });
      assert.deepEqual(readAll(opened.train), opened.tokenizer.encode('x'.repeat(899) + '\n'), `chunk ${chunkBytes}: the first file is the training part`);
      assert.equal(readAll(opened.val)[0], 50256, `chunk ${chunkBytes}: validation starts with <|endoftext|>`);
      opened.close();
    }
    const sub = join(dir, 'char');
    await mkdir(sub);
    const { opened, cleaned } = await roundTrip(sub, data, { tokenizer: 'char', chunkBytes: 64 });
    assert.equal(opened.meta.document_separator, '\n\n');
    assert.ok(cleaned.includes('first record\n\nsecond <|endoftext|> record'), 'char: documents joined by a blank line (runs of blank lines collapse)');
    opened.close();
  });
});

test('sp-bpe (Llama 2\'s layout): "<s>" before each document, the "▁" in front only at a document\'s start, the same tokens as in memory at any chunk size; a vocabulary with line-break pieces is refused', async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), generateCorpus(21, 80) + '\n\n\n');
    await writeFile(join(data, 'b.jsonl'), [
      JSON.stringify({ text: 'first record\r\nwith CRLF\r\n' }),
      JSON.stringify({ text: '\u0001\u0002' }),
      JSON.stringify({ text: '  second <s> record, 日本語 🙂\n  indented\n' }),
      JSON.stringify({ text: generateCorpus(22, 40) }),
    ].join('\n'));
    await writeFile(join(data, 'c.txt'), 'last file\n');
    const tok = spBpeFixtureTokenizer('llama-style');
    for (const [chunkBytes, valFraction] of [[64, 0.1], [300, 0.3], [4096, 0], [97, 0.5]] as const) {
      const sub = join(dir, `sp-${chunkBytes}`);
      await mkdir(sub);
      const { opened, expected } = await roundTrip(sub, data, { tokenizer: tok, chunkBytes, valFraction });
      assert.equal(opened.meta.document_separator, 'start-of-text');
      assert.equal(expected[0], 1);
      assert.equal(expected.filter((id) => id === 1).length, 5, 'one "<s>" before each of the five documents with text');
      opened.close();
    }
    await assert.rejects(prepareShards({ data, out: join(dir, 'refused'), tokenizer: spBpeFixtureTokenizer('metaspace-first') }),
      (e: unknown) => e instanceof MinigptError && /this sp-bpe tokenizer's line breaks are not byte tokens that no merge joins \(it has no byte fallback, line breaks as pieces, or merges of byte tokens\)/.test(e.message));
  });
});

/**
 * Text where Qwen2's and Llama 3's regexes join what GPT-2's splits: punctuation right before line
 * breaks (LF, CRLF, lone CR, runs of them), lines that start with punctuation, a space or a digit,
 * trailing whitespace, digit runs of every length and script, contractions.
 */
function punctuatedCorpus(seed: number, lines: number): string {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const words = ['the', 'Quick', 'fox', "it's", "WE'RE", 'über', 'cafe\u0301', '中文', '😀', 'Σίσυφος', '1234567', '42', '٣٤٥٦', '3.14', 'x2y', '—', '"q"', '(a)', 'ſ'];
  const ends = ['', '.', '!?', '...', ':', ';', ',', '—', '"', ')', ' .', '  ', ' ', '\t', '--'];
  const starts = ['', '', '', '- ', '# ', '  ', '\t', '...', '1. ', '"', '>> ', '日'];
  const eols = ['\n', '\n', '\n', '\r\n', '\n\n', '\r\n\r\n', '\r', '\n  \n', '\n\n\n\n'];
  let out = '';
  for (let i = 0; i < lines; i++) {
    const n = Math.floor(r() * 8);
    out += pick(starts) + Array.from({ length: n }, () => pick(words)).join(' ') + pick(ends) + pick(eols);
  }
  return out;
}

test('prepare\'s safe cuts are pre-token boundaries: after a line feed before a visible character for Qwen2\'s and Llama 3\'s regex, before a line break after one for GPT-2\'s', () => {
  const r = rng(5);
  const alphabet = ['a', 'Z', '1', '٣', '.', '!', "'", 's', 'ſ', ' ', '  ', '\t', '\n', '\r', '\r\n', '\u00a0', '\u0085', '\u2028', 'é', '\u0301', '😀', '日', '\u0007'];
  const visible = (c: string | undefined) => c !== undefined && !/[\p{White_Space}\p{Cc}]/u.test(c);
  const cases: [string, ByteLevelTokenizer, (t: string, p: number) => boolean][] = [
    ['qwen2', hfBpeFixtureTokenizer('qwen2-style') as ByteLevelTokenizer, (t, p) => t[p - 1] === '\n' && visible(t[p])],
    ['llama3', hfBpeFixtureTokenizer('llama3-style') as ByteLevelTokenizer, (t, p) => t[p - 1] === '\n' && visible(t[p])],
    ['gpt2', hfBpeFixtureTokenizer('gpt2-style') as ByteLevelTokenizer, (t, p) => (t[p] === '\n' || (t[p] === '\r' && t[p + 1] === '\n')) && visible(t[p - 1])],
    ['gpt2-digits', hfBpeFixtureTokenizer('smollm-style') as ByteLevelTokenizer, (t, p) => (t[p] === '\n' || (t[p] === '\r' && t[p + 1] === '\n')) && visible(t[p - 1])],
  ];
  for (const [name, tok, safe] of cases) {
    let cuts = 0;
    for (let i = 0; i < 3000; i++) {
      let t = '';
      for (let n = 2 + Math.floor(r() * 14); n > 0; n--) t += alphabet[Math.floor(r() * alphabet.length)];
      const whole = tok.pretokenize(t);
      for (let p = 1; p < t.length; p++) {
        if (!safe(t, p)) continue;
        cuts++;
        assert.deepEqual([...tok.pretokenize(t.slice(0, p)), ...tok.pretokenize(t.slice(p))], whole, `${name}: a cut at ${p} of ${JSON.stringify(t)}`);
      }
    }
    assert.ok(cuts > 1000, `${name}: ${cuts} cuts checked`);
  }
  // And the other rule is not safe for the other regexes.
  const qwen = hfBpeFixtureTokenizer('qwen2-style') as ByteLevelTokenizer, gpt2 = hfBpeFixtureTokenizer('gpt2-style') as ByteLevelTokenizer;
  assert.deepEqual(qwen.pretokenize('a.\nb'), ['a', '.\n', 'b']);
  assert.deepEqual(gpt2.pretokenize('a \nb'), ['a', ' ', '\n', 'b']);
  assert.deepEqual(gpt2.pretokenize('a \n'), ['a', ' \n']);
});

test('hf-bpe with Qwen2\'s and Llama 3\'s split (punctuation joins the line breaks after it): shards equal the in-memory encoding at any chunk size, cut after a line feed', async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), punctuatedCorpus(31, 400));
    await writeFile(join(data, 'b.jsonl'), [
      JSON.stringify({ text: 'record one.\r\n\r\nNext!\n' }),
      JSON.stringify({ text: punctuatedCorpus(32, 100) }),
    ].join('\n'));
    await writeFile(join(data, 'c.txt'), 'end.\n');
    for (const name of ['qwen2-style', 'llama3-style'] as const) {
      const tok = hfBpeFixtureTokenizer(name);
      // The cut rule prepare's other kinds use is not safe here: "end." and "\n" are one pre-token.
      assert.deepEqual((tok as ByteLevelTokenizer).pretokenize('end.\nNext'), ['end', '.\n', 'Next']);
      for (const [chunkBytes, valFraction, clean] of [[64, 0.1, {}], [97, 0.3, { newlines: false }], [300, 0.5, {}], [4096, 0.1, { newlines: false, collapseBlankLines: false }], [113, 0, { nfc: false }]] as const) {
        const sub = join(dir, `${name}-${chunkBytes}`);
        await mkdir(sub);
        const { opened } = await roundTrip(sub, data, { tokenizer: tok, chunkBytes, valFraction, clean });
        assert.equal(opened.tokenizer.toJSON().type, 'hf-bpe');
        opened.close();
      }
    }
    // One long line of plain added tokens (Qwen2.5's <tool_call>) and no safe cut: the relaxed cut
    // at the validation split must not land inside one.
    const line = join(dir, 'line');
    await mkdir(join(line, 'data'), { recursive: true });
    await writeFile(join(line, 'data', 'a.txt'), '<tool_call>ab</tool_call>'.repeat(2000));
    const qwen = hfBpeFixtureTokenizer('qwen2-style') as ByteLevelTokenizer;
    assert.deepEqual(qwen.pretokenize('x<tool_call>y'), ['x', '<tool_call>', 'y']);
    const { opened } = await roundTrip(line, join(line, 'data'), { tokenizer: qwen, chunkBytes: 4096, valFraction: 0.1, clean: { nfc: false } });
    opened.close();
  });
});

test('invalid UTF-8 is an error naming the file and the byte offset, even mid-stream', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'bad.txt');
    const good = Buffer.from('héllo wörld 😀\n'.repeat(100));
    await writeFile(file, Buffer.concat([good, Buffer.from([0x61, 0xff, 0x62]), good]));
    await assertMinigptError(
      prepareShards({ data: file, out: join(dir, 'out'), tokenizer: 'char', chunkBytes: 64 }),
      new RegExp(`^${escapeRegExp(file)}: invalid UTF-8 at byte ${good.length + 1} \\(line 101\\);`),
    );
    // A file that ends inside a character.
    await writeFile(file, Buffer.concat([good, Buffer.from([0xf0, 0x9f])]));
    await assertMinigptError(
      prepareShards({ data: file, out: join(dir, 'out'), tokenizer: 'char', chunkBytes: 64 }),
      new RegExp(`invalid UTF-8 at byte ${good.length} \\(line 101, the file ends inside a character\\)`),
    );
    assert.deepEqual(await readdir(dir), ['bad.txt'], 'no output or temporary folder is left behind');
  });
});

test('a file that shrinks or grows while prepare reads it is an error, not shards split by the old size', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'moving.txt');
    for (const change of ['shrink', 'grow'] as const) {
      await writeFile(file, 'the cat sat on the mat\n'.repeat(2000));
      let changed = false;
      await assertMinigptError(
        prepareShards({
          data: file, out: join(dir, 'out'), tokenizer: 'char', chunkBytes: 1024,
          onProgress: (p) => {
            if (changed || p.bytesRead === 0) return;
            changed = true;
            // Synchronous on purpose: the next read must see it.
            if (change === 'shrink') truncateSync(file, 5000);
            else appendFileSync(file, 'more text\n'.repeat(100));
          },
        }),
        new RegExp(`^${escapeRegExp(file)} changed while it was being read \\(46,000 bytes at the start, ${change === 'shrink' ? '5,000' : '4\\d,\\d{3}'} read\\)`),
      );
      assert.deepEqual(await readdir(dir), ['moving.txt'], 'no output or temporary folder is left behind');
    }
  });
});

test('invalid UTF-8 replaced (--invalid-utf8 replace): the same text and count as loadText, whatever the chunk size', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'mixed.txt');
    // Latin-1 bytes, a literal U+FFFD (EF BF BD: not a replacement), overlong and surrogate
    // sequences, a lone continuation byte, a 4-byte character cut short, multi-byte characters
    // that chunks of 16-23 bytes split at every offset.
    const line = Buffer.concat([Buffer.from('héllo wörld 😀 '), Buffer.from([0xe9, 0x20, 0xef, 0xbf, 0xbd, 0x20, 0xc0, 0xaf, 0x20, 0xed, 0xa0, 0x80, 0x20, 0x80, 0x20, 0xf0, 0x9f, 0x98, 0x0a])]);
    await writeFile(file, Buffer.concat(Array.from({ length: 30 }, () => line)));
    const fromLoadText: string[] = [];
    await loadText(file, { invalidUtf8: 'replace', onWarning: (m) => fromLoadText.push(m) });
    for (const chunkBytes of [16, 17, 19, 23, 64]) {
      const warnings: string[] = [];
      await roundTrip(join(dir, `c${chunkBytes}`), file, { tokenizer: 'char', chunkBytes, invalidUtf8: 'replace', onWarning: (m) => warnings.push(m) });
      assert.deepEqual(warnings, fromLoadText, `chunkBytes ${chunkBytes}: the warning (count and first offset) equals loadText's`);
    }
    // Per line: é 1, C0 AF 2, ED A0 80 3, 80 1, F0 9F 98 1 (the literal U+FFFD is not one); 30 lines.
    assert.match(fromLoadText[0]!, /replaced 240 invalid UTF-8 sequences with U\+FFFD \(first at byte 19\)/);
 
    // The only bad bytes end the file (a character cut short there): the offset is where it begins.
    const cut = join(dir, 'cut.txt');
    await writeFile(cut, Buffer.concat([Buffer.from('ends in '), Buffer.from([0xe2, 0x82])]));
    const atEnd: string[] = [], streamed: string[] = [];
    await loadText(cut, { invalidUtf8: 'replace', onWarning: (m) => atEnd.push(m) });
    await prepareShards({ data: cut, out: join(dir, 'cut'), tokenizer: 'char', valFraction: 0, invalidUtf8: 'replace', onWarning: (m) => streamed.push(m) });
    assert.deepEqual(streamed, atEnd);
    assert.match(atEnd[0]!, /\(first at byte 8\)/);
  });
});

async function preparedDir(dir: string): Promise<string> {
  const file = join(dir, 'corpus.txt');
  await writeFile(file, generateCorpus(9, 600));
  const out = join(dir, 'shards');
  await prepareShards({ data: file, out, tokenizer: 'char', shardTokens: 2000 });
  return out;
}

test('openShards rejects truncated, damaged and missing shards, naming the file', async () => {
  await withTempDir(async (dir) => {
    const out = await preparedDir(dir);
    const shard = join(out, 'train_000001.bin');
    const original = await readFile(shard);

    await truncate(shard, original.length - 3);
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: `), /truncated/, /run prepareShards again to rebuild it/);

    await writeFile(shard, original.subarray(0, 100));
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: `), /truncated/);

    const badMagic = Buffer.from(original);
    badMagic.writeInt32LE(12345, 0);
    await writeFile(shard, badMagic);
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: not a token shard \\(magic number 12345`));

    const badVersion = Buffer.from(original);
    badVersion.writeInt32LE(7, 4);
    await writeFile(shard, badVersion);
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: unknown shard version 7`));

    const badToken = Buffer.from(original);
    badToken.writeUInt16LE(65535, SHARD_HEADER_BYTES + 2 * 5);
    await writeFile(shard, badToken);
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: token 5 is 65535, outside the vocabulary`));

    await unlink(shard);
    await assertMinigptError(openShards(out), new RegExp(`^${escapeRegExp(shard)}: shard file is missing`), /run prepareShards again to rebuild it/);

    await writeFile(shard, original);
    (await openShards(out)).close();
  });
});

test('openShards rejects a malformed or unknown meta.json, naming it', async () => {
  await withTempDir(async (dir) => {
    const out = await preparedDir(dir);
    const metaPath = join(out, 'meta.json');
    const meta = JSON.parse(await readFile(metaPath, 'utf8'));
    const m = new RegExp(`^${escapeRegExp(metaPath)}: `);
    const cases: [string, RegExp][] = [
      ['{ "format": ', /not valid JSON/],
      ['[]', /expected a JSON object, got an array/],
      [JSON.stringify({ ...meta, version: 2 }), /shards format version 2 is not one this minigpt reads/],
      [JSON.stringify({ ...meta, format: 'other' }), /not a minigpt shards meta file/],
      [JSON.stringify({ ...meta, dtype: 'int8' }), /"dtype" must be "uint16" or "uint32"/],
      [JSON.stringify({ ...meta, train: { ...meta.train, tokens: meta.train.tokens + 1 } }), /says \d+ train tokens but the shards hold/],
      [JSON.stringify({ ...meta, train: { ...meta.train, shards: ['../../etc/passwd'] } }), /expected names like train_000000\.bin/],
      [JSON.stringify({ ...meta, vocab_size: 3 }), /vocab_size is 3 but the tokenizer has/],
    ];
    for (const [text, pattern] of cases) {
      await writeFile(metaPath, text);
      await assertMinigptError(openShards(out), m, pattern);
    }
    await writeFile(metaPath, JSON.stringify({ ...meta, tokenizer: { type: 'nope' } }));
    await assertMinigptError(openShards(out), /meta\.json#tokenizer: unknown tokenizer type "nope"/);
    await unlink(metaPath);
    await assertMinigptError(openShards(out), /not a minigpt shards folder \(it has no meta\.json\)/);
  });
});

test('prepare refuses to overwrite a folder that is not a shards folder, and replaces a shards folder', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, 'one two three\nfour five\n');
    const notShards = join(dir, 'mine');
    await mkdir(notShards);
    await writeFile(join(notShards, 'notes.txt'), 'keep me');
    await assertMinigptError(prepareShards({ data: file, out: notShards, tokenizer: 'char' }), /is not a minigpt shards folder; refusing to overwrite it/);
    assert.equal(await readFile(join(notShards, 'notes.txt'), 'utf8'), 'keep me');
    await assertMinigptError(prepareShards({ data: file, out: file, tokenizer: 'char' }), /refusing to overwrite/);

    const out = join(dir, 'shards');
    await prepareShards({ data: file, out, tokenizer: 'char' });
    await writeFile(file, 'completely different\n');
    await prepareShards({ data: file, out, tokenizer: 'char', valFraction: 0 });
    const opened = await openShards(out);
    assert.equal(opened.tokenizer.decode(readAll(opened.train)), 'completely different\n');
    opened.close();
    assert.deepEqual((await readdir(dir)).sort(), ['corpus.txt', 'mine', 'shards'], 'no temporary folders left');

    // A shards folder that also holds files of the user's (here, the very corpus) is not replaced.
    await writeFile(join(out, 'corpus.txt'), 'my corpus\n');
    await mkdir(join(out, 'notes'));
    await assertMinigptError(prepareShards({ data: join(out, 'corpus.txt'), out, tokenizer: 'char' }), /is a shards folder, but it also holds corpus\.txt, notes, which prepare did not write; replacing the folder would lose them/);
    assert.equal(await readFile(join(out, 'corpus.txt'), 'utf8'), 'my corpus\n');
    assert.ok(await isShardDir(out));
  });
});

test('prepare errors: whitespace-only corpus, bpe without a size, empty training part', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'blank.txt');
    await writeFile(file, ' \n\n\t\n');
    await assertMinigptError(prepareShards({ data: file, out: join(dir, 'o'), tokenizer: 'char' }), /contains no text, only whitespace/);
    await writeFile(file, 'some text\n');
    await assertMinigptError(prepareShards({ data: file, out: join(dir, 'o'), tokenizer: 'bpe' }), /needs a vocabulary size/);
    await assertMinigptError(prepareShards({ data: join(dir, 'nope.txt'), out: join(dir, 'o'), tokenizer: 'char' }), /no such file or folder/);
  });
});

test('the prepare command writes shards and prints a summary', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, generateCorpus(11, 300));
    const out = join(dir, 'shards');
    const logged: string[] = [];
    const log = console.log;
    console.log = (line: string) => logged.push(line);
    const fh = await open(join(dir, 'stderr.txt'), 'w');
    try {
      await prepareCommand.run(
        { data: file, tokenizer: 'char', out, 'text-field': 'text', 'shard-tokens': 1000, 'val-fraction': 0.1 },
        [],
      );
    } finally {
      console.log = log;
      await fh.close();
    }
    assert.match(logged.join('\n'), /^wrote .*shards: [\d,]+ train \+ [\d,]+ val tokens in \d+ shards \(char tokenizer/);
    assert.ok(await isShardDir(out));
    await assertMinigptError(prepareCommand.run({ data: file, tokenizer: 'bpe', out, 'val-fraction': 0.1 }, []), /needs --bpe-vocab/);
    // Shards where text is wanted: said so (it called their valid meta.json invalid); as --tokenizer, theirs.
    await assertMinigptError(prepareCommand.run({ data: out, tokenizer: 'char', out: join(dir, 'again'), 'val-fraction': 0.1 }, []),
      /is a shards folder from minigpt prepare \(token ids, not text\); this needs the text itself/);
    const { loadTokenizer } = await import('../src/cli/commands/tokenizer.js');
    const opened = await openShards(out);
    assert.deepEqual((await loadTokenizer(out)).toJSON(), opened.tokenizer.toJSON());
    opened.close();
  });
});
