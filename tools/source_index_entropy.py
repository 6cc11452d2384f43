#!/usr/bin/env python3
"""Information in a Q4_1 source GGUF's linear weights: the empirical entropy of the 4-bit level
indices, pooled per tensor, averaged over all Q4_1 tensors except the embedding (each group of 32
weights also stores an f16 scale and an f16 minimum: 1 more bit per weight).

Usage: python3 tools/source_index_entropy.py ~/.cache/athena/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
Needs gguf-py and numpy (pip install gguf numpy).
"""
import sys

import gguf
import numpy as np

BLOCK_BYTES = 20  # Q4_1: f16 scale, f16 minimum, 16 bytes of two 4-bit indices each

reader = gguf.GGUFReader(sys.argv[1])
weights, bits = 0, 0.0
for t in reader.tensors:
    if t.tensor_type != gguf.GGMLQuantizationType.Q4_1 or "token_embd" in t.name:
        continue
    packed = np.asarray(t.data).view(np.uint8).reshape(-1, BLOCK_BYTES)[:, 4:]
    levels = np.concatenate([packed & 15, packed >> 4], axis=1).ravel()
    p = np.bincount(levels, minlength=16) / levels.size
    p = p[p > 0]
    weights += levels.size
    bits += -(p * np.log2(p)).sum() * levels.size
print(f"{weights} Q4_1 linear weights: index entropy {bits / weights:.3f} bits per weight "
      f"(+1 bit per weight of f16 scale and minimum)")
