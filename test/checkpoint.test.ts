/** Checkpoints: exact round trips, atomic replacement, and clear errors for every kind of damage. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, readdir, mkdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveCheckpoint, loadCheckpoint, namedWeights, flatWeights } from '../src/io/checkpoint.js';
import { resolveConfig, type ModelConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js';
import { MinigptError } from '../src/errors.js';
import { roundToBf16, roundToF16 } from '../src/util/half.js';

const config: ModelConfig = resolveConfig({ vocab_size: 12, d_model: 16, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 16 });
const tokenizer = buildCharTokenizer('hello world!');
const weights = initialWeights(config, paramLayout(config), createRng(3));
const tmp = (): Promise<string> => mkdtemp(join(tmpdir(), 'minigpt-ckpt-'));
const userError = (re: RegExp) => (e: unknown): boolean => {
  assert.ok(e instanceof MinigptError, `expected a MinigptError, got ${e}`);
  assert.match(e.message, re);
  return true;
};

test('a checkpoint round-trips config, weights (bit-exact), tokenizer and training state', async () => {
  const dir = join(await tmp(), 'ck');
  const m = weights.map((x) => x * 0.5), v = weights.map((x) => x * x);
  await saveCheckpoint(dir, { config, weights, tokenizer, training: { step: 42, m, v, trainer: { rng: [1, 2, 3, 4] } } });
  const back = await loadCheckpoint(dir, { training: true });
  assert.deepEqual(back.config, config);
  assert.deepEqual(back.weights, weights);
  assert.equal(back.tokenizer.decode(back.tokenizer.encode('hello')), 'hello');
  assert.equal(back.training!.step, 42);
  assert.deepEqual(back.training!.m, m);
  assert.deepEqual(back.training!.v, v);
  assert.deepEqual(back.training!.trainer, { rng: [1, 2, 3, 4] });
  assert.deepEqual((await readdir(dir)).sort(), ['config.json', 'manifest.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.minigpt.json', 'trainer_state.json']);
});

test('model.safetensors uses Hugging Face LLaMA names with [out, in] shapes', async () => {
  const dir = join(await tmp(), 'ck');
  await saveCheckpoint(dir, { config, weights, tokenizer });
  const { tensors, metadata } = decodeSafetensors(await readFile(join(dir, 'model.safetensors')));
  assert.equal(metadata.format, 'pt');
  assert.deepEqual(tensors.get('model.layers.1.self_attn.k_proj.weight')!.shape, [8, 16]);
  assert.deepEqual(tensors.get('model.layers.0.self_attn.o_proj.weight')!.shape, [16, 16]);
  assert.deepEqual(tensors.get('model.layers.0.mlp.down_proj.weight')!.shape, [16, 64]);
  assert.deepEqual(tensors.get('lm_head.weight')!.shape, [12, 16]);
  assert.deepEqual([...tensors.keys()], [...namedWeights(config, weights).keys()]);
});

test('F16 and BF16 checkpoints store correctly rounded weights', async () => {
  for (const [dtype, round] of [['F16', roundToF16], ['BF16', roundToBf16]] as const) {
    const dir = join(await tmp(), 'ck');
    await saveCheckpoint(dir, { config, weights, tokenizer }, { dtype });
    const back = await loadCheckpoint(dir);
    assert.deepEqual(back.weights, round(Float32Array.from(weights)), dtype);
    const { tensors } = decodeSafetensors(await readFile(join(dir, 'model.safetensors')));
    assert.equal(tensors.get('model.norm.weight')!.dtype, dtype);
  }
});

test('saving over a checkpoint replaces it whole and leaves no temporary directories', async () => {
  const root = await tmp(), dir = join(root, 'ck');
  await saveCheckpoint(dir, { config, weights, tokenizer, training: { step: 1, m: weights, v: weights, trainer: {} } });
  const w2 = weights.map((x) => -x);
  await saveCheckpoint(dir, { config, weights: w2, tokenizer });
  const back = await loadCheckpoint(dir);
  assert.deepEqual(back.weights, w2);
  assert.deepEqual(await readdir(root), ['ck']);
  assert.ok(!(await readdir(dir)).includes('optimizer.safetensors'), 'files of the old checkpoint are gone');
});

test('saving over a checkpoint keeps files of the user\'s in its folder (notes, a folder of evaluations)', async () => {
  const root = await tmp(), dir = join(root, 'ck');
  await saveCheckpoint(dir, { config, weights, tokenizer, training: { step: 1, m: weights, v: weights, trainer: {} } });
  await writeFile(join(dir, 'NOTES.md'), 'my notes');
  await mkdir(join(dir, 'evals'));
  await writeFile(join(dir, 'evals', 'run1.json'), '{"loss": 1}');
  const inode = (await stat(join(dir, 'NOTES.md'))).ino;
  const w2 = weights.map((x) => -x);
  await saveCheckpoint(dir, { config, weights: w2, tokenizer });
  assert.equal((await stat(join(dir, 'NOTES.md'))).ino, inode, 'carried over by a hard link: the same file, not a copy');
  assert.deepEqual((await loadCheckpoint(dir)).weights, w2);
  assert.equal(await readFile(join(dir, 'NOTES.md'), 'utf8'), 'my notes');
  assert.equal(await readFile(join(dir, 'evals', 'run1.json'), 'utf8'), '{"loss": 1}');
  assert.deepEqual((await readdir(dir)).sort(), ['NOTES.md', 'config.json', 'evals', 'manifest.json', 'model.safetensors', 'tokenizer.minigpt.json']);
  assert.deepEqual(await readdir(root), ['ck']);
});

test('saving refuses to overwrite a directory that is not a checkpoint', async () => {
  const dir = await tmp();
  await writeFile(join(dir, 'my-notes.txt'), 'precious');
  await assert.rejects(saveCheckpoint(dir, { config, weights, tokenizer }), userError(/is not a minigpt checkpoint; refusing to overwrite/));
  assert.equal(await readFile(join(dir, 'my-notes.txt'), 'utf8'), 'precious');
});

async function damaged(damage: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(await tmp(), 'ck');
  await saveCheckpoint(dir, { config, weights, tokenizer, training: { step: 3, m: weights, v: weights, trainer: {} } });
  await damage(dir);
  return dir;
}

test('a flipped byte in model.safetensors fails its checksum', async () => {
  const dir = await damaged(async (d) => {
    const p = join(d, 'model.safetensors'), b = await readFile(p);
    b[b.length - 5] ^= 0x40;
    await writeFile(p, b);
  });
  await assert.rejects(loadCheckpoint(dir), userError(/model\.safetensors does not match its checksum/));
});

test('a truncated model.safetensors without a manifest is reported as truncated', async () => {
  const dir = await damaged(async (d) => {
    await rm(join(d, 'manifest.json'));
    await truncate(join(d, 'model.safetensors'), 1000);
  });
  await assert.rejects(loadCheckpoint(dir), userError(/truncated/));
});

test('missing files, bad JSON, wrong version, wrong shapes and mismatched tokenizers are clear errors', async () => {
  const cases: [string, (d: string) => Promise<void>, RegExp, boolean?][] = [
    ['missing tokenizer', (d) => rm(join(d, 'tokenizer.minigpt.json')), /tokenizer\.minigpt\.json is missing/],
    ['config not JSON', async (d) => { await rm(join(d, 'manifest.json')); await writeFile(join(d, 'config.json'), '{oops'); }, /config\.json is not valid JSON/],
    ['newer format', async (d) => {
      await rm(join(d, 'manifest.json'));
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, format_version: 99 }));
    }, /format_version 99; this minigpt reads version 1/],
    ['config from another model', async (d) => {
      await rm(join(d, 'manifest.json'));
      const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
      await writeFile(join(d, 'config.json'), JSON.stringify({ ...c, d_model: 32, n_heads: 4 }));
    }, /has shape \[12,32\], config\.json says|has shape \[12,16\], config\.json says \[12,32\]/],
    ['vocabulary smaller than the tokenizer', async (d) => {
      await rm(join(d, 'manifest.json'));
      await writeFile(join(d, 'tokenizer.minigpt.json'), JSON.stringify(buildCharTokenizer('abcdefghijklmnopqrstuvwxyz').toJSON()));
    }, /tokenizer and model do not belong together/],
    ['no optimizer state', (d) => rm(join(d, 'optimizer.safetensors')), /optimizer\.safetensors is missing|no optimizer state/, true],
  ];
  for (const [what, damage, re, training] of cases) {
    const dir = await damaged(damage);
    await assert.rejects(loadCheckpoint(dir, { training }), userError(re), what);
  }
  await assert.rejects(loadCheckpoint('/nonexistent/ckpt'), userError(/does not exist/));
  const file = join(await tmp(), 'file');
  await writeFile(file, 'x');
  await assert.rejects(loadCheckpoint(file), userError(/is a file; a checkpoint is a directory/));
  const empty = await tmp();
  await mkdir(join(empty, 'sub'));
  await assert.rejects(loadCheckpoint(empty), userError(/not a minigpt checkpoint \(no config\.json\)/));
});

test('loading our own file keeps the weights in its bytes (no copy); any other layout is gathered into a copy', async () => {
  const config = resolveConfig({ vocab_size: 12, d_model: 8, n_heads: 2, n_layers: 2, context: 8 });
  const weights = initialWeights(config, paramLayout(config), createRng(3));
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-view-'));
  await saveCheckpoint(dir, { config, weights, tokenizer: buildCharTokenizer('abcdefghij') });
  const bytes = await readFile(join(dir, 'model.safetensors'));
  const tensors = decodeSafetensors(bytes, 'model.safetensors').tensors;
  const view = flatWeights(config, tensors, 'model.safetensors');
  assert.deepEqual(view, weights);
  assert.equal(view.buffer, bytes.buffer, 'a view of the file bytes');
  // The same tensors each in a buffer of its own (as F16 files or other writers' layouts give): a copy, same values.
  const shuffled = new Map([...tensors].map(([name, t]) => [name, { ...t, data: (t.data as Float32Array).slice() }]));
  const copy = flatWeights(config, shuffled, 'shuffled');
  assert.deepEqual(copy, weights);
  assert.notEqual(copy.buffer, bytes.buffer);
  // BF16 tensors decode straight into the flat buffer: the values of each tensor rounded to bf16.
  const bf16Bytes = encodeSafetensors(new Map([...tensors].map(([name, t]) => [name, { dtype: 'BF16' as const, shape: t.shape, data: t.data as Float32Array }])));
  const halves = decodeSafetensors(bf16Bytes, 'bf16').tensors;
  assert.deepEqual(flatWeights(config, halves, 'bf16'), roundToBf16(weights, new Float32Array(weights.length)));
  const untouched = new Map([...halves].map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, readInto: t.readInto!.bind(t), get data(): Float32Array { throw new Error(`${name} decoded on its own`); } }]));
  assert.deepEqual(flatWeights(config, untouched, 'bf16'), roundToBf16(weights, new Float32Array(weights.length)));
  // A non-finite value is refused on every path.
  const bad = encodeSafetensors(new Map([...tensors].map(([name, t]) => [name, { dtype: 'BF16' as const, shape: t.shape, data: name === 'model.norm.weight' ? Float32Array.from(t.data, (v, i) => (i === 2 ? Infinity : v)) : t.data as Float32Array }])));
  assert.throws(() => flatWeights(config, decodeSafetensors(bad, 'bad').tensors, 'bad'), /tensor "model.norm.weight" contains Infinity at index 2; the checkpoint is corrupt/);
  (tensors.get('model.norm.weight')!.data as Float32Array)[1] = NaN;
  assert.throws(() => flatWeights(config, tensors, 'model.safetensors'), /tensor "model.norm.weight" contains NaN at index 1; the checkpoint is corrupt/);
  await rm(dir, { recursive: true });
});

test('a checkpoint read while saves replace it is read whole: one save or the other, never "corrupt" or "incomplete"', async () => {
  const dir = join(await tmp(), 'live', 'checkpoint');
  const other = weights.map((w) => w + 1);
  const trainer = (step: number) => ({ step, trainer: {}, m: new Float32Array(weights.length), v: new Float32Array(weights.length) });
  await saveCheckpoint(dir, { config, weights, tokenizer, training: trainer(1) });
  let saving = true, saves = 0;
  const saver = (async () => {
    while (saving) {
      await saveCheckpoint(dir, { config, weights: (saves + 1) % 2 ? other : weights, tokenizer, training: trainer((saves + 1) % 2 ? 2 : 1) });
      saves++;
      await new Promise((done) => setTimeout(done, 20)); // a training step between saves
    }
  })();
  // At least 60 reads, and on until more than 10 saves have finished beside them: a save fsyncs,
  // and on a loaded machine's disk 60 reads can end before 10 saves do. A minute at most.
  const deadline = Date.now() + 60_000;
  let reads = 0;
  try {
    for (; reads < 60 || (saves <= 10 && Date.now() < deadline); reads++) {
      const ckpt = await loadCheckpoint(join(dir, '..'), { training: true });
      const step = ckpt.training!.step;
      // The weights belong with the step: the files came from one save.
      assert.deepEqual(ckpt.weights, step === 2 ? other : weights, `read ${reads}, step ${step}`);
    }
  } finally {
    saving = false;
    await saver;
  }
  assert.ok(saves > 10, `${saves} saves finished beside ${reads} reads in a minute`);
});

test('optimizer moments holding NaN or Infinity are refused on resume, as weights are', async () => {
  const dir = join(await tmp(), 'nan-moments');
  const m = new Float32Array(weights.length), v = new Float32Array(weights.length);
  v[7] = Infinity;
  await saveCheckpoint(dir, { config, weights, tokenizer, training: { step: 3, trainer: {}, m, v } });
  await assert.rejects(loadCheckpoint(dir, { training: true }), userError(/optimizer\.safetensors: tensor "adamw\.v" contains Infinity at index 7; the checkpoint is corrupt$/));
  assert.equal((await loadCheckpoint(dir)).weights.length, weights.length, 'sampling needs no moments');
});

test('writeFileAtomic follows a symlink and writes its target, never replacing the link (plot --out link.svg, /dev/stdout redirected to a file)', async () => {
  const { writeFileAtomic } = await import('../src/util/fs.js');
  const { lstat, readlink, symlink } = await import('node:fs/promises');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-link-'));
  await mkdir(join(dir, 'shared'));
  await writeFile(join(dir, 'shared', 'real.svg'), 'old');
  await symlink(join('shared', 'real.svg'), join(dir, 'link.svg'));
  await writeFileAtomic(join(dir, 'link.svg'), 'new');
  assert.ok((await lstat(join(dir, 'link.svg'))).isSymbolicLink(), 'the link is still a link');
  assert.equal(await readlink(join(dir, 'link.svg')), join('shared', 'real.svg'));
  assert.equal(await readFile(join(dir, 'shared', 'real.svg'), 'utf8'), 'new');
  assert.deepEqual((await readdir(join(dir, 'shared'))).sort(), ['real.svg'], 'no temporary left beside the target');
  // A link to a file not there yet: written through the link, which stays.
  await symlink(join('shared', 'later.svg'), join(dir, 'later.svg'));
  await writeFileAtomic(join(dir, 'later.svg'), 'made');
  assert.ok((await lstat(join(dir, 'later.svg'))).isSymbolicLink());
  assert.equal(await readFile(join(dir, 'shared', 'later.svg'), 'utf8'), 'made');
  await rm(dir, { recursive: true });
});

test('a checkpoint file past 2 GiB (readFile\'s limit) is read whole; one past what a buffer holds is a clear error', async (t) => {
  const { readWholeFile, MAX_FILE_READ_BYTES } = await import('../src/util/fs.js');
  const { open } = await import('node:fs/promises');
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-big-'));
  const path = join(dir, 'sparse.bin');
  const size = 2 ** 31 + 4096;
  // Sparse: no disk used; the bytes at the very end tell a whole read from a cut one.
  const fh = await open(path, 'w');
  await fh.write(Uint8Array.of(1, 2, 3), 0, 3, size - 3);
  await fh.close();
  if ((await stat(path)).size !== size) return t.skip('no sparse files here');
  const bytes = await readWholeFile(path);
  assert.equal(bytes.length, size);
  assert.deepEqual([...bytes.subarray(size - 4)], [0, 1, 2, 3]);
  await truncate(path, MAX_FILE_READ_BYTES + 1);
  await assert.rejects(readWholeFile(path), (e: unknown) => e instanceof MinigptError && /sparse\.bin is 4\.0 GiB, more than the 4 GiB one file can be read into here/.test(e.message));
  await rm(dir, { recursive: true });
});

