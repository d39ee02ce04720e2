#!/usr/bin/env python3
"""Writes the reference fixtures test/fixtures/model-*.safetensors (dev-only tool).

Each file holds a tiny LLaMA-style model in Hugging Face layout, a batch of
tokens, and what PyTorch says the TypeScript code must reproduce: logits, loss,
every gradient, the pre-clip gradient norm and the weights after one clipped
AdamW step. The model is written here in plain torch (no transformers) so the
conventions being tested are visible in one place.

Usage: .venv/bin/python scripts/make-fixtures.py [--out test/fixtures]
"""
import argparse
import json
import math
import os
import struct

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

BASE = dict(vocab_size=13, d_model=16, n_heads=4, n_layers=2, context=16,
            rms_norm_eps=1e-5, rope_theta=10000.0, batch=2, seq=8,
            lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)

# name -> (seed, overrides). Seeds are fixed so reruns give byte-identical files.
CASES = {
    'model-swiglu':      (1, dict(mlp='swiglu', intermediate_size=24, n_kv_heads=4, tie_embeddings=False)),
    'model-swiglu-tied': (2, dict(mlp='swiglu', intermediate_size=24, n_kv_heads=4, tie_embeddings=True)),
    'model-gelu':        (3, dict(mlp='gelu', intermediate_size=64, n_kv_heads=4, tie_embeddings=False)),
    'model-gelu-tied':   (4, dict(mlp='gelu', intermediate_size=64, n_kv_heads=4, tie_embeddings=True)),
    'model-gqa':         (5, dict(mlp='swiglu', intermediate_size=24, n_kv_heads=2, tie_embeddings=False)),
    'model-mqa':         (6, dict(mlp='swiglu', intermediate_size=24, n_kv_heads=1, tie_embeddings=True)),
    'model-qkv-bias':    (7, dict(mlp='swiglu', intermediate_size=24, n_kv_heads=2, tie_embeddings=True, qkv_bias=True)),
}


def param_shapes(c):
    """HF tensor names and [out, in] shapes, in the order they are drawn from the RNG."""
    V, C, hd = c['vocab_size'], c['d_model'], c['d_model'] // c['n_heads']
    Fi = c['intermediate_size']
    shapes = {'model.embed_tokens.weight': [V, C]}
    for l in range(c['n_layers']):
        p = f'model.layers.{l}.'
        shapes[p + 'input_layernorm.weight'] = [C]
        shapes[p + 'self_attn.q_proj.weight'] = [c['n_heads'] * hd, C]
        shapes[p + 'self_attn.k_proj.weight'] = [c['n_kv_heads'] * hd, C]
        shapes[p + 'self_attn.v_proj.weight'] = [c['n_kv_heads'] * hd, C]
        if c.get('qkv_bias'):
            shapes[p + 'self_attn.q_proj.bias'] = [c['n_heads'] * hd]
            shapes[p + 'self_attn.k_proj.bias'] = [c['n_kv_heads'] * hd]
            shapes[p + 'self_attn.v_proj.bias'] = [c['n_kv_heads'] * hd]
        shapes[p + 'self_attn.o_proj.weight'] = [C, c['n_heads'] * hd]
        shapes[p + 'post_attention_layernorm.weight'] = [C]
        if c['mlp'] == 'swiglu':
            shapes[p + 'mlp.gate_proj.weight'] = [Fi, C]
        shapes[p + 'mlp.up_proj.weight'] = [Fi, C]
        shapes[p + 'mlp.down_proj.weight'] = [C, Fi]
    shapes['model.norm.weight'] = [C]
    if not c['tie_embeddings']:
        shapes['lm_head.weight'] = [V, C]
    return shapes


def make_inputs(c, seed):
    torch.manual_seed(seed)
    params = {}
    for name, shape in param_shapes(c).items():
        # Drawn in float32 then widened, so the stored F32 weights are exactly the ones used.
        if name.endswith('.bias'):
            w = 0.3 * torch.randn(shape, dtype=torch.float32)
        elif len(shape) == 1:
            w = 1 + 0.1 * torch.randn(shape, dtype=torch.float32)
        else:
            w = torch.randn(shape, dtype=torch.float32) * (1.0 if 'embed_tokens' in name else 0.3)
        params[name] = w.double().requires_grad_()
    ids = torch.randint(0, c['vocab_size'], (c['batch'], c['seq']))
    targets = torch.randint(0, c['vocab_size'], (c['batch'], c['seq']))
    return params, ids, targets


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_cos_sin(T, hd, theta):
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def attention_reference(q, k, v, c):
    """The path the fixtures come from: HF rotate_half RoPE, explicit mask, kv head h // group."""
    B, H, T, hd = q.shape
    cos, sin = rope_cos_sin(T, hd, c['rope_theta'])
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    kv_of = torch.arange(H) // (H // c['n_kv_heads'])
    k, v = k[:, kv_of], v[:, kv_of]
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, float('-inf')).softmax(-1) @ v


def attention_check(q, k, v, c):
    """Independent path for the self-check: RoPE as a complex rotation of the pairs
    (i, i + hd/2), repeat_interleave for the kv heads, and torch's fused SDPA."""
    B, H, T, hd = q.shape
    inv_freq = c['rope_theta'] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    rot = torch.polar(torch.ones(T, hd // 2, dtype=torch.float64), torch.outer(torch.arange(T).double(), inv_freq))

    def rope(x):
        z = torch.complex(x[..., :hd // 2], x[..., hd // 2:]) * rot
        return torch.cat([z.real, z.imag], dim=-1)

    group = H // c['n_kv_heads']
    k, v = rope(k).repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(rope(q), k, v, is_causal=True)


def forward(P, ids, c, attention=attention_reference):
    B, T = ids.shape
    H, KVH, hd, eps = c['n_heads'], c['n_kv_heads'], c['d_model'] // c['n_heads'], c['rms_norm_eps']
    x = P['model.embed_tokens.weight'][ids]
    for l in range(c['n_layers']):
        p = f'model.layers.{l}.'
        h = rms_norm(x, P[p + 'input_layernorm.weight'], eps)
        def proj(n):
            y = h @ P[p + f'self_attn.{n}_proj.weight'].T
            return y + P[p + f'self_attn.{n}_proj.bias'] if c.get('qkv_bias') else y
        q = proj('q').view(B, T, H, hd).transpose(1, 2)
        k = proj('k').view(B, T, KVH, hd).transpose(1, 2)
        v = proj('v').view(B, T, KVH, hd).transpose(1, 2)
        a = attention(q, k, v, c).transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ P[p + 'self_attn.o_proj.weight'].T
        h = rms_norm(x, P[p + 'post_attention_layernorm.weight'], eps)
        up = h @ P[p + 'mlp.up_proj.weight'].T
        if c['mlp'] == 'swiglu':
            m = F.silu(h @ P[p + 'mlp.gate_proj.weight'].T) * up
        else:
            m = F.gelu(up, approximate='tanh')
        x = x + m @ P[p + 'mlp.down_proj.weight'].T
    x = rms_norm(x, P['model.norm.weight'], eps)
    head = P['model.embed_tokens.weight'] if c['tie_embeddings'] else P['lm_head.weight']
    return x @ head.T


def make_case(name, seed, overrides):
    c = dict(BASE, **overrides)
    P, ids, targets = make_inputs(c, seed)
    logits = forward(P, ids, c)

    # Guards the attention/RoPE/GQA code against a second, independently written path.
    err = (logits - forward(P, ids, c, attention_check)).abs().max().item()
    assert err < 1e-10, f'{name}: attention self-check failed, max |diff| = {err}'

    loss = F.cross_entropy(logits.reshape(-1, c['vocab_size']), targets.reshape(-1))
    loss.backward()
    weights = {k: v.detach().clone() for k, v in P.items()}
    grads = {k: v.grad.clone() for k, v in P.items()}  # raw, pre-clip
    grad_norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values())).item()

    # Half the actual norm so clipping is really exercised, not a no-op.
    c['max_norm'] = 0.5 * grad_norm
    norm_seen = torch.nn.utils.clip_grad_norm_(list(P.values()), c['max_norm']).item()
    assert abs(norm_seen - grad_norm) < 1e-12 * grad_norm

    # LLaMA practice: no weight decay on the 1-D norm gains.
    decay = [p for p in P.values() if p.dim() >= 2]
    no_decay = [p for p in P.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': c['weight_decay']},
                             {'params': no_decay, 'weight_decay': 0.0}],
                            lr=c['lr'], betas=(c['beta1'], c['beta2']), eps=c['eps'])
    opt.step()

    f32 = lambda t: t.detach().float().contiguous()
    out = {'input_ids': ids.int().contiguous(), 'targets': targets.int().contiguous(),
           'logits': f32(logits), 'loss': f32(loss.reshape(1)),
           'grad_norm': torch.tensor([grad_norm], dtype=torch.float32)}
    for k in P:
        out['weights.' + k] = f32(weights[k])
        out['grads.' + k] = f32(grads[k])
        out['updated.' + k] = f32(P[k])
    keys = ['vocab_size', 'd_model', 'n_heads', 'n_kv_heads', 'n_layers', 'context', 'mlp',
            'intermediate_size', 'rms_norm_eps', 'rope_theta', 'tie_embeddings', 'batch', 'seq',
            'lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'max_norm']
    if c.get('qkv_bias'):
        keys.append('qkv_bias')
    meta = {'config': json.dumps({k: c[k] for k in keys}),
            'generator': 'scripts/make-fixtures.py', 'torch': torch.__version__}
    return out, meta, loss.item(), grad_norm, err


def save(tensors, path, meta):
    """save_file, then sort the metadata keys in the header: safetensors writes them in
    hash order, which would make every regeneration a spurious git diff."""
    save_file(tensors, path, metadata=meta)
    with open(path, 'r+b') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        header['__metadata__'] = dict(sorted(header['__metadata__'].items()))
        raw = json.dumps(header, separators=(',', ':')).encode()
        assert len(raw) <= n
        f.seek(8)
        f.write(raw.ljust(n, b' '))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures'))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, (seed, overrides) in CASES.items():
        tensors, meta, loss, grad_norm, err = make_case(name, seed, overrides)
        path = os.path.join(args.out, name + '.safetensors')
        save(tensors, path, meta)
        print(f'{name:18s} loss={loss:.6f} grad_norm={grad_norm:.6f} '
              f'self-check={err:.1e} {os.path.getsize(path) // 1024} KiB')


if __name__ == '__main__':
    main()
