import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MinigptError } from '../src/errors.js';
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsFile,
  writeSafetensorsFile,
  type NamedTensor,
} from '../src/io/safetensors.js';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, bf16BitsToF32 } from '../src/util/half.js';

// Tests run from dist/test, fixtures stay in the source tree.
const REFERENCE_FILE = fileURLToPath(new URL('../../test/fixtures/safetensors-reference.safetensors', import.meta.url));

const f32 = (shape: number[], values: number[]): NamedTensor => ({ dtype: 'F32', shape, data: new Float32Array(values) });
const f16 = (shape: number[], values: number[]): NamedTensor => ({ dtype: 'F16', shape, data: new Float32Array(values) });
const bf16 = (shape: number[], values: number[]): NamedTensor => ({ dtype: 'BF16', shape, data: new Float32Array(values) });
const i32 = (shape: number[], values: number[]): NamedTensor => ({ dtype: 'I32', shape, data: new Int32Array(values) });

function sampleTensors(): Map<string, NamedTensor> {
  return new Map([
    ['embed', f32([2, 3], [1, -2.5, 0.1, 3e-5, -0, 123456.789])],
    ['odd_half', f16([3], [1, -2, 0.5])], // 6 bytes: puts the next tensor at 2 mod 4
    ['after_odd', f32([2], [7, 8])],
    ['scalar', f32([], [42])],
    ['empty', f32([0, 5], [])],
    ['brain', bf16([2, 2], [1, 0.5, -4, 1024])],
    ['ids', i32([3], [0, -7, 2147483647])],
  ]);
}

function headerOf(bytes: Uint8Array): { length: number; json: Record<string, unknown> } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { length, json: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) };
}

/** A valid file whose header is replaced by `header` (JSON text, padded to a multiple of 8). */
function fileWithHeader(header: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const headerBytes = new TextEncoder().encode(header.padEnd(Math.ceil(header.length / 8) * 8, ' '));
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

function assertRejects(bytes: Uint8Array, messagePattern: RegExp): void {
  assert.throws(
    () => decodeSafetensors(bytes, 'model.safetensors'),
    (err: unknown) => {
      assert.ok(err instanceof MinigptError, `expected MinigptError, got ${String(err)}`);
      assert.match(err.message, /^model\.safetensors /);
      assert.match(err.message, messagePattern);
      assert.ok(!err.message.includes('\n'), 'message is one line');
      return true;
    },
  );
}

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('F32, F16, BF16 and I32 tensors, scalars and zero-size tensors survive a round trip', () => {
  const tensors = sampleTensors();
  const decoded = decodeSafetensors(encodeSafetensors(tensors)).tensors;
  assert.deepEqual([...decoded.keys()], [...tensors.keys()]);
  for (const [name, original] of tensors) {
    const got = decoded.get(name)!;
    assert.equal(got.dtype, original.dtype, name);
    assert.deepEqual(got.shape, original.shape, name);
    assert.equal(got.data.constructor, original.data.constructor, name);
    assert.deepEqual([...got.data], [...original.data], name);
  }
});

test('F32 values keep their exact bits, including -0 and NaN payloads', () => {
  const bits = new Uint32Array([0x80000000, 0x7fc00001, 0x00000001, 0x7f7fffff]);
  const data = new Float32Array(bits.buffer);
  const decoded = decodeSafetensors(encodeSafetensors({ w: { dtype: 'F32', shape: [4], data } })).tensors.get('w')!;
  assert.deepEqual([...new Uint32Array(decoded.data.buffer, decoded.data.byteOffset, 4)], [...bits]);
});

test('F16 and BF16 tensors are stored rounded to nearest even and read back as those values', () => {
  const values = [0.1, 65520, 1 + 2 ** -11, 3e-8];
  const bytes = encodeSafetensors({ h: f16([4], values), b: bf16([4], values) });
  const { tensors } = decodeSafetensors(bytes);
  assert.deepEqual([...tensors.get('h')!.data], values.map((v) => f16BitsToF32(f32ToF16Bits(v))));
  assert.deepEqual([...tensors.get('h')!.data], [0.0999755859375, Infinity, 1, 2 ** -24]);
  assert.deepEqual([...tensors.get('b')!.data], values.map((v) => bf16BitsToF32(f32ToBf16Bits(v))));
  // readInto decodes the same values into a given array (before and after data was decoded), and checks its length.
  for (const name of ['h', 'b']) {
    const t = decodeSafetensors(bytes).tensors.get(name)!;
    const out = new Float32Array(6).fill(7);
    t.readInto!(out.subarray(1, 5));
    assert.deepEqual([...out], [7, ...tensors.get(name)!.data, 7]);
    const again = new Float32Array(4);
    tensors.get(name)!.readInto!(again);
    assert.deepEqual([...again], [...tensors.get(name)!.data]);
    assert.throws(() => t.readInto!(new Float32Array(3)), /readInto: 3 values for a tensor of 4/);
  }
  assert.equal(decodeSafetensors(encodeSafetensors({ f: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } })).tensors.get('f')!.readInto, undefined, 'F32 data is a view already');
});

test('tensors in a Map are laid out in its order, even integer-like names a record would hoist', () => {
  const tensors = new Map([['b', f32([1], [1])], ['10', f32([1], [2])], ['a', f32([1], [3])], ['2', f32([1], [4])]]);
  const bytes = encodeSafetensors(tensors);
  const { json } = headerOf(bytes);
  const begins = Object.entries(json).map(([name, info]) => [name, (info as { data_offsets: number[] }).data_offsets[0]]);
  assert.deepEqual(Object.fromEntries(begins), { b: 0, '10': 4, a: 8, '2': 12 });
  assert.deepEqual([...decodeSafetensors(bytes).tensors.keys()], ['b', '10', 'a', '2']);
});

test('encoding is deterministic: the same tensors give the same bytes, from a Map or a record', () => {
  const first = encodeSafetensors(sampleTensors(), { step: '12' });
  const second = encodeSafetensors(Object.fromEntries(sampleTensors()), { step: '12' });
  assert.deepEqual(first, second);
});

test('the header is padded with spaces so tensor data starts at a multiple of 8', () => {
  for (const name of ['a', 'ab', 'abc', 'abcd', 'abcde', 'abcdef', 'abcdefg', 'abcdefgh']) {
    const bytes = encodeSafetensors({ [name]: f32([1], [1]) });
    const { length } = headerOf(bytes);
    assert.equal(length % 8, 0, name);
    assert.equal(bytes.length, 8 + length + 4, name);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + length));
    assert.match(header, /^\{.*\} *$/, name);
  }
});

test('metadata round-trips, and a file without metadata reads back an empty record', () => {
  const metadata = { format: 'pt', config: '{"dim":64}', '__proto__': 'kept as data', 'ünïcödé': '✓' };
  const bytes = encodeSafetensors(sampleTensors(), metadata);
  assert.deepEqual(decodeSafetensors(bytes).metadata, metadata);
  assert.deepEqual(decodeSafetensors(encodeSafetensors(sampleTensors())).metadata, {});
});

test('a file with no tensors is valid', () => {
  const { tensors, metadata } = decodeSafetensors(encodeSafetensors({}, { note: 'empty' }));
  assert.equal(tensors.size, 0);
  assert.deepEqual(metadata, { note: 'empty' });
});

test('aligned F32 data is a view over the input, misaligned data is copied', () => {
  const bytes = encodeSafetensors(sampleTensors());
  const { tensors } = decodeSafetensors(bytes);
  assert.equal(tensors.get('embed')!.data.buffer, bytes.buffer);
  const shifted = new Uint8Array(bytes.length + 1).subarray(1);
  shifted.set(bytes);
  const copied = decodeSafetensors(shifted).tensors.get('embed')!;
  assert.notEqual(copied.data.buffer, shifted.buffer);
  assert.deepEqual([...copied.data], [...tensors.get('embed')!.data]);
});

test('a file written by PyTorch safetensors parses to the exact values it holds', async () => {
  const { tensors, metadata } = await readSafetensorsFile(REFERENCE_FILE);
  assert.deepEqual(metadata, { format: 'pt' });
  assert.deepEqual([...tensors.keys()], ['weight', 'ids', 'brain', 'half']); // PyTorch's layout order

  const weight = tensors.get('weight')!;
  assert.equal(weight.dtype, 'F32');
  assert.deepEqual(weight.shape, [2, 3]);
  assert.deepEqual([...weight.data], [1, -2.5, Math.fround(0.1), Math.fround(3e-5), -0, Math.fround(123456.789)]);

  const half = tensors.get('half')!;
  assert.equal(half.dtype, 'F16');
  assert.deepEqual(half.shape, [4]);
  assert.deepEqual([...half.data], [1, -2, 0.0999755859375, Infinity]);
  // PyTorch's f32 -> f16 rounding agrees with ours.
  assert.deepEqual([...half.data], [1, -2, 0.1, 70000].map((v) => f16BitsToF32(f32ToF16Bits(v))));

  const brain = tensors.get('brain')!;
  assert.equal(brain.dtype, 'BF16');
  assert.deepEqual(brain.shape, [2, 2]);
  assert.deepEqual([...brain.data], [1, 0.10009765625, -3.00405527047391e38, 9.183549615799121e-41]);
  assert.deepEqual([...brain.data], [1, 0.1, -3e38, 1e-40].map((v) => bf16BitsToF32(f32ToBf16Bits(v))));

  const ids = tensors.get('ids')!;
  assert.equal(ids.dtype, 'I32');
  assert.deepEqual(ids.shape, [3]);
  assert.ok(ids.data instanceof Int32Array);
  assert.deepEqual([...ids.data], [0, -7, 2147483647]);
});

test('re-encoding the PyTorch file in its own order reproduces it byte for byte', async () => {
  const original = new Uint8Array(await readFile(REFERENCE_FILE));
  const { tensors, metadata } = decodeSafetensors(original);
  assert.deepEqual(encodeSafetensors(tensors, metadata), original);
});

test('writeSafetensorsFile writes what readSafetensorsFile reads', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-safetensors-'));
  try {
    const path = join(dir, 'model.safetensors');
    await writeSafetensorsFile(path, sampleTensors(), { step: '3' });
    assert.deepEqual(new Uint8Array(await readFile(path)), encodeSafetensors(sampleTensors(), { step: '3' }));
    const { tensors, metadata } = await readSafetensorsFile(path);
    assert.deepEqual(metadata, { step: '3' });
    assert.deepEqual([...tensors.get('ids')!.data], [0, -7, 2147483647]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('reading a missing file is a MinigptError naming the path', async () => {
  await assert.rejects(readSafetensorsFile('/nonexistent/model.safetensors'), (err: unknown) => {
    assert.ok(err instanceof MinigptError);
    assert.match(err.message, /\/nonexistent\/model\.safetensors/);
    return true;
  });
});

test('reading names the file path in errors about its contents', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-safetensors-'));
  try {
    const path = join(dir, 'broken.safetensors');
    await writeFile(path, encodeSafetensors(sampleTensors()).subarray(0, 100));
    await assert.rejects(readSafetensorsFile(path), (err: unknown) => {
      assert.ok(err instanceof MinigptError);
      assert.ok(err.message.startsWith(`${path} `), err.message);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the writer refuses data that does not match the dtype or shape', () => {
  assert.throws(() => encodeSafetensors({ w: f32([2, 2], [1, 2, 3]) }), /shape \[2, 2\] \(4 elements\) but 3 values/);
  assert.throws(() => encodeSafetensors({ w: { dtype: 'I32', shape: [1], data: new Float32Array(1) } }), /I32 but its data is a Float32Array/);
  assert.throws(() => encodeSafetensors({ w: f32([-1], []) }), /invalid shape/);
  assert.throws(() => encodeSafetensors({ __metadata__: f32([], [1]) }), /__metadata__/);
});

test('rejects a file shorter than the 8-byte header length', () => {
  assertRejects(new Uint8Array(5), /5 bytes long/);
});

test('rejects a header length larger than the file', () => {
  const bytes = encodeSafetensors(sampleTensors());
  new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length), true);
  assertRejects(bytes, /is truncated: header length field says \d+ bytes of header/);
});

test('rejects an absurd header length without trying to allocate it', () => {
  const bytes = encodeSafetensors(sampleTensors());
  new DataView(bytes.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
  assertRejects(bytes, /header length field says 18446744073709551615 bytes \(the limit is 100000000\)/);
});

test('rejects a header that is not UTF-8, not JSON, or not a JSON object', () => {
  assertRejects(fileWithHeader('{}').fill(0xff, 8, 9), /not valid UTF-8/);
  assertRejects(fileWithHeader('{"a": '), /not valid JSON/);
  assertRejects(fileWithHeader('[1, 2]'), /JSON array, not an object/);
  assertRejects(fileWithHeader('null'), /JSON null, not an object/);
  assertRejects(fileWithHeader('"x"'), /JSON string, not an object/);
});

test('rejects tensor entries with missing or mistyped fields', () => {
  const data = new Uint8Array(4);
  assertRejects(fileWithHeader('{"w": 3}', data), /tensor "w" is not an object/);
  assertRejects(fileWithHeader('{"w": {"shape": [1], "data_offsets": [0, 4]}}', data), /tensor "w" has no dtype/);
  assertRejects(fileWithHeader('{"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}', data), /dtype that is not a string/);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "data_offsets": [0, 4]}}', data), /tensor "w" has no shape/);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "shape": [1]}}', data), /tensor "w" has no data_offsets/);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}', data), /has shape "1"/);
  assertRejects(
    fileWithHeader('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}', data),
    /unknown field "extra"/,
  );
});

test('rejects dtypes other than F32, F16, BF16 and I32, naming the dtype', () => {
  const header = '{"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}';
  assertRejects(fileWithHeader(header, new Uint8Array(8)), /tensor "w" has dtype "F64"; supported dtypes are F32, F16, BF16, I32/);
});

test('rejects shapes with negative or fractional dimensions', () => {
  const data = new Uint8Array(8);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', data), /has shape \[-2\]/);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 8]}}', data), /has shape \[1.5\]/);
  assertRejects(fileWithHeader('{"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 8]}}', data), /has shape/);
});

test('rejects data_offsets that are not an ordered pair of non-negative integers', () => {
  const data = new Uint8Array(8);
  const withOffsets = (offsets: string) => fileWithHeader(`{"w": {"dtype": "F32", "shape": [2], "data_offsets": ${offsets}}}`, data);
  assertRejects(withOffsets('[0]'), /data_offsets \[0\]; expected \[begin, end\]/);
  assertRejects(withOffsets('[0, 8, 9]'), /expected \[begin, end\]/);
  assertRejects(withOffsets('[-8, 0]'), /expected \[begin, end\]/);
  assertRejects(withOffsets('[0, 8.5]'), /expected \[begin, end\]/);
  assertRejects(withOffsets('{"begin": 0}'), /expected \[begin, end\]/);
  assertRejects(withOffsets('[8, 0]'), /begin after end/);
});

test('rejects a byte range that does not match the shape and dtype', () => {
  const header = '{"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}';
  assertRejects(fileWithHeader(header, new Uint8Array(16)), /shape \[2, 3\] of F32, which needs 24 bytes, but data_offsets \[0, 16\] hold 16/);
  const huge = '{"w": {"dtype": "F32", "shape": [9007199254740991, 9007199254740991], "data_offsets": [0, 16]}}';
  assertRejects(fileWithHeader(huge, new Uint8Array(16)), /needs more than 2\^53 bytes/);
});

test('rejects tensors that overlap', () => {
  const header = '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}';
  assertRejects(fileWithHeader(header, new Uint8Array(12)), /tensors "a" and "b" overlap/);
  const inside = '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}';
  assertRejects(fileWithHeader(inside, new Uint8Array(8)), /tensors "a" and "e" overlap/);
});

test('rejects data bytes that belong to no tensor', () => {
  const gap = '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}';
  assertRejects(fileWithHeader(gap, new Uint8Array(12)), /data bytes 4\.\.8 belong to no tensor \(gap before "b"\)/);
  const leading = '{"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}';
  assertRejects(fileWithHeader(leading, new Uint8Array(8)), /data bytes 0\.\.4 belong to no tensor/);
});

test('rejects a file with bytes after the last tensor', () => {
  const bytes = encodeSafetensors(sampleTensors());
  const longer = new Uint8Array(bytes.length + 3);
  longer.set(bytes);
  assertRejects(longer, /has 3 bytes after the last tensor's data/);
});

test('rejects a truncated file, saying how much data the header promised', () => {
  const bytes = encodeSafetensors({ w: f32([1024], new Array(1024).fill(1)) });
  const { length } = headerOf(bytes);
  assertRejects(bytes.subarray(0, 8 + length + 1200), /is truncated: header says 4096 bytes of tensor data, file has 1200$/);
});

test('rejects __metadata__ that is not an object of strings', () => {
  assertRejects(fileWithHeader('{"__metadata__": ["a"]}'), /__metadata__ must be an object of strings/);
  assertRejects(fileWithHeader('{"__metadata__": "pt"}'), /__metadata__ must be an object of strings/);
  assertRejects(fileWithHeader('{"__metadata__": {"format": 1}}'), /__metadata__ entry "format" is not a string/);
});

test('fuzz: mutated files either decode to consistent tensors or throw MinigptError, quickly', () => {
  const valid = encodeSafetensors(sampleTensors(), { format: 'pt' });
  const { length: headerLength } = headerOf(valid);
  const random = seededRandom(42);
  const randomInt = (n: number) => Math.floor(random() * n);
  const itemBytes = { F32: 4, F16: 2, BF16: 2, I32: 4 } as const;
  const start = performance.now();
  let decodedCount = 0;
  for (let trial = 0; trial < 4000; trial++) {
    let bytes = valid.slice();
    const mutation = trial % 5;
    if (mutation === 0) {
      bytes = bytes.slice(0, randomInt(bytes.length));
    } else if (mutation === 1) {
      for (let flips = 1 + randomInt(4); flips > 0; flips--) bytes[randomInt(bytes.length)] = randomInt(256);
    } else if (mutation === 2) {
      // Mostly inside the header, where a single byte changes meaning most.
      bytes[8 + randomInt(headerLength)] = ' {}[]",:0123456789-.eEaFIB'.charCodeAt(randomInt(26));
    } else if (mutation === 3) {
      const view = new DataView(bytes.buffer);
      const choices = [0n, 1n, BigInt(headerLength - 1), BigInt(headerLength + 8), BigInt(randomInt(2 ** 31)), 2n ** 63n];
      view.setBigUint64(0, choices[randomInt(choices.length)]!, true);
    } else {
      // Splice in up to 15 random bytes, either inserted or overwriting as many.
      const at = randomInt(bytes.length + 1);
      const garbage = new Uint8Array(randomInt(16)).map(() => randomInt(256));
      const removed = randomInt(2) === 0 ? 0 : Math.min(garbage.length, bytes.length - at);
      bytes = Uint8Array.from([...bytes.subarray(0, at), ...garbage, ...bytes.subarray(at + removed)]);
    }
    let result;
    try {
      result = decodeSafetensors(bytes, 'fuzzed.safetensors');
    } catch (err) {
      if (!(err instanceof MinigptError)) assert.fail(`trial ${trial}: ${String(err)}`);
      assert.ok(err.message.startsWith('fuzzed.safetensors '), err.message);
      continue;
    }
    decodedCount++;
    let total = 0;
    for (const [name, tensor] of result.tensors) {
      const count = tensor.shape.reduce((a, b) => a * b, 1);
      assert.equal(tensor.data.length, count, `trial ${trial}: ${name}`);
      assert.equal(tensor.data instanceof Int32Array, tensor.dtype === 'I32', `trial ${trial}: ${name}`);
      total += count * itemBytes[tensor.dtype];
    }
    assert.equal(total, bytes.length - 8 - Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)));
    for (const value of Object.values(result.metadata)) assert.equal(typeof value, 'string');
  }
  // Byte flips in tensor data leave a valid file, so some trials must decode.
  assert.ok(decodedCount > 0);
  const elapsedMs = performance.now() - start;
  assert.ok(elapsedMs < 3000, `took ${elapsedMs.toFixed(0)} ms`);
});
