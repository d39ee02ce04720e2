/**
 * GGUF export: structure always; with the Python venv, llama.cpp's `gguf` reader reads the
 * metadata and tensors back equal (q/k permuted as convert_hf_to_gguf.py does, computed there);
 * with node-llama-cpp installed, llama.cpp itself loads the file, tokenizes like us and its raw
 * logits for every prompt position match ours (1e-3).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeGguf, exportGguf, ggufFromCheckpoint, ggufTokenizerMetadata, permuteForGgufRope, GGUF_MAGIC, GgufTokenType, type GgufValue } from '../src/io/gguf.js';
import { exportHf } from '../src/io/hf.js';
import type { Checkpoint } from '../src/io/checkpoint.js';
import { resolveConfig, type ModelConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer, makeTokenizer, tokenizerFromJson, type Tokenizer } from '../src/data/tokenizer.js';
import { HF_BPE_FIXTURE, HF_BPE_SPLIT_FIXTURE, hfBpeFixtureTokenizer } from './support/hf-bpe-fixture.js';
import { SP_BPE_FIXTURE, spBpeFixtureTokenizer } from './support/sp-bpe-fixture.js';
import { gpt2Tokenizer } from '../src/data/gpt2.js';
import { createBackend } from '../src/backend/index.js';
import { createModel, setWeights } from '../src/model/model.js';
import { computeLogits } from '../src/inference.js';
import { MinigptError } from '../src/errors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const value = (md: Map<string, GgufValue>, key: string): unknown => md.get(key)?.value;
const tmp = (): Promise<string> => mkdtemp(join(tmpdir(), 'minigpt-gguf-'));

function findPython(modules: string[]): { python?: string; skip?: string } {
  const python = process.env.MINIGPT_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `no Python venv at ${python} (run scripts/setup-venv.sh or set MINIGPT_PYTHON)` };
  const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} lacks ${modules.join(', ')}: ${(r.stderr || '').trim().split('\n').pop()}` };
  return { python };
}

const TEXT = 'Hello, world! naïve café — 日本語 😀 it\'s 42\n\n  spaces\ttab';

function checkpoint(tokenizer: Tokenizer, extra: Partial<ModelConfig> = {}, seed = 7): Checkpoint {
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 64, ...extra });
  const layout = paramLayout(config);
  const weights = initialWeights(config, layout, createRng(seed));
  for (const s of layout.specs) if (s.kind === 'norm') for (let i = 0; i < s.shape[0]!; i++) weights[s.offset + i] = 1 + 0.1 * Math.cos(i + s.offset);
  // Biases start at 0; these are not, so a bias llama.cpp dropped or did not permute would show in the logits.
  for (const s of layout.specs) if (s.kind === 'bias') for (let i = 0; i < s.shape[0]!; i++) weights[s.offset + i] = 0.8 * Math.sin(3 * i + s.offset);
  return { config, weights, tokenizer };
}

/** As minigpt train makes it: the characters, then <|endoftext|>. */
const charTok = (): Tokenizer => makeTokenizer('char', TEXT + 'abcdefghijklmnopqrstuvwxyz');
/** As checkpoints from before char tokenizers had <|endoftext|>. */
const oldCharTok = (): Tokenizer => buildCharTokenizer(TEXT + 'abcdefghijklmnopqrstuvwxyz');
const bpeTok = (): Tokenizer => makeTokenizer('bpe', (TEXT + ' the quick brown fox jumps over the lazy dog ').repeat(4), { vocabSize: 320 });

test('GGUF header, alignment and the q/k permutation', () => {
  const ckpt = checkpoint(charTok());
  const bytes = encodeGguf(ggufFromCheckpoint(ckpt));
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  assert.equal(view.getUint32(0, true), GGUF_MAGIC);
  assert.equal(view.getUint32(4, true), 3);
  assert.equal(Number(view.getBigUint64(8, true)), 2 + 9 * 2 + 1); // embd, 9 per block, output_norm, output
  assert.equal(bytes.length % 32, 0);
  // One head of 4 rows: rotate-half rows [a0 a1 | b0 b1] become adjacent pairs [a0 b0 a1 b1].
  const w = Float32Array.from([0, 0, 1, 1, 2, 2, 3, 3]);
  assert.deepEqual(Array.from(permuteForGgufRope(w, 4, 2, 1)), [0, 0, 2, 2, 1, 1, 3, 3]);
  assert.throws(() => ggufFromCheckpoint(checkpoint(charTok(), { mlp: 'gelu' })), (e: unknown) => e instanceof MinigptError && /GELU-MLP model cannot be exported to GGUF/.test(e.message));
});

test('a char tokenizer\'s <|endoftext|> is a CONTROL token and BOS/EOS; without one the export warns about id 11', () => {
  const tok = charTok();
  const eot = tok.specialTokens!['<|endoftext|>']!;
  assert.equal(eot, tok.vocabSize - 1);
  const warnings: string[] = [];
  const md = ggufFromCheckpoint(checkpoint(tok, { vocab_size: tok.vocabSize + 3 }), { onWarning: (m) => warnings.push(m) }).metadata;
  assert.equal(warnings.length, 0);
  assert.equal(value(md, 'tokenizer.ggml.eos_token_id'), eot);
  assert.equal(value(md, 'tokenizer.ggml.bos_token_id'), eot);
  const tokens = value(md, 'tokenizer.ggml.tokens') as string[], types = Array.from(value(md, 'tokenizer.ggml.token_type') as Int32Array);
  assert.equal(tokens[eot], '<|endoftext|>');
  assert.deepEqual(types.map((t, i) => [t, i]).filter(([t]) => t !== GgufTokenType.NORMAL), [[GgufTokenType.CONTROL, eot], ...[1, 2, 3].map((k) => [GgufTokenType.UNUSED, eot + k])]);

  const old = oldCharTok();
  const oldMd = ggufFromCheckpoint(checkpoint(old), { onWarning: (m) => warnings.push(m) }).metadata;
  assert.equal(oldMd.has('tokenizer.ggml.eos_token_id'), false);
  assert.equal(warnings.length, 1);
  assert.ok(!warnings[0]!.includes('\n'), 'one line');
  assert.match(warnings[0]!, new RegExp(`no "<\\|endoftext\\|>" token .*the character with id 11, ${JSON.stringify(old.decode([11])).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, as end of text.*retraining with a current minigpt`));
  // With no character at id 11, nothing to warn about.
  ggufFromCheckpoint(checkpoint(buildCharTokenizer('ab c\n')), { onWarning: (m) => warnings.push(m) });
  assert.equal(warnings.length, 1);
});

test('a model trained on lowercased text: the GGUF export warns that llama.cpp will not lowercase prompts', () => {
  const warnings: string[] = [];
  ggufFromCheckpoint({ ...checkpoint(charTok()), recorded: { clean: null } }, { onWarning: (m) => warnings.push(m) });
  assert.equal(warnings.length, 0, 'the default cleaning leaves ordinary prompts as they are: nothing to say');
  ggufFromCheckpoint({ ...checkpoint(charTok()), recorded: { clean: { lowercase: true } } }, { onWarning: (m) => warnings.push(m) });
  assert.deepEqual(warnings, ['the model was trained on lowercased text, and llama.cpp does not lowercase prompts: lowercase them yourself (the hf export\'s tokenizer.json does it)']);
});

const py = findPython(['gguf', 'numpy', 'safetensors']);

test('llama.cpp\'s gguf reader reads metadata and tensors back equal', { skip: py.skip }, async () => {
  const root = await tmp();
  for (const [kind, ckpt, dtype] of [
    ['char', checkpoint(charTok(), { vocab_size: 64 + 10 }), 'F32'],
    ['bpe', checkpoint(bpeTok(), { tie_embeddings: true }), 'F16'],
    ['qwen2-qkv-bias', checkpoint(hfBpeFixtureTokenizer('qwen2-style'), { qkv_bias: true, tie_embeddings: true }), 'F16'],
    ['hf-bpe', checkpoint(hfBpeFixtureTokenizer('smollm-style'), { tie_embeddings: true }), 'F32'],
  ] as const) {
    const hf = join(root, `${kind}-hf`), file = join(root, `${kind}.gguf`), out = join(root, `${kind}.json`);
    await exportHf(ckpt, hf);
    await exportGguf(ckpt, file, { dtype });
    execFileSync(py.python!, [join(ROOT, 'scripts', 'gguf_check.py'), file, hf, out], { stdio: ['ignore', 'ignore', 'pipe'] });
    const r = JSON.parse(await readFile(out, 'utf8'));
    assert.deepEqual(r.mismatches, [], kind);
    const c = ckpt.config, md = r.metadata;
    assert.equal(md['general.architecture'], 'llama');
    assert.equal(md['llama.context_length'], c.context);
    assert.equal(md['llama.embedding_length'], c.d_model);
    assert.equal(md['llama.block_count'], c.n_layers);
    assert.equal(md['llama.feed_forward_length'], c.intermediate_size);
    assert.equal(md['llama.attention.head_count'], c.n_heads);
    assert.equal(md['llama.attention.head_count_kv'], c.n_kv_heads);
    assert.equal(md['llama.rope.dimension_count'], c.d_model / c.n_heads);
    assert.equal(Math.fround(md['llama.attention.layer_norm_rms_epsilon']), Math.fround(c.rms_norm_eps));
    assert.equal(md['llama.rope.freq_base'], c.rope_theta);
    assert.equal(md['tokenizer.ggml.model'], 'gpt2');
    assert.equal(md['tokenizer.ggml.tokens'].length, c.vocab_size);
    assert.equal(md['tokenizer.ggml.token_type'].length, c.vocab_size);
    assert.equal(r.tensors['token_embd.weight'].type, dtype);
    assert.equal(r.tensors['output_norm.weight'].type, 'F32');
    assert.deepEqual(r.tensors['token_embd.weight'].ne, [c.d_model, c.vocab_size]);
    assert.equal('output.weight' in r.tensors, !c.tie_embeddings);
  }
});

/** node-llama-cpp, when installed (npm devDependency). */
function nodeLlamaCpp(): string | undefined {
  const entry = join(ROOT, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
  return existsSync(entry) ? entry : undefined;
}

const RUNNER = (entry: string): string => `
import { getLlama, LlamaLogLevel } from ${JSON.stringify(entry)};
import { readFileSync, writeFileSync } from 'node:fs';
const [req, out] = process.argv.slice(2);
const jobs = JSON.parse(readFileSync(req, 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const results = [];
for (const job of jobs) {
  const model = await llama.loadModel({ modelPath: job.gguf, gpuLayers: 0 });
  const tokens = job.texts.map((t) => Array.from(model.tokenize(t, false)));
  const eog = [];
  for (let id = 0; id < job.vocab; id++) if (model.isEogToken(id)) eog.push(id);
  const special = { bos: model.tokens.bos, eos: model.tokens.eos, eog };
  const context = await model.createContext({ contextSize: job.contextSize, batchSize: job.contextSize, sequences: 1 });
  const seq = context.getSequence();
  const res = await seq.controlledEvaluate(job.ids.map((t) => [t, { generateNext: { logits: true } }]));
  const logits = res.map((r) => { const row = new Array(job.vocab).fill(null); for (const [k, v] of r.next.logits) row[k] = v; return row; });
  results.push({ tokens, logits, special, nVocab: model.tokens.length ?? null });
  await context.dispose();
  await model.dispose();
}
writeFileSync(out, JSON.stringify(results));
await llama.dispose();
process.exit(0);
`;

const llamaEntry = nodeLlamaCpp();

test('node-llama-cpp (llama.cpp) loads the GGUF (a 5-token vocabulary too): our token ids, our logits (1e-3), <|endoftext|> its only end-of-generation token', { skip: llamaEntry ? undefined : 'node-llama-cpp is not installed (npm install: it is a devDependency)' }, async () => {
  const root = await tmp();
  const backend = await createBackend('reference');
  const cases: [string, Checkpoint, 'F32' | 'F16'][] = [
    ['char', checkpoint(charTok()), 'F32'],
    // No <|endoftext|> (an older checkpoint): llama.cpp ends generation at the character with id 11.
    ['char-old', checkpoint(oldCharTok()), 'F32'],
    // Five tokens: llama.cpp's default BOS/EOS ids for a gpt2-style vocabulary (11) do not exist.
    ['char-tiny', checkpoint(buildCharTokenizer('ab c\n')), 'F32'],
    ['bpe', checkpoint(bpeTok(), { tie_embeddings: true, rope_theta: 500 }), 'F32'],
    // Qwen2's q, k and v biases: llama.cpp's llama architecture adds them (q's and k's permuted for its RoPE).
    ['bpe-qkv-bias', checkpoint(bpeTok(), { qkv_bias: true }), 'F16'],
    ['gpt2', checkpoint(gpt2Tokenizer(), { d_model: 16, n_heads: 2, n_kv_heads: 1, n_layers: 1 }), 'F32'],
    // Imported from Hugging Face: special tokens first, digits one by one (llama.cpp's "smollm" pre-tokenizer).
    ['hf-bpe-smollm', checkpoint(hfBpeFixtureTokenizer('smollm-style'), { tie_embeddings: true }), 'F32'],
    // Qwen2's and Llama 3's split (llama.cpp's "qwen2" and "llama-bpe"; Llama 3's with a token only ignore_merges reaches).
    ['hf-bpe-qwen2', checkpoint(hfBpeFixtureTokenizer('qwen2-style')), 'F32'],
    ['hf-bpe-llama3', checkpoint(tokenizerFromJson({ ...hfBpeFixtureTokenizer('llama3-style').toJSON(), eos: '<|end_of_text|>', bos: '<|begin_of_text|>' }, 'llama3')), 'F32'],
    // SentencePiece-style (Llama 2's layout): llama.cpp's "llama" vocabulary, scores from the merge order.
    ['sp-bpe-llama', checkpoint(spBpeFixtureTokenizer('llama-style')), 'F32'],
  ];
  const jobs = [];
  for (const [kind, ckpt, dtype] of cases) {
    const gguf = join(root, `${kind}.gguf`);
    await exportGguf(ckpt, gguf, { dtype, onWarning: () => {} });
    const texts = kind === 'char-tiny' ? ['ab c', 'c\nba  b'] : kind === 'hf-bpe-qwen2' || kind === 'hf-bpe-llama3' ? [TEXT, ...HF_BPE_SPLIT_FIXTURE['qwen2-style'].texts.filter((t) => t !== '' && !t.includes('<|'))]
      : kind.startsWith('hf-bpe') ? [TEXT, ...HF_BPE_FIXTURE['smollm-style'].texts.filter((t) => t !== '' && !t.includes('<|'))]
      : kind.startsWith('sp-bpe') ? [TEXT, ...SP_BPE_FIXTURE['llama-style'].texts.filter((t) => t !== '' && !/<\/?s>/.test(t))] : [TEXT, 'the lazy dog'];
    const ids = Array.from(ckpt.tokenizer.encode(texts[0]!)).slice(0, 24);
    jobs.push({ gguf, texts, ids, vocab: ckpt.config.vocab_size, contextSize: ckpt.config.context });
  }
  const script = join(root, 'llama-runner.mjs');
  await writeFile(script, RUNNER(llamaEntry!));
  await writeFile(join(root, 'req.json'), JSON.stringify(jobs));
  execFileSync(process.execPath, [script, join(root, 'req.json'), join(root, 'out.json')], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  const outs = JSON.parse(await readFile(join(root, 'out.json'), 'utf8'));
  for (const [k, [kind, ckpt]] of cases.entries()) {
    const job = jobs[k]!, out = outs[k];
    job.texts.forEach((t, i) => assert.deepEqual(out.tokens[i], Array.from(ckpt.tokenizer.encode(t)), `${kind}: llama.cpp tokens for ${JSON.stringify(t)}`));
    const m = createModel(backend, ckpt.config);
    setWeights(m, ckpt.weights);
    const mine = await computeLogits(m, job.ids);
    const V = ckpt.config.vocab_size;
    let worst = 0;
    for (let t = 0; t < job.ids.length; t++) {
      const row = out.logits[t] as (number | null)[];
      for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(mine[t * V + v]! - (row[v] ?? NaN)));
    }
    console.log(`# ${kind}: llama.cpp tokens equal; max |logit diff| over ${job.ids.length} positions x ${V} = ${worst.toExponential(2)}; bos ${out.special.bos}, eos ${out.special.eos}, end-of-generation ids [${out.special.eog}]`);
    assert.ok(worst < 1e-3, `${kind}: llama.cpp logits differ from ours by ${worst}`);
    const eot = ckpt.tokenizer.specialTokens?.['<|endoftext|>'];
    if (eot !== undefined) {
      // What llama.cpp needs to stop only where the model ends the text: no ordinary token is end-of-generation.
      assert.equal(out.special.eos, eot, `${kind}: llama.cpp's EOS`);
      // llama.cpp also ends at special tokens it knows by their text (SmolLM's <|im_end|>), as for the model itself.
      const specials = Object.values(ckpt.tokenizer.specialTokens ?? {});
      if (kind.startsWith('hf-bpe')) assert.ok(out.special.eog.includes(eot) && out.special.eog.every((id: number) => specials.includes(id)), `${kind}: llama.cpp's end-of-generation tokens ${out.special.eog}`);
      else assert.deepEqual(out.special.eog, [eot], `${kind}: llama.cpp's end-of-generation tokens`);
    } else if (kind === 'hf-bpe-llama3') {
      // An imported Llama 3's own end-of-text and start-of-text tokens (its config's ids).
      assert.deepEqual([out.special.bos, out.special.eos], [801, 802], `${kind}: llama.cpp's BOS and EOS`);
      assert.ok(out.special.eog.includes(802) && out.special.eog.every((id: number) => id >= 801), `${kind}: llama.cpp's end-of-generation tokens ${out.special.eog}`);
      assert.ok(job.texts.includes('zqxj Zqxj  zqxj') && Array.from(ckpt.tokenizer.encode(' zqxj')).join() === '800', 'a token only the whole-word lookup reaches, which llama-bpe does too');
    } else if (kind.startsWith('sp-bpe')) {
      assert.equal(out.special.bos, 1, `${kind}: llama.cpp's BOS is "<s>"`);
      // Generation ends at "</s>" and, as minigpt's does, where the model starts another text ("<s>").
      assert.deepEqual(out.special.eog, [1, 2], `${kind}: llama.cpp's end-of-generation tokens`);
    } else if (kind === 'char-old') {
      assert.deepEqual(out.special.eog, [11], `${kind}: the character the export warns about`);
    }
  }
});

test('an sp-bpe tokenizer is llama.cpp\'s "llama" vocabulary: byte, unknown and control types, scores in merge order; Metaspace warns, no byte fallback is refused', () => {
  const tok = spBpeFixtureTokenizer('llama-style');
  const md = ggufTokenizerMetadata(tok, 1024, () => assert.fail('no warning for the legacy layout'));
  assert.equal(value(md, 'tokenizer.ggml.model'), 'llama');
  const tokens = value(md, 'tokenizer.ggml.tokens') as string[], types = Array.from(value(md, 'tokenizer.ggml.token_type') as Int32Array);
  const scores = value(md, 'tokenizer.ggml.scores') as Float32Array;
  assert.equal(tokens.length, 1024);
  assert.deepEqual([types[0], types[1], types[2], types[3], types[3 + 255], types[tokens.indexOf('\u2581t')], types[1023]], [2, 3, 3, 6, 6, 1, 5]);
  assert.deepEqual([value(md, 'tokenizer.ggml.bos_token_id'), value(md, 'tokenizer.ggml.unknown_token_id'), value(md, 'tokenizer.ggml.add_bos_token'), value(md, 'tokenizer.ggml.add_space_prefix')], [1, 0, true, true]);
  // The first merge's piece scores highest, the second's next; pieces no merge makes score 0.
  const merges = (tok.toJSON() as unknown as { merges: string[] }).merges;
  const piece = (m: string): number => tokens.indexOf(m.replace(' ', ''));
  assert.ok(scores[piece(merges[0]!)]! > scores[piece(merges[1]!)]! && scores[piece(merges[1]!)]! < 0);
  assert.equal(scores[3 + 0x41], 0);
  const warnings: string[] = [];
  ggufTokenizerMetadata(spBpeFixtureTokenizer('metaspace-first'), 1024, (m) => warnings.push(m));
  assert.match(warnings[0]!, /^llama\.cpp puts "\u2581" before every text, also one that starts with a space/);
  // Its merges are the ones the tokenizers library learned, not every split of each piece (as a converted SentencePiece model's).
  assert.match(warnings[1]!, /^\d+ of this tokenizer's pieces \(such as ".+"\) are made of two pieces its merges do not join, or by no merge: llama\.cpp/);
  assert.equal(warnings.length, 2);
  assert.throws(() => ggufTokenizerMetadata(spBpeFixtureTokenizer('metaspace-unk'), 1024), /this sp-bpe tokenizer has an unknown token instead/);
});

test('an export dtype the format has no such type for is an error, not a silent F32 or a TypeError', async () => {
  const ck = checkpoint(charTok());
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-dtype-'));
  for (const dtype of ['Q4', 'f16', 'BF16']) {
    await assert.rejects(exportGguf(ck, join(dir, `${dtype}.gguf`), { dtype: dtype as never }), (e: unknown) => e instanceof MinigptError && /^a GGUF export's dtype must be F32 or F16 \(got "/.test(e.message));
  }
  for (const dtype of ['F8', 'f16']) {
    await assert.rejects(exportHf(ck, join(dir, `hf-${dtype}`), { dtype: dtype as never }), (e: unknown) => e instanceof MinigptError && /^a Hugging Face export's dtype must be F32, F16 or BF16 \(got "/.test(e.message));
  }
});
