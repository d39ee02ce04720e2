import { check } from '../../errors.js';
import { BACKEND_FLAGS, TEXT_FLAGS, flagsOnCommandLine, type CommandSpec } from '../args.js';
import { encodeUserText } from '../../data/tokenizer.js';
import { isShardDir } from '../../data/shards.js';
import { loadModel, scoreText } from '../../inference.js';
import { perByte } from '../progress.js';
import { preparePrompt } from '../../generate.js';
import { evaluateRunData, evaluateShards, evaluateText, findCheckpointDir, latestRun } from '../../train/train.js';
import { loadDocuments } from '../../data/text.js';
import { cleanDocuments, documentSeparatorOf } from '../../data/documents.js';
import type { BackendName } from '../../backend/index.js';

export const evalCommand: CommandSpec = {
  name: 'eval',
  summary: 'score text with a checkpoint: per-token log-probabilities, or val loss and perplexity of a data set',
  usage: 'minigpt eval [--ckpt DIR] [--text "..." | --data PATH [--all] [--text-field NAME]] [--invalid-utf8 S] [--batch N] [--json]',
  flags: {
    ckpt: { type: 'string', value: 'DIR', description: 'run or checkpoint directory, or a .zip of a checkpoint (default: the last run trained from this folder, as runs/latest records it, else the newest run in ./runs)' },
    text: { type: 'string', value: 'TEXT', description: 'text to score token by token (longer than the context: in windows overlapping by half)', allowEmpty: true },
    data: { type: 'string', value: 'PATH', description: 'text file, folder, JSONL or `minigpt prepare` shards: loss on its validation split (the last 10%; the val shards)' },
    'text-field': TEXT_FLAGS['text-field']!,
    'invalid-utf8': { ...TEXT_FLAGS['invalid-utf8']!, description: `${TEXT_FLAGS['invalid-utf8']!.description} (a run's own data: as the run read it, unless given)` },
    all: { type: 'boolean', description: 'with --data: evaluate all of it, not only the validation split (in whole windows of the context: fewer than a context of tokens at the end are left out; "tokens" says how many were scored)' },
    batch: { type: 'int', min: 1, value: 'N', description: 'sequences per forward pass (not with --text; left out: 8, or fewer where the backend holds fewer)', default: 8 },
    json: { type: 'boolean', description: 'print JSON: {"ids", "logprobs", "loss", "bits_per_byte"} for --text, {"val_loss", "perplexity", "bits_per_byte", "tokens", "split": "val"|"all"} for --data (and "data" without either)' },
    ...BACKEND_FLAGS,
  },
  details: [
    'With --text, logprobs[i] is log p(ids[i+1] | ids[0..i]), so there is one fewer than ids; loss is their mean negative.',
    'A text longer than the context is scored in windows of the context length overlapping by half, so each',
    'token sees at least half a context before it.',
    'With neither --text nor --data: the validation split of the data the run trained on (the embedded',
    'corpus for a default run), over as many windows as the run\'s final evaluation, so it reproduces that number',
    '(a run stopped by --max-time scored its final evaluation on the periodic windows only, so eval\'s number differs from it).',
    'Bits per byte is the loss summed over the scored tokens, in bits, divided by the UTF-8 bytes of their text',
    '(<|endoftext|> stands for none): unlike the loss per token, it compares models with different tokenizers.',
    'Text given with --text or --data is cleaned as the run\'s training text was (--clean lowercase: lowercased),',
    'and the documents of a --data folder or JSONL file are joined as training joins them (<|endoftext|> where the tokenizer has it).',
    'A tokenizer that starts every text with a token (an imported Llama 2-style one: <s>) has it first in --text\'s ids and',
    'before each document, as in training; it is not scored, and the "▁" it adds in front of a text counts no byte.',
    '',
    'Examples:',
    '  minigpt eval                                    # the latest run, on its own validation data',
    '  minigpt eval --ckpt runs/run-20261127-120000 --text "To be, or not to be" --json',
    '  minigpt eval --ckpt runs/run-20261127-120000 --data shakespeare.txt',
  ].join('\n'),
  async run(v) {
    check(v.text === undefined || v.data === undefined, 'give one of --text "..." or --data PATH, not both');
    check(!v.all || v.data !== undefined, '--all goes with --data PATH');
    check(!(typeof v.text === 'string' && flagsOnCommandLine().has('batch')), '--batch goes with --data (or no data flag), not with --text: a text is scored as one sequence');
    // Left out, the library's default (8) shrinks to what the backend holds.
    const batch = flagsOnCommandLine().has('batch') ? v.batch as number : undefined;
    const dir = await findCheckpointDir(typeof v.ckpt === 'string' ? v.ckpt : await latestRun());
    const loaded = await loadModel(dir, { backend: v.backend as BackendName, threads: v.threads as number | undefined });
    if (v.text === undefined && v.data === undefined) {
      // The run's own validation data: the number its final evaluation printed.
      const r = await evaluateRunData(loaded.model, loaded.tokenizer, dir, { batch, invalidUtf8: flagsOnCommandLine().has('invalid-utf8') ? v['invalid-utf8'] as 'error' | 'replace' : undefined });
      const out = { val_loss: r.loss, perplexity: Math.exp(r.loss), bits_per_byte: r.bitsPerByte, tokens: r.tokens, split: 'val', data: r.dataName };
      if (v.json) console.log(JSON.stringify(out));
      else console.log(`validation split of the run's data (${r.dataName}): loss ${r.loss.toFixed(4)}, perplexity ${out.perplexity.toFixed(2)}${perByte(r.bitsPerByte)} over ${r.tokens.toLocaleString('en-US')} tokens`);
      return;
    }
    if (typeof v.text === 'string') {
      // Cleaned as the training text was (lowercased, say), as sample cleans a prompt.
      const { prompt: text, note } = preparePrompt(loaded, v.text, '--text');
      if (note) console.error(`minigpt: note: ${note}`);
      encodeUserText(loaded.tokenizer, text, '--text', "the checkpoint's tokenizer has no token for it; leave it out");
      const score = await scoreText(loaded, text);
      if (v.json) console.log(JSON.stringify({ ids: score.ids, logprobs: score.logprobs, loss: score.loss, bits_per_byte: score.bitsPerByte }));
      else console.log(`${score.ids.length} tokens: loss ${score.loss.toFixed(4)}, perplexity ${Math.exp(score.loss).toFixed(2)}${perByte(score.bitsPerByte)}`);
      return;
    }
    const data = v.data as string;
    const opts = { all: Boolean(v.all), batch };
    const result = (await isShardDir(data))
      ? await evaluateShards(loaded.model, loaded.tokenizer, data, opts)
      : await evaluateText(loaded.model, loaded.tokenizer, cleanDocuments(await loadDocuments(data, {
        textField: v['text-field'] as string, invalidUtf8: v['invalid-utf8'] as 'error' | 'replace',
        onWarning: (m) => console.error(`minigpt: warning: ${m}`),
      }), documentSeparatorOf(loaded.tokenizer), loaded.clean), { ...opts, source: data }); // cleaned and joined as training text is
    if (result.tokens < 100) console.error(`minigpt: note: only ${result.tokens} tokens were scored; a loss over so few is noisy${v.all ? '' : ' (pass --all to use all of the data)'}`);
    const out = { val_loss: result.loss, perplexity: Math.exp(result.loss), bits_per_byte: result.bitsPerByte, tokens: result.tokens, split: v.all ? 'all' : 'val' };
    if (v.json) console.log(JSON.stringify(out));
    else console.log(`${v.all ? 'all' : 'validation split'}: loss ${result.loss.toFixed(4)}, perplexity ${out.perplexity.toFixed(2)}${perByte(result.bitsPerByte)} over ${result.tokens.toLocaleString('en-US')} tokens`);
  },
};
