import { test } from 'node:test';
import { paritySuite } from './support/parity.js';
import { createWebGpuBackend, probeGpu } from '../src/backend/webgpu/index.js';

// Skips when no WebGPU adapter can be had (on Linux, scripts/setup-webgpu.sh installs SwiftShader).
const probe = await probeGpu();
if (probe.adapter) paritySuite('webgpu', () => createWebGpuBackend(), 1e-4);
else test('webgpu matches PyTorch', { skip: `no WebGPU adapter: ${probe.reason}` }, () => {});
