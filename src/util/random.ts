/**
 * A small seeded generator (sfc32) whose whole state is four u32s, so a training run can save
 * it in a checkpoint and resume bit-exactly. Not for cryptography.
 */
export interface Rng {
  /** Uniform in [0, 1) with 32 bits of randomness. */
  next(): number;
  /** Standard normal (Box-Muller; the spare value is kept in the state). */
  normal(): number;
  /** Fills `out` with normal() * std, value for value the same (a tight loop: model init draws millions). */
  fillNormal(out: Float32Array, std: number): void;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Everything needed to continue the exact sequence. */
  state(): RngState;
}

/** An Rng's whole state (plain JSON): the four sfc32 words and the spare normal value. */
export interface RngState {
  s: [number, number, number, number];
  spare: number | null;
}

/**
 * A whole-number seed as the u32 the generators start from: itself below 2^32 (negative ones taken
 * mod 2^32); past it, its high bits are folded in, so 2^32 + 5 is not 5 again.
 */
export function seedU32(seed: number): number {
  if (!(seed >= 4294967296)) return seed >>> 0;
  return ((seed >>> 0) ^ hash32(Math.floor(seed / 4294967296) >>> 0)) >>> 0;
}

/** A 32-bit integer hash (lowbias32); the same arithmetic runs in WGSL (dropout masks). */
export function hash32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * A seeded generator (see Rng). A number seed (any whole number, 0 included; see seedU32) always
 * gives the same sequence; a saved state() continues exactly where that generator left off.
 */
export function createRng(seed: number | RngState): Rng {
  let a: number, b: number, c: number, d: number;
  let spare: number | null = null;
  if (typeof seed === 'number') {
    // splitmix32 spreads any seed (0 included) over the four words.
    let x = seedU32(seed);
    const mix = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    a = mix(); b = mix(); c = mix(); d = mix();
  } else {
    [a, b, c, d] = seed.s;
    spare = seed.spare;
  }
  const u32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  const next = (): number => u32() / 4294967296;
  return {
    next,
    normal() {
      if (spare !== null) {
        const v = spare;
        spare = null;
        return v;
      }
      let u = 0;
      while (u === 0) u = next();
      const r = Math.sqrt(-2 * Math.log(u));
      const theta = 2 * Math.PI * next();
      spare = r * Math.sin(theta);
      return r * Math.cos(theta);
    },
    fillNormal(out, std) {
      let i = 0;
      if (spare !== null && out.length > 0) {
        out[i++] = spare * std;
        spare = null;
      }
      // normal() inlined: the same u32 steps, the same Box-Muller arithmetic.
      while (i < out.length) {
        let u = 0;
        while (u === 0) u = u32() / 4294967296;
        const r = Math.sqrt(-2 * Math.log(u));
        const theta = 2 * Math.PI * (u32() / 4294967296);
        out[i++] = r * Math.cos(theta) * std;
        if (i < out.length) out[i++] = r * Math.sin(theta) * std;
        else spare = r * Math.sin(theta);
      }
    },
    int: (n) => Math.floor(next() * n),
    state: () => ({ s: [a, b, c, d], spare }),
  };
}
