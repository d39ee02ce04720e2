/**
 * sp-bpe: SentencePiece-style BPE tokenizers as Llama 2, TinyLlama and Mistral have them ("▁" for a
 * space, a "▁" added in front, byte fallback or the unknown token, "<s>" before every text), read
 * from tokenizer.json. The committed fixture (scripts/make-hf-tokenizers.py sp-fixture) holds three
 * tokenizers the `tokenizers` library made and the ids it gives; with the Python venv, random text
 * is checked against the library itself too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hfTokenizerJson, tokenizerFromHfJson } from '../src/io/hf.js';
import { createStreamingDecoder, textStartIds, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { documentSeparatorOf, encodeDocuments } from '../src/data/documents.js';
import { MinigptError } from '../src/errors.js';
import { createRng } from '../src/util/random.js';
import { assertLibraryIds, randomJoins, tokenizersPython } from './support/tokenizers-library.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createModel, setWeights, type Model } from '../src/model/model.js';
import { createReferenceBackend } from '../src/backend/reference/index.js';
import { computeLogits, scoreText } from '../src/inference.js';
import { generate } from '../src/generate.js';
import { SP_BPE_FIXTURE, spBpeFixtureTokenizer } from './support/sp-bpe-fixture.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NAMES = Object.keys(SP_BPE_FIXTURE) as (keyof typeof SP_BPE_FIXTURE)[];
const oneLine = (re: RegExp) => (e: unknown): boolean => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n');

test('sp-bpe gives the tokenizers library\'s ids, with and without its "<s>", and decodes them back (three fixture tokenizers)', () => {
  assert.deepEqual(NAMES, ['llama-style', 'metaspace-first', 'metaspace-unk']);
  for (const name of NAMES) {
    const tok = spBpeFixtureTokenizer(name);
    assert.equal(tok.kind, 'sp-bpe', name);
    const { texts, ids, withStart } = SP_BPE_FIXTURE[name]!;
    for (let i = 0; i < texts.length; i++) {
      const ours = Array.from(tok.encode(texts[i]!, { allowedSpecial: 'all' }));
      assert.deepEqual(ours, ids[i], `${name}: ids of ${JSON.stringify(texts[i]!.slice(0, 60))}`);
      // Byte fallback loses nothing; the unknown token does. A leading space is the layout's to keep or drop.
      if (name !== 'metaspace-unk' && !/^ |<s>|<\/s>/.test(texts[i]!) && !texts[i]!.includes('\u2581')) assert.equal(tok.decode(ours), texts[i], `${name}: decode`);
    }
    for (let i = 0; i < withStart.length; i++) assert.deepEqual([...textStartIds(tok), ...tok.encode(texts[i]!)], withStart[i], `${name}: with the post-processor`);
  }
  const llama = spBpeFixtureTokenizer('llama-style');
  assert.equal(llama.addBos, '<s>');
  assert.deepEqual(textStartIds(llama), [1]);
  assert.deepEqual(textStartIds(spBpeFixtureTokenizer('metaspace-first')), []);
  // Characters the vocabulary lacks: their bytes' tokens (fallback), else one <unk> for a run of them.
  assert.deepEqual(Array.from(llama.encode('日')).slice(1), [3 + 0xe6, 3 + 0x97, 3 + 0xa5]);
  const unk = spBpeFixtureTokenizer('metaspace-unk');
  assert.deepEqual(Array.from(unk.encode('日本語')).filter((id) => id === 0).length, 1);
  assert.equal(unk.decode(unk.encode('a 日本語 b')), 'a <unk> b');
});

/** The llama-style tokenizer.json with Code Llama's kind of special token, "▁<PRE>", which merges make from " <PRE>" (its text has a space, so the library does not split it out first). */
function withPreToken(): Record<string, unknown> {
  const json = structuredClone(SP_BPE_FIXTURE['llama-style'].tokenizer) as { model: { vocab: Record<string, number>; merges: string[][] }; added_tokens: Record<string, unknown>[] };
  for (const piece of ['<', '>', 'P', 'R', 'E', 'PR', 'PRE', '\u2581<', '\u2581<PRE', '\u2581<PRE>']) json.model.vocab[piece] ??= Object.keys(json.model.vocab).length;
  json.model.merges.unshift(['\u2581', '<'], ['P', 'R'], ['PR', 'E'], ['\u2581<', 'PRE'], ['\u2581<PRE', '>']);
  json.added_tokens.push({ id: json.model.vocab['\u2581<PRE>'], content: '\u2581<PRE>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return json;
}

/** The llama-style tokenizer.json with a piece "e▁" whose merge comes first: a piece that crosses a word's end, so text is merged whole, not word by word. */
function withPieceAcrossWords(): Record<string, unknown> {
  const json = structuredClone(SP_BPE_FIXTURE['llama-style'].tokenizer) as { model: { vocab: Record<string, number>; merges: unknown[] }; added_tokens: unknown[] } & Record<string, unknown>;
  json.model.vocab['e\u2581'] = Object.keys(json.model.vocab).length;
  json.model.merges.unshift(['e', '\u2581']);
  return json;
}

test('a special token whose text has a space ("▁<PRE>") is made by merges from ordinary text, as the library makes it; "<s>" never is', () => {
  const json = withPreToken() as { model: { vocab: Record<string, number> } };
  const tok = tokenizerFromHfJson(json, 'pre.json');
  const pre = json.model.vocab['\u2581<PRE>']!;
  assert.equal(tok.specialTokens?.['\u2581<PRE>'], pre);
  assert.ok(Array.from(tok.encode('x <PRE>')).includes(pre));
  assert.equal(tok.decode([pre]), '<PRE>', 'decoded as the library\'s decoder reads it: "▁" a space, dropped at the start');
});

test('a vocabulary with a piece across a word\'s end ("e▁") is merged over the whole text, not word by word', () => {
  const tok = tokenizerFromHfJson(withPieceAcrossWords(), 'across.json');
  const across = tok.vocabSize - 1;
  assert.equal((tok.toJSON() as unknown as { vocab: string[] }).vocab[across], 'e\u2581');
  assert.ok(Array.from(tok.encode('the cat')).includes(across), 'the first merge joins "e" and the next word\'s "▁"');
  assert.equal(tok.decode(tok.encode('the cat')), 'the cat');
});

test('prepare\'s line-break cuts are exact only where line breaks are byte tokens no merge joins', () => {
  const base = spBpeFixtureTokenizer('llama-style').toJSON() as unknown as { vocab: string[]; merges: string[] };
  const exact = (edit: (json: { vocab: string[]; merges: string[] }) => void): boolean => {
    const json = structuredClone(base);
    edit(json);
    return (tokenizerFromJson(json, 'edited') as unknown as { lineBreaksCutExactly: boolean }).lineBreaksCutExactly;
  };
  assert.equal(exact(() => {}), true);
  assert.equal(exact((j) => { j.vocab.push('\r'); }), false, 'a carriage return piece');
  assert.equal(exact((j) => { j.vocab.push('\n'); }), false, 'a line feed piece');
  assert.equal(exact((j) => { j.vocab.push('<0x0A>a'); j.merges.push('<0x0A> a'); }), false, 'a merge that joins a byte token');
  assert.equal(spBpeFixtureTokenizer('metaspace-unk').toJSON().byteFallback, false);
  assert.equal((spBpeFixtureTokenizer('metaspace-unk') as unknown as { lineBreaksCutExactly: boolean }).lineBreaksCutExactly, false, 'no byte fallback');
});

test('sp-bpe survives its own JSON and an HF export -> import round trip; streams byte tokens whole; special tokens only when allowed', () => {
  for (const name of NAMES) {
    const tok = spBpeFixtureTokenizer(name);
    const json = tok.toJSON();
    assert.deepEqual(tokenizerFromJson(JSON.parse(JSON.stringify(json)), 'again').toJSON(), json, `${name}: JSON round trip`);
    const back = tokenizerFromHfJson(JSON.parse(hfTokenizerJson(tok)), 'exported');
    assert.deepEqual(back.toJSON(), json, `${name}: tokenizer.json round trip`);
    assert.equal(hfTokenizerJson(back), hfTokenizerJson(tok), `${name}: the export is byte-stable`);
    for (const [text, id] of Object.entries(tok.specialTokens ?? {})) {
      assert.deepEqual(Array.from(tok.encode(text, { allowedSpecial: 'all' })), [id]);
      assert.notDeepEqual(Array.from(tok.encode(text)), [id], 'special text is ordinary text by default');
    }
    if (name === 'metaspace-unk') continue;
    const text = 'emoji 🙂👍🏽 naïve 日本語 12 345';
    const ids = tok.encode(text);
    const stream = createStreamingDecoder(tok);
    let out = '';
    for (const id of ids) out += stream.push(id);
    // The stream keeps the "▁" added in front as a space; decode drops it.
    assert.equal(out + stream.flush(), ` ${text}`, `${name}: streamed decode`);
    assert.equal(tok.decode(ids), text);
  }
});

test('sp-bpe refuses broken JSON and tokenizer.json it cannot reproduce, with one-line reasons', () => {
  const base = spBpeFixtureTokenizer('llama-style').toJSON() as unknown as Record<string, unknown>;
  const vocab = base['vocab'] as string[];
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['unknown field', { ...base, extra: 1 }, /unknown field "extra"/],
    ['spaces', { ...base, spaces: 'never' }, /"spaces" must be "prepend", "always", "first"/],
    ['missing byte token', { ...base, vocab: vocab.map((v) => (v === '<0x41>' ? '<0x41>x' : v)) }, /falls back to bytes but has no token <0x41>/],
    ['no fallback, no unk', { ...base, byteFallback: false, unk: undefined }, /neither byte fallback nor an unknown token/],
    ['merge', { ...base, merges: ['▁ zzzz'] }, /merges\[0\] string "▁ zzzz" must be two tokens of the vocabulary/],
    ['addBos', { ...base, addBos: '<bos>' }, /"addBos" must be the text of one of its special tokens, got string "<bos>"/],
    ['special id', { ...base, special: { '<s>': 5 } }, /special token "<s>" has id 5/],
  ];
  for (const [name, json, re] of cases) assert.throws(() => tokenizerFromJson(JSON.parse(JSON.stringify(json)), 'tok.json'), oneLine(re), name);

  const hf = SP_BPE_FIXTURE['llama-style'].tokenizer;
  const meta = SP_BPE_FIXTURE['metaspace-first'].tokenizer;
  const model = hf['model'] as Record<string, unknown>;
  const hfCases: [string, Record<string, unknown>, RegExp][] = [
    ['prepend never', { ...meta, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: false } }, /prepend_scheme is "never"/],
    ['other normalizer', { ...hf, normalizer: { type: 'Sequence', normalizers: [{ type: 'Replace', pattern: { String: ' ' }, content: '▁' }] } }, /neither Llama 2's legacy layout \(Prepend and Replace\) nor a Metaspace pre-tokenizer/],
    ['BOS and EOS', { ...hf, post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }], pair: [], special_tokens: {} } },
      /the post-processor .* is not a template that adds nothing or one start-of-text token/],
    ['decoder', { ...hf, decoder: { type: 'ByteLevel' } }, /the decoder .* is not SentencePiece's/],
    ['ignore_merges', { ...hf, model: { ...model, ignore_merges: true } }, /BPE options .* that minigpt's sp-bpe tokenizer does not have/],
    ['missing byte token', { ...hf, model: { ...model, vocab: Object.fromEntries(Object.entries(model['vocab'] as Record<string, number>).map(([k, v]) => [k === '<0x41>' ? '<0x41>x' : k, v])) } }, /has no token <0x41>/],
  ];
  const specialNormalized = structuredClone(hf) as { added_tokens: Record<string, unknown>[] };
  specialNormalized.added_tokens[1]!['normalized'] = true;
  hfCases.push(['special token matched after normalizing', specialNormalized, /special token "<s>" is found in the normalized text \("normalized": true\)/]);
  hfCases.push(['null added token', { ...hf, added_tokens: [null] }, /added_tokens holds null, not a token object/]);
  hfCases.push(['Unigram', { ...hf, model: { type: 'Unigram', vocab: [] } }, /tokenizer model "Unigram" is not supported/]);
  for (const [name, json, re] of hfCases) assert.throws(() => tokenizerFromHfJson(json, 'tokenizer.json'), oneLine(re), name);
});

test('tokenizer.json variants the library takes: an unknown token only the vocabulary holds, a merge that would make a special token, unknown runs fused across words', async () => {
  // <unk> not among the added tokens: an ordinary piece, never matched as special-token text.
  const unkJson = structuredClone(SP_BPE_FIXTURE['metaspace-unk'].tokenizer) as { added_tokens: { content: string }[] };
  unkJson.added_tokens = unkJson.added_tokens.filter((t) => t.content !== '<unk>');
  const unk = tokenizerFromHfJson(unkJson, 'unk.json');
  assert.equal(unk.specialTokens?.['<unk>'], undefined);
  assert.deepEqual(Array.from(unk.encode('\u65e5\u672c', { allowedSpecial: 'all' })).slice(-1), [0], 'an unknown character is still <unk>');
  assert.notDeepEqual(Array.from(unk.encode('<unk>', { allowedSpecial: 'all' })), [0]);
  // Exports keep it ordinary: transformers would make a piece tokenizer_config.json names as unk_token special.
  const { hfTokenizerConfigs } = await import('../src/io/hf.js');
  assert.equal(hfTokenizerConfigs(unk, 64).config['unk_token'], undefined);
  assert.equal(hfTokenizerConfigs(spBpeFixtureTokenizer('metaspace-unk'), 64).config['unk_token'], '<unk>');
  const { ggufTokenizerMetadata } = await import('../src/io/gguf.js');
  const llamaNoUnk = structuredClone(SP_BPE_FIXTURE['llama-style'].tokenizer) as { added_tokens: { content: string }[] };
  llamaNoUnk.added_tokens = llamaNoUnk.added_tokens.filter((t) => t.content !== '<unk>');
  const warnings: string[] = [];
  const md = ggufTokenizerMetadata(tokenizerFromHfJson(llamaNoUnk, 'no-unk.json'), 1024, (m) => warnings.push(m));
  assert.deepEqual([md.get('tokenizer.ggml.unknown_token_id')?.value, (md.get('tokenizer.ggml.token_type')?.value as Int32Array)[0]], [0, 2], 'llama.cpp\'s unknown token, typed UNKNOWN');
  assert.deepEqual(warnings, []);
  // "<s" ">" where "<s>" is a special token: left out (special tokens are split out before merging in the library).
  const withMerge = structuredClone(SP_BPE_FIXTURE['llama-style'].tokenizer) as { model: { vocab: Record<string, number>; merges: string[][] } };
  for (const piece of ['<', 's', '>', '<s']) withMerge.model.vocab[piece] ??= Object.keys(withMerge.model.vocab).length;
  withMerge.model.merges.unshift(['<', 's'], ['<s', '>']);
  const merged = tokenizerFromHfJson(withMerge, 'merge.json');
  assert.ok(!Array.from(merged.encode('<s>')).includes(1), 'ordinary text never becomes "<s>"');
  assert.ok(Array.from(merged.encode('<s>')).includes(withMerge.model.vocab['<s']!), 'the merge before it still applies');
  // No "▁" piece, no byte fallback, unknown runs fused: " Z Z" is one <unk> (a cut before each word would make two).
  const tiny = {
    model: { type: 'BPE', vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, a: 3, b: 4, ab: 5 }, merges: [['a', 'b']], unk_token: '<unk>', fuse_unk: true, byte_fallback: false },
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null, post_processor: null, added_tokens: [],
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
  };
  const fused = tokenizerFromHfJson(tiny, 'tiny.json');
  assert.deepEqual(Array.from(fused.encode('Z Z')), [0]);
  assert.deepEqual(Array.from(fused.encode('ab Z ab')), [0, 5, 0, 5]);
});

test('"<s>" starts every training document, every prompt and every scored text', async () => {
  const tok = spBpeFixtureTokenizer('llama-style');
  assert.equal(documentSeparatorOf(tok), 'start-of-text');
  assert.equal(documentSeparatorOf(spBpeFixtureTokenizer('metaspace-first')), '\n\n', 'no "<s>" and no <|endoftext|>: a blank line');
  const docs = ['The first one.', 'And the second.'];
  assert.deepEqual(Array.from(encodeDocuments(tok, docs)), [1, ...tok.encode(docs[0]!), 1, ...tok.encode(docs[1]!)]);
  assert.deepEqual(Array.from(encodeDocuments(tok, [docs[0]!])), [1, ...tok.encode(docs[0]!)]);

  const { loadTrainingData } = await import('../src/train/train.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-sp-'));
  await writeFile(join(dir, 'docs.jsonl'), docs.map((text) => JSON.stringify({ text })).join('\n'));
  const data = await loadTrainingData({ data: join(dir, 'docs.jsonl'), tokenizer: tok, valData: join(dir, 'docs.jsonl') });
  assert.equal(data.documentSeparator, 'start-of-text');
  const read = (s: { length: number; read(at: number, into: Int32Array): void }): number[] => { const b = new Int32Array(s.length); s.read(0, b); return Array.from(b); };
  assert.deepEqual(read(data.train), Array.from(encodeDocuments(tok, docs)));


  const config = resolveConfig({ vocab_size: tok.vocabSize, d_model: 32, n_heads: 4, n_layers: 2, context: 64 });
  const model = createModel(createReferenceBackend(), config);
  // Attention outputs far larger than init's, so that what comes before the last token shows in what follows it.
  const weights = initialWeights(config, paramLayout(config), createRng(3));
  for (const spec of paramLayout(config).specs) if (spec.name.endsWith('o_proj.weight')) for (let i = 0; i < spec.shape[0]! * spec.shape[1]!; i++) weights[spec.offset + i]! *= 100;
  setWeights(model, weights);
  const score = await scoreText({ model, tokenizer: tok }, 'Hello');
  // Bits per byte over the text's 5 bytes, not the 6 of its tokens (the "▁" added in front).
  assert.ok(Math.abs(score.bitsPerByte! - (score.loss * score.logprobs.length) / (5 * Math.LN2)) < 1e-9, `bits per byte ${score.bitsPerByte}`);
  // The same over documents (eval --data): each document's added "▁" is no byte of it.
  const { evaluateText } = await import('../src/train/train.js');
  const evaluated = await evaluateText(model, tok, docs, { all: true });
  const docBytes = docs.reduce((n, d) => n + new TextEncoder().encode(d).length, 0);
  assert.ok(Math.abs(evaluated.bitsPerByte! - (evaluated.loss * evaluated.tokens) / (docBytes * Math.LN2)) < 1e-9, `bits per byte ${evaluated.bitsPerByte} over ${docBytes} bytes`);
  const prompt = 'a'; // one token: without "<s>" it attends to itself alone
  assert.deepEqual(score.ids, [1, ...tok.encode('Hello')]);
  await assert.rejects(scoreText({ model, tokenizer: tok }, ''), oneLine(/^the text is 0 tokens long; scoring needs at least 1 after the start-of-text token$/));
  // Greedy: the first token generated after a prompt is the argmax after "<s>" + the prompt (which this model makes differ from the one without "<s>").
  const argmaxAfter = async (ids: number[]): Promise<number> => {
    const logits = await computeLogits(model, ids);
    const V = config.vocab_size, last = logits.subarray((ids.length - 1) * V, ids.length * V);
    let best = 0;
    for (let i = 1; i < tok.vocabSize; i++) if (last[i]! > last[best]!) best = i;
    return best;
  };
  const withBos = await argmaxAfter([1, ...tok.encode(prompt)]);
  assert.notEqual(withBos, await argmaxAfter(Array.from(tok.encode(prompt))), 'the test model tells the two apart');
  const first = await generate({ model, tokenizer: tok }, prompt, { maxTokens: 1, temperature: 0 }).next();
  assert.equal(first.value && first.value.id, withBos);
  // The context note counts "<s>": a prompt of exactly `context` tokens is one over.
  const { checkPrompt } = await import('../src/generate.js');
  let long = '';
  while (tok.encode(long).length < config.context) long += 'a ';
  while (tok.encode(long).length > config.context) long = long.slice(0, -1);
  assert.equal(tok.encode(long).length, config.context);
  assert.match(checkPrompt({ model, tokenizer: tok }, long, 'the prompt'), new RegExp(`^the prompt has ${config.context + 1} tokens; the model sees only its last ${config.context}`));
  const fromNothing = await generate({ model, tokenizer: tok }, '', { maxTokens: 1, temperature: 0 }).next();
  assert.equal(fromNothing.value && fromNothing.value.id, await argmaxAfter([1]));
});

const py = tokenizersPython;

/** Random text from pieces where spaces, special tokens, byte fallback and unknown characters meet. */
function randomTexts(count: number, seed: number): string[] {
  const pieces = ['the', ' the', 'The', 'ing', ' and', 'a', 'zqxj', 'ZQXJ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\u2581', '\u2581\u2581', ' \u2581',
    '\u00a0', '\u3000', '\ufeff', "'s", '.', ',', '!?', '—', 'é', 'e\u0301', 'ß', '日本', '語', '한', '🙂', '👍🏽', '0', '12', '\u0000', '\u001b',
    '<s>', '</s>', '<unk>', '<0x41>', '<', 's>', 'x', 'naïve', ' <PRE>', '<PRE>', 'the'.repeat(30), ' '.repeat(70)];
  return randomJoins(pieces, count, 30, seed);
}

test('sp-bpe against the tokenizers library on 400 random texts, its tokenizer.json and minigpt\'s export of it (5 tokenizers)', { skip: py.skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-sp-bpe-'));
  const texts = randomTexts(400, 23);
  const files: [string, Record<string, unknown>][] = [...NAMES.map((name): [string, Record<string, unknown>] => [name, SP_BPE_FIXTURE[name].tokenizer]), ['llama-style + "e▁"', withPieceAcrossWords()], ['llama-style + "▁<PRE>"', withPreToken()]];
  await assertLibraryIds(dir, files, texts);
});

test('a Llama 2-shaped Hugging Face folder imports, samples, scores, fine-tunes and exports from the CLI, "<s>" first and "</s>" as its end', async () => {
  const { exportHf } = await import('../src/io/hf.js');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-sp-cli-'));
  const tok = spBpeFixtureTokenizer('llama-style');
  const config = resolveConfig({ vocab_size: 1024, d_model: 32, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 64 });
  const hf = join(dir, 'llama-shaped');
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(2)), tokenizer: tok }, hf);
  // As Llama 2's config.json has them.
  const configJson = JSON.parse(await readFile(join(hf, 'config.json'), 'utf8'));
  await writeFile(join(hf, 'config.json'), JSON.stringify({ ...configJson, bos_token_id: 1, eos_token_id: 2 }));
  const cli = (...args: string[]): string => {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'main.js'), ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const ckpt = join(dir, 'imported');
  assert.match(cli('import', '--from', hf, '--out', ckpt), /sp-bpe tokenizer/);
  const saved = JSON.parse(await readFile(join(ckpt, 'tokenizer.minigpt.json'), 'utf8'));
  assert.deepEqual([saved.type, saved.addBos, saved.eos, saved.bos], ['sp-bpe', '<s>', '</s>', undefined]);
  const scored = JSON.parse(cli('eval', '--ckpt', ckpt, '--text', 'Once upon a time', '--json'));
  assert.deepEqual(scored.ids, [1, ...tok.encode('Once upon a time')]);
  assert.ok(cli('sample', '--ckpt', ckpt, '--prompt', 'Once upon', '--tokens', '8').startsWith('Once upon'));
  assert.equal(cli('tokenizer', 'encode', '--tokenizer', hf, '--text', 'Once upon').trim(), JSON.stringify(Array.from(tok.encode('Once upon'))));
  await writeFile(join(dir, 'stories.jsonl'), Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: i % 2 ? 'The dog ran home.' : 'Once upon a time there was a cat.' })).join('\n'));
  cli('train', '--init-from', ckpt, '--data', join(dir, 'stories.jsonl'), '--steps', '2', '--batch', '2', '--context', '32', '--eval-every', '0', '--out', join(dir, 'tuned'), '--quiet');
  // Shards prepared with the Hugging Face folder's tokenizer.json fit the model imported from it (its eos is recorded only there).
  cli('prepare', '--data', join(dir, 'stories.jsonl'), '--tokenizer', hf, '--out', join(dir, 'shards'));
  cli('train', '--init-from', ckpt, '--data', join(dir, 'shards'), '--steps', '1', '--batch', '2', '--context', '32', '--eval-every', '0', '--out', join(dir, 'tuned-shards'), '--quiet');
  cli('export', '--ckpt', join(dir, 'tuned'), '--format', 'hf', '--out', join(dir, 'out'));
  const exported = JSON.parse(await readFile(join(dir, 'out', 'config.json'), 'utf8'));
  assert.deepEqual([exported.bos_token_id, exported.eos_token_id], [1, 2]);
});

/** A model that always predicts `next`: every token's residual stream is dimension 0, which the head reads as `next`. */
function alwaysPredicting(tok: Tokenizer, next: number): Model {
  const C = 8;
  const config = resolveConfig({ vocab_size: tok.vocabSize, d_model: C, n_heads: 2, n_layers: 1, context: 16 });
  const layout = paramLayout(config);
  const at = (name: string): number => layout.specs.find((s) => s.name === name)!.offset;
  const weights = new Float32Array(layout.size);
  for (let id = 0; id < config.vocab_size; id++) weights[at('model.embed_tokens.weight') + id * C] = 1;
  weights.fill(1, at('model.norm.weight'), at('model.norm.weight') + C);
  weights[at('lm_head.weight') + next * C] = 10;
  const model = createModel(createReferenceBackend(), config);
  setWeights(model, weights);
  return model;
}

test('from an empty prompt the first token prints without the "▁" added in front of a text; after a prompt it keeps it', async () => {
  const tok = spBpeFixtureTokenizer('llama-style');
  const the = tok.encode('the')[0]!;
  assert.equal(tok.decode([1, the]), '<s> the');
  const model = alwaysPredicting(tok, the);
  const texts = async (prompt: string): Promise<string[]> => {
    const out: string[] = [];
    for await (const t of generate({ model, tokenizer: tok }, prompt, { maxTokens: 3, temperature: 0 })) out.push(t.text);
    return out;
  };
  assert.deepEqual(await texts(''), ['the', ' the', ' the']);
  assert.deepEqual(await texts('Once'), [' the', ' the', ' the']);
});

test('generation ends where the model writes "<s>" (a new text starts), as llama2.c\'s does, and where it writes its "</s>"', async () => {
  const base = spBpeFixtureTokenizer('llama-style');
  for (const [tok, end] of [[base, 1], [tokenizerFromJson({ ...base.toJSON(), eos: '</s>' }, 'with eos'), 2]] as const) {
    const model = alwaysPredicting(tok, end);
    const out: { id: number; endOfText?: true }[] = [];
    for await (const t of generate({ model, tokenizer: tok }, 'Hi', { maxTokens: 4, temperature: 0 })) out.push({ id: t.id, ...(t.endOfText ? { endOfText: t.endOfText } : {}) });
    assert.deepEqual(out, [{ id: end, endOfText: true }], `ends at ${end}`);
    const onward: number[] = [];
    for await (const t of generate({ model, tokenizer: tok }, 'Hi', { maxTokens: 3, temperature: 0, stopAtEndOfText: false })) onward.push(t.id);
    assert.deepEqual(onward, [end, end, end]);
  }
});
