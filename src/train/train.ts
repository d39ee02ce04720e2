/**
 * The training loop as a library call: data -> tokenizer -> model -> AdamW steps, with periodic
 * evaluation, samples and atomic checkpoints, exact resume, and a clean stop on an AbortSignal.
 *
 * A run directory holds:
 *   checkpoint/     the latest training checkpoint (weights, tokenizer, optimizer, trainer state)
 *   metrics.jsonl   one JSON object per logged step and per evaluation
 *   loss.svg        train and validation loss, redrawn at every evaluation
 */
import { appendFile, cp, mkdir, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { totalmem } from 'node:os';
import { MinigptError, adviceFor, check, checkAbortSignal, checkOptionNames, checkWhole, optionName, optionSetting, optionWord, shownValue } from '../errors.js';
import type { Backend } from '../backend/types.js';
import { BACKEND_NAMES, createBackend, type BackendName } from '../backend/index.js';
import { headDim, qkvDim, resolveConfig, type ModelConfig } from '../model/config.js';
import { initialWeights, countParams } from '../model/params.js';
import { activationValues, createModel, setWeights, readWeights, forward, backward, zeroGrads, accumulateMeanLoss, tuneKernels, type Model } from '../model/model.js';
import { createOptimizer, optimizerStep, undoSkippedStep } from './optimizer.js';
import { learningRate } from './schedule.js';
import { evaluateLoss } from './evaluate.js';
import { AMP_MODES, createAmp, type AmpMode, type AmpState } from './amp.js';
import { createRng, hash32, seedU32, type RngState } from '../util/random.js';
import { checkCheckpointReadable, checkpointDirOf, firstNonFinite, loadCheckpoint, loadTrainerState, saveCheckpoint, isCheckpointDir, hasTrainingState } from '../io/checkpoint.js';
import { exists, ioError, makeDirs, pidNamespace, processAlive, processStartMark, writeFileAtomic } from '../util/fs.js';
import { checkCleanOptions, cleanRecord, cleanText, loadDocuments, splitTrainVal, BLANK_LINE_SEPARATOR, CLEAN_STEP_NAMES, DEFAULT_CLEAN, DEFAULT_TEXT_FIELD, type CleanOptions } from '../data/text.js';
import { cleanDocuments, documentSeparatorOf, documentSeparatorOfKind, encodeDocuments, joinDocuments, DOCUMENT_SEPARATORS, type DocumentSeparator } from '../data/documents.js';
import { loadDefaultCorpus, DEFAULT_CORPUS_NAME } from '../data/corpus.js';
import { bitsPerByte, describeTokenizer, encodeUserText, makeTokenizer, sameTokenizer, textByteCounts, tokenizerDifference, TOKENIZER_KINDS, type Tokenizer, type TokenizerKind } from '../data/tokenizer.js';
import { createBatchSampler, evalOffsets, memoryTokens, type TokenStream } from '../data/batches.js';
import { isShardDir, openShards } from '../data/shards.js';
import { renderLossPlot, readMetrics } from './plot.js';
import { generate } from '../generate.js';
import { eventLoopTurns, nextTurn, checkNodeOnly } from '../util/runtime.js';

/** What train() takes; every field is optional (the CLI's defaults, TRAIN_DEFAULTS, fill the rest). */
export interface TrainOptions {
  /** Text file, folder or JSONL; the embedded default corpus when absent. */
  data?: string;
  /**
   * Training text held in memory instead of `data`: a string, or an array of documents (joined as
   * a folder's files are). Cleaned and split as a file is. The run records no path for it, so
   * resuming the run needs `text` (or `data`) again, and `evaluateRunData` cannot read it back.
   */
  text?: string | readonly string[];
  /** Separate validation text; otherwise the last 10% of the data. */
  valData?: string;
  /** The field holding the text in JSONL records (default "text"). */
  textField?: string;
  /** Cleaning steps (all on but lowercase by default). */
  clean?: Partial<CleanOptions>;
  /** Invalid UTF-8 in the data: an error (default) or replaced with U+FFFD and a warning. A resumed run reads as it did unless given; the run's data for evaluateRunData too. */
  invalidUtf8?: 'error' | 'replace';
  /** A kind to build from the data (char, gpt2, or a BPE trained on it), or a tokenizer to use as it is (e.g. one from `minigpt tokenizer train`); default 'char'. */
  tokenizer?: TokenizerKind | Tokenizer;
  /** Vocabulary size when training a BPE tokenizer (default 4096). */
  bpeVocab?: number;
  /** The model's shape (snake_case config names; unknown names are an error); the tokenizer sets vocab_size when absent. */
  model?: Partial<ModelConfig>;
  /** Sequences per micro-batch, each `model.context` tokens long (default 16). */
  batch?: number;
  /** Micro-batches per optimizer step (gradient accumulation; default 1). */
  accum?: number;
  /** Optimizer steps; the warmup and cosine schedule span them (default 600; resuming, the run's own). */
  steps?: number;
  /** Stop after this many seconds (the schedule still spans `steps`; the final evaluation then scores only the periodic windows, to end near the limit). */
  maxTime?: number;
  /** Peak learning rate (after warmup; default 0.003). */
  lr?: number;
  /** Learning rate at the end of the cosine decay (default: lr / 10). */
  minLr?: number;
  /** Linear warmup steps (default 50, or a tenth of a shorter run). */
  warmup?: number;
  /** AdamW decoupled weight decay, on matrices only (default 0.1). */
  weightDecay?: number;
  /** Largest global gradient norm (0: no clipping; default 1). */
  gradClip?: number;
  /** Mixed precision: 'fp16' (dynamic loss scaling from 2^16), 'bf16', or 'off' (f32; the default). */
  amp?: AmpMode;
  /** First loss scale under fp16 (default 2^16); tests use a huge one to force overflows. */
  ampInitialScale?: number;
  /** Seeds the weights, the batches and dropout (default 1337). */
  seed?: number;
  /** Run directory (created; default runs/run-DATE-TIME, or -2, -3... where that exists). */
  out?: string;
  /** Run or checkpoint directory to continue from, exactly. */
  resume?: string;
  /**
   * Fine-tune: start a new run from this checkpoint's weights (any minigpt checkpoint: one from
   * `train`, `init` or `import`), with its model config and tokenizer, a fresh optimizer and
   * schedule. Model-shape options that differ from the checkpoint's are an error (dropout may change).
   */
  initFrom?: string;
  /** Validation loss every this many steps (0: only at the end; default 100). */
  evalEvery?: number;
  /** Validation windows per periodic evaluation, evenly spread over the split (default 64). */
  evalWindows?: number;
  /** A sample (onSample) every this many steps (0: never; default 250). */
  sampleEvery?: number;
  /** Length of each sample, in tokens (default 200). */
  sampleTokens?: number;
  /** What samples continue ('' : from nothing), cleaned as the training text is. */
  samplePrompt?: string;
  /** A checkpoint every this many steps (0: only at the end; always at the end and on abort; default 250). */
  saveEvery?: number;
  /**
   * Also keep the checkpoint of the lowest validation loss so far in the run's `best/` folder,
   * written whenever an evaluation beats every one before it (default false; a resumed run keeps
   * its own unless given). Continue from it with `resume: 'RUN/best', out: 'NEW_DIR'`.
   */
  keepBest?: boolean;
  /** Metrics line every this many steps (default 10). */
  logEvery?: number;
  /** Read the loss back every this many steps (default 1): fewer waits on a GPU. The device skips
   * non-finite steps either way; under fp16 loss scaling every step is read. After a skip inside a
   * window, the window's later steps run with the next step's learning rate (docs/architecture.md). */
  syncEvery?: number;
  /** 'auto' (the default), 'cpu', 'webgpu' or 'reference', or a backend you made (it is then not destroyed at the end). */
  backend?: BackendName | Backend;
  /** Threads for the cpu backend (default: all cores). */
  threads?: number;
  /** Aborting it ends the run after the current step (with accum above 1, between two of its micro-batches, dropping the unfinished step), with a checkpoint (summary.interrupted). */
  signal?: AbortSignal;
  /** Once the data, tokenizer and model are ready, before the first step. */
  onStart?(info: StartInfo): void | Promise<void>;
  /**
   * After every optimizer step taken (not a skipped one), once its loss is read back: with
   * syncEvery above 1, for each step of a window together when the window ends. Like onStart,
   * onEval, onSample and onSave, it may be async: training waits for its promise, and a throw or
   * rejection ends train() with that error (the last checkpoint stays as it was).
   */
  onStep?(info: StepInfo): void;
  /** After every validation (and the final one). */
  onEval?(info: EvalInfo): void;
  /** Each periodic sample's text (sampleEvery). */
  onSample?(info: SampleInfo): void;
  /** After each checkpoint is written. */
  onSave?(info: SaveInfo): void;
  /** Notes for the user (warnings, resumed-from...). */
  onMessage?(message: string): void;
  /** Something the user should know went wrong but was handled (a skipped step, replaced bytes);
   * onMessage gets these when this is not given. */
  onWarning?(message: string): void;
}

export interface StartInfo {
  runDir: string;
  config: ModelConfig;
  parameters: number;
  tokenizer: TokenizerKind;
  vocabSize: number;
  trainTokens: number;
  valTokens: number;
  dataName: string;
  /** Documents in the data (undefined for prepared shards), and what separates them in the tokens. */
  documents: number | undefined;
  documentSeparator: DocumentSeparator;
  backend: string;
  startStep: number;
  totalSteps: number;
  tokensPerStep: number;
}

/** One optimizer step, as onStep gets it (a progress bar's line). */
export interface StepInfo {
  /** Optimizer steps the run has taken, this one included (a resumed run counts on from its checkpoint's step). */
  step: number;
  /** Steps the run is to take, which the learning-rate schedule spans (`steps`, or a resumed run's own total). */
  totalSteps: number;
  /** This step's training loss: the mean cross-entropy per token, in nats, over its `accum` micro-batches. */
  loss: number;
  /** Learning rate this step used (from the linear-warmup, cosine-decay schedule). */
  lr: number;
  /** Global L2 norm of this step's gradient of the mean loss, before clipping to `gradClip`. */
  gradNorm: number;
  /** Training speed of this session after its first few steps (they pay for compiling and tuning). */
  tokensPerSecond: number;
  /**
   * Seconds since this session's first step began (setup before it, and earlier sessions of a
   * resumed run, not counted), measured when the step's loss was read back.
   */
  elapsed: number;
  /** Seconds left at the current speed (or until maxTime). */
  eta: number;
  /** Training tokens of the run so far, earlier sessions included: batch × context × accum per step taken. */
  tokensSeen: number;
  /** Always false: onStep gets only steps taken; a skipped update goes to onWarning (onMessage without it). */
  skipped: boolean;
  /** The fp16 loss scale (1 without fp16). */
  lossScale: number;
}

/** One validation, as onEval gets it. */
export interface EvalInfo {
  step: number;
  /** The validation loss (nats per token) over this evaluation's windows. */
  valLoss: number;
  /** The lowest validation loss so far on the periodic evaluations' windows (see TrainSummary.bestValLoss). */
  bestValLoss: number;
  /** Validation tokens scored. */
  tokens: number;
  /** The loss in bits per UTF-8 byte of the scored text (comparable across tokenizers; null: no text). */
  bitsPerByte: number | null;
  /** The evaluation at the end of the run, over the whole validation split, or 4096 windows spread over a longer one (stopped by maxTime: the periodic evaluations' windows). */
  final: boolean;
}

/** A periodic sample during training (TrainOptions.onSample). */
export interface SampleInfo {
  /** The step whose weights wrote it. */
  step: number;
  /** The generated text (after samplePrompt, which it does not include). */
  text: string;
}

/** A checkpoint written during training (TrainOptions.onSave). */
export interface SaveInfo {
  /** The step it holds. */
  step: number;
  /** Its folder: RUN/checkpoint, or RUN/best. */
  path: string;
  /** Set when it is the best checkpoint (keepBest). */
  best?: true;
}

/** What train() returns when the run ends (done, out of time, or aborted). */
export interface TrainSummary {
  /** The run directory, as an absolute path. */
  runDir: string;
  /** The run's latest checkpoint (RUN/checkpoint), saved at the end whether the run finished, ran out of time or was aborted. */
  checkpoint: string;
  /** Optimizer steps the run has taken in all, earlier sessions included: the step `checkpoint` holds. */
  steps: number;
  /** Training tokens of the whole run, earlier sessions of a resumed run included. */
  tokensSeen: number;
  /** Tokens trained on in this session (tokensSeen less those of the sessions a resumed run had before). */
  sessionTokens: number;
  /** Seconds this session took from its first step to its end, the final evaluation and save included (setup before the first step not). */
  seconds: number;
  /** Training loss of the last step this session took (see StepInfo.loss); NaN when it took none. */
  finalLoss: number;
  /**
   * Lowest validation loss of the run on the periodic evaluations' windows (evalWindows of them,
   * the same each time; the final weights are scored on them too, so every value compared is on one
   * sample). A run with no periodic evaluation: the final one's, over the whole split.
   */
  bestValLoss: number | null;
  /** The final evaluation's loss, over the whole validation split, or 4096 windows spread over a longer one (stopped by maxTime: the periodic evaluations' windows; null when interrupted, or when `signal` was aborted during it). */
  finalValLoss: number | null;
  /** `signal` was aborted before the run reached totalSteps: the checkpoint is saved, the final evaluation skipped. */
  interrupted: boolean;
  /** Stopped by maxTime before `totalSteps`: the learning rate had not finished its decay. */
  outOfTime: boolean;
  /** Steps the run is to take, which the learning-rate schedule spans. */
  totalSteps: number;
  /** Learning rate of the last step taken (NaN when this session took none). */
  lastLr: number;
  /** Updates skipped in this session for a non-finite loss or gradient (every try counts: the step is taken again on the next batch). */
  skippedSteps: number;
  /** The run's tokenizer. */
  tokenizer: Tokenizer;
  /** How the run's text was cleaned, as its checkpoint records it (undefined: the default cleaning). */
  clean: Partial<CleanOptions> | undefined;
  /** With keepBest: the checkpoint of the lowest validation loss (RUN/best), its step and loss; null without one. */
  bestCheckpoint: { path: string; step: number; valLoss: number } | null;
}

/**
 * The values train() (and the CLI) uses for options not given. A resumed run keeps its own
 * settings instead, and a warmup not given is at most a tenth of `steps`.
 */
export const TRAIN_DEFAULTS = {
  batch: 16,
  accum: 1,
  steps: 600,
  lr: 3e-3,
  warmup: 50,
  weightDecay: 0.1,
  gradClip: 1.0,
  amp: 'off' as AmpMode,
  seed: 1337,
  evalEvery: 100,
  evalWindows: 64,
  sampleEvery: 250,
  sampleTokens: 200,
  saveEvery: 250,
  keepBest: false,
  logEvery: 10,
  syncEvery: 1,
  tokenizer: 'char' as TokenizerKind,
  bpeVocab: 4096,
};

/** How often a run evaluates, samples, saves, logs and reads back (option, trainer_state.json name): a resumed run keeps its own unless given. */
const CADENCE = [['evalEvery', 'eval_every'], ['evalWindows', 'eval_windows'], ['sampleEvery', 'sample_every'], ['sampleTokens', 'sample_tokens'],
  ['saveEvery', 'save_every'], ['keepBest', 'keep_best'], ['logEvery', 'log_every'], ['syncEvery', 'sync_every']] as const satisfies readonly (readonly [keyof TrainOptions, string])[];

const FINAL_EVAL_WINDOWS = 4096;
/** Tries of one step in a row with a non-finite loss or gradient after which a run has diverged and stops (fp16: once its loss scale is spent). */
export const DIVERGED_TRIES = 5;
/** Steps of a session before its speed is measured (see the step loop). */
const WARM_STEPS = 5;

/** The state, besides weights and moments, that an exact resume needs. */
interface TrainerState {
  total_steps: number;
  tokens_seen: number;
  elapsed: number;
  sampler: RngState;
  best_val_loss: number | null;
  amp: { mode: AmpMode; scale: number; clean_steps: number };
  data: string | null;
  /** The run trained on text given in memory (TrainOptions.text); `data` is then null. */
  data_in_memory?: boolean;
  val_data: string | null;
  text_field: string | null;
  /** Cleaning the data was read with (absent in checkpoints before 2026-12-06: the defaults). */
  clean?: Partial<CleanOptions> | null;
  /** What separated the data's documents (absent in checkpoints before 2026-12-07: a blank line). */
  document_separator?: DocumentSeparator;
  /** invalidUtf8 'replace' when the data was read so (absent: 'error', and in checkpoints before 2026-12-07). */
  invalid_utf8?: 'replace';
  /** The training and validation token counts (absent before 2026-12-07): a resume notes data that changed under its path. */
  data_tokens?: { train: number; val: number };
  /** Where it trained: the backend and, on cpu, its threads (absent before 2026-12-07). Sums split otherwise round otherwise. */
  device?: { backend: string; threads?: number };
  options: Record<string, unknown>;
}

/**
 * trainer_state.json's fields, checked to be what a run wrote (a checkpoint without a manifest
 * could have been edited by hand): a MinigptError naming the first that is not. `use`: 'data' checks
 * only what reading the run's data needs (eval), 'resume' everything resuming reads.
 */
function checkedTrainerState(raw: Record<string, unknown>, source: string, use: 'data' | 'resume'): TrainerState {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new MinigptError(`${source}: "${field}" must be ${want} (got ${JSON.stringify(got) ?? String(got)}); the checkpoint is corrupt`);
  };
  const record = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const pathOrNull = (field: string): void => {
    if (raw[field] !== null && typeof raw[field] !== 'string') bad(field, 'a path or null', raw[field]);
  };
  for (const field of ['data', 'val_data', 'text_field']) pathOrNull(field);
  if (raw.data_in_memory !== undefined && typeof raw.data_in_memory !== 'boolean') bad('data_in_memory', 'true or false', raw.data_in_memory);
  if (raw.clean !== undefined && raw.clean !== null && !record(raw.clean)) bad('clean', 'cleaning settings or null', raw.clean);
  if (raw.invalid_utf8 !== undefined && raw.invalid_utf8 !== 'replace') bad('invalid_utf8', '"replace" or absent', raw.invalid_utf8);
  if (use === 'data') return raw as unknown as TrainerState;
  const whole = (v: unknown, min: number): boolean => Number.isSafeInteger(v) && (v as number) >= min;
  const real = (v: unknown, min: number): boolean => typeof v === 'number' && Number.isFinite(v) && v >= min;
  if (!whole(raw.total_steps, 1)) bad('total_steps', 'a whole number of at least 1', raw.total_steps);
  const counts = raw.data_tokens as Record<string, unknown> | undefined;
  if (counts !== undefined && !(record(counts) && whole(counts.train, 0) && whole(counts.val, 0))) bad('data_tokens', 'the train and val token counts', counts);
  const device = raw.device as Record<string, unknown> | undefined;
  if (device !== undefined && !(record(device) && typeof device.backend === 'string' && (device.threads === undefined || whole(device.threads, 1)))) bad('device', 'the backend and its threads', device);
  if (!real(raw.tokens_seen, 0)) bad('tokens_seen', 'a number of at least 0', raw.tokens_seen);
  if (raw.elapsed !== undefined && !real(raw.elapsed, 0)) bad('elapsed', 'seconds, at least 0', raw.elapsed);
  if (raw.best_val_loss !== null && !real(raw.best_val_loss, 0)) bad('best_val_loss', 'a loss or null', raw.best_val_loss);
  const sampler = raw.sampler as RngState | undefined;
  if (!record(sampler) || !Array.isArray(sampler.s) || sampler.s.length !== 4 || !sampler.s.every((x) => Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 32)
    || !(sampler.spare === null || typeof sampler.spare === 'number')) bad('sampler', 'a random-number state', sampler);
  const amp = raw.amp as Record<string, unknown> | undefined;
  if (!record(amp)) return bad('amp', 'the mixed-precision state', amp);
  if (!AMP_MODES.includes(amp.mode as AmpMode)) bad('amp.mode', AMP_MODES.join(', '), amp.mode);
  if (!real(amp.scale, 0) || amp.scale === 0) bad('amp.scale', 'a positive number', amp.scale);
  if (!whole(amp.clean_steps, 0)) bad('amp.clean_steps', 'a whole number of at least 0', amp.clean_steps);
  const options = raw.options;
  if (!record(options)) return bad('options', 'the run\'s settings', options);
  const checks: [string, (v: unknown) => boolean, string][] = [
    ['batch', (v) => whole(v, 1), 'a whole number of at least 1'], ['accum', (v) => whole(v, 1), 'a whole number of at least 1'],
    ['lr', (v) => real(v, 0) && v !== 0, 'a positive number'], ['min_lr', (v) => real(v, 0), 'a number of at least 0'],
    ['warmup', (v) => whole(v, 0), 'a whole number of at least 0'], ['weight_decay', (v) => real(v, 0), 'a number of at least 0'],
    ['grad_clip', (v) => real(v, 0), 'a number of at least 0'], ['seed', (v) => whole(v, 0), 'a whole number of at least 0'],
  ];
  for (const [name, ok, want] of checks) if (!ok(options[name])) bad(`options.${name}`, want, options[name]);
  // The cadence, where recorded (checkpoints before 2026-12-06 have none).
  for (const [, name] of CADENCE) {
    const v = options[name];
    if (v === undefined) continue;
    if (name === 'keep_best' ? typeof v !== 'boolean' : !whole(v, ['log_every', 'sync_every', 'eval_windows'].includes(name) ? 1 : 0)) {
      bad(`options.${name}`, name === 'keep_best' ? 'true or false' : 'a whole number', v);
    }
  }
  return raw as unknown as TrainerState;
}

function defaultRunDir(): string {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return join('runs', `run-${t}`);
}

/** True when `dir` does not exist, is empty, or already looks like a run (so writing a run there loses nothing). */
async function isRunDirOrAbsent(dir: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // A file where a folder of the path should be (./runs a file): say so, not "not a run".
    if (code === 'ENOTDIR' && !(await stat(dir).then((i) => i.isFile(), () => false))) throw new MinigptError(`cannot create the run directory ${dir}: a path component is a file, not a folder; check the path`);
    return code === 'ENOENT';
  }
  return entries.every((e) => e === RUN_LOCK) || entries.includes('metrics.jsonl') || entries.includes('checkpoint');
}

/**
 * A run directory or a checkpoint directory -> the checkpoint directory. A run directory's
 * `checkpoint/` is taken even when broken, so that loading it says what is wrong with it.
 */
export async function findCheckpointDir(dir: string): Promise<string> {
  dir = await followLatest(dir);
  const ckpt = await checkpointDirOf(dir);
  if (ckpt !== dir) return ckpt;
  if (!(await exists(join(dir, 'config.json'))) && (await exists(join(dir, 'metrics.jsonl')))) {
    // A checkpoint folder that lost its config.json is broken, not missing.
    const inner = join(dir, 'checkpoint');
    check(!(await stat(inner).then((i) => i.isDirectory(), () => false)), `${inner} has no config.json; the checkpoint is incomplete`);
    const best = join(dir, 'best');
    if (await isCheckpointDir(best)) {
      throw new MinigptError(`the run ${dir} has no latest checkpoint (none was saved, or every save failed), but its best one is ${best}: use that (to train on from it: ${optionSetting('resume', best)} ${optionSetting('out', 'DIR')})`);
    }
    throw new MinigptError(`the run ${dir} has no checkpoint yet (it stopped before its first save)`);
  }
  return dir;
}

/**
 * `runs/latest` (the file recordLatestRun writes) -> the run it names, so that it can be given
 * wherever a run directory is asked for; any other path unchanged.
 */
export async function followLatest(path: string): Promise<string> {
  if (basename(path) !== 'latest') return path;
  try {
    if (!(await stat(path)).isFile()) return path;
    const target = (await readFile(path, 'utf8')).trim();
    return target && !target.includes('\n') ? target : path;
  } catch {
    return path;
  }
}

/** Records `runDir` as the latest run of this working directory (runs/latest), for the CLI. */
export async function recordLatestRun(runDir: string): Promise<void> {
  try {
    await mkdir('runs', { recursive: true });
    await writeFile(join('runs', 'latest'), resolve(runDir) + '\n');
  } catch {
    // Only a convenience for `sample`/`eval` without --ckpt; never worth failing a run over.
  }
}

/**
 * The run most recently started from this working directory (runs/latest); when that one has no
 * checkpoint (it stopped before its first save), the run in ./runs with the newest checkpoint.
 */
export async function latestRun(): Promise<string> {
  let latest = '';
  try {
    latest = (await readFile(join('runs', 'latest'), 'utf8')).trim();
  } catch { /* none recorded */ }
  if (latest && (await isCheckpointDir(join(latest, 'checkpoint')))) return latest;
  let newest: { dir: string; time: number } | null = null;
  for (const name of await readdir('runs').catch(() => [] as string[])) {
    const dir = resolve('runs', name);
    if (!(await isCheckpointDir(join(dir, 'checkpoint')))) continue;
    const time = (await stat(join(dir, 'checkpoint', 'config.json'))).mtimeMs;
    if (!newest || time > newest.time) newest = { dir, time };
  }
  if (newest) return newest.dir;
  if (latest && !(await exists(latest))) throw new MinigptError(`no --ckpt given, and runs/latest names ${latest}, which does not exist (moved or deleted); pass --ckpt DIR`);
  if (latest) throw new MinigptError(`no --ckpt given and the latest run, ${latest}, has no readable checkpoint (it stopped before its first save, or its checkpoint folder cannot be read); pass --ckpt DIR`);
  throw new MinigptError('no --ckpt given and no previous run found in ./runs; train first (npx minigpt train) or pass --ckpt DIR');
}

interface TextOptions {
  textField?: string;
  clean?: Partial<CleanOptions>;
  invalidUtf8?: 'error' | 'replace';
  onMessage?: (m: string) => void;
}

/**
 * The data's documents cleaned for `separator` (cleanDocuments: one text with a blank line), and
 * how many documents it holds (with <|endoftext|>: those left after cleaning); the default corpus is one.
 */
async function loadCleanDocuments(path: string | undefined, separator: DocumentSeparator, o: TextOptions): Promise<{ documents: string[]; count: number; name: string }> {
  if (!path) return { documents: cleanDocuments([await loadDefaultCorpus()], separator, o.clean), count: 1, name: DEFAULT_CORPUS_NAME };
  const raw = await loadDocuments(path, { textField: o.textField, invalidUtf8: o.invalidUtf8, onWarning: o.onMessage });
  const documents = cleanDocuments(raw, separator, o.clean);
  check(documents.some((d) => d.trim().length > 0), `${path} has no text left after cleaning`);
  return { documents, count: separator === BLANK_LINE_SEPARATOR ? raw.length : documents.length, name: basename(path) };
}

/** What messages and summaries call text given in memory (TrainOptions.text). */
const IN_MEMORY_NAME = 'the text given in memory';

/**
 * The data options train() and loadTrainingData take, as plain JS may pass them: paths are
 * strings (anything else fails deep in node:fs), text is a string or strings and excludes data,
 * the cleaning steps are known ones.
 */
function checkDataOptions(o: Pick<TrainOptions, 'data' | 'text' | 'valData' | 'textField' | 'clean'>): void {
  for (const name of ['data', 'valData', 'textField'] as const) check(o[name] === undefined || typeof o[name] === 'string', () => `${name} must be a string (got ${shownValue(o[name])})`);
  const text = o.text;
  check(text === undefined || typeof text === 'string' || (Array.isArray(text) && text.every((d) => typeof d === 'string')), () => `text must be a string or an array of strings (got ${shownValue(text)})`);
  check(text === undefined || o.data === undefined, () => `give ${optionName('data')} or text, not both`);
  check(text === undefined || o.textField === undefined, 'textField picks the field of JSONL data files; text in memory has none to pick (pass each document as a string of the array)');
  if (o.clean !== undefined) checkCleanOptions(o.clean);
}

/** TrainOptions.text as cleaned documents, as loadCleanDocuments gives a file's. */
function inMemoryDocuments(text: string | readonly string[], separator: DocumentSeparator, o: TextOptions): { documents: string[]; count: number; name: string } {
  const raw = typeof text === 'string' ? [text] : [...text];
  const documents = cleanDocuments(raw, separator, o.clean);
  check(documents.some((d) => d.trim().length > 0), `${IN_MEMORY_NAME} has no text left after cleaning`);
  return { documents, count: separator === BLANK_LINE_SEPARATOR ? raw.length : documents.length, name: IN_MEMORY_NAME };
}

/** Cleaned `documents` encoded (encodeDocuments), a character the tokenizer lacks named with `source`; `fixed` names whose tokenizer it is when it comes from outside the data (it cannot be rebuilt). */
function encodeAll(tokenizer: Tokenizer, documents: readonly string[], source: string, fixed?: string): Int32Array {
  // Only char tokenizers lack characters, and they join documents into one text: positions count from its start.
  if (fixed) return encodeDocuments(tokenizer, documents, (text) => encodeUserText(tokenizer, text, source, `${fixed} tokenizer has no token for it; remove such characters from the data`));
  try {
    return encodeDocuments(tokenizer, documents);
  } catch (e) {
    if (e instanceof MinigptError) throw new MinigptError(`${source}: ${e.message}`);
    throw e;
  }
}

export interface TrainingData {
  tokenizer: Tokenizer;
  /** Tokens in memory, or read from prepared shards on demand. */
  train: TokenStream;
  val: TokenStream;
  dataName: string;
  /** The data is prepared shards (set only then). */
  fromShards?: true;
  /** Prepared shards: the cleaning `minigpt prepare` gave their text (the `clean` option does not apply to them). */
  shardsClean?: Partial<CleanOptions>;
  /** What separates the data's documents in the token streams (see documents.ts). */
  documentSeparator: DocumentSeparator;
  /** Documents in the data read from text (not counting `valData`'s); undefined for shards. */
  documents?: number;
}

/**
 * Loads and cleans the text (the default corpus without `data`), builds the tokenizer (or uses
 * `tokenizer` given), encodes, and splits off validation (the last 10%, or `valData`).
 * Documents (a folder's files, JSONL records) are separated as documentSeparatorOf says (each
 * starting with the start-of-text token for sp-bpe, else <|endoftext|> between them where the
 * tokenizer has it and is not char, else a blank line); `documentSeparator` overrides that (a run resumed reads
 * its data as it did). A directory written by `minigpt prepare` is read from its shards, never loaded whole;
 * a `valData` beside shards is joined as the shards' documents were (their meta.json's separator).
 */
export async function loadTrainingData(
  o: Pick<TrainOptions, 'data' | 'text' | 'valData' | 'textField' | 'tokenizer' | 'bpeVocab' | 'onMessage' | 'clean' | 'invalidUtf8'> & { documentSeparator?: DocumentSeparator },
  existing?: Tokenizer,
): Promise<TrainingData> {
  // Text in memory with no validation file touches no file (the page could call it).
  if (o.text === undefined || o.valData !== undefined) checkNodeOnly('loadTrainingData() with a data path or the default corpus');
  checkOptionNames(o, ['data', 'text', 'valData', 'textField', 'tokenizer', 'bpeVocab', 'onMessage', 'clean', 'invalidUtf8', 'documentSeparator'], 'loadTrainingData');
  checkDataOptions(o);
  const givenTokenizer = typeof o.tokenizer === 'object' ? o.tokenizer : undefined;
  existing ??= givenTokenizer;
  const tokenizerWhose = givenTokenizer && existing === givenTokenizer ? 'the given' : "the checkpoint's";
  if (o.data && (await isShardDir(o.data))) {
    const shards = await openShards(o.data);
    try {
      if (existing) checkShardsTokenizer(existing, shards.tokenizer, o.data, tokenizerWhose);
      const made = `${o.data} was prepared with a ${describeTokenizer(shards.tokenizer)}, which training on it keeps; drop the ${optionWord()}, or prepare the data again with another ${optionName('tokenizer')}`;
      check(existing || o.tokenizer === undefined || o.tokenizer === shards.tokenizer.kind, () => `${optionName('tokenizer')} ${o.tokenizer} conflicts with the shards: ${made}`);
      check(existing || o.bpeVocab === undefined || (shards.tokenizer.kind === 'bpe' && shards.tokenizer.vocabSize === o.bpeVocab), () => `${optionName('bpeVocab')} ${o.bpeVocab} conflicts with the shards: ${made}`);
    } catch (e) {
      shards.close();
      throw e;
    }
    const tokenizer = existing ?? shards.tokenizer;
    // --val-data is joined as the shards' documents were (shards prepared before meta.json
    // recorded it joined them by a blank line); a resumed run passes the separator it recorded.
    const separator = o.documentSeparator ?? shards.meta.document_separator ?? BLANK_LINE_SEPARATOR;
    // Cleaned as the shards' text was (train refuses --clean with shards).
    const valClean = { ...o, clean: shards.meta.clean ?? o.clean };
    const val = o.valData ? memoryTokens(encodeAll(tokenizer, (await loadCleanDocuments(o.valData, separator, valClean)).documents, o.valData, existing ? tokenizerWhose : 'the shards\'')) : shards.val;
    return {
      tokenizer, train: shards.train, val, dataName: `${basename(o.data)} (shards)`, fromShards: true, ...(shards.meta.clean ? { shardsClean: shards.meta.clean } : {}),
      documentSeparator: separator,
    };
  }
  const kind = (typeof o.tokenizer === 'string' ? o.tokenizer : undefined) ?? TRAIN_DEFAULTS.tokenizer;
  // A vocabulary size for a tokenizer that is not learned here would be quietly ignored.
  check(existing !== undefined || o.bpeVocab === undefined || kind === 'bpe', () => `${optionName('bpeVocab')} goes with ${optionSetting('tokenizer', 'bpe')} (the tokenizer here is ${kind})`);
  const separator = o.documentSeparator ?? (existing ? documentSeparatorOf(existing) : documentSeparatorOfKind(kind));
  const { documents, count, name: dataName } = o.text !== undefined ? inMemoryDocuments(o.text, separator, o) : await loadCleanDocuments(o.data, separator, o);
  const val = o.valData ? (await loadCleanDocuments(o.valData, separator, o)).documents : null;
  // A character vocabulary must cover the validation text too, or evaluating it fails.
  const tokenizerText = joinDocuments(val !== null && kind === 'char' ? [...documents, ...val] : documents, separator);
  const tokenizer = existing ?? (await makeTokenizer(kind, tokenizerText, { vocabSize: o.bpeVocab ?? TRAIN_DEFAULTS.bpeVocab }));
  const source = o.text !== undefined ? IN_MEMORY_NAME : o.data ?? 'the default corpus';
  const fixed = existing ? tokenizerWhose : undefined;
  const common = { tokenizer, dataName, documentSeparator: separator, documents: count };
  if (val !== null) {
    return { ...common, train: memoryTokens(encodeAll(tokenizer, documents, source, fixed)), val: memoryTokens(encodeAll(tokenizer, val, o.valData!, fixed)) };
  }
  const split = splitTrainVal(encodeAll(tokenizer, documents, source, fixed), 0.1);
  return { ...common, train: memoryTokens(split.train), val: memoryTokens(split.val) };
}

/** Every option train() takes; the Record type makes the compiler keep it complete and exact. */
const TRAIN_OPTION_NAMES: Record<keyof TrainOptions, true> = {
  data: true, text: true, valData: true, textField: true, clean: true, invalidUtf8: true, tokenizer: true, bpeVocab: true, model: true,
  batch: true, accum: true, steps: true, maxTime: true, lr: true, minLr: true, warmup: true, weightDecay: true, gradClip: true,
  amp: true, ampInitialScale: true, seed: true, out: true, resume: true, initFrom: true, evalEvery: true, evalWindows: true,
  sampleEvery: true, sampleTokens: true, samplePrompt: true, saveEvery: true, keepBest: true, logEvery: true, syncEvery: true, backend: true,
  threads: true, signal: true, onStart: true, onStep: true, onEval: true, onSample: true, onSave: true, onMessage: true, onWarning: true,
};

/**
 * The options a caller gave, checked as the CLI checks its flags (the CLI's own checks never see a
 * library call): an unknown name or a value out of range is a MinigptError, not a different run.
 */
function checkTrainOptions(opts: TrainOptions): void {
  checkOptionNames(opts, Object.keys(TRAIN_OPTION_NAMES), 'training');
  const whole = (name: keyof TrainOptions, min: number): void => checkWhole(opts[name], name, min);
  const real = (name: keyof TrainOptions, ok: (v: number) => boolean, what: string): void => {
    const v = opts[name];
    check(v === undefined || (typeof v === 'number' && Number.isFinite(v) && ok(v)), () => `${name} must be ${what} (got ${shownValue(v)})`);
  };
  // From plain JS anything can come: a path that is no string would fail deep in node:fs.
  checkDataOptions(opts);
  for (const name of ['out', 'resume', 'initFrom', 'samplePrompt'] as const) {
    check(opts[name] === undefined || typeof opts[name] === 'string', () => `${name} must be a string (got ${shownValue(opts[name])})`);
  }
  for (const name of ['onStart', 'onStep', 'onEval', 'onSample', 'onSave', 'onMessage', 'onWarning'] as const) {
    check(opts[name] === undefined || typeof opts[name] === 'function', () => `${name} must be a function (got ${shownValue(opts[name])})`);
  }
  checkAbortSignal(opts.signal);
  const t = opts.tokenizer;
  check(t === undefined || (typeof t === 'string' && (TOKENIZER_KINDS as readonly string[]).includes(t)) || (typeof t === 'object' && t !== null && typeof t.encode === 'function' && typeof t.decode === 'function'),
    () => `tokenizer must be one of ${TOKENIZER_KINDS.join(', ')}, or a Tokenizer (got ${shownValue(t)})`);
  check(opts.bpeVocab === undefined || t === undefined || t === 'bpe', () => `${optionName('bpeVocab')} goes with ${optionSetting('tokenizer', 'bpe')}${typeof t === 'object' ? '; a tokenizer file has its own vocabulary' : ` (got ${optionSetting('tokenizer', t!)})`}`);
  const m = opts.model;
  check(m === undefined || (typeof m === 'object' && m !== null && !Array.isArray(m)), () => `the model settings must be an object such as { d_model: 128 } (got ${shownValue(m)})`);
  const b = opts.backend;
  check(b === undefined || (typeof b === 'string' && (BACKEND_NAMES as readonly string[]).includes(b)) || (typeof b === 'object' && b !== null && typeof b.alloc === 'function'),
    () => `backend must be one of ${BACKEND_NAMES.join(', ')}, or a backend from createBackend (got ${shownValue(b)})`);
  for (const name of ['warmup', 'seed', 'evalEvery', 'sampleEvery', 'saveEvery', 'sampleTokens'] as const) whole(name, 0);
  for (const name of ['batch', 'accum', 'steps', 'logEvery', 'syncEvery', 'evalWindows', 'threads'] as const) whole(name, 1);
  for (const name of ['lr', 'maxTime', 'ampInitialScale'] as const) real(name, (v) => v > 0, 'a number above 0');
  for (const name of ['minLr', 'weightDecay', 'gradClip'] as const) real(name, (v) => v >= 0, 'a number, 0 or more');
  check(opts.amp === undefined || AMP_MODES.includes(opts.amp), () => `amp must be one of ${AMP_MODES.join(', ')} (got ${shownValue(opts.amp)})`);
  check(opts.keepBest === undefined || typeof opts.keepBest === 'boolean', () => `keepBest must be true or false (got ${shownValue(opts.keepBest)})`);
  check(opts.invalidUtf8 === undefined || opts.invalidUtf8 === 'error' || opts.invalidUtf8 === 'replace', () => `invalidUtf8 must be "error" or "replace" (got ${shownValue(opts.invalidUtf8)})`);
}

/**
 * Trains a model: loads and tokenizes the data (or prepared shards), builds the model (or resumes
 * a run exactly, or fine-tunes a checkpoint), and runs AdamW with warmup and cosine decay,
 * validating, sampling and checkpointing into `out` (metrics.jsonl, loss.svg, checkpoint/) as it
 * goes. Bad options are MinigptErrors before anything runs.
 */
export async function train(opts: TrainOptions = {}): Promise<TrainSummary> {
  checkNodeOnly('train()');
  checkTrainOptions(opts);
  const o = { ...TRAIN_DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as typeof TRAIN_DEFAULTS & TrainOptions;
  o.minLr ??= o.lr / 10;
  check(o.minLr <= o.lr, `minLr must be at most lr (got minLr ${o.minLr}, lr ${o.lr})`);

  // --- resume, fine-tune or start ---
  const [resumeName, initFromName] = [optionName('resume'), optionName('initFrom')];
  check(!(o.resume && o.initFrom), () => `${resumeName} and ${initFromName} exclude each other: ${resumeName} continues a run exactly, ${initFromName} starts a new run from a checkpoint's weights`);
  const resumeDir = o.resume ? await findCheckpointDir(resolve(o.resume)) : null;
  if (resumeDir && (await stat(resumeDir).then((s) => s.isFile(), () => false))) {
    throw new MinigptError(`${resumeName} takes the folder of a run (it goes on writing there), and ${o.resume} is a file; to train on from a checkpoint .zip, start a new run with ${optionSetting('initFrom', o.resume!)}`);
  }
  if (resumeDir && (await isCheckpointDir(resumeDir)) && !(await hasTrainingState(resumeDir))) {
    throw new MinigptError(`${resumeDir} has no optimizer state (it was written by init or import, not by a training run), so there is no run to resume; fine-tune it with ${optionSetting('initFrom', o.resume!)} instead`);
  }
  const resumed = resumeDir ? await loadCheckpoint(resumeDir, { training: true }) : null;
  const prior = resumed ? checkedTrainerState(resumed.training!.trainer, join(resumeDir!, 'trainer_state.json'), 'resume') : null;
  const initDir = o.initFrom ? await findCheckpointDir(resolve(o.initFrom)) : null;
  const initial = initDir ? await loadCheckpoint(initDir) : null;
  const base = resumed ?? initial;
  if (base) {
    // The tokenizer is part of the model: a resumed or fine-tuned run cannot change it.
    const t = base.tokenizer;
    const what = resumed ? 'the run being resumed' : optionSetting('initFrom', o.initFrom!);
    const keep = `${resumed ? 'a resumed run' : 'a fine-tuned model'} keeps its ${describeTokenizer(t)}; drop the ${optionWord()}${resumed ? `, or start a new run with another ${optionName('out')}` : ''}`;
    const named = typeof opts.tokenizer === 'object' ? `a ${describeTokenizer(opts.tokenizer)}` : opts.tokenizer;
    check(opts.tokenizer === undefined || (typeof opts.tokenizer === 'object' ? sameTokenizer(opts.tokenizer, t) : opts.tokenizer === t.kind), () => `${optionName('tokenizer')} ${named} conflicts with ${what}: ${keep}`);
    check(opts.bpeVocab === undefined || (t.kind === 'bpe' && opts.bpeVocab === t.vocabSize), () => `${optionName('bpeVocab')} ${opts.bpeVocab} conflicts with ${what}: ${keep}`);
  }
  /** Model options given that differ from `config`'s, as "--flag want (the WHO has have)" ("model.name want..." for a library call). */
  const modelConflicts = (config: ModelConfig, who: string, except: readonly string[] = []): string[] =>
    Object.entries(opts.model ?? {}).filter(([k, want]) => !except.includes(k) && want !== undefined && want !== (config as unknown as Record<string, unknown>)[k])
      .map(([k, want]) => `${optionName(`model.${k}`)} ${want} (the ${who} has ${(config as unknown as Record<string, unknown>)[k]})`);
  if (initial) {
    // The checkpoint fixes the architecture; dropout is a training setting and may change. So may
    // the context, down to shorter windows: RoPE has no weights per position, so a model imported
    // with a context of 131072 fine-tunes on 256-token windows (and keeps that as its context).
    const context = opts.model?.context;
    check(!(typeof context === 'number' && context > initial.config.context), () => `${optionName('model.context')} ${context} is longer than the checkpoint's context of ${initial.config.context}; ` +
      `${optionSetting('initFrom', o.initFrom!)} fine-tunes on windows of at most that many tokens`);
    const conflicts = modelConflicts(initial.config, 'checkpoint', ['dropout', 'context']);
    check(conflicts.length === 0, () => `${conflicts.join(', ')}: ${optionSetting('initFrom', o.initFrom!)} fixes the model's shape; drop ${conflicts.length > 1 ? `those ${optionWord(true)}` : `the ${optionWord()}`}`);
  }
  if (prior) {
    // A resumed run keeps its own model and optimisation settings, so it continues exactly; only
    // the length (--steps, --max-time) and the eval/sample/save cadence may change. A setting
    // given with a different value is an error rather than silently ignored.
    const p = prior.options as { batch: number; accum: number; lr: number; min_lr: number; warmup: number; weight_decay: number; grad_clip: number; seed: number };
    const conflicts = modelConflicts(resumed!.config, 'run');
    const runOptions: [keyof TrainOptions, unknown][] = [['batch', p.batch], ['accum', p.accum], ['lr', p.lr], ['minLr', p.min_lr], ['warmup', p.warmup],
      ['weightDecay', p.weight_decay], ['gradClip', p.grad_clip], ['seed', p.seed], ['amp', prior.amp.mode]];
    // Numbers as equal within rounding: the default min lr is stored as lr / 10 (0.00030000000000000003 for 3e-3).
    const same = (a: unknown, b: unknown): boolean => a === b || (typeof a === 'number' && typeof b === 'number' && Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b)));
    for (const [k, have] of runOptions) if (opts[k] !== undefined && !same(opts[k], have)) conflicts.push(`${optionName(k)} ${String(opts[k])} (the run has ${have})`);
    // The text cleaning too: other cleaning is other training text (shards' runs record the shards').
    if (opts.clean !== undefined) {
      const steps = (c: Partial<CleanOptions> | null | undefined): string => {
        const on = { ...DEFAULT_CLEAN, ...(c ?? {}) };
        const names = Object.entries(CLEAN_STEP_NAMES).filter(([, key]) => on[key]).map(([name]) => name);
        return names.length > 0 ? names.join(',') : 'none';
      };
      const want = steps(opts.clean), have = steps(runClean(prior));
      if (want !== have) conflicts.push(`${optionName('clean')} ${want} (the run has ${have})`);
    }
    check(conflicts.length === 0, () => `${conflicts.join(', ')}: a resumed run keeps its model and training settings so that it continues exactly; drop ${conflicts.length > 1 ? `those ${optionWord(true)}` : `the ${optionWord()}`}, or start a new run with another ${optionName('out')}`);
    Object.assign(o, { batch: p.batch, accum: p.accum, lr: p.lr, minLr: p.min_lr, warmup: p.warmup, weightDecay: p.weight_decay, gradClip: p.grad_clip, seed: p.seed });
    // The eval/sample/save/log cadence may change, but is the run's own unless given (checkpoints before 2026-12-06 have none: the defaults).
    for (const [k, name] of CADENCE) {
      const had = (prior.options as Record<string, unknown>)[name];
      if (opts[k] === undefined && had !== undefined) Object.assign(o, { [k]: had });
    }
    const total = opts.steps ?? prior.total_steps, at = resumed!.training!.step;
    check(at < total, () => `${dirname(resumeDir!)} is at step ${at}${opts.steps !== undefined ? `, not before ${optionSetting('steps', total)}` : `, the end of its ${total} steps`}; pass a larger ${optionName('steps')} to train it further`);
  } else if (opts.warmup === undefined) {
    // A short run reaches its peak learning rate within its first tenth.
    o.warmup = Math.min(TRAIN_DEFAULTS.warmup, Math.floor(o.steps / 10));
  }
  let runDir = resolve(o.out ?? (resumeDir ? dirname(resumeDir) : defaultRunDir()));
  let ckptDir = join(runDir, 'checkpoint');
  let bestDir = join(runDir, 'best');
  // A run resumed into another directory (--out) starts a new one there, from the old run's
  // checkpoint and history: that directory must not hold another run (its history would be replaced).
  // Only a run's own latest checkpoint continues in place: one beside it (its best/) would replace it.
  const newDir = !resumed || resolve(resumeDir!) !== ckptDir;
  if (resumed && newDir && o.out === undefined) {
    // A checkpoint folder of its own (a copy, a run's best/): the folder around it is no run of its.
    const replaces = await isCheckpointDir(ckptDir);
    throw new MinigptError(`${resumeDir} is not the latest checkpoint of a run${replaces ? ` (continuing in ${runDir} would replace ${ckptDir})` : ''}; give ${optionSetting('out', 'DIR')} for a new run that continues from it`);
  }
  if (newDir && (await isCheckpointDir(ckptDir))) {
    throw new MinigptError(`${runDir} already holds a run; continue it with ${optionSetting('resume', runDir)}, or choose another ${optionName('out')}`);
  }
  // A run whose every save of its checkpoint failed (a full disk) may still have its best/.
  if (newDir && (await isCheckpointDir(bestDir))) {
    throw new MinigptError(`${runDir} holds the best checkpoint of an earlier run (${bestDir}), which a new run there would replace; continue from it with ${optionSetting('resume', bestDir)} ${optionSetting('out', 'DIR')}, or choose another ${optionName('out')}`);
  }
  if (newDir && !(await isRunDirOrAbsent(runDir))) {
    throw new MinigptError(`${runDir} exists and is not a minigpt run; choose another ${optionName('out')} (nothing of yours is written there)`);
  }

  // A run that trained on text in memory has no path to read it back from.
  check(!prior?.data_in_memory || o.text !== undefined || o.data !== undefined,
    () => `${dirname(resumeDir!)} trained on text given in memory, which its checkpoint does not hold; pass it again as text (or other training data as ${optionName('data')})`);
  const inMemory = o.text !== undefined || (Boolean(prior?.data_in_memory) && o.data === undefined);
  const dataPath = inMemory ? undefined : resumed ? (o.data ?? prior?.data ?? undefined) : o.data;
  const valPath = resumed ? (o.valData ?? prior?.val_data ?? undefined) : o.valData;
  // The paths as trainer_state.json records them (and compares them with a resumed run's).
  const dataRecorded = dataPath ? resolve(dataPath) : null, valRecorded = valPath ? resolve(valPath) : null;
  // Text in memory has no JSONL fields: the run's field goes with its data file.
  const textField = o.textField ?? (o.text !== undefined ? undefined : prior?.text_field) ?? undefined;
  // A resumed run reads its data cleaned as before unless told otherwise; bad bytes too.
  const cleanOption = o.clean ?? (prior ? runClean(prior) : undefined);
  const invalidUtf8 = o.invalidUtf8 ?? prior?.invalid_utf8;
  const { tokenizer, train: trainStream, val: valStream, dataName, fromShards, shardsClean, documentSeparator, documents } = await loadTrainingData({
    data: dataPath, text: o.text, valData: valPath, textField, tokenizer: opts.tokenizer, bpeVocab: opts.bpeVocab, onMessage: o.onWarning ?? o.onMessage,
    clean: cleanOption, invalidUtf8, ...(prior ? { documentSeparator: recordedSeparator(prior) } : {}),
  }, base?.tokenizer);
  // How the text the model learns from was cleaned, as trainer_state.json records it (sampling
  // and evaluation clean prompts and texts the same way): shards were cleaned when prepared.
  const clean = shardsClean ?? cleanOption;
  if (prior && o.data !== undefined && resolve(o.data) !== prior.data) {
    o.onMessage?.(`continuing on ${o.data} (the run trained on ${prior.data ?? (prior.data_in_memory ? IN_MEMORY_NAME : 'the default corpus')} until now)`);
  }
  if (prior && o.text !== undefined && !prior.data_in_memory) o.onMessage?.(`continuing on ${IN_MEMORY_NAME} (the run trained on ${prior.data ?? 'the default corpus'} until now)`);
  if (prior && o.textField !== undefined && o.textField !== (prior.text_field ?? DEFAULT_TEXT_FIELD)) o.onMessage?.(`reading the field "${o.textField}" of JSONL records (the run read ${prior.text_field === null ? 'the default field' : `"${prior.text_field}"`} until now)`);
  if (prior && o.valData !== undefined && resolve(o.valData) !== prior.val_data) o.onMessage?.(`validating on ${o.valData} (the run validated on ${prior.val_data ?? 'a split of its training data'} until now)`);
  // Other validation text makes other losses: the best so far was on the old, so the best starts afresh.
  const sameValidation = !prior || (
    valRecorded === prior.val_data && (valPath !== undefined || (inMemory ? Boolean(prior.data_in_memory) : dataRecorded === prior.data))
    && (prior.data_tokens === undefined || prior.data_tokens.val === valStream.length));
  // The same files as before with other token counts: a file changed under its path (its own
  // validation file when it has one, else the data, whose split both counts come from).
  if (prior?.data_tokens && !inMemory && dataRecorded === prior.data && valRecorded === prior.val_data
    && (textField ?? DEFAULT_TEXT_FIELD) === (prior.text_field ?? DEFAULT_TEXT_FIELD)) {
    const was = prior.data_tokens, count = (n: number): string => n.toLocaleString('en-US');
    const trainChanged = was.train !== trainStream.length, valChanged = was.val !== valStream.length;
    const changed: string[] = [];
    if (!valPath && (trainChanged || valChanged)) changed.push(`${dataName} (${count(was.train)} train / ${count(was.val)} val tokens then, ${count(trainStream.length)} / ${count(valStream.length)} now)`);
    if (valPath && trainChanged) changed.push(`${dataName} (${count(was.train)} train tokens then, ${count(trainStream.length)} now)`);
    if (valPath && valChanged) changed.push(`${valPath} (${count(was.val)} validation tokens then, ${count(valStream.length)} now)`);
    if (changed.length > 0) o.onMessage?.(`changed since the run began: ${changed.join('; ')}; the run goes on with the data as it is now, not as an uninterrupted run would have`);
  }
  if (prior && !sameValidation && prior.best_val_loss !== null) o.onMessage?.(`the validation data differs from the run's until now, so the best val loss (${prior.best_val_loss.toFixed(4)} on the old) starts afresh`);

  const config = resumed
    ? resumed.config
    : initial
      ? { ...initial.config, dropout: opts.model?.dropout ?? initial.config.dropout, context: opts.model?.context ?? initial.config.context }
      : resolveConfig({ ...o.model, vocab_size: o.model?.vocab_size ?? tokenizer.vocabSize }, { name: (k) => optionName(`model.${k}`) });
  check(config.vocab_size >= tokenizer.vocabSize, `${optionName('model.vocab_size')} ${config.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize} tokens`);
  const T = config.context, B = o.batch;
  // Memory first: a model past it is refused with the smaller limit's advice.
  checkBatchFits(config, B, T);
  checkCheckpointReadable(config, true);
  check(trainStream.length > T, `the training data has ${trainStream.length} tokens, fewer than one sequence of ${T + 1}; use more data or a smaller ${optionName('model.context')}`);
  check(valStream.length > 0 || !fromShards, () => `${o.data} has no validation shards (prepared with a validation fraction of 0); give ${optionName('valData')}, or prepare the data again with a validation fraction`);
  check(valStream.length > T, `the validation data has ${valStream.length} tokens, fewer than one sequence of ${T + 1}; use more data, ${optionName('valData')}, or a smaller ${optionName('model.context')}`);
  // Checked now, not at the first sample (which comes before that step's save).
  // Cleaned as the training text is (a lowercasing run lowercases it), as `minigpt sample` cleans a prompt.
  const samplePrompt = o.samplePrompt ? cleanText(o.samplePrompt, clean ?? {}) : '';
  if (samplePrompt) encodeUserText(tokenizer, samplePrompt, 'samplePrompt', "the run's tokenizer has no token for it; leave it out");

  const backend = typeof o.backend === 'object' ? o.backend : await createBackend(o.backend ?? 'auto', { threads: o.threads });
  // A backend made here is released here; one passed in stays the caller's.
  let unlock: (() => Promise<void>) | null = null;
  let failed = false;
  try {
    const gpu = backend as { software?: boolean; adapterInfo?: string };
    if (gpu.software) (o.onWarning ?? o.onMessage)?.(`the WebGPU adapter is a software renderer (${gpu.adapterInfo}) that runs on the CPU: expect training far slower than ${optionSetting('backend', 'cpu')}`);
    const model = createModel(backend, config);
    await tuneKernels(model, B, T);
    const opt = createOptimizer(model, { weightDecay: o.weightDecay, gradClip: o.gradClip });
    const amp: AmpState = createAmp(resumed ? prior!.amp.mode : o.amp, prior?.amp ?? (o.ampInitialScale ? { scale: o.ampInitialScale, clean_steps: 0 } : undefined));
    if (amp.mode === 'fp16' && backend.halfStorage) o.onMessage?.('fp16: activations and their gradients are stored as f16 on this device');
    let step = 0, tokensSeen = 0, elapsedBefore = 0, bestVal: number | null = null;
    const totalSteps = opts.steps ?? prior?.total_steps ?? o.steps;
    if (resumed) {
      setWeights(model, resumed.weights);
      backend.write(opt.m, resumed.training!.m);
      backend.write(opt.v, resumed.training!.v);
      step = opt.step = resumed.training!.step;
      tokensSeen = prior!.tokens_seen;
      elapsedBefore = prior!.elapsed;
      bestVal = sameValidation ? prior!.best_val_loss : null;
      o.onMessage?.(`resuming ${resumeDir} at step ${step} of ${totalSteps}`);
      const device = deviceOf(backend), was = prior!.device;
      if (was && (was.backend !== device.backend || was.threads !== device.threads)) {
        o.onMessage?.(`the run trained on ${describeDevice(was)} until now and goes on on ${describeDevice(device)}: sums split differently round differently, so from here its numbers drift from those of an uninterrupted run (as good, not bit-identical)`);
      }
      if (totalSteps !== prior!.total_steps) {
        const was = learningRate({ lr: o.lr, minLr: o.minLr!, warmupSteps: o.warmup, totalSteps: prior!.total_steps }, step + 1);
        const now = learningRate({ lr: o.lr, minLr: o.minLr!, warmupSteps: o.warmup, totalSteps }, step + 1);
        o.onMessage?.(`the cosine decay now spans ${totalSteps} steps instead of ${prior!.total_steps}: the learning rate goes on from ${now.toExponential(2)} (it would have been ${was.toExponential(2)}); the warmup stays the run's ${o.warmup} steps`);
      }
    } else if (initial) {
      setWeights(model, initial.weights);
      o.onMessage?.(`fine-tuning from ${initDir}`);
    } else {
      setWeights(model, initialWeights(config, model.layout, createRng(o.seed)));
    }
    let sampler = createBatchSampler(trainStream, B, T, prior?.sampler ?? hash32(seedU32(o.seed) ^ 0x5eed));

    if (o.out === undefined && !resumeDir) {
      // runs/run-DATE-TIME is this run's alone: another started in the same second gets a -2.
      runDir = await claimNewDir(runDir);
      ckptDir = join(runDir, 'checkpoint');
      bestDir = join(runDir, 'best');
    } else {
      await makeDirs(runDir).catch((e) => { throw ioError(e, `create the run directory ${runDir}`); });
    }
    // One process trains a run at a time: two would write over each other's checkpoints and history.
    unlock = await lockRunDir(runDir);
    const metricsPath = join(runDir, 'metrics.jsonl');
    // A run folder deleted or moved while training: stop, rather than write a new one in its place.
    const checkRunDirThere = async (): Promise<void> => {
      if (!(await exists(runDir))) throw new MinigptError(`the run folder ${runDir} is gone (deleted or moved while training); the run stopped`);
    };
    const log = (record: Record<string, unknown>): Promise<void> =>
      appendFile(metricsPath, JSON.stringify(record) + '\n').catch(async (e) => {
        // The run cannot go on without its history: say what is left of it.
        await checkRunDirThere();
        const error = ioError(e, `write ${metricsPath}`);
        if (!(error instanceof MinigptError) || !(await isCheckpointDir(ckptDir))) throw error;
        throw new MinigptError(`${error.message}; the run stopped, and its last saved checkpoint in ${ckptDir} is intact (resume from it with ${optionSetting('resume', runDir)})`);
      });
    const replot = async (): Promise<void> => {
      const svg = renderLossPlot([{ name: basename(runDir), records: await readMetrics(metricsPath) }]);
      await writeFileAtomic(join(runDir, 'loss.svg'), svg);
    };
    // A resumed run continues the history of its checkpoint's step: in its own directory without the
    // records logged after that save (a crash or a second Ctrl-C discarded those steps, which run
    // again now), in another directory (--out) from a copy of the old run's, which stays as it was.
    if (resumed && (await continueMetrics(join(dirname(resumeDir!), 'metrics.jsonl'), metricsPath, step))) await replot();
    // With keepBest, a run continued in another folder takes the old run's best checkpoint along,
    // so DIR/best is the best of the whole run, as the best val loss it carries on from is.
    const oldBest = resumed && newDir ? join(dirname(resumeDir!), 'best') : null;
    if (o.keepBest && oldBest && resolve(oldBest) !== bestDir && !(await isCheckpointDir(bestDir)) && (await isCheckpointDir(oldBest))) {
      await cp(oldBest, bestDir, { recursive: true }).catch((e) => { throw ioError(e, `copy ${oldBest} to ${bestDir}`); });
    }

    const stateOf = (): TrainerState => ({
      total_steps: totalSteps, tokens_seen: tokensSeen, elapsed: elapsedBefore + (performance.now() - t0) / 1000,
      sampler: sampler.state(), best_val_loss: bestVal,
      amp: { mode: amp.mode, scale: amp.scale, clean_steps: amp.cleanSteps },
      data: dataRecorded, ...(inMemory ? { data_in_memory: true } : {}), val_data: valRecorded, text_field: textField ?? null, clean: cleanRecord(clean),
      document_separator: documentSeparator,
      ...(invalidUtf8 === 'replace' ? { invalid_utf8: 'replace' as const } : {}),
      data_tokens: { train: trainStream.length, val: valStream.length },
      device: deviceOf(backend),
      options: {
        batch: B, accum: o.accum, lr: o.lr, min_lr: o.minLr, warmup: o.warmup, weight_decay: o.weightDecay, grad_clip: o.gradClip, seed: o.seed,
        ...Object.fromEntries(CADENCE.map(([k, name]) => [name, o[k]])),
      },
    });
    const save = async (dir = ckptDir): Promise<void> => {
      await checkRunDirThere();
      const [weights, m, v] = await Promise.all([readWeights(model), backend.read(opt.m), backend.read(opt.v)]);
      const previous = await isCheckpointDir(dir);
      // Weights that overflowed (a learning rate far too high) would make a checkpoint nothing can
      // load: it must not replace a good one.
      if (![weights, m, v].every((t) => firstNonFinite(t) < 0)) {
        throw new NonFiniteWeightsError(`the weights at step ${step} are no longer finite numbers, so they were not saved` +
          `${previous ? `; the checkpoint already in ${dir} (an earlier step) is kept` : ''}; try a lower ${optionName('lr')} (now ${o.lr})`);
      }
      try {
        await saveCheckpoint(dir, {
          config, weights, tokenizer,
          training: { step, m, v, trainer: stateOf() as unknown as Record<string, unknown> },
        });
      } catch (e) {
        // A failed save leaves the last good checkpoint (saves are atomic); say so.
        if (e instanceof MinigptError && previous) throw new MinigptError(`${e.message}; the previous checkpoint in ${dir} is intact${dir === ckptDir ? ` (resume from it with ${optionSetting('resume', runDir)})` : ''}`);
        throw e;
      }
      await o.onSave?.({ step, path: dir, ...(dir === bestDir ? { best: true as const } : {}) });
    };
    // The best checkpoint so far (keepBest): this run's, or one an earlier session of it kept.
    let best: { step: number; valLoss: number } | null = null;
    const byteCounts = textByteCounts(tokenizer);
    // "Best" compares like with like: the periodic evaluations' windows (the same every time). The
    // final evaluation covers more windows, another sample of the split, so the final weights are
    // scored on the periodic windows too (once, unless the step's periodic evaluation did) for it;
    // comparing the whole split with the periodic sample would favour whichever is easier.
    const windowCount = (limit: number): number => evalOffsets(valStream.length, T, limit).length;
    let periodic: { step: number; loss: number } | null = null;
    /** The validation loss now, logged and reported; null when an interrupt cut it short (nothing is logged then). */
    const evaluate = async (final = false, windows = final ? FINAL_EVAL_WINDOWS : o.evalWindows): Promise<number | null> => {
      const { loss, tokens, bytes, aborted } = await evaluateLoss(model, valStream, B, T, windows, byteCounts, o.signal);
      if (aborted) return null;
      if (!final) periodic = { step, loss };
      // With no periodic evaluation in the run there is nothing to compare: the final one is the best.
      const compared = !final || windowCount(windows) === windowCount(o.evalWindows) || bestVal === null ? loss
        : periodic?.step === step ? periodic.loss : (await evaluateLoss(model, valStream, B, T, o.evalWindows, undefined, o.signal)).loss;
      if (o.signal?.aborted) return null;
      const improved = bestVal === null || compared < bestVal;
      const bestNow: number = improved ? compared : bestVal!;
      bestVal = bestNow;
      const bpb = bitsPerByte(loss, tokens, bytes);
      await log({ step, val_loss: loss, ...(bpb !== null ? { val_bpb: bpb } : {}), ...(final ? { final: true } : {}) });
      await o.onEval?.({ step, valLoss: loss, bestValLoss: bestNow, tokens, bitsPerByte: bpb, final });
      await replot();
      if (improved && o.keepBest) {
        await save(bestDir);
        best = { step, valLoss: compared };
      }
      return loss;
    };
    const sample = async (): Promise<void> => {
      if (!o.onSample) return;
      let text = '';
      for await (const t of generate({ model, tokenizer }, samplePrompt, { maxTokens: o.sampleTokens, temperature: 0.8, seed: step })) text += t.text;
      await o.onSample({ step, text });
    };

    await o.onStart?.({
      runDir, config, parameters: countParams(config), tokenizer: tokenizer.kind, vocabSize: tokenizer.vocabSize,
      trainTokens: trainStream.length, valTokens: valStream.length, dataName, documents, documentSeparator, backend: backend.name,
      startStep: step, totalSteps, tokensPerStep: B * T * o.accum,
    });

    const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
    const schedule = { lr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps };
    if (o.warmup >= totalSteps) {
      (o.onWarning ?? o.onMessage)?.(`the warmup (${o.warmup} steps) is not shorter than the run (${totalSteps} steps): the learning rate ${o.warmup > totalSteps ? `only rises, to ${learningRate(schedule, totalSteps).toExponential(2)} at the last step, never reaching ${o.lr}` : 'rises for the whole run'}, and never decays`);
    }
    const t0 = performance.now();
    const startStep = step;
    let lastLoss = NaN, skipped = 0, interrupted = false, consecutiveBad = 0, checkedStep = step;
    let warm: { step: number; time: number } | null = null;
    let unlogged: Record<string, unknown> | null = null, lastLr = NaN, finalVal: number | null = null;
    if (!resumed) await log({ step: 0, event: 'start', config, tokenizer: tokenizer.kind, data: dataName, ...(initDir ? { init_from: initDir } : {}) });

    // Steps run in windows of up to `syncEvery` between read backs. Each step leaves its mean loss
    // and squared gradient norm in `stepStats` on the device, and the device itself skips an update
    // whose norm is not finite, so nothing waits on the host mid-window. A window ends early where
    // the host has work to do on the weights (eval, sample, save, the last step): there the host's
    // step count and the device's weights agree again. Under fp16 the loss scale must react to an
    // overflow before the next step, so every step is read back.
    const syncEvery = amp.mode === 'fp16' ? 1 : Math.max(1, Math.floor(Math.min(o.syncEvery, totalSteps - step, 1000)));
    const stepStats = backend.alloc(2 * syncEvery);
    const lossSlot = Array.from({ length: syncEvery }, (_, k) => backend.view(stepStats, 2 * k, 1));
    const normSlot = Array.from({ length: syncEvery }, (_, k) => backend.view(stepStats, 2 * k + 1, 1));
    const every = (n: number, s: number) => n > 0 && s % n === 0;
    const hostWork = (s: number) => s >= totalSteps || every(o.evalEvery, s) || every(o.sampleEvery, s) || every(o.saveEvery, s);
    const outOfTime = () => o.maxTime !== undefined && (performance.now() - t0) / 1000 >= o.maxTime;

    const turn = eventLoopTurns();
    while (step < totalSteps) {
      if (o.signal?.aborted) { interrupted = true; break; }
      if (outOfTime()) break;

      const lrs: number[] = [];
      // Each micro-batch's gradient is scaled by scale / accum, as PyTorch scales loss / accum:
      // the half-precision gradients overflow where a single batch of accum × batch would.
      const gradScale = 1 / amp.scale;
      backend.zero(stepStats);
      let abandoned = false;
      for (let planned = step + 1; ; planned++) {
        // The cpu backend computes synchronously and its reads resolve at once: without a turn of
        // the event loop now and then, Ctrl-C, a timer's abort and a closed pipe would only be
        // heard at the next file write (every --log-every steps).
        await turn();
        if (o.signal?.aborted) break;
        const k = lrs.length;
        const lr = learningRate(schedule, planned);
        const samplerAtStart = sampler.state();
        zeroGrads(model);
        for (let micro = 0; micro < o.accum; micro++) {
          // Accumulating over many micro-batches, one step can take minutes: between them the
          // event loop turns, so Ctrl-C is heard, and an abort drops the unfinished step (its
          // batches are drawn again on resume, as if it had never begun).
          // (Every micro-batch, not every EVENT_LOOP_TURN_MS: one is long enough that a turn costs nothing.)
          if (micro > 0 && o.signal) {
            await nextTurn();
            if (o.signal.aborted) {
              sampler = createBatchSampler(trainStream, B, T, samplerAtStart);
              abandoned = true;
              break;
            }
          }
          sampler.next(ids, targets);
          // Seeds follow the attempt, as if the window's earlier steps had all been taken.
          const dropoutSeed = hash32((seedU32(o.seed) + Math.imul(planned - 1, 0x9e3779b1) + micro) >>> 0);
          forward(model, ids, targets, B, T, { training: true, dropoutSeed, half: amp.half });
          backward(model, { training: true, dropoutSeed, lossScale: amp.scale / o.accum, half: amp.half, accumulate: micro > 0 });
          accumulateMeanLoss(model, lossSlot[k], 1 / o.accum);
        }
        if (abandoned) break;
        optimizerStep(model, opt, lr, gradScale, lossSlot[k]);
        backend.copy(normSlot[k], opt.normSquared);
        lrs.push(lr);
        if (lrs.length >= syncEvery || hostWork(planned) || o.signal?.aborted || outOfTime()) break;
      }

      if (lrs.length === 0) { interrupted = true; break; } // aborted inside the window's first step
      const stats = await backend.read(backend.view(stepStats, 0, 2 * lrs.length));
      for (let k = 0; k < lrs.length; k++) {
        const loss = stats[2 * k], lr = lrs[k];
        const gradNorm = Math.sqrt(stats[2 * k + 1]) * Math.abs(gradScale);
        // A NaN/inf loss makes the norm NaN too (see optimizerStep).
        amp.update(Number.isFinite(gradNorm));
        // An overflow under loss scaling, or a NaN/inf loss: the device skipped this update instead
        // of poisoning the weights.
        if (!Number.isFinite(gradNorm)) {
          undoSkippedStep(opt);
          skipped++;
          consecutiveBad++;
          // The step is taken again on the next batch: name the tries, or one step seems to repeat.
          const which = consecutiveBad > 1 ? `step ${step + 1}, try ${consecutiveBad}` : `step ${step + 1}`;
          (o.onWarning ?? o.onMessage)?.(`${which}: ${Number.isFinite(loss) ? 'gradient overflow' : `loss is ${loss}`}; skipped the update${amp.mode !== 'off' ? `, loss scale now ${amp.scale}` : ''}`);
          await log({ step: step + 1, skipped: true, loss: Number.isFinite(loss) ? loss : String(loss), ...(amp.mode === 'fp16' ? { loss_scale: amp.scale } : {}) });
          continue;
        }
        consecutiveBad = 0;
        step++;
        tokensSeen += B * T * o.accum;
        lastLoss = loss;
        const now = performance.now(), elapsed = (now - t0) / 1000;
        // Speed, and so the ETA, counts from this session's WARM_STEPS-th step once it is 0.2 s
        // behind: the first steps pay for kernel compiling, JIT and tuning (a run's ETA at step 10
        // read twice its real length).
        if (!warm && step - startStep >= WARM_STEPS) warm = { step, time: now };
        const since = warm && step > warm.step && now - warm.time > 200 ? warm : { step: startStep, time: t0 };
        const tokensPerSecond = ((step - since.step) * B * T * o.accum) / Math.max((now - since.time) / 1000, 1e-9);
        const stepsLeft = totalSteps - step;
        let eta = (stepsLeft * B * T * o.accum) / Math.max(tokensPerSecond, 1e-9);
        if (o.maxTime !== undefined) eta = Math.min(eta, Math.max(0, o.maxTime - elapsed));
        await o.onStep?.({ step, totalSteps, loss, lr, gradNorm, tokensPerSecond, elapsed, eta, tokensSeen, skipped: false, lossScale: amp.scale });
        lastLr = lr;
        unlogged = { step, loss, lr, grad_norm: gradNorm, tokens: tokensSeen, time: elapsedBefore + elapsed, tok_per_s: tokensPerSecond, ...(amp.mode === 'fp16' ? { loss_scale: amp.scale } : {}) };
        if (step % o.logEvery === 0 || step === totalSteps) {
          await log(unlogged);
          unlogged = null;
        }
      }
      // fp16 halves its loss scale on each bad try, so an overflow is given until the scale is spent;
      // without a scale to blame (off, bf16), five bad tries of one step end the run.
      if (consecutiveBad >= DIVERGED_TRIES && (amp.mode !== 'fp16' || amp.scale < 1)) {
        const diverged = `training diverged: ${consecutiveBad} tries in a row at step ${step + 1} had a non-finite loss or gradient`;
        // The history and the plot show the blow-up: the last step taken, and the plot redrawn now.
        if (unlogged) await log(unlogged);
        unlogged = null;
        await replot();
        try {
          await save();
        } catch (e) {
          throw e instanceof NonFiniteWeightsError ? new MinigptError(`${diverged}; ${e.message}`) : e;
        }
        throw new MinigptError(`${diverged}; the last good state is saved in ${ckptDir}; try a lower ${optionName('lr')} (now ${o.lr})`);
      }
      // Here the weights are those of `step`.
      if (step === checkedStep) continue;
      checkedStep = step;
      if (every(o.evalEvery, step)) await evaluate();
      if (every(o.sampleEvery, step)) await sample();
      if (every(o.saveEvery, step)) await save();
    }

    // A run stopped between log lines (time, Ctrl-C) still records its last step.
    if (unlogged) await log(unlogged);
    // The final validation loss covers the whole validation split (up to FINAL_EVAL_WINDOWS); past
    // maxTime only the periodic windows, so that the run ends near its time limit (scoring 4,096
    // windows can take minutes for a larger model on a CPU).
    if (!interrupted) finalVal = await evaluate(true, step < totalSteps ? o.evalWindows : FINAL_EVAL_WINDOWS);
    await save();
    // (Not when the validation data changed: that best was scored on the old.)
    if (o.keepBest && !best && resumed && sameValidation && (await isCheckpointDir(bestDir))) {
      // Kept by an earlier session of this run (or copied from the run it continues), and not beaten since.
      const kept = await loadTrainerState(bestDir).catch(() => null);
      const keptLoss = kept?.trainer.best_val_loss;
      if (kept && typeof keptLoss === 'number') best = { step: kept.step, valLoss: keptLoss };
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      runDir, checkpoint: ckptDir, steps: step, tokensSeen, sessionTokens: tokensSeen - (prior?.tokens_seen ?? 0), seconds, finalLoss: lastLoss,
      bestValLoss: bestVal, finalValLoss: finalVal, interrupted, outOfTime: !interrupted && step < totalSteps, totalSteps, lastLr, skippedSteps: skipped,
      tokenizer, clean, bestCheckpoint: best ? { path: bestDir, ...best } : null,
    };
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    // Releasing the lock can fail where the run failed (a file system gone read-only): the run's own error is the one to tell.
    await unlock?.().catch((e) => { if (!failed) throw e; });
    if (typeof o.backend !== 'object') backend.destroy();
  }
}

/** Where a run trains, as trainer_state.json records it: the backend and, on cpu, its threads. */
function deviceOf(backend: Backend): { backend: string; threads?: number } {
  const threads = (backend as { threads?: unknown }).threads;
  return { backend: backend.name, ...(typeof threads === 'number' ? { threads } : {}) };
}

function describeDevice(d: { backend: string; threads?: number }): string {
  return d.threads === undefined ? d.backend : `${d.backend} with ${d.threads} thread${d.threads === 1 ? '' : 's'}`;
}

/** Creates a new folder `dir`, or `dir-2`, `dir-3`... where that exists already (mkdir is atomic: no two callers get one name). */
async function claimNewDir(dir: string): Promise<string> {
  await makeDirs(dirname(dir)).catch((e) => { throw ioError(e, `create ${dirname(dir)}`); });
  for (let n = 1; ; n++) {
    const name = n === 1 ? dir : `${dir}-${n}`;
    try {
      await mkdir(name);
      return name;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(e, `create the run directory ${name}`);
    }
  }
}

/**
 * The bytes a model of `config` takes on a backend at a batch of B sequences of T tokens: its
 * activations, ids and targets, the RoPE table and weights, and for `training` gradients and
 * AdamW's two moments; for an evaluation, the activations forwards alone need (forwardOnly).
 */
export function modelBytes(config: ModelConfig, B: number, T: number, training: boolean): number {
  return 4 * (activationValues(config, B, T, !training) + (training ? 4 : 1) * countParams(config) + config.context * headDim(config)) + 8 * B * T;
}

/**
 * Refuses, before anything is allocated, a batch whose activations and the model's weights (and
 * for `training` gradients and AdamW moments) could not fit in this machine's memory: a --batch
 * typed with a few zeros too many ran for minutes into swap, or died inside a typed array.
 * `accum`: the advice names --accum (train has it; lr-find and eval do not).
 */
export function checkBatchFits(config: ModelConfig, B: number, T: number, training = true, accum = training): void {
  const bytes = modelBytes(config, B, T, training);
  const total = totalmem();
  check(!(bytes > total), () => `${optionName('batch')} ${B} of ${T}-token sequences needs ~${(bytes / 2 ** 30).toFixed(1)} GiB for this model, more than this machine's ${(total / 2 ** 30).toFixed(1)} GiB; ` +
    `use a smaller ${optionName('batch')}${accum ? ` (${optionName('accum')} keeps the tokens per step)` : ''}`);
}

/** A save refused because the weights or moments hold NaN or ±Infinity (a learning rate far too high). */
class NonFiniteWeightsError extends MinigptError {}

/** RUN/.lock: the pid of the process training the run, while it does (and, on Linux, its start mark and pid namespace). */
const RUN_LOCK = '.lock';
/** A training process touches its lock this often (ms), so one in another pid namespace can tell it is alive. */
const LOCK_HEARTBEAT_MS = 30_000;
/** A lock from another pid namespace (another container) untouched this long (ms) is a dead run's. */
const LOCK_STALE_MS = 5 * 60_000;

/**
 * Takes the run folder's lock (RUN/.lock: this process's pid, start mark and pid namespace), or
 * throws a MinigptError naming the process that holds it. A lock whose process is gone (killed) is
 * taken over, and so is one whose pid now belongs to another process (a container restarted after
 * a kill hands out the same pids). A lock from another pid namespace (another container on the
 * machine, whose pids mean nothing here) counts as alive while its process touches it (every
 * LOCK_HEARTBEAT_MS). Returns the function that releases it.
 */
async function lockRunDir(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, RUN_LOCK);
  const namespace = pidNamespace() ?? '';
  const own = `${process.pid}\n${processStartMark(process.pid) ?? ''}\n${namespace}\n`;
  for (let tries = 0; ; tries++) {
    try {
      await writeFile(path, own, { flag: 'wx' });
      const beat = setInterval(() => { const now = new Date(); utimes(path, now, now).catch(() => {}); }, LOCK_HEARTBEAT_MS);
      beat.unref?.();
      return () => { clearInterval(beat); return rm(path, { force: true }); };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 2) throw ioError(e, `lock the run directory ${dir}`);
    }
    const info = await stat(path).catch(() => null);
    check(info?.isDirectory() !== true, `${path} is a folder, where the run's lock file goes; remove it`);
    const held = await readFile(path, 'utf8').catch(() => '');
    const [pidLine = '', mark = '', heldNamespace = ''] = held.split('\n');
    const pid = Number.parseInt(pidLine, 10);
    if (heldNamespace !== '' && namespace !== '' && heldNamespace !== namespace) {
      const age = Date.now() - (info?.mtimeMs ?? 0);
      if (age < LOCK_STALE_MS) {
        throw new MinigptError(`${dir} is being trained by a process in another pid namespace (pid ${pid} there: another container?), which touched its lock ${Math.round(age / 1000)} s ago; ` +
          `wait for it to end, or choose another ${optionName('out')} (if no minigpt runs there, delete ${path}; a lock untouched for ${LOCK_STALE_MS / 60_000} minutes is taken over)`);
      }
    } else {
      // A lock from before start marks (or from elsewhere than Linux) has none: its pid alone decides,
      // except that this process's locks carry its mark, so a markless one naming its pid is stale.
      const sameProcess = (p: number): boolean => {
        if (!processAlive(p)) return false;
        const current = processStartMark(p);
        return current === undefined || (mark === '' ? p !== process.pid : current === mark);
      };
      if (Number.isSafeInteger(pid) && pid > 0 && sameProcess(pid)) {
        throw new MinigptError(pid === process.pid ? `${dir} is being trained by this process already; wait for that run to end, or choose another ${optionName('out')}`
          : `${dir} is being trained by another process (pid ${pid}); wait for it to end, or choose another ${optionName('out')} (if no minigpt runs as pid ${pid}, delete ${path})`);
      }
    }
    // Left by a process that is gone. Only the lock judged stale goes: one another process has
    // just taken over (it read the same stale lock) stays, and the next try reports it.
    if ((await readFile(path, 'utf8').catch(() => '')) === held) await rm(path, { force: true });
  }
}

/**
 * The lines of metrics.jsonl `text` up to step `step`, for a run resumed from its checkpoint at
 * that step: records of later steps were logged after that save and their steps run again. Lines
 * without a numeric "step" stay; so do lines that are not JSON, except a last line cut short
 * (no newline) by a crash, which the next record would otherwise be appended to.
 */
export function metricsUpToStep(text: string, step: number): { text: string; dropped: number } {
  const lines = text.split('\n');
  const cut = lines.pop()!; // '' when the text ends with a newline
  let dropped = 0;
  const kept: string[] = [];
  const keep = (line: string, partial: boolean): void => {
    if (!line.trim()) return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      if (partial) dropped++;
      else kept.push(line);
      return;
    }
    const s = (record as { step?: unknown } | null)?.step;
    if (typeof s === 'number' && s > step) dropped++;
    else kept.push(line);
  };
  for (const line of lines) keep(line, false);
  keep(cut, true);
  return { text: kept.map((l) => l + '\n').join(''), dropped };
}

/**
 * Writes (atomically) `to`, the metrics.jsonl of a run resumed from step `step`, as `from`'s
 * records up to that step (metricsUpToStep): `from` itself when it is `to`, rewritten only when
 * that changes it. True when `to` was written.
 */
async function continueMetrics(from: string, to: string, step: number): Promise<boolean> {
  let text = '';
  try {
    text = await readFile(from, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(e, `read ${from}`);
    if (from === to) return false;
  }
  const kept = metricsUpToStep(text, step);
  if (from === to && kept.text === text) return false;
  await writeFileAtomic(to, kept.text);
  return true;
}

/** Shards must hold the model's token ids: the same tokenizer, or their ids mean other things. */
function checkShardsTokenizer(model: Tokenizer, shards: Tokenizer, dir: string, whose = "the checkpoint's"): void {
  check(
    sameTokenizer(model, shards),
    () => {
      const difference = tokenizerDifference(shards, model, 'the shards', whose === 'the given' ? 'the given tokenizer' : whose.replace(/'s$/, ''));
      return `${dir} was prepared with a ${describeTokenizer(shards)}, not ${whose} ${describeTokenizer(model)}${difference ? ` (${difference})` : ''}; ` +
        `prepare the data again with ${whose} tokenizer (${adviceFor(`minigpt prepare --tokenizer ${whose === 'the given' ? 'FILE' : 'CHECKPOINT_DIR'} ...`, 'prepareShards({ tokenizer, ... })')})`;
    },
  );
}

/**
 * The cleaning a run's data went through: its record (parseTrainerState reads one from before the
 * page-breaks step as without it), or, absent (runs before 2026-12-06 recorded none), the defaults
 * of then, which had no page-breaks step.
 */
function runClean(state: TrainerState): Partial<CleanOptions> {
  return state.clean ?? { pageBreaks: false };
}

/** The document separator a trainer state records; a blank line in records from before it was recorded (or one not understood). */
function recordedSeparator(state: TrainerState): DocumentSeparator {
  return DOCUMENT_SEPARATORS.includes(state.document_separator as DocumentSeparator) ? state.document_separator! : BLANK_LINE_SEPARATOR;
}

/**
 * The loss on the validation data of the run that wrote checkpoint `ckptDir` (a checkpoint or run
 * directory, or a .zip of a checkpoint; the data, split
 * and cleaning its trainer_state.json records, read as training read them), over
 * as many windows as the run's final evaluation: `minigpt eval` with neither --text nor --data.
 */
export async function evaluateRunData(model: Model, tokenizer: Tokenizer, ckptDir: string, opts: EvalRunDataOptions = {}): Promise<EvalResult & { dataName: string }> {
  checkNodeOnly('evaluateRunData()');
  checkEvalOptions(opts, ['batch', 'invalidUtf8'], 'evaluateRunData');
  check(opts.invalidUtf8 === undefined || opts.invalidUtf8 === 'error' || opts.invalidUtf8 === 'replace', () => `invalidUtf8 must be "error" or "replace" (got ${shownValue(opts.invalidUtf8)})`);
  // A .zip of the checkpoint records the same (loadCheckpoint reads either).
  const saved = await loadTrainerState(ckptDir);
  // An imported checkpoint records its text cleaning alone.
  if (!saved || (!('data' in saved.trainer) && !('data_in_memory' in saved.trainer))) throw new MinigptError(`${ckptDir} records no training data (it was not written by train); ${adviceFor('give --text "..." or --data PATH', 'score text with evaluateText or evaluateShards')}`);
  const state = checkedTrainerState(saved.trainer, join(ckptDir, 'trainer_state.json'), 'data');
  check(!state.data_in_memory, () => `${ckptDir} trained on text given in memory, which its checkpoint does not hold; ${adviceFor('give --text "..." or --data PATH', 'score text with evaluateText or evaluateShards')}`);
  const data = await loadTrainingData({
    data: state.data ?? undefined, valData: state.val_data ?? undefined, textField: state.text_field ?? undefined, clean: runClean(state),
    documentSeparator: recordedSeparator(state), invalidUtf8: opts.invalidUtf8 ?? state.invalid_utf8,
  }, tokenizer);
  const T = model.config.context;
  check(data.val.length > T, `the run's validation data has ${data.val.length} tokens, fewer than one window of ${T + 1}`);
  const r = await evaluateLoss(model, data.val, evalBatch(model, opts.batch, data.val.length, T, FINAL_EVAL_WINDOWS), T, FINAL_EVAL_WINDOWS, textByteCounts(tokenizer));
  return { loss: r.loss, tokens: r.tokens, bitsPerByte: bitsPerByte(r.loss, r.tokens, r.bytes), dataName: data.dataName };
}

/** Options of evaluateText. */
export interface EvalTextOptions {
  /** Score all of the text (default false: its validation split, the last 10%, as training holds it out). */
  all?: boolean;
  /** Sequences per forward pass (default 8). */
  batch?: number;
  /** What to call the text in error messages (default "the data"). */
  source?: string;
}

/** Options of evaluateShards. */
export interface EvalShardsOptions {
  /** Score the training shards too (default false: the validation shards only). */
  all?: boolean;
  /** Sequences per forward pass (default 8). */
  batch?: number;
}

/** Options of evaluateRunData. */
export interface EvalRunDataOptions {
  /** Sequences per forward pass (default 8). */
  batch?: number;
  /** Invalid UTF-8 in the run's data files: 'error' (default) or 'replace' it with U+FFFD. */
  invalidUtf8?: 'error' | 'replace';
}

/**
 * The batch an evaluation runs: `batch` (default 8), but no more than there are windows to score,
 * and one that fits in memory. The default also shrinks to what the backend holds (a long-context
 * model: one 2048-token window of a 49k vocabulary's logits is 0.4 GB, past the cpu backend's
 * 4 GiB at a batch of 8, and past a GPU's largest buffer); the scores are the same whatever the batch.
 */
function evalBatch(model: Model, batch: number | undefined, length: number, T: number, maxWindows: number): number {
  let B = Math.max(1, Math.min(batch ?? 8, evalOffsets(length, T, maxWindows).length));
  const c = model.config, { memoryLimit, maxTensorBytes } = model.backend;
  // The widest activation per token: the logits, the MLP's input or q|k|v.
  const widest = Math.max(c.vocab_size, c.mlp === 'swiglu' ? 2 * c.intermediate_size : c.intermediate_size, qkvDim(c));
  const fits = (b: number): boolean => (memoryLimit === undefined || modelBytes(c, b, T, false) <= 0.9 * memoryLimit)
    && (maxTensorBytes === undefined || 4 * b * T * widest <= maxTensorBytes);
  if (batch === undefined) while (B > 1 && !fits(B)) B--;
  check(memoryLimit === undefined || modelBytes(c, 1, T, false) <= memoryLimit,
    () => `evaluating windows of ${T} tokens needs ~${(modelBytes(c, 1, T, false) / 2 ** 30).toFixed(1)} GiB on the ${model.backend.name} backend, more than the ${(memoryLimit! / 2 ** 30).toFixed(0)} GiB it holds; ` +
      `a model with a shorter context evaluates in shorter windows (${adviceFor('minigpt import --context N', 'readHfModel\'s context option')})`);
  checkBatchFits(model.config, B, T, false);
  return B;
}

/** The evaluate* functions' common checks: option names, `all` a boolean, `batch` a whole number from 1. */
function checkEvalOptions(opts: { all?: unknown; batch?: unknown }, names: readonly string[], what: string): void {
  checkOptionNames(opts, names, what);
  check(opts.all === undefined || typeof opts.all === 'boolean', () => `all must be true or false (got ${shownValue(opts.all)})`);
  checkWhole(opts.batch, 'batch', 1);
}

/** What the evaluate* functions give: the mean loss (nats per token) over `tokens` scored, and per byte of their text (null: the tokens stand for no text). */
export interface EvalResult {
  loss: number;
  tokens: number;
  /** The loss in bits per UTF-8 byte of the scored tokens' text: comparable across tokenizers. */
  bitsPerByte: number | null;
}

/**
 * The model's mean loss on text (the validation split, or all of it): `minigpt eval --data`. An
 * array is documents, cleaned by cleanDocuments for documentSeparatorOf(tokenizer) and encoded as
 * training encodes them (encodeDocuments: <|endoftext|> between them, or the start-of-text token before each).
 */
export async function evaluateText(model: Model, tokenizer: Tokenizer, text: string | readonly string[], opts: EvalTextOptions = {}): Promise<EvalResult> {
  checkEvalOptions(opts, ['all', 'batch', 'source'], 'evaluateText');
  const documents = typeof text === 'string' ? [text] : text;
  check(Array.isArray(documents) && documents.every((d) => typeof d === 'string'), 'the text to evaluate must be a string or an array of strings');
  check(documents.length > 0, `${opts.source ?? 'the data'} has no text left after cleaning`);
  const tokens = encodeDocuments(tokenizer, documents, (d) => encodeUserText(tokenizer, d, opts.source ?? 'data', "the checkpoint's tokenizer has no token for it; remove such characters from the text"));
  const stream = memoryTokens(opts.all ? tokens : splitTrainVal(tokens, 0.1).val);
  const T = Math.min(model.config.context, stream.length - 1);
  check(T >= 1, `${opts.source ?? 'the data'} has too few tokens to evaluate${opts.all ? '' : ` in its validation split (the last 10%); pass ${optionSetting('all', true)} to use all of it`}`);
  const r = await evaluateLoss(model, stream, evalBatch(model, opts.batch, stream.length, T, Infinity), T, Infinity, textByteCounts(tokenizer));
  return { loss: r.loss, tokens: r.tokens, bitsPerByte: bitsPerByte(r.loss, r.tokens, r.bytes) };
}


/**
 * The model's mean loss on a shards directory written by `minigpt prepare` (its validation
 * shards, or all of them): `minigpt eval --data SHARDS`. The shards must use the checkpoint's tokenizer.
 */
export async function evaluateShards(model: Model, tokenizer: Tokenizer, dir: string, opts: EvalShardsOptions = {}): Promise<EvalResult> {
  checkNodeOnly('evaluateShards()');
  checkEvalOptions(opts, ['all', 'batch'], 'evaluateShards');
  const shards = await openShards(dir);
  try {
    checkShardsTokenizer(tokenizer, shards.tokenizer, dir);
    const byteCounts = textByteCounts(tokenizer);
    let sum = 0, count = 0, bytes = 0;
    for (const stream of opts.all ? [shards.train, shards.val] : [shards.val]) {
      if (stream.length < 2) continue;
      const T = Math.min(model.config.context, stream.length - 1);
      const r = await evaluateLoss(model, stream, evalBatch(model, opts.batch, stream.length, T, Infinity), T, Infinity, byteCounts);
      sum += r.loss * r.tokens;
      count += r.tokens;
      bytes += r.bytes;
    }
    check(count > 0, `${dir} has too few validation tokens to evaluate; pass ${optionSetting('all', true)} to use the training shards too`);
    return { loss: sum / count, tokens: count, bitsPerByte: bitsPerByte(sum / count, count, bytes) };
  } finally {
    shards.close();
  }
}
