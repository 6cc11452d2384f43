#!/usr/bin/env python3
"""The logits of an HF checkpoint as Hugging Face transformers defines the model, computed in
float64 with numpy from config.json and model.safetensors: a third implementation, independent of
Athena's and llama.cpp's, for tools/check-families.sh.

    python3 tools/hf_logits.py MODEL_DIR --tokens 1,2,3 --out logits.bin

Writes little-endian f32, row-major [tokens x vocab] (the layout of llama_logits and the
dump-logits example) and prints `tokens=N n_vocab=V model_type=T`.

Families (transformers' modeling_*.py, as of 4.57): llama (rope_scaling linear or llama3),
mistral, qwen2 (q/k/v biases), qwen3 (q_norm/k_norm), gemma3_text (embedding times
sqrt(hidden), RMSNorm times (1 + w), sandwich norms, q/k norms, query_pre_attn_scalar,
gelu_pytorch_tanh, sliding/full layers from layer_types with rope_local_base_freq on the
sliding ones, optional soft-capping), phi3 (fused qkv_proj and gate_up_proj,
partial_rotary_factor, longrope with its attention factor). Sliding windows are applied where
transformers applies them (gemma3 layer_types; mistral/qwen2/qwen3 only with use_sliding_window).
A model type or option it does not implement is an error, never silently ignored.
"""

import argparse
import json
import math
import os
import sys

import numpy as np


def fail(msg):
    sys.exit(f"hf_logits: {msg}")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b:base + e]
        dt = info["dtype"]
        if dt == "F32":
            a = buf.view("<f4").astype(np.float64)
        elif dt == "F16":
            a = buf.view("<f2").astype(np.float64)
        elif dt == "BF16":
            a = (buf.view("<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        else:
            fail(f"{path}: tensor '{name}' has dtype {dt} (F32, F16, BF16 supported)")
        out[name] = a.reshape(info["shape"])
    return out


def load_weights(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        w = {}
        for fn in files:
            w.update(read_safetensors(os.path.join(model_dir, fn)))
        return w
    fail(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")


def rms_norm(x, w, eps, offset=0.0):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (offset + w)


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


ACTS = {"silu": silu, "gelu_pytorch_tanh": gelu_tanh}

# tie_word_embeddings when config.json leaves it out (the config classes' defaults).
TIED_BY_DEFAULT = {"llama": False, "mistral": False, "qwen2": False, "qwen3": False,
                   "gemma3_text": True, "phi3": False}


def rope_inv_freq(c, dim, base, scaling):
    """transformers' ROPE_INIT_FUNCTIONS for a context within the original length: (inv_freq,
    attention factor)."""
    inv = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if scaling is None:
        return inv, 1.0
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return inv, 1.0
    if kind == "linear":
        return inv / scaling["factor"], 1.0
    if kind == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > lo_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < hi_wl) & ~(wavelen > lo_wl)
        return np.where(medium, smoothed, scaled), 1.0
    if kind in ("longrope", "su"):
        if "original_max_position_embeddings" in c:
            orig = c["original_max_position_embeddings"]
            factor = c["max_position_embeddings"] / orig
        else:
            orig = c["max_position_embeddings"]
            factor = scaling.get("factor", 1.0)
        attn = scaling.get("attention_factor")
        if attn is None:
            attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        # Sequences up to the original length use the short factors.
        ext = np.asarray(scaling["short_factor"], dtype=np.float64)
        if ext.shape != inv.shape:
            fail(f"rope_scaling.short_factor has {ext.size} values, the rotary dimension needs {inv.size}")
        return inv / ext, attn
    fail(f"rope_scaling type '{kind}' is not implemented here")


def rope(x, positions, inv, attn, rot):
    """Rotates the first `rot` dims of each head (x: [T, heads, hd]) the HF way (rotate_half)."""
    freqs = positions[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :] * attn, np.sin(emb)[:, None, :] * attn
    xr, xp = x[..., :rot], x[..., rot:]
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    rotated = np.concatenate([-x2, x1], axis=-1)
    return np.concatenate([xr * cos + rotated * sin, xp], axis=-1)


def attention(q, k, v, scale, window, softcap):
    """q: [T, H, hd], k/v: [T, KV, hd]; causal, optionally sliding (key > query - window)."""
    t, h, _ = q.shape
    groups = h // k.shape[1]
    k = np.repeat(k, groups, axis=1)
    v = np.repeat(v, groups, axis=1)
    s = np.einsum("qhd,khd->hqk", q, k) * scale
    if softcap:
        s = np.tanh(s / softcap) * softcap
    qi, ki = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = ki <= qi
    if window:
        allowed &= ki > qi - window
    s = np.where(allowed[None], s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", s, v).reshape(t, -1)


def forward(c, w, tokens):
    mt = c.get("model_type")
    if mt not in ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3"):
        fail(f"model_type '{mt}' is not implemented here")
    hidden = c["hidden_size"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim") or hidden // heads
    eps = c["rms_norm_eps"]
    gemma = mt == "gemma3_text"
    off = 1.0 if gemma else 0.0
    act = ACTS.get(c.get("hidden_activation") or c.get("hidden_act") or "silu")
    if act is None:
        fail(f"activation '{c.get('hidden_activation') or c.get('hidden_act')}' is not implemented here")
    if c.get("mlp_bias") or c.get("lm_head_bias"):
        fail("mlp_bias / lm_head_bias are not implemented here")
    if mt == "phi3" and c.get("attention_bias"):
        fail("phi3 with attention_bias is not implemented here")
    if mt in ("qwen2", "qwen3") and c.get("use_sliding_window"):
        fail(f"{mt}'s use_sliding_window (from max_window_layers on) is not implemented here")
    # Qwen2 always has q/k/v biases; llama, mistral, qwen3 and gemma3 when attention_bias is set.
    qkv_bias = mt == "qwen2" or bool(c.get("attention_bias"))
    rot = int(hd * c.get("partial_rotary_factor", 1.0))
    pos = np.arange(len(tokens), dtype=np.float64)
    scaling = c.get("rope_scaling")
    inv_global, attn_global = rope_inv_freq(c, rot, c.get("rope_theta", 10000.0), scaling)
    if gemma:
        inv_local, attn_local = rope_inv_freq(c, rot, c.get("rope_local_base_freq", 10000.0), None)
        types = c.get("layer_types")
        if types is None:
            pattern = c.get("sliding_window_pattern", c.get("_sliding_window_pattern", 6))
            types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                     for i in range(c["num_hidden_layers"])]
        scale = c["query_pre_attn_scalar"] ** -0.5
        softcap = c.get("attn_logit_softcapping")
    else:
        # Mistral applies its sliding_window on every layer; phi3's is far beyond any test.
        windowed = mt in ("mistral", "phi3") and c.get("sliding_window")
        types = ["sliding_attention" if windowed else "full_attention"] * c["num_hidden_layers"]
        scale = hd ** -0.5
        softcap = None

    x = w["model.embed_tokens.weight"][tokens]
    if gemma:
        x = x * math.sqrt(hidden)
    q_dim, kv_dim = heads * hd, kv * hd
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps, off)
        if mt == "phi3":
            qkv = h @ w[p + "self_attn.qkv_proj.weight"].T
            q, k, v = qkv[:, :q_dim], qkv[:, q_dim:q_dim + kv_dim], qkv[:, q_dim + kv_dim:]
        else:
            q, k, v = (h @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
            if qkv_bias:
                q = q + w[p + "self_attn.q_proj.bias"]
                k = k + w[p + "self_attn.k_proj.bias"]
                v = v + w[p + "self_attn.v_proj.bias"]
        q, k, v = q.reshape(-1, heads, hd), k.reshape(-1, kv, hd), v.reshape(-1, kv, hd)
        if mt in ("qwen3", "gemma3_text"):
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps, off)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps, off)
        sliding = types[i] == "sliding_attention"
        inv, attn = (inv_local, attn_local) if gemma and sliding else (inv_global, attn_global)
        q, k = rope(q, pos, inv, attn, rot), rope(k, pos, inv, attn, rot)
        o = attention(q, k, v, scale, c.get("sliding_window") if sliding else None, softcap)
        o = o @ w[p + "self_attn.o_proj.weight"].T
        if gemma:
            o = rms_norm(o, w[p + "post_attention_layernorm.weight"], eps, off)
            x = x + o
            h = rms_norm(x, w[p + "pre_feedforward_layernorm.weight"], eps, off)
        else:
            x = x + o
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps, off)
        if mt == "phi3":
            gu = h @ w[p + "mlp.gate_up_proj.weight"].T
            gate, up = np.split(gu, 2, axis=-1)
        else:
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
        m = (act(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        if gemma:
            m = rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps, off)
        x = x + m
    x = rms_norm(x, w["model.norm.weight"], eps, off)
    # transformers ties the head to the embedding when tie_word_embeddings is true (its default
    # differs by family), whatever the file holds.
    if c.get("tie_word_embeddings", TIED_BY_DEFAULT[mt]):
        head = w["model.embed_tokens.weight"]
    else:
        head = w["lm_head.weight"]
    logits = x @ head.T
    cap = c.get("final_logit_softcapping")
    if cap:
        logits = np.tanh(logits / cap) * cap
    return logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        tokens = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        ap.error("--tokens: comma-separated integers")
    try:
        with open(os.path.join(args.model_dir, "config.json")) as f:
            c = json.load(f)
    except OSError as e:
        fail(f"{args.model_dir}: {e.strerror}")
    w = load_weights(args.model_dir)
    vocab = w["model.embed_tokens.weight"].shape[0]
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        fail(f"token {bad[0]} is outside the vocabulary ({vocab})")
    try:
        logits = forward(c, w, np.asarray(tokens))
    except KeyError as e:
        fail(f"{args.model_dir}: missing tensor or config key {e}")
    tmp = f"{args.out}.tmp-{os.getpid()}"
    logits.astype("<f4").tofile(tmp)
    os.replace(tmp, args.out)
    print(f"tokens={len(tokens)} n_vocab={logits.shape[1]} model_type={c.get('model_type')}")


if __name__ == "__main__":
    main()
