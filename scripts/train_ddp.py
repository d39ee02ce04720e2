#!/usr/bin/env python3
"""Continue training a minigpt model (exported with `minigpt export --format hf`) on many
processes / GPUs with PyTorch, on minigpt's prepared token shards; writes an HF directory that
`minigpt import` reads back.

    torchrun --nproc_per_node 8 scripts/train_ddp.py --model my-model-hf --data shards/ \\
        --out my-model-hf-trained --steps 5000 --batch 16 --seq-len 1024 --lr 3e-4

Launched without torchrun it runs as one process. Process group backend: nccl when CUDA is
available, else gloo (CPU). --strategy ddp (default) replicates the model and all-reduces
gradients; --strategy fsdp shards parameters, gradients and optimizer state with FSDP2
(torch.distributed.fsdp.fully_shard), for models that do not fit one device. --accum N
accumulates N micro-batches per step, reducing gradients across ranks once per step.

Shards: llm.c's format, as `minigpt prepare` writes them: 256 little-endian int32 (magic
20240520, version 1 = uint16 tokens / 2 = uint32, token count, zeros), then the tokens.
--data is a shards directory (train_*.bin, val_*.bin) or a glob of .bin files (those named
val_*.bin, *_val_*.bin or *_val.bin are the validation set). Each rank draws its own random
windows (seed + rank), like minigpt's sampler. The learning rate follows minigpt's schedule
(warmup, then cosine to --min-lr).

Checked before the process group starts, so a mistake ends the job at once in one line: the
flags' values, the model folder, --seq-len against its context, --out (a folder that holds files
needs --force; one that is or holds the model or the shards is refused), the shards and their
meta.json against the model's tokenizer. --out is written at the end, every --save-every steps
and when the run is stopped (Ctrl-C, SIGTERM, SIGHUP or SIGUSR1: every rank finishes its step,
they gather the state, rank 0 saves it and exits 130), through a temporary folder beside it. A
save holds the HF model, the tokenizer files, AdamW's state (optimizer.pt) and the run's position (trainer_state.json):
--resume continues it exactly where it stopped (the same updates and the same data windows as an
uninterrupted run, on the same world size), and the same command with --resume starts from
--model while --out holds no save yet, so a job that is requeued can always run it.

Logs one JSON object per line on rank 0: {"event": "start", ...} (the setup, and what a resume
continues and changed), {"step", "loss", "lr", "tokens_per_s"} and, every --eval-every steps and
at the end when val shards exist, {"step", "val_loss"}; {"event": "saved"} after each save,
{"event": "stopped"} on a stop and {"event": "recovered"} when a cut save was put back in place. A save holds the run's step and val records as metrics.jsonl (`minigpt plot
OUT` draws them).
"""
import argparse
import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

MAGIC = 20240520
HEADER_INTS = 256
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]
STATE_FILE, OPTIMIZER_FILE, STATE_FORMAT, METRICS_FILE = "trainer_state.json", "optimizer.pt", "minigpt-train-ddp", "metrics.jsonl"
# The flags that shape the run, with their defaults (None: derived, see fill_run_settings). A
# resumed run takes the saved value of each one left out.
RUN_DEFAULTS = {"steps": 1000, "batch": 8, "accum": 1, "seq_len": None, "lr": 3e-4, "min_lr": None, "warmup": None,
                "weight_decay": 0.1, "grad_clip": 1.0, "seed": 1337, "amp": "none"}


def fail(message):
    """Ends the run with one line on stderr and exit 1."""
    raise SystemExit(f"train_ddp.py: {message}")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or header[0] != MAGIC:
        fail(f"{path}: not a token shard (magic {header[0] if header.size else None}, expected {MAGIC})")
    version, count = int(header[1]), int(header[2])
    if version not in (1, 2):
        fail(f"{path}: unknown shard version {version} (1 = uint16, 2 = uint32)")
    dtype = "<u2" if version == 1 else "<u4"
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(count,))


VAL_NAME = re.compile(r"(^|_)val(_|\.bin$)")


def shard_paths(data):
    """(train, val) shard paths: a folder's train_*.bin and val_*.bin, or a glob's matches (those
    named as validation shards, val_*.bin or llm.c's *_val_*.bin and *_val.bin, are val)."""
    if os.path.isdir(data):
        return sorted(glob.glob(os.path.join(data, "train_*.bin"))), sorted(glob.glob(os.path.join(data, "val_*.bin")))
    train, val = [], []
    for path in sorted(glob.glob(data)):
        (val if VAL_NAME.search(os.path.basename(path)) else train).append(path)
    return train, val


def usable_shards(paths, seq_len, what):
    """The shards of `paths` long enough for one window of seq_len + 1 tokens; at least one must be."""
    shards = [s for s in (read_shard(p) for p in paths) if len(s) >= seq_len + 1]
    if not shards:
        fail(f"no {what} shard holds a window of {seq_len + 1} tokens (--seq-len {seq_len} + 1): {', '.join(paths)}")
    return shards


class Windows:
    """Random (seq_len + 1)-token windows from a set of shards."""

    def __init__(self, shards, seq_len, seed, vocab):
        self.shards = shards
        sizes = np.array([len(s) - seq_len for s in self.shards], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.seq_len = seq_len
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def position(self):
        """Where the window sequence stands (JSON-able): a resumed run goes on from here."""
        return self.rng.bit_generator.state

    def go_to(self, position):
        self.rng.bit_generator.state = position

    def batch(self, batch):
        rows = []
        for _ in range(batch):
            s = self.shards[self.rng.choice(len(self.shards), p=self.weights)]
            start = int(self.rng.integers(0, len(s) - self.seq_len))
            rows.append(np.asarray(s[start:start + self.seq_len + 1], dtype=np.int64))
        w = np.stack(rows)
        if w.max() >= self.vocab:
            # Shards without meta.json are not checked up front: an id past the vocabulary would
            # fail inside the embedding (a device-side assert on CUDA).
            fail(f"the shards hold token id {int(w.max())}, past the model's vocabulary ({self.vocab}): prepare them with the model's tokenizer")
        w = torch.from_numpy(w)
        return w[:, :-1], w[:, 1:]


def check_shards_match_model(data, model_dir, vocab):
    """meta.json (minigpt prepare) names the tokenizer the shards were made with: it must be the model's."""
    meta_path = os.path.join(data, "meta.json") if os.path.isdir(data) else None
    if not meta_path or not os.path.exists(meta_path):
        return
    meta = read_json(meta_path)
    if int(meta.get("vocab_size", 0)) > vocab:
        fail(f"{meta_path}: the shards' vocabulary ({meta['vocab_size']}) is larger than the model's ({vocab})")
    tok = meta.get("tokenizer") or {}
    try:
        hf_tok = read_json(os.path.join(model_dir, "tokenizer.json"))
        hf_kind = read_json(os.path.join(model_dir, "tokenizer_config.json")).get("minigpt_tokenizer")
    except FileNotFoundError:
        return
    kind = tok.get("type")
    if kind and hf_kind and kind != hf_kind:
        fail(f"the shards were made with a {kind} tokenizer, the model uses {hf_kind}: prepare the shards with the model's tokenizer")
    if kind == "char":
        want = list(tok.get("vocab", [])) + ([tok["unk"]] if tok.get("unk") else [])
        have = [t for t, _ in sorted(hf_tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
        if want != have:
            fail("the shards' character vocabulary differs from the model's: prepare the shards with the model's tokenizer")
    if kind == "bpe":
        # minigpt's merges are "id id" pairs; the HF export's are the two pieces' byte-level strings.
        ids = hf_tok["model"]["vocab"]
        pairs = [m.split(" ") if isinstance(m, str) else m for m in hf_tok["model"].get("merges", [])]
        model_merges = [f"{ids.get(left)} {ids.get(right)}" for left, right in pairs]
        shard_merges = [str(m) for m in tok.get("merges", [])]
        if shard_merges != model_merges:
            differ = next((i for i, (a, b) in enumerate(zip(shard_merges, model_merges)) if a != b), min(len(shard_merges), len(model_merges)))
            fail(f"the shards' BPE merges differ from the model's (first at merge {differ} of {len(shard_merges)} / {len(model_merges)}): "
                             "prepare the shards with the model's tokenizer")
    if kind in ("hf-bpe", "sp-bpe"):
        # Imported from a tokenizer.json: the same pieces (byte-level strings for hf-bpe) by id,
        # merges in the same order, special tokens, and hf-bpe's digit splitting and whole-word
        # lookup, or sp-bpe's byte fallback and start-of-text token.
        by_id = {i: t for t, i in hf_tok["model"]["vocab"].items()}
        for t in hf_tok.get("added_tokens", []):
            by_id[t["id"]] = t["content"]
        have = [by_id.get(i) for i in range(len(by_id))]
        merges = [" ".join(m) if isinstance(m, list) else m for m in hf_tok["model"].get("merges", [])]
        special = {t["content"]: t["id"] for t in hf_tok.get("added_tokens", [])}
        digits = '"Digits"' in json.dumps(hf_tok.get("pre_tokenizer"))
        same = list(tok.get("vocab", [])) == have and list(tok.get("merges", [])) == merges and tok.get("special") == special
        if kind == "hf-bpe":
            same = same and (tok.get("pretokenizer") == "gpt2-digits") == digits and bool(tok.get("ignoreMerges")) == bool(hf_tok["model"].get("ignore_merges"))
        else:
            adds_start = bool(hf_tok.get("post_processor")) and "SpecialToken" in json.dumps(hf_tok["post_processor"].get("single", []))
            same = same and bool(tok.get("byteFallback")) == bool(hf_tok["model"].get("byte_fallback")) and bool(tok.get("addBos")) == adds_start
        if not same:
            fail("the shards' tokenizer differs from the model's (its vocabulary, merges, special tokens, pre-tokenizer or start-of-text token): prepare the shards with the model's tokenizer")


def lr_at(step, args):
    """minigpt's schedule (src/train/schedule.ts): `step` counts from 1; linear warmup to --lr, cosine to --min-lr at --steps."""
    if step <= args.warmup:
        return args.lr * step / args.warmup
    if step >= args.steps:
        return args.min_lr
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


INT_SETTINGS = {"steps": 1, "batch": 1, "accum": 1, "seq_len": 1, "warmup": 0, "seed": 0}  # the least each may be
FLOAT_SETTINGS = ["lr", "min_lr", "weight_decay", "grad_clip"]  # each at least 0
INT_FLAGS = {**INT_SETTINGS, "log_every": 1, "eval_every": 0, "eval_batches": 1, "save_every": 0, "dist_timeout": 1}


def staging_folders(out):
    """The folders a save stages beside --out (.OUT.tmp-PID-TIME: being written; .OUT.old-PID-TIME:
    the previous save, renamed aside until the new one is in), left behind when a save was cut short."""
    parent, base = os.path.dirname(out), os.path.basename(out)
    pattern = re.compile(rf"^\.{re.escape(base)}\.(tmp|old)-\d+-\d+$")
    try:
        return sorted(os.path.join(parent, n) for n in os.listdir(parent) if pattern.match(n))
    except OSError:
        return []


def read_save(folder, must_be_whole):
    """The run saved in `folder` (its trainer_state.json, checked), or None when it holds none. A
    damaged one ends the run in one line when `must_be_whole`, and is passed over otherwise (a
    staging folder cut short while it was written)."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        return None
    problem = None
    try:
        saved = read_json(path)
    except (OSError, ValueError) as e:
        saved, problem = None, f"cannot be read ({e})"
    if problem is None:
        problem = save_problem(saved, folder)
    if problem is None:
        return saved
    if must_be_whole:
        fail(f"{path} {problem}: the save is damaged; give another --out, or --force without --resume to start over")
    return None


def save_problem(saved, folder):
    """What is wrong with a trainer_state.json's contents and its folder, or None."""
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        return f"is not a train_ddp.py save (no \"format\": \"{STATE_FORMAT}\")"
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    for k, least in INT_SETTINGS.items():
        if not (whole(saved.get(k)) and saved[k] >= least):
            return f"has {k} {json.dumps(saved.get(k))}, not a whole number of at least {least}"
    for k in FLOAT_SETTINGS:
        if not (number(saved.get(k)) and saved[k] >= 0):
            return f"has {k} {json.dumps(saved.get(k))}, not a number of at least 0"
    if saved.get("amp") not in ("none", "bf16"):
        return f"has amp {json.dumps(saved.get('amp'))}, neither none nor bf16"
    if not (whole(saved.get("step")) and 1 <= saved["step"] <= saved["steps"]):
        return f"has step {json.dumps(saved.get('step'))}, not from 1 to its steps ({saved['steps']})"
    positions = saved.get("data_positions")
    if not isinstance(positions, list) or not positions:
        return "has no data_positions"
    for position in positions:
        try:
            np.random.default_rng().bit_generator.state = position
        except (TypeError, ValueError, KeyError) as e:
            return f"has a data position numpy cannot take ({type(e).__name__}: {e})"
    has_weights = any(os.path.isfile(os.path.join(folder, f)) for f in ["model.safetensors", "model.safetensors.index.json"])
    missing = [f for f in ["config.json", OPTIMIZER_FILE] if not os.path.isfile(os.path.join(folder, f))] + ([] if has_weights else ["model.safetensors"])
    if missing:
        return f"is there but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: the save is incomplete"
    return None


def find_save(out):
    """The newest whole save of --out: --out itself, or, when a save was cut between its renames or
    after its staging folder was written, a staging folder beside it (the later step wins; --out on
    a tie). (folder, trainer_state) or (None, None)."""
    found = []
    saved = read_save(out, must_be_whole=True)
    if saved:
        found.append((saved["step"], 1, out, saved))
    for folder in staging_folders(out):
        saved = read_save(folder, must_be_whole=False)
        if saved:
            found.append((saved["step"], 0, folder, saved))
    if not found:
        return None, None
    _, _, folder, saved = max(found, key=lambda f: (f[0], f[1]))
    return folder, saved


def weight_names(folder):
    """The weights' names in an HF folder's safetensors (those of the model's parameters: tied
    embeddings are saved once)."""
    from safetensors import safe_open
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        return set(read_json(index)["weight_map"])
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        return set(f.keys())


def first_rank():
    """Rank 0, or a run without torchrun (before the process group exists)."""
    return os.environ.get("RANK", "0") == "0"


def fill_run_settings(args, saved):
    """Flags left out take the saved run's values when resuming, else their defaults (--min-lr:
    --lr / 10; --warmup: 50 or a tenth of --steps when that is fewer). A run whose --min-lr was
    --lr / 10 keeps it so: a new --lr moves it too."""
    lr_given, args.min_lr_given = args.lr is not None, args.min_lr is not None
    derive_min_lr = not args.min_lr_given and (not saved or (lr_given and saved.get("min_lr_derived", False)))
    for k, default in RUN_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, saved[k] if saved else default)
    if derive_min_lr:
        args.min_lr = args.lr / 10
    args.min_lr_derived = not args.min_lr_given and (derive_min_lr or bool(saved and saved.get("min_lr_derived", False)))
    if args.warmup is None:
        args.warmup = min(50, args.steps // 10)
    # Said in the start line: a run resumed with other settings goes on, but not as it would have.
    args.changed = {k: [saved[k], getattr(args, k)] for k in RUN_DEFAULTS if saved and saved[k] != getattr(args, k)}


def check_setup(args):
    """Every check that needs no process group and no model load, so a mistake ends the job at once,
    not after the run (nothing is written before the end, the first --save-every or a stop)."""
    out = os.path.realpath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {args.out} is a file, not a folder")
    if args.resume:
        save_dir, saved = find_save(out)
    else:
        save_dir, saved = None, None
        cut_dir = find_save(out)[0] if not os.path.exists(out) and not args.force else None
        if cut_dir:
            fail(f"--out {args.out} is missing but its last save is in {cut_dir} (a save was cut short): give --resume to continue it, "
                 "--force to start over, or another --out")
    if saved is None and not args.model:
        fail("--model is needed: give the HF folder to start from" + (f" (--resume: --out {args.out} holds no save yet)" if args.resume else ""))
    fill_run_settings(args, saved)
    args.source = save_dir if saved else args.model
    args.start_step = saved["step"] if saved else 0
    args.saved_positions = saved.get("data_positions") if saved else None
    flag = lambda k: "--" + k.replace("_", "-")
    for k, least in INT_FLAGS.items():
        if getattr(args, k) is not None and getattr(args, k) < least:
            fail(f"{flag(k)} must be at least {least} (got {getattr(args, k)})")
    for k in FLOAT_SETTINGS:
        if not (math.isfinite(getattr(args, k)) and getattr(args, k) >= 0):
            fail(f"{flag(k)} must be a number of at least 0 (got {getattr(args, k)})")
    if args.lr == 0 or args.min_lr > args.lr:
        whose = " (the run's)" if saved and not args.min_lr_given else ""
        fail(f"--lr must be above 0 and at least --min-lr (got --lr {args.lr}, --min-lr {args.min_lr}{whose})")
    if args.amp == "bf16" and not torch.cuda.is_available():
        fail("--amp bf16 needs CUDA; without a GPU the run is F32 (leave --amp out)")

    config_path = os.path.join(args.source, "config.json")
    if not os.path.isfile(config_path):
        fail(f"--model {args.model}: no config.json there (give a folder written by `minigpt export --format hf`)")
    config = read_json(config_path)
    vocab, context = int(config["vocab_size"]), int(config["max_position_embeddings"])
    seq_len = args.seq_len or context
    if seq_len > context:
        fail(f"--seq-len {seq_len} is longer than the model's context ({context}, its max_position_embeddings): give at most {context}")

    train_paths, val_paths = shard_paths(args.data)
    if not train_paths:
        where = f"{args.data} has no train_*.bin" if os.path.isdir(args.data) else f"--data {args.data} matches no shard (train_*.bin)"
        fail(f"{where}: make shards with `minigpt prepare --data TEXT --tokenizer MODEL_RUN --out DIR`")
    shard_folders = sorted({os.path.dirname(p) or "." for p in train_paths + val_paths})

    # --out is replaced whole at each save: it must not be, or hold, what the run reads. Compared
    # resolved (symlinks, "..", ".").
    within_out = lambda path: os.path.commonpath([os.path.realpath(path), out]) == out
    if not saved and within_out(args.model):
        fail(f"--out {args.out} is or holds the --model folder: its saves would delete the model the run starts from; give another --out")
    if any(within_out(folder) for folder in shard_folders):
        fail(f"--out {args.out} is or holds the shards' folder: its saves would delete them; give another --out")
    if not saved and os.path.isdir(out) and os.listdir(out) and not args.force:
        fail(f"--out {args.out} already holds files" + (" but no train_ddp.py save to resume" if args.resume else "")
             + ": give --force to replace the folder, or another --out")
    args.out_path = out
    parent = os.path.dirname(out)
    if first_rank() and not (os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)):
        fail(f"--out {args.out}: cannot write in {parent}" + ("" if os.path.isdir(parent) else " (no such folder)") + ", where saves are made")

    for folder in shard_folders:
        check_shards_match_model(folder, args.source, vocab)
    # Read before the process group starts (rank 0 reads it, and hands it to the others then), so a
    # damaged file ends the job here, not with the other ranks waiting for it.
    args.saved_optimizer = None
    if saved and first_rank():
        path = os.path.join(save_dir, OPTIMIZER_FILE)
        try:
            args.saved_optimizer = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 (pickle and zip errors have no common base)
            fail(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}): the save is damaged; give another --out")
        params = weight_names(save_dir)
        state = args.saved_optimizer.get("state") if isinstance(args.saved_optimizer, dict) else None
        groups = args.saved_optimizer.get("param_groups") if isinstance(args.saved_optimizer, dict) else None
        if not isinstance(state, dict) or set(state) != params or not isinstance(groups, list) or len(groups) != 2:
            held = len(state) if isinstance(state, dict) else 0
            fail(f"{path} does not hold AdamW's state for this model's {len(params)} weights (it has {held}): the save is damaged; give another --out")
    shards = usable_shards(train_paths, seq_len, "train"), usable_shards(val_paths, seq_len, "val") if val_paths else None
    if args.force and not args.resume and first_rank():
        sweep_staging(out)  # the run --force replaces: a cut save of it must not be resumed later
    return (seq_len, vocab) + shards


# Ctrl-C, SIGTERM (a scheduler's preemption), SIGHUP (the terminal closed) or SIGUSR1 (what Slurm's
# --signal sends ahead of the end of a job) ask for a stop. torchrun passes the first three on to
# every rank (SIGUSR1 too when its --signals-to-handle names it) and kills the ranks that are not
# done after its shutdown timeout. Before training, a stop ends the process at once (nothing to
# save); during training every rank finishes its step, they agree on the stop, save and exit.
STOP = {"training": False, "signals": []}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def on_stop_signal(signum, frame):
    if not STOP["training"]:
        raise KeyboardInterrupt
    STOP["signals"].append(signum)


def main():
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_stop_signal)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF model directory to start from (minigpt export --format hf); not needed to --resume a save")
    p.add_argument("--data", required=True, help="shards directory (train_*.bin, val_*.bin) or a glob of .bin files (those named val_*.bin, *_val_*.bin or *_val.bin are the validation set)")
    p.add_argument("--out", required=True, help="output HF directory (written at the end, every --save-every steps and when stopped)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out where it stopped (flags left out keep the run's values; a larger --steps trains on); while --out holds no save, start from --model")
    p.add_argument("--force", action="store_true", help="replace --out when it already holds files")
    p.add_argument("--steps", type=int, help="total optimizer steps (default: 1000; the run-shaping flags below default to the run's own values with --resume)")
    p.add_argument("--batch", type=int, help="sequences per process per micro-batch (default: 8)")
    p.add_argument("--accum", type=int, help="micro-batches per optimizer step (gradient accumulation; default: 1): a step takes --batch x --accum x --seq-len x processes tokens")
    p.add_argument("--seq-len", type=int, help="default and at most: the model's max_position_embeddings")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-4)")
    p.add_argument("--min-lr", type=float, help="default: lr / 10")
    p.add_argument("--warmup", type=int, help="linear warmup steps (default: 50, or a tenth of --steps when that is fewer, as minigpt train)")
    p.add_argument("--weight-decay", type=float, help="default: 0.1")
    p.add_argument("--grad-clip", type=float, help="default: 1.0")
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    p.add_argument("--amp", choices=["none", "bf16"], help="bf16 autocast (CUDA only; default: none)")
    p.add_argument("--compile", action="store_true", help="run the model under torch.compile (faster steps after a first one that compiles; needs a C compiler on CPU)")
    p.add_argument("--seed", type=int, help="default: 1337")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--save-every", type=int, default=0, help="also write --out every N steps (0: only at the end and when stopped)")
    p.add_argument("--dist-timeout", type=int, default=1800, help="seconds a collective may wait before failing")
    args = p.parse_args()
    try:
        seq_len, vocab, train_shards, val_shards = check_setup(args)
    except SystemExit:
        if not first_rank():
            raise SystemExit(1)  # every rank finds the same mistake: rank 0 says it, once
        raise
    from transformers import AutoModelForCausalLM

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    backend = args.backend if args.backend != "auto" else ("nccl" if cuda else "gloo")
    if distributed:
        from datetime import timedelta
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=args.dist_timeout))
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        # Small host-side agreements (stop requests, data positions) go over gloo: on NCCL they
        # would make the host wait for the GPU every step.
        control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
        starts = [None] * world
        dist.all_gather_object(starts, args.start_step, group=control)
        if len(set(starts)) > 1:
            if rank == 0:
                print(f"train_ddp.py: the ranks found different saves in --out (steps {sorted(set(starts))}): on several nodes --out must be one "
                      "shared folder", file=sys.stderr)
            raise SystemExit(1)
    else:
        rank, world, local_rank = 0, 1, 0
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)
    log = (lambda o: print(json.dumps(o), flush=True)) if rank == 0 else (lambda o: None)
    fsdp = args.strategy == "fsdp" and distributed

    if args.start_step and args.source != args.out_path:
        # The newest save is beside --out, where a cut save left it. Every rank is past its checks
        # (the all-gather above): rank 0 puts it in place, and every rank reads it there.
        if rank == 0:
            put_in_place(args.source, args.out_path)
            log({"event": "recovered", "from": args.source, "step": args.start_step})
        if distributed:
            dist.barrier(group=control)
        args.source = args.out_path
    # The logged steps and evaluations of the whole run (rank 0), written into each save as
    # metrics.jsonl, in the records minigpt's runs keep: `minigpt plot OUT` draws the run.
    history = read_history(args.source, args.start_step) if args.start_step and rank == 0 else []

    def record(o):
        log(o)
        if rank == 0:
            history.append(o)

    if args.start_step >= args.steps:
        if rank == 0:
            print(f"train_ddp.py: the run in --out {args.out} is at step {args.start_step} of --steps {args.steps} already: nothing to train "
                  "(give a larger --steps to go on)", file=sys.stderr)
        exit_now(0)  # the process group's gloo threads: see the end of main()

    # Loaded on the CPU: fully_shard moves each layer to the GPU as it shards it, so with FSDP no
    # GPU ever holds the whole model.
    model = AutoModelForCausalLM.from_pretrained(args.source, dtype=torch.float32)
    model.config.use_cache = False
    if fsdp:
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        train_model = model
    elif distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model.to(device)
        train_model = DDP(model, device_ids=[local_rank] if cuda else None)
    else:
        model.to(device)
        train_model = model
    ddp_model = train_model if distributed and not fsdp else None
    if args.compile:
        # The model's own modules stay as they are (its state dict keeps its names); only the
        # forward and backward passes run compiled.
        train_model = torch.compile(train_model)

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_optimizer_state_dict

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    train = Windows(train_shards, seq_len, args.seed + rank, vocab)
    val = Windows(val_shards, seq_len, 0, vocab) if val_shards else None
    windows = "fresh"
    if args.start_step:
        # The saved state is whole (parameter names, not ranks): it loads on any world size and strategy.
        set_optimizer_state_dict(model, opt, args.saved_optimizer if rank == 0 else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed))
        args.saved_optimizer = None
        for group, weight_decay in zip(opt.param_groups, [args.weight_decay, 0.0]):
            group["weight_decay"] = weight_decay  # the loaded groups carry the saved run's
        positions = args.saved_positions
        if len(positions) == world and "seed" not in args.changed:
            train.go_to(positions[rank])
            windows = "continued"
        else:
            # Fresh windows, never the ones the run began with.
            train.rng = np.random.default_rng([args.seed, rank, args.start_step])
            made_by = f"{len(positions)} process{'es' if len(positions) > 1 else ''}"
            windows = "new: --seed changed" if "seed" in args.changed else f"new: the save was made by {made_by}, this run has {world}"
    log({"event": "start", "world_size": world, "backend": backend if distributed else None, "strategy": args.strategy if distributed else "single",
         "device": str(device), "params": sum(p.numel() for p in model.parameters()), "seq_len": seq_len, "amp": args.amp, "compile": args.compile, "warmup": args.warmup,
         "tokens_per_step": args.batch * args.accum * seq_len * world,
         "steps": args.steps, **({"resumed_from": args.start_step, "data_windows": windows, "changed": args.changed} if args.start_step else {})})

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
        if val is None:
            return None
        val.rng = np.random.default_rng(10_000 + rank)  # the same windows at every evaluation
        train_model.eval()
        total = 0.0
        with torch.no_grad():
            for _ in range(args.eval_batches):
                x, y = val.batch(args.batch)
                total += loss_of(x.to(device), y.to(device)).item()
        train_model.train()
        return mean_over_ranks(total / args.eval_batches)

    def run_state(step):
        """What a save holds, whole on the CPU at rank 0: weights and AdamW state (gathered from every
        rank under FSDP) and every rank's data position. Collectives: every rank calls it."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options) if fsdp else (
            {k: v.detach().to("cpu") for k, v in model.state_dict().items()} if rank == 0 else {})
        optimizer = get_optimizer_state_dict(model, opt, options=options) if fsdp or rank == 0 else {}
        positions = [train.position()]
        if distributed:
            positions = [None] * world
            dist.all_gather_object(positions, train.position(), group=control)
        settings = {k: getattr(args, k) for k in RUN_DEFAULTS}
        return weights, optimizer, {"format": STATE_FORMAT, "step": step, **settings, "seq_len": seq_len, "min_lr_derived": args.min_lr_derived, "world_size": world,
                                    "strategy": args.strategy if distributed else "single", "data_positions": positions}

    def gradient_sync(on):
        """Whether the coming backward pass reduces gradients across ranks: only the last micro-batch's does."""
        if fsdp:
            model.set_requires_gradient_sync(on)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if on or ddp_model is None else ddp_model.no_sync()

    def stop_requested():
        flag = torch.tensor([1 if STOP["signals"] else 0])
        if distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=control)
        return bool(flag.item())

    train_model.train()
    t0 = time.time()
    step = args.start_step
    stopped = False
    STOP["training"] = True
    while step < args.steps:
        step += 1
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for micro in range(args.accum):
            x, y = train.batch(args.batch)
            with gradient_sync(micro == args.accum - 1):
                micro_loss = loss_of(x.to(device), y.to(device)) / args.accum
                micro_loss.backward()
            loss = loss + micro_loss.detach()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        stopped = stop_requested() and step < args.steps  # a stop during the last step: the run is done
        # Logged steps count the updates done, from 1, as minigpt's metrics.jsonl does.
        if step % args.log_every == 0 or step == args.start_step + 1 or step == args.steps or stopped:
            mean = mean_over_ranks(loss.item())
            dt = time.time() - t0
            record({"step": step, "loss": mean, "lr": lr, "tokens_per_s": (step - args.start_step) * args.batch * args.accum * seq_len * world / max(dt, 1e-9)})
        if stopped:
            log({"event": "stopped", "step": step})
            break
        if args.eval_every and step % args.eval_every == 0 and step != args.steps:
            v = evaluate()
            if v is not None:
                record({"step": step, "val_loss": v})
        if args.save_every and step % args.save_every == 0 and step != args.steps:
            state = run_state(step)
            if rank == 0:
                save(args, *state, history)
    if not stopped:
        v = evaluate()
        if v is not None:
            record({"step": args.steps, "val_loss": v})

    # Gather the state, leave the process group, then rank 0 saves: no collective waits on the
    # (slow) save, so no rank can time out behind it.
    state = run_state(step)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        save(args, *state, history)
    if stopped and rank == 0:
        print(f"train_ddp.py: stopped at step {step} of {args.steps}; --out {args.out} holds the run: the same command with --resume continues it",
              file=sys.stderr)
    # Exit from here: returning (or raising) would free this frame's DDP reducer, whose gloo process
    # group joins its worker thread, which may be freeing a collective's tensors and wait for the
    # GIL this thread holds: the rank hangs.
    # The other ranks are done once the state is gathered: they exit 0 (torchrun would take a 130
    # as a failed rank and end rank 0 while it saves); rank 0 says the run was stopped.
    exit_now(130 if stopped and rank == 0 else 0)


def exit_now(code):
    """Ends the process without Python's shutdown (see the end of this file)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def read_history(folder, step):
    """The metric records a save holds, up to its step (a run saved by an older train_ddp.py has none)."""
    records = []
    try:
        with open(os.path.join(folder, METRICS_FILE), encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step:
                    records.append(r)
    except FileNotFoundError:
        pass
    return records


def staging_path(out, kind):
    """A new staging folder's name beside --out (kind tmp or old; see staging_folders). Named by
    process and time: a restarted container reuses pids, and a cut save's folder of the same pid
    may be what this run resumed from."""
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{kind}-{os.getpid()}-{time.time_ns()}")


def sync_to_disk(path):
    """fsync: a file, or a folder (its entries) and the files in it, so a crash of the machine
    cannot leave a save that looks whole with a file cut short."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            if os.path.isfile(os.path.join(path, name)):
                sync_to_disk(os.path.join(path, name))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put_in_place(folder, out):
    """Makes `folder` (a whole save beside --out) --out: the --out there is renamed aside first,
    then `folder` renamed in; what cut saves left beside it goes."""
    if os.path.exists(out):
        os.replace(out, staging_path(out, "old"))
    os.replace(folder, out)
    sync_to_disk(os.path.dirname(out) or ".")
    sweep_staging(out)


def sweep_staging(out):
    for leftover in staging_folders(out):
        shutil.rmtree(leftover, ignore_errors=True)


def save(args, weights, optimizer, trainer_state, history):
    """Writes the weights into a plain copy of the model (on the CPU: tied embeddings stay one tensor)
    with the tokenizer files, AdamW's state and the run's position, in a temporary folder beside
    --out; then the previous --out is renamed aside, the new one renamed in, and the previous one
    deleted: an interrupted save leaves one of the two whole, and find_save finds the newer."""
    from transformers import AutoModelForCausalLM

    out = args.out_path
    tmp = staging_path(out, "tmp")
    # args.source may be --out itself (a resumed run): read here, before --out is replaced.
    plain = AutoModelForCausalLM.from_pretrained(args.source, dtype=torch.float32)
    plain.load_state_dict(weights)
    plain.save_pretrained(tmp, safe_serialization=True)
    for f in TOKENIZER_FILES:
        src = os.path.join(args.source, f)
        if os.path.exists(src) and (f != "generation_config.json" or not os.path.exists(os.path.join(tmp, f))):
            shutil.copy(src, os.path.join(tmp, f))
    torch.save(optimizer, os.path.join(tmp, OPTIMIZER_FILE))
    with open(os.path.join(tmp, METRICS_FILE), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
    with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(trainer_state, f)
    # safetensors writes its file 0600 (a temporary file renamed): as readable as config.json,
    # which save_pretrained wrote with the umask's mode.
    mode = os.stat(os.path.join(tmp, "config.json")).st_mode & 0o777
    for f in os.listdir(tmp):
        os.chmod(os.path.join(tmp, f), mode)
    # --out holds this save whole then: the previous one, and what cut saves left, go.
    sync_to_disk(tmp)
    put_in_place(tmp, out)
    args.source = out  # later saves copy the config and tokenizer files from --out
    print(json.dumps({"event": "saved", "out": args.out, "step": trainer_state["step"]}), flush=True)

def exit_code(e):
    """The exit status for how main() ended (saying why on stderr where it has something to say)."""
    if isinstance(e, KeyboardInterrupt):
        if first_rank():
            print("\ntrain_ddp.py: stopped before training began; nothing was trained or saved", file=sys.stderr)
        return 130
    if isinstance(e, SystemExit):
        if isinstance(e.code, int) or e.code is None:
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    traceback.print_exception(e)
    return 1


if __name__ == "__main__":
    # However it ends, end here, without Python's shutdown, and while the exception (whose
    # traceback holds main()'s frame) is alive: torch's C++ side still holds the gloo process
    # group after destroy_process_group; freed in the shutdown or with main()'s frame, its worker
    # thread can wait for the GIL this thread holds (the rank hangs) or abort the rank, and
    # torchrun then kills the others and fails the job.
    try:
        main()
    except BaseException as e:  # noqa: BLE001
        exit_now(exit_code(e))
    exit_now(0)
