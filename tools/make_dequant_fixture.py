#!/usr/bin/env python3
"""Writes fixtures/dequant/blocks.gguf: for each ggml type, a tensor `<TYPE>` of pseudo-random blocks
(two rows of 512 elements; scale fields set to finite f16 values) and `<TYPE>.expected`, its F32
dequantization by gguf-py (an implementation independent of candle's, which Athena uses).

Usage: tools/make_dequant_fixture.py OUT.gguf   (needs `pip install gguf numpy`)
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Byte offsets of the f16 scale fields inside one block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
ROWS, COLS = 2, 512

rng = np.random.default_rng(1234)
w = GGUFWriter(sys.argv[1], arch="athena-test")
for ty, offsets in F16_FIELDS.items():
    block, size = GGML_QUANT_SIZES[ty]
    n_blocks = ROWS * COLS // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in offsets:
        scales = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    raw = raw.reshape(ROWS, COLS // block * size)
    expected = dequantize(raw, ty).astype(np.float32).reshape(ROWS, COLS)
    assert np.all(np.isfinite(expected)), ty.name
    w.add_tensor(ty.name, raw, raw_shape=raw.shape, raw_dtype=ty)
    w.add_tensor(ty.name + ".expected", expected)
for name, dt, ty in [("F16", np.float16, T.F16), ("BF16", None, T.BF16)]:
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    if dt is not None:
        data = x.astype(dt)
    else:  # bf16: the top 16 bits of f32
        data = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(ROWS, COLS * 2)
    expected = dequantize(data, ty).astype(np.float32).reshape(ROWS, COLS)
    w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=ty)
    w.add_tensor(name + ".expected", expected)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
