/**
 * A checkpoint is a directory:
 *   config.json             the model config (our field names) and the format version
 *   model.safetensors       weights under Hugging Face LLaMA names, [out, in] layout
 *   tokenizer.minigpt.json  the tokenizer, so sample/eval never need a flag for it
 *   optimizer.safetensors   training checkpoints only: AdamW moments
 *   trainer_state.json      training checkpoints only: step and whatever resuming needs
 *   manifest.json           sha256 of every other file, written last and checked on load
 *
 * Saving is atomic: everything is written and fsynced in a temporary sibling directory which
 * then replaces the old checkpoint by rename, so a crash leaves either the old checkpoint or
 * the new one, never a mix. A directory that is not a minigpt checkpoint is never overwritten.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { exists, ioError, writeDirFiles } from '../util/fs.js';
import { basename, dirname, join, resolve } from 'node:path';
import { MinigptError, check } from '../errors.js';
import { configFromJson, type ModelConfig } from '../model/config.js';
import { paramLayout } from '../model/params.js';
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from './safetensors.js';
import { tokenizerFromJson, type Tokenizer } from '../data/tokenizer.js';

export const CHECKPOINT_FORMAT = 'minigpt-checkpoint';
export const CHECKPOINT_VERSION = 1;

export type WeightDType = 'F32' | 'F16' | 'BF16';

export interface TrainingState {
  /** Optimizer steps taken. */
  step: number;
  /** AdamW first and second moments, laid out like the parameters. */
  m: Float32Array;
  v: Float32Array;
  /** Anything else the trainer needs to resume exactly (JSON-serialisable). */
  trainer: Record<string, unknown>;
}

export interface Checkpoint {
  config: ModelConfig;
  /** Flat parameter buffer in paramLayout(config) order. */
  weights: Float32Array;
  tokenizer: Tokenizer;
  training?: TrainingState;
}

const FILES = {
  config: 'config.json',
  model: 'model.safetensors',
  tokenizer: 'tokenizer.minigpt.json',
  optimizer: 'optimizer.safetensors',
  trainer: 'trainer_state.json',
  manifest: 'manifest.json',
};

/** Splits the flat buffer into Hugging Face named tensors (views, no copies). */
export function namedWeights(config: ModelConfig, weights: Float32Array, dtype: WeightDType = 'F32'): Map<string, NamedTensor> {
  const layout = paramLayout(config);
  check(weights.length === layout.size, `weights have ${weights.length} values, the config needs ${layout.size}`);
  const out = new Map<string, NamedTensor>();
  for (const s of layout.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    out.set(s.name, { dtype, shape: s.shape, data: weights.subarray(s.offset, s.offset + n) });
  }
  return out;
}

/** Gathers Hugging Face named tensors into the flat buffer, strictly: every name, every shape. */
export function flatWeights(config: ModelConfig, tensors: Map<string, NamedTensor>, source: string): Float32Array {
  // A damaged config.json can ask for any size: check it against the tensors (whose size the
  // file bounds) before looping over its layers or allocating for it.
  check(
    config.n_layers <= tensors.size,
    `${source}: config.json says ${config.n_layers} layers but there are only ${tensors.size} tensors; config.json and the weights are from different models (was config.json edited?)`,
  );
  const layout = paramLayout(config);
  const expected = new Set(layout.specs.map((s) => s.name));
  for (const name of tensors.keys()) {
    check(expected.has(name), `${source}: unexpected tensor "${name}" for this config (is config.json from another model?)`);
  }
  for (const s of layout.specs) {
    const t = tensors.get(s.name);
    check(t, `${source}: tensor "${s.name}" is missing`);
    check(t.dtype !== 'I32', `${source}: tensor "${s.name}" is I32; weights must be F32, F16 or BF16`);
    check(
      t.shape.length === s.shape.length && t.shape.every((d, i) => d === s.shape[i]),
      `${source}: tensor "${s.name}" has shape [${t.shape}], config.json says [${s.shape}]; config.json and the weights are from different models (was config.json edited?)`,
    );
  }
  // Every tensor matched its shape, so the buffer is no larger than the file's data.
  const weights = new Float32Array(layout.size);
  for (const s of layout.specs) {
    const data = tensors.get(s.name)!.data as Float32Array;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new MinigptError(`${source}: tensor "${s.name}" contains ${data[i]} at index ${i}; the checkpoint is corrupt`);
    }
    weights.set(data, s.offset);
  }
  return weights;
}

function configJson(config: ModelConfig): Record<string, unknown> {
  return { format: CHECKPOINT_FORMAT, format_version: CHECKPOINT_VERSION, ...config };
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** True when `dir` holds a minigpt checkpoint (its config.json says so). */
export async function isCheckpointDir(dir: string): Promise<boolean> {
  try {
    const json = JSON.parse(await readFile(join(dir, FILES.config), 'utf8'));
    return json?.format === CHECKPOINT_FORMAT;
  } catch {
    return false;
  }
}

/** True when checkpoint `dir` holds training state (optimizer moments) to resume from: one written by training. */
export async function hasTrainingState(dir: string): Promise<boolean> {
  return exists(join(dir, FILES.optimizer));
}

/**
 * A run directory (one holding `checkpoint/` but no config.json of its own) -> its checkpoint
 * directory, after recovering an interrupted save of it; any other directory unchanged.
 */
export async function checkpointDirOf(dir: string): Promise<string> {
  const inner = join(dir, 'checkpoint');
  await recoverInterruptedSave(inner).catch(() => {});
  return !(await exists(join(dir, FILES.config))) && (await exists(join(inner, FILES.config))) ? inner : dir;
}

/** What a config.json that is not ours is, for an error message. */
function foreignConfigHint(json: Record<string, unknown> | null, dir: string): string {
  if (json && (typeof json.model_type === 'string' || Array.isArray(json.architectures))) {
    return `; it looks like a Hugging Face model directory: convert it with minigpt import --from ${dir} --out DIR`;
  }
  return '';
}

/**
 * A save killed between its two renames leaves no `dir` but a `.dir.old-*` sibling holding
 * the previous checkpoint: put it back. Leftover `.dir.tmp-*` siblings are unfinished saves
 * and are removed (only when no process that could own them is still running).
 */
export async function recoverInterruptedSave(dir: string): Promise<void> {
  const parent = dirname(dir), base = basename(dir);
  let siblings: string[];
  try {
    siblings = await readdir(parent);
  } catch {
    return;
  }
  const alive = (name: string): boolean => {
    const pid = Number(/-(\d+)-[0-9a-f]+$/.exec(name)?.[1]);
    if (!pid || pid === process.pid) return pid === process.pid;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const old = siblings.filter((n) => n.startsWith(`.${base}.old-`) && !alive(n));
  if (!(await exists(dir)) && old.length > 0) {
    const stats = await Promise.all(old.map(async (n) => ({ n, t: (await stat(join(parent, n))).mtimeMs })));
    stats.sort((a, b) => b.t - a.t);
    if (await isCheckpointDir(join(parent, stats[0].n))) await rename(join(parent, stats[0].n), dir);
  }
  for (const n of siblings) {
    if ((n.startsWith(`.${base}.tmp-`) || n.startsWith(`.${base}.old-`)) && !alive(n) && (await exists(join(parent, n)))) {
      if (await exists(dir)) await rm(join(parent, n), { recursive: true, force: true });
    }
  }
}

export interface SaveOptions {
  /** Storage type of model.safetensors (the optimizer state is always F32). */
  dtype?: WeightDType;
}

/** Writes `ckpt` to `dir` atomically (see the file comment). */
export async function saveCheckpoint(dir: string, ckpt: Checkpoint, opts: SaveOptions = {}): Promise<void> {
  dir = resolve(dir);
  await recoverInterruptedSave(dir);
  if (await exists(dir)) {
    const isDir = (await stat(dir)).isDirectory();
    const entries = isDir ? await readdir(dir) : ['(a file)'];
    check(
      isDir && (entries.length === 0 || (await isCheckpointDir(dir))),
      `${dir} exists and is not a minigpt checkpoint; refusing to overwrite it (choose another output directory)`,
    );
  }
  const files = new Map<string, Uint8Array>();
  const text = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o, null, 2) + '\n');
  files.set(FILES.config, text(configJson(ckpt.config)));
  files.set(FILES.model, encodeSafetensors(namedWeights(ckpt.config, ckpt.weights, opts.dtype ?? 'F32'), { format: 'pt' }));
  files.set(FILES.tokenizer, text(ckpt.tokenizer.toJSON()));
  if (ckpt.training) {
    const t = ckpt.training;
    files.set(FILES.optimizer, encodeSafetensors({
      'adamw.m': { dtype: 'F32', shape: [t.m.length], data: t.m },
      'adamw.v': { dtype: 'F32', shape: [t.v.length], data: t.v },
    }));
    files.set(FILES.trainer, text({ step: t.step, ...t.trainer }));
  }
  files.set(FILES.manifest, text({ sha256: Object.fromEntries([...files].map(([name, bytes]) => [name, sha256(bytes)])) }));

  await writeDirFiles(dir, files, `checkpoint ${dir}`);
}

async function readChecked(dir: string, name: string, manifest: Record<string, string> | null): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MinigptError(`${join(dir, name)} is missing; the checkpoint is incomplete`);
    throw ioError(e, `read ${join(dir, name)}`);
  }
  if (manifest) {
    check(name in manifest, `${join(dir, FILES.manifest)} does not list ${name}; the checkpoint is corrupt`);
    check(sha256(bytes) === manifest[name], `${join(dir, name)} does not match its checksum in manifest.json; the file is corrupt or was modified`);
  }
  return bytes;
}

function parseJson(bytes: Uint8Array, source: string): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new MinigptError(`${source} is not valid JSON; the checkpoint is corrupt`);
  }
}

/**
 * Loads a checkpoint directory (or a run directory: its `checkpoint/`), verifying checksums,
 * config, every tensor's name and shape. Training state is loaded only when asked for (it is
 * twice the size of the weights).
 */
export async function loadCheckpoint(dir: string, opts: { training?: boolean } = {}): Promise<Checkpoint> {
  dir = await checkpointDirOf(resolve(dir));
  await recoverInterruptedSave(dir).catch(() => {});
  let info;
  try {
    info = await stat(dir);
  } catch {
    throw new MinigptError(`checkpoint ${dir} does not exist`);
  }
  check(info.isDirectory(), `${dir} is a file; a checkpoint is a directory (with config.json and model.safetensors)`);
  check(await exists(join(dir, FILES.config)), `${dir} is not a minigpt checkpoint (no config.json)`);

  let manifest: Record<string, string> | null = null;
  if (await exists(join(dir, FILES.manifest))) {
    const m = parseJson(await readChecked(dir, FILES.manifest, null), join(dir, FILES.manifest)) as { sha256?: Record<string, string> };
    check(m && typeof m.sha256 === 'object' && m.sha256 !== null, `${join(dir, FILES.manifest)} has no sha256 table; the checkpoint is corrupt`);
    manifest = m.sha256;
  }
  const configSource = join(dir, FILES.config);
  const configRaw = parseJson(await readChecked(dir, FILES.config, manifest), configSource) as Record<string, unknown>;
  check(configRaw?.format === CHECKPOINT_FORMAT, () => `${configSource} is not a minigpt checkpoint config (format is ${JSON.stringify(configRaw?.format)})${foreignConfigHint(configRaw, dir)}`);
  check(
    configRaw.format_version === CHECKPOINT_VERSION,
    `${configSource} has format_version ${JSON.stringify(configRaw.format_version)}; this minigpt reads version ${CHECKPOINT_VERSION}`,
  );
  const config = configFromJson(configRaw, configSource);

  const modelSource = join(dir, FILES.model);
  const { tensors } = decodeSafetensors(await readChecked(dir, FILES.model, manifest), modelSource);
  const weights = flatWeights(config, tensors, modelSource);

  const tokSource = join(dir, FILES.tokenizer);
  const tokenizer = tokenizerFromJson(parseJson(await readChecked(dir, FILES.tokenizer, manifest), tokSource), tokSource);
  check(
    tokenizer.vocabSize <= config.vocab_size,
    `${tokSource} has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}; tokenizer and model do not belong together: put back the tokenizer.minigpt.json saved with this model`,
  );

  const ckpt: Checkpoint = { config, weights, tokenizer };
  if (opts.training) {
    check(await exists(join(dir, FILES.optimizer)), `${dir} has no optimizer state (it is not a training checkpoint), so training cannot resume from it exactly`);
    const optSource = join(dir, FILES.optimizer);
    const opt = decodeSafetensors(await readChecked(dir, FILES.optimizer, manifest), optSource).tensors;
    const m = opt.get('adamw.m'), v = opt.get('adamw.v');
    check(m && v && m.data.length === weights.length && v.data.length === weights.length && m.dtype === 'F32' && v.dtype === 'F32',
      `${optSource} does not hold F32 adamw.m and adamw.v of ${weights.length} values; the checkpoint is corrupt`);
    const trainerSource = join(dir, FILES.trainer);
    const trainer = parseJson(await readChecked(dir, FILES.trainer, manifest), trainerSource) as Record<string, unknown>;
    check(trainer && Number.isInteger(trainer.step) && (trainer.step as number) >= 0, `${trainerSource} has no valid "step"; the checkpoint is corrupt`);
    const { step, ...rest } = trainer;
    ckpt.training = { step: step as number, m: m.data as Float32Array, v: v.data as Float32Array, trainer: rest };
  }
  return ckpt;
}
