#!/usr/bin/env bash
# Builds tools/llama_logits.cpp (llama.cpp's logits of every position of a token sequence) against
# the static libllama that tools/llama_cpp_build.sh builds from the llama-cpp-python 0.3.36 sdist
# (CPU only), and prints the binary's path.
#
#   tools/build_llama_logits.sh [OUT_BINARY]      (default $BUILD/bin/llama_logits)
#
# The first run builds libllama and ggml: about 10 minutes on 2 cores (JOBS=2); then the program
# alone, a few seconds. Environment as tools/llama_cpp_build.sh (ATHENA_CACHE, LLAMA_SRC, BUILD,
# JOBS); needs cmake (pip install cmake) and a C++17 compiler. The binary is rebuilt when
# llama_logits.cpp is newer than it.
set -euo pipefail
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD=${BUILD:-/tmp/llcmp/build}
export BUILD
out="${1:-$BUILD/bin/llama_logits}"

"$tools/llama_cpp_build.sh" llama >/dev/null
if [[ -x "$out" && "$out" -nt "$tools/llama_logits.cpp" ]]; then echo "$out"; exit 0; fi

src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")"
[[ -f "$src/include/llama.h" ]] || { echo "build_llama_logits: no llama.h under '$src' (from $BUILD/CMakeCache.txt)" >&2; exit 1; }
libs=()
for l in src/libllama.a ggml/src/libggml.a ggml/src/libggml-cpu.a ggml/src/libggml-base.a; do
    [[ -f "$BUILD/$l" ]] || { echo "build_llama_logits: $BUILD/$l is missing (the llama target did not build it)" >&2; exit 1; }
    libs+=("$BUILD/$l")
done
# ggml-cpu uses OpenMP when the build found it (GGML_OPENMP, on by default).
openmp=()
grep -q '^GGML_OPENMP:BOOL=ON' "$BUILD/CMakeCache.txt" && openmp=(-fopenmp)
mkdir -p "$(dirname "$out")"
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" "$tools/llama_logits.cpp" \
    -Wl,--start-group "${libs[@]}" -Wl,--end-group "${openmp[@]}" -lpthread -ldl -lm -o "$out.tmp-$$"
mv "$out.tmp-$$" "$out"
echo "$out"
