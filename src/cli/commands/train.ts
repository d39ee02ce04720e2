import { MAX_BPE_VOCAB } from '../../data/bpe.js';
import { MinigptError, check } from '../../errors.js';
import { isShardDir } from '../../data/shards.js';
import { BACKEND_FLAGS, TEXT_FLAGS, cleanOptionsFromFlag, convert, flagName, flagsOnCommandLine, MODEL_FLAGS, modelConfigFromFlags, type CommandSpec, type FlagSpecs, type FlagValues } from '../args.js';
import { train, TRAIN_DEFAULTS, recordLatestRun, type TrainSummary } from '../../train/train.js';
import { cleanText } from '../../data/text.js';
import { describeSeparator } from '../../data/documents.js';
import { resolveConfig } from '../../model/config.js';
import { AMP_MODES } from '../../train/amp.js';
import { formatDuration, formatRate, perByte, progressLine } from '../progress.js';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { exists, ioError, removeTemporariesNow } from '../../util/fs.js';
import { onOutputClosed } from '../output.js';
import { loadTokenizer } from './tokenizer.js';
import { TOKENIZER_KINDS, type TokenizerKind } from '../../data/tokenizer.js';
import type { BackendName } from '../../backend/index.js';


const plural = (n: number, word: string): string => `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;

/** "90", "90s", "15m", "1.5h", "1h30m" -> seconds (more than zero). */
export function parseDuration(text: string): number {
  const t = text.trim().toLowerCase();
  const bad = (): never => { throw new MinigptError(`--max-time must be a duration like 90s, 10m, 1h or 1h30m (got "${text}")`); };
  if (/^\d+(?:\.\d+)?$/.test(t)) return positive(Number(t));
  if (!/^(?:\d+(?:\.\d+)?[hms])+$/.test(t)) bad();
  let seconds = 0, last = Infinity;
  for (const [, n, unit] of t.matchAll(/(\d+(?:\.\d+)?)([hms])/g)) {
    const size = unit === 'h' ? 3600 : unit === 'm' ? 60 : 1;
    if (size >= last) bad(); // units in order, each once: 1h30m, not 30m1h or 1m1m
    last = size;
    seconds += Number(n) * size;
  }
  return positive(seconds);

  function positive(s: number): number {
    check(s > 0, `--max-time must be more than zero (got "${text}")`);
    return s;
  }
}

const TRAIN_FLAGS = {
  data: { type: 'string', value: 'PATH', description: 'training text: a file, a folder of text files (.txt, .md, .jsonl...), JSONL, or a shards folder from minigpt prepare (default: the embedded English corpus)' },
  'val-data': { type: 'string', value: 'PATH', description: 'validation text (default: the last 10% of --data; of shards, their validation shards)' },
  ...TEXT_FLAGS,
  'invalid-utf8': { ...TEXT_FLAGS['invalid-utf8']!, description: `${TEXT_FLAGS['invalid-utf8']!.description} (a resumed run reads its data as it did unless given)` },
  // No `default` here: with --resume, a tokenizer flag that was not given must not conflict with the run's.
  tokenizer: { type: 'string', value: 'char|gpt2|bpe|FILE', description: `tokenizer: built from the data (char; bpe: trained on it), GPT-2's, a file from \`minigpt tokenizer train\`, a Hugging Face tokenizer.json or model folder, or a checkpoint folder (default: ${TRAIN_DEFAULTS.tokenizer}; shards, a resumed run and --init-from keep their own)` },
  'bpe-vocab': { type: 'int', min: 257, max: MAX_BPE_VOCAB, value: 'N', description: `vocabulary size of a trained BPE tokenizer (default: ${TRAIN_DEFAULTS.bpeVocab})` },
  batch: { type: 'int', min: 1, value: 'N', description: 'sequences per micro-batch', default: TRAIN_DEFAULTS.batch },
  accum: { type: 'int', min: 1, value: 'N', description: 'micro-batches per optimizer step (gradient accumulation)', default: TRAIN_DEFAULTS.accum },
  steps: { type: 'int', min: 1, value: 'N', description: `optimizer steps (default: ${TRAIN_DEFAULTS.steps}; with --resume, the run's own total)` },
  'max-time': { type: 'string', value: 'DURATION', description: 'stop after this long (e.g. 10m, 1h30m) if --steps are not done by then; the lr schedule still spans --steps, so --resume finishes the decay; the final evaluation then scores only the periodic evaluations\' windows' },
  lr: { type: 'number', above: 0, value: 'X', description: 'peak learning rate', default: TRAIN_DEFAULTS.lr },
  'min-lr': { type: 'number', min: 0, value: 'X', description: 'learning rate at the end of the cosine decay (default: --lr / 10)' },
  warmup: { type: 'int', min: 0, value: 'N', description: `linear warmup steps (default: ${TRAIN_DEFAULTS.warmup}, or a tenth of --steps when that is fewer)` },
  'weight-decay': { type: 'number', min: 0, value: 'X', description: 'AdamW decoupled weight decay (matrices only)', default: TRAIN_DEFAULTS.weightDecay },
  'grad-clip': { type: 'number', min: 0, value: 'X', description: 'max global gradient norm (0: off)', default: TRAIN_DEFAULTS.gradClip },
  amp: { type: 'string', choices: AMP_MODES, description: 'mixed precision', default: TRAIN_DEFAULTS.amp },
  seed: { type: 'int', min: 0, value: 'S', description: 'random seed (weights, batches, dropout)', default: TRAIN_DEFAULTS.seed },
  out: { type: 'string', value: 'DIR', description: 'run directory (default: runs/run-DATE-TIME; with --resume, the run\'s own: another DIR continues the run there with a copy of its history, leaving the original as it is)' },
  resume: { type: 'string', value: 'DIR', description: 'continue a run (its folder or its checkpoint/) exactly where it stopped; another checkpoint folder (RUN/best, a copy) with --out DIR' },
  'init-from': { type: 'string', value: 'DIR', description: "fine-tune: a new run starting from a checkpoint's weights, model and tokenizer (a run or checkpoint folder from train, init or import, or a checkpoint .zip); --context may shorten its windows" },
  'eval-every': { type: 'int', min: 0, value: 'N', description: 'validation loss every N steps (0: only at the end)', default: TRAIN_DEFAULTS.evalEvery },
  'sample-every': { type: 'int', min: 0, value: 'N', description: 'print a sample every N steps (0: never)', default: TRAIN_DEFAULTS.sampleEvery },
  'log-every': { type: 'int', min: 1, value: 'N', description: 'a train-loss line in metrics.jsonl every N steps', default: TRAIN_DEFAULTS.logEvery },
  'save-every': { type: 'int', min: 0, value: 'N', description: 'checkpoint every N steps (0: only at the end; always at the end)', default: TRAIN_DEFAULTS.saveEvery },
  'keep-best': { type: 'boolean', description: 'also keep the checkpoint of the lowest validation loss in RUN/best (written when an evaluation beats all before it)' },
  'sync-every': { type: 'int', min: 1, max: 1000, value: 'N', description: 'read the loss back every N steps (1 to 1000): fewer GPU stalls, progress updates in batches (fp16 reads every step)', default: TRAIN_DEFAULTS.syncEvery },
  ...BACKEND_FLAGS,
  config: { type: 'string', value: 'FILE', description: 'JSON file of flag values (kebab or snake case); flags given here override it' },
  quiet: { type: 'boolean', description: 'no progress bar or samples, only the summary' },
  ...MODEL_FLAGS,
} as const satisfies CommandSpec['flags'];

/** Settings a resumed run keeps unless given: its model shape, its optimisation (see train()) and its data cleaning. */
const RESUME_FIXED = [...Object.keys(MODEL_FLAGS), 'batch', 'accum', 'lr', 'min-lr', 'warmup', 'weight-decay', 'grad-clip', 'seed', 'amp', 'clean'];

/** Settings a resumed run keeps unless given, which may change: how often it evaluates, samples, saves, logs and reads back. */
const RESUME_CADENCE = ['eval-every', 'sample-every', 'save-every', 'keep-best', 'log-every', 'sync-every'];

/** Values from --config FILE, for flags the command line did not set; `set`: the flags given either way. */
async function withConfigFile(v: FlagValues, argv: string[]): Promise<{ values: FlagValues; set: Set<string> }> {
  const given = flagsOnCommandLine(argv);
  if (typeof v.config !== 'string') return { values: v, set: given };
  let json: unknown;
  try {
    json = JSON.parse(await readFile(v.config, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw code === 'ENOENT' ? new MinigptError(`--config ${v.config} does not exist`) : code ? ioError(e, `read --config ${v.config}`) : new MinigptError(`--config ${v.config} is not valid JSON`);
  }
  check(typeof json === 'object' && json !== null && !Array.isArray(json), `--config ${v.config} must hold a JSON object of flag values`);
  const out: FlagValues = { ...v };
  const set = new Set(given);
  for (const [rawKey, value] of Object.entries(json as Record<string, unknown>)) {
    const key = rawKey.replace(/_/g, '-');
    const spec = (TRAIN_FLAGS as FlagSpecs)[key]!;
    check(spec && key !== 'config', `--config ${v.config}: unknown setting "${rawKey}"`);
    if (given.has(key)) continue;
    const ok = spec.type === 'boolean' ? typeof value === 'boolean'
      : spec.type === 'string' ? typeof value === 'string' && (!spec.choices || spec.choices.includes(value))
      : typeof value === 'number' && Number.isFinite(value) && (spec.type !== 'int' || Number.isInteger(value));
    check(ok, () => `--config ${v.config}: "${rawKey}" has the wrong type or value (${typeof value === 'number' ? String(value) : JSON.stringify(value)})`);
    // The checks a flag's value gets on the command line (bounds, an empty path...).
    try {
      out[key] = convert(key, spec, typeof value === 'boolean' ? value : String(value));
    } catch (e) {
      throw e instanceof MinigptError ? new MinigptError(`--config ${v.config}: ${e.message.replace(`--${key}`, `"${rawKey}"`)}`) : e;
    }
    set.add(key);
  }
  return { values: out, set };
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export const trainCommand: CommandSpec = {
  name: 'train',
  summary: 'train a model (with no flags: the default model on the embedded English corpus)',
  usage: 'minigpt train [--data PATH] [flags]',
  flags: TRAIN_FLAGS,
  details: [
    'Examples:',
    '  minigpt train                                   # default model, embedded corpus',
    '  minigpt train --data shakespeare.txt --n-layers 4 --n-heads 4 --context 64 --batch 12 --steps 2000 --lr 1e-3',
    '  minigpt train --resume runs/run-20261127-120000 --steps 4000',
    '  minigpt import --from ddp-out/final --out base && minigpt train --init-from base --data notes.txt --steps 200 --lr 1e-4',
    '',
    'Ctrl-C (or SIGTERM, or a closed terminal) saves a checkpoint and exits.',
    '--resume continues bit-exactly (on the same backend and --threads; on others it says so), keeping the',
    'run\'s model and training settings and its text cleaning (a flag that differs from them is an error;',
    '--steps, --max-time, --keep-best and the --*-every cadences may change, and are the run\'s own unless',
    'given; so may --data, --val-data and --text-field, with a note; other validation data restarts the best',
    'val loss).',
    '--init-from starts a new run (new --out, fresh optimizer and schedule) from any checkpoint\'s weights;',
    'the model shape and tokenizer come from the checkpoint (--dropout may change). Exit status 130 after an interrupt,',
    '141 when its output closed (| head) before the end.',
    'With --keep-best, RUN/best holds the checkpoint of the lowest validation loss so far (a run that overfits ends',
    'worse than it was): sample or eval it with --ckpt RUN/best, continue from it with --resume RUN/best --out DIR.',
    '',
    'Documents (the files of a --data folder, the records of a JSONL file) are each cleaned and joined with',
    '<|endoftext|> between them where a byte-level tokenizer has it (gpt2, bpe, most imported ones: the model',
    'learns where a document ends, and sampling stops there), else with a blank line (char); with a tokenizer that',
    'starts every text with a token (an imported Llama 2-style one), that token (<s>) starts each document instead.',
  ].join('\n'),
  async run(flags) {
    const argv = process.argv.slice(3);
    const { values: v, set } = await withConfigFile(flags, argv);
    const maxTime = typeof v['max-time'] === 'string' ? parseDuration(v['max-time']) : undefined;
    const quiet = Boolean(v.quiet);
    const bar = progressLine();
    const controller = new AbortController();
    let stopAsked = false; // a first Ctrl-C (or SIGTERM, or SIGHUP: the terminal closed) came
    let runDir = '';
    // Set once the event loop has turned after the first interrupt was told: a second Ctrl-C that
    // came in while a long step held the thread (both are handled together after it) is the same
    // press, not an answer to "Ctrl-C again to quit", which the user had not yet seen.
    let toldInterrupt = false;
    const onSigint = (): void => {
      if (!stopAsked) {
        stopAsked = true;
        bar.print('interrupted: saving a checkpoint at the last finished step (Ctrl-C again to quit without saving)');
        controller.abort();
        setImmediate(() => { toldInterrupt = true; });
      } else if (toldInterrupt) {
        removeTemporariesNow();
        // Said only where it is so: a run with no save yet (--save-every 0, or before the first) has none.
        const saved = runDir !== '' && existsSync(join(runDir, 'checkpoint', 'config.json'));
        process.stderr.write(saved
          ? '\nquit without saving the last steps; the previous checkpoint is intact\n'
          : `\nquit without saving: ${runDir ? 'this run had saved no checkpoint yet, so this session\'s steps are lost' : 'the run had not begun'}\n`);
        process.exit(130);
      }
    };
    // SIGHUP (the terminal or SSH session closed) saves too: its default would lose the steps since the last save.
    for (const signal of STOP_SIGNALS) process.on(signal, onSigint);
    // Output closed under us (`minigpt train | head`): stop as Ctrl-C does, saving the run.
    let outputClosed = false;
    const offClosed = onOutputClosed(() => { outputClosed = true; controller.abort(); });
    let lastVal = '';
    // What the final evaluation covered: the whole validation split, or FINAL_EVAL_WINDOWS windows spread over it.
    let valTokens = 0, context = 0, finalTokens = 0;
    const whole = (): boolean => finalTokens >= valTokens - context;
    const coverage = (): string => whole() ? 'the whole validation split' : `${Math.round(finalTokens / context).toLocaleString('en-US')} windows spread over the validation split`;
    const scored = (): string => whole() ? `${finalTokens.toLocaleString('en-US')} tokens` : `${finalTokens.toLocaleString('en-US')} of its ${valTokens.toLocaleString('en-US')} tokens`;
    try {
      // Resuming: pass only the settings given on the command line (or in --config), so that
      // train() can refuse one that differs from the run's instead of taking a default for it.
      if (typeof v.resume === 'string') {
        for (const k of [...RESUME_FIXED, ...RESUME_CADENCE]) if (!set.has(k)) v[k] = undefined;
      }
      // Fine-tuning: the checkpoint gives the model shape; only shape flags given are checked against it.
      if (typeof v['init-from'] === 'string') {
        for (const k of Object.keys(MODEL_FLAGS)) if (!set.has(k)) v[k] = undefined;
      }
      const model = modelConfigFromFlags(v);
      // A new model's shape is checked here first, so a bad one is named by its flags (train() names
      // config settings); the vocabulary comes from the data, so only a size limit it breaks is left to train().
      if (typeof v.resume !== 'string' && typeof v['init-from'] !== 'string') resolveConfig({ ...model, vocab_size: model.vocab_size ?? 1 }, { name: flagName });
      const lr = (v.lr as number | undefined) ?? TRAIN_DEFAULTS.lr, minLr = v['min-lr'] as number | undefined;
      check(minLr === undefined || (v.lr === undefined && typeof v.resume === 'string') || minLr <= lr, () => `--min-lr ${minLr} must be at most --lr (${lr})`);
      // Shards were read, cleaned and encoded when prepared: a --clean here would change nothing, nor
      // would --text-field or --invalid-utf8, unless a --val-data text is read with them.
      if (typeof v.data === 'string' && (set.has('clean') || set.has('text-field') || set.has('invalid-utf8')) && (await isShardDir(v.data))) {
        check(!set.has('clean'), () => `--clean has no effect on ${v.data}: prepared shards were cleaned when prepared (prepare --clean); drop the flag, or prepare the data again with it`);
        const readFlag = ['text-field', 'invalid-utf8'].find((f) => set.has(f));
        check(readFlag === undefined || typeof v['val-data'] === 'string', () => `--${readFlag} has no effect on ${v.data}: prepared shards were read when prepared (prepare --${readFlag}); drop the flag, or give it with --val-data`);
      }
      const summary = await train({
        data: v.data as string | undefined,
        valData: v['val-data'] as string | undefined,
        // Unless given, a resumed run reads the JSONL field it read (its own, recorded).
        textField: set.has('text-field') ? v['text-field'] as string : undefined,
        clean: v.clean === undefined ? undefined : cleanOptionsFromFlag(v.clean as string),
        // Unless given, a resumed run reads its data as it did (--invalid-utf8 replace is recorded).
        invalidUtf8: set.has('invalid-utf8') ? v['invalid-utf8'] as 'error' | 'replace' : undefined,
        tokenizer: typeof v.tokenizer !== 'string' || (TOKENIZER_KINDS as readonly string[]).includes(v.tokenizer) ? v.tokenizer as TokenizerKind | undefined : await loadTokenizer(v.tokenizer),
        bpeVocab: v['bpe-vocab'] as number | undefined,
        model,
        batch: v.batch as number, accum: v.accum as number, steps: v.steps as number | undefined, maxTime,
        lr: v.lr as number | undefined, minLr: v['min-lr'] as number | undefined, warmup: v.warmup as number,
        weightDecay: v['weight-decay'] as number, gradClip: v['grad-clip'] as number,
        amp: v.amp as 'off' | 'fp16' | 'bf16', seed: v.seed as number,
        out: v.out as string | undefined, resume: v.resume as string | undefined, initFrom: v['init-from'] as string | undefined,
        evalEvery: v['eval-every'] as number, sampleEvery: v['sample-every'] as number, saveEvery: v['save-every'] as number, keepBest: v['keep-best'] === true ? true : undefined,
        syncEvery: v['sync-every'] as number, logEvery: v['log-every'] as number,
        backend: v.backend as BackendName, threads: v.threads as number | undefined,
        signal: controller.signal,
        async onStart(s) {
          runDir = s.runDir;
          await recordLatestRun(s.runDir);
          valTokens = s.valTokens;
          context = s.config.context;
          const lines = [
            `run ${relative(process.cwd(), s.runDir) || s.runDir}`,
            `model: ${s.parameters.toLocaleString('en-US')} parameters (d_model ${s.config.d_model}, ${plural(s.config.n_heads, 'head')}, ${plural(s.config.n_layers, 'layer')}, context ${s.config.context}, ${s.config.mlp})`,
            `data: ${s.dataName}${s.documents !== undefined && s.documents > 1 ? ` (${s.documents.toLocaleString('en-US')} documents, separated by ${describeSeparator(s.documentSeparator)})` : ''}, ${s.tokenizer} tokenizer (${s.vocabSize} tokens): ${s.trainTokens.toLocaleString('en-US')} train / ${s.valTokens.toLocaleString('en-US')} val tokens`,
            `backend ${s.backend}; ${s.tokensPerStep.toLocaleString('en-US')} tokens per step; steps ${s.startStep} -> ${s.totalSteps}`,
          ];
          if (!quiet) for (const l of lines) bar.print(l);
        },
        onStep(s) {
          if (quiet) return;
          bar.update(s.step, s.totalSteps, `loss ${s.loss.toFixed(4)} lr ${s.lr.toExponential(2)}${s.lossScale !== 1 ? ` scale 2^${Math.log2(s.lossScale)}` : ''} ${formatRate(s.tokensPerSecond)} tok/s ETA ${formatDuration(s.eta)}${lastVal}`);
        },
        onEval(e) {
          lastVal = ` val ${e.valLoss.toFixed(4)}`;
          if (e.final) finalTokens = e.tokens;
          if (!quiet) bar.print(e.final
            ? `step ${e.step}: final val loss ${e.valLoss.toFixed(4)} over ${coverage()} (${scored()}${perByte(e.bitsPerByte)})`
            : `step ${e.step}: val loss ${e.valLoss.toFixed(4)} (best ${e.bestValLoss.toFixed(4)})`);
        },
        onSample: quiet ? undefined : (s) => bar.print(`--- sample at step ${s.step} ---\n${s.text}\n---`),
        onMessage: (m) => { if (!quiet) bar.print(m); },
        onWarning: (m) => bar.print(`minigpt: warning: ${m}`),
      });
      bar.done();
      const rel = (p: string): string => relative(process.cwd(), p) || p;
      const plot = join(summary.runDir, 'loss.svg');
      const row = (label: string): string => `  ${label.padEnd(16)}`;
      console.log([
        summary.interrupted ? `stopped at step ${summary.steps} (interrupted); checkpoint saved`
          : summary.outOfTime ? `stopped by --max-time at step ${summary.steps} of ${summary.totalSteps} (lr ${summary.lastLr.toExponential(2)}: the decay spans all ${summary.totalSteps} steps); checkpoint saved`
            : `done: ${plural(summary.steps, 'step')}`,
        summary.sessionTokens === summary.tokensSeen
          ? `${row('tokens seen')}${summary.tokensSeen.toLocaleString('en-US')} in ${formatDuration(summary.seconds)} (${formatRate(summary.tokensSeen / Math.max(summary.seconds, 1e-9))} tok/s)`
          : `${row('tokens seen')}${summary.tokensSeen.toLocaleString('en-US')}, ${summary.sessionTokens.toLocaleString('en-US')} of them in this session's ${formatDuration(summary.seconds)} (${formatRate(summary.sessionTokens / Math.max(summary.seconds, 1e-9))} tok/s)`,
        Number.isFinite(summary.finalLoss) ? `${row('last train loss')}${summary.finalLoss.toFixed(4)} (one batch)` : '',
        summary.finalValLoss !== null ? `${row('final val loss')}${summary.finalValLoss.toFixed(4)} (${whole() ? coverage() : `${coverage()}, ${scored()}`}; ${summary.outOfTime && !whole() ? 'the periodic evaluations\' windows, as --max-time had passed; minigpt eval scores more' : 'minigpt eval reproduces it'})` : '',
        `${row('best val loss')}${summary.bestValLoss === null ? 'n/a' : summary.bestValLoss.toFixed(4)}${summary.bestValLoss !== null && summary.bestValLoss !== summary.finalValLoss ? ' (on the sample of the validation split the periodic evaluations score)' : ''}`,
        summary.skippedSteps ? `${row('skipped steps')}${summary.skippedSteps} (non-finite gradients)` : '',
        `${row('checkpoint')}${rel(summary.checkpoint)}`,
        summary.bestCheckpoint ? `${row('best checkpoint')}${rel(summary.bestCheckpoint.path)} (step ${summary.bestCheckpoint.step}, val loss ${summary.bestCheckpoint.valLoss.toFixed(4)})` : '',
        (await exists(plot)) ? `${row('loss plot')}${rel(plot)}` : '',
        summary.interrupted || summary.outOfTime ? `next: npx minigpt train --resume ${rel(summary.runDir)}   (continues exactly where it stopped)` : `next: npx minigpt sample --ckpt ${rel(summary.runDir)}${samplePromptFlag(summary)}`,
      ].filter(Boolean).join('\n'));
      // A run cut short is not a success: 130 after Ctrl-C, 141 (as SIGPIPE) after its output
      // closed. Either during the final evaluation, after the last step, skips it: cut short too.
      const cutShort = summary.interrupted || (controller.signal.aborted && summary.finalValLoss === null);
      return stopAsked ? 130 : cutShort && outputClosed ? 141 : 0;
    } finally {
      bar.done();
      offClosed();
      for (const signal of STOP_SIGNALS) process.off(signal, onSigint);
    }
  },
};

/**
 * ` --prompt "The "` for the suggested sample command, as the run's cleaning writes it ("the " for a
 * lowercased run), or '' (an empty prompt) where the run's tokenizer cannot encode it: a
 * character vocabulary without those letters would make the suggestion fail.
 */
function samplePromptFlag(summary: Pick<TrainSummary, 'tokenizer' | 'clean'>): string {
  const prompt = cleanText('The ', summary.clean);
  try {
    if (summary.tokenizer.encode(prompt).length > 0) return ` --prompt "${prompt}"`;
  } catch { /* a character the tokenizer lacks */ }
  return '';
}
