/**
 * Where every parameter lives in the one flat parameter buffer, under its Hugging Face LLaMA
 * name. Weights are [out, in]. Fused projections (q|k|v, gate|up) are stacked along `out`, so
 * each Hugging Face tensor is a contiguous span: export needs no copy and no permutation.
 *
 * Matrices come first and biases and norm weights last, so weight decay (matrices only) is one span.
 */
import type { ModelConfig } from './config.js';
import { headDim } from './config.js';
import type { Rng } from '../util/random.js';

/** One parameter tensor: its name, where it starts in the flat buffer, and its shape. */
export interface ParamSpec {
  /** Hugging Face LLaMA tensor name. */
  name: string;
  /** Index of its first element in the flat parameter buffer. */
  offset: number;
  /** [out, in] for a matrix, [C] for a norm weight, [out] for a bias. */
  shape: number[];
  /** 'matrix' gets weight decay; 'norm' (an RMSNorm weight) and 'bias' do not. */
  kind: 'matrix' | 'norm' | 'bias';
  /** o_proj and down_proj write into the residual stream (the gpt2 init scales them down). */
  residualProjection: boolean;
}

export interface LayerOffsets {
  /** [(H + 2·KVH)·hd, C]: q_proj rows, then k_proj, then v_proj. */
  qkv: number;
  /** [(H + 2·KVH)·hd]: q_proj's bias, then k_proj's, then v_proj's; -1 without qkv_bias. */
  qkvBias: number;
  /** [C, H·hd]. */
  o: number;
  /** SwiGLU: [2F, C], gate_proj rows then up_proj. GELU: up_proj [F, C]. */
  mlpIn: number;
  /** [C, F]. */
  down: number;
  /** input_layernorm [C]. */
  ln1: number;
  /** post_attention_layernorm [C]. */
  ln2: number;
}

/** Where every parameter lives in the flat buffer (see the file comment). Offsets count elements. */
export interface ParamLayout {
  /** Every parameter tensor, in buffer order (a tied lm_head has no entry of its own). */
  specs: ParamSpec[];
  /** Elements in the buffer: the parameter count. */
  size: number;
  /** Parameters [0, decaySize) get weight decay; the rest (biases, norms) do not. */
  decaySize: number;
  /** Offset of embed_tokens [V, C]. */
  embed: number;
  /** Equal to `embed` when embeddings are tied. */
  lmHead: number;
  /** Offset of the final norm weight [C]. */
  norm: number;
  /** Offsets of each layer's tensors. */
  layers: LayerOffsets[];
}

/** The parameter layout for config `c`: a pure computation (no allocation), the same every call. */
export function paramLayout(c: ModelConfig): ParamLayout {
  const C = c.d_model, V = c.vocab_size, hd = headDim(c), F = c.intermediate_size;
  const qDim = c.n_heads * hd, kvDim = c.n_kv_heads * hd;
  const specs: ParamSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], kind: ParamSpec['kind'], residualProjection = false): number => {
    const at = offset;
    specs.push({ name, offset: at, shape, kind, residualProjection });
    offset += shape.reduce((a, b) => a * b, 1);
    return at;
  };

  const embed = add('model.embed_tokens.weight', [V, C], 'matrix');
  const layers: LayerOffsets[] = [];
  for (let l = 0; l < c.n_layers; l++) {
    const p = `model.layers.${l}.`;
    const qkv = add(`${p}self_attn.q_proj.weight`, [qDim, C], 'matrix');
    add(`${p}self_attn.k_proj.weight`, [kvDim, C], 'matrix');
    add(`${p}self_attn.v_proj.weight`, [kvDim, C], 'matrix');
    const o = add(`${p}self_attn.o_proj.weight`, [C, qDim], 'matrix', true);
    let mlpIn: number;
    if (c.mlp === 'swiglu') {
      mlpIn = add(`${p}mlp.gate_proj.weight`, [F, C], 'matrix');
      add(`${p}mlp.up_proj.weight`, [F, C], 'matrix');
    } else {
      mlpIn = add(`${p}mlp.up_proj.weight`, [F, C], 'matrix');
    }
    const down = add(`${p}mlp.down_proj.weight`, [C, F], 'matrix', true);
    layers.push({ qkv, qkvBias: -1, o, mlpIn, down, ln1: -1, ln2: -1 });
  }
  const lmHead = c.tie_embeddings ? embed : add('lm_head.weight', [V, C], 'matrix');
  const decaySize = offset;
  for (let l = 0; l < c.n_layers && c.qkv_bias; l++) {
    const p = `model.layers.${l}.self_attn.`;
    layers[l].qkvBias = add(`${p}q_proj.bias`, [qDim], 'bias');
    add(`${p}k_proj.bias`, [kvDim], 'bias');
    add(`${p}v_proj.bias`, [kvDim], 'bias');
  }
  for (let l = 0; l < c.n_layers; l++) {
    layers[l].ln1 = add(`model.layers.${l}.input_layernorm.weight`, [C], 'norm');
    layers[l].ln2 = add(`model.layers.${l}.post_attention_layernorm.weight`, [C], 'norm');
  }
  const norm = add('model.norm.weight', [C], 'norm');
  return { specs, size: offset, decaySize, embed, lmHead, norm, layers };
}

/** Number of parameters of config `c` (elements of the flat buffer); tied embeddings count once. */
export function countParams(c: ModelConfig): number {
  return paramLayout(c).size;
}

/**
 * Fresh weights for `c.init`, as a host array laid out like the parameter buffer. Norm weights
 * start at 1, biases at 0. Other strategies follow torch.nn.init on each weight's [out, in] shape
 * (fan_in = in, fan_out = out); `gpt2` is N(0, 0.02) with residual projections scaled by
 * 1/sqrt(2·n_layers), as in GPT-2 and nanoGPT.
 */
export function initialWeights(c: ModelConfig, layout: ParamLayout, rng: Rng): Float32Array {
  const w = new Float32Array(layout.size);
  for (const s of layout.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const view = w.subarray(s.offset, s.offset + n);
    if (s.kind === 'norm') {
      view.fill(1);
      continue;
    }
    if (s.kind === 'bias') continue;
    const [fanOut, fanIn] = s.shape;
    switch (c.init) {
      case 'xavier-uniform': {
        const a = Math.sqrt(6 / (fanIn + fanOut));
        for (let i = 0; i < n; i++) view[i] = (2 * rng.next() - 1) * a;
        break;
      }
      case 'xavier-normal':
        fillNormal(view, Math.sqrt(2 / (fanIn + fanOut)), rng);
        break;
      case 'kaiming-normal':
        fillNormal(view, Math.sqrt(2 / fanIn), rng);
        break;
      case 'gpt2':
        fillNormal(view, s.residualProjection ? 0.02 / Math.sqrt(2 * c.n_layers) : 0.02, rng);
        break;
    }
  }
  return w;
}

function fillNormal(a: Float32Array, std: number, rng: Rng): void {
  rng.fillNormal(a, std);
}
