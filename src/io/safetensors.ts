/**
 * Strict reader and writer for the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes]  N, little-endian u64: byte length of the header
 *   [N bytes]  UTF-8 JSON object, possibly padded with trailing spaces:
 *                { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
 *                  "__metadata__": { "<key>": "<string value>", ... } }
 *   [rest]     tensor data, little-endian, row-major; offsets are relative to the start of this
 *              region and the tensors must tile it exactly (no gaps, no overlaps, nothing after).
 *
 * Only F32, F16, BF16 and I32 are supported. F16 and BF16 are Float32Arrays in memory: encoded
 * with correct rounding on write, decoded exactly on read.
 *
 * Every malformed input makes decodeSafetensors throw a MinigptError naming the source and the
 * problem; nothing is allocated for tensor data until the whole header has been checked against
 * the real size of the input.
 */
import { open } from 'node:fs/promises';
import { MinigptError, check } from '../errors.js';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from '../util/half.js';
import { checkNodeOnly } from '../util/runtime.js';
import { readWholeFile } from '../util/fs.js';

export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I32';

/** One tensor of a safetensors file (its name is the key of the map or record that holds it). */
export interface NamedTensor {
  /** How the values are stored in the file; F16 and BF16 are held as f32 in memory. */
  dtype: SafetensorsDType;
  /** Dimensions, outermost first; their product is data.length. */
  shape: number[];
  /** Row-major values: Int32Array for I32, Float32Array for the others. */
  readonly data: Float32Array | Int32Array;
  /**
   * F16 and BF16 tensors read from a file: decodes the values into `out` (data.length long)
   * without an array of their own; `data` decodes them on first use. A model's loader fills its
   * one flat buffer this way, instead of holding every tensor decoded beside it.
   */
  readInto?(out: Float32Array): void;
}

/** A decoded safetensors file, as decodeSafetensors and readSafetensorsFile return it. */
export interface SafetensorsContents {
  /** In the order the tensors are laid out in the data region. */
  tensors: Map<string, NamedTensor>;
  /** The header's "__metadata__" strings ({} when it has none). */
  metadata: Record<string, string>;
}

const BYTES_PER_ELEMENT: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4 };
const METADATA_KEY = '__metadata__';
/** Same limit as the reference implementation; also bounds what a lying header can make us parse. */
const MAX_HEADER_BYTES = 100_000_000;
const TENSOR_ENTRY_KEYS = new Set(['dtype', 'shape', 'data_offsets']);

// Typed-array views read and write in platform byte order; the format is little-endian.
const PLATFORM_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isSupportedDType(dtype: string): dtype is SafetensorsDType {
  return Object.prototype.hasOwnProperty.call(BYTES_PER_ELEMENT, dtype);
}

/** A name from the file, quoted and shortened so an error message stays one readable line. */
function quote(name: string): string {
  const quoted = JSON.stringify(name.length > 80 ? `${name.slice(0, 77)}...` : name);
  return quoted.replace(/[\u2028\u2029]/g, ' ');
}

function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return shape.includes(0) ? 0 : count;
}

function entriesOf<T>(items: Record<string, T> | Map<string, T>): [string, T][] {
  return items instanceof Map ? [...items.entries()] : Object.entries(items);
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Serialises `tensors` in the order given (same input, same bytes). The header is padded with
 * spaces so the data region starts at a multiple of 8. Throws (a programming error, not a
 * MinigptError) when a tensor's data does not match its dtype or shape.
 */
export function encodeSafetensors(
  tensors: Record<string, NamedTensor> | Map<string, NamedTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  return joinParts(encodeSafetensorsParts(tensors, metadata));
}

/** The parts of a file, joined into one buffer. */
export function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * encodeSafetensors' bytes as parts to write one after another: the header, then each tensor's
 * data. F32 and I32 tensors are views of their arrays (no copy) on a little-endian machine; F16
 * and BF16 ones are encoded. What saving a large model writes without a second copy of it.
 */
export function encodeSafetensorsParts(
  tensors: Record<string, NamedTensor> | Map<string, NamedTensor>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const entries = entriesOf(tensors);
  const headerParts: string[] = [];
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new TypeError(`metadata ${quote(key)} is a ${typeof value}, not a string`);
    }
    headerParts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  let dataBytes = 0;
  const offsets: number[] = [];
  for (const [name, tensor] of entries) {
    if (name === METADATA_KEY) throw new Error(`a tensor cannot be named ${METADATA_KEY}`);
    checkTensorToWrite(name, tensor);
    const byteLength = tensor.data.length * BYTES_PER_ELEMENT[tensor.dtype];
    offsets.push(dataBytes);
    // Field order as in files written by the reference implementation.
    headerParts.push(
      `${JSON.stringify(name)}:${JSON.stringify({
        dtype: tensor.dtype,
        shape: tensor.shape,
        data_offsets: [dataBytes, dataBytes + byteLength],
      })}`,
    );
    dataBytes += byteLength;
  }
  // Built by hand rather than with JSON.stringify(object) so integer-like names ("0", "1") keep
  // the given order instead of being hoisted.
  const unpaddedHeader = new TextEncoder().encode(`{${headerParts.join(',')}}`);
  const headerBytes = Math.ceil(unpaddedHeader.length / 8) * 8;
  const dataStart = 8 + headerBytes;

  const head = new Uint8Array(dataStart);
  new DataView(head.buffer).setBigUint64(0, BigInt(headerBytes), true);
  head.set(unpaddedHeader, 8);
  head.fill(0x20, 8 + unpaddedHeader.length, dataStart);
  return [head, ...entries.map(([, tensor]) => tensorBytes(tensor))];
}

function checkTensorToWrite(name: string, tensor: NamedTensor): void {
  if (!isSupportedDType(tensor.dtype)) throw new TypeError(`tensor ${quote(name)} has unsupported dtype ${String(tensor.dtype)}`);
  const wantInt = tensor.dtype === 'I32';
  if (wantInt ? !(tensor.data instanceof Int32Array) : !(tensor.data instanceof Float32Array)) {
    throw new TypeError(`tensor ${quote(name)} is ${tensor.dtype} but its data is a ${tensor.data.constructor.name}`);
  }
  for (const dim of tensor.shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) throw new RangeError(`tensor ${quote(name)} has invalid shape [${tensor.shape.join(', ')}]`);
  }
  const count = elementCount(tensor.shape);
  if (count !== tensor.data.length) {
    throw new RangeError(`tensor ${quote(name)} has shape [${tensor.shape.join(', ')}] (${count} elements) but ${tensor.data.length} values`);
  }
}

/** A tensor's data as stored: little-endian, 16-bit types encoded. */
function tensorBytes(tensor: NamedTensor): Uint8Array {
  const { data } = tensor;
  if (tensor.dtype === 'F16' || tensor.dtype === 'BF16') {
    const encode = tensor.dtype === 'F16' ? encodeF16 : encodeBf16;
    const bits = encode(data as Float32Array, new Uint16Array(data.length));
    const bytes = new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
    if (!PLATFORM_IS_LITTLE_ENDIAN) swapBytes(bytes, 2);
    return bytes;
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (PLATFORM_IS_LITTLE_ENDIAN) return bytes;
  const swapped = bytes.slice();
  swapBytes(swapped, 4);
  return swapped;
}

function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

/** Writes `encodeSafetensors(tensors, metadata)` to `path` and fsyncs it (not atomic: callers rename). */
export async function writeSafetensorsFile(
  path: string,
  tensors: Record<string, NamedTensor> | Map<string, NamedTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  checkNodeOnly('writeSafetensorsFile()');
  const bytes = encodeSafetensors(tensors, metadata);
  const file = await open(path, 'w');
  try {
    await file.writeFile(bytes);
    await file.sync();
  } finally {
    await file.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

interface TensorEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses and checks a whole safetensors file. `source` names it in error messages. F32 and I32
 * tensors whose bytes are 4-aligned in `bytes` are views over it (no copy); everything else is
 * copied or decoded.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'safetensors file'): SafetensorsContents {
  const fail = (problem: string): never => {
    throw new MinigptError(`${source} ${problem}`);
  };
  if (bytes.length < 8) fail(`is not a safetensors file: it is ${bytes.length} bytes long, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const declaredHeaderBytes = view.getBigUint64(0, true);
  if (declaredHeaderBytes > BigInt(MAX_HEADER_BYTES)) {
    fail(`is not a safetensors file: its header length field says ${declaredHeaderBytes} bytes (the limit is ${MAX_HEADER_BYTES})`);
  }
  const headerBytes = Number(declaredHeaderBytes);
  if (8 + headerBytes > bytes.length) {
    fail(`is truncated: header length field says ${headerBytes} bytes of header, file has ${bytes.length - 8} bytes after the length field`);
  }

  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + headerBytes));
  } catch {
    return fail('has a corrupt header: it is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (err) {
    return fail(`has a corrupt header: it is not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    fail(`has a corrupt header: it is JSON ${Array.isArray(header) ? 'array' : String(header === null ? 'null' : typeof header)}, not an object`);
  }

  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, fail);
    else entries.push(parseTensorEntry(name, value, fail));
  }

  const dataStart = 8 + headerBytes;
  const dataBytes = bytes.length - dataStart;
  checkLayout(entries, dataBytes, fail);

  const tensors = new Map<string, NamedTensor>();
  for (const entry of entries) {
    const { dtype, shape } = entry;
    const raw = bytes.subarray(dataStart + entry.begin, dataStart + entry.end);
    if (dtype === 'F16' || dtype === 'BF16') {
      let decoded: Float32Array | null = null;
      tensors.set(entry.name, {
        dtype, shape,
        get data() {
          decoded ??= readTensorData(dtype, raw) as Float32Array;
          return decoded;
        },
        readInto(out: Float32Array) {
          check(out.length === raw.length / 2, () => `readInto: ${out.length} values for a tensor of ${raw.length / 2}`);
          if (decoded) out.set(decoded);
          else readHalfData(dtype, raw, out);
        },
      });
    } else {
      tensors.set(entry.name, { dtype, shape, data: readTensorData(dtype, raw) });
    }
  }
  return { tensors, metadata };
}

function parseMetadata(value: unknown, fail: (problem: string) => never): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`has a corrupt header: ${METADATA_KEY} must be an object of strings`);
  }
  const pairs = Object.entries(value as Record<string, unknown>);
  for (const [key, item] of pairs) {
    if (typeof item !== 'string') fail(`has a corrupt header: ${METADATA_KEY} entry ${quote(key)} is not a string`);
  }
  // fromEntries defines own properties, so even a "__proto__" key survives as data.
  return Object.fromEntries(pairs) as Record<string, string>;
}

function parseTensorEntry(name: string, value: unknown, fail: (problem: string) => never): TensorEntry {
  const bad = (problem: string): never => fail(`has a corrupt header: tensor ${quote(name)} ${problem}`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad('is not an object');
  const fields = value as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!TENSOR_ENTRY_KEYS.has(key)) bad(`has unknown field ${quote(key)}`);
  }
  const { dtype, shape, data_offsets: offsets } = fields;
  if (dtype === undefined) bad('has no dtype');
  if (typeof dtype !== 'string') bad('has a dtype that is not a string');
  if (!isSupportedDType(dtype as string)) {
    bad(`has dtype ${quote(dtype as string)}; supported dtypes are ${Object.keys(BYTES_PER_ELEMENT).join(', ')}`);
  }
  if (shape === undefined) bad('has no shape');
  if (!Array.isArray(shape) || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
    bad(`has shape ${JSON.stringify(shape).slice(0, 80)}; expected an array of non-negative integers`);
  }
  if (offsets === undefined) bad('has no data_offsets');
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((offset) => Number.isSafeInteger(offset) && offset >= 0)
  ) {
    bad(`has data_offsets ${JSON.stringify(offsets).slice(0, 80)}; expected [begin, end] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) bad(`has data_offsets [${begin}, ${end}] with begin after end`);
  const typedDType = dtype as SafetensorsDType;
  const dims = (shape as number[]).map((dim) => dim + 0); // + 0 turns a JSON -0 into 0
  const count = elementCount(dims);
  const expectedBytes = count * BYTES_PER_ELEMENT[typedDType];
  if (expectedBytes !== end - begin) {
    bad(
      `has shape [${dims.join(', ')}] of ${typedDType}, which needs ${Number.isSafeInteger(expectedBytes) ? expectedBytes : 'more than 2^53'} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`,
    );
  }
  return { name, dtype: typedDType, shape: dims, begin, end };
}

/** Checks that the tensors tile [0, dataBytes) exactly; sorts `entries` by position. */
function checkLayout(entries: TensorEntry[], dataBytes: number, fail: (problem: string) => never): void {
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let declaredBytes = 0;
  for (const entry of entries) declaredBytes = Math.max(declaredBytes, entry.end);
  if (declaredBytes > dataBytes) {
    fail(`is truncated: header says ${declaredBytes} bytes of tensor data, file has ${dataBytes}`);
  }
  let covered = 0;
  let previous: TensorEntry | undefined;
  for (const entry of entries) {
    if (entry.begin > covered) {
      fail(`has a corrupt header: data bytes ${covered}..${entry.begin} belong to no tensor (gap before ${quote(entry.name)})`);
    }
    if (entry.begin < covered) {
      fail(`has a corrupt header: tensors ${quote(previous!.name)} and ${quote(entry.name)} overlap in the data region`);
    }
    covered = entry.end;
    previous = entry;
  }
  if (covered < dataBytes) {
    fail(`has ${dataBytes - covered} bytes after the last tensor's data (header says ${covered} bytes of tensor data, file has ${dataBytes})`);
  }
}

/** `raw` holds exactly the tensor's little-endian bytes. */
/** F16 or BF16 bytes decoded into `out` (a new array without it). */
function readHalfData(dtype: 'F16' | 'BF16', raw: Uint8Array, out?: Float32Array): Float32Array {
  const count = raw.length / 2;
  let bits: Uint16Array;
  if (PLATFORM_IS_LITTLE_ENDIAN && raw.byteOffset % 2 === 0) bits = new Uint16Array(raw.buffer, raw.byteOffset, count);
  else {
    bits = new Uint16Array(count);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true);
  }
  return dtype === 'F16' ? decodeF16(bits, out) : decodeBf16(bits, out);
}

function readTensorData(dtype: SafetensorsDType, raw: Uint8Array): Float32Array | Int32Array {
  if (dtype === 'F16' || dtype === 'BF16') return readHalfData(dtype, raw);
  const count = raw.length / 4;
  if (PLATFORM_IS_LITTLE_ENDIAN && raw.byteOffset % 4 === 0) {
    return dtype === 'F32' ? new Float32Array(raw.buffer, raw.byteOffset, count) : new Int32Array(raw.buffer, raw.byteOffset, count);
  }
  const copy = dtype === 'F32' ? new Float32Array(count) : new Int32Array(count);
  const copyBytes = new Uint8Array(copy.buffer);
  copyBytes.set(raw);
  if (!PLATFORM_IS_LITTLE_ENDIAN) swapBytes(copyBytes, 4);
  return copy;
}

/** Reads and decodes a safetensors file; the path names it in error messages. */
export async function readSafetensorsFile(path: string): Promise<SafetensorsContents> {
  checkNodeOnly('readSafetensorsFile()');
  let bytes: Uint8Array;
  try {
    bytes = await readWholeFile(path);
  } catch (err) {
    if (err instanceof MinigptError) throw err;
    throw new MinigptError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return decodeSafetensors(bytes, path);
}
