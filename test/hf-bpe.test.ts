/**
 * hf-bpe: byte-level BPE tokenizers as Hugging Face models have them (special tokens first, digits
 * one by one, ids in any order, ignore_merges), read from tokenizer.json. The committed fixture
 * (scripts/make-hf-tokenizers.py) holds two tokenizers the `tokenizers` library trained and the
 * ids it gives; with the Python venv, random text is checked against the library itself too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanFromHfNormalizer, exportHf, hfCleaningNormalizer, hfTokenizerJson, readHfModel, tokenizerFromHfJson } from '../src/io/hf.js';
import { recordedClean } from '../src/io/checkpoint.js';
import { cleanText } from '../src/data/text.js';
import type { ByteLevelTokenizer } from '../src/data/bpe.js';
import { tokensOnlyWholeWordsReach, type HfBpeTokenizerJson } from '../src/data/hf-bpe.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { ggufTokenizerMetadata } from '../src/io/gguf.js';
import { createStreamingDecoder, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { MinigptError } from '../src/errors.js';
import { assertLibraryIds, libraryPretokens, randomJoins, tokenizersPython } from './support/tokenizers-library.js';
import { bytesToByteLevel } from '../src/data/byte-level.js';
import { HF_BPE_FIXTURE, HF_BPE_SPLIT_FIXTURE, hfBpeFixtureTokenizer } from './support/hf-bpe-fixture.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURE = HF_BPE_FIXTURE;
const NAMES = Object.keys(FIXTURE) as (keyof typeof FIXTURE)[];
const fixtureTokenizer = hfBpeFixtureTokenizer;

test('hf-bpe gives the tokenizers library\'s ids and decodes them back (both fixture tokenizers)', () => {
  assert.deepEqual(NAMES, ['smollm-style', 'gpt2-style']);
  for (const name of NAMES) {
    const tok = fixtureTokenizer(name);
    assert.equal(tok.kind, 'hf-bpe', name);
    const { texts, ids } = FIXTURE[name]!;
    for (let i = 0; i < texts.length; i++) {
      const ours = Array.from(tok.encode(texts[i]!, { allowedSpecial: 'all' }));
      assert.deepEqual(ours, ids[i], `${name}: ids of ${JSON.stringify(texts[i]!.slice(0, 60))}`);
      assert.equal(tok.decode(ours), texts[i], `${name}: decode`);
    }
  }
});

test('hf-bpe survives its own JSON and an HF export -> import round trip; streams multibyte tokens whole', () => {
  for (const name of NAMES) {
    const tok = fixtureTokenizer(name);
    const json = tok.toJSON();
    const again = tokenizerFromJson(JSON.parse(JSON.stringify(json)), 'again');
    assert.deepEqual(again.toJSON(), json, `${name}: JSON round trip`);
    const exported = JSON.parse(hfTokenizerJson(tok));
    const back = tokenizerFromHfJson(exported, 'exported');
    assert.equal(back.kind, 'hf-bpe');
    assert.deepEqual(back.toJSON(), json, `${name}: tokenizer.json round trip`);
    assert.equal(hfTokenizerJson(back), hfTokenizerJson(tok), `${name}: the export is byte-stable`);
    // Special tokens keep their ids, wherever they are (smollm-style: 0-2).
    for (const [text, id] of Object.entries(tok.specialTokens ?? {})) {
      assert.deepEqual(Array.from(tok.encode(text, { allowedSpecial: 'all' })), [id]);
      assert.notDeepEqual(Array.from(tok.encode(text)), [id], 'special text is ordinary text by default');
    }
    const text = 'emoji 🙂👍🏽 naïve 日本語 <|endoftext|> 12 345';
    const ids = tok.encode(text);
    const stream = createStreamingDecoder(tok);
    let out = '';
    for (const id of ids) out += stream.push(id);
    assert.equal(out + stream.flush(), text, `${name}: streamed decode`);
  }
  assert.equal(FIXTURE['smollm-style']!.tokenizer['added_tokens'] instanceof Array, true);
  assert.deepEqual(fixtureTokenizer('smollm-style').specialTokens, { '<|endoftext|>': 0, '<|im_start|>': 1, '<|im_end|>': 2 });
});

test('hf-bpe refuses broken JSON and unsupported tokenizer.json with one-line reasons', () => {
  const base = fixtureTokenizer('smollm-style').toJSON() as unknown as Record<string, unknown>;
  const vocab = base['vocab'] as string[];
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['unknown field', { ...base, extra: 1 }, /unknown field "extra"/],
    ['pretokenizer', { ...base, pretokenizer: 'llama4' }, /"pretokenizer" must be "gpt2", "gpt2-digits", "qwen2" or "llama3", got string "llama4"/],
    ['missing byte', { ...base, vocab: vocab.map((v) => (v === 'Ġ' ? 'ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ' : v)) }, /has no token for byte 32 \(0x20\)/],
    ['duplicate', { ...base, vocab: [...vocab.slice(0, -1), vocab[5]] }, /repeats vocab\[5\]/],
    ['merge', { ...base, merges: ['Ġ zzzz'] }, /merges\[0\] string "Ġ zzzz" must be two tokens of the vocabulary/],
    ['special id', { ...base, special: { '<|endoftext|>': 5 } }, /special token "<\|endoftext\|>" has id 5, where the vocabulary holds/],
    ['not byte-level', { ...base, special: {}, }, /vocab\[0\] "<\|endoftext\|>" is not a byte-level string/],
  ];
  // "<" "|" are byte-level characters, so "<|endoftext|>" decodes as bytes: make an entry that does not.
  cases[cases.length - 1]![1] = { ...base, special: {}, vocab: ['<|endoftext|>\u2603', ...vocab.slice(1)] };
  cases[cases.length - 1]![2] = /vocab\[0\] "<\|endoftext\|>☃" is not a byte-level string/;
  for (const [name, json, re] of cases) {
    assert.throws(() => tokenizerFromJson(json, 'tok.json'), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'), name);
  }
  const hf = FIXTURE['smollm-style']!.tokenizer;
  // Llama 3's split with digits in runs of up to two: no regex minigpt has.
  const llama3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
  const hfCases: [string, Record<string, unknown>, RegExp][] = [
    ['other split', { ...hf, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: llama3 }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] } },
      /the pre-tokenizer is not GPT-2's byte-level one, nor digits one by one and then GPT-2's, nor Qwen2's or Llama 3's split/],
    ['digit runs', { ...hf, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: false }, { type: 'ByteLevel', use_regex: true }] } }, /the pre-tokenizer is not GPT-2's/],
    ['prefix space', { ...hf, pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, use_regex: true } }, /the pre-tokenizer is not GPT-2's/],
    ['decoder', { ...hf, decoder: { type: 'Metaspace' } }, /the decoder is Metaspace, not ByteLevel/],
    // Byte fallback is SentencePiece's (sp-bpe), whose layout this is not.
    ['byte fallback', { ...hf, model: { ...(hf['model'] as object), byte_fallback: true } }, /a SentencePiece-style BPE .* are neither Llama 2's legacy layout \(Prepend and Replace\) nor a Metaspace pre-tokenizer/],
    ['gap', withoutVocabId(hf, 300), /must be 0 to 698 without gaps \(found id 699\)/],
    // The library numbers <|endoftext|> after the 600 entries left: 600, which "Ġzqxj" has.
    ['clash', withoutVocabId(FIXTURE['gpt2-style'].tokenizer, 300), /added token "<\|endoftext\|>" gets id 600 from the tokenizers library, which the vocabulary gives "Ġzqxj"/],
  ];
  for (const [name, json, re] of hfCases) {
    assert.throws(() => tokenizerFromHfJson(json, 'tokenizer.json'), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'), name);
  }
});

/** A tokenizer.json without the vocabulary entry of `id`. */
function withoutVocabId(json: Record<string, unknown>, id: number): Record<string, unknown> {
  const model = json['model'] as { vocab: Record<string, number> };
  return { ...json, model: { ...model, vocab: Object.fromEntries(Object.entries(model.vocab).filter(([, i]) => i !== id)) } };
}

const py = tokenizersPython;

/** Random text from pieces where pre-tokenizers and merges disagree easily. */
function randomTexts(count: number, seed: number): string[] {
  const pieces = ['the', ' the', 'The', 'ing', ' and', 'a', 'zqxj', ' zqxj', '0', '12', '345', '٣', '½', 'Ⅻ', '²', '𝟙', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n',
    '\u00a0', '\u2028', '\u0085', '\u3000', '\ufeff', "'s", "'S", "'ll", "'", '.', ',', '!?', '...', '—', '(', ')', '"', 'é', 'e\u0301', 'ß', '日本', '語', '한', '🙂', '👍🏽', '🇫🇷',
    '<|endoftext|>', '<|im_start|>', '<|', '|>', 'x', 'Straße', 'naïve', 'café', '\u0000', '\u001b',
    // Pre-tokens over 64 bytes (merged with a heap).
    'the'.repeat(30), ' '.repeat(70), 'ing'.repeat(25)];
  return randomJoins(pieces, count, 40, seed);
}

test('hf-bpe against the tokenizers library on 400 random texts, its tokenizer.json and minigpt\'s export of it (4 tokenizers)', { skip: py.skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-hf-bpe-'));
  const texts = randomTexts(400, 11);
  // The fixtures, and two with added tokens outside the vocabulary (renumbered by the library; one a whole word's text).
  const files: [string, Record<string, unknown>][] = [
    ...NAMES.map((name): [string, Record<string, unknown>] => [name, FIXTURE[name].tokenizer]),
    ['gpt2-style + <sep>', editedGpt2Style((j) => { delete j.model.vocab['Ġzqxj']; j.added_tokens.push(addedToken(600, '<sep>')); })],
    ['gpt2-style + Ġzork', editedGpt2Style((j) => j.added_tokens.push(addedToken(602, 'Ġzork')))],
  ];
  texts.push(' zork zqxj<sep>', 'Ġzork');
  await assertLibraryIds(dir, files, texts);
});

/** The gpt2-style fixture's tokenizer.json, edited. */
function editedGpt2Style(edit: (json: { model: { vocab: Record<string, number> }; added_tokens: Record<string, unknown>[] } & Record<string, unknown>) => void): Record<string, unknown> {
  const json = structuredClone(FIXTURE['gpt2-style'].tokenizer) as Parameters<typeof edit>[0];
  edit(json);
  return json;
}
const addedToken = (id: number, content: string, extra: object = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...extra });

test('added tokens get the ids the tokenizers library gives them (not the file\'s "id"), and only those in the BPE vocabulary are whole words', () => {
  // <sep> listed with id 600 after <|endoftext|> (601): the library numbers tokens outside the
  // vocabulary after it in list order, so <|endoftext|> is 600 and <sep> 601.
  const renumbered = editedGpt2Style((j) => {
    delete j.model.vocab['Ġzqxj'];
    j.added_tokens.push(addedToken(600, '<sep>'));
  });
  const tok = tokenizerFromHfJson(renumbered, 'renumbered.json');
  assert.deepEqual(tok.specialTokens, { '<|endoftext|>': 600, '<sep>': 601 });
  // A special token only added_tokens holds is no whole word for ignore_merges, even when its text is one.
  const zork = editedGpt2Style((j) => j.added_tokens.push(addedToken(602, 'Ġzork')));
  const z = tokenizerFromHfJson(zork, 'zork.json');
  assert.equal(z.specialTokens?.['Ġzork'], 602);
  assert.deepEqual((z.toJSON() as unknown as { addedOnly: number[] }).addedOnly, [601, 602]);
  assert.ok(!Array.from(z.encode(' zork')).includes(602), 'ordinary text never becomes an added-only special token');
  assert.deepEqual(Array.from(z.encode(' zqxj')), [600], 'a vocabulary token still is a whole word');
  // The export keeps it out of model.vocab, so transformers does the same; the round trip is stable.
  const exported = JSON.parse(hfTokenizerJson(z));
  assert.equal('Ġzork' in exported.model.vocab, false);
  assert.deepEqual(tokenizerFromHfJson(exported, 'exported').toJSON(), z.toJSON());
  // lstrip, rstrip and single_word change where the library finds a special token: refused.
  for (const flag of ['lstrip', 'rstrip', 'single_word']) {
    const flagged = editedGpt2Style((j) => { j.added_tokens[0] = { ...j.added_tokens[0], [flag]: true }; });
    assert.throws(() => tokenizerFromHfJson(flagged, 'f.json'), (e: unknown) => e instanceof MinigptError && /special token "<\|endoftext\|>" has lstrip, rstrip or single_word set/.test(e.message), flag);
  }
  // A special token whose vocab entry is the byte-level string of other text ("Ġzq": " zq") is one
  // the merges make, as the library makes it; one spelled as its text is never made.
  const zq = editedGpt2Style((j) => {
    const id = Object.keys(j.model.vocab).length;
    Object.assign(j.model.vocab, { zq: id, '\u0120zq': id + 1 });
    (j.model as unknown as { merges: string[][] }).merges.unshift(['z', 'q'], ['\u0120', 'zq']);
    j.added_tokens.push(addedToken(id + 1, '\u0120zq'));
  });
  const zqTok = tokenizerFromHfJson({ ...zq, model: { ...(zq['model'] as object), ignore_merges: false } }, 'zq.json');
  assert.deepEqual(Array.from(zqTok.encode(' zq')), [zqTok.specialTokens!['\u0120zq']]);
  // A post-processor that is a Sequence of ones adding nothing adds nothing.
  const seq = editedGpt2Style((j) => { j.post_processor = { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true }] }; });
  assert.equal(tokenizerFromHfJson(seq, 'seq.json').kind, 'hf-bpe');
});

test('the GGUF export warns when some tokens come only from ignore_merges\' whole-word lookup (llama.cpp splits their text otherwise)', () => {
  const warned = (name: Parameters<typeof fixtureTokenizer>[0]): string[] => {
    const warnings: string[] = [];
    ggufTokenizerMetadata(fixtureTokenizer(name), 806, (m) => warnings.push(m));
    return warnings;
  };
  assert.deepEqual(warned('smollm-style'), []);
  // An imported chat model's own end-of-text and start-of-text tokens are llama.cpp's EOS and BOS.
  const chat = tokenizerFromJson({ ...fixtureTokenizer('smollm-style').toJSON(), eos: '<|im_end|>', bos: '<|im_start|>' }, 'chat');
  const md = ggufTokenizerMetadata(chat, 704);
  assert.deepEqual([md.get('tokenizer.ggml.eos_token_id')?.value, md.get('tokenizer.ggml.bos_token_id')?.value], [2, 1]);
  assert.deepEqual(warned('gpt2-style'), ['1 of this tokenizer\'s tokens (such as " zqxj") come only from its whole-word lookup (ignore_merges), which llama.cpp does not do for this pre-tokenizer: llama.cpp splits text holding them into other tokens than minigpt and transformers do']);
  // Llama 3's split is llama.cpp's "llama-bpe", which looks whole words up too: no warning; Qwen2's is "qwen2".
  assert.deepEqual(tokensOnlyWholeWordsReach(fixtureTokenizer('llama3-style').toJSON() as HfBpeTokenizerJson), [' zqxj']);
  assert.deepEqual(warned('llama3-style'), []);
  // ... unless the tokenizer itself does not (ignore_merges false): then llama.cpp gives " zqxj" one token where it gives several.
  const noLookup = tokenizerFromJson({ ...fixtureTokenizer('llama3-style').toJSON(), ignoreMerges: false }, 'no-lookup');
  const warnings: string[] = [];
  ggufTokenizerMetadata(noLookup, 806, (m) => warnings.push(m));
  assert.deepEqual(warnings, ['1 of this tokenizer\'s tokens (such as " zqxj") are whole words its merges never make, and llama.cpp\'s "llama-bpe" pre-tokenizer looks whole words up (ignore_merges) where this tokenizer does not: llama.cpp gives those words one token where minigpt and transformers give several']);
  const pre = (name: 'qwen2-style' | 'llama3-style' | 'gpt2-style' | 'smollm-style') => ggufTokenizerMetadata(fixtureTokenizer(name), 806).get('tokenizer.ggml.pre')?.value;
  assert.deepEqual([pre('qwen2-style'), pre('llama3-style'), pre('gpt2-style'), pre('smollm-style')], ['qwen2', 'llama-bpe', 'gpt-2', 'smollm']);
});

test('--tokenizer takes a Hugging Face tokenizer.json, or the model folder holding it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-hf-tok-'));
  const model = join(dir, 'SmolLM-like');
  await mkdir(model);
  await writeFile(join(model, 'tokenizer.json'), JSON.stringify(FIXTURE['smollm-style'].tokenizer));
  await writeFile(join(model, 'config.json'), '{"model_type": "llama"}');
  const cli = join(ROOT, 'dist', 'src', 'cli', 'main.js');
  const text = 'page  12  of   300';
  const want = JSON.stringify(Array.from(fixtureTokenizer('smollm-style').encode(text)));
  for (const spec of [model, join(model, 'tokenizer.json')]) {
    const r = spawnSync(process.execPath, [cli, 'tokenizer', 'encode', '--tokenizer', spec, '--text', text], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), want, spec);
  }
});

// ---------------------------------------------------------------------------------------------
// Qwen2's and Llama 3's split (test/fixtures/hf-bpe-split.json)

const SPLIT = HF_BPE_SPLIT_FIXTURE;
const SPLIT_NAMES = Object.keys(SPLIT) as (keyof typeof SPLIT)[];
/** The cleaning a fixture's normalizer stands for (qwen2-style: NFC), as import records it. */
const splitClean = (name: keyof typeof SPLIT) => cleanFromHfNormalizer(hfCleaningNormalizer(SPLIT[name].tokenizer, name), name);

test('hf-bpe with Qwen2\'s and Llama 3\'s split gives the tokenizers library\'s ids (after the NFC normalizer, as minigpt cleans) and decodes them back', () => {
  assert.deepEqual(SPLIT_NAMES, ['qwen2-style', 'llama3-style']);
  assert.deepEqual(splitClean('qwen2-style'), { nfc: true, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false, lowercase: false });
  assert.equal(splitClean('llama3-style'), undefined);
  for (const name of SPLIT_NAMES) {
    const tok = fixtureTokenizer(name);
    assert.equal(tok.kind, 'hf-bpe', name);
    assert.equal((tok.toJSON() as HfBpeTokenizerJson).pretokenizer, name === 'qwen2-style' ? 'qwen2' : 'llama3');
    const clean = splitClean(name);
    const { texts, ids } = SPLIT[name]!;
    for (let i = 0; i < texts.length; i++) {
      const text = clean ? cleanText(texts[i]!, clean) : texts[i]!;
      const ours = Array.from(tok.encode(text, { allowedSpecial: 'all' }));
      assert.deepEqual(ours, ids[i], `${name}: ids of ${JSON.stringify(texts[i]!.slice(0, 60))}`);
      assert.equal(tok.decode(ours), text, `${name}: decode`);
    }
  }
  // The regexes' own rules, seen in the pre-tokens.
  const qwen = fixtureTokenizer('qwen2-style') as ByteLevelTokenizer, llama = fixtureTokenizer('llama3-style') as ByteLevelTokenizer;
  assert.deepEqual(qwen.pretokenize("end.\r\n\r\nIt'S x'ſt x1234"), ['end', '.\r\n\r\n', 'It', "'S", ' x', "'\u017f", 't', ' x', '1', '2', '3', '4']);
  assert.deepEqual(llama.pretokenize('1234567 ٣٤٥٦ a  \n  b  '), ['123', '456', '7', ' ', '٣٤٥', '٦', ' a', '  \n', ' ', ' b', '  ']);
  // The NFC normalizer: the library composes "e" + U+0301, which the tokenizer alone does not.
  const i = SPLIT['qwen2-style'].texts.indexOf('e\u0301 cafe\u0301 A\u030a \u1100\u1161');
  assert.notDeepEqual(Array.from(qwen.encode(SPLIT['qwen2-style'].texts[i]!)), SPLIT['qwen2-style'].ids[i], 'the text needs its normalizer');
});

test('hf-bpe with Qwen2\'s and Llama 3\'s split: JSON and tokenizer.json round trips, the export spelled as the files spell the regex', () => {
  for (const name of SPLIT_NAMES) {
    const tok = fixtureTokenizer(name);
    const json = tok.toJSON();
    assert.deepEqual(tokenizerFromJson(JSON.parse(JSON.stringify(json)), 'again').toJSON(), json, `${name}: JSON round trip`);
    const text = hfTokenizerJson(tok, splitClean(name));
    const exported = JSON.parse(text);
    const file = SPLIT[name].tokenizer as Record<string, { pretokenizers: { pattern?: unknown }[] }>;
    assert.deepEqual(exported.pre_tokenizer.pretokenizers[0].pattern, file['pre_tokenizer']!.pretokenizers[0]!.pattern, `${name}: the Split regex`);
    assert.deepEqual(exported.normalizer, name === 'qwen2-style' ? { type: 'Sequence', normalizers: [{ type: 'NFC' }] } : null);
    const back = tokenizerFromHfJson(exported, 'exported');
    assert.deepEqual(back.toJSON(), json, `${name}: tokenizer.json round trip`);
    assert.equal(hfTokenizerJson(back, splitClean(name)), text, `${name}: the export is byte-stable`);
    assert.deepEqual(cleanFromHfNormalizer(hfCleaningNormalizer(exported, 'exported'), 'exported'), splitClean(name), `${name}: the cleaning comes back`);
  }
  // Llama 3's own file puts <|begin_of_text|> before every text: refused, naming it.
  const llama3 = SPLIT['llama3-style'].tokenizer;
  const template = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [801], tokens: ['<|begin_of_text|>'] } } };
  const refusals: [string, Record<string, unknown>, RegExp][] = [
    ['template', { ...llama3, post_processor: { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true }, template] } },
      /has a Sequence post-processor, which adds tokens \(such as a BOS token\) to what it encodes \(this one: "<\|begin_of_text\|>"\); minigpt's byte-level and character tokenizers add none/],
    // Digits one by one before Qwen2's split: a layout no model has, refused rather than guessed.
    ['digits first', { ...llama3, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, ...(llama3['pre_tokenizer'] as { pretokenizers: unknown[] }).pretokenizers] } },
      /the pre-tokenizer is not GPT-2's byte-level one/],
    ['prefix space', { ...llama3, pre_tokenizer: { type: 'Sequence', pretokenizers: [(llama3['pre_tokenizer'] as { pretokenizers: unknown[] }).pretokenizers[0], { type: 'ByteLevel', add_prefix_space: true, use_regex: false }] } },
      /the pre-tokenizer is not GPT-2's byte-level one/],
  ];
  for (const [name, json, re] of refusals) {
    assert.throws(() => tokenizerFromHfJson(json, 'tokenizer.json'), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'), name);
  }
});

test('an HF model folder with a Qwen2-style tokenizer.json imports: hf-bpe "qwen2", its NFC normalizer recorded as the cleaning a prompt gets', async () => {
  const tok = fixtureTokenizer('qwen2-style');
  const config = resolveConfig({ vocab_size: tok.vocabSize, d_model: 16, n_heads: 2, n_kv_heads: 1, n_layers: 1, context: 32 });
  const dir = join(await mkdtemp(join(tmpdir(), 'minigpt-qwen2-')), 'hf');
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer: tok }, dir);
  // The library's file as it is: a lone NFC normalizer, not the Sequence minigpt writes.
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(SPLIT['qwen2-style'].tokenizer));
  const { checkpoint } = await readHfModel(dir);
  assert.deepEqual(checkpoint.tokenizer.toJSON(), tok.toJSON());
  assert.deepEqual(recordedClean(checkpoint), splitClean('qwen2-style'));
});

/** Random text from pieces where Qwen2's and Llama 3's regexes are easily got wrong. */
function splitRandomTexts(count: number, seed: number): string[] {
  const pieces = ["'", "'s", "x'", 's', 'S', '\u017f', "'\u017f", "'\u212a", 't', 're', 'RE', 'Re', 've', 'm', 'll', 'LL', 'd', 'D', '\u212a', 'the', ' the', 'The', 'a', ' ', '  ', '\t', '\n', '\n\n', '\r\n', '\r', '\r\r\n',
    '\u00a0', '\u2028', '\u2029', '\u0085', '\u3000', '\ufeff', '\u000b', '\u000c', '\u200b', '0', '12', '345', '6789', '٣', '٤٥', '१२', '๓', '½', 'Ⅻ', '²', '𝟙', '𝟚', '〇',
    '.', ',', '!?', '...', '—', '(', ')', '"', '$', '#', '-', '_', 'é', 'e\u0301', '\u0301', 'A\u030a', '\u1100\u1161', 'ß', '日本', '語', '한', 'Σ', 'ǅ', 'ʰ', 'ﬆ', '🙂', '👍🏽', '🇫🇷', '𝔘', '𐐀',
    '\u200d', '\u0000', '\u001b', 'zqxj', ' zqxj', '<|im_start|>', '<|endoftext|>', '<|begin_of_text|>', '<|', '|>', 'x', 'Straße',
    'the'.repeat(30), ' '.repeat(70), '.'.repeat(70)];
  return randomJoins(pieces, count, 40, seed);
}

test('hf-bpe with Qwen2\'s and Llama 3\'s split against the tokenizers library on 600 random texts: pre-tokens, and ids on its tokenizer.json and minigpt\'s export of it', { skip: py.skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-hf-split-'));
  const texts = splitRandomTexts(600, 23);
  // The pre-tokens themselves: two splits can give the same ids where no merge joins across them.
  const utf8 = new TextEncoder();
  for (const name of SPLIT_NAMES) {
    const tok = fixtureTokenizer(name) as ByteLevelTokenizer;
    const theirs = await libraryPretokens(dir, JSON.stringify(SPLIT[name].tokenizer), texts);
    texts.forEach((t, i) => assert.deepEqual(tok.pretokenize(t).map((p) => bytesToByteLevel(utf8.encode(p))), theirs[i], `${name}: pre-tokens of ${JSON.stringify(t)}`));
  }
  await assertLibraryIds(dir, SPLIT_NAMES.map((name): [string, Record<string, unknown>] => [name, SPLIT[name].tokenizer]), texts);
});

test('added tokens that are not special (Qwen2.5\'s "<tool_call>") are found in any text, kept through JSON, and refused where they could not be exact', () => {
  const tok = fixtureTokenizer('qwen2-style') as ByteLevelTokenizer;
  const json = tok.toJSON() as HfBpeTokenizerJson;
  assert.deepEqual(json.plainAdded, { '<tool_call>': 803, '</tool_call>': 804, '<|fim_prefix|>': 805 });
  assert.equal(tok.specialTokens['<tool_call>'], undefined, 'not a special token');
  // Found without allowedSpecial, and by encodeOrdinary (prepare's path) too; special tokens are not.
  for (const ids of [tok.encode('a<tool_call>b'), tok.encodeOrdinary('a<tool_call>b')]) assert.ok(Array.from(ids).includes(803));
  assert.ok(!Array.from(tok.encodeOrdinary('<|im_end|>')).includes(802));
  assert.equal(tok.decode(tok.encode('x</tool_call>\n<|fim_prefix|>y')), 'x</tool_call>\n<|fim_prefix|>y');
  assert.deepEqual(tokenizerFromJson(json, 'again').toJSON(), json);
  const bad = (edit: (j: HfBpeTokenizerJson) => void, re: RegExp): void => {
    const j = structuredClone(json);
    edit(j);
    assert.throws(() => tokenizerFromJson(j, 't.json'), (e: unknown) => e instanceof MinigptError && re.test(e.message));
  };
  bad((j) => { j.vocab[805] = '<a\n>'; j.plainAdded = { '<tool_call>': 803, '</tool_call>': 804, '<a\n>': 805 }; }, /plain added token "<a\\n>" holds a line break/);
  bad((j) => { j.plainAdded = { '<|im_end|>': 802 }; }, /plain added token "<\|im_end\|>" has id 802, which is not a vocab entry of that text outside the special tokens/);
});
