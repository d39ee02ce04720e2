/**
 * IEEE 754 binary16 ("f16", 1 sign / 5 exponent / 10 mantissa bits) and bfloat16 ("bf16",
 * 1 / 8 / 7: the top half of an f32) conversions.
 *
 * Every f32 -> f16/bf16 conversion rounds to nearest, ties to even, exactly as IEEE hardware
 * does: values too small for a normal number become subnormals (or a signed zero), values whose
 * rounded magnitude is at least 2^16 (f16) or 2^128 (bf16) become ±Infinity, NaN stays NaN
 * (quiet, sign and top payload bits kept) and -0 stays -0. Decoding is exact.
 *
 * Scalar functions take a JS number and first round it to f32, as storing it in a Float32Array
 * would; so f32ToF16Bits(x) is the f16 nearest to Math.fround(x), not to x.
 */

// Bit access to one f32: write F32_SCRATCH[0], read U32_SCRATCH[0] (and the other way round).
const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/** f16 bits of the f32 whose bits are `bits` (a u32), rounded to nearest even. */
function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  const exponent = abs >>> 23; // biased by 127
  if (exponent === 0xff) {
    // ±Inf, or NaN: keep the top 10 payload bits and set the quiet bit so the result is never Inf.
    return abs === 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00 | ((abs >>> 13) & 0x3ff);
  }
  // |x| >= 65520 (halfway between max f16 65504 and 2^16) rounds past the largest f16.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (exponent >= 113) {
    // Normal f16 (|x| >= 2^-14): rebias 127 -> 15 and drop 13 mantissa bits. Adding
    // 0xfff + (lowest kept bit) rounds to nearest even; a carry out of the mantissa correctly
    // bumps the exponent.
    return sign | ((abs - 0x38000000 + 0xfff + ((abs >>> 13) & 1)) >>> 13);
  }
  // |x| <= 2^-25 (half the smallest subnormal 2^-24) rounds to zero; exactly 2^-25 is a tie
  // whose even neighbour is zero.
  if (abs <= 0x33000000) return sign;
  // Subnormal f16: value = significand * 2^(exponent - 150), result counts units of 2^-24, so
  // shift the 24-bit significand right by 126 - exponent (14..24) and round what falls off.
  const significand = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exponent;
  let h = significand >>> shift;
  const remainder = significand & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (remainder > half || (remainder === half && (h & 1) === 1)) h++; // 0x3ff + 1 = smallest normal
  return sign | h;
}

/** f32 bits of the f16 whose bits are `h` (exact). */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // Subnormal mantissa * 2^-24: normalise so the leading 1 becomes the implicit bit.
  const leadingZeros = Math.clz32(mantissa) - 22; // zeros above the leading 1 within 10 bits
  const normalisedMantissa = (mantissa << (leadingZeros + 1)) & 0x3ff;
  return (sign | ((112 - leadingZeros) << 23) | (normalisedMantissa << 13)) >>> 0;
}

// f32 bits for each of the 65536 f16 bit patterns: decoding becomes one table lookup.
let f16ToF32BitsTable: Uint32Array | undefined;
function f16Table(): Uint32Array {
  if (f16ToF32BitsTable === undefined) {
    f16ToF32BitsTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16ToF32BitsTable[h] = f16BitsToF32Bits(h);
  }
  return f16ToF32BitsTable;
}

/** bf16 bits of the f32 whose bits are `bits` (a u32), rounded to nearest even. */
function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x0040; // NaN: force the quiet bit
  // Rounding carries into the exponent as needed; above the largest bf16 it lands exactly on
  // the Infinity pattern. bits + 0x8000 stays below 2^32, so no wrap-around.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** f32 bits of the value nearest to the f32 with bits `bits` that bf16 can represent. */
function f32BitsRoundedToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits & 0xffff0000) | 0x00400000) >>> 0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0;
}

export function f32ToF16Bits(x: number): number {
  F32_SCRATCH[0] = x;
  return f32BitsToF16Bits(U32_SCRATCH[0]!);
}

export function f16BitsToF32(h: number): number {
  U32_SCRATCH[0] = f16BitsToF32Bits(h & 0xffff);
  return F32_SCRATCH[0]!;
}

export function f32ToBf16Bits(x: number): number {
  F32_SCRATCH[0] = x;
  return f32BitsToBf16Bits(U32_SCRATCH[0]!);
}

export function bf16BitsToF32(b: number): number {
  U32_SCRATCH[0] = (b & 0xffff) << 16;
  return F32_SCRATCH[0]!;
}

/** Bit view (u32 per element) over a Float32Array's memory. */
function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function outputOfSameLength<T extends { length: number }>(src: { length: number }, dst: T | undefined, make: (n: number) => T): T {
  if (dst === undefined) return make(src.length);
  if (dst.length !== src.length) {
    throw new RangeError(`destination has ${dst.length} elements, source has ${src.length}`);
  }
  return dst;
}

/** f16 bit patterns of `src`, into `dst` (same length) or a new array. */
export function encodeF16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const out = outputOfSameLength(src, dst, (n) => new Uint16Array(n));
  const srcBits = bitsOf(src);
  for (let i = 0; i < srcBits.length; i++) out[i] = f32BitsToF16Bits(srcBits[i]!);
  return out;
}

/** f32 values of the f16 bit patterns in `src`, into `dst` (same length) or a new array. */
export function decodeF16(src: Uint16Array, dst?: Float32Array): Float32Array {
  const out = outputOfSameLength(src, dst, (n) => new Float32Array(n));
  const outBits = bitsOf(out);
  const table = f16Table();
  for (let i = 0; i < src.length; i++) outBits[i] = table[src[i]!]!;
  return out;
}

/** bf16 bit patterns of `src`, into `dst` (same length) or a new array. */
export function encodeBf16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const out = outputOfSameLength(src, dst, (n) => new Uint16Array(n));
  const srcBits = bitsOf(src);
  for (let i = 0; i < srcBits.length; i++) out[i] = f32BitsToBf16Bits(srcBits[i]!);
  return out;
}

/** f32 values of the bf16 bit patterns in `src`, into `dst` (same length) or a new array. */
export function decodeBf16(src: Uint16Array, dst?: Float32Array): Float32Array {
  const out = outputOfSameLength(src, dst, (n) => new Float32Array(n));
  const outBits = bitsOf(out);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i]! << 16;
  return out;
}

/**
 * Rounds every value of `src` to the nearest f16-representable value, kept as f32; in place by
 * default. `dst` (same length) may be `src` itself.
 */
export function roundToF16(src: Float32Array, dst: Float32Array = src): Float32Array {
  const out = outputOfSameLength(src, dst, (n) => new Float32Array(n));
  const srcBits = bitsOf(src);
  const outBits = bitsOf(out);
  const table = f16Table();
  for (let i = 0; i < srcBits.length; i++) outBits[i] = table[f32BitsToF16Bits(srcBits[i]!)]!;
  return out;
}

/**
 * Rounds every value of `src` to the nearest bf16-representable value, kept as f32; in place by
 * default. `dst` (same length) may be `src` itself.
 */
export function roundToBf16(src: Float32Array, dst: Float32Array = src): Float32Array {
  const out = outputOfSameLength(src, dst, (n) => new Float32Array(n));
  const srcBits = bitsOf(src);
  const outBits = bitsOf(out);
  for (let i = 0; i < srcBits.length; i++) outBits[i] = f32BitsRoundedToBf16(srcBits[i]!);
  return out;
}
