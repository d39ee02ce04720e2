/**
 * A checkpoint as one .zip file (what the browser page downloads and uploads): exact round trips
 * through loadCheckpoint and every `--ckpt`, folders zipped by hand, and clear one-line errors
 * for zips that are damaged or hold no (or more than one) checkpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkCheckpointZip, checkpointFiles, checkpointFromZip, checkpointToZip, loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint.js';
import { unzipFiles, zipFileNames, zipFiles } from '../src/io/zip.js';
import { hfExportFiles } from '../src/io/hf.js';
import { resolveConfig, type ModelConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { MinigptError } from '../src/errors.js';
import { train } from '../src/train/train.js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const config: ModelConfig = resolveConfig({ vocab_size: 12, d_model: 16, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 16 });
const tokenizer = buildCharTokenizer('hello world!');
const weights = initialWeights(config, paramLayout(config), createRng(3));
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
// In a scratch folder: train records runs/latest in its working directory, and a test must not
// point the developer's checkout at its temporary runs.
const cliCwd = mkdtempSync(join(tmpdir(), 'minigpt-zip-cwd-'));
const runCli = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: cliCwd });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};
const tmp = (): Promise<string> => mkdtemp(join(tmpdir(), 'minigpt-zip-'));
const userError = (re: RegExp) => (e: unknown): boolean => {
  assert.ok(e instanceof MinigptError, `expected a MinigptError, got ${e}`);
  assert.match(e.message, re);
  assert.ok(!e.message.includes('\n'), 'one line');
  return true;
};

test('a zipped checkpoint round-trips config, weights (bit-exact), tokenizer and training state through loadCheckpoint', async () => {
  const m = weights.map((x) => x * 0.5), v = weights.map((x) => x * x);
  const zip = await checkpointToZip({ config, weights, tokenizer, training: { step: 7, m, v, trainer: { rng: [1, 2] } } });
  assert.deepEqual([...zip.subarray(0, 4)], [0x50, 0x4b, 3, 4]);
  assert.deepEqual([...unzipFiles(zip, 'zip').keys()].sort(), [
    'minigpt-model/config.json', 'minigpt-model/manifest.json', 'minigpt-model/model.safetensors',
    'minigpt-model/optimizer.safetensors', 'minigpt-model/tokenizer.minigpt.json', 'minigpt-model/trainer_state.json',
  ]);
  const path = join(await tmp(), 'model.zip');
  await writeFile(path, zip);
  const back = await loadCheckpoint(path, { training: true });
  assert.deepEqual(back.config, config);
  assert.deepEqual(back.weights, weights);
  assert.equal(back.tokenizer.decode(back.tokenizer.encode('hello')), 'hello');
  assert.equal(back.training!.step, 7);
  assert.deepEqual(back.training!.m, m);
  assert.deepEqual(back.training!.trainer, { rng: [1, 2] });
});

test('the zip holds exactly the files a saved checkpoint directory holds (written from views of the arrays, byte for byte the same)', async () => {
  const m = weights.map((x) => x * 0.5), v = weights.map((x) => x * x);
  const training = { step: 3, m, v, trainer: { note: 'x' } };
  for (const [ckpt, opts] of [
    [{ config, weights, tokenizer }, {}],
    [{ config, weights, tokenizer, training }, {}],
    [{ config, weights, tokenizer, training }, { dtype: 'F16' as const }],
  ] as const) {
    const dir = join(await tmp(), 'ck');
    await saveCheckpoint(dir, ckpt, opts);
    const files = await checkpointFiles(ckpt, opts);
    assert.deepEqual((await readdir(dir)).sort(), [...files.keys()].sort());
    for (const [name, bytes] of files) assert.deepEqual(new Uint8Array(await readFile(join(dir, name))), bytes, name);
    const zipped = unzipFiles(await checkpointToZip(ckpt, { ...opts, folder: 'x' }), 'zip');
    for (const [name, bytes] of files) assert.deepEqual(zipped.get(`x/${name}`), bytes, name);
    const back = await loadCheckpoint(dir, { training: Boolean(ckpt.training) });
    if (!opts.dtype) assert.deepEqual(back.weights, weights);
    if (ckpt.training) assert.deepEqual(back.training!.v, v);
  }
});

test('folders zipped by hand load: files at the top level, or a run folder with checkpoint/ inside', async () => {
  const files = await checkpointFiles({ config, weights, tokenizer });
  const flat = await checkpointFromZip(zipFiles(files), 'flat.zip');
  assert.deepEqual(flat.weights, weights);
  const run = new Map([...files].map(([n, b]) => [`run-1/checkpoint/${n}`, b]));
  run.set('run-1/metrics.jsonl', new TextEncoder().encode('{}\n'));
  run.set('__MACOSX/run-1/._config.json', new Uint8Array(10));
  assert.deepEqual((await checkpointFromZip(zipFiles(run), 'run.zip')).weights, weights);
});

test('damaged zips and zips without one checkpoint are one-line errors', async () => {
  const zip = await checkpointToZip({ config, weights, tokenizer });
  await assert.rejects(checkpointFromZip(zip.subarray(0, zip.length - 100), 'cut.zip'), userError(/cut\.zip is not a zip file, or it is truncated or corrupt/));
  await assert.rejects(checkpointFromZip(new TextEncoder().encode('hello'), 'text.zip'), userError(/text\.zip is not a zip file/));
  await assert.rejects(checkpointFromZip(zipFiles(new Map([['notes.txt', new Uint8Array(3)]])), 'other.zip'), userError(/other\.zip holds no checkpoint \(no config\.json beside a model\.safetensors\)/));
  const files = await checkpointFiles({ config, weights, tokenizer });
  const two = new Map([...files].flatMap(([n, b]) => [[`a/${n}`, b], [`b/${n}`, b]] as [string, Uint8Array][]));
  await assert.rejects(checkpointFromZip(zipFiles(two), 'two.zip'), userError(/two\.zip holds more than one checkpoint \(a\/, b\/\)/));
  // A changed weight fails its checksum (a zip stores no checksum fflate checks).
  const changed = new Map(files);
  const model = Uint8Array.from(files.get('model.safetensors')!);
  model[model.length - 3] ^= 0x40;
  changed.set('model.safetensors', model);
  await assert.rejects(checkpointFromZip(zipFiles(changed, 'm'), 'changed.zip'), userError(/changed\.zip: m\/model\.safetensors does not match its checksum/));
  const noTokenizer = new Map(files);
  noTokenizer.delete('tokenizer.minigpt.json');
  await assert.rejects(checkpointFromZip(zipFiles(noTokenizer), 'tok.zip'), userError(/tok\.zip: tokenizer\.minigpt\.json is missing; the checkpoint is incomplete/));
  await assert.rejects(checkpointFromZip(zip, 'weights.zip', { training: true }), userError(/weights\.zip has no optimizer state/));
});

test('loadCheckpoint: a file that is not a zip is named as such; a file named .zip that is not one says so', async () => {
  const d = await tmp();
  await writeFile(join(d, 'weights.bin'), new Uint8Array(64));
  await assert.rejects(loadCheckpoint(join(d, 'weights.bin')), userError(/weights\.bin is a file; a checkpoint is a directory \(with config\.json and model\.safetensors\) or a \.zip of one/));
  await writeFile(join(d, 'model.zip'), 'not a zip');
  await assert.rejects(loadCheckpoint(join(d, 'model.zip')), userError(/model\.zip is not a zip file/));
});

test('the CLI samples, evaluates and exports from a checkpoint zip', async () => {
  const d = await tmp();
  const zip = join(d, 'minigpt-model.zip');
  await writeFile(zip, await checkpointToZip({ config, weights, tokenizer }));
  const sample = runCli(['sample', '--ckpt', zip, '--prompt', 'hello', '--tokens', '8', '--seed', '1', '--backend', 'reference']);
  assert.equal(sample.code, 0, sample.stderr);
  assert.ok(sample.stdout.startsWith('hello'), sample.stdout);
  const ev = runCli(['eval', '--ckpt', zip, '--text', 'hello world', '--json', '--backend', 'reference']);
  assert.equal(ev.code, 0, ev.stderr);
  assert.ok(Number.isFinite(JSON.parse(ev.stdout).loss));
  const out = join(d, 'hf');
  const ex = runCli(['export', '--ckpt', zip, '--out', out]);
  assert.equal(ex.code, 0, ex.stderr);
  assert.ok(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).architectures.includes('LlamaForCausalLM'));
  const enc = runCli(['tokenizer', 'encode', '--tokenizer', zip, '--text', 'hello']);
  assert.equal(enc.code, 0, enc.stderr);
  assert.deepEqual(JSON.parse(enc.stdout), [...tokenizer.encode('hello')]);
});

test('train --init-from a checkpoint zip fine-tunes it; --resume refuses a zip and says to use --init-from', async () => {
  const d = await tmp();
  const zip = join(d, 'minigpt-model.zip');
  await writeFile(zip, await checkpointToZip({ config, weights, tokenizer }));
  await writeFile(join(d, 'hello.txt'), 'hello world! '.repeat(200));
  const common = ['--data', join(d, 'hello.txt'), '--steps', '2', '--batch', '2', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0', '--quiet'];
  const tuned = runCli(['train', '--init-from', zip, '--out', join(d, 'tuned'), ...common]);
  assert.equal(tuned.code, 0, tuned.stderr);
  const back = await loadCheckpoint(join(d, 'tuned'));
  assert.deepEqual(back.config, config);
  assert.notDeepEqual(back.weights, weights);
  const resumed = runCli(['train', '--resume', zip, ...common]);
  assert.equal(resumed.code, 1);
  assert.match(resumed.stderr, /^minigpt: error: --resume takes the folder of a run .* start a new run with --init-from .*minigpt-model\.zip\n$/);
});

test('eval with neither --text nor --data on a checkpoint zip scores the run\'s own validation data, as on the folder', async () => {
  const d = await tmp();
  await writeFile(join(d, 'hello.txt'), 'hello world! hold the door. '.repeat(100));
  const run = join(d, 'run');
  await train({ data: join(d, 'hello.txt'), out: run, model: { d_model: 16, n_heads: 2, n_layers: 1, context: 16 }, batch: 2, steps: 3, evalEvery: 0, sampleEvery: 0, evalWindows: 2, backend: 'reference' });
  const score = (ckpt: string) => {
    const r = runCli(['eval', '--ckpt', ckpt, '--json', '--backend', 'reference']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { val_loss: number; tokens: number; data: string };
  };
  const fromDir = score(run);
  assert.ok(Number.isFinite(fromDir.val_loss));
  // Zipped by hand (cd run/checkpoint && zip ../r1.zip *), and by checkpointToZip.
  const ckptDir = join(run, 'checkpoint');
  const files = new Map(await Promise.all((await readdir(ckptDir)).map(async (n) => [n, new Uint8Array(await readFile(join(ckptDir, n)))] as [string, Uint8Array])));
  assert.ok(files.has('trainer_state.json'));
  await writeFile(join(d, 'r1.zip'), zipFiles(files));
  await writeFile(join(d, 'r2.zip'), await checkpointToZip(await loadCheckpoint(run, { training: true })));
  for (const zip of ['r1.zip', 'r2.zip']) assert.deepEqual(score(join(d, zip)), fromDir, zip);
  // A zip of a checkpoint that was not trained still says it records no data.
  await writeFile(join(d, 'init.zip'), await checkpointToZip({ config, weights, tokenizer }));
  const r = runCli(['eval', '--ckpt', join(d, 'init.zip'), '--backend', 'reference']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^minigpt: error: .*init\.zip records no training data \(it was not written by train\); give --text "\.\.\." or --data PATH\n$/);
});

test('checkCheckpointZip tells a checkpoint zip from other zips without decompressing the weights', async () => {
  const zip = await checkpointToZip({ config, weights, tokenizer });
  assert.doesNotThrow(() => checkCheckpointZip(zip, 'good.zip'));
  assert.deepEqual(zipFileNames(zip, 'good.zip').sort(), ['minigpt-model/config.json', 'minigpt-model/manifest.json', 'minigpt-model/model.safetensors', 'minigpt-model/tokenizer.minigpt.json']);
  // A zipped transformers folder has config.json beside model.safetensors too: its config says what it is.
  const hf = zipFiles(hfExportFiles({ config, weights, tokenizer }), 'minigpt-hf');
  assert.throws(() => checkCheckpointZip(hf, 'hf.zip'), userError(/^hf\.zip: minigpt-hf\/config\.json is not a minigpt checkpoint config \(it has no "format"\); it looks like a Hugging Face model directory: unzip it and read the folder with readHfModel, or convert it with minigpt import --from DIR --out DIR$/));
  await assert.rejects(checkpointFromZip(hf, 'hf.zip'), userError(/it looks like a Hugging Face model directory: unzip it/));
  assert.throws(() => checkCheckpointZip(zipFiles(new Map([['a.txt', new Uint8Array(2)]])), 'other.zip'), userError(/other\.zip holds no checkpoint/));
  assert.throws(() => checkCheckpointZip(new TextEncoder().encode('PK\x03\x04 not really'), 'cut.zip'), userError(/cut\.zip is not a zip file, or it is truncated or corrupt/));
});
