import { MAX_BPE_VOCAB } from '../../data/bpe.js';
import { checkOutputFile, isMinigptPlot, standardStream, writeFileAtomic } from '../../util/fs.js';
import { MinigptError } from '../../errors.js';
import { BACKEND_FLAGS, flagName, flagsOnCommandLine, MODEL_FLAGS, modelConfigFromFlags, type CommandSpec } from '../args.js';
import { findLearningRate } from '../../train/lr-find.js';
import { loadTrainingData, findCheckpointDir, TRAIN_DEFAULTS } from '../../train/train.js';
import { renderLineChart } from '../../train/plot.js';
import { resolveConfig } from '../../model/config.js';
import { countParams } from '../../model/params.js';
import { loadCheckpoint } from '../../io/checkpoint.js';
import { TOKENIZER_KINDS } from '../../data/tokenizer.js';
import { progressLine } from '../progress.js';
import type { BackendName } from '../../backend/index.js';

export const lrFindCommand: CommandSpec = {
  name: 'lr-find',
  summary: 'learning-rate range test: sweep the lr exponentially, suggest one, plot the curve',
  usage: 'minigpt lr-find [--data PATH] (--ckpt DIR | [model flags]) [--start 1e-6] [--end 1] [--steps 100] [--out FILE]',
  flags: {
    data: { type: 'string', value: 'PATH', description: 'training text (default: the embedded English corpus)' },
    'text-field': { type: 'string', value: 'NAME', description: 'field holding the text in JSONL records', default: 'text' },
    tokenizer: { type: 'string', choices: TOKENIZER_KINDS, description: 'tokenizer (default: char; shards keep their own; ignored with --ckpt)' },
    'bpe-vocab': { type: 'int', min: 257, max: MAX_BPE_VOCAB, value: 'N', description: `vocabulary size of a BPE tokenizer trained on the data (default: ${TRAIN_DEFAULTS.bpeVocab})` },
    ckpt: { type: 'string', value: 'DIR', description: 'start from this checkpoint\'s weights and shape (read only: it is never modified; model flags conflict with it)' },
    batch: { type: 'int', min: 1, value: 'N', description: 'sequences per step', default: 16 },
    start: { type: 'number', above: 0, value: 'LR', description: 'first learning rate', default: 1e-6 },
    end: { type: 'number', above: 0, value: 'LR', description: 'last learning rate', default: 1 },
    steps: { type: 'int', min: 10, value: 'N', description: 'steps in the sweep (at least 10)', default: 100 },
    seed: { type: 'int', min: 0, value: 'S', description: 'random seed', default: 1337 },
    out: { type: 'string', value: 'FILE', description: 'SVG plot of loss against lr', default: 'lr-find.svg' },
    force: { type: 'boolean', description: 'replace --out even if it is not a plot minigpt drew (one it drew is replaced anyway)' },
    json: { type: 'boolean', description: 'print {"suggestion", "minimum", "stopped_early", "curve"} as JSON' },
    ...BACKEND_FLAGS,
    ...MODEL_FLAGS,
  },
  details: 'The suggestion is where the smoothed loss falls fastest; train with it or a little below.',
  async run(v) {
    if (typeof v.ckpt === 'string') {
      const given = flagsOnCommandLine();
      for (const [name, spec] of Object.entries(MODEL_FLAGS)) {
        const set = given.has(name) || (spec.type === 'boolean' ? v[name] === true : v[name] !== undefined && v[name] !== spec.default);
        if (set) throw new MinigptError(`--${name} conflicts with --ckpt (the checkpoint fixes the model shape); drop --${name}`);
      }
    }
    if (v['bpe-vocab'] !== undefined && (v.tokenizer !== 'bpe' || typeof v.ckpt === 'string')) {
      throw new MinigptError(typeof v.ckpt === 'string' ? '--bpe-vocab conflicts with --ckpt (the checkpoint has its tokenizer); drop --bpe-vocab' : '--bpe-vocab goes with --tokenizer bpe');
    }
    await checkOutputFile(v.out as string, { what: 'minigpt plot (SVG)', force: Boolean(v.force), isOurs: isMinigptPlot });
    const ckpt = typeof v.ckpt === 'string' ? await loadCheckpoint(await findCheckpointDir(v.ckpt)) : null;
    const data = await loadTrainingData({ data: v.data as string | undefined, textField: v['text-field'] as string, tokenizer: v.tokenizer as 'char' | undefined, bpeVocab: v['bpe-vocab'] as number | undefined }, ckpt?.tokenizer);
    const config = ckpt?.config ?? resolveConfig({ ...modelConfigFromFlags(v), vocab_size: (v['vocab-size'] as number | undefined) ?? data.tokenizer.vocabSize }, { name: flagName });
    const bar = progressLine();
    const result = await findLearningRate({
      config, train: data.train, weights: ckpt?.weights, batch: v.batch as number,
      startLr: v.start as number, endLr: v.end as number, steps: v.steps as number, seed: v.seed as number, backend: v.backend as BackendName, threads: v.threads as number | undefined,
      onStep: (p, i, n) => {
        if (v.json) return;
        if (i === 1) bar.print(`sweeping the learning rate from ${(v.start as number).toExponential(0)} to ${(v.end as number).toExponential(0)} over ${n} steps: ${countParams(config).toLocaleString('en-US')} parameters, ${data.tokenizer.kind} tokenizer, batch ${v.batch} x ${config.context} tokens`);
        bar.update(i, n, `lr ${p.lr.toExponential(2)} loss ${p.loss.toFixed(4)} smoothed ${p.smoothed.toFixed(4)}`);
      },
    });
    bar.done();
    const svg = renderLineChart([
      { label: 'loss', color: '#9aa', points: result.curve.map((p) => [p.lr, p.loss]) },
      { label: 'smoothed', color: '#1f77b4', thick: true, points: result.curve.map((p) => [p.lr, p.smoothed]) },
      { label: `suggested ${result.suggestion.toExponential(1)}`, color: '#d62728', dashed: true, points: [[result.suggestion, Math.min(...result.curve.map((p) => p.smoothed))], [result.suggestion, Math.max(...result.curve.map((p) => p.smoothed))]] },
    ], { title: 'learning-rate range test', xLabel: 'learning rate', yLabel: 'loss', logX: true });
    // With the picture on stdout (--out /dev/stdout), the report goes to stderr. The result comes
    // before the plot is written: a plot that cannot be written (a full disk) keeps the suggestion.
    const say = standardStream(v.out as string) !== undefined ? console.error : console.log;
    if (v.json) {
      say(JSON.stringify({ suggestion: result.suggestion, minimum: result.minimum, stopped_early: result.stoppedEarly, curve: result.curve }));
    } else {
      say(`suggested learning rate: ${result.suggestion.toExponential(2)} (where the loss fell fastest; use it or a little below with train --lr)`);
      say(result.stoppedEarly
        ? `the loss was lowest at lr ${result.minimum.toExponential(2)}, close to where training becomes unstable: too high to train with`
        : `the loss was lowest at lr ${result.minimum.toExponential(2)}; the sweep ended at ${(v.end as number).toExponential(0)} before the loss diverged (a higher --end shows where it does)`);
    }
    await writeFileAtomic(v.out as string, svg);
    if (!v.json) say(`plot: ${v.out}`);
  },
};
