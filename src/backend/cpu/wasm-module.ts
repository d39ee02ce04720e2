/**
 * Loading the kernels' WebAssembly: which build this runtime can run (relaxed SIMD with fused
 * multiply-add, or plain 128-bit SIMD), and the shared memory every thread instantiates on.
 * The same in Node and a browser, except where the bytes come from (runtime.ts: fs or fetch).
 */
import { isNode, readBytes, setV8Flag, sharedMemoryAllowed } from './runtime.js';

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
  compile(bytes: Uint8Array): Promise<WasmModule>;
  instantiate(module: WasmModule, imports: object): Promise<{ exports: object }>;
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

/**
 * Whether this runtime has WebAssembly 128-bit SIMD and shared memory (what the cpu backend
 * needs); in a browser shared memory also needs a cross-origin isolated page.
 */
export function cpuBackendSupported(): boolean {
  const api = wasmApi();
  return api !== undefined && sharedMemoryAllowed() && api.validate(SIMD_PROBE);
}

/**
 * Whether relaxed SIMD validates. Node 20's V8 has it behind --experimental-wasm-relaxed-simd;
 * with `enableFlag` we turn that flag on at run time in Node (it only widens what wasm
 * validation accepts) and ask again. Newer Node and Chrome ship it on; a browser is only asked.
 */
export async function relaxedSimdSupported(enableFlag: boolean): Promise<boolean> {
  if (WA().validate(RELAXED_PROBE)) return true;
  if (!enableFlag || !isNode()) return false;
  return (await setV8Flag('--experimental-wasm-relaxed-simd')) && WA().validate(RELAXED_PROBE);
}

/**
 * Where kernels-<variant>.wasm may be, in order: in Node dist/wasm/, relative to this module
 * (dist/src/backend/cpu/); in a browser first next to the script (the web build copies the .wasm
 * files beside its bundles), then that same dist/wasm/ (this module served unbundled).
 */
export function wasmUrls(variant: WasmVariant): URL[] {
  const inDist = new URL(`../../../wasm/kernels-${variant}.wasm`, import.meta.url);
  return isNode() ? [inDist] : [new URL(`kernels-${variant}.wasm`, import.meta.url), inDist];
}

export function createSharedMemory(initialPages: number, maximumPages: number): WasmMemory {
  return new (WA().Memory)({ initial: initialPages, maximum: maximumPages, shared: true });
}

/** Loads and compiles the kernels (asynchronously: a page's thread may not compile big modules synchronously). */
export async function compileKernels(variant: WasmVariant): Promise<WasmModule> {
  const errors: string[] = [];
  for (const url of wasmUrls(variant)) {
    let bytes: Uint8Array;
    try {
      bytes = await readBytes(url);
    } catch (e) {
      errors.push(`${url.protocol === 'file:' ? url.pathname : url.href}: ${(e as Error).message}`);
      continue;
    }
    return WA().compile(bytes);
  }
  const where = isNode()
    ? 'an app bundle that takes minigpt in must leave it external (esbuild --packages=external), as the .wasm is found from its own folder'
    : 'a bundle of minigpt needs its dist/web/kernels-*.wasm and worker.js next to it';
  throw new Error(`cpu backend: cannot load kernels-${variant}.wasm (${errors.join('; ')}); it ships in minigpt's dist/wasm/ ("npm run build:wasm" in a checkout); ${where}`);
}

export async function instantiateKernels(module: WasmModule, memory: WasmMemory): Promise<KernelExports> {
  const instance = await WA().instantiate(module, { env: { memory } });
  return instance.exports as unknown as KernelExports;
}
