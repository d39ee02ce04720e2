"""PyTorch baseline for `minigpt bench`: the same LLaMA-style model, configs and step (fp32,
AdamW, SDPA attention), timed the same way. Dev-only; run through bench/compare-torch.mjs.

  .venv/bin/python bench/torch_train.py --config seed [--compile] [--threads 2] [--steps 10] [--device cuda] [--sample-tokens 128]
On CUDA the matmuls run in plain fp32 (TF32 off, PyTorch's default), the same arithmetic as the
webgpu backend, unless --tf32 is given. Prints one JSON line: {"config", "tokens_per_second", "ms_per_step", ...}.
Sampling is timed as `minigpt bench` times it: batch 1, a 16-token prompt, then one token at a time
through a KV cache (preallocated, SDPA over the filled part), logits of each new token; the median
of 5 rounds ("sample_tokens_per_second").
"""
import argparse, json, math, time, resource
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {  # must match BENCH_CONFIGS in src/bench.ts
    "seed": dict(vocab=65, d=128, heads=8, layers=6, ctx=256, batch=16),
    "nanogpt-cpu": dict(vocab=65, d=128, heads=4, layers=4, ctx=64, batch=12),
    "medium": dict(vocab=65, d=384, heads=6, layers=6, ctx=256, batch=8),
    "bpe": dict(vocab=50257, d=128, heads=8, layers=6, ctx=256, batch=8),
    "gpt2-small": dict(vocab=50257, d=768, heads=12, layers=12, ctx=1024, batch=4),
}


def swiglu_hidden(d):
    return 32 * math.ceil((8 * d // 3) / 32)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.ln1, self.ln2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # q|k|v fused, like minigpt's layout
        self.o = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.ln2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)

    def decode(self, x, cos, sin, cache, pos):
        """x: [1, T, C] new tokens at positions pos.. pos+T-1; cache: (k, v) of [1, heads, ctx, hd]."""
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        cache[0][:, :, pos:pos + T] = k
        cache[1][:, :, pos:pos + T] = v
        keys, values = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]
        a = F.scaled_dot_product_attention(q, keys, values, is_causal=T > 1)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.ln2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["d"], c["d"] // c["heads"]
        self.embed = nn.Embedding(c["vocab"], d)
        self.blocks = nn.ModuleList(Block(d, c["heads"], swiglu_hidden(d)) for _ in range(c["layers"]))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.lm_head = nn.Linear(d, c["vocab"], bias=False)
        inv = 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(c["ctx"]).float(), inv)
        self.register_buffer("cos", torch.cat((ang, ang), -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat((ang, ang), -1).sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.embed(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def decode(self, idx, caches, pos):
        """Logits of the last of the new tokens idx [1, T] at positions pos.., filling the KV caches."""
        T = idx.shape[1]
        x = self.embed(idx)
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        for b, cache in zip(self.blocks, caches):
            x = b.decode(x, cos, sin, cache, pos)
        return self.lm_head(self.norm(x[:, -1]))


def sample_tokens_per_second(model, c, dev, tokens, rounds=5):
    """Median over rounds of tokens/s for one-token KV-cache steps after a 16-token prompt (as src/bench.ts)."""
    hd = c["d"] // c["heads"]
    rates = []
    with torch.inference_mode():
        for _ in range(rounds):
            caches = [(torch.zeros(1, c["heads"], c["ctx"], hd, device=dev), torch.zeros(1, c["heads"], c["ctx"], hd, device=dev)) for _ in model.blocks]
            prompt = torch.arange(16, device=dev).remainder(c["vocab"]).view(1, 16)
            model.decode(prompt, caches, 0).cpu()
            t0 = time.perf_counter()
            for i in range(tokens):
                tok = torch.tensor([[i % c["vocab"]]], device=dev)
                model.decode(tok, caches, 16 + i).cpu()  # the logits reach the host, as minigpt reads them
            rates.append(tokens / (time.perf_counter() - t0))
    rates.sort()
    return rates[len(rates) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="seed", choices=CONFIGS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 tensor-core matmuls")
    ap.add_argument("--sync-every", type=int, default=1, help="loss.item() every N steps (1: every step)")
    ap.add_argument("--sample-tokens", type=int, default=128, help="tokens per sampling round (capped at context - 16; 0: skip)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = CONFIGS[a.config]
    model = Model(c).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    fwd = torch.compile(model) if a.compile else model
    B, T = c["batch"], c["ctx"]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(i):
        idx = torch.randint(0, c["vocab"], (B, T), device=dev)
        tgt = torch.randint(0, c["vocab"], (B, T), device=dev)
        loss = fwd(idx, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (i + 1) % a.sync_every == 0:
            loss.item()

    for i in range(a.warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(i)
    sync()
    dt = time.perf_counter() - t0
    sample_tokens = min(a.sample_tokens, c["ctx"] - 16)
    sample_rate = sample_tokens_per_second(model, c, dev, sample_tokens) if sample_tokens > 0 else None
    config = torch.__config__.show()
    blas = "MKL" if "MKL" in config else ("OpenBLAS" if "OpenBLAS" in config or "openblas" in config else "unknown")
    extra = {}
    if dev.type == "cuda":
        extra = {"device_name": torch.cuda.get_device_name(dev), "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20, "tf32": a.tf32}
    print(json.dumps({
        **extra, "device": dev.type,
        "config": a.config, "compiled": a.compile, "tokens_per_second": a.steps * B * T / dt, "ms_per_step": 1000 * dt / a.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__, "blas": blas,
        "threads": torch.get_num_threads(), "sync_every": a.sync_every, "parameters": sum(p.numel() for p in model.parameters()),
        "sample_tokens_per_second": sample_rate,
    }))


if __name__ == "__main__":
    main()
