import { MAX_BPE_VOCAB } from '../../data/bpe.js';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isShardDir, openShards } from '../../data/shards.js';
import { checkOutputFile, exists, ioError, writeFileAtomic } from '../../util/fs.js';
import { MinigptError, check } from '../../errors.js';
import { TEXT_FLAGS, cleanOptionsFromFlag, type CommandSpec, type FlagValues } from '../args.js';
import { BLANK_LINE_SEPARATOR, loadDocuments, loadText } from '../../data/text.js';
import { cleanDocuments, encodeDocuments, joinDocuments } from '../../data/documents.js';
import { END_OF_TEXT, tokenizerFromJson, type Tokenizer } from '../../data/tokenizer.js';
import { trainBpe } from '../../data/bpe.js';
import { gpt2Tokenizer } from '../../data/gpt2.js';
import { findCheckpointDir } from '../../train/train.js';
import { loadCheckpoint } from '../../io/checkpoint.js';
import { hfCleaningNormalizer, tokenizerFromHfJson } from '../../io/hf.js';

/** Which flags each subcommand takes; anything else given is a mistake worth naming. */
const SUBCOMMAND_FLAGS: Record<string, readonly string[]> = {
  train: ['data', 'vocab', 'out', 'force', 'text-field', 'no-eot', 'invalid-utf8', 'clean'],
  encode: ['tokenizer', 'text', 'file', 'allow-special', 'pieces', 'invalid-utf8', 'text-field'],
  decode: ['tokenizer', 'ids'],
};

/** The file a checkpoint keeps its tokenizer in (see src/io/checkpoint.ts). */
const CHECKPOINT_TOKENIZER_FILE = 'tokenizer.minigpt.json';

export const tokenizerCommand: CommandSpec = {
  name: 'tokenizer',
  summary: 'train a byte-level BPE tokenizer on your text, or encode/decode with a tokenizer',
  usage: [
    'minigpt tokenizer train --data PATH --vocab N --out FILE [--force] [--no-eot] [--text-field NAME] [--clean STEPS]',
    '       minigpt tokenizer encode --tokenizer FILE|DIR|gpt2 (--text STRING | --file PATH) [--allow-special] [--pieces] [--text-field NAME]',
    '       minigpt tokenizer decode --tokenizer FILE|DIR|gpt2 --ids "ID ID ..."',
  ].join('\n'),
  positionals: true,
  flags: {
    data: { type: 'string', value: 'PATH', description: 'train: text file, .jsonl file or folder to learn from' },
    vocab: { type: 'int', min: 257, max: MAX_BPE_VOCAB, value: 'N', description: 'train: tokens in all (256 bytes + merges + <|endoftext|>)' },
    out: { type: 'string', value: 'FILE', description: 'train: where to write the tokenizer JSON' },
    force: { type: 'boolean', description: 'train: replace --out even if it is not a tokenizer file (an existing tokenizer is replaced anyway)' },
    'text-field': { type: 'string', value: 'NAME', description: 'train/encode: field holding the text in .jsonl files', default: 'text' },
    'no-eot': { type: 'boolean', description: `train: no ${END_OF_TEXT} special token` },
    'invalid-utf8': { ...TEXT_FLAGS['invalid-utf8']!, description: 'train/encode: invalid UTF-8 in the file: stop with an error, or replace it and warn' },
    clean: { ...TEXT_FLAGS.clean!, description: `train: ${TEXT_FLAGS.clean!.description} (give the one training will use)` },
    tokenizer: { type: 'string', value: 'FILE|DIR|gpt2', description: 'encode/decode: a tokenizer JSON file (minigpt\'s, or a Hugging Face tokenizer.json), a checkpoint or run folder, a Hugging Face model folder, a checkpoint .zip, a shards folder from prepare, or gpt2' },
    text: { type: 'string', value: 'STRING', description: 'encode: the text', allowEmpty: true },
    file: { type: 'string', value: 'PATH', description: 'encode: a file holding the text (a .jsonl file or a folder: its documents joined by a blank line); encoded as it is, without the cleaning sample and eval give a prompt' },
    'allow-special': { type: 'boolean', description: `encode: special tokens' text (${END_OF_TEXT}, an imported tokenizer's others) becomes those tokens (default: plain text)` },
    pieces: { type: 'boolean', description: 'encode: print each token with its text, one per line' },
    ids: { type: 'string', value: 'IDS', description: 'decode: token ids, separated by spaces or commas' },
  },
  details: [
    'The BPE tokenizer splits text as GPT-2 does, then merges bytes; any text can be encoded.',
    'Train on text with it: minigpt train --tokenizer FILE (or minigpt prepare --tokenizer FILE for shards);',
    'gpt2 is the fixed 50257-token GPT-2 vocabulary. encode prints the text\'s own ids: a tokenizer that starts every',
    'text with a token (an imported Llama 2-style one: <s>, which transformers\' encode adds) shows it only when',
    'the text holds it (with --allow-special).',
    '',
    'Examples:',
    '  minigpt tokenizer train --data shakespeare.txt --vocab 4096 --out shakespeare.tok.json',
    '  minigpt tokenizer encode --tokenizer shakespeare.tok.json --text "To be, or not to be"',
    '  minigpt tokenizer encode --tokenizer gpt2 --text "Hello world"      # [15496,995]',
    '  minigpt tokenizer decode --tokenizer gpt2 --ids "15496 995"',
  ].join('\n'),
  async run(v, positionals) {
    const sub = positionals[0];
    const names = Object.keys(SUBCOMMAND_FLAGS);
    check(sub !== undefined, `say what to do: minigpt tokenizer ${names.join('|')} (see --help)`);
    const allowed = SUBCOMMAND_FLAGS[sub];
    check(allowed !== undefined, `unknown tokenizer subcommand "${sub}"; use one of ${names.join(', ')} (see --help)`);
    check(positionals.length === 1, `unexpected argument "${positionals[1]}" (flags start with --; see --help)`);
    for (const [name, flag] of Object.entries(tokenizerCommand.flags)) {
      const given = flag.type === 'boolean' ? v[name] === true : v[name] !== undefined && v[name] !== flag.default;
      if (given && !allowed.includes(name)) {
        const owners = names.filter((n) => SUBCOMMAND_FLAGS[n]!.includes(name));
        throw new MinigptError(`--${name} is for \`minigpt tokenizer ${owners.join('/')}\`, not ${sub}`);
      }
    }
    if (sub === 'train') await train(v);
    else if (sub === 'encode') await encode(v);
    else await decode(v);
  },
};

async function train(v: FlagValues): Promise<void> {
  check(typeof v.data === 'string', '--data PATH is required: the text to learn the tokenizer from');
  check(typeof v.vocab === 'number', '--vocab N is required: how many tokens to learn (e.g. 4096)');
  check(typeof v.out === 'string', '--out FILE is required: where to write the tokenizer');
  const out = v.out;
  const existing = await stat(out).catch(() => null);
  check(!existing?.isDirectory(), `--out ${out} is a folder; give a file name such as ${join(out, 'tokenizer.json')}`);
  await checkOutputFile(out, { what: 'minigpt tokenizer file', force: Boolean(v.force), isOurs: isTokenizerFile });
  // Documents as training will join them with this tokenizer: apart (<|endoftext|> splits BPE's
  // training text), or with --no-eot joined by a blank line.
  const separator = v['no-eot'] ? BLANK_LINE_SEPARATOR : END_OF_TEXT;
  // Cleaned as the training text will be (train --clean lowercase wants a tokenizer learned on lowercase text).
  const clean = cleanOptionsFromFlag(v.clean as string);
  const documents = cleanDocuments(await loadDocuments(v.data, { textField: v['text-field'] as string, invalidUtf8: v['invalid-utf8'] as 'error' | 'replace', onWarning: warn }), separator, clean);
  const text = joinDocuments(documents, separator);
  const start = performance.now();
  const tokenizer = trainBpe(text, { vocabSize: v.vocab, specialTokens: v['no-eot'] ? [] : [END_OF_TEXT] });
  const seconds = (performance.now() - start) / 1000;
  const tokens = encodeDocuments(tokenizer, documents).length;
  const utf8 = new TextEncoder();
  const characters = documents.reduce((n, d) => n + d.length, 0);
  const bytes = documents.reduce((n, d) => n + utf8.encode(d).length, 0);
  await writeFileAtomic(out, `${JSON.stringify(tokenizer.toJSON(), null, 2)}\n`);
  const special = Object.keys(tokenizer.specialTokens).length;
  console.log(
    `trained a BPE tokenizer of ${tokenizer.vocabSize} tokens (256 bytes, ${tokenizer.vocabSize - 256 - special} merges` +
      `${special > 0 ? `, ${special} special` : ''}) on ${characters.toLocaleString('en-US')} characters${documents.length > 1 ? ` (${documents.length.toLocaleString('en-US')} documents)` : ''} in ${seconds.toFixed(1)} s; ` +
      `the text is ${tokens.toLocaleString('en-US')} tokens, ${(bytes / tokens).toFixed(2)} bytes per token; wrote ${out}`,
  );
}

async function encode(v: FlagValues): Promise<void> {
  const tokenizer = await loadTokenizer(v.tokenizer);
  check((v.text === undefined) !== (v.file === undefined), 'give exactly one of --text STRING or --file PATH: the text to encode');
  const text = v.text !== undefined
    ? (v.text as string)
    : await loadText(v.file as string, { textField: v['text-field'] as string, invalidUtf8: v['invalid-utf8'] as 'error' | 'replace', onWarning: warn });
  const ids = tokenizer.encode(text, v['allow-special'] ? { allowedSpecial: 'all' } : {});
  if (!v.pieces) {
    console.log(JSON.stringify(Array.from(ids)));
    return;
  }
  for (const id of ids) console.log(`${id}\t${showToken(tokenizer, id)}`);
}

async function decode(v: FlagValues): Promise<void> {
  const tokenizer = await loadTokenizer(v.tokenizer);
  check(typeof v.ids === 'string', '--ids is required: the token ids to decode, e.g. --ids "15496 995"');
  const parts = v.ids.replace(/^\s*\[|\]\s*$/g, '').split(/[\s,]+/).filter((p) => p !== '');
  check(parts.length > 0, () => `--ids ${JSON.stringify(v.ids)} holds no token id; give whole numbers separated by spaces or commas`);
  const ids = parts.map((p) => {
    check(/^\d+$/.test(p), `--ids: "${p}" is not a token id; give whole numbers separated by spaces or commas`);
    // Past any vocabulary (2^21 at most), and past what Number shows digit for digit.
    check(p.replace(/^0+(?=\d)/, '').length <= 9, () => `--ids: token id ${p} is out of range; valid ids are 0 to ${tokenizer.vocabSize - 1}`);
    return Number(p);
  });
  console.log(tokenizer.decode(ids));
}

/** A token's text, quoted; bytes that are not a whole character are shown as \xNN. */
function showToken(tokenizer: Tokenizer, id: number): string {
  if (!tokenizer.tokenBytes) return JSON.stringify(tokenizer.decode([id]));
  const bytes = tokenizer.tokenBytes(id);
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return JSON.stringify(strict.decode(bytes));
  } catch {
    return `"${Array.from(bytes, (b) => (b < 0x80 ? JSON.stringify(String.fromCharCode(b)).slice(1, -1) : `\\x${b.toString(16).padStart(2, '0')}`)).join('')}"`;
  }
}

/**
 * Whether `path` holds one of our tokenizer files: JSON the tokenizer loader accepts, or at
 * least an object shaped like what `tokenizer train` writes ("type": "bpe" and a "merges" list).
 */
async function isTokenizerFile(path: string): Promise<boolean> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return false;
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return false;
  const fields = json as Record<string, unknown>;
  if (fields['type'] === 'bpe' && Array.isArray(fields['merges'])) return true;
  try {
    tokenizerFromJson(json, path);
    return true;
  } catch {
    return false;
  }
}

const warn = (m: string): void => console.error(`minigpt: warning: ${m}`);

/** `gpt2`, a tokenizer JSON file, a checkpoint or run folder, or a checkpoint .zip. */
export async function loadTokenizer(spec: unknown): Promise<Tokenizer> {
  check(typeof spec === 'string', '--tokenizer is required: a tokenizer JSON file (minigpt\'s or a Hugging Face tokenizer.json), a checkpoint folder, or gpt2');
  if (spec === 'gpt2') return gpt2Tokenizer();
  const info = await stat(spec).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw ioError(e, `read --tokenizer ${spec}`);
  });
  check(info !== null, `--tokenizer ${spec}: no such file or folder; give a tokenizer JSON file (minigpt's or a Hugging Face tokenizer.json), a checkpoint folder, or gpt2`);
  if (info.isFile() && spec.toLowerCase().endsWith('.zip')) return (await loadCheckpoint(spec)).tokenizer;
  // Shards from prepare record the tokenizer that made them.
  if (info.isDirectory() && (await isShardDir(spec))) {
    const shards = await openShards(spec);
    shards.close();
    return shards.tokenizer;
  }
  // A folder: a checkpoint or run, or a Hugging Face model folder (its tokenizer.json, no checkpoint's).
  const hfModelTokenizer = info.isDirectory() && !(await exists(join(spec, CHECKPOINT_TOKENIZER_FILE))) && (await exists(join(spec, 'tokenizer.json')));
  const path = hfModelTokenizer ? join(spec, 'tokenizer.json') : info.isDirectory() ? join(await findCheckpointDir(spec), CHECKPOINT_TOKENIZER_FILE) : spec;
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch {
    throw new MinigptError(`${path}: cannot read the tokenizer file; a checkpoint folder holds ${CHECKPOINT_TOKENIZER_FILE}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new MinigptError(`${path}: not valid JSON (${(err as Error).message}); give a file written by \`minigpt tokenizer train\``);
  }
  // A Hugging Face tokenizer.json (a "model" object, no "type"): read as import reads it.
  const fields = typeof json === 'object' && json !== null && !Array.isArray(json) ? json as Record<string, unknown> : null;
  if (fields && !('type' in fields) && typeof fields['model'] === 'object' && fields['model'] !== null) {
    const tokenizer = tokenizerFromHfJson(json, path);
    check(hfCleaningNormalizer(json, path) === null,
      `${path} is a Hugging Face tokenizer.json with a normalizer, whose cleaning a tokenizer file alone does not carry into training; import the model it belongs to (minigpt import), or use a tokenizer.json without one`);
    return tokenizer;
  }
  return tokenizerFromJson(json, path);
}
