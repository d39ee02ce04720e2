/**
 * A tiny model with a BPE tokenizer whose greedy continuation of "p" is "a" and then
 * <|endoftext|> (the tokenizer's end-of-text token: endOfTextToken), forever: for tests of
 * generation ending at the end-of-text token. `tokenizer` replaces the BPE.
 */
import { resolveConfig, type ModelConfig } from '../../src/model/config.js';
import { paramLayout } from '../../src/model/params.js';
import { endOfTextToken, makeTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';

export function endOfTextModel(tokenizer: Tokenizer = makeTokenizer('bpe', 'ab ab ab abc abc', { vocabSize: 260 })): { config: ModelConfig; weights: Float32Array; tokenizer: Tokenizer; a: number; eot: number } {
  const eot = endOfTextToken(tokenizer)![1];
  const [p, a] = [...tokenizer.encode('p'), ...tokenizer.encode('a')] as [number, number];
  const C = 16;
  const config = resolveConfig({ vocab_size: tokenizer.vocabSize, d_model: C, n_heads: 2, n_layers: 1, context: 16 });
  const layout = paramLayout(config);
  // The residual stream is the token's embedding (attention and MLP outputs zeroed), read through
  // the final norm's dims 0 and 1: "p" (dim 1) is followed by "a", every other token (dim 0) by
  // <|endoftext|>.
  const weights = new Float32Array(layout.size);
  const at = (name: string): number => layout.specs.find((s) => s.name === name)!.offset;
  for (let id = 0; id < config.vocab_size; id++) weights[at('model.embed_tokens.weight') + id * C + (id === p ? 1 : 0)] = 1;
  for (const norm of ['model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight']) weights.fill(1, at(norm), at(norm) + C);
  weights[at('model.norm.weight')] = 1;
  weights[at('model.norm.weight') + 1] = 1;
  weights[at('lm_head.weight') + a * C + 1] = 10;
  weights[at('lm_head.weight') + eot * C] = 10;
  return { config, weights, tokenizer, a, eot };
}
