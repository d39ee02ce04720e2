import { MinigptError, check, likelyName, shownValue } from '../errors.js';

/** The MLP block: LLaMA's gated SwiGLU, or a plain GELU (tanh approximation) MLP. */
export type MlpKind = 'swiglu' | 'gelu';
/** How initialWeights draws the matrices (see initialWeights). */
export type InitStrategy = 'xavier-uniform' | 'xavier-normal' | 'kaiming-normal' | 'gpt2';

export const MLP_KINDS: readonly MlpKind[] = ['swiglu', 'gelu'];
export const INIT_STRATEGIES: readonly InitStrategy[] = ['xavier-uniform', 'xavier-normal', 'kaiming-normal', 'gpt2'];

/** The model's shape and numerics. Names are snake_case as in config.json; CLI flags are their kebab-case. */
export interface ModelConfig {
  /** Tokens in the vocabulary: rows of embed_tokens and lm_head. */
  vocab_size: number;
  /** Width of the residual stream (C). */
  d_model: number;
  /** Query heads; the head size d_model / n_heads must be even (RoPE). */
  n_heads: number;
  /** Grouped-query attention: key/value heads, dividing n_heads. Equal to n_heads is plain multi-head. */
  n_kv_heads: number;
  /** Transformer blocks. */
  n_layers: number;
  /** Longest sequence the model accepts (RoPE tables and buffers are sized for it). */
  context: number;
  mlp: MlpKind;
  /** MLP hidden width: SwiGLU defaults to 8/3·d_model rounded up to a multiple of 32, GELU to 4·d_model. */
  intermediate_size: number;
  /** Added to mean(x²) in every RMSNorm. */
  rms_norm_eps: number;
  /** RoPE base: position p rotates pair i of a head by p·rope_theta^(-2i/headDim). */
  rope_theta: number;
  /** lm_head shares embed_tokens' weights (no lm_head.weight of its own). */
  tie_embeddings: boolean;
  /** The q, k and v projections add a bias (Qwen2's attention; o_proj and the MLP have none). */
  qkv_bias: boolean;
  /** Dropout on the embedding output and each residual branch, during training only. */
  dropout: number;
  /** How fresh weights are drawn (initialWeights). */
  init: InitStrategy;
}

/** What resolveConfig fills in; n_kv_heads defaults to n_heads, intermediate_size to defaultIntermediateSize. */
export const DEFAULT_CONFIG: Omit<ModelConfig, 'vocab_size' | 'n_kv_heads' | 'intermediate_size'> = {
  d_model: 128,
  n_heads: 8,
  n_layers: 6,
  context: 256,
  mlp: 'swiglu',
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_embeddings: false,
  qkv_bias: false,
  dropout: 0,
  init: 'gpt2',
};

/** LLaMA's rule: 2/3 of 4·d_model, rounded up to a multiple of 32. d_model 128 -> 352. */
export function defaultIntermediateSize(dModel: number, mlp: MlpKind): number {
  if (mlp === 'gelu') return 4 * dModel;
  return 32 * Math.ceil(Math.floor((8 * dModel) / 3) / 32);
}

/**
 * How a validation message names a setting: by default its config name ("n_heads"), as a library
 * caller and config.json spell it; the CLI passes one that gives its flag ("--n-heads").
 */
export type SettingName = (key: keyof ModelConfig) => string;
const configName: SettingName = (key) => key;

/**
 * Fills defaults and validates; every violation is a MinigptError naming the setting (by
 * `opts.name`: its config name unless given).
 */
export function resolveConfig(partial: Partial<ModelConfig> & { vocab_size: number }, opts: { name?: SettingName } = {}): ModelConfig {
  const name = opts.name ?? configName;
  checkConfigKeys(partial);
  const base = { ...DEFAULT_CONFIG, ...stripUndefined(partial) };
  const mlp = base.mlp;
  check(MLP_KINDS.includes(mlp), `${name('mlp')} must be one of ${MLP_KINDS.join(', ')} (got ${shownValue(mlp)})`);
  const config: ModelConfig = {
    ...base,
    n_kv_heads: partial.n_kv_heads ?? base.n_heads,
    intermediate_size: partial.intermediate_size ?? defaultIntermediateSize(base.d_model, mlp),
  } as ModelConfig;
  validateConfig(config, name);
  return config;
}

/** The fields of a ModelConfig. */
export const CONFIG_KEYS: readonly (keyof ModelConfig)[] = [
  'vocab_size', 'd_model', 'n_heads', 'n_kv_heads', 'n_layers', 'context', 'mlp', 'intermediate_size',
  'rms_norm_eps', 'rope_theta', 'tie_embeddings', 'qkv_bias', 'dropout', 'init',
];

/** Fields a config.json written before they existed lacks, with the value that file meant. */
const LATER_KEYS: Partial<ModelConfig> = { qkv_bias: false };

/**
 * A field a config does not have is an error, not ignored: from plain JavaScript, { dmodel: 16 }
 * would otherwise train the default 128-wide model and save the stray key in config.json.
 */
function checkConfigKeys(partial: object): void {
  check(typeof partial === 'object' && partial !== null && !Array.isArray(partial), () => `the model settings must be an object such as { d_model: 128 } (got ${shownValue(partial)})`);
  for (const key of Object.keys(partial)) {
    if ((CONFIG_KEYS as readonly string[]).includes(key)) continue;
    const near = likelyName(key, CONFIG_KEYS);
    throw new MinigptError(`unknown model setting "${key}"${near ? ` (did you mean "${near}"?)` : ''}; the settings are ${CONFIG_KEYS.join(', ')}`);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Largest size a config field may have; past it no backend here could hold the tensors anyway. */
const MAX_DIM = 1 << 24;
/** Largest parameter count (f32: 8 GiB; the cpu backend's wasm memory holds 4 GiB in all). */
const MAX_PARAMS = 2 ** 31;

function positiveInt(name: string, v: unknown): void {
  check(Number.isInteger(v) && (v as number) > 0, `${name} must be a positive integer (got ${shownValue(v)})`);
  check((v as number) <= MAX_DIM, `${name} must be at most ${MAX_DIM} (got ${shownValue(v)})`);
}

/** Checks a whole config; a MinigptError names the setting by `name` (its config name by default). */
export function validateConfig(c: ModelConfig, name: SettingName = configName): void {
  for (const k of ['vocab_size', 'd_model', 'n_heads', 'n_kv_heads', 'n_layers', 'context', 'intermediate_size'] as const) {
    positiveInt(name(k), c[k]);
  }
  const hd = c.d_model / c.n_heads;
  const perLayer = (c.d_model + (c.qkv_bias ? 1 : 0)) * (c.n_heads + 2 * c.n_kv_heads) * hd + c.d_model * c.d_model + (c.mlp === 'swiglu' ? 3 : 2) * c.d_model * c.intermediate_size;
  const params = c.vocab_size * c.d_model * (c.tie_embeddings ? 1 : 2) + c.n_layers * perLayer;
  check(params <= MAX_PARAMS, `this config has about ${params.toExponential(2)} parameters, more than the ${MAX_PARAMS} this toolkit can hold; use a smaller ${name('d_model')}, ${name('n_layers')} or ${name('vocab_size')}`);
  check(c.d_model % c.n_heads === 0, `${name('n_heads')} (${c.n_heads}) must divide ${name('d_model')} (${c.d_model})`);
  check((c.d_model / c.n_heads) % 2 === 0, `head size d_model/n_heads = ${c.d_model / c.n_heads} must be even for RoPE`);
  check(c.n_heads % c.n_kv_heads === 0, `${name('n_kv_heads')} (${c.n_kv_heads}) must divide ${name('n_heads')} (${c.n_heads})`);
  check(MLP_KINDS.includes(c.mlp), `${name('mlp')} must be one of ${MLP_KINDS.join(', ')} (got ${shownValue(c.mlp)})`);
  check(INIT_STRATEGIES.includes(c.init), `${name('init')} must be one of ${INIT_STRATEGIES.join(', ')} (got ${shownValue(c.init)})`);
  check(typeof c.rms_norm_eps === 'number' && c.rms_norm_eps > 0 && c.rms_norm_eps < 1, `${name('rms_norm_eps')} must be in (0, 1) (got ${c.rms_norm_eps})`);
  check(typeof c.rope_theta === 'number' && c.rope_theta > 1, `${name('rope_theta')} must be greater than 1 (got ${c.rope_theta})`);
  check(typeof c.dropout === 'number' && c.dropout >= 0 && c.dropout < 1, `${name('dropout')} must be in [0, 1) (got ${c.dropout})`);
  check(typeof c.tie_embeddings === 'boolean', `${name('tie_embeddings')} must be true or false (got ${shownValue(c.tie_embeddings)})`);
  check(typeof c.qkv_bias === 'boolean', `${name('qkv_bias')} must be true or false (got ${shownValue(c.qkv_bias)})`);
}

/** Reads a config.json object strictly: missing fields are errors, not silent defaults (but for
 * LATER_KEYS, which files written before them lack). */
export function configFromJson(json: unknown, source: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new MinigptError(`${source}: expected a JSON object with the model config`);
  }
  const o = json as Record<string, unknown>;
  const keys = CONFIG_KEYS;
  for (const k of keys) check(k in o || k in LATER_KEYS, `${source}: missing "${k}"`);
  const config = Object.fromEntries(keys.map((k) => [k, k in o ? o[k] : LATER_KEYS[k]])) as unknown as ModelConfig;
  try {
    validateConfig(config);
  } catch (e) {
    if (e instanceof MinigptError) throw new MinigptError(`${source}: ${e.message}`);
    throw e;
  }
  return config;
}

export const headDim = (c: ModelConfig): number => c.d_model / c.n_heads;
/** Width of the fused q|k|v projection output. */
export const qkvDim = (c: ModelConfig): number => (c.n_heads + 2 * c.n_kv_heads) * headDim(c);
