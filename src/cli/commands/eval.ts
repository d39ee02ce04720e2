import { check } from '../../errors.js';
import type { CommandSpec } from '../args.js';
import { loadModel, scoreText } from '../../inference.js';
import { BACKEND_NAMES } from '../../backend/index.js';

export const evalCommand: CommandSpec = {
  name: 'eval',
  summary: 'score text with a checkpoint: per-token log-probabilities, loss and perplexity',
  usage: 'minigpt eval --ckpt DIR --text "..." [--json]',
  flags: {
    ckpt: { type: 'string', value: 'DIR', description: 'checkpoint directory' },
    text: { type: 'string', value: 'TEXT', description: 'text scored as one sequence (at most the context length)' },
    json: { type: 'boolean', description: 'print {"ids", "logprobs", "loss"} as JSON' },
    backend: { type: 'string', choices: BACKEND_NAMES, description: 'where to run', default: 'auto' },
  },
  details: [
    'logprobs[i] is log p(ids[i+1] | ids[0..i]), so there is one fewer than ids; loss is their mean negative.',
    '',
    'Example:',
    '  minigpt eval --ckpt runs/latest --text "To be, or not to be" --json',
  ].join('\n'),
  async run(v) {
    check(typeof v.ckpt === 'string', '--ckpt DIR is required');
    check(typeof v.text === 'string', '--text is required');
    const loaded = await loadModel(v.ckpt as string, { backend: v.backend as string });
    const score = await scoreText(loaded, v.text as string);
    if (v.json) {
      console.log(JSON.stringify(score));
    } else {
      console.log(`${score.ids.length} tokens: loss ${score.loss.toFixed(4)}, perplexity ${Math.exp(score.loss).toFixed(2)}`);
    }
  },
};
