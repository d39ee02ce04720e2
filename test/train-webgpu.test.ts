/** The training loop on the webgpu backend: reading back every N steps, and skips decided on the device. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train, type TrainOptions } from '../src/train/train.js';
import { loadCheckpoint } from '../src/io/checkpoint.js';
import { MinigptError } from '../src/errors.js';
import { createWebGpuBackend } from '../src/backend/webgpu/index.js';
import { probeGpu } from '../src/backend/webgpu/gpu.js';

const probe = await probeGpu();
if (probe.adapter) {
  // One backend for every run, so SwiftShader compiles each shader once.
  const gpu = await createWebGpuBackend();
  after(() => gpu.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-train-webgpu-'));
  const data = join(dir, 'corpus.txt');
  await writeFile(data, Array.from({ length: 200 }, (_, i) => `the ${['cat', 'dog'][i % 2]} sat on the ${['mat', 'log', 'hat'][i % 3]}.`).join('\n'));
  let runs = 0;
  const opts = (over: Partial<TrainOptions>): TrainOptions => ({
    data, model: { d_model: 16, n_heads: 2, n_layers: 1, context: 16 }, batch: 2, steps: 9, lr: 1e-2, warmup: 2,
    evalEvery: 0, sampleEvery: 0, saveEvery: 0, evalWindows: 2, backend: gpu, out: join(dir, `run${runs++}`), ...over,
  });

  test('webgpu: reading back every 4 steps gives the losses and weights of reading every step', async () => {
    const results = [];
    for (const syncEvery of [1, 4]) {
      const o = opts({ syncEvery });
      const losses: number[] = [];
      await train({ ...o, onStep: (s) => losses.push(s.loss) });
      results.push({ losses, weights: (await loadCheckpoint(join(o.out!, 'checkpoint'))).weights });
    }
    assert.equal(results[0].losses.length, 9);
    assert.deepEqual(results[1].losses, results[0].losses);
    assert.deepEqual(results[1].weights, results[0].weights);
  });

  test('webgpu: NaN steps are skipped on the device, taken back by the host, and a diverged run keeps its last good state', async () => {
    const o = opts({ lr: 1e30, warmup: 0, minLr: 0, gradClip: 0, steps: 30, syncEvery: 3 });
    const messages: string[] = [];
    await assert.rejects(train({ ...o, onMessage: (m) => messages.push(m) }), (e: unknown) => e instanceof MinigptError && /training diverged/.test(e.message));
    assert.ok(messages.some((m) => /skipped the update/.test(m)));
    const ckpt = await loadCheckpoint(join(o.out!, 'checkpoint'), { training: true });
    assert.equal(ckpt.training!.step, 1);
    assert.ok(ckpt.weights.every(Number.isFinite));
  });
} else test('training on webgpu', { skip: `no WebGPU adapter: ${probe.reason}` }, () => {});
