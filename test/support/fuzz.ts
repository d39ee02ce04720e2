/**
 * Fuzzing the loaders (safetensors, checkpoint, a checkpoint zip, shards, tokenizer JSON) with random and mutated
 * inputs. Shared by the suite (test/reliability.test.ts, a few hundred to thousands of cases)
 * and `scripts/fuzz.mjs` (as many as you like, each with a time limit).
 *
 * A case either loads cleanly (and what it loaded is self-consistent) or is rejected with a
 * MinigptError; anything else thrown is a failure, and so is a hang, which the script detects.
 * Every case is a pure function of its seed, so any failure can be replayed alone.
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MinigptError } from '../../src/errors.js';
import { createRng, type Rng } from '../../src/util/random.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/io/safetensors.js';
import { checkpointFromZip, loadCheckpoint, saveCheckpoint } from '../../src/io/checkpoint.js';
import { zipFiles } from '../../src/io/zip.js';
import { resolveConfig } from '../../src/model/config.js';
import { initialWeights, paramLayout } from '../../src/model/params.js';
import { buildCharTokenizer, tokenizerFromJson } from '../../src/data/tokenizer.js';
import { trainBpe } from '../../src/data/bpe.js';
import { openShards, prepareShards } from '../../src/data/shards.js';

export const FUZZ_TARGETS = ['safetensors', 'checkpoint', 'shards', 'tokenizer', 'checkpoint-zip'] as const;
export type FuzzTarget = (typeof FUZZ_TARGETS)[number];
export type FuzzOutcome = 'loaded' | 'rejected';

const CORPUS = Array.from({ length: 200 }, (_, i) => `the ${['cat', 'dog'][i % 2]} sat on the mat ${i}.`).join('\n');

/** The seed of case `index` of a run seeded `seed`: cases are independent of each other. */
export function caseSeed(seed: number, index: number): number {
  let h = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

export function randomBytes(rng: Rng, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => rng.int(256));
}

/**
 * One random damage to a file: truncation, bit flips, overwritten bytes, inserted or deleted
 * runs, a splice of the file into itself, or (`header` > 0) an edit of a little-endian integer
 * among the first `header` bytes, where length and count fields live.
 */
export function mutate(bytes: Uint8Array, rng: Rng, header = 0): Uint8Array {
  const b = Uint8Array.from(bytes);
  const at = (): number => rng.int(Math.max(1, b.length));
  switch (rng.int(header > 0 ? 8 : 7)) {
    case 0: return b.subarray(0, rng.int(b.length + 1));
    case 1: for (let k = 0; k < 1 + rng.int(8); k++) { const i = at(); b[i] = b[i]! ^ (1 << rng.int(8)); } return b;
    case 2: for (let k = 0; k < 1 + rng.int(4); k++) b[at()] = rng.int(256); return b;
    case 3: { const i = at(); return Uint8Array.from([...b.subarray(0, i), ...randomBytes(rng, 1 + rng.int(32)), ...b.subarray(i)]); }
    case 4: { const i = at(); return Uint8Array.from([...b.subarray(0, i), ...b.subarray(Math.min(b.length, i + 1 + rng.int(64)))]); }
    case 5: { const i = at(), j = at(); b.copyWithin(i, j, Math.min(b.length, j + 1 + rng.int(64))); return b; }
    case 6: { const i = at(), j = at(); return Uint8Array.from([...b.subarray(0, i), ...b.subarray(j, j + 1 + rng.int(256)), ...b.subarray(i)]); }
    default: {
      const width = [1, 2, 4, 8][rng.int(4)]!;
      const i = rng.int(Math.max(1, Math.min(header, b.length) - width + 1));
      const values = [0n, 1n, -1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 53n, 2n ** 63n - 1n, BigInt(rng.int(2 ** 31)), BigInt(b.length), BigInt(b.length) * 4n];
      let v = BigInt.asUintN(width * 8, values[rng.int(values.length)]!);
      for (let k = 0; k < width && i + k < b.length; k++, v >>= 8n) b[i + k] = Number(v & 0xffn);
      return b;
    }
  }
}

const ODD_VALUES: unknown[] = [null, true, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 2, 65536, 2 ** 31, '', 'x', 'gpt2', 'char', 'bpe', '\uD800', [], [1], {}, { a: 1 }, 'F32', 'I32', [2 ** 40], [-1, 3]];

/** One structural edit of a JSON value: a field deleted, replaced by an odd value, or an array grown/shrunk. */
export function mutateJson(json: unknown, rng: Rng): unknown {
  const copy = JSON.parse(JSON.stringify(json)) as unknown;
  // Walk to a random container.
  let node = copy;
  const path: (string | number)[] = [];
  for (let depth = 0; depth < 4; depth++) {
    const keys = node && typeof node === 'object' ? Object.keys(node as object) : [];
    if (keys.length === 0 || (depth > 0 && rng.int(2) === 0)) break;
    const k = keys[rng.int(keys.length)]!;
    const child = (node as Record<string, unknown>)[k];
    if (!child || typeof child !== 'object') break;
    path.push(k);
    node = child;
  }
  if (!node || typeof node !== 'object') return ODD_VALUES[rng.int(ODD_VALUES.length)];
  const obj = node as Record<string, unknown>;
  const keys = Object.keys(obj);
  const key = keys.length > 0 && rng.int(4) !== 0 ? keys[rng.int(keys.length)]! : Array.isArray(obj) ? String(obj.length) : 'extra';
  switch (rng.int(4)) {
    case 0: if (Array.isArray(obj)) obj.splice(Number(key), 1); else delete obj[key]; break;
    case 1: if (Array.isArray(obj) && obj.length > 0) obj.push(...obj.slice(0, 1 + rng.int(obj.length))); else obj[key] = ODD_VALUES[rng.int(ODD_VALUES.length)]; break;
    default: obj[key] = ODD_VALUES[rng.int(ODD_VALUES.length)];
  }
  return copy;
}

const encodeText = (s: string): Uint8Array => new TextEncoder().encode(s);
const decodeText = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Damage to a JSON file: its bytes (mutate) or its structure (mutateJson), or both. */
function mutateJsonFile(bytes: Uint8Array, rng: Rng): Uint8Array {
  const k = rng.int(3);
  if (k === 0) return mutate(bytes, rng);
  let json: unknown;
  try {
    json = JSON.parse(decodeText(bytes));
  } catch {
    return mutate(bytes, rng);
  }
  for (let n = 1 + rng.int(2); n > 0; n--) json = mutateJson(json, rng);
  const out = encodeText(JSON.stringify(json));
  return k === 2 ? mutate(out, rng) : out;
}

/** Valid inputs every case starts from, built once per process (`dir` is a scratch folder). */
export interface FuzzContext {
  dir: string;
  safetensors: Uint8Array[];
  tokenizers: Uint8Array[];
  checkpoint: Map<string, Uint8Array>;
  shards: Map<string, Uint8Array>;
}

export async function createFuzzContext(dir: string): Promise<FuzzContext> {
  await mkdir(dir, { recursive: true });
  const rng = createRng(1);
  const floats = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
  const safetensors = [
    encodeSafetensors({ w: { dtype: 'F32', shape: [3, 4], data: floats(12) }, b: { dtype: 'F32', shape: [4], data: floats(4) } }, { format: 'pt' }),
    encodeSafetensors({ h: { dtype: 'F16', shape: [2, 2, 2], data: floats(8) }, g: { dtype: 'BF16', shape: [5], data: floats(5) }, i: { dtype: 'I32', shape: [3], data: Int32Array.of(1, -2, 3) } }),
    encodeSafetensors({ s: { dtype: 'F32', shape: [], data: floats(1) }, e: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) } }),
  ];
  const tokenizers = [
    buildCharTokenizer('hello world, é 😀').toJSON(),
    buildCharTokenizer('abc', { unk: '?' }).toJSON(),
    trainBpe(CORPUS, { vocabSize: 280 }).toJSON(),
    { type: 'gpt2' },
  ].map((j) => encodeText(JSON.stringify(j)));

  const config = resolveConfig({ vocab_size: 6, d_model: 8, n_heads: 2, n_layers: 1, context: 8 });
  const layout = paramLayout(config);
  const ckptDir = join(dir, 'source-checkpoint');
  await saveCheckpoint(ckptDir, {
    config, weights: initialWeights(config, layout, createRng(2)), tokenizer: buildCharTokenizer('abcdef'),
    training: { step: 3, m: floats(layout.size), v: floats(layout.size).map(Math.abs), trainer: { total_steps: 10 } },
  });
  const checkpoint = await readFiles(ckptDir);

  await writeFile(join(dir, 'corpus.txt'), CORPUS);
  const shardsDir = join(dir, 'source-shards');
  await prepareShards({ data: join(dir, 'corpus.txt'), out: shardsDir, tokenizer: 'char', shardTokens: 2000, valFraction: 0.2 });
  const shards = await readFiles(shardsDir);
  return { dir, safetensors, tokenizers, checkpoint, shards };
}

async function readFiles(dir: string): Promise<Map<string, Uint8Array>> {
  const { readFile } = await import('node:fs/promises');
  const files = new Map<string, Uint8Array>();
  for (const name of (await readdir(dir)).sort()) files.set(name, new Uint8Array(await readFile(join(dir, name))));
  return files;
}

/** Writes `files` (some damaged, some left out) as a fresh folder. */
async function writeFolder(path: string, files: Map<string, Uint8Array>): Promise<void> {
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
  for (const [name, bytes] of files) await writeFile(join(path, name), bytes);
}

/** Damages 1-3 files of a folder (JSON files structurally too) and sometimes drops one. */
function damageFolder(files: Map<string, Uint8Array>, rng: Rng, skip: (name: string) => boolean): Map<string, Uint8Array> {
  const out = new Map(files);
  const names = [...files.keys()].filter((n) => !skip(n));
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const name = names[rng.int(names.length)]!;
    const bytes = out.get(name)!;
    out.set(name, name.endsWith('.json') ? mutateJsonFile(bytes, rng) : mutate(bytes, rng, name.endsWith('.bin') ? 1024 : 8));
  }
  if (rng.int(10) === 0) out.delete(names[rng.int(names.length)]!);
  return out;
}

/**
 * Runs one case of `target` from `seed`: 'loaded' (and the result checked for consistency) or
 * 'rejected' (a MinigptError). Anything else is thrown: that is a bug the fuzzer found.
 */
export async function runFuzzCase(target: FuzzTarget, seed: number, ctx: FuzzContext): Promise<FuzzOutcome> {
  const rng = createRng(seed);
  const random = rng.int(10) === 0; // one case in ten is random bytes, not a mutation
  try {
    switch (target) {
      case 'safetensors': {
        const bytes = random ? randomBytes(rng, rng.int(256)) : mutate(ctx.safetensors[rng.int(ctx.safetensors.length)]!, rng, 16 + rng.int(64));
        const { tensors } = decodeSafetensors(bytes, 'fuzz.safetensors');
        for (const [name, t] of tensors) {
          const count = t.shape.reduce((a, b) => a * b, 1);
          if (t.data.length !== count) throw new Error(`tensor ${name} has ${t.data.length} values for shape [${t.shape}]`);
        }
        return 'loaded';
      }
      case 'tokenizer': {
        const bytes = random ? randomBytes(rng, rng.int(64)) : mutateJsonFile(ctx.tokenizers[rng.int(ctx.tokenizers.length)]!, rng);
        let json: unknown;
        try {
          json = JSON.parse(decodeText(bytes));
        } catch {
          return 'rejected'; // not JSON: the loaders' callers report that before the tokenizer sees it
        }
        const t = tokenizerFromJson(json, 'fuzz.json');
        const text = ['hello', 'abc', 'the cat', '😀é', ''][rng.int(5)]!;
        let ids: Int32Array;
        try {
          ids = t.encode(text);
        } catch (e) {
          if (e instanceof MinigptError) return 'loaded'; // a character outside a char vocabulary
          throw e;
        }
        for (const id of ids) if (!(id >= 0 && id < t.vocabSize)) throw new Error(`encode gave id ${id} outside the vocabulary of ${t.vocabSize}`);
        t.decode(ids);
        return 'loaded';
      }
      case 'checkpoint': {
        const dir = join(ctx.dir, 'case-checkpoint');
        const files = random
          ? new Map([...ctx.checkpoint].map(([n, b]) => [n, rng.int(3) === 0 ? randomBytes(rng, rng.int(200)) : b]))
          : damageFolder(ctx.checkpoint, rng, () => false);
        // Half the time without the manifest, so the parsers themselves meet the damage.
        if (rng.int(2) === 0) files.delete('manifest.json');
        await writeFolder(dir, files);
        const ckpt = await loadCheckpoint(dir, { training: rng.int(2) === 0 });
        if (ckpt.weights.length !== paramLayout(ckpt.config).size || !ckpt.weights.every(Number.isFinite)) throw new Error('loaded weights do not fit the config');
        return 'loaded';
      }
      case 'checkpoint-zip': {
        // The zip's own bytes damaged, or a zip of damaged files (a manifest half the time).
        let bytes: Uint8Array;
        if (random) bytes = randomBytes(rng, rng.int(300));
        else if (rng.int(2) === 0) bytes = mutate(zipFiles(ctx.checkpoint, 'm'), rng);
        else {
          const files = damageFolder(ctx.checkpoint, rng, () => false);
          if (rng.int(2) === 0) files.delete('manifest.json');
          bytes = zipFiles(files, rng.int(2) === 0 ? 'm' : undefined);
        }
        const ckpt = await checkpointFromZip(bytes, 'fuzz.zip', { training: rng.int(2) === 0 });
        if (ckpt.weights.length !== paramLayout(ckpt.config).size || !ckpt.weights.every(Number.isFinite)) throw new Error('loaded weights do not fit the config');
        return 'loaded';
      }
      case 'shards': {
        const dir = join(ctx.dir, 'case-shards');
        const files = random
          ? new Map([...ctx.shards].map(([n, b]) => [n, n.endsWith('.bin') && rng.int(2) === 0 ? randomBytes(rng, rng.int(2000)) : b]))
          : damageFolder(ctx.shards, rng, () => false);
        await writeFolder(dir, files);
        const opened = await openShards(dir);
        try {
          // Read every token: each must be inside the vocabulary (the stream checks as it reads).
          for (const stream of [opened.train, opened.val]) {
            const out = new Int32Array(Math.min(stream.length, 5000));
            for (let at = 0; at < stream.length; at += out.length) stream.read(at, out.subarray(0, Math.min(out.length, stream.length - at)));
          }
        } finally {
          opened.close();
        }
        return 'loaded';
      }
    }
  } catch (e) {
    if (e instanceof MinigptError) return 'rejected';
    throw e;
  }
}
