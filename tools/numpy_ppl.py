#!/usr/bin/env python3
"""Perplexity of a materialised HF llama/qwen2 folder with a plain numpy forward pass.

An end-to-end check of athena-materialize that shares no code with it or with Athena's model:
HF semantics (RMSNorm, rotate-half RoPE, grouped-query attention, SiLU MLP), weights read from
model.safetensors by hand, text tokenized with the rebuilt tokenizer.json (`pip install tokenizers
numpy`). Wrong q/k row order, a wrong tokenizer or wrong dequantization all show up as a perplexity
far from llama-perplexity's on the same GGUF.

Protocol of llama.cpp's llama-perplexity: the whole file is tokenized once, cut into chunks of CTX
tokens (BOS put first in each chunk only if tokenizer_config says add_bos_token), and each chunk
scores its second half (predictions at positions CTX/2 .. CTX-2).

Usage: tools/numpy_ppl.py HF_DIR TEXT_FILE [--ctx 512] [--chunks 32]
"""
import argparse
import json
import math
import struct
import time

import numpy as np
from tokenizers import Tokenizer


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", name
        a, b = h["data_offsets"]
        out[name] = np.asarray(data[a:b].view(np.float32).reshape(h["shape"]))
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, cos, sin):
    # x: [heads, T, hd]; HF rotate_half convention.
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def forward(W, cfg, ids):
    T = len(ids)
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // nh
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.outer(np.arange(T), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        proj = lambda n: a @ W[p + f"self_attn.{n}_proj.weight"].T + W.get(p + f"self_attn.{n}_proj.bias", 0)
        q = proj("q").reshape(T, nh, hd).transpose(1, 0, 2)
        k = proj("k").reshape(T, nkv, hd).transpose(1, 0, 2)
        v = proj("v").reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        m = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = m @ W[p + "mlp.gate_proj.weight"].T
        u = m @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=32)
    args = ap.parse_args()
    cfg = json.load(open(f"{args.hf_dir}/config.json"))
    tcfg = json.load(open(f"{args.hf_dir}/tokenizer_config.json"))
    tok = Tokenizer.from_file(f"{args.hf_dir}/tokenizer.json")
    W = load_safetensors(f"{args.hf_dir}/model.safetensors")
    ids = tok.encode(open(args.text, encoding="utf-8").read(), add_special_tokens=False).ids
    bos = cfg.get("bos_token_id") if tcfg.get("add_bos_token") else None
    n_chunks = min(args.chunks, len(ids) // args.ctx)
    nll, count, t0 = 0.0, 0, time.time()
    for c in range(n_chunks):
        chunk = list(ids[c * args.ctx:(c + 1) * args.ctx])
        if bos is not None:
            chunk[0] = bos
        logits = forward(W, cfg, np.array(chunk)).astype(np.float64)
        first = args.ctx // 2
        for j in range(first, args.ctx - 1):
            l = logits[j]
            m = l.max()
            nll += m + math.log(np.exp(l - m).sum()) - l[chunk[j + 1]]
            count += 1
        print(f"[{c + 1}] ppl {math.exp(nll / count):.4f}  ({time.time() - t0:.0f} s)", flush=True)
    print(f"{len(ids)} tokens in file; {n_chunks} chunks of {args.ctx}: perplexity {math.exp(nll / count):.4f}")


if __name__ == "__main__":
    main()
