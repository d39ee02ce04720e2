import { MinigptError, check } from '../../errors.js';
import { MODEL_FLAGS, modelConfigFromFlags, type CommandSpec } from '../args.js';
import { resolveConfig } from '../../model/config.js';
import { initialWeights, paramLayout, countParams } from '../../model/params.js';
import { createRng } from '../../util/random.js';
import { saveCheckpoint } from '../../io/checkpoint.js';
import { buildCharTokenizer } from '../../data/tokenizer.js';
import { loadText, cleanText } from '../../data/text.js';

export const initCommand: CommandSpec = {
  name: 'init',
  summary: 'write an untrained checkpoint (character tokenizer from --data or --chars)',
  usage: 'minigpt init --out DIR (--data FILE | --chars STRING) [model flags] [--seed S]',
  flags: {
    out: { type: 'string', value: 'DIR', description: 'checkpoint directory to write' },
    data: { type: 'string', value: 'PATH', description: 'text whose characters form the vocabulary' },
    chars: { type: 'string', value: 'STRING', description: 'the vocabulary as a string of characters' },
    seed: { type: 'int', min: 0, value: 'S', description: 'random seed for the weights', default: 0 },
    ...MODEL_FLAGS,
  },
  details: 'Example:\n  minigpt init --out runs/untrained --data notes.txt --d-model 64 --n-layers 2',
  async run(v) {
    check(typeof v.out === 'string', '--out DIR is required');
    check((v.data === undefined) !== (v.chars === undefined), 'give exactly one of --data FILE or --chars STRING for the character vocabulary');
    const text = v.data !== undefined ? cleanText(await loadText(v.data as string)) : (v.chars as string);
    check(text.length > 0, '--chars is empty');
    const tokenizer = buildCharTokenizer(text);
    const partial = modelConfigFromFlags(v);
    const vocab = partial.vocab_size ?? tokenizer.vocabSize;
    if (vocab < tokenizer.vocabSize) {
      throw new MinigptError(`--vocab-size ${vocab} is smaller than the ${tokenizer.vocabSize} characters of the vocabulary`);
    }
    const config = resolveConfig({ ...partial, vocab_size: vocab });
    const weights = initialWeights(config, paramLayout(config), createRng(v.seed as number));
    await saveCheckpoint(v.out as string, { config, weights, tokenizer });
    console.log(`wrote untrained checkpoint ${v.out}: ${countParams(config).toLocaleString('en-US')} parameters, vocabulary of ${tokenizer.vocabSize} characters`);
  },
};
