#!/usr/bin/env python3
"""Writes a small random Hugging Face checkpoint of one model family, with the family's own
options turned on, for checking a converter and its model code against llama.cpp
(tools/check-families.sh).

    python3 tools/random_checkpoint.py FAMILY OUT_DIR [--seed N] [--dtype bf16|f32] [--gemma-rope-linear]

FAMILY is one of:

  llama   LlamaForCausalLM: hidden 256, 4 layers, 8 heads, 4 kv heads, untied lm_head.weight,
          rope_theta 10000.
  llama3  LlamaForCausalLM as Llama 3.2: rope_theta 500000, rope_scaling rope_type "llama3"
          (factor 32, low/high_freq_factor 1/4, original_max_position_embeddings 8192), tied,
          hidden 320 (not a multiple of 256), 5 heads of 64, 1 kv head.
  qwen2   Qwen2ForCausalLM: q/k/v biases, tied, rope_theta 1000000.
  qwen3   Qwen3ForCausalLM: explicit head_dim 64 with hidden 320 and 8 heads (q dim 512), per-head
          q_norm/k_norm RMSNorm weights, no biases, tied, rope_theta 1000000, 2 kv heads.
  gemma3  Gemma3ForCausalLM, model_type "gemma3_text" (as gemma-3-270m): hidden 640, 6 layers,
          4 heads, 1 kv head, head_dim 256, gelu_pytorch_tanh, sandwich norms, q/k norms, sliding
          window 8 on 5 of every 6 layers (layer_types), rope_theta 1e6 global / 10000 local,
          norms stored as w with (1 + w) applied. --gemma-rope-linear adds rope_scaling
          {"rope_type": "linear", "factor": 8.0} as gemma-3-4b has.
  phi3    Phi3ForCausalLM as Phi-4-mini: fused qkv_proj and gate_up_proj, partial_rotary_factor
          0.75, longrope rope_scaling (long/short factors), hidden 384, 6 heads of 64, 2 kv heads,
          tied.

Weights: linear layers ~ N(0, 1/in_features), embeddings ~ N(0, 0.25^2) (gemma3's 0.05^2, as it
scales them by sqrt(hidden)), norm weights around 1
(around 0 for gemma's 1 + w), biases ~ N(0, 0.2^2), so activations stay O(1) and the logits are
far from uniform. Every tensor is drawn from its own stream seeded by (seed, name): the same seed
gives the same bytes. Tensors are stored in --dtype (default bf16, as real checkpoints are: exact
in an f32 GGUF, and half the size).

The vocabulary is SmolLM2's (49152 tokens): tokenizer.json and tokenizer_config.json are copied
from $ATHENA_CACHE/models/SmolLM2-135M-Instruct (tools/fetch-models.sh; ATHENA_CACHE defaults to
~/.cache/athena), bos/eos from its config.json. Needs numpy only. model.safetensors in bf16:
qwen2 30 MB, llama3 38 MB, qwen3 40 MB, phi3 50 MB, llama 55 MB (untied: two 49152 x 256
tables), gemma3 130 MB (a 49152 x 640 table, and 6 blocks of intermediate 2048); the vocabulary
tables are most of it.

OUT_DIR is written under a temporary name next to it and renamed when complete; an existing
OUT_DIR is an error.
"""

import argparse
import json
import os
import shutil
import sys
import zlib

import numpy as np

VOCAB = 49152


def family_config(family, gemma_rope_linear):
    """The config.json of FAMILY (without vocab and special tokens) and its tensor shapes."""
    if family in ("llama", "llama3", "qwen2", "qwen3"):
        c = {
            "llama": dict(arch="LlamaForCausalLM", mt="llama", h=256, inter=512, layers=4, heads=8,
                          kv=4, hd=32, theta=10000.0, tied=False, eps=1e-5, maxpos=2048),
            "llama3": dict(arch="LlamaForCausalLM", mt="llama", h=320, inter=640, layers=4, heads=5,
                           kv=1, hd=64, theta=500000.0, tied=True, eps=1e-5, maxpos=131072),
            "qwen2": dict(arch="Qwen2ForCausalLM", mt="qwen2", h=256, inter=512, layers=4, heads=8,
                          kv=2, hd=32, theta=1000000.0, tied=True, eps=1e-6, maxpos=32768),
            "qwen3": dict(arch="Qwen3ForCausalLM", mt="qwen3", h=320, inter=640, layers=4, heads=8,
                          kv=2, hd=64, theta=1000000.0, tied=True, eps=1e-6, maxpos=40960),
        }[family]
        config = {
            "architectures": [c["arch"]],
            "model_type": c["mt"],
            "hidden_size": c["h"],
            "intermediate_size": c["inter"],
            "num_hidden_layers": c["layers"],
            "num_attention_heads": c["heads"],
            "num_key_value_heads": c["kv"],
            "head_dim": c["hd"],
            "hidden_act": "silu",
            "max_position_embeddings": c["maxpos"],
            "rms_norm_eps": c["eps"],
            "rope_theta": c["theta"],
            "rope_scaling": None,
            "tie_word_embeddings": c["tied"],
            "attention_bias": family == "qwen2",
            "attention_dropout": 0.0,
        }
        if family in ("llama", "llama3"):
            config["mlp_bias"] = False
            config["pretraining_tp"] = 1
        if family == "llama3":
            config["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            }
        if family in ("qwen2", "qwen3"):
            config.update(use_sliding_window=False, sliding_window=None, max_window_layers=c["layers"])
        h, hd, q, kv = c["h"], c["hd"], c["heads"] * c["hd"], c["kv"] * c["hd"]
        tensors = {"model.embed_tokens.weight": ("embed", [VOCAB, h]), "model.norm.weight": ("norm", [h])}
        if not c["tied"]:
            tensors["lm_head.weight"] = ("linear", [VOCAB, h])
        for i in range(c["layers"]):
            p = f"model.layers.{i}."
            tensors[p + "input_layernorm.weight"] = ("norm", [h])
            tensors[p + "post_attention_layernorm.weight"] = ("norm", [h])
            tensors[p + "self_attn.q_proj.weight"] = ("linear", [q, h])
            tensors[p + "self_attn.k_proj.weight"] = ("linear", [kv, h])
            tensors[p + "self_attn.v_proj.weight"] = ("linear", [kv, h])
            tensors[p + "self_attn.o_proj.weight"] = ("linear", [h, q])
            if family == "qwen2":
                tensors[p + "self_attn.q_proj.bias"] = ("bias", [q])
                tensors[p + "self_attn.k_proj.bias"] = ("bias", [kv])
                tensors[p + "self_attn.v_proj.bias"] = ("bias", [kv])
            if family == "qwen3":
                tensors[p + "self_attn.q_norm.weight"] = ("norm", [hd])
                tensors[p + "self_attn.k_norm.weight"] = ("norm", [hd])
            tensors[p + "mlp.gate_proj.weight"] = ("linear", [c["inter"], h])
            tensors[p + "mlp.up_proj.weight"] = ("linear", [c["inter"], h])
            tensors[p + "mlp.down_proj.weight"] = ("linear", [h, c["inter"]])
        return config, tensors

    if family == "gemma3":
        h, inter, layers, heads, kv, hd = 640, 2048, 6, 4, 1, 256
        config = {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_size": h,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": hd,
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": 256,
            "sliding_window": 8,
            "sliding_window_pattern": 6,
            "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0} if gemma_rope_linear else None,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_bidirectional_attention": False,
            "tie_word_embeddings": True,
        }
        q, kvd = heads * hd, kv * hd
        # Gemma multiplies the embedding by sqrt(hidden): a smaller table keeps the residual
        # stream O(1), and the tied head from predicting the input token with a logit of ~160.
        tensors = {"model.embed_tokens.weight": ("embed_gemma", [VOCAB, h]), "model.norm.weight": ("norm0", [h])}
        for i in range(layers):
            p = f"model.layers.{i}."
            for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                      "post_feedforward_layernorm"):
                tensors[p + n + ".weight"] = ("norm0", [h])
            tensors[p + "self_attn.q_proj.weight"] = ("linear", [q, h])
            tensors[p + "self_attn.k_proj.weight"] = ("linear", [kvd, h])
            tensors[p + "self_attn.v_proj.weight"] = ("linear", [kvd, h])
            tensors[p + "self_attn.o_proj.weight"] = ("linear", [h, q])
            tensors[p + "self_attn.q_norm.weight"] = ("norm0", [hd])
            tensors[p + "self_attn.k_norm.weight"] = ("norm0", [hd])
            tensors[p + "mlp.gate_proj.weight"] = ("linear", [inter, h])
            tensors[p + "mlp.up_proj.weight"] = ("linear", [inter, h])
            tensors[p + "mlp.down_proj.weight"] = ("linear", [h, inter])
        return config, tensors

    if family == "phi3":
        h, inter, layers, heads, kv, hd = 384, 1024, 4, 6, 2, 64
        rot_half = int(hd * 0.75) // 2
        # The factors (drawn in main) grow towards the low frequencies, as Phi-4-mini's do.
        config = {
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            "hidden_size": h,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "hidden_act": "silu",
            "partial_rotary_factor": 0.75,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": {"type": "longrope", "long_factor": None, "short_factor": None},
            "sliding_window": 262144,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "lm_head_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": True,
        }
        config["_rot_half"] = rot_half
        q, kvd = heads * hd, kv * hd
        tensors = {"model.embed_tokens.weight": ("embed", [VOCAB, h]), "model.norm.weight": ("norm", [h])}
        for i in range(layers):
            p = f"model.layers.{i}."
            tensors[p + "input_layernorm.weight"] = ("norm", [h])
            tensors[p + "post_attention_layernorm.weight"] = ("norm", [h])
            tensors[p + "self_attn.qkv_proj.weight"] = ("linear", [q + 2 * kvd, h])
            tensors[p + "self_attn.o_proj.weight"] = ("linear", [h, q])
            tensors[p + "mlp.gate_up_proj.weight"] = ("linear", [2 * inter, h])
            tensors[p + "mlp.down_proj.weight"] = ("linear", [h, inter])
        return config, tensors

    raise ValueError(family)


def rng_for(seed, name):
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw(seed, name, kind, shape):
    r = rng_for(seed, name)
    if kind == "linear":
        return r.normal(0.0, 1.0 / np.sqrt(shape[-1]), size=shape)
    if kind == "embed":
        return r.normal(0.0, 0.25, size=shape)
    if kind == "embed_gemma":
        return r.normal(0.0, 0.05, size=shape)
    if kind == "norm":
        return 1.0 + r.normal(0.0, 0.1, size=shape)
    if kind == "norm0":
        return r.normal(0.0, 0.1, size=shape)
    if kind == "bias":
        return r.normal(0.0, 0.2, size=shape)
    raise ValueError(kind)


def to_bf16_bytes(a):
    """Round-to-nearest-even f32 -> bf16, little-endian."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


def write_safetensors(path, arrays, dtype):
    header, blobs, offset = {}, [], 0
    for name in sorted(arrays):
        a = arrays[name]
        raw = to_bf16_bytes(a) if dtype == "BF16" else np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=["llama", "llama3", "qwen2", "qwen3", "gemma3", "phi3"])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--gemma-rope-linear", action="store_true",
                    help='gemma3: rope_scaling {"rope_type": "linear", "factor": 8.0} (gemma-3-4b)')
    ap.add_argument("--tokenizer-dir", default=None,
                    help="folder with tokenizer.json, tokenizer_config.json and config.json "
                         "[default: $ATHENA_CACHE/models/SmolLM2-135M-Instruct]")
    args = ap.parse_args()
    if args.gemma_rope_linear and args.family != "gemma3":
        ap.error("--gemma-rope-linear is for gemma3 only")

    cache = os.environ.get("ATHENA_CACHE") or os.path.expanduser("~/.cache/athena")
    tok_dir = args.tokenizer_dir or os.path.join(cache, "models", "SmolLM2-135M-Instruct")
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        if not os.path.isfile(os.path.join(tok_dir, f)):
            sys.exit(f"random_checkpoint: {os.path.join(tok_dir, f)}: not found "
                     "(run tools/fetch-models.sh, or pass --tokenizer-dir)")
    if os.path.exists(args.out_dir):
        sys.exit(f"random_checkpoint: {args.out_dir}: already exists")
    with open(os.path.join(tok_dir, "config.json")) as f:
        tok_config = json.load(f)
    bos, eos = tok_config.get("bos_token_id"), tok_config.get("eos_token_id")

    config, shapes = family_config(args.family, args.gemma_rope_linear)
    rot_half = config.pop("_rot_half", None)
    if rot_half is not None:
        # Both in 1..3, so a forward that ignores them (a context up to
        # original_max_position_embeddings uses short_factor) is far off; a stream of their own.
        r = rng_for(args.seed, "rope_scaling")
        short = np.sort(r.uniform(1.0, 3.0, rot_half))
        long = np.sort(r.uniform(1.0, 3.0, rot_half))
        config["rope_scaling"]["short_factor"] = [round(float(x), 6) for x in short]
        config["rope_scaling"]["long_factor"] = [round(float(x), 6) for x in long]
    config.update(vocab_size=VOCAB, bos_token_id=bos, eos_token_id=eos,
                  torch_dtype="bfloat16" if args.dtype == "bf16" else "float32",
                  transformers_version="4.57.1")

    arrays = {name: draw(args.seed, name, kind, shape).astype(np.float32)
              for name, (kind, shape) in shapes.items()}

    out = os.path.abspath(args.out_dir)
    tmp = f"{out}.tmp-{os.getpid()}"
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": bos, "eos_token_id": eos, "transformers_version": "4.57.1"}, f, indent=2)
            f.write("\n")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(tok_dir, name), os.path.join(tmp, name))
        write_safetensors(os.path.join(tmp, "model.safetensors"), arrays,
                          "BF16" if args.dtype == "bf16" else "F32")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"{args.family}: {len(arrays)} tensors, {size / 1e6:.1f} MB -> {out}")


if __name__ == "__main__":
    main()
