#!/usr/bin/env python3
"""Independent check of an athena-materialize output against the source GGUF.

Dequantizes every tensor with gguf-py (`pip install gguf numpy`), undoes llama.cpp's q/k row
permutation with numpy (llama architecture), and compares with model.safetensors read by hand.
Also checks config.json against the GGUF metadata.

Usage: tools/check_materialized.py MODEL.gguf HF_DIR
"""
import json
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(g):
    if g in HF:
        return HF[g]
    _, n, rest = g.split(".", 2)
    return f"model.layers.{n}.{LAYER[rest]}"


def unpermute(w, n_head):
    # inverse of convert_hf_to_gguf's w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2)
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def main(gguf_path, hf_dir):
    r = GGUFReader(gguf_path)
    field = lambda k: r.fields[k].contents() if k in r.fields else None
    arch = field("general.architecture")
    cfg = json.load(open(f"{hf_dir}/config.json"))
    checks = {
        "num_hidden_layers": field(f"{arch}.block_count"),
        "hidden_size": field(f"{arch}.embedding_length"),
        "intermediate_size": field(f"{arch}.feed_forward_length"),
        "num_attention_heads": field(f"{arch}.attention.head_count"),
        "num_key_value_heads": field(f"{arch}.attention.head_count_kv"),
        "max_position_embeddings": field(f"{arch}.context_length"),
        "vocab_size": len(field("tokenizer.ggml.tokens")),
    }
    for k, v in checks.items():
        assert cfg[k] == v, (k, cfg[k], v)
    n_head, n_kv = checks["num_attention_heads"], checks["num_key_value_heads"]

    with open(f"{hf_dir}/model.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(f"{hf_dir}/model.safetensors", dtype=np.uint8, mode="r", offset=8 + n)
    header.pop("__metadata__", None)
    assert len(header) == len(r.tensors), (len(header), len(r.tensors))
    worst = 0.0
    for t in r.tensors:
        name = hf_name(t.name)
        ref = dequantize(t.data, t.tensor_type).astype(np.float32)
        ref = ref.reshape([int(d) for d in reversed(t.shape)])
        if arch == "llama" and ".attn_q." in t.name:
            ref = unpermute(ref, n_head)
        if arch == "llama" and ".attn_k." in t.name:
            ref = unpermute(ref, n_kv)
        h = header[name]
        assert h["dtype"] == "F32" and list(h["shape"]) == list(ref.shape), (name, h, ref.shape)
        a, b = h["data_offsets"]
        got = data[a:b].view(np.float32).reshape(ref.shape)
        diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        worst = max(worst, diff)
        if diff != 0.0:
            print(f"{name}: max |diff| {diff:g}")
    print(f"{len(r.tensors)} tensors compared with gguf-py; worst max |diff| = {worst:g}; config OK")
    return 0 if worst == 0.0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
