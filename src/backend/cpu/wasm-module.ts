/**
 * Loading the kernels' WebAssembly: which build this runtime can run (relaxed SIMD with fused
 * multiply-add, or plain 128-bit SIMD), and the shared memory every thread instantiates on.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';

/**
 * The slice of the WebAssembly JS API we use, typed here because the project's lib (ES2022,
 * @types/node 20) does not declare it.
 */
export interface WasmModule { readonly __wasmModule?: never }
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => { exports: object };
  Memory: new (desc: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
}
export const wasmApi = (): WasmApi | undefined => (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
const WA = (): WasmApi => wasmApi()!;

/** The exports of kernels.ts (pointers are byte offsets into the shared memory). */
export interface KernelExports {
  [name: string]: (...args: number[]) => number | void;
}

export type WasmVariant = 'relaxed' | 'simd';

// (module (func (result v128) v128.const i32x4 0 0 0 0 ... f32x4.relaxed_madd)): tiny probes.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);
const RELAXED_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 61, 1, 59, 0,
  253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  253, 133, 2, 11,
]);

/** Whether this runtime has WebAssembly 128-bit SIMD and shared memory (what the cpu backend needs). */
export function cpuBackendSupported(): boolean {
  const api = wasmApi();
  return api !== undefined && typeof SharedArrayBuffer === 'function' && api.validate(SIMD_PROBE);
}

/**
 * Whether relaxed SIMD validates. Node 20's V8 has it behind --experimental-wasm-relaxed-simd;
 * with `enableFlag` we turn that flag on at run time (it only widens what wasm validation
 * accepts) and ask again. Newer Node ships it on.
 */
export function relaxedSimdSupported(enableFlag: boolean): boolean {
  if (WA().validate(RELAXED_PROBE)) return true;
  if (!enableFlag) return false;
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    return false;
  }
  return WA().validate(RELAXED_PROBE);
}

/** dist/wasm/kernels-<variant>.wasm, relative to this module (dist/src/backend/cpu/). */
export function wasmUrl(variant: WasmVariant): URL {
  return new URL(`../../../wasm/kernels-${variant}.wasm`, import.meta.url);
}

export function createSharedMemory(initialPages: number, maximumPages: number): WasmMemory {
  return new (WA().Memory)({ initial: initialPages, maximum: maximumPages, shared: true });
}

export function compileKernels(variant: WasmVariant): WasmModule {
  let bytes: Buffer;
  try {
    bytes = readFileSync(wasmUrl(variant));
  } catch (e) {
    throw new Error(`cpu backend: cannot read ${wasmUrl(variant).pathname} (run "npm run build:wasm"): ${(e as Error).message}`);
  }
  return new (WA().Module)(bytes);
}

export function instantiateKernels(module: WasmModule, memory: WasmMemory): KernelExports {
  const instance = new (WA().Instance)(module, { env: { memory } });
  return instance.exports as unknown as KernelExports;
}
