#!/usr/bin/env python3
"""Dev-only: reads a minigpt GGUF with llama.cpp's own `gguf` package and checks it against the HF
export of the same checkpoint, applying convert_hf_to_gguf.py's LlamaModel.permute to q/k itself.

Usage: gguf_check.py MODEL.gguf HF_DIR OUT.json
OUT: {"metadata": {key: value}, "tensors": {name: [shape...]}, "mismatches": [...], "max_abs_diff": x}
Exits 3 when a package is missing.
"""
import json
import sys

try:
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file
except ImportError as e:  # pragma: no cover
    print(f"missing package: {e}", file=sys.stderr)
    sys.exit(3)


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field_value(field):
    from gguf import GGUFValueType
    if field.types[0] == GGUFValueType.ARRAY:
        if field.types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    v = field.parts[field.data[0]].tolist()[0]
    return v


def main() -> None:
    gguf_path, hf_dir, out_path = sys.argv[1:4]
    reader = GGUFReader(gguf_path)
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        metadata[name] = field_value(field)
    cfg = json.load(open(f"{hf_dir}/config.json"))
    hf = {k: v.astype(np.float32) for k, v in load_file(f"{hf_dir}/model.safetensors").items()}
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    expected = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    if "lm_head.weight" in hf:
        expected["output.weight"] = hf["lm_head.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        expected.update({
            b + "attn_norm.weight": hf[p + "input_layernorm.weight"],
            b + "attn_q.weight": permute(hf[p + "self_attn.q_proj.weight"], H, H),
            b + "attn_k.weight": permute(hf[p + "self_attn.k_proj.weight"], H, KV),
            b + "attn_v.weight": hf[p + "self_attn.v_proj.weight"],
            b + "attn_output.weight": hf[p + "self_attn.o_proj.weight"],
            b + "ffn_norm.weight": hf[p + "post_attention_layernorm.weight"],
            b + "ffn_gate.weight": hf[p + "mlp.gate_proj.weight"],
            b + "ffn_up.weight": hf[p + "mlp.up_proj.weight"],
            b + "ffn_down.weight": hf[p + "mlp.down_proj.weight"],
        })
        if p + "self_attn.q_proj.bias" in hf:  # Qwen2's q, k and v biases; convert_hf_to_gguf permutes q's and k's too
            expected.update({
                b + "attn_q.bias": permute(hf[p + "self_attn.q_proj.bias"], H, H),
                b + "attn_k.bias": permute(hf[p + "self_attn.k_proj.bias"], H, KV),
                b + "attn_v.bias": hf[p + "self_attn.v_proj.bias"],
            })
    mismatches, tensors, worst = [], {}, 0.0
    for t in reader.tensors:
        data = np.array(t.data).astype(np.float32)
        tensors[t.name] = {"shape": list(data.shape), "type": t.tensor_type.name, "ne": [int(x) for x in t.shape]}
        want = expected.pop(t.name, None)
        if want is None:
            mismatches.append(f"unexpected tensor {t.name}")
            continue
        if want.shape != data.shape:
            mismatches.append(f"{t.name}: shape {data.shape} != {want.shape}")
            continue
        if t.tensor_type.name == "F16":
            want = want.astype(np.float16).astype(np.float32)
        diff = float(np.max(np.abs(want - data))) if data.size else 0.0
        worst = max(worst, diff)
        if diff != 0.0:
            mismatches.append(f"{t.name}: max |diff| {diff}")
    mismatches += [f"missing tensor {n}" for n in expected]
    json.dump({"metadata": metadata, "tensors": tensors, "mismatches": mismatches, "max_abs_diff": worst}, open(out_path, "w"))


if __name__ == "__main__":
    main()
