/** Backend selection by name. `auto` picks the fastest backend this machine has. */
import { MinigptError, checkOptionNames } from '../errors.js';
import { createReferenceBackend } from './reference/index.js';
import { checkCpuOptions, createCpuBackend, cpuBackendSupported, type CpuOptions } from './cpu/index.js';
import { checkWebGpuOptions, createWebGpuBackend, webgpuHardwareAvailable, type WebGpuOptions } from './webgpu/index.js';
import type { Backend } from './types.js';

export type { Backend, Tensor, IntTensor, AttentionShape, AdamWHyper } from './types.js';
export { createReferenceBackend } from './reference/index.js';
export { createCpuBackend, cpuBackendSupported, type CpuOptions } from './cpu/index.js';
export { createWebGpuBackend, webgpuAvailable, webgpuHardwareAvailable, type WebGpuBackend, type WebGpuOptions } from './webgpu/index.js';

/** The names createBackend accepts. */
export const BACKEND_NAMES = ['auto', 'cpu', 'webgpu', 'reference'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Options passed to the backend that gets picked (the reference backend has none). */
export type BackendOptions = CpuOptions & { webgpu?: WebGpuOptions };
/** Every option createBackend takes (the Record type keeps it complete). */
const BACKEND_OPTION_NAMES: Record<keyof BackendOptions, true> = { threads: true, relaxedSimd: true, attention: true, parallelMinNs: true, webgpu: true };

/**
 * The backend called `name` (one of BACKEND_NAMES). 'auto', the default, picks webgpu on a hardware
 * GPU adapter, else cpu where WebAssembly SIMD and threads work, else reference. Async: 'auto'
 * probes for a GPU, and cpu and webgpu start up asynchronously. `options` go to cpu (threads, ...)
 * and, under `webgpu`, to webgpu. Throws a MinigptError for an unknown name.
 */
export async function createBackend(name: BackendName = 'auto', options: BackendOptions = {}): Promise<Backend> {
  checkOptionNames(options, Object.keys(BACKEND_OPTION_NAMES), 'createBackend');
  const { webgpu, ...cpu } = options;
  checkCpuOptions(cpu, 'createBackend');
  checkWebGpuOptions(webgpu ?? {});
  switch (name) {
    case 'auto':
      // webgpu only on a hardware adapter: a software one (SwiftShader) is slower than cpu.
      if (await webgpuHardwareAvailable()) return createWebGpuBackend(webgpu);
      // cpu needs WebAssembly SIMD and SharedArrayBuffer (threads); the reference runs anywhere.
      return cpuBackendSupported() ? createCpuBackend(cpu) : createReferenceBackend();
    case 'cpu':
      return createCpuBackend(cpu);
    case 'webgpu':
      return createWebGpuBackend(webgpu);
    case 'reference':
      return createReferenceBackend();
    default:
      throw new MinigptError(`unknown backend "${name}"; choose one of ${BACKEND_NAMES.join(', ')}`);
  }
}
