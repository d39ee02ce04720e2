/**
 * Zip archives of a few files held in memory, through fflate: a checkpoint as one file that a
 * browser can download and upload, and that every OS opens with a double click. Browser-safe (no
 * Node APIs). Large binary files (weights) are stored, not deflated: float data hardly compresses
 * and storing is what keeps zipping a model fast.
 */
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { MinigptError, check } from '../errors.js';

/** A zip without zip64 (which fflate does not write) holds at most this many bytes. */
const ZIP_LIMIT = 0xffffffff;
/** Files larger than this are stored, smaller ones deflated. */
const STORE_ABOVE = 1 << 20;

/** A zip of `files` (name -> bytes), each under `folder/` when given. */
export function zipFiles(files: Map<string, Uint8Array>, folder?: string): Uint8Array {
  let total = 0;
  const entries: Zippable = {};
  for (const [name, bytes] of files) {
    total += bytes.length;
    entries[name] = [bytes, { level: bytes.length > STORE_ABOVE ? 0 : 6 }];
  }
  check(total < ZIP_LIMIT - (1 << 20), `${(total / 2 ** 30).toFixed(1)} GiB is too large for a zip (at most 4 GiB); keep it as a folder`);
  return zipSync(folder ? { [folder]: entries } : entries);
}

/** Directory entries and macOS metadata (`__MACOSX/`, `._name`), which are no files of ours. */
const isMetadata = (name: string): boolean => name.endsWith('/') || name.startsWith('__MACOSX/') || name.split('/').some((p) => p.startsWith('._'));

/**
 * The files of a zip (folders flattened into `a/b.json` names; directory entries and macOS
 * `__MACOSX/` metadata left out); with `only`, just the files it takes (the others are not
 * decompressed).
 */
export function unzipFiles(bytes: Uint8Array, source: string, only?: (name: string) => boolean): Map<string, Uint8Array> {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes, { filter: (f) => !isMetadata(f.name) && (!only || only(f.name)) });
  } catch (e) {
    throw new MinigptError(`${source} is not a zip file, or it is truncated or corrupt (${(e as Error).message})`);
  }
  return new Map(Object.entries(entries));
}

/** The names of a zip's files (as unzipFiles gives them), without decompressing any. */
export function zipFileNames(bytes: Uint8Array, source: string): string[] {
  const names: string[] = [];
  unzipFiles(bytes, source, (name) => {
    names.push(name);
    return false;
  });
  return names;
}

/** True when `bytes` start like a zip file (a local file header, or an empty archive's end record). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && ((bytes[2] === 3 && bytes[3] === 4) || (bytes[2] === 5 && bytes[3] === 6));
}
