/**
 * Hugging Face export/import: byte-stable round trips and clear errors always; with the Python
 * venv (.venv/bin/python or $MINIGPT_PYTHON with torch + transformers), transformers itself loads
 * the export and must give our token ids and our logits (1e-4), and what transformers then saves
 * itself (bf16, sharded, tokenizer.json re-serialised) must import back exactly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportHf, hfExportFiles, readHfModel } from '../src/io/hf.js';
import { encodeSafetensors } from '../src/io/safetensors.js';
import { loadCheckpoint, namedWeights, recordedClean, saveCheckpoint, type Checkpoint } from '../src/io/checkpoint.js';
import { cleanText, DEFAULT_CLEAN } from '../src/data/text.js';
import { resolveConfig, type ModelConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer, makeTokenizer, textStartIds, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { gpt2Tokenizer } from '../src/data/gpt2.js';
import { createBackend } from '../src/backend/index.js';
import { createModel, setWeights } from '../src/model/model.js';
import { computeLogits, loadModel } from '../src/inference.js';
import { MinigptError } from '../src/errors.js';
import { roundToBf16 } from '../src/util/half.js';
import { importCommand } from '../src/cli/commands/import.js';
import { exportCommand } from '../src/cli/commands/export.js';
import { hfBpeFixtureTokenizer } from './support/hf-bpe-fixture.js';
import { spBpeFixtureTokenizer } from './support/sp-bpe-fixture.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = (): Promise<string> => mkdtemp(join(tmpdir(), 'minigpt-hf-'));

/** The Python with `modules`, or a reason to skip. */
function findPython(modules: string[]): { python?: string; skip?: string } {
  const python = process.env.MINIGPT_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `no Python venv at ${python} (run scripts/setup-venv.sh or set MINIGPT_PYTHON)` };
  const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} lacks ${modules.join(', ')}: ${(r.stderr || '').trim().split('\n').pop()}` };
  return { python };
}

export const TEXTS = [
  'Hello, world! It\'s 3.14159 and "quotes" aren\'t a problem.',
  'naïve café résumé — Größe Ünïcödé 日本語のテキスト 😀👍🏽 emoji',
  '  leading spaces\n\n\ttabs\tand   runs of  spaces  \n',
  'nbsp\u00a0and\u3000ideographic space\u2028line sep, NEL\u0085 here',
  "I'll we've they're she'd I'm it's DON'T 123456789 x=1+2*3",
];

function model(vocab: number, extra: Partial<ModelConfig> = {}): ModelConfig {
  return resolveConfig({ vocab_size: vocab, d_model: 32, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 64, ...extra });
}

function checkpoint(tokenizer: Tokenizer, extra: Partial<ModelConfig> = {}, seed = 1): Checkpoint {
  const config = model(extra.vocab_size ?? tokenizer.vocabSize, extra);
  const weights = initialWeights(config, paramLayout(config), createRng(seed));
  // Norm weights away from 1 so a wrong norm mapping would show.
  const layout = paramLayout(config);
  for (const s of layout.specs) if (s.kind === 'norm') for (let i = 0; i < s.shape[0]!; i++) weights[s.offset + i] = 1 + 0.1 * Math.sin(i + s.offset);
  // Biases away from 0 (their init), for the same reason.
  for (const s of layout.specs) if (s.kind === 'bias') for (let i = 0; i < s.shape[0]!; i++) weights[s.offset + i] = 0.5 * Math.cos(2 * i + s.offset);
  return { config, weights, tokenizer };
}

/** As minigpt train makes it (with an unk character): the characters, the unk, then <|endoftext|>. */
const charTok = (): Tokenizer => makeTokenizer('char', TEXTS.join(''), { unk: '\u2400' });
/** As checkpoints from before char tokenizers had <|endoftext|>. */
const oldCharTok = (): Tokenizer => buildCharTokenizer(TEXTS.join(''));
/** An imported chat model's: ends a text with <|im_end|>, starts one from <|im_start|>. */
const chatTok = (): Tokenizer => tokenizerFromJson({ ...hfBpeFixtureTokenizer('smollm-style').toJSON(), eos: '<|im_end|>', bos: '<|im_start|>' }, 'chat');
const bpeTok = (): Tokenizer => makeTokenizer('bpe', TEXTS.join(' ').repeat(3) + ' the quick brown fox jumps over the lazy dog', { vocabSize: 400 });

async function roundTrip(ckpt: Checkpoint, dtype: 'F32' | 'F16' | 'BF16'): Promise<void> {
  const dir = await tmp();
  const a = join(dir, 'hf-a'), b = join(dir, 'hf-b'), ours = join(dir, 'ours');
  await exportHf(ckpt, a, { dtype });
  await importCommand.run({ from: a, out: ours }, []);
  await exportCommand.run({ ckpt: ours, format: 'hf', out: b, dtype }, []);
  const files = (await readdir(a)).sort();
  assert.deepEqual(files, ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
  assert.deepEqual((await readdir(b)).sort(), files);
  for (const f of files) assert.ok((await readFile(join(a, f))).equals(await readFile(join(b, f))), `${f} differs after export -> import -> export (${ckpt.tokenizer.kind}, ${dtype})`);
}

/** A Qwen2-shaped model as `minigpt import` makes one: q, k and v biases, Qwen2's split, its NFC normalizer as the recorded cleaning. */
const qwen2 = (seed = 1): Checkpoint => ({
  ...checkpoint(hfBpeFixtureTokenizer('qwen2-style'), { qkv_bias: true, tie_embeddings: true }, seed),
  recorded: { clean: { nfc: true, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false, lowercase: false } },
});

test('export -> import -> export is byte-stable (char, gpt2, bpe, hf-bpe, sp-bpe; F32, F16, BF16; tied, GELU, Qwen2)', async () => {
  await roundTrip(checkpoint(charTok()), 'F32');
  await roundTrip(qwen2(), 'BF16');
  await roundTrip(checkpoint(oldCharTok()), 'F32');
  await roundTrip(checkpoint(charTok(), { tie_embeddings: true, vocab_size: 120 }), 'BF16');
  await roundTrip(checkpoint(bpeTok(), { mlp: 'gelu' }), 'F16');
  await roundTrip(checkpoint(gpt2Tokenizer(), { d_model: 16, n_heads: 2, n_kv_heads: 1, n_layers: 1 }), 'F32');
  await roundTrip(checkpoint(hfBpeFixtureTokenizer('smollm-style'), { tie_embeddings: true }), 'BF16');
  await roundTrip(checkpoint(hfBpeFixtureTokenizer('gpt2-style'), { vocab_size: 640 }), 'F32');
  await roundTrip(checkpoint(chatTok(), { tie_embeddings: true }), 'F32');
  for (const name of ['llama-style', 'metaspace-first', 'metaspace-unk'] as const) await roundTrip(checkpoint(spBpeFixtureTokenizer(name)), 'F32');
  // Trained here on cleaned text: the cleaning steps go before the space steps, and come back.
  await roundTrip({ ...checkpoint(spBpeFixtureTokenizer('llama-style')), recorded: { clean: { lowercase: true } } }, 'BF16');
});

test('an imported model keeps its own end-of-text and start-of-text tokens (generation_config.json\'s, else config.json\'s; the first of a list)', async () => {
  const ckpt = checkpoint(chatTok());
  const dir = join(await tmp(), 'chat');
  await exportHf(ckpt, dir);
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  assert.deepEqual([config.eos_token_id, config.bos_token_id], [2, 1]);
  assert.deepEqual((await readHfModel(dir)).checkpoint.tokenizer.toJSON(), ckpt.tokenizer.toJSON());
  // transformers' generate reads generation_config.json: its list wins over config.json.
  const gen = JSON.parse(await readFile(join(dir, 'generation_config.json'), 'utf8'));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ ...gen, eos_token_id: [0, 2], bos_token_id: 0 }));
  const back = (await readHfModel(dir)).checkpoint.tokenizer;
  assert.deepEqual([back.eos, back.bos], [undefined, undefined], '<|endoftext|> is the default: nothing recorded');
  // No generation_config.json: config.json's; an id that is no special token is left out.
  await writeFile(join(dir, 'generation_config.json'), '{}');
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, eos_token_id: 2, bos_token_id: 77 }));
  const plain = (await readHfModel(dir)).checkpoint.tokenizer;
  assert.deepEqual([plain.eos, plain.bos], ['<|im_end|>', undefined]);
});

test('import gives back the checkpoint: config, weights and tokenizer', async () => {
  const ckpt = checkpoint(bpeTok(), { rope_theta: 5000, rms_norm_eps: 1e-6, init: 'xavier-normal' });
  const dir = join(await tmp(), 'hf');
  await exportHf(ckpt, dir);
  const back = (await readHfModel(dir)).checkpoint;
  assert.deepEqual(back.config, ckpt.config);
  assert.deepEqual(back.weights, ckpt.weights);
  assert.deepEqual(back.tokenizer.toJSON(), ckpt.tokenizer.toJSON());
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  assert.equal(cfg.model_type, 'llama');
  assert.deepEqual(cfg.architectures, ['LlamaForCausalLM']);
  assert.equal(cfg.num_key_value_heads, 2);
  assert.equal(cfg.eos_token_id, ckpt.tokenizer.specialTokens!['<|endoftext|>']);

  // A shorter context: the same weights, positions up to it only (import --context).
  const short = (await readHfModel(dir, { context: 16 })).checkpoint;
  assert.deepEqual(short.config, { ...ckpt.config, context: 16 });
  assert.deepEqual(short.weights, ckpt.weights);
  for (const context of [0, 65, 2.5]) await assert.rejects(readHfModel(dir, { context }), /context must be a whole number from 1 to the model's 64 \(its max_position_embeddings/);
  const out = join(await tmp(), 'ck');
  await importCommand.run({ from: dir, out, context: 32 }, []);
  assert.equal(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).context, 32);
});

test('the text cleaning a model was trained with goes into tokenizer.json\'s normalizer and comes back on import', async () => {
  const root = await tmp();
  const cases: [string, Checkpoint['recorded'], unknown][] = [
    ['no record (init, import)', undefined, null],
    ['default cleaning', { clean: null }, { type: 'Sequence', normalizers: ['Replace', 'Replace', 'Replace', 'Replace', 'NFC'] }],
    ['lowercase, no nfc', { clean: { lowercase: true, nfc: false } }, { type: 'Sequence', normalizers: ['Replace', 'Replace', 'Replace', 'Replace', 'Lowercase'] }],
    ['every step off', { clean: { nfc: false, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false } }, null],
  ];
  for (const [name, recorded, want] of cases) {
    const ckpt: Checkpoint = { ...checkpoint(charTok()), ...(recorded ? { recorded } : {}) };
    const dir = join(root, name.replace(/\W/g, '_'));
    await exportHf(ckpt, dir);
    const normalizer = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')).normalizer;
    assert.deepEqual(normalizer && { ...normalizer, normalizers: normalizer.normalizers.map((n: { type: string }) => n.type) }, want, name);
    // Import reads the cleaning back; saved as a checkpoint it stays, and exports the same normalizer.
    const back = (await readHfModel(dir)).checkpoint;
    const clean = recordedClean(ckpt);
    assert.deepEqual(recordedClean(back), normalizer ? { ...DEFAULT_CLEAN, ...clean } : undefined, name);
    await saveCheckpoint(join(dir, 'ckpt'), back);
    const saved = await loadCheckpoint(join(dir, 'ckpt'));
    assert.deepEqual(recordedClean(saved), recordedClean(back), name);
    await exportHf(saved, join(dir, 'again'));
    assert.equal(await readFile(join(dir, 'again', 'tokenizer.json'), 'utf8'), await readFile(join(dir, 'tokenizer.json'), 'utf8'), name);
  }
  // A normalizer that is not one of ours (NFKC; ours out of order) is refused in one line.
  const dir = join(root, 'lowercase__no_nfc');
  const tokJson = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
  for (const [normalizer, re] of [[{ type: 'NFKC' }, /has a normalizer \(NFKC\) that minigpt's text cleaning does not do/],
    [{ type: 'Sequence', normalizers: [{ type: 'Lowercase' }, { type: 'Replace', pattern: { Regex: String.raw`\r\n?` }, content: '\n' }] }, /has a normalizer \(Replace\)/]] as const) {
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ ...tokJson, normalizer }));
    await assert.rejects(readHfModel(dir), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'));
  }
  // An export from before the page-breaks step has no normalizer for it: imported, that step is off.
  const [newlines, pageBreaks, ...rest] = tokJson.normalizer.normalizers;
  assert.equal(pageBreaks.content, '\n');
  assert.match(pageBreaks.pattern.Regex, /x\{C\}/);
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ ...tokJson, normalizer: { type: 'Sequence', normalizers: [newlines, ...rest] } }));
  assert.deepEqual(recordedClean((await readHfModel(dir)).checkpoint), { ...DEFAULT_CLEAN, lowercase: true, nfc: false, pageBreaks: false });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokJson));
  // The import's record holds its cleaning alone: no training data to evaluate on.
  const { evaluateRunData } = await import('../src/train/train.js');
  const loaded = await loadModel(join(root, 'lowercase__no_nfc', 'ckpt'), { backend: 'reference' });
  assert.deepEqual(loaded.clean, { ...DEFAULT_CLEAN, lowercase: true, nfc: false });
  await assert.rejects(evaluateRunData(loaded.model, loaded.tokenizer, join(root, 'lowercase__no_nfc', 'ckpt')), /records no training data/);
});

test('a char tokenizer\'s <|endoftext|> is an added special token, BOS/EOS in the configs, and imports back', async () => {
  const ckpt = checkpoint(charTok());
  const eot = ckpt.tokenizer.specialTokens!['<|endoftext|>']!;
  assert.equal(eot, ckpt.tokenizer.vocabSize - 1);
  const dir = join(await tmp(), 'hf');
  await exportHf(ckpt, dir);
  const read = async (f: string): Promise<Record<string, unknown>> => JSON.parse(await readFile(join(dir, f), 'utf8'));
  const tokJson = await read('tokenizer.json');
  assert.deepEqual((tokJson.added_tokens as { id: number; content: string; special: boolean }[]).map((t) => [t.id, t.content, t.special]), [[eot, '<|endoftext|>', true]]);
  assert.equal(Object.keys((tokJson.model as { vocab: object }).vocab).length, eot, 'the WordLevel vocabulary holds the characters and the unk');
  const cfg = await read('config.json'), tokCfg = await read('tokenizer_config.json'), map = await read('special_tokens_map.json');
  assert.equal(cfg.eos_token_id, eot);
  assert.equal(cfg.bos_token_id, eot);
  assert.equal((await read('generation_config.json')).eos_token_id, eot);
  assert.equal(tokCfg.eos_token, '<|endoftext|>');
  assert.equal(map.eos_token, '<|endoftext|>');
  assert.equal(map.unk_token, '\u2400');
  const back = (await readHfModel(dir)).checkpoint.tokenizer;
  assert.deepEqual(back.toJSON(), ckpt.tokenizer.toJSON());
  // Before: no special tokens, no EOS.
  const oldDir = join(await tmp(), 'hf-old');
  await exportHf(checkpoint(oldCharTok()), oldDir);
  const oldCfg = JSON.parse(await readFile(join(oldDir, 'config.json'), 'utf8'));
  assert.equal(oldCfg.eos_token_id, null);
  assert.deepEqual(JSON.parse(await readFile(join(oldDir, 'tokenizer.json'), 'utf8')).added_tokens, []);
  assert.equal((await readHfModel(oldDir)).checkpoint.tokenizer.specialTokens, undefined);
});

test('sharded safetensors with model.safetensors.index.json import like one file', async () => {
  const ckpt = checkpoint(charTok());
  const dir = join(await tmp(), 'hf');
  await exportHf(ckpt, dir, { dtype: 'BF16' });
  const named = [...namedWeights(ckpt.config, ckpt.weights, 'BF16')];
  const half = Math.floor(named.length / 2);
  const shards = [named.slice(0, half), named.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, part] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeFile(join(dir, file), encodeSafetensors(new Map(part), { format: 'pt' }));
    for (const [name] of part) weightMap[name] = file;
  }
  const { rm } = await import('node:fs/promises');
  await rm(join(dir, 'model.safetensors'));
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const { checkpoint: back, dtype } = await readHfModel(dir);
  assert.equal(dtype, 'BF16');
  const direct = (await readHfModel(dir)).checkpoint;
  assert.deepEqual(back.weights, direct.weights);
  assert.equal(back.weights.length, ckpt.weights.length);
});

test('import refuses what minigpt cannot run, with one-line reasons', async () => {
  const ckpt = checkpoint(charTok());
  const src = join(await tmp(), 'hf');
  await exportHf(ckpt, src);
  const cfg = JSON.parse(await readFile(join(src, 'config.json'), 'utf8'));
  const tokJson = await readFile(join(src, 'tokenizer.json'), 'utf8');
  const cases: [string, (c: Record<string, unknown>) => void, RegExp, string?][] = [
    ['rope scaling', (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 }), /rope scaling "yarn" is not supported/],
    ['bias', (c) => (c.attention_bias = true), /attention_bias is true/],
    ['arch', (c) => { c.model_type = 'gpt2'; c.architectures = ['GPT2LMHeadModel']; }, /model_type "gpt2" \(GPT2LMHeadModel\) is not supported/],
    ['act', (c) => (c.hidden_act = 'gelu'), /hidden_act "gelu"/],
    ['head', (c) => (c.architectures = ['GPT2LMHeadModel']), /architectures GPT2LMHeadModel is not LlamaForCausalLM; minigpt imports causal language models of model_type "llama"/],
    ['classifier', (c) => (c.architectures = ['LlamaForSequenceClassification']), /architectures LlamaForSequenceClassification is not LlamaForCausalLM/],
    ['tokenizer', () => {}, /tokenizer model "Unigram" is not supported/, JSON.stringify({ model: { type: 'Unigram', vocab: [] }, normalizer: null })],
    // "." leaves newlines out (Oniguruma), so "\n\n" would be one piece the vocabulary lacks.
    ['dot', () => {}, /a WordLevel tokenizer is imported only as minigpt's character tokenizer \(a Split pre-tokenizer isolating every character\)/,
      JSON.stringify({ ...JSON.parse(tokJson), pre_tokenizer: { type: 'Split', pattern: { Regex: '.' }, behavior: 'Isolated', invert: false } })],
    ['bos', () => {}, /has a TemplateProcessing post-processor, which adds tokens \(such as a BOS token\)/,
      JSON.stringify({ ...JSON.parse(tokJson), post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }] } })],
  ];
  for (const [name, edit, re, tok] of cases) {
    const dir = join(await tmp(), name);
    const c = structuredClone(cfg);
    edit(c);
    const files = hfExportFiles(ckpt);
    files.set('config.json', new TextEncoder().encode(JSON.stringify(c)));
    files.set('tokenizer.json', new TextEncoder().encode(tok ?? tokJson));
    const { writeDirAtomic } = await import('../src/io/hf.js');
    await writeDirAtomic(dir, files);
    await assert.rejects(readHfModel(dir), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'), name);
  }
});

test('Qwen2: import refuses sliding-window attention and other biases; the export needs a Qwen2 tokenizer (transformers tokenizes every Qwen2 model with its own) and a SwiGLU MLP', async () => {
  const ckpt = qwen2();
  const files = hfExportFiles(ckpt);
  const cfg = JSON.parse(new TextDecoder().decode(files.get('config.json')));
  assert.equal(cfg.model_type, 'qwen2');
  assert.deepEqual(cfg.architectures, ['Qwen2ForCausalLM']);
  const { writeDirAtomic } = await import('../src/io/hf.js');
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['window', (c) => { c.use_sliding_window = true; c.sliding_window = 16; }, /use_sliding_window is true \(a window of 16 tokens\)/],
    ['layer types', (c) => (c.layer_types = ['full_attention', 'sliding_attention']), /layer_types .* has layers other than "full_attention"/],
    ['llama biases', (c) => { c.model_type = 'llama'; c.architectures = ['LlamaForCausalLM']; }, /tensor model\.layers\.0\.self_attn\.q_proj\.bias is a bias; minigpt's models have none but Qwen2's/],
  ];
  for (const [name, edit, re] of cases) {
    const dir = join(await tmp(), name.replace(/\W/g, '_'));
    const c = structuredClone(cfg);
    edit(c);
    await writeDirAtomic(dir, new Map([...files, ['config.json', new TextEncoder().encode(JSON.stringify(c))]]));
    await assert.rejects(readHfModel(dir), (e: unknown) => e instanceof MinigptError && re.test(e.message) && !e.message.includes('\n'), name);
  }
  // A context no longer than the window is full attention: it imports.
  const windowed = join(await tmp(), 'windowed');
  await writeDirAtomic(windowed, new Map([...files, ['config.json', new TextEncoder().encode(JSON.stringify({ ...cfg, use_sliding_window: true, sliding_window: 16 }))]]));
  assert.equal((await readHfModel(windowed, { context: 16 })).checkpoint.config.context, 16);
  // A window as long as the context is full attention: it imports.
  const wide = join(await tmp(), 'wide');
  await writeDirAtomic(wide, new Map([...files, ['config.json', new TextEncoder().encode(JSON.stringify({ ...cfg, use_sliding_window: true, sliding_window: ckpt.config.context }))]]));
  assert.deepEqual((await readHfModel(wide)).checkpoint.config, ckpt.config);
  assert.throws(() => hfExportFiles(checkpoint(bpeTok(), { qkv_bias: true })), /exports as Qwen2ForCausalLM, and transformers tokenizes every Qwen2 model with Qwen2's own tokenizer .*not this bpe tokenizer/);
  assert.throws(() => hfExportFiles(checkpoint(hfBpeFixtureTokenizer('llama3-style'), { qkv_bias: true })), /not this hf-bpe tokenizer/);
  assert.throws(() => hfExportFiles(checkpoint(bpeTok(), { qkv_bias: true, mlp: 'gelu' })), /a GELU-MLP model with q, k and v biases has no Hugging Face architecture/);
  // transformers normalizes a Qwen2 model's text with NFC alone: other cleaning is a warning.
  const warnings = (recorded: Checkpoint['recorded']): string[] => {
    const got: string[] = [];
    hfExportFiles({ ...ckpt, recorded }, { onWarning: (m) => got.push(m) });
    return got;
  };
  assert.deepEqual(warnings(ckpt.recorded), []);
  assert.deepEqual(warnings({ clean: {} }), ['transformers tokenizes a Qwen2 model\'s text with NFC alone, and this model\'s text was cleaned with newlines, page-breaks, control-chars, blank-lines: clean prompts for it as minigpt does (text those steps change gets other ids in transformers than here)']);
  assert.match(warnings({ clean: { lowercase: true, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false } })[0]!, /cleaned with lowercase:/);
  assert.match(warnings(undefined)[0]!, /cleaned without NFC:/);
});

const py = findPython(['torch', 'transformers']);

test('transformers loads the export: AutoTokenizer gives our ids, AutoModelForCausalLM our logits (1e-4)', { skip: py.skip }, async () => {
  const backend = await createBackend('reference');
  const kinds: [string, Checkpoint][] = [
    ['char', checkpoint(charTok())],
    ['char-old', checkpoint(oldCharTok())],
    ['gpt2', checkpoint(gpt2Tokenizer(), { d_model: 16, n_heads: 2, n_kv_heads: 1, n_layers: 2, tie_embeddings: true })],
    ['bpe', checkpoint(bpeTok(), { rope_theta: 500 })],
    ['bpe-gelu (Arcee)', checkpoint(bpeTok(), { mlp: 'gelu' }, 5)],
    // q, k and v biases: Qwen2ForCausalLM, which transformers tokenizes with Qwen2's own tokenizer.
    ['hf-bpe-qwen2 (Qwen2)', qwen2(6)],
    // Trained on lowercased text: the normalizer cleans as minigpt cleans a prompt.
    ['gpt2-lowercase', { ...checkpoint(gpt2Tokenizer(), { d_model: 16, n_heads: 2, n_layers: 1 }), recorded: { clean: { lowercase: true } } }],
    // Imported from Hugging Face tokenizers: special tokens first and digits one by one (SmolLM), or ignore_merges.
    ['hf-bpe-smollm', checkpoint(hfBpeFixtureTokenizer('smollm-style'), { tie_embeddings: true })],
    ['hf-bpe-gpt2', checkpoint(hfBpeFixtureTokenizer('gpt2-style'))],
    // SentencePiece-style (Llama 2's layout, "<s>" before every text; Metaspace without byte fallback).
    ['sp-bpe-llama', { ...checkpoint(spBpeFixtureTokenizer('llama-style')), recorded: { clean: { lowercase: true } } }],
    ['sp-bpe-metaspace-unk', checkpoint(spBpeFixtureTokenizer('metaspace-unk'))],
    // Byte fallback with a Metaspace layout: the export's decoder must turn byte tokens back into bytes.
    ['sp-bpe-metaspace-first', checkpoint(spBpeFixtureTokenizer('metaspace-first'))],
  ];
  const jobs: { dir: string; texts: string[]; ids: number[][]; decode: number[][]; resave: string }[] = [];
  const root = await tmp();
  for (const [kind, ckpt] of kinds) {
    const dir = join(root, kind.replace(/\W/g, '_'));
    await exportHf(ckpt, dir);
    const tok = ckpt.tokenizer;
    const texts = kind === 'char' ? [...TEXTS, 'unknown \u2713 char', 'special <|endoftext|> token'] : kind === 'char-old' ? TEXTS
      : kind === 'gpt2-lowercase' ? [...TEXTS, 'HELLO\r\nWorld\rÉTÉ', 'cafe\u0301 CAFÉ', 'bell\u0007 del\u007f nel\u0085 tab\t', 'Page one.\fPage two.\u000bnext\n\f\f\nend', 'a\n\n \n\t\n\nb\n\n\nc']
      : kind.startsWith('hf-bpe') ? [...TEXTS, 'special <|endoftext|> token', 'page  12  of   300 zqxj', '<|im_start|>user<|im_end|>'.slice(0, kind === 'hf-bpe-gpt2' ? 0 : undefined),
        // Added tokens that are not special (Qwen2.5's): found in any text.
        ...(kind.startsWith('hf-bpe-qwen2') ? ['<tool_call>{"a": 1}</tool_call> x<tool_call', '<|im_start|><|fim_prefix|>def<|im_end|>'] : [])]
      : kind.startsWith('sp-bpe') ? [...TEXTS, 'a<s>b</s> c', ' \u2581marked ZQXJ']
      : [...TEXTS, 'special <|endoftext|> token'];
    const clean = recordedClean(ckpt);
    // transformers adds what the post-processor adds (sp-bpe's "<s>"), as textStartIds.
    const ours = texts.map((t) => [...textStartIds(tok), ...tok.encode(clean ? cleanText(t, clean) : t, tok.specialTokens ? { allowedSpecial: 'all' } : {})]);
    const ids = ours.slice(0, 3).map((x) => x.slice(0, ckpt.config.context));
    jobs.push({ dir, texts, ids, decode: ours, resave: `${dir}-resaved` });
  }
  await writeFile(join(root, 'req.json'), JSON.stringify(jobs));
  const run = spawnSync(py.python!, [join(ROOT, 'scripts', 'hf_check.py'), join(root, 'req.json'), join(root, 'out.json')], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  // Our files load without transformers or tokenizers complaining about them (the tokenizers
  // library prints to stdout).
  assert.doesNotMatch(run.stdout + run.stderr, /unknown kwarg/i);
  const outs = JSON.parse(await readFile(join(root, 'out.json'), 'utf8'));
  for (const [k, [kind, ckpt]] of kinds.entries()) {
    const { texts, ids, decode: ours } = jobs[k]!;
    const out = outs[k];
    const tok = ckpt.tokenizer;
    assert.equal(out.model_class, ckpt.config.qkv_bias ? 'Qwen2ForCausalLM' : ckpt.config.mlp === 'swiglu' ? 'LlamaForCausalLM' : 'ArceeForCausalLM');
    for (let i = 0; i < texts.length; i++) assert.deepEqual(out.encodings[i], ours[i], `${kind}: HF ids for ${JSON.stringify(texts[i])}`);
    for (let i = 0; i < texts.length; i++) assert.equal(out.decoded[i], tok.decode(ours[i]!), `${kind}: HF decode`);
    const m = createModel(backend, ckpt.config);
    setWeights(m, ckpt.weights);
    let worst = 0;
    for (let s = 0; s < ids.length; s++) {
      const mine = await computeLogits(m, ids[s]!);
      const theirs = out.logits[s] as number[];
      assert.equal(theirs.length, mine.length);
      for (let i = 0; i < mine.length; i++) worst = Math.max(worst, Math.abs(mine[i]! - theirs[i]!));
    }
    console.log(`# ${kind}: transformers ${out.model_class}/${out.tokenizer_class}: ids equal on ${texts.length} texts; max |logit diff| ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-4, `${kind}: max logit difference ${worst}`);

    // What transformers itself wrote (bf16, sharded, tokenizer re-serialised) imports back.
    const resaved = jobs[k]!.resave;
    assert.ok((await readdir(resaved)).includes('model.safetensors.index.json'), `${kind}: transformers did not shard`);
    const back = await readHfModel(resaved);
    assert.equal(back.dtype, 'BF16');
    assert.deepEqual(back.checkpoint.config, ckpt.config);
    assert.deepEqual(back.checkpoint.tokenizer.toJSON(), ckpt.tokenizer.toJSON());
    const clean = recordedClean(ckpt);
    assert.deepEqual(recordedClean(back.checkpoint), clean && { ...DEFAULT_CLEAN, ...clean }, `${kind}: the cleaning after transformers re-saved the tokenizer`);
    const bf16 = roundToBf16(ckpt.weights, new Float32Array(ckpt.weights.length));
    assert.ok(back.checkpoint.weights.every((x, i) => x === bf16[i]), `${kind}: weights after transformers' bf16 save`);
  }
});
