import { MinigptError, check } from '../../errors.js';
import { MODEL_FLAGS, flagName, modelConfigFromFlags, type CommandSpec } from '../args.js';
import { resolveConfig } from '../../model/config.js';
import { initialWeights, paramLayout, countParams } from '../../model/params.js';
import { createRng } from '../../util/random.js';
import { checkCheckpointReadable, isCheckpointDir, recoverInterruptedSave, saveCheckpoint } from '../../io/checkpoint.js';
import { isNonEmptyDir } from '../../util/fs.js';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { buildCharTokenizer } from '../../data/tokenizer.js';
import { loadText, cleanText } from '../../data/text.js';

/**
 * Before writing a checkpoint to --out: a missing or empty folder is fine; an existing checkpoint
 * is replaced only with --force (its weights, optimizer and trainer state would be lost);
 * anything else (a file, a folder of other things) is refused even with --force.
 */
export async function checkCheckpointOut(out: string, force: boolean): Promise<void> {
  const dir = resolve(out);
  await recoverInterruptedSave(dir);
  const info = await stat(dir).catch(() => null);
  if (info === null) return;
  check(info.isDirectory(), `--out ${out} exists and is a file, not a checkpoint folder; choose another --out`);
  if (!(await isNonEmptyDir(dir))) return;
  check(await isCheckpointDir(dir), `--out ${out} exists and is not a minigpt checkpoint; refusing to overwrite it (choose another --out)`);
  check(force, `--out ${out} exists and is not empty (a checkpoint); pass --force to replace it, or choose another --out`);
}

export const initCommand: CommandSpec = {
  name: 'init',
  summary: 'write an untrained checkpoint (character tokenizer from --data or --chars)',
  usage: 'minigpt init --out DIR (--data PATH | --chars STRING) [model flags] [--seed S] [--force]',
  flags: {
    out: { type: 'string', value: 'DIR', description: 'checkpoint directory to write' },
    data: { type: 'string', value: 'PATH', description: 'text whose characters form the vocabulary' },
    chars: { type: 'string', value: 'STRING', description: 'the vocabulary as a string of characters' },
    seed: { type: 'int', min: 0, value: 'S', description: 'random seed for the weights', default: 0 },
    force: { type: 'boolean', description: 'replace --out if it already holds a checkpoint (its weights and training state are lost)' },
    ...MODEL_FLAGS,
  },
  details: 'Example:\n  minigpt init --out runs/untrained --data notes.txt --d-model 64 --n-layers 2',
  async run(v) {
    check(typeof v.out === 'string', '--out DIR is required');
    check((v.data === undefined) !== (v.chars === undefined), 'give exactly one of --data FILE or --chars STRING for the character vocabulary');
    await checkCheckpointOut(v.out as string, Boolean(v.force));
    const text = v.data !== undefined ? cleanText(await loadText(v.data as string)) : (v.chars as string);
    check(text.length > 0, '--chars is empty');
    // With "<|endoftext|>" after the characters, as `minigpt train` makes char tokenizers.
    const tokenizer = buildCharTokenizer(text, { endOfText: true });
    const partial = modelConfigFromFlags(v);
    const vocab = partial.vocab_size ?? tokenizer.vocabSize;
    if (vocab < tokenizer.vocabSize) {
      throw new MinigptError(`--vocab-size ${vocab} is smaller than the ${tokenizer.vocabSize} tokens of the vocabulary`);
    }
    const config = resolveConfig({ ...partial, vocab_size: vocab }, { name: flagName });
    checkCheckpointReadable(config, false);
    const weights = initialWeights(config, paramLayout(config), createRng(v.seed as number));
    await saveCheckpoint(v.out as string, { config, weights, tokenizer });
    console.log(`wrote untrained checkpoint ${v.out}: ${countParams(config).toLocaleString('en-US')} parameters, vocabulary of ${tokenizer.vocabSize} tokens`);
  },
};
