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
 *
 * The same files zipped (checkpointToZip; a folder zipped by hand too) are a checkpoint as one
 * file: loadCheckpoint reads a .zip as it reads the directory. Making and reading the files
 * needs no Node API (checkpointFiles, checkpointToZip, checkpointFromZip), so the browser page
 * downloads and uploads checkpoints with them.
 */
import { createHash } from 'node:crypto';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { MAX_FILE_READ_BYTES, exists, interruptedReplaceLeftover, ioError, readWholeFile, recoverInterruptedReplace, writeDirFiles } from '../util/fs.js';
import { basename, dirname, join, resolve } from 'node:path';
import { MinigptError, adviceFor, check, shownValue } from '../errors.js';
import { configFromJson, type ModelConfig } from '../model/config.js';
import { paramLayout, type ParamSpec } from '../model/params.js';
import { decodeSafetensors, encodeSafetensorsParts, joinParts, type NamedTensor } from './safetensors.js';
import { tokenizerFromJson, type Tokenizer } from '../data/tokenizer.js';
import { cleanRecord, legacyClean, type CleanOptions } from '../data/text.js';
import { looksLikeZip, unzipFiles, zipFileNames, zipFiles } from './zip.js';
import { checkNodeOnly } from '../util/runtime.js';

export const CHECKPOINT_FORMAT = 'minigpt-checkpoint';
export const CHECKPOINT_VERSION = 1;

export type WeightDType = 'F32' | 'F16' | 'BF16';

/**
 * What a training checkpoint holds besides the weights, for resuming exactly: saved as
 * optimizer.safetensors (m, v, always F32) and trainer_state.json (step and trainer).
 */
export interface TrainingState {
  /** Optimizer steps taken. */
  step: number;
  /** AdamW first moments, laid out like the parameters. */
  m: Float32Array;
  /** AdamW second moments, laid out like the parameters. */
  v: Float32Array;
  /**
   * Anything else the trainer needs to resume exactly (JSON-serialisable); saved in
   * trainer_state.json beside `step`.
   */
  trainer: Record<string, unknown>;
}

/** A model in memory as loadCheckpoint returns it and saveCheckpoint writes it. */
export interface Checkpoint {
  /** The model's shape (config.json). */
  config: ModelConfig;
  /** Flat parameter buffer in paramLayout(config) order (F16 and BF16 files are decoded to f32). */
  weights: Float32Array;
  /** The model's tokenizer (tokenizer.minigpt.json). */
  tokenizer: Tokenizer;
  /**
   * Optimizer state for resuming training: loaded only with `{ training: true }`; saved when
   * present (a training checkpoint).
   */
  training?: TrainingState;
  /**
   * What the training run that wrote it recorded (trainer_state.json less its step: its data, the
   * cleaning of its text, its options), loaded with or without `training`; absent for checkpoints
   * from init, and for imports but the cleaning their tokenizer.json's normalizer does. Sampling
   * and evaluation clean text as this says the training text was. Saved without `training`, only
   * its `clean` is kept.
   */
  recorded?: Record<string, unknown>;
}

/** The index of the first NaN or ±Infinity in `data`, or -1. */
export function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) return i; // NaN for NaN and ±Infinity
  return -1;
}

/**
 * The cleaning a checkpoint's text went through ({} where its training run used the default
 * cleaning), as its training run recorded it, or its import read it from a tokenizer.json
 * normalizer; undefined without a record.
 */
export function recordedClean(ckpt: Pick<Checkpoint, 'recorded'>): Partial<CleanOptions> | undefined {
  if (!ckpt.recorded || !('clean' in ckpt.recorded)) return undefined;
  const clean = ckpt.recorded.clean;
  return clean !== null && typeof clean === 'object' && !Array.isArray(clean) ? (clean as Partial<CleanOptions>) : {};
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
  // Our own files lay the F32 tensors out in the layout's order, back to back: the flat buffer is
  // then a view of the file's bytes. A copy would cost a fresh allocation as large as the model
  // (2-3 s of page faults for 650 MB here).
  const halves = layout.specs.some((s) => tensors.get(s.name)!.readInto);
  let weights = halves ? null : contiguousView(layout.specs.map((s) => ({ offset: s.offset, data: tensors.get(s.name)!.data })), layout.size);
  const span = (w: Float32Array, s: ParamSpec): Float32Array => w.subarray(s.offset, s.offset + s.shape.reduce((a, b) => a * b, 1));
  if (!weights) {
    // Every tensor matched its shape, so the buffer is no larger than the file's data. F16 and
    // BF16 tensors decode straight into it, never held decoded beside it.
    weights = new Float32Array(layout.size);
    for (const s of layout.specs) {
      const t = tensors.get(s.name)!;
      if (t.readInto) t.readInto(span(weights, s));
      else span(weights, s).set(t.data as Float32Array);
    }
  }
  for (const s of layout.specs) {
    const data = span(weights, s);
    const bad = firstNonFinite(data);
    if (bad >= 0) throw new MinigptError(`${source}: tensor "${s.name}" contains ${data[bad]} at index ${bad}; the checkpoint is corrupt`);
  }
  return weights;
}

/** One Float32Array over all `parts` where each is a Float32Array view at its offset in one buffer, else null. */
function contiguousView(parts: { offset: number; data: Float32Array | Int32Array }[], size: number): Float32Array | null {
  const first = parts[0]?.data;
  if (!(first instanceof Float32Array)) return null;
  const start = first.byteOffset - parts[0]!.offset * 4;
  if (start < 0 || start + size * 4 > first.buffer.byteLength) return null;
  for (const { offset, data } of parts) {
    if (!(data instanceof Float32Array) || data.buffer !== first.buffer || data.byteOffset !== start + offset * 4) return null;
  }
  return new Float32Array(first.buffer, start, size);
}

function configJson(config: ModelConfig): Record<string, unknown> {
  return { format: CHECKPOINT_FORMAT, format_version: CHECKPOINT_VERSION, ...config };
}

/**
 * SHA-256 in hex: node:crypto in Node (Web Crypto's digest there is ~5x slower on a 650 MB
 * model), Web Crypto in a browser page (a secure context); null where there is neither.
 */
async function sha256(bytes: Uint8Array | readonly Uint8Array[]): Promise<string | null> {
  const parts = bytes instanceof Uint8Array ? [bytes] : bytes;
  if (typeof process !== 'undefined' && process.versions?.node) {
    const hash = createHash('sha256');
    // update takes at most 2 GiB at once
    for (const p of parts) for (let at = 0; at < p.length; at += 2 ** 30) hash.update(p.subarray(at, at + 2 ** 30));
    return hash.digest('hex');
  }
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const digest = new Uint8Array(await subtle.digest('SHA-256', joinParts(parts) as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Checks that a call's checkpoint argument is one: { config, weights, tokenizer }, as loadCheckpoint
 * and checkpointFromZip give it (from plain JS a path or a loaded model comes easily).
 */
export function checkCheckpointArg(ckpt: unknown, what: string): void {
  const c = ckpt as Partial<Checkpoint> & { model?: unknown } | null | undefined;
  check(typeof c === 'object' && c !== null && typeof c.config === 'object' && c.config !== null && c.weights instanceof Float32Array && typeof c.tokenizer === 'object' && c.tokenizer !== null,
    () => `${what} needs a checkpoint, { config, weights, tokenizer } as loadCheckpoint(dir) or checkpointFromZip(bytes) gives it (got ${typeof ckpt === 'string' ? `the string ${shownValue(ckpt)}: read it with loadCheckpoint first` : c && typeof c === 'object' && 'model' in c ? 'a loaded model: readWeights(model) gives its weights' : shownValue(ckpt)})`);
}

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
  const inner = await recoveredCheckpointDir(join(dir, 'checkpoint'));
  return !(await exists(join(dir, FILES.config))) && (await exists(join(inner, FILES.config))) ? inner : dir;
}

/**
 * `dir` after recovering an interrupted save of it; where that cannot rename it back (a read-only
 * folder), the `.dir.old-*` folder the save left, to read it there.
 */
async function recoveredCheckpointDir(dir: string): Promise<string> {
  await recoverInterruptedSave(dir).catch(() => {});
  return (await interruptedReplaceLeftover(dir, isCheckpointDir).catch(() => null)) ?? dir;
}

/** What a config.json that is not ours is, for an error message. */
function foreignConfigHint(json: Record<string, unknown> | null, convert: string): string {
  if (json && (typeof json.model_type === 'string' || Array.isArray(json.architectures))) {
    return `; it looks like a Hugging Face model directory: ${convert}`;
  }
  return '';
}

/**
 * A save killed between its two renames leaves no `dir` but a `.dir.old-*` sibling holding
 * the previous checkpoint: put it back (see recoverInterruptedReplace).
 */
export async function recoverInterruptedSave(dir: string): Promise<void> {
  await recoverInterruptedReplace(dir, isCheckpointDir);
}

/**
 * A checkpoint's files (name -> bytes), as saveCheckpoint writes them into its directory and
 * checkpointToZip into a zip. Browser-safe. manifest.json is left out only where Web Crypto is
 * missing (a page served over plain http).
 */
export async function checkpointFiles(ckpt: Checkpoint, opts: SaveOptions = {}): Promise<Map<string, Uint8Array>> {
  checkCheckpointArg(ckpt, 'checkpointFiles');
  const parts = await checkpointFileParts(ckpt, opts);
  return new Map([...parts].map(([name, p]) => [name, joinParts(p)]));
}

/**
 * checkpointFiles as each file's parts, in order: the weights and moments are views of the
 * checkpoint's own arrays, so saving a large model writes them without copying them first (a
 * copy of a 162M-parameter model and its moments is 2 GB more to allocate and fill).
 */
async function checkpointFileParts(ckpt: Checkpoint, opts: SaveOptions = {}): Promise<Map<string, Uint8Array[]>> {
  check(opts.dtype === undefined || opts.dtype === 'F32' || opts.dtype === 'F16' || opts.dtype === 'BF16', `a checkpoint's dtype must be F32, F16 or BF16 (got ${shownValue(opts.dtype)})`);
  const files = new Map<string, Uint8Array[]>();
  const text = (o: unknown): Uint8Array[] => [new TextEncoder().encode(JSON.stringify(o, null, 2) + '\n')];
  files.set(FILES.config, text(configJson(ckpt.config)));
  files.set(FILES.model, encodeSafetensorsParts(namedWeights(ckpt.config, ckpt.weights, opts.dtype ?? 'F32'), { format: 'pt' }));
  files.set(FILES.tokenizer, text(ckpt.tokenizer.toJSON()));
  if (ckpt.training) {
    const t = ckpt.training;
    files.set(FILES.optimizer, encodeSafetensorsParts({
      'adamw.m': { dtype: 'F32', shape: [t.m.length], data: t.m },
      'adamw.v': { dtype: 'F32', shape: [t.v.length], data: t.v },
    }));
    files.set(FILES.trainer, text({ step: t.step, ...t.trainer }));
  } else if (ckpt.recorded && 'clean' in ckpt.recorded) {
    // No run to resume (an import, or a loaded checkpoint saved again): the cleaning its text
    // went through is kept, which sampling and an export's normalizer follow.
    files.set(FILES.trainer, text({ step: 0, clean: cleanRecord(ckpt.recorded.clean as Partial<CleanOptions> | null) }));
  }
  const sums: Record<string, string> = {};
  for (const [name, parts] of files) {
    const sum = await sha256(parts);
    if (sum === null) return files;
    sums[name] = sum;
  }
  files.set(FILES.manifest, text({ sha256: sums }));
  return files;
}

/**
 * A checkpoint as one .zip file holding the folder `opts.folder` (default `minigpt-model`) with
 * its files: what the browser page downloads; loadCheckpoint and every `--ckpt` read it as it is.
 */
export async function checkpointToZip(ckpt: Checkpoint, opts: SaveOptions & { folder?: string } = {}): Promise<Uint8Array> {
  checkCheckpointArg(ckpt, 'checkpointToZip');
  return zipFiles(await checkpointFiles(ckpt, opts), opts.folder ?? 'minigpt-model');
}

/**
 * Refuses a model whose checkpoint files could not be read back (one file is read into one buffer,
 * at most MAX_FILE_READ_BYTES): its F32 weights, and for `training` its AdamW moments (8 bytes a
 * parameter), which resuming reads.
 */
export function checkCheckpointReadable(config: ModelConfig, training: boolean): void {
  const params = paramLayout(config).size, perParam = training ? 8 : 4;
  const gib = (n: number): string => (n / 2 ** 30).toFixed(1);
  check(perParam * params + (1 << 20) <= MAX_FILE_READ_BYTES, () => `a model of ${params.toLocaleString('en-US')} parameters has ${training ? 'AdamW moments' : 'weights'} of ${gib(perParam * params)} GiB, ` +
    `past the ${gib(MAX_FILE_READ_BYTES)} GiB one checkpoint file can be read back from: it could be saved but never ${training ? 'resumed' : 'loaded'}; ` +
    `use a smaller model (at most ~${Math.floor((MAX_FILE_READ_BYTES - (1 << 20)) / perParam / 1e6)}M parameters${training ? ' to train' : ''})`);
}

/** How saveCheckpoint, checkpointFiles and checkpointToZip write a checkpoint. */
export interface SaveOptions {
  /** Storage type of model.safetensors (default F32; the optimizer state is always F32). */
  dtype?: WeightDType;
}

/** Writes `ckpt` to `dir` atomically (see the file comment). */
export async function saveCheckpoint(dir: string, ckpt: Checkpoint, opts: SaveOptions = {}): Promise<void> {
  checkNodeOnly('saveCheckpoint()');
  checkCheckpointArg(ckpt, 'saveCheckpoint');
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
  // Files of the user's in the folder (notes, evaluations) are carried over into the new checkpoint.
  await writeDirFiles(dir, await checkpointFileParts(ckpt, opts), `checkpoint ${dir}`, { ownNames: Object.values(FILES) });
}

/** Where decodeCheckpoint reads a checkpoint's files from: a directory or a zip. */
interface CheckpointFiles {
  /** The bytes of file `name`, or null when there is no such file. */
  read(name: string): Promise<Uint8Array | null>;
  /** File `name`'s path, for messages. */
  path(name: string): string;
  /** The checkpoint itself, for messages. */
  label: string;
  /** How to convert a Hugging Face model found there, for a message. */
  hfHint: string;
}

async function readChecked(src: CheckpointFiles, name: string, manifest: Record<string, string> | null): Promise<Uint8Array> {
  const bytes = await src.read(name);
  if (!bytes) throw new MinigptError(`${src.path(name)} is missing; the checkpoint is incomplete`);
  return checkAgainstManifest(src, name, bytes, manifest);
}

/** `bytes` of file `name`, once they match its checksum in the manifest (when there is one). */
async function checkAgainstManifest(src: CheckpointFiles, name: string, bytes: Uint8Array, manifest: Record<string, string> | null): Promise<Uint8Array> {
  if (manifest) {
    check(name in manifest, `${src.path(FILES.manifest)} does not list ${name}; the checkpoint is corrupt`);
    const sum = await sha256(bytes);
    check(sum === null || sum === manifest[name], `${src.path(name)} does not match its checksum in manifest.json; the file is corrupt or was modified`);
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
 * Loads a checkpoint directory (or a run directory: its `checkpoint/`), or a .zip of one (see
 * checkpointFromZip), verifying checksums, config, every tensor's name and shape. Training state
 * is loaded only when asked for (it is twice the size of the weights).
 */
export async function loadCheckpoint(dir: string, opts: { training?: boolean } = {}): Promise<Checkpoint> {
  checkNodeOnly('loadCheckpoint()');
  return readUnreplaced(dir, async () => {
    const at = await locateCheckpoint(dir);
    if (at.zip) return checkpointFromZip(at.zip, at.path, opts);
    return decodeCheckpoint(dirSource(at.path), opts);
  });
}

/**
 * `read()` of the checkpoint at `dir`, done again when a save replaced it meanwhile (a run saving
 * while `sample` or `eval` reads it): a read that mixed the files of two saves would call a whole
 * checkpoint corrupt or incomplete. A save replaces the folder by renames (commitDir), so the
 * folder's inode tells; up to 10 tries, after which the last outcome stands.
 */
async function readUnreplaced<T>(dir: string, read: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    const before = await checkpointIdentity(dir);
    let outcome: { value: T } | { error: unknown };
    try {
      outcome = { value: await read() };
    } catch (error) {
      outcome = { error };
    }
    const after = await checkpointIdentity(dir);
    if (before === after || tries >= 10) {
      if ('error' in outcome) throw outcome.error;
      return outcome.value;
    }
    await new Promise((done) => setTimeout(done, 20 * tries));
  }
}

/**
 * Which checkpoint `dir` names now: the device, inode and change time of the folder holding its
 * files (`dir`, or a run's `dir/checkpoint`), or of the .zip. A save makes a new folder each time.
 */
async function checkpointIdentity(dir: string): Promise<string> {
  const path = resolve(dir);
  const folder = (await exists(join(path, FILES.config))) || !(await exists(join(path, 'checkpoint'))) ? path : join(path, 'checkpoint');
  const info = await stat(folder).catch(() => null);
  return info ? `${folder} ${info.dev}:${info.ino}:${info.ctimeMs}` : 'missing';
}

/**
 * The trainer state of a checkpoint (its trainer_state.json: "step" and what the run recorded, its
 * data among them) from a checkpoint or run directory or a .zip, as loadCheckpoint finds it,
 * checked against the manifest, without decoding weights or moments. Null when the checkpoint has
 * none (it was written by init or import, not by training).
 */
export async function loadTrainerState(dir: string): Promise<{ step: number; trainer: Record<string, unknown> } | null> {
  return readUnreplaced(dir, () => readTrainerState(dir));
}

async function readTrainerState(dir: string): Promise<{ step: number; trainer: Record<string, unknown> } | null> {
  const at = await locateCheckpoint(dir);
  let src: CheckpointFiles;
  if (at.zip) {
    const root = zipCheckpointRoot(zipFileNames(at.zip, at.path), at.path);
    const wanted = new Set([root + FILES.manifest, root + FILES.trainer]);
    const files = unzipFiles(at.zip, at.path, (name) => wanted.has(name));
    src = zipSource(at.path, root, async (name) => files.get(root + name) ?? null);
  } else {
    src = dirSource(at.path);
  }
  const manifest = await readManifest(src);
  const bytes = await src.read(FILES.trainer);
  if (!bytes) return null;
  return parseTrainerState(await checkAgainstManifest(src, FILES.trainer, bytes, manifest), src);
}

/** loadCheckpoint's `dir` -> the checkpoint directory, or the path and bytes of a .zip. */
async function locateCheckpoint(dir: string): Promise<{ path: string; zip?: Uint8Array }> {
  dir = await recoveredCheckpointDir(await checkpointDirOf(resolve(dir)));
  let info;
  try {
    info = await stat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MinigptError(`checkpoint ${dir} does not exist`);
    throw ioError(e, `read the checkpoint ${dir}`);
  }
  if (info.isFile()) {
    check(dir.toLowerCase().endsWith('.zip') || (await fileStartsLikeZip(dir)), `${dir} is a file; a checkpoint is a directory (with config.json and model.safetensors) or a .zip of one`);
    try {
      return { path: dir, zip: await readWholeFile(dir) };
    } catch (e) {
      throw ioError(e, `read ${dir}`);
    }
  }
  check(info.isDirectory(), `${dir} is not a directory; a checkpoint is a directory (with config.json and model.safetensors) or a .zip of one`);
  check(await exists(join(dir, FILES.config)), `${dir} is not a minigpt checkpoint (no config.json)`);
  return { path: dir };
}

function dirSource(dir: string): CheckpointFiles {
  return {
    async read(name) {
      try {
        return await readWholeFile(join(dir, name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw ioError(e, `read ${join(dir, name)}`);
      }
    },
    path: (name) => join(dir, name),
    label: dir,
    hfHint: adviceFor(`convert it with minigpt import --from ${dir} --out DIR`, `read it with readHfModel(${JSON.stringify(dir)}) (saveCheckpoint keeps what it gives as a checkpoint)`),
  };
}

async function fileStartsLikeZip(path: string): Promise<boolean> {
  try {
    const f = await open(path, 'r');
    try {
      const head = new Uint8Array(4);
      await f.read(head, 0, 4, 0);
      return looksLikeZip(head);
    } finally {
      await f.close();
    }
  } catch {
    return false;
  }
}

/**
 * A checkpoint from the bytes of a .zip (checkpointToZip's, or a checkpoint or run folder zipped
 * by hand: its files at the root or under folders; the shallowest config.json beside a
 * model.safetensors is taken). `source` names the zip in messages. Browser-safe.
 */
export async function checkpointFromZip(bytes: Uint8Array, source: string, opts: { training?: boolean } = {}): Promise<Checkpoint> {
  const files = unzipFiles(bytes, source);
  const root = zipCheckpointRoot([...files.keys()], source);
  return decodeCheckpoint(zipSource(source, root, async (name) => files.get(root + name) ?? null), opts);
}

/**
 * Checks, without decompressing the weights, that zip bytes hold a minigpt checkpoint: a
 * config.json beside a model.safetensors (checkpointFromZip's choice of folder), and that
 * config.json is ours (a zipped Hugging Face folder is not). Throws checkpointFromZip's one-line
 * error otherwise; what it does not check (checksums, shapes) checkpointFromZip still does.
 * Browser-safe: the page asks this before it gives up the model it has for a file.
 */
export function checkCheckpointZip(bytes: Uint8Array, source: string): void {
  const root = zipCheckpointRoot(zipFileNames(bytes, source), source);
  const config = unzipFiles(bytes, source, (name) => name === root + FILES.config).get(root + FILES.config)!;
  const src = zipSource(source, root, async () => null);
  checkConfigFormat(parseJson(config, src.path(FILES.config)) as Record<string, unknown>, src);
}

/** The folder (a prefix of the names, '' for the top level) of the checkpoint in a zip: the shallowest config.json beside a model.safetensors. */
function zipCheckpointRoot(names: string[], source: string): string {
  const present = new Set(names);
  const depth = (prefix: string): number => prefix.split('/').length;
  const roots = names
    .filter((n) => n === FILES.config || n.endsWith(`/${FILES.config}`))
    .map((n) => n.slice(0, n.length - FILES.config.length))
    .filter((prefix) => present.has(prefix + FILES.model))
    .sort((a, b) => depth(a) - depth(b));
  check(roots.length > 0, `${source} holds no checkpoint (no config.json beside a model.safetensors)`);
  check(
    roots.length === 1 || depth(roots[0]) < depth(roots[1]),
    () => `${source} holds more than one checkpoint (${roots.slice(0, 3).map((r) => r || '(top level)').join(', ')}); zip one checkpoint folder`,
  );
  return roots[0];
}

function zipSource(source: string, root: string, read: CheckpointFiles['read']): CheckpointFiles {
  return {
    read,
    path: (name) => `${source}: ${root}${name}`,
    label: source,
    // The page reads zips too and has no commands of its own: the library's wording names the CLI's as well.
    hfHint: adviceFor('unzip it and convert the folder with minigpt import --from DIR --out DIR', 'unzip it and read the folder with readHfModel, or convert it with minigpt import --from DIR --out DIR'),
  };
}

/** config.json says it is a minigpt checkpoint of the version this reads. */
function checkConfigFormat(configRaw: Record<string, unknown>, src: CheckpointFiles): void {
  const configSource = src.path(FILES.config);
  check(typeof configRaw === 'object' && configRaw !== null && !Array.isArray(configRaw), () => `${configSource} is not a JSON object (it holds ${Array.isArray(configRaw) ? 'a list' : JSON.stringify(configRaw)}); the checkpoint is corrupt`);
  check(configRaw?.format === CHECKPOINT_FORMAT, () => `${configSource} is not a minigpt checkpoint config (${configRaw?.format === undefined ? 'it has no "format"' : `format is ${JSON.stringify(configRaw.format)}`})${foreignConfigHint(configRaw, src.hfHint)}`);
  check(
    configRaw.format_version === CHECKPOINT_VERSION,
    `${configSource} has format_version ${JSON.stringify(configRaw.format_version)}; this minigpt reads version ${CHECKPOINT_VERSION}`,
  );
}

/** Checks and decodes a checkpoint's files (the directory and zip loaders' common part). */
async function decodeCheckpoint(src: CheckpointFiles, opts: { training?: boolean }): Promise<Checkpoint> {
  const manifest = await readManifest(src);
  const configSource = src.path(FILES.config);
  const configRaw = parseJson(await readChecked(src, FILES.config, manifest), configSource) as Record<string, unknown>;
  checkConfigFormat(configRaw, src);
  const config = configFromJson(configRaw, configSource);

  const modelSource = src.path(FILES.model);
  const { tensors } = decodeSafetensors(await readChecked(src, FILES.model, manifest), modelSource);
  const weights = flatWeights(config, tensors, modelSource);

  const tokSource = src.path(FILES.tokenizer);
  const tokenizer = tokenizerFromJson(parseJson(await readChecked(src, FILES.tokenizer, manifest), tokSource), tokSource);
  check(
    tokenizer.vocabSize <= config.vocab_size,
    `${tokSource} has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}; tokenizer and model do not belong together: put back the tokenizer.minigpt.json saved with this model`,
  );

  const ckpt: Checkpoint = { config, weights, tokenizer };
  if (!opts.training) {
    // Only what the run recorded is wanted here, not to resume it: a damaged trainer_state.json
    // costs the recorded settings, not the model (its weights are checked on their own).
    const bytes = await src.read(FILES.trainer);
    if (bytes) {
      try {
        ckpt.recorded = parseTrainerState(await checkAgainstManifest(src, FILES.trainer, bytes, manifest), src).trainer;
      } catch { /* left out */ }
    }
  }
  if (opts.training) {
    const optSource = src.path(FILES.optimizer);
    const optBytes = await src.read(FILES.optimizer);
    check(optBytes !== null, `${src.label} has no optimizer state (it is not a training checkpoint), so training cannot resume from it exactly`);
    const opt = decodeSafetensors(await checkAgainstManifest(src, FILES.optimizer, optBytes, manifest), optSource).tensors;
    const m = opt.get('adamw.m'), v = opt.get('adamw.v');
    check(m && v && m.data.length === weights.length && v.data.length === weights.length && m.dtype === 'F32' && v.dtype === 'F32',
      `${optSource} does not hold F32 adamw.m and adamw.v of ${weights.length} values; the checkpoint is corrupt`);
    for (const [name, t] of [['adamw.m', m], ['adamw.v', v]] as const) {
      const bad = firstNonFinite(t.data as Float32Array);
      check(bad < 0, () => `${optSource}: tensor "${name}" contains ${t.data[bad]} at index ${bad}; the checkpoint is corrupt`);
    }
    const { step, trainer } = parseTrainerState(await readChecked(src, FILES.trainer, manifest), src);
    ckpt.training = { step, m: m.data as Float32Array, v: v.data as Float32Array, trainer };
    ckpt.recorded = trainer;
  }
  return ckpt;
}

/** The sha256 table of a checkpoint's manifest.json, or null when it has none. */
async function readManifest(src: CheckpointFiles): Promise<Record<string, string> | null> {
  const manifestBytes = await src.read(FILES.manifest);
  if (!manifestBytes) return null;
  const m = parseJson(manifestBytes, src.path(FILES.manifest)) as { sha256?: Record<string, string> };
  check(m && typeof m.sha256 === 'object' && m.sha256 !== null, `${src.path(FILES.manifest)} has no sha256 table; the checkpoint is corrupt`);
  return m.sha256;
}

/** trainer_state.json's bytes -> its step and the rest. */
function parseTrainerState(bytes: Uint8Array, src: CheckpointFiles): { step: number; trainer: Record<string, unknown> } {
  const trainerSource = src.path(FILES.trainer);
  const state = parseJson(bytes, trainerSource) as Record<string, unknown>;
  check(state && Number.isInteger(state.step) && (state.step as number) >= 0, `${trainerSource} has no valid "step"; the checkpoint is corrupt`);
  const { step, ...trainer } = state;
  // A record from before the page-breaks cleaning step cleaned without it.
  if ('clean' in trainer) trainer.clean = legacyClean(trainer.clean);
  return { step: step as number, trainer };
}
