#!/usr/bin/env python3
"""Continue training a minigpt model (exported with `minigpt export --format hf`) on many
processes / GPUs with PyTorch, on minigpt's prepared token shards; writes an HF directory that
`minigpt import` reads back.

    torchrun --nproc_per_node 8 scripts/train_ddp.py --model my-model-hf --data shards/ \\
        --out my-model-hf-trained --steps 5000 --batch 16 --seq-len 1024 --lr 3e-4

Launched without torchrun it runs as one process. Process group backend: nccl when CUDA is
available, else gloo (CPU). --strategy ddp (default) replicates the model and all-reduces
gradients; --strategy fsdp shards parameters, gradients and optimizer state with FSDP2
(torch.distributed.fsdp.fully_shard), for models that do not fit one device.

Shards: llm.c's format, as `minigpt prepare` writes them: 256 little-endian int32 (magic
20240520, version 1 = uint16 tokens / 2 = uint32, token count, zeros), then the tokens.
--data is a shards directory (train_*.bin, val_*.bin) or a glob of .bin files. Each rank draws
its own random windows (seed + rank), like minigpt's sampler.

Logs one JSON object per line on rank 0: {"step", "loss", "lr", "tokens_per_s"} and, every
--eval-every steps and at the end when val shards exist, {"step", "val_loss"}.
"""
import argparse
import glob
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

MAGIC = 20240520
HEADER_INTS = 256
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or header[0] != MAGIC:
        raise SystemExit(f"{path}: not a token shard (magic {header[0] if header.size else None}, expected {MAGIC})")
    version, count = int(header[1]), int(header[2])
    if version not in (1, 2):
        raise SystemExit(f"{path}: unknown shard version {version} (1 = uint16, 2 = uint32)")
    dtype = "<u2" if version == 1 else "<u4"
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(count,))


def shard_paths(data, split):
    if os.path.isdir(data):
        return sorted(glob.glob(os.path.join(data, f"{split}_*.bin")))
    return sorted(glob.glob(data)) if split == "train" else []


class Windows:
    """Random (seq_len + 1)-token windows from a set of shards."""

    def __init__(self, paths, seq_len, seed):
        self.shards = [s for s in (read_shard(p) for p in paths) if len(s) > seq_len + 1]
        if not self.shards:
            raise SystemExit(f"no shard has more than {seq_len + 1} tokens: {paths}")
        sizes = np.array([len(s) - seq_len - 1 for s in self.shards], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def batch(self, batch):
        rows = []
        for _ in range(batch):
            s = self.shards[self.rng.choice(len(self.shards), p=self.weights)]
            start = int(self.rng.integers(0, len(s) - self.seq_len - 1))
            rows.append(np.asarray(s[start:start + self.seq_len + 1], dtype=np.int64))
        w = torch.from_numpy(np.stack(rows))
        return w[:, :-1], w[:, 1:]


def check_shards_match_model(data, model_dir, vocab):
    """meta.json (minigpt prepare) names the tokenizer the shards were made with: it must be the model's."""
    meta_path = os.path.join(data, "meta.json") if os.path.isdir(data) else None
    if not meta_path or not os.path.exists(meta_path):
        return
    meta = json.load(open(meta_path, encoding="utf-8"))
    if int(meta.get("vocab_size", 0)) > vocab:
        raise SystemExit(f"{meta_path}: the shards' vocabulary ({meta['vocab_size']}) is larger than the model's ({vocab})")
    tok = meta.get("tokenizer") or {}
    try:
        hf_tok = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
        hf_kind = json.load(open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8")).get("minigpt_tokenizer")
    except FileNotFoundError:
        return
    kind = tok.get("type")
    if kind and hf_kind and kind != hf_kind:
        raise SystemExit(f"the shards were made with a {kind} tokenizer, the model uses {hf_kind}: prepare the shards with the model's tokenizer")
    if kind == "char":
        want = list(tok.get("vocab", [])) + ([tok["unk"]] if tok.get("unk") else [])
        have = [t for t, _ in sorted(hf_tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
        if want != have:
            raise SystemExit("the shards' character vocabulary differs from the model's: prepare the shards with the model's tokenizer")
    if kind == "bpe":
        # minigpt's merges are "id id" pairs; the HF export's are the two pieces' byte-level strings.
        ids = hf_tok["model"]["vocab"]
        pairs = [m.split(" ") if isinstance(m, str) else m for m in hf_tok["model"].get("merges", [])]
        model_merges = [f"{ids.get(left)} {ids.get(right)}" for left, right in pairs]
        shard_merges = [str(m) for m in tok.get("merges", [])]
        if shard_merges != model_merges:
            differ = next((i for i, (a, b) in enumerate(zip(shard_merges, model_merges)) if a != b), min(len(shard_merges), len(model_merges)))
            raise SystemExit(f"the shards' BPE merges differ from the model's (first at merge {differ} of {len(shard_merges)} / {len(model_merges)}): "
                             "prepare the shards with the model's tokenizer")


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF model directory (minigpt export --format hf)")
    p.add_argument("--data", required=True, help="shards directory (train_*.bin, val_*.bin) or a glob of .bin files")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8, help="sequences per process per step")
    p.add_argument("--seq-len", type=int, default=None, help="default: the model's max_position_embeddings")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=None, help="default: lr / 10")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast on CUDA")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--dist-timeout", type=int, default=1800, help="seconds a collective may wait before failing")
    args = p.parse_args()
    if args.min_lr is None:
        args.min_lr = args.lr / 10

    from transformers import AutoModelForCausalLM

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    backend = args.backend if args.backend != "auto" else ("nccl" if cuda else "gloo")
    if distributed:
        from datetime import timedelta
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=args.dist_timeout))
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)
    log = (lambda o: print(json.dumps(o), flush=True)) if rank == 0 else (lambda o: None)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device)
    model.config.use_cache = False
    seq_len = args.seq_len or model.config.max_position_embeddings
    vocab = model.config.vocab_size

    if args.strategy == "fsdp" and distributed:
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        train_model = model
    elif distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[local_rank] if cuda else None)
    else:
        train_model = model

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    check_shards_match_model(args.data, args.model, vocab)
    train = Windows(shard_paths(args.data, "train"), seq_len, args.seed + rank)
    val_paths = shard_paths(args.data, "val")
    log({"event": "start", "world_size": world, "backend": backend if distributed else None, "strategy": args.strategy if distributed else "single",
         "device": str(device), "params": sum(p.numel() for p in model.parameters()), "seq_len": seq_len})

    def loss_of(x, y):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda and args.amp == "bf16"):
            logits = train_model(input_ids=x).logits
        return F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))

    def mean_over_ranks(value):
        t = torch.tensor([value], dtype=torch.float64, device=device)
        if distributed:
            dist.all_reduce(t)
        return t.item() / world

    def evaluate():
        if not val_paths:
            return None
        windows = Windows(val_paths, seq_len, 10_000 + rank)
        train_model.eval()
        total = 0.0
        with torch.no_grad():
            for _ in range(args.eval_batches):
                x, y = windows.batch(args.batch)
                total += loss_of(x.to(device), y.to(device)).item()
        train_model.train()
        return mean_over_ranks(total / args.eval_batches)

    train_model.train()
    t0 = time.time()
    for step in range(args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = train.batch(args.batch)
        loss = loss_of(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        # Logged steps count the updates done, from 1, as minigpt's metrics.jsonl does.
        if (step + 1) % args.log_every == 0 or step == 0 or step == args.steps - 1:
            mean = mean_over_ranks(loss.item())
            dt = time.time() - t0
            log({"step": step + 1, "loss": mean, "lr": lr, "tokens_per_s": (step + 1) * args.batch * seq_len * world / max(dt, 1e-9)})
        if args.eval_every and (step + 1) % args.eval_every == 0 and step != args.steps - 1:
            v = evaluate()
            if v is not None:
                log({"step": step + 1, "val_loss": v})
    v = evaluate()
    if v is not None:
        log({"step": args.steps, "val_loss": v})

    # Gather the full weights (a collective with FSDP), leave the process group, then rank 0
    # saves: no collective waits on the (slow) save, so no rank can time out behind it.
    if args.strategy == "fsdp" and distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        tmp = args.out.rstrip("/") + f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.config.use_cache = True
        if args.strategy == "fsdp" and distributed:
            # The FSDP-wrapped module holds DTensors; save from a plain copy of the model.
            plain = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
            plain.load_state_dict(state)
            plain.save_pretrained(tmp, safe_serialization=True)
        else:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        for f in TOKENIZER_FILES:
            src = os.path.join(args.model, f)
            if os.path.exists(src) and (f != "generation_config.json" or not os.path.exists(os.path.join(tmp, f))):
                shutil.copy(src, os.path.join(tmp, f))
        shutil.rmtree(args.out, ignore_errors=True)
        os.replace(tmp, args.out)
        log({"event": "saved", "out": args.out})


if __name__ == "__main__":
    main()
    # Done, and the output is written: end here, without Python's shutdown. torch's C++ side still
    # holds the gloo process group after destroy_process_group; destroyed in the shutdown, its
    # worker thread can wait for the GIL the shutdown holds (the rank hangs) or abort the rank,
    # and torchrun then kills the others and fails the job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
