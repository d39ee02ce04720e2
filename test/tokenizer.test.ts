import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MinigptError } from '../src/errors.js';
import {
  buildCharTokenizer,
  charTokenizerFromVocab,
  createStreamingDecoder,
  makeTokenizer,
  tokenByteLengths,
  tokenizerDifference,
  tokenizerFromJson,
  type CharTokenizerJson,
} from '../src/data/tokenizer.js';

/** Asserts that `fn` throws a one-line MinigptError whose message matches every pattern. */
function assertMinigptError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MinigptError, `expected a MinigptError, got ${String(err)}`);
    for (const pattern of patterns) assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'message is one line');
    return true;
  });
}

// ---- building and encoding ----

test('buildCharTokenizer makes one token per distinct character, in code-point order', () => {
  const tok = buildCharTokenizer('hello world');
  assert.equal(tok.kind, 'char');
  assert.equal(tok.vocabSize, 8);
  assert.deepEqual((tok.toJSON() as CharTokenizerJson).vocab, [' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']);
  assert.deepEqual([...tok.encode('hello')], [3, 2, 4, 4, 5]);
});

test('buildCharTokenizer gives the same ids whatever order the characters first appear in', () => {
  assert.deepEqual(buildCharTokenizer('cab').toJSON(), buildCharTokenizer('abcabc').toJSON());
});

test('a char tokenizer round-trips text with accents, CJK and emoji', () => {
  const text = 'Héllo, 世界! 😀👍🏽 naïve\n\ttab — ∑ 𝔘';
  const tok = buildCharTokenizer(text);
  assert.equal(tok.decode(tok.encode(text)), text);
});

test('a char tokenizer makes an emoji outside the BMP one token, not two UTF-16 halves', () => {
  const tok = buildCharTokenizer('a😀b');
  assert.equal(tok.vocabSize, 3);
  assert.equal(tok.encode('😀😀').length, 2);
  assert.deepEqual((tok.toJSON() as CharTokenizerJson).vocab, ['a', 'b', '😀']);
});

test('decodeToken decodes one id at a time to the same text as decode', () => {
  const text = '中文 😀 ok';
  const tok = buildCharTokenizer(text);
  const ids = tok.encode(text);
  assert.equal([...ids].map((id) => tok.decodeToken!(id)).join(''), tok.decode(ids));
});

test('encoding an unknown character names it, its code point, line and column', () => {
  const tok = buildCharTokenizer('abc\ndef\nghi ');
  assertMinigptError(
    () => tok.encode('abc\ndef\ngh é'),
    /character "é" \(U\+00E9\) at line 3, column 4 \(character 12 of the text\)/,
    /vocabulary \(its 11 characters\)/,
  );
});

test('encoding an unknown character counts columns in code points, so an emoji before it is one column', () => {
  const tok = buildCharTokenizer('a😀');
  assertMinigptError(() => tok.encode('😀😀a!'), /character "!" \(U\+0021\) at line 1, column 4 \(character 4 of the text\)/);
});

test('encoding an unknown invisible character shows it JSON-escaped', () => {
  const tok = buildCharTokenizer('ab');
  assertMinigptError(() => tok.encode('a\u0001'), /character "\\u0001" \(U\+0001\) at line 1, column 2/);
});

test('encoding an unknown emoji names the whole emoji and its full code point', () => {
  const tok = buildCharTokenizer('ab');
  assertMinigptError(() => tok.encode('a🦄'), /character "🦄" \(U\+1F984\)/);
});

test('with an unknown-character token, unknown characters encode to its id, which is the last', () => {
  const tok = buildCharTokenizer('abc', { unk: '?' });
  assert.equal(tok.vocabSize, 4);
  assert.deepEqual([...tok.encode('aéz😀c')], [0, 3, 3, 3, 2]);
  assert.equal(tok.decode(tok.encode('aéc')), 'a?c');
});

test('an unknown-character token that appears in the text is still only the last id', () => {
  const tok = buildCharTokenizer('a?b', { unk: '?' });
  assert.deepEqual(tok.toJSON(), { type: 'char', vocab: ['a', 'b'], unk: '?' });
  assert.deepEqual([...tok.encode('?a')], [2, 0]);
});

test('buildCharTokenizer rejects an unknown-character token that is not one character', () => {
  assertMinigptError(() => buildCharTokenizer('abc', { unk: '<unk>' }), /unknown-character token "<unk>" has 5 characters \(U\+003C U\+0075 U\+006E U\+006B U\+003E\)/);
  assertMinigptError(() => buildCharTokenizer('abc', { unk: '' }), /is empty/);
});

test('buildCharTokenizer rejects empty text', () => {
  assertMinigptError(() => buildCharTokenizer(''), /empty text/);
});

test('encoding empty text gives no tokens', () => {
  assert.equal(buildCharTokenizer('ab').encode('').length, 0);
});

// ---- decoding ----

test('decoding an id outside the vocabulary is an error naming the id and its position', () => {
  const tok = buildCharTokenizer('abc');
  assertMinigptError(() => tok.decode([0, 1, 3]), /token id 3 at position 2 is out of range/, /0 to 2/);
  assertMinigptError(() => tok.decode([-1]), /token id -1/);
  assertMinigptError(() => tok.decode([0.5]), /token id 0.5/);
  assertMinigptError(() => tok.decodeToken!(7), /token id 7 is out of range/);
});

test('decode accepts any array-like of ids, including Int32Array', () => {
  const tok = buildCharTokenizer('abc');
  assert.equal(tok.decode(new Int32Array([2, 1, 0])), 'cba');
  assert.equal(tok.decode([2, 1, 0]), 'cba');
});

// ---- JSON ----

test('toJSON then tokenizerFromJson gives a tokenizer that encodes and decodes identically', () => {
  const text = 'Hello 世界 😀\n';
  const original = buildCharTokenizer(text, { unk: '\uFFFD' });
  const restored = tokenizerFromJson(JSON.parse(JSON.stringify(original)), 'tokenizer.json');
  assert.deepEqual(restored.toJSON(), original.toJSON());
  assert.equal(restored.vocabSize, original.vocabSize);
  assert.deepEqual(restored.encode('Hello ünknown'), original.encode('Hello ünknown'));
  assert.equal(restored.decode(original.encode(text)), text);
});

test('toJSON of a tokenizer without an unknown-character token has "unk": null', () => {
  assert.deepEqual(buildCharTokenizer('ba').toJSON(), { type: 'char', vocab: ['a', 'b'], unk: null });
});

test('charTokenizerFromVocab uses array positions as ids', () => {
  const tok = charTokenizerFromVocab(['z', 'a', '😀'], '?');
  assert.deepEqual([...tok.encode('a😀zq')], [1, 2, 0, 3]);
});

test('charTokenizerFromVocab rejects a repeated character', () => {
  assertMinigptError(() => charTokenizerFromVocab(['a', 'b', 'a']), /vocab\[2\] "a" repeats vocab\[0\]/);
});

test('tokenizerFromJson treats a missing "unk" as none', () => {
  const tok = tokenizerFromJson({ type: 'char', vocab: ['a'] }, 't.json');
  assert.equal(tok.vocabSize, 1);
  assertMinigptError(() => tok.encode('b'), /not in the tokenizer's vocabulary/);
});

// ---- the end-of-text special token ----

test('makeTokenizer("char") adds <|endoftext|> as the last id; the characters keep their ids', () => {
  const plain = buildCharTokenizer('hello world');
  const tok = makeTokenizer('char', 'hello world');
  assert.equal(tok.vocabSize, plain.vocabSize + 1);
  assert.deepEqual(tok.specialTokens, { '<|endoftext|>': plain.vocabSize });
  assert.equal(plain.specialTokens, undefined);
  assert.deepEqual(tok.encode('hello world'), plain.encode('hello world'));
  assert.deepEqual(tok.toJSON(), { ...plain.toJSON(), special: { '<|endoftext|>': plain.vocabSize } });
  // After the unknown-character token.
  const withUnk = makeTokenizer('char', 'ab', { unk: '?' });
  assert.deepEqual(withUnk.toJSON(), { type: 'char', vocab: ['a', 'b'], unk: '?', special: { '<|endoftext|>': 3 } });
  assert.deepEqual([...withUnk.encode('abz')], [0, 1, 2]);
  assert.deepEqual(makeTokenizer('char', 'ab', { endOfText: false }).toJSON(), { type: 'char', vocab: ['a', 'b'], unk: null });
  assert.deepEqual(buildCharTokenizer('ab', { endOfText: true }).toJSON(), { type: 'char', vocab: ['a', 'b'], unk: null, special: { '<|endoftext|>': 2 } });
});

test('<|endoftext|> text encodes as its characters unless allowedSpecial names it (as BPE); its id decodes to its text', () => {
  const tok = makeTokenizer('char', 'ab <|endoftx>');
  const eot = tok.specialTokens!['<|endoftext|>']!;
  const text = 'a<|endoftext|>b';
  const ordinary = tok.encode(text);
  assert.equal(ordinary.length, [...text].length);
  assert.ok(!ordinary.includes(eot));
  const special = tok.encode(text, { allowedSpecial: 'all' });
  assert.deepEqual([...special], [tok.encode('a')[0], eot, tok.encode('b')[0]]);
  assert.deepEqual(tok.encode(text, { allowedSpecial: ['<|endoftext|>'] }), special);
  assert.deepEqual([...tok.encode('<|endoftext|><|endoftext|>', { allowedSpecial: 'all' })], [eot, eot]);
  assert.equal(tok.decode(special), text);
  assert.equal(tok.decode(ordinary), text);
  assert.equal(tok.decodeToken!(eot), '<|endoftext|>');
  const stream = createStreamingDecoder(tok);
  assert.equal([...special].map((id) => stream.push(id)).join(''), text);
  assertMinigptError(() => tok.encode(text, { allowedSpecial: ['<|x|>'] }), /"<\|x\|>" is not a special token of this char tokenizer; its special tokens are "<\|endoftext\|>"/);
  assertMinigptError(() => buildCharTokenizer('ab').encode('a', { allowedSpecial: ['<|endoftext|>'] }), /its special tokens are none/);
  assert.deepEqual([...buildCharTokenizer('ab').encode('ab', { allowedSpecial: 'all' })], [0, 1]);
});

test('char tokenizer JSON: "special" round-trips; JSON without it (older checkpoints) loads exactly as before', () => {
  const tok = makeTokenizer('char', 'Hello 世界 😀\n', { unk: '\uFFFD' });
  const back = tokenizerFromJson(JSON.parse(JSON.stringify(tok.toJSON())), 't.json');
  assert.deepEqual(back.toJSON(), tok.toJSON());
  assert.deepEqual(back.specialTokens, tok.specialTokens);
  assert.deepEqual(back.encode('Hello ü<|endoftext|>', { allowedSpecial: 'all' }), tok.encode('Hello ü<|endoftext|>', { allowedSpecial: 'all' }));
  const old = tokenizerFromJson({ type: 'char', vocab: ['\n', 'a', 'b'], unk: null }, 't.json');
  assert.equal(old.vocabSize, 3);
  assert.equal(old.specialTokens, undefined);
  assert.deepEqual(old.toJSON(), { type: 'char', vocab: ['\n', 'a', 'b'], unk: null });
  assert.deepEqual([...old.encode('ba\n')], [2, 1, 0]);
  assert.deepEqual(charTokenizerFromVocab(['a', 'b'], '?', ['<|endoftext|>']).toJSON(), makeTokenizer('char', 'ab', { unk: '?' }).toJSON());
});

const MALFORMED: Array<[description: string, json: unknown, message: RegExp]> = [
  ['null', null, /^t\.json: tokenizer must be a JSON object with a "type" field, got null/],
  ['an array', [], /got an array/],
  ['a string', 'char', /got string "char"/],
  ['no type', { vocab: ['a'] }, /^t\.json: tokenizer has no "type" string/],
  ['a numeric type', { type: 3, vocab: ['a'] }, /has no "type" string/],
  ['an unknown type', { type: 'wordpiece' }, /^t\.json: unknown tokenizer type "wordpiece"; expected "char", "gpt2", "bpe", "hf-bpe" or "sp-bpe"/],
  ['no vocab', { type: 'char' }, /^t\.json: char tokenizer "vocab" must be an array of single characters, got nothing/],
  ['a string vocab', { type: 'char', vocab: 'abc' }, /"vocab" must be an array of single characters, got string "abc"/],
  ['an empty vocab', { type: 'char', vocab: [] }, /"vocab" is empty/],
  ['a non-string entry', { type: 'char', vocab: ['a', 98] }, /vocab\[1\] must be a string, got number 98/],
  ['a multi-character entry', { type: 'char', vocab: ['a', 'bc'] }, /vocab\[1\] "bc" has 2 characters \(U\+0062 U\+0063\); it must be exactly one/],
  ['an empty entry', { type: 'char', vocab: ['a', ''] }, /vocab\[1\] "" is empty/],
  ['a decomposed accent', { type: 'char', vocab: ['e\u0301'] }, /vocab\[0\] "e\u0301" has 2 characters \(U\+0065 U\+0301\)/],
  ['a duplicate entry', { type: 'char', vocab: ['😀', 'a', '😀'] }, /vocab\[2\] "😀" repeats vocab\[0\]/],
  ['a numeric unk', { type: 'char', vocab: ['a'], unk: 0 }, /"unk" must be a single character or null, got number 0/],
  ['a multi-character unk', { type: 'char', vocab: ['a'], unk: '<unk>' }, /"unk" "<unk>" has 5 characters/],
  ['an unk also in vocab', { type: 'char', vocab: ['a', '?'], unk: '?' }, /"unk" "\?" is also vocab\[1\]/],
  ['an array "special"', { type: 'char', vocab: ['a'], special: ['<|endoftext|>'] }, /"special" must be an object of special token text -> id, got an array/],
  ['a special id in the vocab', { type: 'char', vocab: ['a', 'b'], special: { '<|endoftext|>': 1 } }, /special token "<\|endoftext\|>" has id number 1; special ids must be the whole numbers 2 to 2/],
  ['a special id on the unk token', { type: 'char', vocab: ['a'], unk: '?', special: { '<|endoftext|>': 1 } }, /has id number 1; special ids must be the whole numbers 2 to 2/],
  ['two specials with one id', { type: 'char', vocab: ['a'], special: { '<|a|>': 1, '<|b|>': 1 } }, /special token "<\|b\|>" has id number 1; special ids must be the whole numbers 1 to 2, each once/],
  ['an empty special', { type: 'char', vocab: ['a'], special: { '': 1 } }, /special token with empty text/],
  ['a special that is a character', { type: 'char', vocab: ['a'], special: { a: 1 } }, /special token "a" is also an ordinary character/],
];

for (const [description, json, message] of MALFORMED) {
  test(`tokenizerFromJson rejects ${description}, naming the source`, () => {
    assertMinigptError(() => tokenizerFromJson(json, 't.json'), /t\.json: /, message);
  });
}

test('tokenizerFromJson rejects an unknown tokenizer type, naming the source', () => {
  assertMinigptError(() => tokenizerFromJson({ type: 'wordpiece' }, 'ckpt/tokenizer.json'), /^ckpt\/tokenizer\.json: /);
});

test('tokenizerDifference says what differs where the descriptions are the same', () => {
  const abc = buildCharTokenizer('abcx'), abd = buildCharTokenizer('abdx');
  assert.equal(tokenizerDifference(abc, abd, 'the shards', 'the checkpoint'), 'other characters: "c" only in the shards; "d" only in the checkpoint');
  assert.equal(tokenizerDifference(abc, buildCharTokenizer('abcxyz'), 'a', 'b'), '', 'the sizes already differ');
  assert.equal(tokenizerDifference(abc, buildCharTokenizer('xcba'), 'a', 'b'), '', 'the same tokenizer');
  const many = buildCharTokenizer('abcdefgh'), other = buildCharTokenizer('ijklmnop');
  assert.equal(tokenizerDifference(many, other, 'a', 'b'), 'other characters: "a", "b", "c", "d", "e", and 3 more only in a; "i", "j", "k", "l", "m", and 3 more only in b');
});

test('tokenByteLengths: the bytes of the tokens of a text add up to its UTF-8 bytes, for every kind; special tokens stand for none', () => {
  const text = 'Héllo wörld 😀 日本語 -- the end.\n';
  const bytes = new TextEncoder().encode(text).length;
  for (const tokenizer of [makeTokenizer('char', text), makeTokenizer('gpt2', ''), makeTokenizer('bpe', text.repeat(20), { vocabSize: 280 })]) {
    const lengths = tokenByteLengths(tokenizer);
    assert.equal(lengths.length, tokenizer.vocabSize);
    const ids = tokenizer.encode(text);
    assert.equal(ids.reduce((sum, id) => sum + lengths[id]!, 0), bytes, tokenizer.kind);
    const eot = tokenizer.specialTokens!['<|endoftext|>']!;
    assert.equal(lengths[eot], 0, `${tokenizer.kind}: <|endoftext|> stands for no text`);
  }
});
