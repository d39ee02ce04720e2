import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16BitsToF32,
  decodeBf16,
  decodeF16,
  encodeBf16,
  encodeF16,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  roundToBf16,
  roundToF16,
} from '../src/util/half.js';

const hex = (bits: number): string => `0x${bits.toString(16).padStart(4, '0')}`;

function assertF16Bits(x: number, expected: number): void {
  assert.equal(hex(f32ToF16Bits(x)), hex(expected), `f32ToF16Bits(${x})`);
}

function assertBf16Bits(x: number, expected: number): void {
  assert.equal(hex(f32ToBf16Bits(x)), hex(expected), `f32ToBf16Bits(${x})`);
}

function isF16NaN(bits: number): boolean {
  return (bits & 0x7c00) === 0x7c00 && (bits & 0x03ff) !== 0;
}

function isBf16NaN(bits: number): boolean {
  return (bits & 0x7f80) === 0x7f80 && (bits & 0x007f) !== 0;
}

/** mulberry32: a small seeded generator so failures reproduce. */
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

/**
 * f32 values for rounding sweeps, in four equal kinds: any bit pattern (NaN and Inf included);
 * random mantissas with exponents in `exponentRange`; exact midpoints between two adjacent
 * finite values of the target format (ties, subnormal ones included); and those midpoints
 * nudged one f32 step up or down.
 */
function randomF32Sweep(
  count: number,
  seed: number,
  exponentRange: [number, number],
  decode: (bits: number) => number,
  largestFiniteBits: number,
): Float32Array {
  const random = seededRandom(seed);
  const values = new Float32Array(count);
  const bits = new Uint32Array(values.buffer);
  const [lowExponent, highExponent] = exponentRange;
  for (let i = 0; i < count; i++) {
    const sign = random() < 0.5 ? 0x80000000 : 0;
    const kind = i % 4;
    if (kind === 0) {
      bits[i] = Math.floor(random() * 0x100000000);
    } else if (kind === 1) {
      const exponent = lowExponent + Math.floor(random() * (highExponent - lowExponent + 1));
      bits[i] = (sign | (exponent << 23) | Math.floor(random() * 0x800000)) >>> 0;
    } else {
      const below = Math.floor(random() * largestFiniteBits) | (sign >>> 16);
      values[i] = (decode(below) + decode(below + 1)) / 2; // exact: needs one more bit than the format
      if (kind === 3) bits[i] = bits[i]! + (random() < 0.5 ? -1 : 1);
    }
  }
  return values;
}

/**
 * The value nearest to finite `x` on the grid of a binary format with `mantissaBits` fraction
 * bits and smallest normal exponent `minExponent`, ties to even, or ±Infinity when the rounded
 * magnitude reaches `overflowAt`. Every step is exact in doubles: x has at most 24 significant
 * bits and all scalings are by powers of two.
 */
function referenceRound(x: number, mantissaBits: number, minExponent: number, overflowAt: number): number {
  if (x === 0) return x;
  const magnitude = Math.abs(x);
  let exponent = Math.floor(Math.log2(magnitude));
  while (2 ** exponent > magnitude) exponent--;
  while (2 ** (exponent + 1) <= magnitude) exponent++;
  const unit = 2 ** (Math.max(exponent, minExponent) - mantissaBits);
  const units = magnitude / unit;
  let rounded = Math.floor(units);
  const fraction = units - rounded;
  if (fraction > 0.5 || (fraction === 0.5 && rounded % 2 === 1)) rounded++;
  const result = rounded * unit >= overflowAt ? Infinity : rounded * unit;
  return x < 0 ? -result : result;
}

const referenceF16 = (x: number): number => referenceRound(x, 10, -14, 2 ** 16);
const referenceBf16 = (x: number): number => referenceRound(x, 7, -126, 2 ** 128);

test('f16: small integers and the format limits encode to their known bit patterns', () => {
  assertF16Bits(1, 0x3c00);
  assertF16Bits(-2, 0xc000);
  assertF16Bits(65504, 0x7bff); // largest finite f16
  assertF16Bits(2 ** -14, 0x0400); // smallest normal, 6.1035e-5
  assertF16Bits(2 ** -24, 0x0001); // smallest subnormal, 5.96e-8
  assertF16Bits(2 ** -14 - 2 ** -24, 0x03ff); // largest subnormal
  assertF16Bits(Infinity, 0x7c00);
  assertF16Bits(-Infinity, 0xfc00);
});

test('f16: magnitudes from 65520 up overflow to infinity, just below stays at 65504', () => {
  assertF16Bits(65520, 0x7c00);
  assertF16Bits(-65520, 0xfc00);
  assertF16Bits(Math.fround(65519.996), 0x7bff);
  assertF16Bits(1e10, 0x7c00);
  assertF16Bits(3.4028234663852886e38, 0x7c00);
});

test('f16: exact ties round to the even neighbour', () => {
  assertF16Bits(1 + 2 ** -11, 0x3c00); // between 0x3c00 (even) and 0x3c01
  assertF16Bits(1 + 3 * 2 ** -11, 0x3c02); // between 0x3c01 and 0x3c02 (even)
  assertF16Bits(2048 + 1, 0x6800); // ulp is 2 at 2048
  assertF16Bits(2048 + 3, 0x6802);
  assertF16Bits(2 ** -25, 0x0000); // half the smallest subnormal: ties to zero
  assertF16Bits(3 * 2 ** -25, 0x0002);
  assertF16Bits(5 * 2 ** -25, 0x0002);
  assertF16Bits(2 ** -14 - 2 ** -25, 0x0400); // tie between 0x03ff and 0x0400 carries into the exponent
  assertF16Bits(65504 + 16, 0x7c00); // tie between 65504 (odd mantissa) and 2^16 overflows
});

test('f16: values just off a tie round to the nearer neighbour', () => {
  assertF16Bits(Math.fround(1 + 2 ** -11 + 2 ** -23), 0x3c01);
  assertF16Bits(Math.fround(2 ** -25 + 2 ** -35), 0x0001);
  assertF16Bits(Math.fround(2 ** -25 - 2 ** -35), 0x0000);
});

test('f16: signed zeros keep their sign and tiny values flush to a signed zero', () => {
  assertF16Bits(0, 0x0000);
  assertF16Bits(-0, 0x8000);
  assertF16Bits(-1e-30, 0x8000);
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  assert.ok(Object.is(f16BitsToF32(0x0000), 0));
});

test('f16: NaN encodes to a NaN pattern and decodes to NaN', () => {
  assert.ok(isF16NaN(f32ToF16Bits(NaN)), hex(f32ToF16Bits(NaN)));
  // f32 NaNs whose payload lives only in the low bits must not collapse into Infinity. Arrays
  // keep such bit patterns (reading one into a JS number may quiet it).
  const lowPayloadNaNs = new Float32Array(new Uint32Array([0x7f800001, 0xff801fff]).buffer);
  const encoded = encodeF16(lowPayloadNaNs);
  assert.ok(isF16NaN(encoded[0]!) && isF16NaN(encoded[1]!), `${hex(encoded[0]!)} ${hex(encoded[1]!)}`);
  assert.ok(encoded[1]! & 0x8000, 'sign kept');
  const rounded = roundToF16(lowPayloadNaNs.slice());
  assert.ok(Number.isNaN(rounded[0]!) && Number.isNaN(rounded[1]!));
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.ok(Number.isNaN(f16BitsToF32(0xfc01)));
});

test('f16: decoding known bit patterns gives exact values', () => {
  assert.equal(f16BitsToF32(0x3c00), 1);
  assert.equal(f16BitsToF32(0xc000), -2);
  assert.equal(f16BitsToF32(0x7bff), 65504);
  assert.equal(f16BitsToF32(0x0400), 2 ** -14);
  assert.equal(f16BitsToF32(0x0001), 2 ** -24);
  assert.equal(f16BitsToF32(0x0200), 2 ** -15);
  assert.equal(f16BitsToF32(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16BitsToF32(0x3555), 0.333251953125);
  assert.equal(f16BitsToF32(0x7c00), Infinity);
  assert.equal(f16BitsToF32(0xfc00), -Infinity);
});

test('f16: scalar inputs are first rounded to f32, as storing into a Float32Array would', () => {
  // As a double, 1 + 2^-11 + 2^-40 is above the f16 tie; as an f32 it is exactly the tie.
  assertF16Bits(1 + 2 ** -11 + 2 ** -40, 0x3c00);
});

test('f16: every one of the 65536 bit patterns survives decode and re-encode (NaNs stay NaN)', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const decoded = decodeF16(all);
  const reencoded = encodeF16(decoded);
  for (let h = 0; h < 65536; h++) {
    const scalar = f16BitsToF32(h);
    if (isF16NaN(h)) {
      assert.ok(Number.isNaN(scalar) && Number.isNaN(decoded[h]!), hex(h));
      assert.ok(isF16NaN(f32ToF16Bits(scalar)) && isF16NaN(reencoded[h]!), hex(h));
    } else {
      assert.ok(Object.is(decoded[h], scalar), `${hex(h)}: array ${decoded[h]} vs scalar ${scalar}`);
      assert.equal(f32ToF16Bits(scalar), h, hex(h));
      assert.equal(reencoded[h], h, hex(h));
    }
  }
});

test('f16: rounding of 100k random f32 values matches an exact-arithmetic reference', () => {
  // Exponents 97..145 span from below half the smallest subnormal to beyond 65504.
  const values = randomF32Sweep(100_000, 1234, [97, 145], f16BitsToF32, 0x7bff);
  const encoded = encodeF16(values);
  const rounded = roundToF16(values, new Float32Array(values.length));
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (Number.isNaN(x)) {
      assert.ok(isF16NaN(encoded[i]!) && Number.isNaN(rounded[i]!));
      continue;
    }
    const expected = referenceF16(x);
    const actual = f16BitsToF32(encoded[i]!);
    if (!Object.is(actual, expected)) assert.fail(`f16 of ${x} (f32 bits ${hex(new Uint32Array(values.buffer)[i]!)}): got ${actual}, expected ${expected}`);
    assert.ok(Object.is(rounded[i], expected), `roundToF16(${x}) = ${rounded[i]}, expected ${expected}`);
    assert.equal(f32ToF16Bits(x), encoded[i]);
  }
});

test('bf16: known values, ties to even, overflow, signed zero and NaN', () => {
  assertBf16Bits(1, 0x3f80);
  assertBf16Bits(-2, 0xc000);
  assertBf16Bits(1 + 2 ** -8, 0x3f80); // tie, even neighbour below
  assertBf16Bits(1 + 3 * 2 ** -8, 0x3f82); // tie, even neighbour above
  assertBf16Bits(Math.fround(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assertBf16Bits(3.3895313892515355e38, 0x7f7f); // largest finite bf16
  assertBf16Bits(3.4028234663852886e38, 0x7f80); // largest f32 rounds past it
  assertBf16Bits(2 ** -133, 0x0001); // smallest bf16 subnormal
  assertBf16Bits(-0, 0x8000);
  assertBf16Bits(-Infinity, 0xff80);
  assert.ok(isBf16NaN(f32ToBf16Bits(NaN)));
  const lowPayloadNaNs = new Float32Array(new Uint32Array([0x7f800001, 0xff80ffff]).buffer);
  const encoded = encodeBf16(lowPayloadNaNs);
  assert.ok(isBf16NaN(encoded[0]!) && isBf16NaN(encoded[1]!), `${hex(encoded[0]!)} ${hex(encoded[1]!)}`);
  const rounded = roundToBf16(lowPayloadNaNs.slice());
  assert.ok(Number.isNaN(rounded[0]!) && Number.isNaN(rounded[1]!));
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(0x0001), 2 ** -133);
  assert.ok(Object.is(bf16BitsToF32(0x8000), -0));
  assert.ok(Number.isNaN(bf16BitsToF32(0x7fc0)));
});

test('bf16: every one of the 65536 bit patterns survives decode and re-encode (NaNs stay NaN)', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const decoded = decodeBf16(all);
  const reencoded = encodeBf16(decoded);
  for (let b = 0; b < 65536; b++) {
    if (isBf16NaN(b)) {
      assert.ok(Number.isNaN(decoded[b]!) && isBf16NaN(reencoded[b]!), hex(b));
    } else {
      assert.ok(Object.is(decoded[b], bf16BitsToF32(b)), hex(b));
      assert.equal(reencoded[b], b, hex(b));
      assert.equal(f32ToBf16Bits(decoded[b]!), b, hex(b));
    }
  }
});

test('bf16: rounding of 100k random f32 values matches an exact-arithmetic reference', () => {
  const values = randomF32Sweep(100_000, 5678, [0, 254], bf16BitsToF32, 0x7f7f);
  const encoded = encodeBf16(values);
  const rounded = roundToBf16(values, new Float32Array(values.length));
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (Number.isNaN(x)) {
      assert.ok(isBf16NaN(encoded[i]!) && Number.isNaN(rounded[i]!));
      continue;
    }
    const expected = referenceBf16(x);
    const actual = bf16BitsToF32(encoded[i]!);
    if (!Object.is(actual, expected)) assert.fail(`bf16 of ${x}: got ${actual}, expected ${expected}`);
    assert.ok(Object.is(rounded[i], expected), `roundToBf16(${x}) = ${rounded[i]}, expected ${expected}`);
  }
});

test('roundToF16 and roundToBf16 work in place by default and return their output', () => {
  const values = new Float32Array([0.1, 70000, -1e-9, 1 + 2 ** -11]);
  const result = roundToF16(values);
  assert.equal(result, values);
  assert.deepEqual([...values], [0.0999755859375, Infinity, -0, 1]);

  const values2 = new Float32Array([0.1, 1 + 2 ** -8]);
  assert.equal(roundToBf16(values2), values2);
  assert.deepEqual([...values2], [0.10009765625, 1]);
});

test('rounding leaves the source alone when given a separate destination', () => {
  const source = new Float32Array([0.1]);
  const destination = new Float32Array(1);
  roundToF16(source, destination);
  assert.equal(source[0], Math.fround(0.1));
  assert.equal(destination[0], 0.0999755859375);
});

test('array conversions work on subarray views and reject a destination of the wrong length', () => {
  const backing = new Float32Array([9, 1, -2, 9]);
  const view = backing.subarray(1, 3);
  assert.deepEqual([...encodeF16(view)], [0x3c00, 0xc000]);
  const out = new Float32Array(4).subarray(2);
  decodeF16(new Uint16Array([0x3c00, 0xc000]), out);
  assert.deepEqual([...out], [1, -2]);
  assert.throws(() => encodeF16(new Float32Array(3), new Uint16Array(2)), RangeError);
  assert.throws(() => roundToBf16(new Float32Array(3), new Float32Array(4)), RangeError);
});

test('roundToF16 handles a million values quickly enough for training', () => {
  const values = new Float32Array(1_000_000).map((_, i) => Math.sin(i) * 100);
  const start = performance.now();
  roundToF16(values);
  roundToBf16(values);
  const elapsedMs = performance.now() - start;
  assert.ok(elapsedMs < 500, `took ${elapsedMs.toFixed(1)} ms`);
});
