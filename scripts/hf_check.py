#!/usr/bin/env python3
"""Dev-only: loads a minigpt HF export with transformers, as a user would, and reports what it sees.

Usage: hf_check.py REQUEST.json OUT.json
REQUEST: [{"dir": MODEL_DIR, "texts": [...], "ids": [[...], ...], "decode": [[...], ...],
           "resave": OPTIONAL_DIR}, ...]
         resave: transformers writes the model back there itself (save_pretrained, bfloat16, sharded
         into small files with model.safetensors.index.json) with the tokenizer as tokenizers
         re-serialises it: what `minigpt import` must read.
OUT:     [{"model_class", "tokenizer_class", "encodings": [[...]], "decoded": [...], "logits": [[T*V floats]]}, ...]
Used by test/hf.test.ts; exits 3 with a message when a package is missing.
"""
import json
import sys

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:  # pragma: no cover
    print(f"missing package: {e}", file=sys.stderr)
    sys.exit(3)


def check(req: dict) -> dict:
    model_dir = req["dir"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out = {
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "encodings": [tok(t, add_special_tokens=True)["input_ids"] for t in req.get("texts", [])],
        "decoded": [tok.decode(ids) for ids in req.get("decode", [])],
        "logits": [],
    }
    with torch.no_grad():
        for ids in req.get("ids", []):
            x = torch.tensor([ids], dtype=torch.long)
            logits = model(input_ids=x).logits[0].float()
            out["logits"].append(logits.reshape(-1).tolist())
    if req.get("resave"):
        model.to(torch.bfloat16).save_pretrained(req["resave"], safe_serialization=True, max_shard_size="10KB")
        tok.save_pretrained(req["resave"])
    return out


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        jobs = json.load(f)
    results = [check(job) for job in jobs]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
