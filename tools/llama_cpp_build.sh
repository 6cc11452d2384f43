#!/usr/bin/env bash
# Builds llama.cpp tools (CPU only, Release, static, no curl/openssl/server/tests) from the
# vendor/llama.cpp copy inside the llama-cpp-python 0.3.36 sdist, and prints the folder that
# holds the binaries. Targets already built are reused; the first build of llama-perplexity takes
# about 8-15 minutes on 2 cores.
#
#   tools/llama_cpp_build.sh llama-perplexity llama-quantize    -> prints $BUILD/bin
#   tools/llama_cpp_build.sh llama     (the static library alone, $BUILD/src/libllama.a; about 5-10
#                                       minutes; tools/build_llama_logits.sh links against it)
#
# Environment: ATHENA_CACHE (where fetch-models.sh caches; the sdist is looked for in its pypi/
# folder and downloaded there if missing), LLAMA_SRC (a llama.cpp source tree instead of the
# sdist), BUILD (default /tmp/llcmp/build), JOBS (parallel compile jobs, default 2).
# Needs cmake (pip install cmake) and a C/C++ compiler.
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: $0 TARGET..." >&2; exit 2; }

C=${ATHENA_CACHE:-$HOME/.cache/athena}
SDIST=${SDIST:-$C/pypi/llama_cpp_python-0.3.36.tar.gz}
LLAMA_SRC=${LLAMA_SRC:-}
BUILD=${BUILD:-/tmp/llcmp/build}
JOBS=${JOBS:-2}

missing=()
for t in "$@"; do [[ -x "$BUILD/bin/$t" || -f "$BUILD/src/lib$t.a" ]] || missing+=("$t"); done
if [[ ${#missing[@]} -eq 0 ]]; then echo "$BUILD/bin"; exit 0; fi

if [[ -z "$LLAMA_SRC" ]]; then
    for d in /tmp/llama-src/*/vendor/llama.cpp /tmp/*/vendor/llama.cpp; do
        if [[ -f "$d/CMakeLists.txt" && -f "$d/tools/perplexity/perplexity.cpp" ]]; then LLAMA_SRC=$d; break; fi
    done
fi
if [[ -z "$LLAMA_SRC" ]]; then
    if [[ ! -f "$SDIST" ]]; then
        mkdir -p "$(dirname "$SDIST")"
        # --no-binary for this package only (":all:" builds cmake from source to read metadata)
        pip download --quiet --no-deps --no-binary llama-cpp-python -d "$(dirname "$SDIST")" \
            llama-cpp-python==0.3.36 >&2
    fi
    mkdir -p /tmp/llama-src
    tar -xzf "$SDIST" -C /tmp/llama-src
    LLAMA_SRC=$(echo /tmp/llama-src/*/vendor/llama.cpp)
fi
echo "llama.cpp source: $LLAMA_SRC; building ${missing[*]} (-j$JOBS)" >&2

command -v cmake >/dev/null || pip install --quiet cmake >&2
mkdir -p "$BUILD"
t0=$(date +%s)
cmake -S "$LLAMA_SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF > "$BUILD/athena-cmake-config.log" 2>&1
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${missing[@]}" > "$BUILD/athena-build.log" 2>&1
echo "build time: $(( $(date +%s) - t0 )) s" >&2
echo "$BUILD/bin"
