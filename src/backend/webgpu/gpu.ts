/// <reference types="@webgpu/types" />
/**
 * Where the GPU comes from. In a browser (or any runtime with `navigator.gpu`) that; in Node the
 * `webgpu` npm package (Dawn), loaded lazily with a non-literal specifier so that bundlers for the
 * browser never try to resolve it. On Linux without a GPU, Debian's `chromium` package ships
 * SwiftShader's Vulkan driver: when VK_ICD_FILENAMES is unset and that driver is installed, it is
 * used (scripts/setup-webgpu.sh installs it).
 */
import { importLazily, isNode } from '../../util/runtime.js';

/** Where Debian's chromium package installs SwiftShader's Vulkan ICD. */
export const SWIFTSHADER_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json'];

export interface GpuProbe {
  /** The probing adapter: say whether one exists and what it is; create devices from requestAdapter(). */
  adapter: GPUAdapter | null;
  /** Why there is no adapter, or a description of the one found. */
  reason: string;
  /** A software / CPU adapter (SwiftShader, llvmpipe, WARP): slower than the cpu backend. */
  software: boolean;
}

let existsSync: (path: string) => boolean = () => false;
let readdirSync: (path: string) => string[] = () => [];

async function loadFs(): Promise<void> {
  const fs = await importLazily<typeof import('node:fs')>('node:fs');
  existsSync = fs.existsSync;
  readdirSync = (p) => fs.readdirSync(p);
}

/** Linux: whether a GPU device node exists (a DRI render node or NVIDIA's), i.e. a hardware adapter is possible. */
function linuxGpuNodeExists(): boolean {
  if (existsSync('/dev/nvidiactl')) return true;
  try {
    return readdirSync('/dev/dri').some((f) => f.startsWith('renderD'));
  } catch {
    return false;
  }
}

/**
 * Whether a hardware adapter could exist, answered without loading Dawn: false only in Node on
 * Linux without any GPU device node. Keeps `auto` from loading Dawn where it cannot win.
 */
export async function hardwareGpuPossible(): Promise<boolean> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return true;
  if (!isNode()) return false;
  if (process.platform !== 'linux') return true;
  await loadFs();
  return linuxGpuNodeExists();
}

let gpuPromise: Promise<GPU | null> | undefined;
let gpuError = '';

async function loadGpu(): Promise<GPU | null> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (!isNode()) {
    gpuError = 'this runtime has no navigator.gpu';
    return null;
  }
  await loadFs();
  if (process.platform === 'linux' && !process.env.VK_ICD_FILENAMES && !process.env.VK_ADD_DRIVER_FILES) {
    const icd = SWIFTSHADER_ICDS.find((p) => existsSync(p));
    // With a GPU device node, add SwiftShader beside the system drivers (the loader's
    // VK_ADD_DRIVER_FILES) so a hardware adapter still wins; without one, SwiftShader alone
    // (VK_ICD_FILENAMES), which also keeps Mesa's lavapipe, which Dawn rejects, out.
    if (icd) process.env[linuxGpuNodeExists() ? 'VK_ADD_DRIVER_FILES' : 'VK_ICD_FILENAMES'] = icd;
  }
  try {
    const mod = await importLazily<{ create(flags: string[]): GPU }>('webgpu');
    // No zero-initialisation of workgroup memory: every kernel writes its workgroup arrays before
    // reading them (keep it so), and on SwiftShader the zeroing code makes a shader with ~30 KiB of
    // workgroup arrays compile 10x slower (16 s instead of 1 s for the blocked attention).
    return mod.create(['enable-dawn-features=disable_workgroup_init']);
  } catch (e) {
    gpuError = `the "webgpu" package did not load: ${(e as Error).message}`;
    return null;
  }
}

/** The GPU entry point, created once per process (null when there is none). */
export function getGpu(): Promise<GPU | null> {
  gpuPromise ??= loadGpu();
  return gpuPromise;
}

/** A fresh adapter (an adapter makes one device only), or null. */
export async function requestAdapter(): Promise<GPUAdapter | null> {
  const gpu = await getGpu();
  return gpu ? gpu.requestAdapter({ powerPreference: 'high-performance' }) : null;
}

let probePromise: Promise<GpuProbe> | undefined;

/** Requests an adapter once per process and says what it is. */
export function probeGpu(): Promise<GpuProbe> {
  probePromise ??= (async (): Promise<GpuProbe> => {
    const gpu = await getGpu();
    if (!gpu) return { adapter: null, reason: gpuError, software: false };
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    } catch (e) {
      return { adapter: null, reason: `requestAdapter failed: ${(e as Error).message}`, software: false };
    }
    if (!adapter) {
      return { adapter: null, reason: 'requestAdapter() returned null (no GPU driver; on Linux run scripts/setup-webgpu.sh for SwiftShader)', software: false };
    }
    const info = adapter.info as GPUAdapterInfo | undefined;
    const text = info ? `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.trim() : '';
    const fallback = Boolean(info?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
    const software = fallback || /swiftshader|llvmpipe|lavapipe|warp|software|cpu/i.test(text);
    return { adapter, reason: text || 'unnamed adapter', software };
  })();
  return probePromise;
}
