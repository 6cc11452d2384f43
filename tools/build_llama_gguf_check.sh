#!/bin/sh
# Builds tools/llama_gguf_check.cpp against llama.cpp's own GGUF reader (ggml-base only, no model code).
# Usage: tools/build_llama_gguf_check.sh LLAMA_CPP_DIR OUT_BINARY
# LLAMA_CPP_DIR is a llama.cpp checkout, e.g. vendor/llama.cpp from
#   pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
# Takes about 30 s on 2 cores. Then run the differential test with
#   ATHENA_LLAMA_GGUF_CHECK=OUT_BINARY cargo test --test gguf_llama_compat -- --nocapture
set -eu
src="$1/ggml"
out="$2"
tools="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '#pragma once\n#define GGML_VERSION "vendored"\n#define GGML_COMMIT "unknown"\n' > "$work/ggml-version.h"
flags="-O1 -D_GNU_SOURCE -I$work -I$src/include -I$src/src"
for f in ggml.c ggml-alloc.c ggml-quants.c; do
    gcc $flags -std=c11 -c "$src/src/$f" -o "$work/${f%.*}.o"
done
for f in ggml.cpp ggml-backend.cpp ggml-backend-meta.cpp ggml-opt.cpp ggml-threading.cpp gguf.cpp; do
    g++ $flags -std=c++17 -c "$src/src/$f" -o "$work/${f%.*}-cpp.o"
done
g++ $flags -std=c++17 "$tools/llama_gguf_check.cpp" "$work"/*.o -o "$out" -lpthread -lm
echo "built $out"
