import { test, after } from 'node:test';
import { paritySuite } from './support/parity.js';
import { createWebGpuBackend } from '../src/backend/webgpu/index.js';
import { probeGpu } from '../src/backend/webgpu/gpu.js';
import type { Backend } from '../src/backend/types.js';

// Skips when no WebGPU adapter can be had (on Linux, scripts/setup-webgpu.sh installs SwiftShader).
// Both kernel sets (the adapter's default first); one backend per set serves every fixture, so
// each shader compiles once (SwiftShader compiles slowly).
const probe = await probeGpu();
if (probe.adapter) {
  const first = await createWebGpuBackend();
  const second = await createWebGpuBackend({ kernels: first.kernels === 'tiled' ? 'simple' : 'tiled' });
  after(() => {
    first.destroy();
    second.destroy();
  });
  // The suite destroys each fixture's backend: hand it views whose destroy does nothing.
  const kept = (be: Backend): Backend => Object.assign(Object.create(be) as Backend, { destroy() {} });
  paritySuite('webgpu', () => kept(first), 1e-4);
  paritySuite(`webgpu (${second.kernels} kernels)`, () => kept(second), 1e-4);
} else test('webgpu matches PyTorch', { skip: `no WebGPU adapter: ${probe.reason}` }, () => {});
