/**
 * The scale-out path: scripts/train_ddp.py continues training an HF export on llm.c-format
 * shards with torchrun (2 CPU processes over gloo, DDP and FSDP2); the loss must go down and
 * the result must import back and score the text better than before. Skips without the venv.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportHf } from '../src/io/hf.js';
import { resolveConfig } from '../src/model/config.js';
import { initialWeights, paramLayout } from '../src/model/params.js';
import { createRng } from '../src/util/random.js';
import { buildCharTokenizer } from '../src/data/tokenizer.js';
import { importCommand } from '../src/cli/commands/import.js';
import { loadModel, scoreText } from '../src/inference.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function findPython(modules: string[]): { python?: string; skip?: string } {
  const python = process.env.MINIGPT_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `no Python venv at ${python} (run scripts/setup-venv.sh or set MINIGPT_PYTHON)` };
  const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} lacks ${modules.join(', ')}: ${(r.stderr || '').trim().split('\n').pop()}` };
  return { python };
}

/** llm.c's token file: 256 int32 header (magic, version 1 = uint16, count), then the tokens. */
function shard(ids: ArrayLike<number>): Buffer {
  const header = new Int32Array(256);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = ids.length;
  return Buffer.concat([Buffer.from(header.buffer), Buffer.from(Uint16Array.from(ids).buffer)]);
}

function torchrun(python: string, args: string[], timeoutMs = 240_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((res) => {
    // torchrun is `python -m torch.distributed.run`; the venv's python finds it without PATH.
    // Its own process group, so a timeout ends the workers too (they hold the output pipes).
    const p = spawn(python, ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', join(ROOT, 'scripts', 'train_ddp.py'), ...args], {
      env: { ...process.env, OMP_NUM_THREADS: '1', TOKENIZERS_PARALLELISM: 'false' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      err += `\n[test] timed out after ${timeoutMs / 1000} s; stopped`;
      // SIGTERM lets torchrun stop its workers (they run in sessions of their own).
      p.kill('SIGTERM');
      setTimeout(() => p.kill('SIGKILL'), 10_000).unref();
    }, timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      try {
        process.kill(-p.pid!, 'SIGKILL'); // stray workers, if any
      } catch {
        // none left
      }
      setTimeout(() => res({ code, out, err }), 100);
    });
  });
}

const py = findPython(['torch', 'transformers', 'numpy']);

test('torchrun (2 CPU processes, gloo) continues training an export on shards; the result imports (DDP and FSDP)', { skip: py.skip }, async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-'));
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(100);
  const tokenizer = buildCharTokenizer(text);
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: 32, n_heads: 4, n_kv_heads: 2, n_layers: 2, context: 32 });
  const weights = initialWeights(config, paramLayout(config), createRng(1));
  await exportHf({ config, weights, tokenizer }, join(root, 'hf'));
  await saveCheckpoint(join(root, 'before'), { config, weights, tokenizer });
  await mkdir(join(root, 'shards'));
  const ids = tokenizer.encode(text);
  await writeFile(join(root, 'shards', 'train_000000.bin'), shard(ids.subarray(0, 3000)));
  await writeFile(join(root, 'shards', 'train_000001.bin'), shard(ids.subarray(3000, 4000)));
  await writeFile(join(root, 'shards', 'val_000000.bin'), shard(ids.subarray(4000)));

  const common = ['--model', join(root, 'hf'), '--data', join(root, 'shards'), '--batch', '4', '--lr', '1e-2', '--log-every', '1', '--eval-batches', '2', '--dist-timeout', '120'];
  const runs = [
    await torchrun(py.python!, [...common, '--out', join(root, 'out-ddp'), '--steps', '20', '--strategy', 'ddp']),
    await torchrun(py.python!, [...common, '--out', join(root, 'out-fsdp'), '--steps', '10', '--strategy', 'fsdp']),
  ];
  const before = (await scoreText(await loadModel(join(root, 'before'), { backend: 'reference' }), text.slice(0, 30))).loss;
  for (const [i, strategy] of ['ddp', 'fsdp'].entries()) {
    const r = runs[i]!;
    assert.equal(r.code, 0, `${strategy}: train_ddp.py failed:\n${r.err.slice(-3000)}`);
    const lines = r.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const start = lines.find((l) => l.event === 'start');
    assert.equal(start.world_size, 2);
    assert.equal(start.backend, 'gloo');
    assert.equal(start.strategy, strategy);
    const losses = lines.filter((l) => typeof l.loss === 'number').map((l) => l.loss as number);
    const first = losses[0]!, last = losses[losses.length - 1]!;
    assert.ok(last < first * 0.8, `${strategy}: loss went ${first} -> ${last}`);
    const val = lines.find((l) => typeof l.val_loss === 'number');
    assert.ok(val, `${strategy}: no val_loss logged`);

    const ckpt = join(root, `imported-${strategy}`);
    await importCommand.run({ from: join(root, `out-${strategy}`), out: ckpt }, []);
    const after = (await scoreText(await loadModel(ckpt, { backend: 'reference' }), text.slice(0, 30))).loss;
    console.log(`# ${strategy}: torchrun loss ${first.toFixed(3)} -> ${last.toFixed(3)}, val ${val.val_loss.toFixed(3)}; minigpt on the imported result: ${before.toFixed(3)} -> ${after.toFixed(3)}`);
    assert.ok(after < before * 0.8, `${strategy}: the imported model scores ${after}, the original ${before}`);
  }
});

test('train_ddp.py refuses shards made with another BPE of the same size, and takes the model\'s own', { skip: py.skip }, async () => {
  const { trainBpe } = await import('../src/data/bpe.js');
  const { prepareShards } = await import('../src/data/shards.js');
  const root = await mkdtemp(join(tmpdir(), 'minigpt-ddp-bpe-'));
  const textA = 'the quick brown fox jumps over the lazy dog. '.repeat(40), textB = 'pack my box with five dozen liquor jugs! '.repeat(40);
  const [own, other] = [trainBpe(textA, { vocabSize: 280 }), trainBpe(textB, { vocabSize: 280 })];
  const config = resolveConfig({ vocab_size: own.vocabSize, d_model: 16, n_heads: 2, n_layers: 1, context: 16 });
  await exportHf({ config, weights: initialWeights(config, paramLayout(config), createRng(1)), tokenizer: own }, join(root, 'hf'));
  await writeFile(join(root, 'a.txt'), textA);
  for (const [name, tokenizer] of [['own', own], ['other', other]] as const) {
    await prepareShards({ data: join(root, 'a.txt'), out: join(root, name), tokenizer });
  }
  const check = (shards: string) => spawnSync(py.python!, ['-c',
    'import sys; sys.path.insert(0, sys.argv[1]); import train_ddp; train_ddp.check_shards_match_model(sys.argv[2], sys.argv[3], 280); print("same")',
    join(ROOT, 'scripts'), shards, join(root, 'hf')], { encoding: 'utf8' });
  const same = check(join(root, 'own'));
  assert.equal(same.status, 0, same.stderr);
  assert.equal(same.stdout.trim(), 'same');
  const differ = check(join(root, 'other'));
  assert.equal(differ.status, 1);
  assert.match(differ.stderr.trim(), /^the shards' BPE merges differ from the model's \(first at merge \d+ of 23 \/ 23\): prepare the shards with the model's tokenizer$/);
});
