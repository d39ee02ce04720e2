import { MAX_BPE_VOCAB } from '../../data/bpe.js';
import { check } from '../../errors.js';
import { TEXT_FLAGS, cleanOptionsFromFlag, type CommandSpec } from '../args.js';
import { formatDuration, formatRate } from '../progress.js';
import { DEFAULT_SHARD_TOKENS, prepareShards, type PrepareProgress } from '../../data/shards.js';
import { TOKENIZER_KINDS, type Tokenizer, type TokenizerKind } from '../../data/tokenizer.js';
import { loadTokenizer } from './tokenizer.js';

const MB = 1024 * 1024;
const formatMB = (bytes: number): string =>
  bytes >= MB / 10 ? `${(bytes / MB).toFixed(1)} MB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${bytes} bytes`;
const formatCount = (n: number): string => n.toLocaleString('en-US');
const formatTokenRate = (perSecond: number): string =>
  perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(1)}M` : formatRate(perSecond);

export const prepareCommand: CommandSpec = {
  name: 'prepare',
  summary: 'tokenize a corpus of any size into binary shards (streamed, bounded memory) for training',
  usage: 'minigpt prepare --data PATH (--tokenizer char|gpt2|FILE|DIR | --tokenizer bpe --bpe-vocab N) [--text-field NAME] [--clean STEPS] [--invalid-utf8 error|replace] [--shard-tokens N] [--val-fraction F] --out DIR',
  flags: {
    data: { type: 'string', value: 'PATH', description: 'text file, .jsonl file, or folder of them (read in sorted order)' },
    tokenizer: { type: 'string', value: 'KIND|FILE|DIR', description: 'tokenizer to build (char, bpe) or use (gpt2, a tokenizer JSON file (minigpt\'s, or a Hugging Face tokenizer.json), a checkpoint or run folder or a Hugging Face model folder: its tokenizer, so the shards fit that model; or a shards folder: the tokenizer that made it)' },
    'bpe-vocab': { type: 'int', min: 257, max: MAX_BPE_VOCAB, value: 'N', description: 'bpe: vocabulary size to learn, required with bpe (learned from about the first 20M characters of the training part)' },
    'text-field': { type: 'string', value: 'NAME', description: 'field holding the text in .jsonl records', default: 'text' },
    clean: TEXT_FLAGS.clean!,
    'invalid-utf8': TEXT_FLAGS['invalid-utf8']!,
    'shard-tokens': { type: 'int', min: 1, max: 2 ** 31 - 1, value: 'N', description: 'tokens per shard file', default: DEFAULT_SHARD_TOKENS },
    'val-fraction': { type: 'number', min: 0, value: 'F', description: 'last fraction of the input bytes kept for validation', default: 0.1 },
    out: { type: 'string', value: 'DIR', description: 'shards folder to write (an existing shards folder is replaced)' },
  },
  details: [
    'Writes train_000000.bin, ..., val_000000.bin (llm.c format: 256-int32 header, then uint16',
    'tokens, or uint32 for vocabularies over 65536) and meta.json with the tokenizer.',
    'Text is cleaned as training cleans it (--clean; a run on the shards records it, so sampling cleans',
    'prompts the same way), and the shards hold the tokens of the whole text: it is',
    'read in 1 MB chunks cut where tokenization splits anyway, so memory stays bounded. Documents (a',
    'folder\'s files, JSONL records) are separated as training separates them: <|endoftext|> where a byte-level',
    'tokenizer has it (gpt2, bpe, most imported ones), the start-of-text token before each where the tokenizer',
    'starts every text with one (an imported Llama 2-style sp-bpe: "<s>"), else a blank line (char).',
    '',
    'Examples:',
    '  minigpt prepare --data books/ --tokenizer char --out data/books-char',
    '  minigpt prepare --data web.jsonl --tokenizer bpe --bpe-vocab 8192 --out data/web-bpe',
  ].join('\n'),
  async run(v) {
    check(typeof v.data === 'string', '--data PATH is required: the text to tokenize');
    check(typeof v.tokenizer === 'string', '--tokenizer char|gpt2|bpe is required (or a tokenizer file, a Hugging Face tokenizer.json, or a checkpoint folder)');
    check(typeof v.out === 'string', '--out DIR is required: where to write the shards');
    const named = (TOKENIZER_KINDS as readonly string[]).includes(v.tokenizer);
    const tokenizer: TokenizerKind | Tokenizer = named ? (v.tokenizer as TokenizerKind) : await loadTokenizer(v.tokenizer);
    const kind: TokenizerKind = typeof tokenizer === 'string' ? tokenizer : tokenizer.kind;
    check(v.tokenizer === 'bpe' || v['bpe-vocab'] === undefined, '--bpe-vocab is only for --tokenizer bpe');
    check(v.tokenizer !== 'bpe' || v['bpe-vocab'] !== undefined, '--tokenizer bpe needs --bpe-vocab N: how many tokens to learn (e.g. 8192)');
    const valFraction = v['val-fraction'] as number;
    check(valFraction < 1, `--val-fraction must be less than 1 (got ${valFraction})`);

    const stderr = process.stderr;
    const tty = Boolean(stderr.isTTY);
    const started = performance.now();
    let phaseStarted = started;
    let lastPhase: PrepareProgress['phase'] | null = null;
    let lastShown = 0;
    let shown = false;
    const onProgress = (p: PrepareProgress): void => {
      const now = performance.now();
      if (p.phase !== lastPhase) {
        lastPhase = p.phase;
        phaseStarted = now;
      }
      if (now - lastShown < (tty ? 200 : 5000)) return;
      lastShown = now;
      const seconds = (now - phaseStarted) / 1000;
      const pct = p.bytesTotal > 0 ? Math.floor((100 * p.bytesRead) / p.bytesTotal) : 100;
      const what = p.phase === 'scan' ? (kind === 'bpe' ? 'sampling' : 'scanning vocabulary') : 'encoding';
      let line = `${what}: ${formatMB(p.bytesRead)} / ${formatMB(p.bytesTotal)} (${pct}%)`;
      if (seconds > 0) line += `, ${formatMB(p.bytesRead / seconds)}/s`;
      if (p.phase === 'encode') line += `, ${formatCount(p.tokens)} tokens, ${formatTokenRate(p.tokens / Math.max(seconds, 1e-3))} tok/s`;
      if (tty) {
        stderr.write(`\r\x1b[2K${line.slice(0, Math.max(20, (stderr.columns ?? 120) - 1))}`);
        shown = true;
      } else {
        stderr.write(line + '\n');
      }
    };
    let summary;
    try {
      summary = await prepareShards({
        data: v.data,
        out: v.out,
        tokenizer,
        ...(v['bpe-vocab'] !== undefined ? { bpeVocab: v['bpe-vocab'] as number } : {}),
        textField: v['text-field'] as string,
        ...(typeof v.clean === 'string' ? { clean: cleanOptionsFromFlag(v.clean) } : {}),
        shardTokens: v['shard-tokens'] as number,
        valFraction,
        invalidUtf8: v['invalid-utf8'] as 'error' | 'replace',
        onWarning: (m) => {
          if (shown) stderr.write('\r\x1b[2K');
          stderr.write(`minigpt: warning: ${m}\n`);
        },
        onProgress,
      });
    } finally {
      if (shown) stderr.write('\r\x1b[2K');
    }
    const shards = summary.train.shards.length + summary.val.shards.length;
    console.log(
      `wrote ${summary.out}: ${formatCount(summary.train.tokens)} train + ${formatCount(summary.val.tokens)} val tokens ` +
        `in ${shards} shard${shards === 1 ? '' : 's'} (${summary.tokenizer} tokenizer, vocabulary ${formatCount(summary.vocabSize)}, ${summary.dtype}) ` +
        `from ${formatMB(summary.bytes)} in ${formatDuration(summary.seconds)}`,
    );
  },
};
