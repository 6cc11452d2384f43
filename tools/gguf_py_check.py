#!/usr/bin/env python3
"""Check that gguf-py (the reference Python GGUF reader) reads FILE exactly as EXPECTED.json says.

Usage: gguf_py_check.py FILE EXPECTED.json

EXPECTED.json (written by tests/gguf_py_compat.rs):
  {"version": 3, "alignment": 32, "data_offset": N,
   "metadata": [{"key": K, "type": "u32" | ... | "array", "elem_type": T (arrays only), "value": V}, ...],
   "tensors": [{"name": S, "type_id": I, "shape": [ne0, ...], "offset": O, "n_bytes": B,
                "sha256": HEX}, ...]}
Metadata and tensors are compared in file order; floats must be equal after the f32/f64 round trip
(the JSON holds the exact double value of each float). Exit status 0 if everything matches, 1 otherwise
(every mismatch is printed), 2 on usage errors.
"""

import hashlib
import json
import sys

from gguf import GGUFReader
from gguf.constants import GGUFValueType

TYPE_NAMES = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path, encoding="utf-8") as f:
        exp = json.load(f)
    reader = GGUFReader(path)
    errors = []

    def check(what, got, want):
        if got != want:
            errors.append(f"{what}: gguf-py has {got!r}, expected {want!r}")

    check("alignment", int(reader.alignment), exp["alignment"])
    check("data_offset", int(reader.data_offset), exp["data_offset"])
    version = reader.fields["GGUF.version"].contents()
    check("version", int(version), exp["version"])

    fields = [(k, v) for k, v in reader.fields.items() if not k.startswith("GGUF.")]
    check("metadata keys", [k for k, _ in fields], [m["key"] for m in exp["metadata"]])
    for (key, field), m in zip(fields, exp["metadata"]):
        main_type = TYPE_NAMES[field.types[0]]
        check(f"key '{key}' type", main_type, m["type"])
        if field.types[0] == GGUFValueType.ARRAY:
            # parts = [key len, key bytes, value type, element type, count, elements...]
            elem = TYPE_NAMES[GGUFValueType(int(field.parts[3][0]))]
            check(f"key '{key}' element type", elem, m["elem_type"])
            check(f"key '{key}' length", int(field.parts[4][0]), len(m["value"]))
        value = field.contents()
        if isinstance(value, bool) or m["type"] == "bool":
            value = bool(value)
        elif isinstance(value, list) and m.get("elem_type") == "bool":
            value = [bool(x) for x in value]
        check(f"key '{key}' value", value, m["value"])

    check("tensor names", [t.name for t in reader.tensors], [t["name"] for t in exp["tensors"]])
    for t, e in zip(reader.tensors, exp["tensors"]):
        name = t.name
        check(f"tensor '{name}' type id", int(t.tensor_type), e["type_id"])
        check(f"tensor '{name}' shape", [int(x) for x in t.shape], e["shape"])
        check(f"tensor '{name}' n_bytes", int(t.n_bytes), e["n_bytes"])
        check(f"tensor '{name}' data offset", int(t.data_offset), exp["data_offset"] + e["offset"])
        raw = t.data.tobytes()
        check(f"tensor '{name}' data length", len(raw), e["n_bytes"])
        check(f"tensor '{name}' sha256", hashlib.sha256(raw).hexdigest(), e["sha256"])

    if errors:
        for line in errors:
            print(f"MISMATCH {line}")
        return 1
    print(f"OK {path}: {len(reader.tensors)} tensors, {len(fields)} keys match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
