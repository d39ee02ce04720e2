/**
 * Flag parsing for every command: node's util.parseArgs plus typed, validated values and
 * generated --help. Every mistake is a MinigptError that names the flag.
 */
import { parseArgs } from 'node:util';
import { MinigptError, likelyName } from '../errors.js';
import { INIT_STRATEGIES, MLP_KINDS, type ModelConfig } from '../model/config.js';
import { BACKEND_NAMES } from '../backend/index.js';
import { CLEAN_STEP_NAMES, DEFAULT_CLEAN } from '../data/text.js';

/** The cleaning steps on by default, as --clean names them (nfc,newlines,page-breaks,control-chars,blank-lines). */
const DEFAULT_CLEAN_STEPS = Object.entries(CLEAN_STEP_NAMES).filter(([, key]) => DEFAULT_CLEAN[key]).map(([name]) => name).join(',');

export type FlagType = 'string' | 'int' | 'number' | 'boolean';

export interface FlagSpec {
  type: FlagType;
  description: string;
  /** Placeholder in --help, e.g. DIR, N. */
  value?: string;
  choices?: readonly string[];
  default?: string | number | boolean;
  /** Lower bounds for numbers: min is inclusive, above is exclusive. */
  min?: number;
  above?: number;
  max?: number;
  short?: string;
  /** A string flag that may be given as "" (a prompt, a title); any other is an error when empty (--data= would mean no file). */
  allowEmpty?: boolean;
  /** A string flag that may be given more than once; its value is then the array of them (else the last one given counts). */
  repeatable?: boolean;
}

export type FlagSpecs = Record<string, FlagSpec>;
export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpecs;
  /** Extra help text (examples). */
  details?: string;
  /** Resolves to the process exit code (130: stopped by Ctrl-C), or to nothing for 0. */
  run(values: FlagValues, positionals: string[]): Promise<number | void>;
  /** Whether the command takes positional arguments. */
  positionals?: boolean;
}

/** A flag's value from its text: checked against its spec (type, choices, bounds, empty), or a MinigptError naming --name. */
export function convert(name: string, spec: FlagSpec, raw: string | boolean): string | number | boolean {
  if (spec.type === 'boolean') return raw;
  const text = String(raw);
  if (spec.type === 'string') {
    if (text === '' && !spec.allowEmpty) throw new MinigptError(`--${name} is empty; give it a value${spec.value ? ` (${spec.value})` : ''}, or leave the flag out`);
    if (spec.choices && !spec.choices.includes(text)) {
      throw new MinigptError(`--${name} must be one of ${spec.choices.join(', ')} (got "${text}")`);
    }
    return text;
  }
  // Decimal only: Number() would also take 0x10 (16), 0b11 and 0o7.
  const n = /^\s*[+-]?0[xbo]/i.test(text) ? NaN : Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new MinigptError(`--${name} must be ${spec.type === "int" ? "an integer" : "a number"} (got "${text}")`);
  if (spec.type === 'int' && !Number.isInteger(n)) throw new MinigptError(`--${name} must be an integer (got "${text}")`);
  // Past 2^53 integers are no longer exact: a step count or seed there would be some other number.
  if (spec.type === 'int' && !Number.isSafeInteger(n)) throw new MinigptError(`--${name} must be at most ${Number.MAX_SAFE_INTEGER} (got ${text})`);
  if (spec.min !== undefined && n < spec.min) throw new MinigptError(`--${name} must be at least ${spec.min} (got ${text})`);
  if (spec.above !== undefined && n <= spec.above) throw new MinigptError(`--${name} must be greater than ${spec.above} (got ${text})`);
  if (spec.max !== undefined && n > spec.max) throw new MinigptError(`--${name} must be at most ${spec.max} (got ${text})`);
  return n;
}

export function parseFlags(argv: string[], flags: FlagSpecs, allowPositionals = false): { values: FlagValues; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(flags)) {
    options[name] = { type: spec.type === 'boolean' ? 'boolean' : 'string', ...(spec.short ? { short: spec.short } : {}), ...(spec.repeatable ? { multiple: true } : {}) };
  }
  options.help = { type: 'boolean', short: 'h' };
  options.debug = { type: 'boolean' };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    if (unknown) {
      const near = unknown[1]!.startsWith('--') ? likelyName(unknown[1]!.slice(2), Object.keys(flags)) : undefined;
      throw new MinigptError(`unknown flag ${unknown[1]}${near ? ` (did you mean --${near}?)` : ''} (see --help)`);
    }
    const missing = /Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument missing/.exec(msg);
    if (missing) throw new MinigptError(`${missing[1]} needs a value`);
    const ambiguous = /Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/.exec(msg);
    if (ambiguous) throw new MinigptError(`${ambiguous[1]}: a value that starts with "-" must be written as ${ambiguous[1]}=VALUE`);
    const boolValue = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(msg);
    if (boolValue) throw new MinigptError(`${boolValue[1]} is a switch and takes no value`);
    throw new MinigptError(msg.split('\n')[0]);
  }
  if (!allowPositionals && parsed.positionals.length > 0) {
    throw new MinigptError(`unexpected argument "${parsed.positionals[0]}" (flags start with --; see --help)`);
  }
  const values: FlagValues = {};
  for (const [name, spec] of Object.entries(flags)) {
    const raw = (parsed.values as Record<string, string | boolean | string[] | undefined>)[name];
    values[name] = raw === undefined ? spec.default : Array.isArray(raw) ? raw.map((r) => convert(name, spec, r) as string) : convert(name, spec, raw);
  }
  values.help = parsed.values.help as boolean | undefined;
  values.debug = parsed.values.debug as boolean | undefined;
  return { values, positionals: parsed.positionals };
}

/** "default: X" for --help, or '' where there is nothing worth showing (switches, empty strings). */
function formatDefault(s: FlagSpec): string {
  if (s.default === undefined || s.type === 'boolean' || s.default === '') return '';
  const text = String(s.default);
  return `default: ${/\s|^$/.test(text) ? JSON.stringify(text) : text}`;
}

export function formatHelp(cmd: CommandSpec): string {
  const lines = [`${cmd.summary}`, '', `Usage: ${cmd.usage}`, '', 'Options:'];
  const rows: [string, string][] = Object.entries(cmd.flags).map(([name, s]) => {
    const left = `  ${s.short ? `-${s.short}, ` : ''}--${name}${s.type === 'boolean' ? '' : ` ${s.value ?? (s.type === 'string' ? 'S' : 'N')}`}`;
    const extra = [s.choices ? `one of ${s.choices.join('|')}` : '', formatDefault(s), s.repeatable ? 'may be given more than once' : ''].filter(Boolean).join('; ');
    // One parenthesis, not two: "temperature (0: greedy; default: 0.8)".
    const description = !extra ? s.description : s.description.endsWith(')') ? `${s.description.slice(0, -1)}; ${extra})` : `${s.description} (${extra})`;
    return [left, description];
  });
  rows.push(['  -h, --help', 'show this help'], ['  --debug', 'show stack traces of internal errors']);
  const width = Math.min(34, Math.max(...rows.map(([l]) => l.length)) + 2);
  for (const [l, r] of rows) lines.push(l.length >= width ? `${l}\n${' '.repeat(width)}${r}` : l.padEnd(width) + r);
  if (cmd.details) lines.push('', cmd.details.trimEnd());
  return lines.join('\n');
}


/** Text flags shared by commands that read training text. */
export const TEXT_FLAGS: FlagSpecs = {
  'text-field': { type: 'string', value: 'NAME', description: 'field holding the text in JSONL records', default: 'text' },
  clean: { type: 'string', value: 'STEPS', description: `cleaning steps to apply, comma-separated from ${Object.keys(CLEAN_STEP_NAMES).join(',')}, or none`, default: DEFAULT_CLEAN_STEPS },
  'invalid-utf8': { type: 'string', choices: ['error', 'replace'], description: 'invalid UTF-8 in the data: stop with an error, or replace it and warn', default: 'error' },
};

/** --clean "nfc,lowercase" -> CleanOptions with exactly those steps on. */
export function cleanOptionsFromFlag(value: string): Record<(typeof CLEAN_STEP_NAMES)[keyof typeof CLEAN_STEP_NAMES], boolean> {
  const on = value.trim() === 'none' ? [] : value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const step of on) {
    if (!(step in CLEAN_STEP_NAMES)) throw new MinigptError(`--clean: unknown step "${step}"; choose from ${Object.keys(CLEAN_STEP_NAMES).join(', ')}, or none`);
  }
  return Object.fromEntries(Object.entries(CLEAN_STEP_NAMES).map(([flag, key]) => [key, on.includes(flag)])) as Record<(typeof CLEAN_STEP_NAMES)[keyof typeof CLEAN_STEP_NAMES], boolean>;
}

/** Where to compute: shared by every command that runs a model. */
export const BACKEND_FLAGS: FlagSpecs = {
  backend: { type: 'string', choices: BACKEND_NAMES, description: 'where to compute (auto: the fastest available)', default: 'auto' },
  threads: { type: 'int', min: 1, value: 'N', description: 'threads for the cpu backend (default: all cores; at most 4 per core, or 8 on smaller machines)' },
};

/** The model-shape flags every model-building command shares: config names in kebab-case. */
export const MODEL_FLAGS: FlagSpecs = {
  'vocab-size': { type: 'int', min: 1, value: 'N', description: 'vocabulary size (default: the tokenizer\'s)' },
  'd-model': { type: 'int', min: 1, value: 'N', description: 'width of the residual stream', default: 128 },
  'n-heads': { type: 'int', min: 1, value: 'N', description: 'attention heads', default: 8 },
  'n-kv-heads': { type: 'int', min: 1, value: 'N', description: 'key/value heads for grouped-query attention (default: n-heads)' },
  'n-layers': { type: 'int', min: 1, value: 'N', description: 'transformer blocks', default: 6 },
  context: { type: 'int', min: 1, value: 'N', description: 'longest sequence the model accepts', default: 256 },
  mlp: { type: 'string', choices: MLP_KINDS, description: 'MLP kind', default: 'swiglu' },
  'intermediate-size': { type: 'int', min: 1, value: 'N', description: 'MLP hidden width (default: 8/3·d rounded up to 32 for swiglu, 4·d for gelu)' },
  'rms-norm-eps': { type: 'number', above: 0, value: 'X', description: 'RMSNorm epsilon', default: 1e-5 },
  'rope-theta': { type: 'number', above: 1, value: 'X', description: 'RoPE base', default: 10000 },
  'tie-embeddings': { type: 'boolean', description: 'share the embedding and LM-head weights' },
  'qkv-bias': { type: 'boolean', description: 'add a bias to the q, k and v projections (as Qwen2)' },
  dropout: { type: 'number', min: 0, value: 'P', description: 'dropout on embeddings and residual branches while training', default: 0 },
  init: { type: 'string', choices: INIT_STRATEGIES, description: 'weight init', default: 'gpt2' },
};

/** A model setting as the CLI's flag that sets it: n_heads -> "--n-heads" (for resolveConfig's messages). */
export const flagName = (key: keyof ModelConfig): string => `--${key.replace(/_/g, '-')}`;

/** Model config fields from parsed model flags (vocab_size left to the caller when absent). */
export function modelConfigFromFlags(v: FlagValues): Partial<ModelConfig> {
  return {
    vocab_size: v['vocab-size'] as number | undefined,
    d_model: v['d-model'] as number,
    n_heads: v['n-heads'] as number,
    n_kv_heads: v['n-kv-heads'] as number | undefined,
    n_layers: v['n-layers'] as number,
    context: v.context as number,
    mlp: v.mlp as ModelConfig['mlp'],
    intermediate_size: v['intermediate-size'] as number | undefined,
    rms_norm_eps: v['rms-norm-eps'] as number,
    rope_theta: v['rope-theta'] as number,
    tie_embeddings: v['tie-embeddings'] === undefined ? undefined : Boolean(v['tie-embeddings']),
    qkv_bias: v['qkv-bias'] === undefined ? undefined : Boolean(v['qkv-bias']),
    dropout: v.dropout as number,
    init: v.init as ModelConfig['init'],
  };
}

/**
 * The long flags written on a command line (`--name` or `--name=value`, up to a `--`), e.g. to
 * tell a flag the user gave from a default. `argv`: the arguments after the command name.
 */
export function flagsOnCommandLine(argv: string[] = process.argv.slice(3)): Set<string> {
  const end = argv.indexOf('--');
  return new Set((end < 0 ? argv : argv.slice(0, end)).filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]!));
}
